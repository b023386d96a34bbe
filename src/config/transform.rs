//! `[routes.transform.request]` and `[routes.transform.response]`: header, path and query edits,
//! built once at load. Templates are parsed here into literal and variable parts; the path
//! pattern is compiled here (an invalid one is a config error with its key path).

use std::collections::BTreeMap;

use regex::bytes::Regex;
use serde::Deserialize;

use super::Checker;

#[derive(Debug, Default, Deserialize)]
pub struct RawTransform {
    pub request: Option<RawRequestTransform>,
    pub response: Option<RawHeaderTransform>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRequestTransform {
    pub set_headers: Option<BTreeMap<String, String>>,
    pub remove_headers: Option<Vec<String>>,
    pub rename_headers: Option<BTreeMap<String, String>>,
    pub rewrite: Option<RawRewrite>,
    pub query: Option<RawQuery>,
    pub json: Option<RawJson>,
    pub max_json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHeaderTransform {
    pub set_headers: Option<BTreeMap<String, String>>,
    pub remove_headers: Option<Vec<String>>,
    pub rename_headers: Option<BTreeMap<String, String>>,
    pub json: Option<RawJson>,
    pub max_json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawJson {
    pub rename: Option<BTreeMap<String, String>>,
    pub convert: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
    pub set: Option<BTreeMap<String, String>>,
    pub allow: Option<Vec<String>>,
}

/// Bodies a JSON transform buffers at most, unless `max_json` says otherwise.
pub const DEFAULT_MAX_JSON: u64 = 1 << 20;

/// One step of a JSON path: `a.b[*].c` is `Key(a), Key(b), Each, Key(c)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    /// Every element of an array.
    Each,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JPath {
    pub segs: Vec<Seg>,
    /// As written, for error messages.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Integer,
    String,
    Boolean,
}

/// JSON body edits, applied in this order: rename, convert, remove, set, allow.
#[derive(Debug, Clone, Default)]
pub struct JsonEdits {
    /// (path, new name of its last key)
    pub rename: Vec<(JPath, String)>,
    pub convert: Vec<(JPath, Kind)>,
    pub remove: Vec<JPath>,
    /// Values are strings from templates.
    pub set: Vec<(JPath, Template)>,
    /// When not empty: only these paths are kept.
    pub allow: Vec<JPath>,
    pub max: u64,
    /// The edits as the one-pass editor follows them (built once, here).
    pub compiled: std::sync::Arc<crate::policy::transform::JsonPlan>,
}

fn jpath(c: &mut Checker, path: &str, text: &str) -> Option<JPath> {
    let mut segs = Vec::new();
    for part in text.split('.') {
        let (key, each) = match part.strip_suffix("[*]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        if key.is_empty() || key.contains(['[', ']', '*']) {
            c.err(path, format!("`{text}` is not a field path"), "write fields joined by dots, `[*]` after an array: \"items[*].sku_id\"");
            return None;
        }
        segs.push(Seg::Key(key.to_string()));
        if each {
            segs.push(Seg::Each);
        }
    }
    Some(JPath { segs, text: text.to_string() })
}

fn json_edits(c: &mut Checker, p: &str, raw: &RawJson, max: &Option<String>, request: bool) -> JsonEdits {
    let mut out = JsonEdits { max: c.size(&format!("{p}.max_json"), max, DEFAULT_MAX_JSON, 1, 64 << 20), ..JsonEdits::default() };
    let p = format!("{p}.json");
    for (from, to) in raw.rename.iter().flatten() {
        let path = format!("{p}.rename.{from}");
        let (Some(f), Some(t)) = (jpath(c, &path, from), jpath(c, &path, to)) else { continue };
        // Only the last key may change: `items[*].sku_id` -> `items[*].skuId`.
        let same_parent = f.segs.len() == t.segs.len() && f.segs[..f.segs.len() - 1] == t.segs[..t.segs.len() - 1];
        match (same_parent, t.segs.last()) {
            (true, Some(Seg::Key(k))) => out.rename.push((f, k.clone())),
            _ => c.err(&path, format!("`{from}` -> `{to}` moves the field"), "rename changes only the last name: \"items[*].sku_id\" = \"items[*].skuId\""),
        }
    }
    for (field, kind) in raw.convert.iter().flatten() {
        let path = format!("{p}.convert.{field}");
        let k = match kind.as_str() {
            "number" => Kind::Number,
            "integer" => Kind::Integer,
            "string" => Kind::String,
            "boolean" => Kind::Boolean,
            other => {
                c.err(&path, format!("unknown type `{other}`"), "use \"number\", \"integer\", \"string\" or \"boolean\"");
                continue;
            }
        };
        if let Some(j) = jpath(c, &path, field) {
            out.convert.push((j, k));
        }
    }
    for (i, field) in raw.remove.iter().flatten().enumerate() {
        if let Some(j) = jpath(c, &format!("{p}.remove[{i}]"), field) {
            out.remove.push(j);
        }
    }
    for (field, value) in raw.set.iter().flatten() {
        let path = format!("{p}.set.{field}");
        if let Some(j) = jpath(c, &path, field) {
            out.set.push((j, template(c, &path, value, request)));
        }
    }
    for (i, field) in raw.allow.iter().flatten().enumerate() {
        if let Some(j) = jpath(c, &format!("{p}.allow[{i}]"), field) {
            out.allow.push(j);
        }
    }
    out.compiled = std::sync::Arc::new(crate::policy::transform::compile(&out));
    out
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRewrite {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawQuery {
    pub set: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    /// `{consumer}`: the consumer the auth stage named.
    Consumer,
    /// `{claim.sub}`: the verified JWT's subject.
    ClaimSub,
    /// `{claim.NAME}`: another claim of the verified JWT (strings as they are, numbers and
    /// booleans as JSON text; absent, null, arrays and objects render empty).
    Claim(String),
    /// `{header.NAME}`: the request's first header of that name.
    Header(String),
    /// `{query.NAME}`: the request's query parameter (still percent-encoded as sent).
    Query(String),
    /// `{path}`: the request path as received.
    Path,
    /// `{request_id}`.
    RequestId,
}

pub type Template = Vec<Part>;

/// Header edits: names as configured (matched without regard to case).
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    pub set: Vec<(String, Template)>,
    pub remove: Vec<String>,
    /// (from, to)
    pub rename: Vec<(String, String)>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty() && self.rename.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    pub from: Regex,
    /// The replacement: `$1`, `${name}` captures (regex syntax) over template-rendered text.
    pub to: Template,
}

#[derive(Debug, Clone, Default)]
pub struct RequestTransform {
    pub headers: HeaderEdits,
    pub rewrite: Option<Rewrite>,
    pub query_set: Vec<(String, Template)>,
    pub query_remove: Vec<String>,
    pub json: Option<JsonEdits>,
}

impl RequestTransform {
    pub fn edits_target(&self) -> bool {
        self.rewrite.is_some() || !self.query_set.is_empty() || !self.query_remove.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ResponseTransform {
    pub headers: HeaderEdits,
    pub json: Option<JsonEdits>,
}

#[derive(Debug, Clone, Default)]
pub struct Transform {
    pub request: Option<RequestTransform>,
    pub response: Option<ResponseTransform>,
}

/// Fields the transforms may not touch: framing and connection management stay the gateway's.
const RESERVED: &[&str] = &["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive", "proxy-connection"];

fn header_name(c: &mut Checker, path: &str, name: &str) -> Option<String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
        c.err(path, format!("`{name}` is not a header name"), "use a field name such as \"X-Api-Version\"");
        return None;
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        c.err(path, format!("`{name}` is managed by the gateway"), "transform other fields; framing and connection fields are set by the gateway");
        return None;
    }
    Some(name.to_string())
}

/// Parses `text {var} text`; `{{` and `}}` are literal braces.
pub(crate) fn template(c: &mut Checker, path: &str, text: &str, request_vars: bool) -> Template {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        let (ch, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.starts_with(ch as char) {
            lit.push(ch as char);
            rest = &after[1..];
            continue;
        }
        if ch == b'}' {
            c.err(path, "a `}` without its `{`", "write `}}` for a literal brace");
            return parts;
        }
        let Some(end) = after.find('}') else {
            c.err(path, "a `{` without its `}`", "write `{{` for a literal brace");
            return parts;
        };
        let var = &after[..end];
        let part = match var {
            "request_id" => Some(Part::RequestId),
            _ if !request_vars => None,
            "consumer" => Some(Part::Consumer),
            "claim.sub" => Some(Part::ClaimSub),
            "path" => Some(Part::Path),
            v if v.starts_with("claim.") && v.len() > 6 => Some(Part::Claim(v[6..].to_string())),
            v => v
                .strip_prefix("header.")
                .filter(|n| !n.is_empty())
                .map(|n| Part::Header(n.to_ascii_lowercase()))
                .or_else(|| v.strip_prefix("query.").filter(|n| !n.is_empty()).map(|n| Part::Query(n.to_string()))),
        };
        match part {
            Some(p) => {
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                parts.push(p);
            }
            None if request_vars => c.err(
                path,
                format!("unknown template variable `{{{var}}}`"),
                "use {consumer}, {claim.sub}, {claim.NAME}, {header.NAME}, {query.NAME}, {path} or {request_id}",
            ),
            None => c.err(path, format!("`{{{var}}}` is not known in a response"), "response values may use {request_id} only"),
        }
        rest = &after[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(Part::Literal(lit));
    }
    parts
}

fn headers(c: &mut Checker, p: &str, set: &Option<BTreeMap<String, String>>, remove: &Option<Vec<String>>, rename: &Option<BTreeMap<String, String>>, request: bool) -> HeaderEdits {
    let mut out = HeaderEdits::default();
    for (name, value) in set.iter().flatten() {
        let path = format!("{p}.set_headers.{name}");
        if let Some(n) = header_name(c, &path, name) {
            let t = template(c, &path, value, request);
            if t.iter().any(|part| matches!(part, Part::Literal(l) if l.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f))) {
                c.err(&path, "control characters in a header value", "write the value on one line, without control characters");
            }
            out.set.push((n, t));
        }
    }
    for (i, name) in remove.iter().flatten().enumerate() {
        if let Some(n) = header_name(c, &format!("{p}.remove_headers[{i}]"), name) {
            out.remove.push(n);
        }
    }
    for (from, to) in rename.iter().flatten() {
        let path = format!("{p}.rename_headers.{from}");
        if let (Some(f), Some(t)) = (header_name(c, &path, from), header_name(c, &path, to)) {
            out.rename.push((f, t));
        }
    }
    out
}

pub(crate) fn transform(c: &mut Checker, p: &str, raw: &RawTransform) -> Transform {
    let request = raw.request.as_ref().map(|r| {
        let p = format!("{p}.transform.request");
        let headers = headers(c, &p, &r.set_headers, &r.remove_headers, &r.rename_headers, true);
        let rewrite = r.rewrite.as_ref().and_then(|rw| {
            let (Some(from), Some(to)) = (&rw.from, &rw.to) else {
                c.err(format!("{p}.rewrite"), "needs from and to", "write rewrite = { from = \"^/api/v1/(.*)$\", to = \"/v2/$1\" }");
                return None;
            };
            if !to.starts_with('/') {
                c.err(format!("{p}.rewrite.to"), "must start with /", "write the upstream path, e.g. \"/v2/$1\"");
            }
            match Regex::new(from) {
                Ok(re) => Some(Rewrite { from: re, to: template(c, &format!("{p}.rewrite.to"), to, true) }),
                Err(e) => {
                    let first = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
                    c.err(format!("{p}.rewrite.from"), format!("not a regular expression: {first}"), "write a pattern such as \"^/api/v1/(.*)$\" (Rust regex syntax)");
                    None
                }
            }
        });
        let mut query_set = Vec::new();
        let mut query_remove = Vec::new();
        if let Some(q) = &r.query {
            for (name, value) in q.set.iter().flatten() {
                let path = format!("{p}.query.set.{name}");
                if name.is_empty() || name.bytes().any(|b| b"&=#?% ".contains(&b) || !(0x21..=0x7e).contains(&b)) {
                    c.err(&path, format!("`{name}` is not a plain parameter name"), "use letters, digits, - and _");
                    continue;
                }
                query_set.push((name.clone(), template(c, &path, value, true)));
            }
            query_remove = q.remove.clone().unwrap_or_default();
        }
        let json = r.json.as_ref().map(|j| json_edits(c, &p, j, &r.max_json, true));
        RequestTransform { headers, rewrite, query_set, query_remove, json }
    });
    let response = raw.response.as_ref().map(|r| {
        let p = format!("{p}.transform.response");
        ResponseTransform {
            headers: headers(c, &p, &r.set_headers, &r.remove_headers, &r.rename_headers, false),
            json: r.json.as_ref().map(|j| json_edits(c, &p, j, &r.max_json, false)),
        }
    });
    Transform { request, response }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAggregate {
    pub timeout: Option<String>,
    pub merge: Option<bool>,
    pub max_part: Option<String>,
    pub parts: Option<Vec<RawPart>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPart {
    pub key: Option<String>,
    pub service: Option<String>,
    pub path: Option<String>,
    pub timeout: Option<String>,
    pub required: Option<bool>,
}

/// One part of an aggregated response: a GET to a service.
#[derive(Debug, Clone)]
pub struct AggPart {
    pub key: String,
    pub service: usize,
    /// The path and query, from templates (values percent-encoded).
    pub path: Template,
    pub timeout: std::time::Duration,
    pub required: bool,
}

/// `[routes.aggregate]`: the route answers with the JSON of several services' responses.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub timeout: std::time::Duration,
    /// Merge the parts' objects at the top level instead of one key per part.
    pub merge: bool,
    /// A part's body is read up to this bound.
    pub max_part: u64,
    pub parts: Vec<AggPart>,
}

pub(crate) fn aggregate(c: &mut Checker, p: &str, raw: &RawAggregate, services: &[super::Service]) -> Option<Aggregate> {
    let p = format!("{p}.aggregate");
    let timeout = c.duration(&format!("{p}.timeout"), &raw.timeout, std::time::Duration::from_secs(5));
    let max_part = c.size(&format!("{p}.max_part"), &raw.max_part, DEFAULT_MAX_JSON, 1, 64 << 20);
    let mut parts = Vec::new();
    let list = raw.parts.as_deref().unwrap_or_default();
    if list.is_empty() {
        c.err(format!("{p}.parts"), "no part", "add [[routes.aggregate.parts]] tables with key, service and path");
    }
    for (i, rp) in list.iter().enumerate() {
        let pp = format!("{p}.parts[{i}]");
        let Some(key) = rp.key.clone().filter(|k| !k.is_empty()) else {
            c.err(format!("{pp}.key"), "missing", "add key = \"user\" (its name in the response)");
            continue;
        };
        if parts.iter().any(|x: &AggPart| x.key == key) {
            c.err(format!("{pp}.key"), format!("`{key}` is used by an earlier part"), "give each part its own key");
        }
        let service = match rp.service.as_deref() {
            Some(name) => match services.iter().position(|s| s.name == name) {
                Some(i) => i,
                None => {
                    c.err(format!("{pp}.service"), format!("no service named `{name}`"), "name one of the [[services]]");
                    continue;
                }
            },
            None => {
                c.err(format!("{pp}.service"), "missing", "add service = \"users\"");
                continue;
            }
        };
        let Some(path) = rp.path.as_deref().filter(|x| x.starts_with('/')) else {
            c.err(format!("{pp}.path"), "missing, or not starting with /", "add path = \"/api/users/{claim.sub}\"");
            continue;
        };
        let part_timeout = c.duration(&format!("{pp}.timeout"), &rp.timeout, timeout);
        parts.push(AggPart { key, service, path: template(c, &format!("{pp}.path"), path, true), timeout: part_timeout.min(timeout), required: rp.required.unwrap_or(true) });
    }
    Some(Aggregate { timeout, merge: raw.merge.unwrap_or(false), max_part, parts })
}

/// The claims (other than `sub`) that request templates of these routes name, so the JWT
/// verifiers read them from tokens: `{claim.tenant}` -> "tenant".
pub(crate) fn template_claims(routes: &[super::raw::RawRoute]) -> Vec<String> {
    let mut texts: Vec<&str> = Vec::new();
    for r in routes {
        if let Some(req) = r.transform.as_ref().and_then(|t| t.request.as_ref()) {
            texts.extend(req.set_headers.iter().flatten().map(|(_, v)| v.as_str()));
            texts.extend(req.query.iter().flat_map(|q| q.set.iter().flatten()).map(|(_, v)| v.as_str()));
            texts.extend(req.json.iter().flat_map(|j| j.set.iter().flatten()).map(|(_, v)| v.as_str()));
            texts.extend(req.rewrite.iter().filter_map(|rw| rw.to.as_deref()));
        }
        if let Some(a) = &r.aggregate {
            texts.extend(a.parts.iter().flatten().filter_map(|p| p.path.as_deref()));
        }
    }
    let mut names: Vec<String> = Vec::new();
    for t in texts {
        let mut rest = t;
        while let Some(i) = rest.find("{claim.") {
            let after = &rest[i + 7..];
            let Some(end) = after.find('}') else { break };
            let name = &after[..end];
            if !name.is_empty() && name != "sub" && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
            rest = &after[end..];
        }
    }
    names
}

//! Applying a route's header, path and query transforms. Template values are escaped for where
//! they go: in a path or a query value everything but unreserved characters is
//! percent-encoded (so `../admin?x=` stays one segment's text and adds no parameter), and a
//! header value holding a control character (CR, LF, ...) is refused, never written.

use serde_json::{Map, Value};

use crate::config::transform::{HeaderEdits, JsonEdits, Kind, Part, RequestTransform, Seg, Template};
use crate::http::parse::RequestHead;

/// Where a rendered value goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// A JSON string value: any text (the serializer escapes it).
    Text,
    /// A header value: control characters refused.
    Header,
    /// A path segment or a query component: percent-encoded (literals stay as written).
    Url,
}

/// A value that cannot be written where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// What templates may read.
pub struct Vars<'a, 'h> {
    pub req: &'a RequestHead<'a, 'h>,
    pub consumer: Option<&'a [u8]>,
    /// The verified token's claims that templates use.
    pub claims: &'a [(String, String)],
    pub request_id: &'a [u8],
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn put(out: &mut Vec<u8>, v: &[u8], escape: Escape) -> Result<(), Refused> {
    match escape {
        Escape::Text => out.extend_from_slice(v),
        Escape::Header => {
            if v.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(Refused);
            }
            out.extend_from_slice(v);
        }
        Escape::Url => {
            // `.` and `..` alone would be dot-segments: encoded too.
            let dots = !v.is_empty() && v.iter().all(|&b| b == b'.');
            for &b in v {
                if unreserved(b) && !(dots && b == b'.') {
                    out.push(b);
                } else {
                    out.push(b'%');
                    out.push(b"0123456789ABCDEF"[(b >> 4) as usize]);
                    out.push(b"0123456789ABCDEF"[(b & 15) as usize]);
                }
            }
        }
    }
    Ok(())
}

/// Appends `t` rendered; a variable with no value renders empty.
pub fn render(out: &mut Vec<u8>, t: &Template, vars: &Vars, escape: Escape) -> Result<(), Refused> {
    for part in t {
        match part {
            // Literals were checked at load; in a URL they are the operator's own syntax.
            Part::Literal(l) => out.extend_from_slice(l.as_bytes()),
            Part::Consumer | Part::ClaimSub => put(out, vars.consumer.unwrap_or_default(), escape)?,
            Part::Claim(name) => {
                let v = vars.claims.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_bytes()).unwrap_or_default();
                put(out, v, escape)?;
            }
            Part::Header(name) => {
                let v = vars.req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).unwrap_or_default();
                put(out, v, escape)?;
            }
            Part::Query(name) => put(out, super::apikey::query_param(vars.req.query, name.as_bytes()).unwrap_or_default(), escape)?,
            Part::Path => put(out, vars.req.path, escape)?,
            Part::RequestId => put(out, vars.request_id, escape)?,
        }
    }
    Ok(())
}

/// Appends a response value: literals and `{request_id}` (all a response template may hold).
pub fn render_response(out: &mut Vec<u8>, t: &Template, request_id: &[u8]) {
    for part in t {
        match part {
            Part::Literal(l) => out.extend_from_slice(l.as_bytes()),
            Part::RequestId => out.extend_from_slice(request_id),
            _ => {}
        }
    }
}

/// The `set` values of JSON edits, rendered for this request (or, without `vars`, a response).
pub fn json_set_values(e: &JsonEdits, vars: Option<&Vars>, request_id: &[u8]) -> Vec<String> {
    e.set
        .iter()
        .map(|(_, t)| {
            let mut text = Vec::new();
            match vars {
                Some(vars) => {
                    let _ = render(&mut text, t, vars, Escape::Text);
                }
                None => render_response(&mut text, t, request_id),
            }
            String::from_utf8_lossy(&text).into_owned()
        })
        .collect()
}

/// The upstream target (path and query) after a rewrite and query edits, into `out`. `path` is
/// the path after `strip_prefix`; `query` the raw query with its `?`.
pub fn target(out: &mut Vec<u8>, t: &RequestTransform, path: &[u8], query: &[u8], vars: &Vars, scratch: &mut Vec<u8>) -> Result<(), Refused> {
    match &t.rewrite {
        Some(rw) if rw.from.is_match(path) => {
            scratch.clear();
            render(scratch, &rw.to, vars, Escape::Url)?;
            let caps = rw.from.captures(path).ok_or(Refused)?;
            caps.expand(scratch, out);
        }
        _ => out.extend_from_slice(path),
    }
    // Query: the client's parameters but those removed or set, then the set ones.
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        out.push(if first { b'?' } else { b'&' });
        first = false;
    };
    for pair in query.strip_prefix(b"?").unwrap_or(query).split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        let dropped = t.query_remove.iter().any(|r| r.as_bytes() == name) || t.query_set.iter().any(|(n, _)| n.as_bytes() == name);
        if !dropped {
            sep(out);
            out.extend_from_slice(pair);
        }
    }
    for (name, value) in &t.query_set {
        sep(out);
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        render(out, value, vars, Escape::Url)?;
    }
    Ok(())
}

/// A header line's fate in a head being forwarded: written as is, dropped, or renamed.
pub enum Field<'e> {
    Keep,
    Drop,
    Rename(&'e str),
}

pub fn field<'e>(edits: &'e HeaderEdits, name: &[u8]) -> Field<'e> {
    let is = |n: &String| n.as_bytes().eq_ignore_ascii_case(name);
    if edits.remove.iter().any(is) || edits.set.iter().any(|(n, _)| is(n)) {
        return Field::Drop;
    }
    match edits.rename.iter().find(|(from, _)| is(from)) {
        Some((_, to)) => Field::Rename(to),
        None => Field::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_values_cannot_leave_their_place() {
        let cases: &[(&[u8], &str)] = &[
            (b"alice", "alice"),
            (b"../admin?x=1", "..%2Fadmin%3Fx%3D1"),
            (b"..", "%2E%2E"),
            (b".", "%2E"),
            (b"a b&c=d#e", "a%20b%26c%3Dd%23e"),
            (b"caf\xc3\xa9", "caf%C3%A9"),
            (b"50%", "50%25"),
            (b"x\r\ny", "x%0D%0Ay"),
        ];
        for (raw, want) in cases {
            let mut out = Vec::new();
            put(&mut out, raw, Escape::Url).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), *want);
        }
    }

    #[test]
    fn header_values_with_control_characters_are_refused() {
        for (raw, ok) in [(&b"plain value"[..], true), (b"tab\there", true), (b"a\r\nX-Admin: 1", false), (b"nul\0", false), (b"del\x7f", false)] {
            assert_eq!(put(&mut Vec::new(), raw, Escape::Header).is_ok(), ok, "{raw:?}");
        }
    }
}

/// Applies JSON edits to a parsed body: rename, convert, remove, set, then allow. A value that
/// does not convert names its field in the error. `set_values` are the rendered `set`
/// templates, in order (rendered while the request head was at hand).
pub fn apply_json(v: &mut Value, e: &JsonEdits, set_values: &[String]) -> Result<(), String> {
    for (path, to) in &e.rename {
        each_parent(v, &path.segs, &mut |obj, key| {
            if let Some(x) = obj.remove(key) {
                obj.insert(to.clone(), x);
            }
            Ok(())
        })?;
    }
    for (path, kind) in &e.convert {
        each_parent(v, &path.segs, &mut |obj, key| match obj.get_mut(key) {
            Some(x) => convert(x, *kind).map_err(|()| path.text.clone()),
            None => Ok(()),
        })?;
    }
    for path in &e.remove {
        each_parent(v, &path.segs, &mut |obj, key| {
            obj.remove(key);
            Ok(())
        })?;
    }
    for ((path, _), text) in e.set.iter().zip(set_values) {
        let value = Value::String(text.clone());
        each_parent_creating(v, &path.segs, &mut |obj, key| {
            obj.insert(key.to_string(), value.clone());
        });
    }
    if !e.allow.is_empty() {
        let mut kept = Value::Object(Map::new());
        for path in &e.allow {
            copy_path(v, &mut kept, &path.segs);
        }
        *v = kept;
    }
    Ok(())
}

/// What an edit does to one object holding the path's last key.
type Edit<'f> = dyn FnMut(&mut Map<String, Value>, &str) -> Result<(), String> + 'f;

/// Calls `f(parent object, last key)` for every object the path's parent reaches.
fn each_parent(v: &mut Value, segs: &[Seg], f: &mut Edit) -> Result<(), String> {
    match segs {
        [] => Ok(()),
        [Seg::Key(k)] => match v {
            Value::Object(obj) => f(obj, k),
            _ => Ok(()),
        },
        [Seg::Each, rest @ ..] => match v {
            Value::Array(_) if rest.is_empty() => Ok(()),
            Value::Array(items) => items.iter_mut().try_for_each(|x| each_parent(x, rest, f)),
            _ => Ok(()),
        },
        [Seg::Key(k), rest @ ..] => match v.get_mut(k.as_str()) {
            Some(x) => each_parent(x, rest, f),
            None => Ok(()),
        },
    }
}

/// Like `each_parent`, but makes the missing objects on the way (a `set` may add nesting).
fn each_parent_creating(v: &mut Value, segs: &[Seg], f: &mut dyn FnMut(&mut Map<String, Value>, &str)) {
    match segs {
        [] => {}
        [Seg::Key(k)] => {
            if let Value::Object(obj) = v {
                f(obj, k);
            }
        }
        [Seg::Each, rest @ ..] => {
            if let Value::Array(items) = v {
                items.iter_mut().for_each(|x| each_parent_creating(x, rest, f));
            }
        }
        [Seg::Key(k), rest @ ..] => {
            if let Value::Object(obj) = v {
                let next = obj.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
                each_parent_creating(next, rest, f);
            }
        }
    }
}

/// Copies what `segs` reaches in `from` into `to`, keeping the nesting (arrays element-wise).
fn copy_path(from: &Value, to: &mut Value, segs: &[Seg]) {
    match segs {
        [] => *to = from.clone(),
        [Seg::Key(k), rest @ ..] => {
            let (Some(x), Value::Object(obj)) = (from.get(k.as_str()), &mut *to) else { return };
            let slot = obj.entry(k.clone()).or_insert(if rest.is_empty() { Value::Null } else { empty_like(x) });
            copy_path(x, slot, rest);
        }
        [Seg::Each, rest @ ..] => {
            let Value::Array(items) = from else { return };
            if !matches!(to, Value::Array(a) if a.len() == items.len()) {
                *to = Value::Array(items.iter().map(empty_like).collect());
            }
            if let Value::Array(out) = to {
                for (x, slot) in items.iter().zip(out.iter_mut()) {
                    copy_path(x, slot, rest);
                }
            }
        }
    }
}

fn empty_like(v: &Value) -> Value {
    match v {
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(_) => Value::Object(Map::new()),
        other => other.clone(),
    }
}

fn convert(x: &mut Value, kind: Kind) -> Result<(), ()> {
    let new = match (kind, &*x) {
        (_, Value::Null) => return Ok(()),
        (Kind::Number, Value::Number(_)) | (Kind::String, Value::String(_)) | (Kind::Boolean, Value::Bool(_)) => return Ok(()),
        (Kind::Number, Value::String(s)) => {
            let f: f64 = s.trim().parse().map_err(|_| ())?;
            serde_json::Number::from_f64(f).map(Value::Number).ok_or(())?
        }
        (Kind::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => return Ok(()),
        (Kind::Integer, Value::Number(n)) => {
            let f = n.as_f64().ok_or(())?;
            if f.fract() != 0.0 || f.abs() > 9.0e15 {
                return Err(());
            }
            Value::from(f as i64)
        }
        (Kind::Integer, Value::String(s)) => Value::from(s.trim().parse::<i64>().map_err(|_| ())?),
        (Kind::String, Value::Number(n)) => Value::String(n.to_string()),
        (Kind::String, Value::Bool(b)) => Value::String(b.to_string()),
        (Kind::Boolean, Value::String(s)) => match s.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(()),
        },
        _ => return Err(()),
    };
    *x = new;
    Ok(())
}

/// Why a JSON body could not be transformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonFail {
    NotJson,
    /// A value that does not convert, by field path.
    Convert(String),
}

impl JsonFail {
    /// The message naming what failed.
    pub fn detail(&self) -> String {
        match self {
            JsonFail::NotJson => "the body is not valid JSON".to_string(),
            JsonFail::Convert(field) => format!("field `{field}` does not convert to the type the route asks for"),
        }
    }
}

/// Parses, transforms and serializes one body.
pub fn json_body(body: &[u8], e: &JsonEdits, set_values: &[String]) -> Result<Vec<u8>, JsonFail> {
    let mut v: Value = serde_json::from_slice(body).map_err(|_| JsonFail::NotJson)?;
    apply_json(&mut v, e, set_values).map_err(JsonFail::Convert)?;
    serde_json::to_vec(&v).map_err(|_| JsonFail::NotJson)
}

/// Whether a Content-Type names JSON (`application/json`, or `+json`).
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else { return false };
    let media = crate::http::parse::media_type(ct);
    media.eq_ignore_ascii_case(b"application/json") || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

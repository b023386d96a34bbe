//! Applying a route's header, path and query transforms. Template values are escaped for where
//! they go: in a path or a query value everything but unreserved characters is
//! percent-encoded (so `../admin?x=` stays one segment's text and adds no parameter), and a
//! header value holding a control character (CR, LF, ...) is refused, never written.


mod json;

pub use json::{compile, json_body, JsonFail, JsonPlan};

use crate::config::transform::{HeaderEdits, JsonEdits, Part, RequestTransform, Template};
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

/// Whether a Content-Type names JSON (`application/json`, or `+json`).
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else { return false };
    let media = crate::http::parse::media_type(ct);
    media.eq_ignore_ascii_case(b"application/json") || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
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

//! JSON body edits in one pass over the bytes: the body is read token by token and written out
//! as it is read, with the route's edits applied where their paths lead (a trie of the paths,
//! compiled at config load). Nothing is built: values no edit touches are copied byte for byte.
//! The whole body is still checked as JSON (RFC 8259): anything malformed is `NotJson`.
//!
//! The edits keep the meaning of applying, in order, rename, convert, remove, set, allow to the
//! document: a path of a later edit names fields as the earlier ones left them. Two things differ
//! from a parse into a map: member order is kept, and a rename onto a name the object already
//! has leaves both members (a map would keep one).

use serde_json::Value;

use crate::config::transform::{JsonEdits, Kind, Seg};

/// Nesting deeper than this is refused (as serde_json refuses it), so no body can exhaust the
/// stack.
const MAX_DEPTH: usize = 128;

/// The edits at one place in the document, and the places below it.
#[derive(Debug, Default)]
pub struct Node {
    /// Members by name (after renames).
    keys: Vec<(String, Node)>,
    /// Every element of an array (`[*]`).
    each: Option<Box<Node>>,
    /// Renames of this object's members: (name as sent, new name, new name as a JSON string).
    renames: Vec<(String, String, Vec<u8>)>,
    convert: Option<(Kind, String)>,
    remove: bool,
    /// The `set` value (by index) this member gets, added when missing.
    set: Option<usize>,
    /// A `set` lies below this member: a missing one is made as an object.
    set_below: bool,
    /// `allow` paths: Whole keeps this value as it is; Some keeps only what children allow.
    allow: Allow,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Allow {
    /// No allow list applies here (none configured).
    #[default]
    All,
    /// An allow path ends here: the value is kept (edits below it still apply).
    Whole,
    /// Allow paths go through here: only what they reach is kept.
    Partial,
    /// No allow path reaches here: dropped.
    None,
}

/// The compiled edits of a route.
#[derive(Debug, Default)]
pub struct JsonPlan {
    root: Node,
    filtered: bool,
}

fn walk<'n>(mut node: &'n mut Node, segs: &[Seg]) -> &'n mut Node {
    for seg in segs {
        node = match seg {
            Seg::Key(k) => {
                let i = match node.keys.iter().position(|(n, _)| n == k) {
                    Some(i) => i,
                    None => {
                        node.keys.push((k.clone(), Node::default()));
                        node.keys.len() - 1
                    }
                };
                &mut node.keys[i].1
            }
            Seg::Each => node.each.get_or_insert_with(Box::default),
        };
    }
    node
}

/// Compiles a route's JSON edits into the trie the editor follows.
pub fn compile(e: &JsonEdits) -> JsonPlan {
    let mut root = Node::default();
    for (path, to) in &e.rename {
        let Some((Seg::Key(last), parent)) = path.segs.split_last() else { continue };
        let quoted = serde_json::to_vec(to).unwrap_or_default();
        walk(&mut root, parent).renames.push((last.clone(), to.clone(), quoted));
    }
    for (path, kind) in &e.convert {
        walk(&mut root, &path.segs).convert = Some((*kind, path.text.clone()));
    }
    for path in &e.remove {
        walk(&mut root, &path.segs).remove = true;
    }
    for (i, (path, _)) in e.set.iter().enumerate() {
        let n = path.segs.len();
        for k in 0..n {
            if matches!(path.segs[k], Seg::Key(_)) && k + 1 < n {
                walk(&mut root, &path.segs[..=k]).set_below = true;
            }
        }
        let node = walk(&mut root, &path.segs);
        node.set = Some(i);
        node.remove = false;
    }
    let filtered = !e.allow.is_empty();
    if filtered {
        mark_none(&mut root);
        root.allow = Allow::Partial;
        for path in &e.allow {
            let mut node = &mut root;
            for seg in &path.segs {
                if node.allow != Allow::Whole {
                    node.allow = Allow::Partial;
                }
                node = walk(node, std::slice::from_ref(seg));
                if node.allow == Allow::None {
                    node.allow = Allow::Partial;
                }
            }
            node.allow = Allow::Whole;
        }
    }
    JsonPlan { root, filtered }
}

fn mark_none(n: &mut Node) {
    n.allow = Allow::None;
    for (_, c) in &mut n.keys {
        mark_none(c);
    }
    if let Some(c) = &mut n.each {
        mark_none(c);
    }
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

struct Editor<'a> {
    b: &'a [u8],
    i: usize,
    set_values: &'a [String],
}

type R<T> = Result<T, JsonFail>;

impl<'a> Editor<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    /// After a member or element: a comma (more follow, `false`) or `close` (the container
    /// ends, `true`); anything else is not JSON.
    fn member_end(&mut self, close: u8) -> R<bool> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.i += 1;
                Ok(false)
            }
            c if c == close => {
                self.i += 1;
                Ok(true)
            }
            _ => Err(JsonFail::NotJson),
        }
    }

    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(JsonFail::NotJson)
    }

    /// A string token (at `"`); returns its raw bytes, quotes included, and whether it has escapes.
    fn string(&mut self) -> R<(&'a [u8], bool)> {
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            // Plain bytes in a tight loop; the three kinds that matter are handled below.
            while self.b.get(self.i).is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20) {
                self.i += 1;
            }
            let c = *self.b.get(self.i).ok_or(JsonFail::NotJson)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok((&self.b[start..self.i], escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1).ok_or(JsonFail::NotJson)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(JsonFail::NotJson)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(JsonFail::NotJson);
                            }
                            self.i += 6;
                        }
                        _ => return Err(JsonFail::NotJson),
                    }
                }
                0..=0x1f => return Err(JsonFail::NotJson),
                _ => self.i += 1,
            }
        }
    }

    fn number(&mut self) -> R<&'a [u8]> {
        let start = self.i;
        let digits = |s: &mut Self| {
            let from = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            s.i > from
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(JsonFail::NotJson),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(JsonFail::NotJson);
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(JsonFail::NotJson);
            }
        }
        Ok(&self.b[start..self.i])
    }

    fn literal(&mut self, word: &[u8]) -> R<&'a [u8]> {
        let start = self.i;
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err(JsonFail::NotJson);
        }
        self.i += word.len();
        Ok(&self.b[start..self.i])
    }

    /// Reads one value and writes it, as `node` says, to `out` (None: read and check only).
    /// `filter`: an allow list is in force here (not inside a value an allow path keeps whole).
    fn value(&mut self, node: Option<&Node>, out: Option<&mut Vec<u8>>, depth: usize, filter: bool) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(JsonFail::NotJson);
        }
        self.ws();
        let c = self.peek()?;
        if let Some((kind, path)) = node.and_then(|n| n.convert.as_ref()) {
            let start = self.i;
            self.value(None, None, depth, false)?;
            let raw = &self.b[start..self.i];
            if let Some(out) = out {
                convert(raw, *kind, out).map_err(|()| JsonFail::Convert(path.clone()))?;
            }
            return Ok(());
        }
        match c {
            b'{' => self.object(node, out, depth, filter && node.is_some_and(|n| n.allow == Allow::Partial)),
            b'[' => self.array(node, out, depth, filter && node.is_some_and(|n| n.allow == Allow::Partial)),
            _ => {
                let raw = match c {
                    b'"' => self.string()?.0,
                    b't' => self.literal(b"true")?,
                    b'f' => self.literal(b"false")?,
                    b'n' => self.literal(b"null")?,
                    _ => self.number()?,
                };
                if let Some(out) = out {
                    out.extend_from_slice(raw);
                }
                Ok(())
            }
        }
    }

    fn object(&mut self, node: Option<&Node>, mut out: Option<&mut Vec<u8>>, depth: usize, filter: bool) -> R<()> {
        self.i += 1;
        // Members of the trie this object had: set ones are replaced in place, and sets (or the
        // objects leading to them) it lacked are added at its end. A bit per child, up to 64.
        let mut seen: u64 = 0;
        let mut first = true;
        if let Some(o) = out.as_deref_mut() {
            o.push(b'{');
        }
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if self.peek()? != b'"' {
                    return Err(JsonFail::NotJson);
                }
                let (raw_key, escaped) = self.string()?;
                self.ws();
                if self.peek()? != b':' {
                    return Err(JsonFail::NotJson);
                }
                self.i += 1;
                let sent = &raw_key[1..raw_key.len() - 1];
                let decoded;
                let name: &[u8] = if escaped {
                    decoded = serde_json::from_slice::<String>(raw_key).map_err(|_| JsonFail::NotJson)?;
                    decoded.as_bytes()
                } else {
                    sent
                };
                let renamed = node.and_then(|n| n.renames.iter().find(|(from, _, _)| from.as_bytes() == name));
                let out_name = renamed.map_or(name, |(_, t, _)| t.as_bytes());
                let child = node.and_then(|n| n.keys.iter().position(|(k, _)| k.as_bytes() == out_name).map(|i| (i, &n.keys[i].1)));
                let kept = !filter || child.is_some_and(|(_, c)| c.allow != Allow::None);
                let removed = child.is_some_and(|(_, c)| c.remove);
                let set = child.and_then(|(i, c)| c.set.map(|s| (i, s)));
                if let Some((i, _)) = child {
                    if i < 64 {
                        seen |= 1 << i;
                    }
                }
                let write = kept && !removed;
                match (out.as_deref_mut(), write) {
                    (Some(o), true) => {
                        if !first {
                            o.push(b',');
                        }
                        first = false;
                        match renamed {
                            Some((_, _, quoted)) => o.extend_from_slice(quoted),
                            None => o.extend_from_slice(raw_key),
                        }
                        o.push(b':');
                        if let Some((_, s)) = set {
                            self.value(None, None, depth + 1, false)?;
                            let _ = serde_json::to_writer(&mut *o, &self.set_values[s]);
                        } else {
                            self.value(child.map(|(_, c)| c), Some(o), depth + 1, filter)?;
                        }
                    }
                    _ => self.value(child.map(|(_, c)| c), None, depth + 1, false)?,
                }
                if self.member_end(b'}')? {
                    break;
                }
            }
        }
        // The set members (and the objects on their way) this object lacked.
        let Some(o) = out else { return Ok(()) };
        if let Some(n) = node {
            self.missing_sets(n, o, filter, seen, first);
        }
        o.push(b'}');
        Ok(())
    }

    /// Writes the members `n` makes for its sets that the object lacked (`seen`: a bit per
    /// child it had), each after a comma unless it is the object's first.
    fn missing_sets(&self, n: &Node, o: &mut Vec<u8>, filter: bool, seen: u64, mut first: bool) {
        for (i, (k, c)) in n.keys.iter().enumerate() {
            let had = i < 64 && seen & (1 << i) != 0;
            if had || (filter && c.allow == Allow::None) || (c.set.is_none() && !c.set_below) {
                continue;
            }
            if !first {
                o.push(b',');
            }
            first = false;
            let _ = serde_json::to_writer(&mut *o, k);
            o.push(b':');
            self.made(c, o, filter && c.allow == Allow::Partial);
        }
    }

    /// A member made for a `set`: its value, or an object holding the sets below it.
    fn made(&self, c: &Node, o: &mut Vec<u8>, filter: bool) {
        if let Some(s) = c.set {
            let _ = serde_json::to_writer(&mut *o, &self.set_values[s]);
            return;
        }
        o.push(b'{');
        self.missing_sets(c, o, filter, 0, true);
        o.push(b'}');
    }

    fn array(&mut self, node: Option<&Node>, mut out: Option<&mut Vec<u8>>, depth: usize, filter: bool) -> R<()> {
        self.i += 1;
        let each = node.and_then(|n| n.each.as_deref());
        // An array where only an object's members are allowed keeps nothing of it.
        let drop_items = filter && each.is_none_or(|e| e.allow == Allow::None);
        if let Some(o) = out.as_deref_mut() {
            o.push(b'[');
        }
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
        } else {
            let mut first = true;
            loop {
                match (out.as_deref_mut(), drop_items) {
                    (Some(o), false) => {
                        if !first {
                            o.push(b',');
                        }
                        first = false;
                        self.value(each, Some(o), depth + 1, filter)?;
                    }
                    _ => self.value(each, None, depth + 1, false)?,
                }
                if self.member_end(b']')? {
                    break;
                }
            }
        }
        if let Some(o) = out {
            o.push(b']');
        }
        Ok(())
    }
}

/// Converts one value (its raw JSON text) to `kind`, written to `out`; null stays null.
fn convert(raw: &[u8], kind: Kind, out: &mut Vec<u8>) -> Result<(), ()> {
    let first = raw.first().copied().unwrap_or(b' ');
    let keep = match (kind, first) {
        (_, b'n') => true,
        (Kind::Number, b'-' | b'0'..=b'9') => true,
        (Kind::String, b'"') => true,
        (Kind::Boolean, b't' | b'f') => true,
        (Kind::Integer, b'-' | b'0'..=b'9') => !raw.iter().any(|b| matches!(b, b'.' | b'e' | b'E')),
        _ => false,
    };
    if keep {
        out.extend_from_slice(raw);
        return Ok(());
    }
    // The common case without building a value: a plain string holding a number.
    if kind == Kind::Number && first == b'"' && !raw.contains(&b'\\') {
        let text = std::str::from_utf8(&raw[1..raw.len() - 1]).map_err(|_| ())?;
        let f: f64 = text.trim().parse().map_err(|_| ())?;
        if !f.is_finite() {
            return Err(());
        }
        return serde_json::to_writer(&mut *out, &f).map_err(|_| ());
    }
    let v: Value = serde_json::from_slice(raw).map_err(|_| ())?;
    let new = match (kind, &v) {
        (Kind::Number, Value::String(s)) => {
            let f: f64 = s.trim().parse().map_err(|_| ())?;
            serde_json::Number::from_f64(f).map(Value::Number).ok_or(())?
        }
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
    serde_json::to_writer(&mut *out, &new).map_err(|_| ())
}

/// Reads, edits and writes one body. `set_values` are the rendered `set` templates, in order.
pub fn json_body(body: &[u8], e: &JsonEdits, set_values: &[String]) -> Result<Vec<u8>, JsonFail> {
    let plan = &e.compiled;
    let mut ed = Editor { b: body, i: 0, set_values };
    let mut out = Vec::with_capacity(body.len() + 64);
    ed.ws();
    if plan.filtered && ed.peek()? != b'{' {
        // Only an object's members can be allowed: anything else keeps nothing.
        ed.value(None, None, 0, false)?;
        out.extend_from_slice(b"{}");
    } else {
        ed.value(Some(&plan.root), Some(&mut out), 0, plan.filtered)?;
    }
    ed.ws();
    if ed.i != body.len() {
        return Err(JsonFail::NotJson);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn edits(json: &str) -> JsonEdits {
        let cfg = Config::parse(&format!(
            "[[services]]\nname = \"s\"\nupstreams = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n\
             [routes.transform.request]\njson = {json}\n"
        ))
        .unwrap();
        cfg.routes[0].transform.request.as_ref().unwrap().json.clone().unwrap()
    }

    fn run(json: &str, body: &str, sets: &[&str]) -> Result<serde_json::Value, JsonFail> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        json_body(body.as_bytes(), &edits(json), &sets).map(|b| serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&b))))
    }

    #[test]
    fn edits_table() {
        use serde_json::json;
        let table: &[(&str, &str, &[&str], serde_json::Value)] = &[
            (
                r#"{ rename = { "user_id" = "userId", "items[*].sku_id" = "items[*].skuId" }, convert = { "total" = "number" } }"#,
                r#"{"user_id":7,"total":"12.50","items":[{"sku_id":"a"},{"sku_id":"b","x":1}]}"#,
                &[],
                json!({"userId": 7, "total": 12.5, "items": [{"skuId": "a"}, {"skuId": "b", "x": 1}]}),
            ),
            (r#"{ remove = ["internal", "a.b"] }"#, r#"{"internal":1,"a":{"b":2,"c":3},"k":[]}"#, &[], json!({"a": {"c": 3}, "k": []})),
            (r#"{ set = { "source" = "gw", "meta.via" = "x" } }"#, r#"{"source":"client","n":1}"#, &["rid", "gw"], json!({"source": "gw", "n": 1, "meta": {"via": "rid"}})),
            (r#"{ set = { "meta.via" = "x" } }"#, r#"{"meta":{"a":1}}"#, &["rid"], json!({"meta": {"a": 1, "via": "rid"}})),
            (r#"{ allow = ["id", "items[*].sku"] }"#, r#"{"id":1,"secret":2,"items":[{"sku":"a","cost":3},{"sku":"b"}]}"#, &[], json!({"id": 1, "items": [{"sku": "a"}, {"sku": "b"}]})),
            (r#"{ allow = ["a.b"] }"#, r#"{"a":{"b":{"deep":[1,2]},"c":1},"z":0}"#, &[], json!({"a": {"b": {"deep": [1, 2]}}})),
            (r#"{ convert = { "n" = "integer", "s" = "string", "b" = "boolean" } }"#, r#"{"n":"42","s":1.5,"b":"true"}"#, &[], json!({"n": 42, "s": "1.5", "b": true})),
            (r#"{ convert = { "n" = "number" } }"#, r#"{"n":null}"#, &[], json!({"n": null})),
            (r#"{ rename = { "k\u00e9y" = "key" } }"#, r#"{"k\u00e9y":1}"#, &[], json!({"key": 1})),
            (r#"{ remove = ["x"] }"#, r#"  [1, {"x":2}]  "#, &[], json!([1, {"x": 2}])),
        ];
        for (cfg, body, sets, want) in table {
            assert_eq!(run(cfg, body, sets).as_ref(), Ok(want), "{cfg} on {body}");
        }
    }

    #[test]
    fn failures() {
        let cfg = r#"{ convert = { "total" = "number" } }"#;
        assert_eq!(run(cfg, r#"{"total":"twelve"}"#, &[]), Err(JsonFail::Convert("total".into())));
        assert_eq!(run(cfg, r#"{"total":{"a":1}}"#, &[]), Err(JsonFail::Convert("total".into())));
        for bad in ["{", "{\"a\":}", "{\"a\":1,}", "[1,]", "{\"a\":01}", "{\"a\":\"x\u{1}\"}", "{} x", "tru", "\"\\q\"", "{\"a\" 1}", "[1.]", "-"] {
            assert_eq!(run(cfg, bad, &[]), Err(JsonFail::NotJson), "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(run(cfg, &deep, &[]), Err(JsonFail::NotJson));
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            (-1e9f64..1e9).prop_map(|f| serde_json::json!(f)),
            "[a-z\\\\\"\u{e9}\n ]{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..6).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Edits that touch nothing give back the same document, whatever it holds.
        #[test]
        fn untouched_documents_come_back_equal(v in arb_json()) {
            let body = serde_json::to_vec_pretty(&v).unwrap();
            let out = json_body(&body, &edits(r#"{ remove = ["zz.yy"], rename = { "q[*].w" = "q[*].e" } }"#), &[]).unwrap();
            // Compared as serde_json reads both (its float parsing is not exact both ways).
            let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            proptest::prop_assert_eq!(back, sent);
        }

        /// Any bytes: JSON exactly when serde_json says so, and never a panic.
        #[test]
        fn malformed_bytes_are_refused_as_serde_json_refuses_them(bytes in proptest::collection::vec(proptest::sample::select(b"{}[]:,\"\\ 0123456789.-+eEtrufalsn\nxu".to_vec()), 0..40)) {
            let ours = json_body(&bytes, &edits(r#"{ remove = ["a"] }"#), &[]).is_ok();
            let theirs = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
            proptest::prop_assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(&bytes));
        }
    }
}

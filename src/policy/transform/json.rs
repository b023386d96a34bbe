//! JSON body edits without building the whole document: the body is read as the members of its
//! top object, each value kept as the raw text it was sent as (`serde_json::value::RawValue`,
//! validated but not built), and only the objects and arrays an edit's path goes through are
//! opened. What no edit touches is copied out byte for byte. Edits apply in the order of
//! `JsonEdits`: rename, convert, remove, set, allow.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::transform::{JsonEdits, Kind, Seg};

/// A JSON value, opened only as far as an edit needed.
enum Node<'a> {
    Raw(&'a RawValue),
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
    Arr(Vec<Node<'a>>),
    Val(Value),
}

type Members<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// An object key, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The members of an object, their values raw.
struct RawMembers<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawMembers<'de>, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(k) = m.next_key::<Key<'de>>()? {
                    out.push((k.0, m.next_value::<&'de RawValue>()?));
                }
                Ok(RawMembers(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn first_byte(raw: &RawValue) -> u8 {
    raw.get().as_bytes().first().copied().unwrap_or(b' ')
}

impl<'a> Node<'a> {
    /// The object's members, opening a raw object; None for anything else.
    fn obj(&mut self) -> Option<&mut Members<'a>> {
        if let Node::Raw(raw) = self {
            if first_byte(raw) != b'{' {
                return None;
            }
            // Already validated as part of the body: this re-reads one object.
            let members: RawMembers<'a> = serde_json::from_str(raw.get()).ok()?;
            *self = Node::Obj(members.0.into_iter().map(|(k, v)| (k, Node::Raw(v))).collect());
        }
        match self {
            Node::Obj(m) => Some(m),
            _ => None,
        }
    }

    fn arr(&mut self) -> Option<&mut Vec<Node<'a>>> {
        if let Node::Raw(raw) = self {
            if first_byte(raw) != b'[' {
                return None;
            }
            let items: Vec<&'a RawValue> = serde_json::from_str(raw.get()).ok()?;
            *self = Node::Arr(items.into_iter().map(Node::Raw).collect());
        }
        match self {
            Node::Arr(a) => Some(a),
            _ => None,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Node::Raw(r) => out.extend_from_slice(r.get().as_bytes()),
            Node::Val(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            Node::Obj(m) => {
                out.push(b'{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *out, k.as_ref());
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
            Node::Arr(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write(out);
                }
                out.push(b']');
            }
        }
    }
}

/// What an edit does to one object holding the path's last key.
type Edit<'f, 'a> = dyn FnMut(&mut Members<'a>, &str) -> Result<(), String> + 'f;

/// Calls `f(parent object, last key)` for every object the path's parent reaches.
fn each_parent<'a>(node: &mut Node<'a>, segs: &[Seg], f: &mut Edit<'_, 'a>) -> Result<(), String> {
    match segs {
        [] => Ok(()),
        [Seg::Key(k)] => match node.obj() {
            Some(m) => f(m, k),
            None => Ok(()),
        },
        [Seg::Each] => Ok(()),
        [Seg::Each, rest @ ..] => match node.arr() {
            Some(items) => items.iter_mut().try_for_each(|x| each_parent(x, rest, f)),
            None => Ok(()),
        },
        [Seg::Key(k), rest @ ..] => match node.obj() {
            Some(m) => m.iter_mut().filter(|(name, _)| name == k).try_for_each(|(_, x)| each_parent(x, rest, f)),
            None => Ok(()),
        },
    }
}

/// Like `each_parent`, but makes the objects missing on the way (a `set` may add nesting).
fn each_parent_creating<'a>(node: &mut Node<'a>, segs: &[Seg], f: &mut dyn FnMut(&mut Members<'a>, &str)) {
    match segs {
        [] | [Seg::Each] => {}
        [Seg::Key(k)] => {
            if let Some(m) = node.obj() {
                f(m, k);
            }
        }
        [Seg::Each, rest @ ..] => {
            if let Some(items) = node.arr() {
                items.iter_mut().for_each(|x| each_parent_creating(x, rest, f));
            }
        }
        [Seg::Key(k), rest @ ..] => {
            if let Some(m) = node.obj() {
                let i = match m.iter().position(|(name, _)| name == k) {
                    Some(i) => i,
                    None => {
                        m.push((Cow::Owned(k.clone()), Node::Obj(Vec::new())));
                        m.len() - 1
                    }
                };
                each_parent_creating(&mut m[i].1, rest, f);
            }
        }
    }
}

/// Keeps what the allow paths (their remaining segments) reach: an object keeps the members a
/// path names, an array has each element filtered, a path that ends keeps its value whole, and a
/// scalar a path runs past is kept as it is.
fn allow<'a>(node: &mut Node<'a>, paths: &[&[Seg]]) {
    if paths.iter().any(|p| p.is_empty()) {
        return;
    }
    if let Some(m) = node.obj() {
        let taken = std::mem::take(m);
        for (k, mut v) in taken {
            let rest: Vec<&[Seg]> = paths.iter().filter_map(|p| match p.split_first() {
                Some((Seg::Key(name), rest)) if *name == k => Some(rest),
                _ => None,
            }).collect();
            if !rest.is_empty() {
                allow(&mut v, &rest);
                m.push((k, v));
            }
        }
        return;
    }
    if let Some(items) = node.arr() {
        let rest: Vec<&[Seg]> = paths.iter().filter_map(|p| match p.split_first() {
            Some((Seg::Each, rest)) => Some(rest),
            _ => None,
        }).collect();
        if rest.is_empty() {
            items.clear();
        } else {
            items.iter_mut().for_each(|x| allow(x, &rest));
        }
    }
}

fn convert(node: &mut Node, kind: Kind) -> Result<(), ()> {
    let v = match node {
        Node::Raw(r) => serde_json::from_str::<Value>(r.get()).map_err(|_| ())?,
        Node::Val(v) => v.clone(),
        // An object or array converts to nothing.
        Node::Obj(_) | Node::Arr(_) => return Err(()),
    };
    let new = match (kind, &v) {
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
    *node = Node::Val(new);
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

/// Reads, edits and writes one body. `set_values` are the rendered `set` templates, in order.
pub fn json_body(body: &[u8], e: &JsonEdits, set_values: &[String]) -> Result<Vec<u8>, JsonFail> {
    let text = std::str::from_utf8(body).map_err(|_| JsonFail::NotJson)?;
    // The whole body is validated here, once: the top object's members, or the top value.
    let trimmed = text.trim_start_matches([' ', '\t', '\r', '\n']);
    let mut root = if trimmed.starts_with('{') {
        let m: RawMembers = serde_json::from_str(text).map_err(|_| JsonFail::NotJson)?;
        Node::Obj(m.0.into_iter().map(|(k, v)| (k, Node::Raw(v))).collect())
    } else {
        Node::Raw(serde_json::from_str::<&RawValue>(text).map_err(|_| JsonFail::NotJson)?)
    };
    for (path, to) in &e.rename {
        let _ = each_parent(&mut root, &path.segs, &mut |m, key| {
            if m.iter().any(|(k, _)| k == key) && key != to {
                m.retain(|(k, _)| k != to);
                for (k, _) in m.iter_mut().filter(|(k, _)| k == key) {
                    *k = Cow::Owned(to.clone());
                }
            }
            Ok(())
        });
    }
    for (path, kind) in &e.convert {
        each_parent(&mut root, &path.segs, &mut |m, key| {
            m.iter_mut().filter(|(k, _)| k == key).try_for_each(|(_, v)| convert(v, *kind).map_err(|()| path.text.clone()))
        })
        .map_err(JsonFail::Convert)?;
    }
    for path in &e.remove {
        let _ = each_parent(&mut root, &path.segs, &mut |m, key| {
            m.retain(|(k, _)| k != key);
            Ok(())
        });
    }
    for ((path, _), text) in e.set.iter().zip(set_values) {
        each_parent_creating(&mut root, &path.segs, &mut |m, key| {
            m.retain(|(k, _)| k != key);
            m.push((Cow::Owned(key.to_string()), Node::Val(Value::String(text.clone()))));
        });
    }
    if !e.allow.is_empty() {
        if root.obj().is_none() {
            root = Node::Obj(Vec::new());
        }
        let paths: Vec<&[Seg]> = e.allow.iter().map(|p| &p.segs[..]).collect();
        allow(&mut root, &paths);
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    root.write(&mut out);
    Ok(out)
}

//! The line of each error's key path in the config text. `toml::Table` keeps no positions, so the
//! same text is parsed again, only when there are errors, with `toml_edit` (the parser `toml`
//! itself uses, so both read the text alike) and the path is walked to the item's span.

use toml_edit::{Array, ArrayOfTables, ImDocument, Item, TableLike, Value};

use super::ConfigError;

/// Sets `line` on every error whose key path (or, for a key that is missing, its nearest
/// enclosing table) can be found in `text`.
pub fn add_lines(text: &str, errors: &mut [ConfigError]) {
    let Ok(doc) = ImDocument::parse(text) else { return };
    for e in errors.iter_mut().filter(|e| e.line.is_none() && !e.path.is_empty()) {
        e.line = offset_of(&doc, &e.path).map(|at| line_at(text, at));
    }
}

/// The 1-based line holding byte `offset`.
pub fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

enum Step<'p> {
    Key(&'p str),
    Index(usize),
}

/// `routes[2].cors.allow_origins[0]` → routes, 2, cors, allow_origins, 0. None when the path is
/// not of that shape.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if key.is_empty() {
            return None;
        }
        out.push(Step::Key(key));
        while !rest.is_empty() {
            let (n, after) = rest.split_once(']')?;
            out.push(Step::Index(n.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
            if !after.is_empty() && !after.starts_with('[') {
                return None;
            }
        }
    }
    Some(out)
}

/// What a step can lead into.
enum Node<'d> {
    Table(&'d dyn TableLike),
    Tables(&'d ArrayOfTables),
    Array(&'d Array),
    Leaf,
}

fn item_node(item: &Item) -> Node<'_> {
    match item {
        Item::ArrayOfTables(a) => Node::Tables(a),
        Item::Value(v) => value_node(v),
        other => other.as_table_like().map_or(Node::Leaf, Node::Table),
    }
}

fn value_node(value: &Value) -> Node<'_> {
    match value {
        Value::Array(a) => Node::Array(a),
        Value::InlineTable(t) => Node::Table(t),
        _ => Node::Leaf,
    }
}

/// The byte offset of the deepest step of `path` found in `doc`: a key where it is written, a list
/// element or `[[table]]` where it starts.
fn offset_of<S>(doc: &ImDocument<S>, path: &str) -> Option<usize> {
    let mut node = Node::Table(doc.as_table());
    let mut found = None;
    for step in steps(path)? {
        let (span, next) = match (step, node) {
            (Step::Key(k), Node::Table(t)) => {
                let Some((key, item)) = t.get_key_value(k) else { break };
                (key.span().or_else(|| item.span()), item_node(item))
            }
            (Step::Index(i), Node::Tables(a)) => {
                let Some(t) = a.get(i) else { break };
                (t.span(), Node::Table(t))
            }
            (Step::Index(i), Node::Array(a)) => {
                let Some(v) = a.get(i) else { break };
                (v.span(), value_node(v))
            }
            _ => break,
        };
        // A table made implicitly (`[a.b]` makes `a`) has no place of its own; keep the last one.
        found = span.map(|s| s.start).or(found);
        node = next;
    }
    found
}

//! "Did you mean": the closest known key or name to a misspelt one, and the keys each raw table
//! accepts, read from the raw structs' own `Deserialize` impls so the list never drifts from them.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Edit distance counting an insertion, a deletion, a substitution or a swap of two adjacent
/// characters as one edit (optimal string alignment), compared without case.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // Three rows: the one before last (for swaps), the last, and the one being filled.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut last);
        std::mem::swap(&mut last, &mut row);
    }
    last[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a slip: at most two edits, and at
/// most one edit per three characters of the longer word (so "ab" never suggests "cd").
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(word, c), c))
        .filter(|&(d, c)| d <= 2 && 3 * d <= word.chars().count().max(c.chars().count()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// `did you mean `x`?` for the closest of `candidates`, or nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The fix for a reference to a name that nothing defines: the close one if there is one, else the
/// list. `kind` names the list ("services"); `add` says how to define one when there are none.
pub fn name_fix(name: &str, defined: &[&str], kind: &str, add: &str) -> String {
    match closest(name, defined.iter().copied()) {
        _ if defined.is_empty() => add.to_string(),
        Some(close) => format!("did you mean `{close}`? ({kind}: {})", defined.join(", ")),
        None => format!("use one of: {}", defined.join(", ")),
    }
}

/// The keys `T` accepts at each depth, as (relative path, keys): `""` for its own keys, `"cors"` for
/// a nested table, `"keys[]"` for the tables in a list.
pub fn known_keys<'de, T: Deserialize<'de>>() -> Vec<(String, &'static [&'static str])> {
    let mut out = Vec::new();
    // The probe feeds every field an empty value; the result is of no interest, only the walk.
    let _ = T::deserialize(Probe { at: String::new(), out: &mut out });
    out
}

/// A deserializer that answers every struct with each of its fields and notes the field names.
struct Probe<'o> {
    at: String,
    out: &'o mut Vec<(String, &'static [&'static str])>,
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    /// Shapes read through `deserialize_any` (a string or a table, as an upstream entry) are
    /// probed as an empty table: their own keys are checked where they are read.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(Fields { fields: [].iter(), current: "", at: self.at, out: self.out })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.out.push((self.at.clone(), fields));
        visitor.visit_map(Fields { fields: fields.iter(), current: "", at: self.at, out: self.out })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_seq(One(Some(Probe { at: format!("{}[]", self.at), out: self.out })))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(Fields { fields: [].iter(), current: "", at: self.at, out: self.out })
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_i64(0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_str("")
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A struct's fields, each with a probe for its value.
struct Fields<'o> {
    fields: std::slice::Iter<'static, &'static str>,
    current: &'static str,
    at: String,
    out: &'o mut Vec<(String, &'static [&'static str])>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = de::value::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some(&field) = self.fields.next() else { return Ok(None) };
        self.current = field;
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let at = if self.at.is_empty() { self.current.to_string() } else { format!("{}.{}", self.at, self.current) };
        seed.deserialize(Probe { at, out: self.out })
    }
}

/// A list of one probed element.
struct One<'o>(Option<Probe<'o>>);

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = de::value::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.take().map(|probe| seed.deserialize(probe)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits_and_swaps() {
        let cases = [
            ("listen", "listen", 0),
            ("listn", "listen", 1),
            ("lisetn", "listen", 1),
            ("Listen", "listen", 0),
            ("servce", "service", 1),
            ("", "abc", 3),
            ("abc", "", 3),
            ("kitten", "sitting", 3),
            ("ca", "abc", 3),
        ];
        for (a, b, want) in cases {
            assert_eq!(distance(a, b), want, "{a} / {b}");
            assert_eq!(distance(b, a), want, "{b} / {a}");
        }
    }

    #[test]
    fn only_close_names_are_suggested() {
        let keys = ["listen", "workers", "pin_cores", "driver"];
        let cases = [
            ("listn", Some("listen")),
            ("lisetn", Some("listen")),
            ("LISTEN", Some("listen")),
            ("worker", Some("workers")),
            ("drivr", Some("driver")),
            ("pin_core", Some("pin_cores")),
            ("color", None),
            ("lst", None),
            ("listen", None),
        ];
        for (word, want) in cases {
            assert_eq!(closest(word, keys), want, "{word}");
        }
        assert_eq!(closest("ab", ["cd", "xy"]), None, "two edits in two letters is not a slip");
    }

    #[test]
    fn known_keys_come_from_the_structs() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            kid: Option<String>,
            alg: Option<String>,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            name: Option<String>,
            count: Option<i64>,
            on: Option<bool>,
            keys: Option<Vec<Inner>>,
            one: Option<Inner>,
            map: Option<std::collections::BTreeMap<String, String>>,
        }
        let got = known_keys::<Outer>();
        let want: Vec<(String, &[&str])> = vec![
            ("".into(), &["name", "count", "on", "keys", "one", "map"]),
            ("keys[]".into(), &["kid", "alg"]),
            ("one".into(), &["kid", "alg"]),
        ];
        assert_eq!(got, want);
    }
}

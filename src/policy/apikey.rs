//! API keys: presented in a header or query parameter, stored in config only as SHA-256 digests
//! mapped to consumer names. The presented key is hashed and the digest looked up; the stored
//! secrets are never compared byte by byte, so response timing reveals nothing about them.

use std::collections::HashMap;

use ring::digest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    Header(String),
    Query(String),
}

#[derive(Debug, Clone)]
pub struct ApiKeySet {
    pub name: String,
    pub location: KeyLocation,
    /// Header that carries the consumer name upstream (client copies are stripped).
    pub forward_consumer: Option<String>,
    by_digest: HashMap<[u8; 32], String>,
}

impl ApiKeySet {
    /// `keys`: (consumer, lower- or upper-case hex SHA-256 of the key).
    pub fn new(name: String, location: KeyLocation, forward_consumer: Option<String>, keys: &[(String, String)]) -> Result<ApiKeySet, String> {
        let mut by_digest = HashMap::new();
        for (consumer, hex) in keys {
            // Consumers key rate limits and travel in inline buffers of 128 bytes: bounded here
            // rather than cut on the request path, where two names could merge.
            if consumer.len() > 128 {
                return Err(format!("consumer `{}…` is longer than 128 bytes", &consumer[..consumer.floor_char_boundary(32)]));
            }
            let d = parse_hex32(hex).ok_or_else(|| format!("sha256 for `{consumer}` must be 64 hex digits"))?;
            if by_digest.insert(d, consumer.clone()).is_some() {
                return Err(format!("the key of `{consumer}` is listed twice"));
            }
        }
        Ok(ApiKeySet { name, location, forward_consumer, by_digest })
    }

    pub fn consumer_count(&self) -> usize {
        self.by_digest.len()
    }

    /// The consumer owning this presented key, if any.
    pub fn consumer(&self, presented: &[u8]) -> Option<&str> {
        if presented.is_empty() || presented.len() > 4096 {
            return None;
        }
        let d = digest::digest(&digest::SHA256, presented);
        let mut key = [0u8; 32];
        key.copy_from_slice(d.as_ref());
        self.by_digest.get(&key).map(String::as_str)
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The value of query parameter `name` in `query` (which starts with '?' or is empty), raw.
pub fn query_param<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    let q = query.strip_prefix(b"?").unwrap_or(query);
    q.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn keys_are_found_by_digest_only() {
        let digest = hex(digest::digest(&digest::SHA256, b"s3cret").as_ref());
        let set = ApiKeySet::new("p".into(), KeyLocation::Header("X-Api-Key".into()), None, &[("acme".into(), digest.to_uppercase())]).unwrap();
        assert_eq!(set.consumer(b"s3cret"), Some("acme"));
        for wrong in [&b"s3cre"[..], b"s3cret ", b"", b"S3CRET"] {
            assert_eq!(set.consumer(wrong), None, "{wrong:?}");
        }
        assert!(ApiKeySet::new("p".into(), KeyLocation::Query("k".into()), None, &[("a".into(), "xyz".into())]).is_err());
    }

    #[test]
    fn query_parameters() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("?api_key=abc&x=1", "api_key", Some("abc")),
            ("?x=1&api_key=abc", "api_key", Some("abc")),
            ("?xapi_key=abc", "api_key", None),
            ("?api_key", "api_key", Some("")),
            ("", "api_key", None),
        ];
        for &(q, name, want) in cases {
            assert_eq!(query_param(q.as_bytes(), name.as_bytes()), want.map(str::as_bytes), "{q}");
        }
    }
}

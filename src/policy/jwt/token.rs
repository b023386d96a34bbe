//! The compact JWS serialization (RFC 7515 §7.1) taken apart strictly: exactly three parts,
//! unpadded base64url with canonical trailing bits (§2), header and payload JSON objects in which
//! each member we interpret appears once (§5.2 allows rejecting duplicates; a parser that kept
//! the first `alg` while another kept the last would be exploitable).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::alg::Alg;
use super::JwtError;

/// Tokens larger than this are refused before any decoding. Access tokens are typically under
/// 2 KiB; 8 KiB also matches common request-header limits.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The three parts of a compact token, still encoded.
pub struct Compact<'t> {
    /// `BASE64URL(header) '.' BASE64URL(payload)`: the bytes the signature covers (§5.2 step 8).
    pub signing_input: &'t [u8],
    pub header: &'t [u8],
    pub payload: &'t [u8],
    pub signature: &'t [u8],
}

pub fn split(token: &[u8]) -> Result<Compact<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    let mut dots = token.iter().enumerate().filter(|(_, &b)| b == b'.').map(|(i, _)| i);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        // Two parts is not a JWS; five is a JWE, which we do not accept either.
        return Err(JwtError::Malformed);
    };
    Ok(Compact {
        signing_input: &token[..second],
        header: &token[..first],
        payload: &token[first + 1..second],
        signature: &token[second + 1..],
    })
}

/// Strict base64url: no padding, no whitespace, no characters outside the URL-safe alphabet, and
/// zero unused trailing bits, so each value has exactly one encoding.
pub fn decode(part: &[u8]) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed)
}

/// The protected header, as far as we act on it.
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
}

const HEADER_NAMES: [&str; 8] = ["alg", "kid", "typ", "crit", "jku", "jwk", "x5u", "x5c"];

/// RFC 8725 §3.11 explicit typing: a token typed as something else (`dpop+jwt`, `secevent+jwt`,
/// `JOSE` ...) is another kind of JWS and must not pass as an access token. An absent `typ` is
/// accepted, since most issuers omit it. Media types compare case-insensitively and the
/// `application/` prefix may be left out (RFC 7515 §4.1.9).
const ACCEPTED_TYPES: [&str; 4] = ["JWT", "at+jwt", "application/jwt", "application/at+jwt"];

pub fn parse_header(json: &[u8]) -> Result<Header, JwtError> {
    let [alg, kid, typ, crit, jku, jwk, x5u, x5c] =
        parse_object(json, &HEADER_NAMES)?.try_into().map_err(|_| JwtError::Malformed)?;
    // RFC 8725 §3.10: never trust a key or key location named by the token itself.
    if jku.is_some() || jwk.is_some() || x5u.is_some() || x5c.is_some() {
        return Err(JwtError::EmbeddedKey);
    }
    // RFC 7515 §4.1.11: we implement no extensions, so any critical one is unknown to us.
    if crit.is_some() {
        return Err(JwtError::UnknownCritical);
    }
    match typ {
        None => {}
        Some(Value::String(typ)) if ACCEPTED_TYPES.iter().any(|t| t.eq_ignore_ascii_case(&typ)) => {
        }
        Some(Value::String(_)) => return Err(JwtError::WrongType),
        Some(_) => return Err(JwtError::Malformed),
    }
    let alg = match alg {
        Some(Value::String(name)) => Alg::from_name(&name).ok_or(JwtError::UnsupportedAlgorithm)?,
        _ => return Err(JwtError::Malformed),
    };
    let kid = match kid {
        None => None,
        Some(Value::String(kid)) => Some(kid),
        Some(_) => return Err(JwtError::Malformed),
    };
    Ok(Header { alg, kid })
}

/// Parses `json`, which must be one JSON object, keeping only the members named in `names`
/// (slot `i` holds the value of `names[i]`). Other members are skipped without being stored;
/// a named member that appears twice makes the whole object malformed.
pub fn parse_object<S: AsRef<str>>(
    json: &[u8],
    names: &[S],
) -> Result<Vec<Option<Value>>, JwtError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let slots = Members(names).deserialize(&mut de).map_err(|_| JwtError::Malformed)?;
    de.end().map_err(|_| JwtError::Malformed)?;
    Ok(slots)
}

struct Members<'n, S>(&'n [S]);

impl<'de, S: AsRef<str>> DeserializeSeed<'de> for Members<'_, S> {
    type Value = Vec<Option<Value>>;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de, S: AsRef<str>> Visitor<'de> for Members<'_, S> {
    type Value = Vec<Option<Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots = vec![None; self.0.len()];
        while let Some(slot) = map.next_key_seed(MemberName(self.0))? {
            match slot {
                Some(i) if slots[i].is_some() => return Err(de::Error::custom("duplicate member")),
                Some(i) => slots[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(slots)
    }
}

/// Resolves a member name to its slot without allocating (escaped names arrive unescaped in a
/// scratch buffer, so `"\u0061lg"` is `alg`, as JSON requires).
struct MemberName<'n, S>(&'n [S]);

impl<'de, S: AsRef<str>> DeserializeSeed<'de> for MemberName<'_, S> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de, S: AsRef<str>> Visitor<'de> for MemberName<'_, S> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|n| n.as_ref() == name))
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, integer or not. Fractions are dropped,
/// dates before 1970 read as 0 and ones beyond u64 saturate; anything but a number is malformed.
pub fn numeric_date(value: &Value) -> Result<u64, JwtError> {
    let Value::Number(n) = value else { return Err(JwtError::Malformed) };
    if let Some(secs) = n.as_u64() {
        return Ok(secs);
    }
    if n.as_i64().is_some() {
        return Ok(0);
    }
    match n.as_f64() {
        Some(f) if f <= 0.0 => Ok(0),
        // `as` saturates at u64::MAX and floors in between.
        Some(f) => Ok(f as u64),
        None => Err(JwtError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_exactly_three_parts() {
        assert!(split(b"a.b.c").is_ok());
        assert!(split(b"a..").is_ok());
        for bad in [&b""[..], b"abc", b"a.b", b"a.b.c.d", b"a.b.c.d.e"] {
            assert_eq!(split(bad).err(), Some(JwtError::Malformed));
        }
        assert_eq!(split(&[b'a'; MAX_TOKEN_LEN + 1]).err(), Some(JwtError::TooLarge));
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(decode(b"Zm9v").unwrap(), b"foo");
        assert_eq!(decode(b"_-8").unwrap(), [0xff, 0xef]);
        // Padding, standard-alphabet characters, whitespace, a lone sextet, nonzero spare bits.
        for bad in [&b"Zm8="[..], b"/+8", b"Zm 9v", b"Zm9v\n", b"Z", b"AB", b"Zm9"] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn header_rules() {
        let alg = |json: &str| parse_header(json.as_bytes()).map(|h| (h.alg, h.kid));
        assert_eq!(alg(r#"{"alg":"ES256","kid":"k1"}"#), Ok((Alg::ES256, Some("k1".into()))));
        assert_eq!(alg(r#"{"\u0061lg":"ES256"}"#), Ok((Alg::ES256, None)));
        assert_eq!(alg(r#"{"alg":"HS256","typ":"jwt"}"#), Ok((Alg::HS256, None)));
        assert_eq!(alg(r#"{"alg":"HS256","typ":"application/at+JWT"}"#), Ok((Alg::HS256, None)));
        assert_eq!(alg(r#"{"alg":"HS256","typ":"dpop+jwt"}"#), Err(JwtError::WrongType));
        assert_eq!(alg(r#"{"alg":"HS256","typ":7}"#), Err(JwtError::Malformed));
        assert_eq!(alg(r#"{"alg":"none"}"#), Err(JwtError::UnsupportedAlgorithm));
        assert_eq!(alg(r#"{"alg":"HS256","alg":"none"}"#), Err(JwtError::Malformed));
        assert_eq!(alg(r#"{"alg":"HS256","alg":"HS256"}"#), Err(JwtError::Malformed));
        assert_eq!(alg(r#"{"alg":"HS256","crit":[]}"#), Err(JwtError::UnknownCritical));
        assert_eq!(
            alg(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#),
            Err(JwtError::UnknownCritical)
        );
        for embedded in ["jku", "jwk", "x5u", "x5c"] {
            let json = format!(r#"{{"alg":"HS256","{embedded}":null}}"#);
            assert_eq!(alg(&json), Err(JwtError::EmbeddedKey), "{embedded}");
        }
        assert_eq!(alg(r#"{"kid":"k"}"#), Err(JwtError::Malformed));
        assert_eq!(alg(r#"{"alg":"HS256","kid":3}"#), Err(JwtError::Malformed));
        assert_eq!(alg(r#"["alg","HS256"]"#), Err(JwtError::Malformed));
        assert_eq!(alg(r#"{"alg":"HS256"} {}"#), Err(JwtError::Malformed));
        assert_eq!(alg(r#"{"alg":"HS256","x":1,"x":2}"#), Ok((Alg::HS256, None)));
    }

    #[test]
    fn numeric_dates() {
        let date = |json: &str| numeric_date(&serde_json::from_str(json).unwrap());
        assert_eq!(date("1700000000"), Ok(1_700_000_000));
        assert_eq!(date("1700000000.9"), Ok(1_700_000_000));
        assert_eq!(date("1.7e9"), Ok(1_700_000_000));
        assert_eq!(date("-5"), Ok(0));
        assert_eq!(date("1e300"), Ok(u64::MAX));
        assert_eq!(date("\"1700000000\""), Err(JwtError::Malformed));
        assert_eq!(date("null"), Err(JwtError::Malformed));
    }
}

//! PEM armour (RFC 7468) and the few DER structures a public key file holds: SubjectPublicKeyInfo
//! (RFC 5280 §4.1.2.7) wrapping an RSA (RFC 8017 A.1.1), EC (RFC 5480) or Ed25519 (RFC 8410) key,
//! and the bare PKCS#1 `RSA PUBLIC KEY`. Runs only at config load; never sees a token.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A public key as read from a file, before it is matched with an algorithm.
#[derive(Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// Big-endian modulus and exponent, leading zero bytes removed. `pss_only`: the SPKI says
    /// id-RSASSA-PSS (RFC 4055), so the key must not verify PKCS#1 v1.5 signatures.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        pss_only: bool,
    },
    /// An uncompressed point `04 || x || y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// Reads the first PEM block of `text` and decodes the public key in it. Errors say what the
/// file holds instead when it is not a public key, so the fix is obvious.
pub fn parse_pem(text: &str) -> Result<PublicKey, String> {
    let (label, der) = pem_block(text)?;
    match label {
        "PUBLIC KEY" => parse_spki(&der),
        "RSA PUBLIC KEY" => parse_pkcs1(&der),
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
            Err(format!(
                "the file holds a private key (\"{label}\"); configure only the public key \
                 (`openssl pkey -in KEY -pubout`)"
            ))
        }
        "CERTIFICATE" => Err("the file holds a certificate; extract its public key with \
                              `openssl x509 -in CERT -pubkey -noout`"
            .into()),
        other => Err(format!(
            "PEM label \"{other}\" is not a public key; expected \"PUBLIC KEY\" or \"RSA PUBLIC KEY\""
        )),
    }
}

fn pem_block(text: &str) -> Result<(&str, Vec<u8>), String> {
    let mut lines = text.lines().map(str::trim);
    let label = loop {
        match lines.next() {
            None => return Err("no PEM block (\"-----BEGIN ...-----\") found".into()),
            Some(line) => {
                if let Some(label) =
                    line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----"))
                {
                    break label;
                }
            }
        }
    };
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines.by_ref() {
        if line == end {
            let der = STANDARD
                .decode(body.as_bytes())
                .map_err(|e| format!("PEM block \"{label}\" is not valid base64: {e}"))?;
            return Ok((label, der));
        }
        if line.contains(':') {
            return Err(format!(
                "PEM block \"{label}\" has headers (encrypted?); expected a plain public key"
            ));
        }
        body.push_str(line);
    }
    Err(format!("PEM block \"{label}\" has no \"{end}\" line"))
}

/// SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
pub fn parse_spki(der: &[u8]) -> Result<PublicKey, String> {
    let mut outer = Der::new(der);
    let mut spki = Der::new(outer.expect(TAG_SEQUENCE)?);
    outer.finish()?;
    let mut algorithm = Der::new(spki.expect(TAG_SEQUENCE)?);
    let key = bit_string(spki.expect(TAG_BIT_STRING)?)?;
    spki.finish()?;
    let oid = algorithm.expect(TAG_OID)?;
    match oid {
        OID_RSA => {
            // RFC 3279 §2.3.1: parameters are NULL (some encoders omit them).
            if !algorithm.is_empty() {
                algorithm.expect(TAG_NULL)?;
            }
            algorithm.finish()?;
            parse_pkcs1(key)
        }
        OID_EC => {
            let curve = algorithm.expect(TAG_OID)?;
            algorithm.finish()?;
            let (len, key_of): (usize, fn(Vec<u8>) -> PublicKey) = match curve {
                OID_P256 => (65, PublicKey::P256),
                OID_P384 => (97, PublicKey::P384),
                OID_P521 => {
                    return Err("P-521 (ES512) keys are not supported; use P-256 (ES256) or \
                                P-384 (ES384)"
                        .into())
                }
                _ => return Err("unsupported EC curve; use P-256 (ES256) or P-384 (ES384)".into()),
            };
            if key.first() != Some(&0x04) || key.len() != len {
                return Err("EC public key is not an uncompressed point; convert it with \
                            `openssl pkey -pubin -in KEY -pubout -ec_conv_form uncompressed`"
                    .into());
            }
            Ok(key_of(key.to_vec()))
        }
        OID_ED25519 => {
            algorithm.finish()?;
            if key.len() != 32 {
                return Err(format!("Ed25519 public key is {} bytes, expected 32", key.len()));
            }
            Ok(PublicKey::Ed25519(key.to_vec()))
        }
        OID_RSASSA_PSS => {
            // RFC 4055 §3.1: without parameters the key may be used with any PSS hash; with
            // them it is pinned to one hash and salt length, which we would have to enforce.
            if !algorithm.is_empty() {
                return Err("RSASSA-PSS key with parameter restrictions is not supported; \
                            export it without them or as a plain RSA key"
                    .into());
            }
            match parse_pkcs1(key)? {
                PublicKey::Rsa { n, e, .. } => Ok(PublicKey::Rsa { n, e, pss_only: true }),
                _ => unreachable!("parse_pkcs1 returns RSA keys"),
            }
        }
        OID_ED448 => Err("Ed448 keys are not supported; use Ed25519".into()),
        _ => {
            Err("unsupported public key algorithm; expected RSA, EC P-256/P-384 or Ed25519".into())
        }
    }
}

/// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
pub fn parse_pkcs1(der: &[u8]) -> Result<PublicKey, String> {
    let mut outer = Der::new(der);
    let mut seq = Der::new(outer.expect(TAG_SEQUENCE)?);
    outer.finish()?;
    let n = positive_integer(seq.expect(TAG_INTEGER)?)?;
    let e = positive_integer(seq.expect(TAG_INTEGER)?)?;
    seq.finish()?;
    Ok(PublicKey::Rsa { n, e, pss_only: false })
}

fn bit_string(value: &[u8]) -> Result<&[u8], String> {
    match value.split_first() {
        Some((0, key)) => Ok(key),
        _ => Err("malformed DER: key BIT STRING has unused bits".into()),
    }
}

/// A DER INTEGER that must be positive, as big-endian bytes without leading zeros.
fn positive_integer(value: &[u8]) -> Result<Vec<u8>, String> {
    match value.first() {
        None => Err("malformed DER: empty INTEGER".into()),
        Some(b) if b & 0x80 != 0 => Err("malformed DER: negative RSA parameter".into()),
        Some(_) => {
            let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
            Ok(value[start..].to_vec())
        }
    }
}

/// A cursor over DER TLVs: definite lengths only, no high tag numbers.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn finish(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err("malformed DER: trailing bytes".into())
        }
    }

    /// Reads one element with tag `tag` and returns its contents.
    fn expect(&mut self, tag: u8) -> Result<&'a [u8], String> {
        let bad = || String::from("malformed DER");
        let (&found, rest) = self.rest.split_first().ok_or_else(bad)?;
        if found != tag {
            return Err(format!("malformed DER: expected tag {tag:#04x}, found {found:#04x}"));
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let count = (first & 0x7f) as usize;
            // 0x80 is the BER indefinite form; more than 4 length bytes is never a key.
            if count == 0 || count > 4 || rest.len() < count {
                return Err(bad());
            }
            let len = rest[..count].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
            rest = &rest[count..];
            len
        };
        if rest.len() < len {
            return Err("malformed DER: element longer than its container".into());
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_truncated_and_trailing_der() {
        assert!(parse_pkcs1(&[0x30, 0x03, 0x02, 0x01]).is_err());
        assert!(parse_pkcs1(&[0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03, 0x00]).is_err());
        assert!(parse_pkcs1(&[0x30, 0x80, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03, 0, 0]).is_err());
        assert_eq!(
            parse_pkcs1(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x85, 0x02, 0x01, 0x03]),
            Ok(PublicKey::Rsa { n: vec![0x85], e: vec![3], pss_only: false })
        );
        assert!(parse_pkcs1(&[0x30, 0x06, 0x02, 0x01, 0x85, 0x02, 0x01, 0x03]).is_err());
    }

    #[test]
    fn names_what_the_file_holds_instead() {
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(parse_pem(key).unwrap_err().contains("private key"));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_pem(cert).unwrap_err().contains("x509 -in CERT -pubkey"));
        assert!(parse_pem("just text").unwrap_err().contains("no PEM block"));
        let open = "-----BEGIN PUBLIC KEY-----\nAAAA\n";
        assert!(parse_pem(open).unwrap_err().contains("no \"-----END PUBLIC KEY-----\""));
    }

    #[test]
    fn rsassa_pss_spki_is_pss_only() {
        let pem = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt/rsa.pub.pem"),
        )
        .unwrap();
        let (_, der) = pem_block(&pem).unwrap();
        let PublicKey::Rsa { n, e, pss_only: false } = parse_spki(&der).unwrap() else { panic!() };
        // Same key under id-RSASSA-PSS without parameters: AlgorithmIdentifier 30 0b <oid>.
        let key = &der[der.len() - 275..];
        assert_eq!(key[..5], [0x03, 0x82, 0x01, 0x0f, 0x00]);
        let mut pss = vec![0x30, 0x82, 0x01, 0x20, 0x30, 0x0b, 0x06, 0x09];
        pss.extend_from_slice(OID_RSASSA_PSS);
        pss.extend_from_slice(key);
        assert_eq!(parse_spki(&pss), Ok(PublicKey::Rsa { n, e, pss_only: true }));
        // With parameters (here a bare NULL) it is refused.
        pss[3] += 2;
        pss[5] += 2;
        pss.splice(8 + OID_RSASSA_PSS.len()..8 + OID_RSASSA_PSS.len(), [0x05, 0x00]);
        assert!(parse_spki(&pss).unwrap_err().contains("parameter restrictions"));
    }
}

//! JSON Web Key Sets (RFC 7517) read from a local file into verification keys. Strict, because
//! the file is under the operator's control and an ambiguous key is a vulnerability: every key
//! must fix its algorithm (`alg`, or a curve that allows only one), be meant for signatures
//! (`use`/`key_ops`), carry no private material, and one set must not mix shared secrets with
//! public keys (Wycheproof "JWK keyset mixed symmetry").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::alg::{Alg, Family};
use super::der::PublicKey;
use super::key::Key;

/// Members that only a private (or secret-sharing) JWK carries (RFC 7518 §6.2.2, §6.3.2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// Parses a JWKS document. Collects one error per bad key rather than stopping at the first.
pub fn parse_jwks(text: &str) -> Result<Vec<Key>, Vec<String>> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| vec![format!("not valid JSON: {e}")])?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err(vec!["expected a JSON object with a \"keys\" array (RFC 7517 §5)".into()]);
    };
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for (i, jwk) in list.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str);
        let at = match kid {
            Some(kid) => format!("keys[{i}] (kid \"{kid}\")"),
            None => format!("keys[{i}]"),
        };
        match jwk.as_object().ok_or_else(|| "not a JSON object".to_string()).and_then(parse_jwk) {
            Ok(key) => keys.push(key),
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }
    if errors.is_empty()
        && keys.iter().any(Key::is_symmetric)
        && keys.iter().any(|k| !k.is_symmetric())
    {
        errors.push(
            "the set mixes shared secrets (kty \"oct\") with public keys; configure shared \
             secrets as `Secret` keys, not in a JWKS file"
                .into(),
        );
    }
    if errors.is_empty() && keys.is_empty() {
        errors.push("the \"keys\" array is empty".into());
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

/// One JWK to one key.
pub fn parse_jwk(jwk: &Map<String, Value>) -> Result<Key, String> {
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("\"kid\" must be a string".into()),
    };
    if let Some(use_) = jwk.get("use") {
        if use_ != "sig" {
            return Err(format!("\"use\" is {use_}, not \"sig\": this key is not for signatures"));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops.as_array().is_some_and(|ops| ops.iter().any(|op| op == "verify"));
        if !verify {
            return Err("\"key_ops\" does not include \"verify\"".into());
        }
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => match Alg::from_name(name) {
            Some(alg) => Some(alg),
            None => {
                return Err(format!("unsupported \"alg\" \"{name}\"; supported: {}", supported()))
            }
        },
        Some(_) => return Err("\"alg\" must be a string".into()),
    };
    let kty = jwk.get("kty").and_then(Value::as_str).ok_or("missing \"kty\"")?;
    if kty != "oct" {
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
            return Err(format!(
                "holds private key material (\"{member}\"); publish only the public key"
            ));
        }
    }
    match kty {
        "oct" => {
            let alg = alg.ok_or("a kty \"oct\" key needs \"alg\" (HS256, HS384 or HS512)")?;
            Key::secret(kid, alg, &bytes(jwk, "k")?)
        }
        "RSA" => {
            let alg = alg.ok_or(
                "an RSA key needs \"alg\" (RS256/384/512 or PS256/384/512): one key, one algorithm",
            )?;
            let n = strip_zeros(bytes(jwk, "n")?);
            let e = strip_zeros(bytes(jwk, "e")?);
            Key::public(kid, alg, PublicKey::Rsa { n, e, pss_only: false })
        }
        "EC" => {
            let crv = jwk.get("crv").and_then(Value::as_str).ok_or("missing \"crv\"")?;
            let (fixed, size): (Alg, usize) = match crv {
                "P-256" => (Alg::ES256, 32),
                "P-384" => (Alg::ES384, 48),
                other => return Err(format!("unsupported curve \"{other}\"; use P-256 or P-384")),
            };
            let alg = agree(alg, fixed, crv)?;
            let (x, y) = (bytes(jwk, "x")?, bytes(jwk, "y")?);
            if x.len() != size || y.len() != size {
                return Err(format!("\"x\" and \"y\" must be {size} bytes each for {crv}"));
            }
            let point = [&[0x04][..], &x, &y].concat();
            let key = if alg.family() == Family::P256 {
                PublicKey::P256(point)
            } else {
                PublicKey::P384(point)
            };
            Key::public(kid, alg, key)
        }
        "OKP" => {
            let crv = jwk.get("crv").and_then(Value::as_str).ok_or("missing \"crv\"")?;
            if crv != "Ed25519" {
                return Err(format!(
                    "unsupported OKP curve \"{crv}\"; only Ed25519 signs (RFC 8037)"
                ));
            }
            let alg = agree(alg, Alg::EdDSA, crv)?;
            let x = bytes(jwk, "x")?;
            if x.len() != 32 {
                return Err("\"x\" must be 32 bytes for Ed25519".into());
            }
            Key::public(kid, alg, PublicKey::Ed25519(x))
        }
        other => Err(format!("unsupported \"kty\" \"{other}\"; expected oct, RSA, EC or OKP")),
    }
}

/// A curve fixes the algorithm; a stated `alg` must agree with it.
fn agree(stated: Option<Alg>, fixed: Alg, crv: &str) -> Result<Alg, String> {
    match stated {
        Some(alg) if alg != fixed => {
            Err(format!("\"alg\" {alg} does not match curve {crv} (expected {fixed})"))
        }
        _ => Ok(fixed),
    }
}

fn bytes(jwk: &Map<String, Value>, member: &str) -> Result<Vec<u8>, String> {
    let text =
        jwk.get(member).and_then(Value::as_str).ok_or_else(|| format!("missing \"{member}\""))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("\"{member}\" is not unpadded base64url (RFC 7515 §2)"))
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|&&b| b == 0).count();
    v.drain(..zeros);
    v
}

fn supported() -> String {
    Alg::ALL.map(Alg::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(jwks: &str) -> String {
        parse_jwks(jwks).err().map(|e| e.join("; ")).unwrap_or_default()
    }

    #[test]
    fn refuses_ambiguous_or_unfit_keys() {
        let secret =
            r#"{"kty":"oct","alg":"HS256","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;
        assert!(parse_jwks(&format!(r#"{{"keys":[{secret}]}}"#)).is_ok());
        for (jwks, expect) in [
            (r#"{"keys":[]}"#, "empty"),
            (r#"[]"#, "\"keys\" array"),
            (r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#, "needs \"alg\""),
            (r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#, "one key, one algorithm"),
            (
                r#"{"keys":[{"kty":"oct","alg":"HS256","use":"enc","k":"AAAA"}]}"#,
                "not for signatures",
            ),
            (r#"{"keys":[{"kty":"oct","alg":"HS256","key_ops":["sign"],"k":"AAAA"}]}"#, "verify"),
            (r#"{"keys":[{"kty":"oct","alg":"A256GCM","k":"AAAA"}]}"#, "unsupported \"alg\""),
            (
                r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}]}"#,
                "private key material",
            ),
            (r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}"#, "unsupported curve"),
            (
                r#"{"keys":[{"kty":"EC","alg":"ES384","crv":"P-256","x":"AA","y":"AA"}]}"#,
                "does not match",
            ),
            (r#"{"keys":[{"kty":"OKP","crv":"X25519","x":"AA"}]}"#, "only Ed25519"),
            (r#"{"keys":[{"kty":"oct","alg":"HS256","k":"AAAA="}]}"#, "base64url"),
        ] {
            let got = errors(jwks);
            assert!(got.contains(expect), "{jwks}: {got}");
        }
    }
}

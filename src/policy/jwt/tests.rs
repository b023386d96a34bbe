//! Verifier tests against tokens minted by an independent implementation (the `jsonwebtoken`
//! crate), hand-built attack tokens, and the Wycheproof JWS/JWK vectors (`wycheproof`).

mod wycheproof;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use serde_json::{json, Value};

use super::*;

const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "https://issuer.example";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap()
}

fn secret(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 1) as u8).collect()
}

fn pem_key(alg: &str, file: &str, kid: Option<&str>) -> KeySource {
    KeySource::PemFile { kid: kid.map(Into::into), alg: alg.into(), path: data(file) }
}

fn secret_key(alg: &str, secret: Vec<u8>, kid: Option<&str>) -> KeySource {
    KeySource::Secret { kid: kid.map(Into::into), alg: alg.into(), secret }
}

fn config(keys: Vec<KeySource>) -> JwtConfig {
    JwtConfig { name: "test".into(), keys, ..JwtConfig::default() }
}

fn verifier(keys: Vec<KeySource>) -> JwtVerifier {
    JwtVerifier::from_config(&config(keys)).unwrap()
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": ISSUER, "aud": "api", "exp": NOW + 600, "nbf": NOW - 10})
}

fn mint(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// Signs arbitrary header and payload text with jsonwebtoken's signing primitive, for tokens its
/// `encode` would refuse to build.
fn sign_raw(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{signature}")
}

/// A key pair made now, for "signed by somebody else" cases.
fn stranger(alg: Algorithm) -> EncodingKey {
    let rng = SystemRandom::new();
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_der(
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref(),
        ),
        Algorithm::ES384 => EncodingKey::from_ec_der(
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap().as_ref(),
        ),
        Algorithm::EdDSA => {
            EncodingKey::from_ed_der(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref())
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(&[0x55; 64])
        }
        _ => EncodingKey::from_rsa_pem(&read("rsa_other.key.pem")).unwrap(),
    }
}

/// One row per algorithm jsonwebtoken supports: how it signs, how we are configured to verify.
fn algorithms() -> Vec<(Algorithm, EncodingKey, KeySource)> {
    let rsa = || EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap();
    vec![
        (
            Algorithm::HS256,
            EncodingKey::from_secret(&secret(32)),
            secret_key("HS256", secret(32), None),
        ),
        (
            Algorithm::HS384,
            EncodingKey::from_secret(&secret(48)),
            secret_key("HS384", secret(48), None),
        ),
        (
            Algorithm::HS512,
            EncodingKey::from_secret(&secret(64)),
            secret_key("HS512", secret(64), None),
        ),
        (Algorithm::RS256, rsa(), pem_key("RS256", "rsa.pub.pem", None)),
        (Algorithm::RS256, rsa(), pem_key("RS256", "rsa.pkcs1.pub.pem", None)),
        (Algorithm::RS384, rsa(), pem_key("RS384", "rsa.pub.pem", None)),
        (Algorithm::RS512, rsa(), pem_key("RS512", "rsa.pub.pem", None)),
        (Algorithm::PS256, rsa(), pem_key("PS256", "rsa.pub.pem", None)),
        (Algorithm::PS384, rsa(), pem_key("PS384", "rsa.pub.pem", None)),
        (Algorithm::PS512, rsa(), pem_key("PS512", "rsa.pkcs1.pub.pem", None)),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("ec256.key.pem")).unwrap(),
            pem_key("ES256", "ec256.pub.pem", None),
        ),
        (
            Algorithm::ES384,
            EncodingKey::from_ec_pem(&read("ec384.key.pem")).unwrap(),
            pem_key("ES384", "ec384.pub.pem", None),
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&read("ed25519.key.pem")).unwrap(),
            pem_key("EdDSA", "ed25519.pub.pem", None),
        ),
    ]
}

/// Replaces one base64url character in the middle of `part` (0 header, 1 payload, 2 signature)
/// with another, so the token stays well-formed but no longer matches its signature.
fn tamper(token: &str, part: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(Into::into).collect();
    let p = &mut parts[part];
    let i = p.len() / 2;
    let c = if &p[i..=i] == "A" { "B" } else { "A" };
    p.replace_range(i..=i, c);
    parts.join(".")
}

#[test]
fn every_algorithm_minted_by_jsonwebtoken_verifies() {
    for (alg, signing, source) in algorithms() {
        let v = verifier(vec![source.clone()]);
        let token = mint(alg, None, &signing, &claims());
        let got =
            v.verify(token.as_bytes(), NOW).unwrap_or_else(|e| panic!("{alg:?} {source:?}: {e:?}"));
        assert_eq!(
            got,
            Claims { exp: Some(NOW + 600), sub: Some("alice".into()), forwarded: vec![], templated: None }
        );

        // Someone else's payload under this signature, or a changed signature: refused.
        let other = mint(alg, None, &signing, &json!({"sub": "mallory", "exp": NOW + 600}));
        let mut spliced: Vec<&str> = token.split('.').collect();
        spliced[1] = other.split('.').nth(1).unwrap();
        assert_eq!(
            v.verify(spliced.join(".").as_bytes(), NOW),
            Err(JwtError::BadSignature),
            "{alg:?} payload"
        );
        assert_eq!(
            v.verify(tamper(&token, 2).as_bytes(), NOW),
            Err(JwtError::BadSignature),
            "{alg:?} sig"
        );
        let header_changed = tamper(&token, 0);
        assert!(v.verify(header_changed.as_bytes(), NOW).is_err(), "{alg:?} header");

        // The same claims signed by a different key of the same kind.
        let forged = mint(alg, None, &stranger(alg), &claims());
        assert_eq!(
            v.verify(forged.as_bytes(), NOW),
            Err(JwtError::BadSignature),
            "{alg:?} wrong key"
        );
    }
}

#[test]
fn a_key_verifies_only_its_own_algorithm() {
    let rsa = EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap();
    let v = verifier(vec![pem_key("PS256", "rsa.pub.pem", None)]);
    for alg in [Algorithm::RS256, Algorithm::PS384, Algorithm::PS512] {
        let token = mint(alg, None, &rsa, &claims());
        assert_eq!(v.verify(token.as_bytes(), NOW), Err(JwtError::UnsupportedAlgorithm), "{alg:?}");
    }
    let token = mint(Algorithm::PS256, None, &rsa, &claims());
    assert!(v.verify(token.as_bytes(), NOW).is_ok());
}

#[test]
fn rsa_public_key_as_hmac_secret_is_refused() {
    // The classic confusion: the attacker knows the public key file and uses its bytes as an
    // HS256 secret, hoping the verifier lets the token's `alg` pick the algorithm.
    let pem = read("rsa.pub.pem");
    let forged = mint(Algorithm::HS256, None, &EncodingKey::from_secret(&pem), &claims());
    let v = verifier(vec![pem_key("RS256", "rsa.pub.pem", None)]);
    assert_eq!(v.verify(forged.as_bytes(), NOW), Err(JwtError::UnsupportedAlgorithm));

    // Same attack when the provider also has a genuine HMAC key: the kid names the RSA key, whose
    // algorithm is RS256, so HS256 is refused; naming the HMAC key leaves a wrong MAC.
    let v = verifier(vec![
        secret_key("HS256", secret(32), Some("hmac")),
        pem_key("RS256", "rsa.pub.pem", Some("rsa")),
    ]);
    let forged = mint(Algorithm::HS256, Some("rsa"), &EncodingKey::from_secret(&pem), &claims());
    assert_eq!(v.verify(forged.as_bytes(), NOW), Err(JwtError::UnsupportedAlgorithm));
    let forged = mint(Algorithm::HS256, Some("hmac"), &EncodingKey::from_secret(&pem), &claims());
    assert_eq!(v.verify(forged.as_bytes(), NOW), Err(JwtError::BadSignature));
    let forged = mint(Algorithm::HS256, None, &EncodingKey::from_secret(&pem), &claims());
    assert_eq!(v.verify(forged.as_bytes(), NOW), Err(JwtError::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    let v = verifier(vec![secret_key("HS256", secret(32), None)]);
    let payload = b64(&claims().to_string());
    let signed = mint(Algorithm::HS256, None, &EncodingKey::from_secret(&secret(32)), &claims());
    let real_signature = signed.rsplit('.').next().unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        for signature in ["", real_signature] {
            let token = format!("{header}.{payload}.{signature}");
            assert_eq!(
                v.verify(token.as_bytes(), NOW),
                Err(JwtError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }
    // And without the signature part at all.
    let token = format!("{}.{payload}", b64(r#"{"alg":"none"}"#));
    assert_eq!(v.verify(token.as_bytes(), NOW), Err(JwtError::Malformed));
}

#[test]
fn keys_named_by_the_token_are_never_used() {
    // The attacker signs with their own key and embeds it (or a URL to it) in the header.
    let attacker = stranger(Algorithm::ES256);
    let v = verifier(vec![pem_key("ES256", "ec256.pub.pem", None)]);
    let payload = claims().to_string();
    let jwk = r#"{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#;
    for header in [
        format!(r#"{{"alg":"ES256","jwk":{jwk}}}"#),
        r#"{"alg":"ES256","jku":"https://attacker.example/jwks.json"}"#.to_string(),
        r#"{"alg":"ES256","x5u":"https://attacker.example/cert.pem"}"#.to_string(),
        r#"{"alg":"ES256","x5c":["MIIB"]}"#.to_string(),
    ] {
        let token = sign_raw(&header, &payload, &attacker, Algorithm::ES256);
        assert_eq!(v.verify(token.as_bytes(), NOW), Err(JwtError::EmbeddedKey), "{header}");
    }
    // Even when the signature is genuine, a pointer to a key is refused.
    let ours = EncodingKey::from_ec_pem(&read("ec256.key.pem")).unwrap();
    let token = sign_raw(
        r#"{"alg":"ES256","jku":"https://issuer.example/jwks"}"#,
        &payload,
        &ours,
        Algorithm::ES256,
    );
    assert_eq!(v.verify(token.as_bytes(), NOW), Err(JwtError::EmbeddedKey));
}

#[test]
fn header_parameters_crit_and_typ() {
    let key = EncodingKey::from_secret(&secret(32));
    let v = verifier(vec![secret_key("HS256", secret(32), None)]);
    let payload = claims().to_string();
    for (header, expect) in [
        (r#"{"alg":"HS256"}"#, Ok(())),
        (r#"{"alg":"HS256","typ":"JWT"}"#, Ok(())),
        (r#"{"alg":"HS256","typ":"at+jwt"}"#, Ok(())),
        (r#"{"alg":"HS256","typ":"dpop+jwt"}"#, Err(JwtError::WrongType)),
        (r#"{"alg":"HS256","crit":["b64"],"b64":false}"#, Err(JwtError::UnknownCritical)),
        (r#"{"alg":"HS256","crit":["exp"],"exp":1}"#, Err(JwtError::UnknownCritical)),
        (r#"{"alg":"HS256","alg":"HS256"}"#, Err(JwtError::Malformed)),
        (r#"["HS256"]"#, Err(JwtError::Malformed)),
        (r#"{"alg":"HS256","cty":"JWT","x5t":"abc","unknown":{"a":[1]}}"#, Ok(())),
    ] {
        let token = sign_raw(header, &payload, &key, Algorithm::HS256);
        assert_eq!(v.verify(token.as_bytes(), NOW).map(|_| ()), expect, "{header}");
    }
}

#[test]
fn malformed_tokens() {
    let v = verifier(vec![secret_key("HS256", secret(32), None)]);
    let good = mint(Algorithm::HS256, None, &EncodingKey::from_secret(&secret(32)), &claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let cases: Vec<(String, JwtError)> = vec![
        (String::new(), JwtError::Malformed),
        (format!("{h}.{p}"), JwtError::Malformed),
        (format!("{h}.{p}.{s}."), JwtError::Malformed),
        (format!("{h}.{p}.{s}.x.y"), JwtError::Malformed),
        (format!("{h}=.{p}.{s}"), JwtError::Malformed),
        (format!("{h}.{p}.{s}="), JwtError::Malformed),
        (format!(" {h}.{p}.{s}"), JwtError::Malformed),
        (format!("{h}.{p}.{s}\n"), JwtError::Malformed),
        (format!("{h}.{p}.{}", s.replace(['-', '_'], "+")), JwtError::Malformed),
        (format!("{h}.{p}.{}", &s[..s.len() - 1]), JwtError::Malformed),
        (format!("{}.{p}.{s}", b64("not json")), JwtError::Malformed),
        (format!("{h}.{p}.{s}{}", "A".repeat(MAX_TOKEN_LEN)), JwtError::TooLarge),
    ];
    for (token, expect) in cases {
        let shown = &token[..token.len().min(80)];
        assert_eq!(v.verify(token.as_bytes(), NOW).err(), Some(expect), "{shown}");
    }
    assert_eq!(v.verify(&[0xff, b'.', 0xfe, b'.', 0xfd], NOW).err(), Some(JwtError::Malformed));
}

#[test]
fn payload_must_be_one_json_object_with_well_typed_claims() {
    let key = EncodingKey::from_secret(&secret(32));
    let v = verifier(vec![secret_key("HS256", secret(32), None)]);
    for payload in [
        "",
        "foo",
        "[1,2]",
        "\"sub\"",
        r#"{"sub":"a"} {"sub":"b"}"#,
        r#"{"exp":1,"exp":99999999999}"#,
        r#"{"exp":"99999999999"}"#,
        r#"{"nbf":true}"#,
        r#"{"sub":42}"#,
        r#"{"iss":["a"]}"#,
        r#"{"aud":{"x":1}}"#,
        r#"{"aud":["api",3]}"#,
    ] {
        let token = sign_raw(r#"{"alg":"HS256"}"#, payload, &key, Algorithm::HS256);
        assert_eq!(v.verify(token.as_bytes(), NOW).err(), Some(JwtError::Malformed), "{payload}");
    }
    let token = sign_raw(r#"{"alg":"HS256"}"#, r#"{"x":1,"x":2}"#, &key, Algorithm::HS256);
    assert!(v.verify(token.as_bytes(), NOW).is_ok(), "duplicates we do not read are ignored");
}

#[test]
fn exp_and_nbf_with_and_without_leeway() {
    let key = EncodingKey::from_secret(&secret(32));
    for (claims, leeway, now, expect) in [
        (json!({"exp": NOW + 1}), 0, NOW, Ok(())),
        (json!({"exp": NOW}), 0, NOW, Err(JwtError::Expired)),
        (json!({"exp": NOW - 59}), 60, NOW, Ok(())),
        (json!({"exp": NOW - 60}), 60, NOW, Err(JwtError::Expired)),
        (json!({"exp": (NOW + 1) as f64 + 0.5}), 0, NOW, Ok(())),
        (json!({"exp": NOW as f64 - 0.5}), 0, NOW, Err(JwtError::Expired)),
        (json!({"exp": -1}), 60, NOW, Err(JwtError::Expired)),
        (json!({"nbf": NOW}), 0, NOW, Ok(())),
        (json!({"nbf": NOW + 1}), 0, NOW, Err(JwtError::NotYetValid)),
        (json!({"nbf": NOW + 60}), 60, NOW, Ok(())),
        (json!({"nbf": NOW + 61}), 60, NOW, Err(JwtError::NotYetValid)),
        (json!({"nbf": NOW - 5, "exp": NOW + 5}), 0, NOW, Ok(())),
        (json!({}), 0, NOW, Ok(())),
        (json!({"exp": 1e300}), 0, NOW, Ok(())),
    ] {
        let cfg = JwtConfig {
            leeway: Duration::from_secs(leeway),
            ..config(vec![secret_key("HS256", secret(32), None)])
        };
        let v = JwtVerifier::from_config(&cfg).unwrap();
        let token = mint(Algorithm::HS256, None, &key, &claims);
        assert_eq!(v.verify(token.as_bytes(), now).map(|_| ()), expect, "{claims} leeway {leeway}");
    }
}

#[test]
fn issuer_audience_and_required_claims() {
    let key = EncodingKey::from_secret(&secret(32));
    let cfg = JwtConfig {
        issuer: Some(ISSUER.into()),
        audiences: vec!["api".into(), "admin".into()],
        required_claims: vec!["sub".into(), "scope".into()],
        ..config(vec![secret_key("HS256", secret(32), None)])
    };
    let v = JwtVerifier::from_config(&cfg).unwrap();
    let base = json!({"iss": ISSUER, "aud": "api", "sub": "alice", "scope": "read"});
    let with = |k: &str, val: Value| {
        let mut c = base.clone();
        c[k] = val;
        c
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    for (claims, expect) in [
        (base.clone(), Ok(())),
        (with("aud", json!(["other", "admin"])), Ok(())),
        (with("aud", json!("other")), Err(JwtError::WrongAudience)),
        (with("aud", json!([])), Err(JwtError::WrongAudience)),
        (with("aud", json!("API")), Err(JwtError::WrongAudience)),
        (without("aud"), Err(JwtError::WrongAudience)),
        (with("iss", json!("https://issuer.example/")), Err(JwtError::WrongIssuer)),
        (without("iss"), Err(JwtError::WrongIssuer)),
        (without("scope"), Err(JwtError::MissingClaim)),
        (with("scope", Value::Null), Err(JwtError::MissingClaim)),
        (with("scope", json!({"read": true})), Ok(())),
        (without("sub"), Err(JwtError::MissingClaim)),
    ] {
        let token = mint(Algorithm::HS256, None, &key, &claims);
        assert_eq!(v.verify(token.as_bytes(), NOW).map(|_| ()), expect, "{claims}");
    }
    // Without configured audiences, `aud` is not checked.
    let v = verifier(vec![secret_key("HS256", secret(32), None)]);
    let token = mint(Algorithm::HS256, None, &key, &with("aud", json!("anyone")));
    assert!(v.verify(token.as_bytes(), NOW).is_ok());
}

#[test]
fn kid_selects_the_key() {
    let keys: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i + 1; 32]).collect();
    let sign = |i: usize, kid: Option<&str>| {
        mint(Algorithm::HS256, kid, &EncodingKey::from_secret(&keys[i]), &claims())
    };
    let with_kids = verifier(vec![
        secret_key("HS256", keys[0].clone(), Some("a")),
        secret_key("HS256", keys[1].clone(), Some("b")),
        pem_key("ES256", "ec256.pub.pem", Some("c")),
    ]);
    assert!(with_kids.verify(sign(1, Some("b")).as_bytes(), NOW).is_ok());
    assert_eq!(with_kids.verify(sign(1, Some("a")).as_bytes(), NOW), Err(JwtError::BadSignature));
    assert_eq!(with_kids.verify(sign(1, Some("z")).as_bytes(), NOW), Err(JwtError::UnknownKey));
    assert_eq!(
        with_kids.verify(sign(1, Some("c")).as_bytes(), NOW),
        Err(JwtError::UnsupportedAlgorithm)
    );
    // No kid in the token: every HS256 key is a candidate.
    assert!(with_kids.verify(sign(1, None).as_bytes(), NOW).is_ok());
    // A kid in the token never matches a key configured without one.
    let no_kids = verifier(vec![secret_key("HS256", keys[0].clone(), None)]);
    assert_eq!(no_kids.verify(sign(0, Some("a")).as_bytes(), NOW), Err(JwtError::UnknownKey));

    // Without kid, at most MAX_KEYS_TRIED keys are tried, in configured order.
    let many = verifier(keys.iter().map(|k| secret_key("HS256", k.clone(), None)).collect());
    assert!(many.verify(sign(MAX_KEYS_TRIED - 1, None).as_bytes(), NOW).is_ok());
    assert_eq!(
        many.verify(sign(MAX_KEYS_TRIED, None).as_bytes(), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn jwks_file_with_rsa_ec_and_okp_keys() {
    let cfg = JwtConfig { jwks_file: Some(data("jwks.json")), ..config(vec![]) };
    let v = JwtVerifier::from_config(&cfg).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap();
    let ec256 = EncodingKey::from_ec_pem(&read("ec256.key.pem")).unwrap();
    let ec384 = EncodingKey::from_ec_pem(&read("ec384.key.pem")).unwrap();
    let ed = EncodingKey::from_ed_pem(&read("ed25519.key.pem")).unwrap();
    for (alg, kid, key, expect) in [
        (Algorithm::RS256, Some("rsa-rs256"), &rsa, Ok(())),
        (Algorithm::PS256, Some("rsa-ps256"), &rsa, Ok(())),
        (Algorithm::ES256, Some("ec256"), &ec256, Ok(())),
        (Algorithm::ES384, Some("ec384"), &ec384, Ok(())),
        (Algorithm::EdDSA, Some("ed25519"), &ed, Ok(())),
        (Algorithm::RS256, None, &rsa, Ok(())),
        (Algorithm::EdDSA, None, &ed, Ok(())),
        (Algorithm::PS256, Some("rsa-rs256"), &rsa, Err(JwtError::UnsupportedAlgorithm)),
        (Algorithm::ES384, Some("ec256"), &ec384, Err(JwtError::UnsupportedAlgorithm)),
        (Algorithm::ES256, Some("ec256"), &stranger(Algorithm::ES256), Err(JwtError::BadSignature)),
        (Algorithm::RS512, None, &rsa, Err(JwtError::UnsupportedAlgorithm)),
    ] {
        let token = mint(alg, kid, key, &claims());
        assert_eq!(v.verify(token.as_bytes(), NOW).map(|_| ()), expect, "{alg:?} {kid:?}");
    }
}

#[test]
fn forwarded_claims() {
    let key = EncodingKey::from_secret(&secret(32));
    let forward = [
        ("sub", "X-Consumer-Id"),
        ("tenant", "X-Tenant"),
        ("level", "X-Level"),
        ("admin", "X-Admin"),
        ("groups", "X-Groups"),
        ("missing", "X-Missing"),
        ("note", "X-Note"),
        ("exp", "X-Expires"),
        ("nothing", "X-Nothing"),
    ];
    let cfg = JwtConfig {
        forward_claims: forward.iter().map(|(c, h)| (c.to_string(), h.to_string())).collect(),
        ..config(vec![secret_key("HS256", secret(32), None)])
    };
    let v = JwtVerifier::from_config(&cfg).unwrap();
    assert_eq!(v.forward_claims()[0], ("sub".to_string(), "X-Consumer-Id".to_string()));
    let token = mint(
        Algorithm::HS256,
        None,
        &key,
        &json!({
            "sub": "alice", "tenant": "acme corp\tEU", "level": 3.5, "admin": false,
            "groups": ["a", "b"], "note": "x\r\nX-Admin: true", "exp": NOW + 60, "nothing": null
        }),
    );
    let claims = v.verify(token.as_bytes(), NOW).unwrap();
    let expect = [
        Some("alice"),
        Some("acme corp\tEU"),
        Some("3.5"),
        Some("false"),
        None,
        None,
        None,
        Some("1700000060"),
        None,
    ];
    assert_eq!(claims.forwarded, expect.map(|s| s.map(String::from)));
}

#[test]
fn config_errors_name_every_problem() {
    let cfg = JwtConfig {
        keys: vec![
            pem_key("RS256", "does-not-exist.pem", None),
            pem_key("RS256", "ec256.pub.pem", None),
            pem_key("ES384", "ec256.pub.pem", None),
            pem_key("HS256", "rsa.pub.pem", None),
            pem_key("RS256", "rsa.key.pem", None),
            secret_key("HS256", secret(16), None),
            secret_key("none", secret(32), None),
            secret_key("RS256", secret(32), None),
            secret_key("HS256", secret(32), Some("dup")),
            secret_key("HS384", secret(48), Some("dup")),
        ],
        jwks_file: Some(data("missing-jwks.json")),
        forward_claims: vec![
            ("sub".into(), "Bad Header".into()),
            ("sub".into(), "Content-Length".into()),
        ],
        ..JwtConfig::default()
    };
    let errors = JwtVerifier::from_config(&cfg).unwrap_err();
    let expect = [
        "keys[0]: cannot read",
        "keys[1]: ",
        "keys[2]: ",
        "keys[3]: ",
        "keys[4]: ",
        "keys[5]: HS256 secret is 16 bytes",
        "keys[6]: unknown alg \"none\"",
        "keys[7]: a shared secret can only be used with HS256",
        "jwks_file ",
        "keys[9]: kid \"dup\" is already used by keys[8]",
        "forward_claims[0]: \"Bad Header\" is not a valid header name",
        "forward_claims[1]: \"Content-Length\" frames or routes",
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (error, expect) in errors.iter().zip(expect) {
        assert!(error.starts_with(expect), "{error:?} should start with {expect:?}");
    }
    assert!(errors[1].contains("an RSA key") || errors[1].contains("P-256"), "{}", errors[1]);
    assert!(errors[2].contains("cannot verify ES384"), "{}", errors[2]);
    assert!(errors[4].contains("private key"), "{}", errors[4]);
    assert_eq!(
        JwtVerifier::from_config(&JwtConfig::default()).unwrap_err(),
        ["no keys: configure `keys` or `jwks_file`"]
    );
}

#[test]
fn errors_speak_in_general_terms() {
    assert_eq!(JwtError::Expired.message(), "token expired");
    assert_eq!(JwtError::BadSignature.to_string(), "invalid signature");
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JwtVerifier>();
}

#[test]
fn token_cache_hit_miss_expiry_and_bound() {
    let key = EncodingKey::from_secret(&secret(32));
    let cfg = JwtConfig {
        leeway: Duration::from_secs(30),
        ..config(vec![secret_key("HS256", secret(32), None)])
    };
    let v = JwtVerifier::from_config(&cfg).unwrap();
    let token = |sub: &str, exp: Option<u64>| {
        let claims = match exp {
            Some(exp) => json!({"sub": sub, "exp": exp}),
            None => json!({"sub": sub}),
        };
        mint(Algorithm::HS256, None, &key, &claims)
    };

    let mut cache = v.token_cache(4);
    let a = token("a", Some(NOW + 100));
    assert!(cache.get(a.as_bytes(), NOW).is_none(), "miss before insert");
    cache.insert(a.as_bytes(), v.verify(a.as_bytes(), NOW).unwrap(), NOW);
    assert_eq!(cache.get(a.as_bytes(), NOW).and_then(|c| c.sub.as_deref()), Some("a"));
    // Valid exactly as long as `verify` says: until exp + leeway.
    assert!(cache.get(a.as_bytes(), NOW + 129).is_some());
    assert!(v.verify(a.as_bytes(), NOW + 129).is_ok());
    assert!(cache.get(a.as_bytes(), NOW + 130).is_none());
    assert_eq!(v.verify(a.as_bytes(), NOW + 130), Err(JwtError::Expired));
    // A different token (even one byte) misses.
    assert!(cache.get(tamper(&a, 2).as_bytes(), NOW).is_none());
    assert!(cache.get(&a.as_bytes()[..a.len() - 1], NOW).is_none());

    // Without exp: the default TTL.
    let b = token("b", None);
    cache.insert(b.as_bytes(), v.verify(b.as_bytes(), NOW).unwrap(), NOW);
    assert!(cache.get(b.as_bytes(), NOW + DEFAULT_TTL_SECS - 1).is_some());
    assert!(cache.get(b.as_bytes(), NOW + DEFAULT_TTL_SECS).is_none());

    // Never grows past capacity; expired entries go first.
    let mut cache = v.token_cache(3);
    let short = token("short", Some(NOW + 10));
    cache.insert(short.as_bytes(), v.verify(short.as_bytes(), NOW).unwrap(), NOW);
    let long: Vec<String> = (0..2).map(|i| token(&format!("long{i}"), Some(NOW + 1000))).collect();
    for t in &long {
        cache.insert(t.as_bytes(), v.verify(t.as_bytes(), NOW).unwrap(), NOW);
    }
    assert_eq!(cache.len(), 3);
    let later = NOW + 100; // `short` has expired (exp + leeway = NOW + 40)
    let fresh = token("fresh", Some(NOW + 1000));
    cache.insert(fresh.as_bytes(), v.verify(fresh.as_bytes(), later).unwrap(), later);
    assert_eq!(cache.len(), 3);
    assert!(cache.get(fresh.as_bytes(), later).is_some());
    assert!(
        long.iter().all(|t| cache.get(t.as_bytes(), later).is_some()),
        "the expired entry was evicted"
    );
    for i in 0..50 {
        let t = token(&format!("churn{i}"), Some(NOW + 1000));
        cache.insert(t.as_bytes(), v.verify(t.as_bytes(), later).unwrap(), later);
        assert!(cache.len() <= 3);
        assert!(cache.get(t.as_bytes(), later).is_some(), "the newest entry is kept");
    }
    // Re-inserting a cached token replaces its entry instead of adding one.
    let t = token("churn49", Some(NOW + 1000));
    cache.insert(t.as_bytes(), v.verify(t.as_bytes(), later).unwrap(), later);
    assert_eq!(cache.len(), 3);
    // Already expired, or no room at all: nothing is stored.
    let mut cache = TokenCache::new(2);
    cache.insert(short.as_bytes(), Claims { exp: Some(NOW), ..Claims::default() }, NOW);
    assert!(cache.is_empty());
    let mut none = TokenCache::new(0);
    none.insert(a.as_bytes(), Claims::default(), NOW);
    assert!(none.get(a.as_bytes(), NOW).is_none());
}

//! Every test of Wycheproof's `json_web_signature_test.json` and `json_web_key_test.json`
//! (tests/data/wycheproof, see SOURCE) run through the JWS layer of the verifier: signature and
//! encoding only, since most payloads there are not JWT claims (`"foo"`). Each group's key goes
//! through the same JWKS loader as a configured file, so a key refused at load counts as the
//! vector being rejected.
//!
//! Outcomes are tallied as valid (verified), invalid (rejected), unsupported (a key outside our
//! algorithm list: must be rejected whatever Wycheproof expects) and deviations (listed below
//! with the reason and the outcome we assert instead). Anything else fails the test.

use std::path::Path;

use serde_json::Value;

use super::super::{JwtConfig, JwtError, JwtVerifier};

/// Vectors whose expectation we deliberately do not meet, with why, and what we do instead.
const DEVIATIONS: [(&str, u64, Result<(), JwtError>, &str); 6] = [
    (
        "json_web_signature_test.json",
        346,
        Err(JwtError::UnsupportedAlgorithm),
        "RFC 7520 Figure 20: the key declares alg PS256 but the token says PS384; RFC 8725 §3.1 \
         (the key decides the algorithm) requires refusing it",
    ),
    (
        "json_web_signature_test.json",
        350,
        Err(JwtError::UnsupportedAlgorithm),
        "same as 346 (key_ops variant): key alg PS256, token alg PS384",
    ),
    (
        "json_web_signature_test.json",
        367,
        Ok(()),
        "\"invalidBase64Padding\" is byte-for-byte the token of valid tcId 357 with the same key; \
         both expectations cannot hold, and we side with 357",
    ),
    (
        "json_web_signature_test.json",
        370,
        Ok(()),
        "\"invalidBase64PaddingInPayload\": byte-for-byte tcId 357 again (see 367)",
    ),
    (
        "json_web_signature_test.json",
        372,
        Err(JwtError::Malformed),
        "\"valid\" despite a '?' inside the header part; '?' is not base64url (RFC 7515 §2, \
         RFC 4648 §5), and tcIds 361-366, 369 and 371 demand rejecting exactly that",
    ),
    (
        "json_web_signature_test.json",
        373,
        Err(JwtError::Malformed),
        "\"valid\" despite a '?' inside the payload part; see 372",
    ),
];

/// Key algorithms and curves we do not implement (RFC 7518 ES512 on P-521, and the invalid name
/// "ES521" some vectors use for it).
fn unsupported_key(jwk: &Value) -> bool {
    let alg = jwk.get("alg").and_then(Value::as_str);
    let crv = jwk.get("crv").and_then(Value::as_str);
    matches!(alg, Some("ES512" | "ES521")) || crv == Some("P-521")
}

#[derive(Default)]
struct Tally {
    valid: usize,
    invalid: usize,
    rejected_at_load: usize,
    unsupported: usize,
    unsupported_valid: usize,
    deviations: Vec<String>,
    /// Groups whose key the loader refused, with its reason: their vectors never reach `verify`.
    refused_keys: Vec<String>,
    failures: Vec<String>,
}

fn run_file(file: &str, tally: &mut Tally) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wycheproof").join(file);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut seen = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        // Verification keys are public; symmetric groups only carry the (shared) private key.
        let key = group.get("public").or_else(|| group.get("private")).unwrap();
        let jwks = if key.get("keys").is_some() {
            key.clone()
        } else {
            serde_json::json!({ "keys": [key] })
        };
        let unsupported = jwks["keys"].as_array().unwrap().iter().any(unsupported_key);
        let verifier = JwtVerifier::build(
            &JwtConfig { jwks_file: Some(path.clone()), ..JwtConfig::default() },
            Some((&path, Ok(jwks.to_string()))),
        );
        if let Err(errors) = &verifier {
            let ids: Vec<String> =
                group["tests"].as_array().unwrap().iter().map(|t| t["tcId"].to_string()).collect();
            let comment = group["comment"].as_str().unwrap_or("");
            tally.refused_keys.push(format!(
                "{file} {comment} (tcId {}): {}",
                ids.join(","),
                errors.join("; ")
            ));
        }
        for test in group["tests"].as_array().unwrap() {
            seen += 1;
            let id = test["tcId"].as_u64().unwrap();
            let expect_valid = test["result"] == "valid";
            // JSON-serialized JWS (tcId 17) arrives as an object: we only speak compact form.
            let token = match &test["jws"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let outcome = match &verifier {
                Ok(v) => v.verify_signature(token.as_bytes()).map(|_| ()),
                Err(_) => Err(JwtError::UnknownKey),
            };
            let name = format!("{file} tcId {id} ({})", test["comment"].as_str().unwrap_or(""));
            if let Some((_, _, ours, why)) =
                DEVIATIONS.iter().find(|(f, i, _, _)| *f == file && *i == id)
            {
                if outcome == *ours && verifier.is_ok() {
                    tally
                        .deviations
                        .push(format!("{name}: expected {}, we {:?}: {why}", test["result"], ours));
                } else {
                    tally.failures.push(format!("{name}: listed deviation now gives {outcome:?}"));
                }
                continue;
            }
            if unsupported {
                tally.unsupported += 1;
                tally.unsupported_valid += usize::from(expect_valid);
                if outcome.is_ok() {
                    tally.failures.push(format!("{name}: unsupported key, but the token verified"));
                }
                continue;
            }
            match (expect_valid, outcome) {
                (true, Ok(())) => tally.valid += 1,
                (false, Err(_)) => {
                    tally.invalid += 1;
                    tally.rejected_at_load += usize::from(verifier.is_err());
                }
                (true, Err(e)) => {
                    let load = verifier.as_ref().err().map(|e| e.join("; "));
                    tally.failures.push(format!("{name}: valid vector refused: {e:?} {load:?}"));
                }
                (false, Ok(())) => tally.failures.push(format!("{name}: invalid vector verified")),
            }
        }
    }
    assert_eq!(Some(seen as u64), doc["numberOfTests"].as_u64(), "{file}: every test was run");
    seen
}

#[test]
fn wycheproof_jws_and_jwk_vectors() {
    let mut tally = Tally::default();
    let total = run_file("json_web_signature_test.json", &mut tally)
        + run_file("json_web_key_test.json", &mut tally);
    println!(
        "wycheproof: {total} vectors: {} valid verified, {} invalid rejected ({} of them at key load), \
         {} unsupported rejected ({} of them marked valid), {} listed deviations",
        tally.valid,
        tally.invalid,
        tally.rejected_at_load,
        tally.unsupported,
        tally.unsupported_valid,
        tally.deviations.len()
    );
    for d in &tally.deviations {
        println!("  deviation: {d}");
    }
    for r in &tally.refused_keys {
        println!("  key refused at load: {r}");
    }
    assert!(tally.failures.is_empty(), "failures:\n{}", tally.failures.join("\n"));
    assert_eq!(tally.valid + tally.invalid + tally.unsupported + tally.deviations.len(), total);
}

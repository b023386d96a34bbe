//! JWT verification cost per algorithm, against the `jsonwebtoken` crate doing the same checks,
//! and the per-shard token cache hit that lets a repeated token skip the signature check.
//!
//! Run: `cargo bench --bench jwt -- --warm-up-time 1 --measurement-time 2`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ringgate::policy::jwt::{JwtConfig, JwtVerifier, KeySource};
use serde_json::json;

/// Counts allocations, so the bench can check that a cache hit makes none.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NOW: u64 = 1_700_000_000;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap()
}

/// A typical access token: issuer, audience, subject, times, scopes.
fn claims() -> serde_json::Value {
    json!({
        "iss": "https://issuer.example", "aud": "api", "sub": "user-4711",
        "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
        "scope": "orders:read orders:write", "tenant": "acme"
    })
}

struct Case {
    name: &'static str,
    alg: Algorithm,
    signing: EncodingKey,
    decoding: DecodingKey,
    source: KeySource,
}

fn cases() -> Vec<Case> {
    let secret = vec![0x2a; 32];
    let pem =
        |alg: &str, file: &str| KeySource::PemFile { kid: None, alg: alg.into(), path: data(file) };
    let rsa_pub = read("rsa.pub.pem");
    vec![
        Case {
            name: "HS256",
            alg: Algorithm::HS256,
            signing: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            source: KeySource::Secret { kid: None, alg: "HS256".into(), secret: secret.clone() },
        },
        Case {
            name: "RS256-2048",
            alg: Algorithm::RS256,
            signing: EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap(),
            decoding: DecodingKey::from_rsa_pem(&rsa_pub).unwrap(),
            source: pem("RS256", "rsa.pub.pem"),
        },
        Case {
            name: "PS256-2048",
            alg: Algorithm::PS256,
            signing: EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap(),
            decoding: DecodingKey::from_rsa_pem(&rsa_pub).unwrap(),
            source: pem("PS256", "rsa.pub.pem"),
        },
        Case {
            name: "ES256",
            alg: Algorithm::ES256,
            signing: EncodingKey::from_ec_pem(&read("ec256.key.pem")).unwrap(),
            decoding: DecodingKey::from_ec_pem(&read("ec256.pub.pem")).unwrap(),
            source: pem("ES256", "ec256.pub.pem"),
        },
        Case {
            name: "ES384",
            alg: Algorithm::ES384,
            signing: EncodingKey::from_ec_pem(&read("ec384.key.pem")).unwrap(),
            decoding: DecodingKey::from_ec_pem(&read("ec384.pub.pem")).unwrap(),
            source: pem("ES384", "ec384.pub.pem"),
        },
        Case {
            name: "EdDSA",
            alg: Algorithm::EdDSA,
            signing: EncodingKey::from_ed_pem(&read("ed25519.key.pem")).unwrap(),
            decoding: DecodingKey::from_ed_pem(&read("ed25519.pub.pem")).unwrap(),
            source: pem("EdDSA", "ed25519.pub.pem"),
        },
    ]
}

fn verifier(source: KeySource) -> JwtVerifier {
    JwtVerifier::from_config(&JwtConfig {
        name: "bench".into(),
        issuer: Some("https://issuer.example".into()),
        audiences: vec!["api".into()],
        keys: vec![source],
        forward_claims: vec![("sub".into(), "X-Consumer-Id".into())],
        ..JwtConfig::default()
    })
    .unwrap()
}

fn bench_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt_verify");
    for case in cases() {
        let token = jsonwebtoken::encode(&Header::new(case.alg), &claims(), &case.signing).unwrap();
        let v = verifier(case.source);
        assert!(v.verify(token.as_bytes(), NOW).is_ok(), "{}", case.name);
        group.bench_function(case.name, |b| {
            b.iter(|| v.verify(black_box(token.as_bytes()), NOW).unwrap())
        });
    }
    group.finish();
}

/// The same work done by the `jsonwebtoken` crate (signature, exp/nbf, iss, aud), as a yardstick.
fn bench_jsonwebtoken(c: &mut Criterion) {
    let mut group = c.benchmark_group("jsonwebtoken_decode");
    for case in cases() {
        let token = jsonwebtoken::encode(&Header::new(case.alg), &claims(), &case.signing).unwrap();
        let mut validation = Validation::new(case.alg);
        validation.set_issuer(&["https://issuer.example"]);
        validation.set_audience(&["api"]);
        validation.validate_nbf = true;
        // jsonwebtoken reads the clock itself; the claims are valid for an hour from NOW, which
        // has passed, so disable its exp check to compare the rest of the work.
        validation.validate_exp = false;
        let decode = || {
            jsonwebtoken::decode::<serde_json::Value>(
                black_box(&token),
                &case.decoding,
                &validation,
            )
        };
        if let Err(e) = decode() {
            panic!("{}: {e}", case.name);
        }
        group.bench_function(case.name, |b| b.iter(|| decode().unwrap()));
    }
    group.finish();
}

fn bench_cache(c: &mut Criterion) {
    let case = cases().into_iter().find(|c| c.name == "RS256-2048").unwrap();
    let token = jsonwebtoken::encode(&Header::new(case.alg), &claims(), &case.signing).unwrap();
    let v = verifier(case.source);
    let mut cache = v.token_cache(10_000);
    // Fill the cache with other tokens too, so the hit is a lookup among many.
    for i in 0..1000 {
        let mut other = claims();
        other["sub"] = json!(format!("user-{i}"));
        let t = jsonwebtoken::encode(&Header::new(case.alg), &other, &case.signing).unwrap();
        cache.insert(t.as_bytes(), v.verify(t.as_bytes(), NOW).unwrap(), NOW);
    }
    cache.insert(token.as_bytes(), v.verify(token.as_bytes(), NOW).unwrap(), NOW);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..100 {
        assert!(cache.get(token.as_bytes(), NOW).is_some());
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(allocations, 0, "a cache hit must not allocate");

    let mut group = c.benchmark_group("jwt_cache");
    group.bench_function("hit (RS256 token)", |b| {
        b.iter(|| cache.get(black_box(token.as_bytes()), NOW).is_some())
    });
    group.bench_function("miss then verify (RS256)", |b| {
        b.iter(|| {
            let mut empty = v.token_cache(1);
            let token = black_box(token.as_bytes());
            if empty.get(token, NOW).is_none() {
                empty.insert(token, v.verify(token, NOW).unwrap(), NOW);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_verify, bench_jsonwebtoken, bench_cache);
criterion_main!(benches);

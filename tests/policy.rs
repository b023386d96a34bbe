//! Edge policies through the real gateway: JWT and API-key auth, rate limits with their headers,
//! IP rules, the per-address connection cap, request validation and CORS. Tokens are minted by
//! an independent implementation (the `jsonwebtoken` crate).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A gateway whose only route `/` carries `route_extra`, with `top` (policy tables) before it.
fn gateway(up: &Upstream, server_extra: &str, top: &str, route_extra: &str) -> Gw {
    Gw::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n{server_extra}\n{top}\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{}\"]\n\n\
         [[routes]]\nname = \"all\"\npaths = [\"/\"]\nservice = \"svc\"\n{route_extra}\n",
        up.addr
    ))
}

fn jwt_table() -> String {
    format!(
        "[[jwt]]\nname = \"main\"\nissuer = \"https://issuer.test\"\naudiences = [\"orders\"]\n\
         token_cookie = \"session\"\ntoken_query = \"access_token\"\n\
         forward_claims = {{ sub = \"X-Consumer-Id\", scope = \"X-Scope\" }}\n\
         [[jwt.keys]]\nkid = \"k1\"\nalg = \"HS256\"\nsecret = \"{SECRET}\"\n"
    )
}

fn req(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\n{headers}\r\n").into_bytes()
}

#[test]
fn jwt_route_admits_valid_tokens_and_forwards_claims() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", &jwt_table(), "auth = [\"main\"]");
    let good = hs256(json!({"sub": "alice", "scope": "read", "iss": "https://issuer.test", "aud": "orders", "exp": now() + 600}));
    let mut c = Client::connect(gw.addr);
    let r = c.request(&req("/", &format!("Authorization: Bearer {good}\r\nX-Consumer-Id: forged\r\n")));
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = &up.requests()[0];
    assert_eq!(seen.headers("x-consumer-id"), vec!["alice"], "client copy stripped, claim forwarded");
    assert_eq!(seen.header("x-scope").as_deref(), Some("read"));
    // The same token again comes from the shard's cache; also from a cookie and a query parameter.
    assert_eq!(c.request(&req("/", &format!("Authorization: bearer {good}\r\n"))).status, 200);
    assert_eq!(c.request(&req("/", &format!("Cookie: a=b; session={good}\r\n"))).status, 200);
    assert_eq!(c.request(&req(&format!("/x?access_token={good}"), "")).status, 200);
    assert_eq!(up.requests().len(), 4);
}

#[test]
fn jwt_verification_works_without_a_cache() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", &jwt_table().replace("token_cookie", "cache_size = 0\ntoken_cookie"), "auth = [\"main\"]");
    let good = hs256(json!({"sub": "bob", "iss": "https://issuer.test", "aud": "orders", "exp": now() + 600}));
    let mut c = Client::connect(gw.addr);
    for _ in 0..2 {
        assert_eq!(c.request(&req("/", &format!("Authorization: Bearer {good}\r\n"))).status, 200);
    }
    assert_eq!(up.requests()[1].header("x-consumer-id").as_deref(), Some("bob"));
}

#[test]
fn jwt_route_refuses_missing_and_bad_tokens_with_401() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", &jwt_table(), "auth = [\"main\"]");
    let base = json!({"sub": "alice", "iss": "https://issuer.test", "aud": "orders", "exp": now() + 600});
    let with = |k: &str, v: serde_json::Value| {
        let mut c = base.clone();
        c[k] = v;
        hs256(c)
    };
    let good = hs256(base.clone());
    let (h, p, _) = {
        let mut it = good.split('.');
        (it.next().unwrap().to_string(), it.next().unwrap().to_string(), it.next().unwrap().to_string())
    };
    let none = format!("{}.{p}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    let tampered = format!("{h}.{}.{}", b64(br#"{"sub":"mallory","iss":"https://issuer.test","aud":"orders"}"#), good.rsplit('.').next().unwrap());
    let wrong_key = encode(&Header::new(Algorithm::HS256), &base, &EncodingKey::from_secret(b"another-secret-another-secret-xx")).unwrap();
    let hs512 = encode(&Header::new(Algorithm::HS512), &base, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
    let cases: Vec<(&str, String, bool)> = vec![
        ("missing", String::new(), false),
        ("expired", with("exp", json!(now() - 3600)), true),
        ("not yet valid", with("nbf", json!(now() + 3600)), true),
        ("wrong issuer", with("iss", json!("https://evil.test")), true),
        ("wrong audience", with("aud", json!("billing")), true),
        ("alg none", none, true),
        ("tampered payload", tampered, true),
        ("wrong key", wrong_key, true),
        ("alg differs from the key's", hs512, true),
        ("garbage", "not.a.token".into(), true),
    ];
    for (name, token, presented) in cases {
        let headers = if token.is_empty() { String::new() } else { format!("Authorization: Bearer {token}\r\n") };
        let r = Client::connect(gw.addr).request(&req("/", &headers));
        assert_eq!(r.status, 401, "{name}");
        assert_eq!(r.error_code(), "unauthorized", "{name}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        if presented {
            assert_eq!(challenge, "Bearer error=\"invalid_token\"", "{name}");
        } else {
            assert_eq!(challenge, "Bearer", "{name}");
        }
        assert!(!r.body_str().contains(&token[..token.len().min(20)]) || token.is_empty(), "{name}: token echoed");
    }
    // Leeway (60 s by default): a token expired 30 s ago still passes.
    let recent = with("exp", json!(now() - 30));
    assert_eq!(Client::connect(gw.addr).request(&req("/", &format!("Authorization: Bearer {recent}\r\n"))).status, 200);
    assert_eq!(up.requests().len(), 1);
}

fn api_keys_table() -> String {
    format!(
        "[[api_keys]]\nname = \"partners\"\nheader = \"X-Api-Key\"\nforward_consumer = \"X-Consumer-Id\"\n\
         keys = [{{ consumer = \"acme\", sha256 = \"{}\" }}, {{ consumer = \"globex\", sha256 = \"{}\" }}]\n\
         [[api_keys]]\nname = \"by-query\"\nquery = \"api_key\"\nkeys = [{{ consumer = \"initech\", sha256 = \"{}\" }}]\n",
        sha256_hex("acme-key"),
        sha256_hex("globex-key"),
        sha256_hex("initech-key")
    )
}

#[test]
fn api_keys_identify_consumers_and_either_provider_may_admit() {
    let up = Upstream::ok(b"ok");
    let top = format!("{}{}", jwt_table(), api_keys_table());
    let gw = gateway(&up, "", &top, "auth = [\"main\", \"partners\", \"by-query\"]");
    let r = Client::connect(gw.addr).request(&req("/", "X-Api-Key: acme-key\r\nX-Consumer-Id: forged\r\n"));
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[0].headers("x-consumer-id"), vec!["acme"]);
    assert_eq!(Client::connect(gw.addr).request(&req("/", "X-Api-Key: globex-key\r\n")).status, 200);
    assert_eq!(up.requests()[1].headers("x-consumer-id"), vec!["globex"]);
    assert_eq!(Client::connect(gw.addr).request(&req("/q?api_key=initech-key", "")).status, 200);
    let good = hs256(json!({"sub": "alice", "iss": "https://issuer.test", "aud": "orders", "exp": now() + 600}));
    assert_eq!(Client::connect(gw.addr).request(&req("/", &format!("Authorization: Bearer {good}\r\n"))).status, 200);
    // Trailing whitespace is not part of a field value (RFC 9110 §5.5), so "acme-key " is acme-key.
    for bad in ["X-Api-Key: acme-key2\r\n", "X-Api-Key: ACME-KEY\r\n", "X-Api-Key: \r\n", ""] {
        let r = Client::connect(gw.addr).request(&req("/", bad));
        assert_eq!(r.status, 401, "{bad:?}");
        assert_eq!(r.error_code(), "unauthorized");
    }
    assert_eq!(up.requests().len(), 4);
}

fn limit_table(requests: u64, window: &str, key: &str) -> String {
    format!("[[rate_limits]]\nname = \"lim\"\nrequests = {requests}\nwindow = \"{window}\"\nkey = \"{key}\"\n")
}

#[test]
fn rate_limit_headers_on_every_response_and_429_when_exhausted() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", &limit_table(3, "1h", "ip"), "rate_limits = [\"lim\"]");
    let mut c = Client::connect(gw.addr);
    for remaining in [2, 1, 0] {
        let r = c.request(&req("/", ""));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy").as_deref(), Some("\"lim\";q=3;w=3600"));
        assert_eq!(r.header("ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(r.header("ratelimit-remaining"), Some(remaining.to_string()));
        let rl = r.header("ratelimit").expect("RateLimit header");
        assert!(rl.starts_with(&format!("\"lim\";r={remaining};t=")), "{rl}");
        assert!(r.header("ratelimit-reset").is_some());
    }
    let r = c.request(&req("/", ""));
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=1200).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(up.requests().len(), 3);
}

#[test]
fn rate_limit_keys_by_header_and_trusted_forwarded_address() {
    let up = Upstream::ok(b"ok");
    let top = format!("{}[[rate_limits]]\nname = \"ip\"\nrequests = 1\nwindow = \"1h\"\nkey = \"ip\"\n", limit_table(1, "1h", "header:X-Tenant"));
    let gw = gateway(&up, "", &format!("[security]\ntrusted_proxies = [\"127.0.0.1\"]\n{top}"), "rate_limits = [\"lim\"]");
    for tenant in ["a", "b", "c"] {
        let r = Client::connect(gw.addr).request(&req("/", &format!("X-Tenant: {tenant}\r\n")));
        assert_eq!(r.status, 200, "first request of tenant {tenant}");
    }
    assert_eq!(Client::connect(gw.addr).request(&req("/", "X-Tenant: a\r\n")).status, 429);

    let up2 = Upstream::ok(b"ok");
    let gw2 = gateway(&up2, "", &format!("[security]\ntrusted_proxies = [\"127.0.0.1\"]\n{}", limit_table(1, "1h", "ip")), "rate_limits = [\"lim\"]");
    // Behind a trusted proxy the client is the right-most untrusted X-Forwarded-For entry.
    for client in ["203.0.113.1", "203.0.113.2"] {
        let r = Client::connect(gw2.addr).request(&req("/", &format!("X-Forwarded-For: 9.9.9.9, {client}\r\n")));
        assert_eq!(r.status, 200, "{client}");
    }
    let r = Client::connect(gw2.addr).request(&req("/", "X-Forwarded-For: 1.1.1.1, 203.0.113.1\r\n"));
    assert_eq!(r.status, 429, "spoofing entries to the left does not help");
}

#[test]
fn rate_limit_is_exact_across_shards_under_concurrency() {
    const ALLOWANCE: u64 = 1000;
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\npin_cores = false\n{}\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{}\"]\n\
         [[routes]]\nname = \"all\"\npaths = [\"/\"]\nservice = \"svc\"\nrate_limits = [\"lim\"]\n",
        limit_table(ALLOWANCE, "1h", "route"),
        up.addr
    ));
    let addr = gw.addr;
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut ok = 0u64;
                let mut limited = 0u64;
                let mut c = Client::connect(addr);
                for _ in 0..150 {
                    match c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => panic!("status {s}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let (ok, limited) = threads.into_iter().map(|t| t.join().unwrap()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let elapsed = started.elapsed().as_secs_f64();
    // Refill during the run: ALLOWANCE per hour.
    let refill = (ALLOWANCE as f64 * elapsed / 3600.0).ceil() as u64;
    println!("accepted {ok}, limited {limited}, in {elapsed:.2}s (refill allowance {refill})");
    assert_eq!(ok + limited, 2400);
    assert!(ok >= ALLOWANCE && ok <= ALLOWANCE + refill + ALLOWANCE / 100, "accepted {ok} of allowance {ALLOWANCE}");
    assert_eq!(up.requests().len() as u64, ok);
}

#[test]
fn ip_rules_server_wide_and_per_route() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", "[security]\nip_deny = [\"127.0.0.1/32\"]\n", "");
    let r = get(gw.addr, "/");
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "forbidden");

    let gw = gateway(&up, "", "", "ip_allow = [\"10.0.0.0/8\", \"::1\"]");
    assert_eq!(get(gw.addr, "/").status, 403);
    let gw = gateway(&up, "", "", "ip_allow = [\"127.0.0.0/8\"]\nip_deny = [\"127.0.0.2\"]");
    assert_eq!(get(gw.addr, "/").status, 200);
    // A trusted proxy's forwarded address is the one the rules see.
    let gw = gateway(&up, "", "[security]\ntrusted_proxies = [\"127.0.0.1\"]\n", "ip_allow = [\"10.0.0.0/8\"]");
    assert_eq!(Client::connect(gw.addr).request(&req("/", "X-Forwarded-For: 10.2.3.4\r\n")).status, 200);
    assert_eq!(Client::connect(gw.addr).request(&req("/", "X-Forwarded-For: 11.2.3.4\r\n")).status, 403);
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn connections_over_the_per_address_cap_are_closed_and_counted() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", "[security]\nmax_connections_per_ip = 2\n", "");
    let mut a = Client::connect(gw.addr);
    let mut b = Client::connect(gw.addr);
    assert_eq!(a.request(&req("/", "")).status, 200);
    assert_eq!(b.request(&req("/", "")).status, 200);
    let mut c = Client::connect(gw.addr);
    c.send(&req("/", ""));
    assert!(c.read_response().is_none(), "third connection from the same address is closed");
    assert_eq!(gw.gateway().refused_per_ip(), 1);
    drop(a);
    assert!(wait_until(Duration::from_secs(2), || gw.gateway().open_connections() == 1));
    assert_eq!(get(gw.addr, "/").status, 200, "a slot freed up");
}

#[test]
fn validation_of_content_type_and_json_bodies() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", "", "[routes.validate]\ncontent_types = [\"application/json\"]\njson = true\nmax_json = \"1KiB\"\n");
    let post = |ct: &str, body: &str| {
        format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    };
    let mut c = Client::connect(gw.addr);
    let r = c.request(&post("application/json; charset=utf-8", r#"{"a":[1,2,{"b":null}]}"#));
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[0].body, br#"{"a":[1,2,{"b":null}]}"#);
    let r = c.request(&post("application/json", r#"{"a":"#));
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "invalid_json");
    // The whole invalid body was read, so the connection is still in sync.
    assert_eq!(c.request(&post("application/json", "[]")).status, 200);
    let r = Client::connect(gw.addr).request(&post("text/plain", "{}"));
    assert_eq!((r.status, r.error_code().as_str()), (415, "unsupported_media_type"));
    let r = Client::connect(gw.addr).request(&post("application/json", &"1".repeat(2000)));
    assert_eq!(r.status, 413);
    let r = Client::connect(gw.addr).request(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    assert_eq!(r.status, 411);
    // Requests without a body are not subject to body rules.
    assert_eq!(get(gw.addr, "/").status, 200);
    assert_eq!(up.requests().len(), 3);
}

#[test]
fn cors_preflight_is_answered_at_the_gateway() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(
        &up,
        "",
        "",
        "methods = [\"GET\", \"PUT\"]\n[routes.cors]\nallow_origins = [\"https://app.example.com\", \"https://*.example.org\"]\n\
         allow_methods = [\"GET\", \"PUT\"]\nallow_headers = [\"Content-Type\", \"Authorization\"]\n\
         expose_headers = [\"X-Request-Id\"]\nmax_age = \"10m\"\n",
    );
    let preflight = |origin: &str, method: &str, headers: &str| {
        Client::connect(gw.addr).request(&format!(
            "OPTIONS /x HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n{headers}\r\n"
        ).into_bytes())
    };
    let r = preflight("https://app.example.com", "PUT", "Access-Control-Request-Headers: content-type\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-methods").as_deref(), Some("GET, PUT"));
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
    assert_eq!(r.header("vary").as_deref(), Some("Origin"));
    assert_eq!(preflight("https://a.b.example.org", "GET", "").status, 204);
    assert_eq!(preflight("https://evil.com", "GET", "").status, 403);
    assert_eq!(preflight("https://app.example.com", "DELETE", "").status, 403);
    assert_eq!(preflight("https://app.example.com", "GET", "Access-Control-Request-Headers: x-other\r\n").status, 403);
    assert!(up.requests().is_empty(), "preflights never reach the upstream");

    let r = Client::connect(gw.addr).request(&req("/", "Origin: https://app.example.com\r\n"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-expose-headers").as_deref(), Some("X-Request-Id"));
    let r = Client::connect(gw.addr).request(&req("/", "Origin: https://evil.com\r\n"));
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn rate_limit_headers_also_go_on_gateway_errors() {
    // The upstream is down: the 502 of a limited route still reports the limit.
    let dead = dead_port();
    let gw = Gw::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n{}\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{}\"]\n\
         [[routes]]\nname = \"all\"\npaths = [\"/\"]\nservice = \"svc\"\nrate_limits = [\"lim\"]\n",
        limit_table(10, "1m", "ip"),
        dead.addr
    ));
    let r = get(gw.addr, "/");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("9"));
}

#[test]
fn api_key_401_carries_www_authenticate() {
    // RFC 9110 §15.5.2: a 401 MUST carry a challenge, whatever the provider.
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", &api_keys_table(), "auth = [\"partners\", \"by-query\"]");
    let r = Client::connect(gw.addr).request(&req("/", ""));
    assert_eq!(r.status, 401);
    let challenges = r.headers("www-authenticate");
    assert_eq!(challenges, vec!["ApiKey realm=\"partners\", header=\"X-Api-Key\"", "ApiKey realm=\"by-query\", query=\"api_key\""]);
}

#[test]
fn preflight_without_origin_does_not_bypass_route_methods() {
    // Only a real preflight (OPTIONS with Origin and Access-Control-Request-Method) is admitted
    // past a route's methods; without Origin it is a plain OPTIONS, refused with 405.
    let up = Upstream::ok(b"ok");
    let route = "methods = [\"GET\"]\nstrip_prefix = true\n[routes.cors]\nallow_origins = [\"https://app.example.com\"]\n";
    let gw = gateway(&up, "", "", route);
    let r = Client::connect(gw.addr).request(b"OPTIONS /x HTTP/1.1\r\nHost: h\r\nAccess-Control-Request-Method: GET\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET"));
    let r = Client::connect(gw.addr)
        .request(b"OPTIONS /x HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: GET\r\n\r\n");
    assert_eq!(r.status, 204);
    assert!(up.requests().is_empty(), "nothing reached the upstream");
}

#[test]
fn oversized_forwarded_claims_are_refused_not_dropped() {
    // A claim header that does not fit the forwarded-header buffer must not silently vanish (the
    // upstream would see an anonymous request): the request is refused with 431.
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", &jwt_table(), "auth = [\"main\"]");
    let scope = "s".repeat(1500);
    let token = hs256(json!({"sub": "alice", "scope": scope, "iss": "https://issuer.test", "aud": "orders", "exp": now() + 600}));
    let r = Client::connect(gw.addr).request(&req("/", &format!("Authorization: Bearer {token}\r\n")));
    assert_eq!(r.status, 431);
    assert_eq!(r.error_code(), "forwarded_headers_too_large");
    assert!(up.requests().is_empty());
}

#[test]
fn long_consumers_do_not_share_a_bucket() {
    // Two JWT subjects that agree on their first 128 bytes are still two consumers.
    let up = Upstream::ok(b"ok");
    let top = format!("{}{}", jwt_table(), limit_table(1, "1h", "consumer"));
    let gw = gateway(&up, "", &top, "auth = [\"main\"]\nrate_limits = [\"lim\"]");
    let long = "u".repeat(200);
    for tail in ["-one", "-two"] {
        let token = hs256(json!({"sub": format!("{long}{tail}"), "iss": "https://issuer.test", "aud": "orders", "exp": now() + 600}));
        let r = Client::connect(gw.addr).request(&req("/", &format!("Authorization: Bearer {token}\r\n")));
        assert_eq!(r.status, 200, "{tail}: shares a bucket with the other subject");
    }
    let consumers: Vec<String> = up.requests().iter().filter_map(|r| r.header("x-consumer-id")).collect();
    assert_eq!(consumers.len(), 2);
    assert_ne!(consumers[0], consumers[1]);
}

#[test]
fn api_key_consumers_longer_than_128_bytes_are_a_config_error() {
    let top = format!(
        "[[api_keys]]\nname = \"k\"\nkeys = [{{ consumer = \"{}\", sha256 = \"{}\" }}]\n",
        "c".repeat(129),
        sha256_hex("x")
    );
    let cfg = format!("{top}[[services]]\nname = \"s\"\nupstreams = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\nauth = [\"k\"]\n");
    let err = ringgate::config::Config::parse(&cfg).unwrap_err().to_string();
    assert!(err.contains("longer than 128 bytes"), "{err}");
}

#[test]
fn json_bodies_beyond_the_read_buffer_are_validated_whole() {
    // `json = true` alone is a valid route (max_json defaults to 64 KiB, four read buffers), and
    // a body larger than the read buffer is buffered, checked and forwarded intact.
    let up = Upstream::ok(b"ok");
    let gw = gateway(&up, "", "", "[routes.validate]\njson = true");
    let items: Vec<String> = (0..4000).map(|i| format!("{{\"n\":{i}}}")).collect();
    let body = format!("[{}]", items.join(","));
    assert!(body.len() > 40_000);
    let send = |b: &str| {
        Client::connect(gw.addr).request(
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()).as_bytes(),
        )
    };
    assert_eq!(send(&body).status, 200);
    assert_eq!(up.requests()[0].body, body.as_bytes());
    let broken = format!("{}x", &body[..body.len() - 1]);
    let r = send(&broken);
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_json"));
    assert_eq!(up.requests().len(), 1);
}

//! Header, path and query transforms of requests and responses, end to end: what the upstream
//! received and what the client got; template values that try to escape their place.

mod common;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use common::{Client, Gw, Upstream};
use ringgate::config::Config;

const SECRET: &str = "transform-test-secret-0123456789abcdef";

fn token(sub: &str) -> String {
    let claims = serde_json::json!({ "sub": sub, "exp": 4_102_444_800u64 });
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn gateway(up: &Upstream) -> Gw {
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\n\
         [[jwt]]\nname = \"main\"\n[[jwt.keys]]\nalg = \"HS256\"\nsecret = \"{SECRET}\"\n\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{}\"]\n\n\
         [[routes]]\nname = \"orders\"\npaths = [\"/api/v1\"]\nservice = \"svc\"\nauth = [\"main\"]\n\
         [routes.transform.request]\n\
         set_headers = {{ \"X-Api-Version\" = \"2\", \"X-User\" = \"{{claim.sub}}\", \"X-Tenant-Copy\" = \"t={{header.X-Tenant}}\" }}\n\
         remove_headers = [\"X-Debug\"]\n\
         rename_headers = {{ \"X-Old\" = \"X-New\" }}\n\
         rewrite = {{ from = \"^/api/v1/(.*)$\", to = \"/v2/$1\" }}\n\
         query = {{ set = {{ \"src\" = \"gateway\", \"who\" = \"{{claim.sub}}\" }}, remove = [\"debug\"] }}\n\
         [routes.transform.response]\n\
         set_headers = {{ \"X-Served-By\" = \"ringgate\", \"X-Trace\" = \"{{request_id}}\" }}\n\
         remove_headers = [\"Server\", \"X-Powered-By\"]\n\
         rename_headers = {{ \"X-Upstream-Id\" = \"X-Origin-Id\" }}\n",
        up.addr
    );
    Gw::start(&toml)
}

fn upstream() -> Upstream {
    Upstream::raw(b"HTTP/1.1 200 OK\r\nServer: app/1.0\r\nX-Powered-By: php\r\nX-Upstream-Id: u-7\r\nContent-Length: 2\r\n\r\nok")
}

#[test]
fn request_headers_path_and_query_are_transformed() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr);
    let r = c.request(
        format!(
            "GET /api/v1/orders/7?debug=1&page=2&src=client HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\
             X-Debug: yes\r\nX-Old: kept-value\r\nX-Api-Version: 1\r\nX-Tenant: acme\r\n\r\n",
            token("alice")
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let got = &up.requests()[0];
    assert_eq!(got.request_line(), "GET /v2/orders/7?page=2&src=gateway&who=alice HTTP/1.1");
    assert_eq!(got.headers("x-api-version"), ["2"], "set replaces the client's value");
    assert_eq!(got.headers("x-user"), ["alice"]);
    assert_eq!(got.headers("x-tenant-copy"), ["t=acme"]);
    assert!(got.headers("x-debug").is_empty());
    assert!(got.headers("x-old").is_empty());
    assert_eq!(got.headers("x-new"), ["kept-value"]);
    // The response as the client got it.
    assert_eq!(r.header("x-served-by").as_deref(), Some("ringgate"));
    assert_eq!(r.header("x-trace"), r.header("x-request-id"));
    assert!(r.header("server").is_none() && r.header("x-powered-by").is_none(), "{}", r.head);
    assert_eq!(r.header("x-origin-id").as_deref(), Some("u-7"));
    assert!(r.header("x-upstream-id").is_none());
}

#[test]
fn template_values_cannot_escape_their_place() {
    let up = upstream();
    let gw = gateway(&up);
    // A subject that tries to leave the query value and the path.
    let r = Client::connect(gw.addr)
        .request(format!("GET /api/v1/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n", token("../admin?x=1&y=2#z")).as_bytes());
    assert_eq!(r.status, 200, "{}", r.head);
    let got = &up.requests()[0];
    assert_eq!(got.request_line(), "GET /v2/x?src=gateway&who=..%2Fadmin%3Fx%3D1%26y%3D2%23z HTTP/1.1");
    // In a header, a subject with CR LF is refused, never written.
    let r = Client::connect(gw.addr)
        .request(format!("GET /api/v1/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n", token("bob\r\nX-Admin: 1")).as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (400, "transform_value_refused"));
    assert_eq!(up.requests().len(), 1, "the refused request never reached the upstream");
}

#[test]
fn any_claim_of_the_verified_token_fills_a_template() {
    let up = upstream();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\
         [[jwt]]\nname = \"main\"\n[[jwt.keys]]\nalg = \"HS256\"\nsecret = \"{SECRET}\"\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{}\"]\n\
         [[routes]]\nname = \"t\"\npaths = [\"/t\"]\nservice = \"svc\"\nauth = [\"main\"]\n\
         [routes.transform.request]\n\
         set_headers = {{ \"X-Tenant\" = \"{{claim.tenant}}\", \"X-Level\" = \"{{claim.level}}\", \"X-None\" = \"[{{claim.missing}}]\" }}\n\
         rewrite = {{ from = \"^/t/(.*)$\", to = \"/tenants/{{claim.tenant}}/$1\" }}\n",
        up.addr
    );
    let gw = Gw::start(&toml);
    let token = |tenant: &str| {
        let claims = serde_json::json!({ "sub": "alice", "tenant": tenant, "level": 3, "exp": 4_102_444_800u64 });
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    };
    let mut c = Client::connect(gw.addr);
    // Twice: verified, then from the token cache.
    for _ in 0..2 {
        let r = c.request(format!("GET /t/items HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n", token("acme")).as_bytes());
        assert_eq!(r.status, 200, "{}", r.head);
    }
    let got = up.requests();
    for g in &got {
        assert_eq!(g.request_line(), "GET /tenants/acme/items HTTP/1.1");
        assert_eq!(g.headers("x-tenant"), ["acme"]);
        assert_eq!(g.headers("x-level"), ["3"], "a number as its JSON text");
        assert_eq!(g.headers("x-none"), ["[]"], "an absent claim renders empty");
    }
    // A claim that tries to leave its path segment stays one segment.
    let r = c.request(format!("GET /t/items HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n", token("../admin?x=1")).as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[2].request_line(), "GET /tenants/..%2Fadmin%3Fx%3D1/items HTTP/1.1");
    // A claim with CR LF is not a header value: it renders empty, never written.
    let r = c.request(format!("GET /t/items HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n", token("a\r\nX-Admin: 1")).as_bytes());
    assert_eq!(r.status, 200);
    let last = &up.requests()[3];
    assert_eq!(last.headers("x-tenant"), [""] as [&str; 1]);
    assert!(last.headers("x-admin").is_empty());
}

#[test]
fn transform_config_errors_name_their_keys() {
    let base = "[[services]]\nname = \"svc\"\nupstreams = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"svc\"\n";
    let cases = [
        ("[routes.transform.request]\nrewrite = { from = \"^/(unclosed\", to = \"/x\" }", "routes[0].transform.request.rewrite.from"),
        ("[routes.transform.request]\nrewrite = { from = \"^/a\", to = \"relative\" }", "routes[0].transform.request.rewrite.to"),
        ("[routes.transform.request]\nset_headers = { \"X-A\" = \"{nope}\" }", "routes[0].transform.request.set_headers.X-A"),
        ("[routes.transform.request]\nset_headers = { \"Content-Length\" = \"1\" }", "routes[0].transform.request.set_headers.Content-Length"),
        ("[routes.transform.request]\nremove_headers = [\"bad name\"]", "routes[0].transform.request.remove_headers[0]"),
        ("[routes.transform.response]\nset_headers = { \"X-A\" = \"{consumer}\" }", "routes[0].transform.response.set_headers.X-A"),
        ("[routes.transform.request]\nquery = { set = { \"a&b\" = \"1\" } }", "routes[0].transform.request.query.set.a&b"),
        ("[routes.transform.request]\njson = { convert = { \"total\" = \"float\" } }", "routes[0].transform.request.json.convert.total"),
        ("[routes.transform.request]\njson = { rename = { \"a.b\" = \"c.d\" } }", "routes[0].transform.request.json.rename.a.b"),
        ("[routes.transform.request]\njson = { remove = [\"items[0]\"] }", "routes[0].transform.request.json.remove[0]"),
    ];
    for (extra, path) in cases {
        let err = Config::parse(&format!("{base}{extra}\n")).expect_err(extra).to_string();
        assert!(err.contains(path), "want `{path}` in:\n{err}");
    }
}

fn json_gateway(up_echo: &Upstream, up_chunked: &Upstream, up_gzip: &Upstream, up_text: &Upstream, up_bad: &Upstream) -> Gw {
    let svc = |n: &str, u: &Upstream| format!("[[services]]\nname = \"{n}\"\nupstreams = [\"{}\"]\n\n", u.addr);
    let resp = "[routes.transform.response]\njson = { rename = { \"created_at\" = \"createdAt\" }, allow = [\"id\", \"createdAt\", \"total\", \"items[*].id\"] }\n";
    let route = |n: &str, path: &str, s: &str, extra: &str| format!("[[routes]]\nname = \"{n}\"\npaths = [\"{path}\"]\nservice = \"{s}\"\n{extra}\n");
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}{}{}{}\
         {}{}{}{}{}",
        svc("echo", up_echo),
        svc("chunked", up_chunked),
        svc("gzip", up_gzip),
        svc("text", up_text),
        svc("bad", up_bad),
        route(
            "orders",
            "/orders",
            "echo",
            "[routes.transform.request]\nmax_json = \"1KiB\"\njson = { rename = { \"user_id\" = \"userId\", \"items[*].sku_id\" = \"items[*].skuId\" }, \
             convert = { \"total\" = \"number\" }, remove = [\"internal\"], set = { \"source\" = \"gateway\", \"meta.via\" = \"{request_id}\" } }"
        ),
        route("chunked", "/chunked", "chunked", resp),
        route("gzip", "/gzip", "gzip", resp),
        route("text", "/text", "text", resp),
        route("bad", "/bad", "bad", "[routes.transform.response]\njson = { convert = { \"total\" = \"integer\" } }"),
    );
    Gw::start(&toml)
}

fn post(gw: &Gw, path: &str, ct: &str, body: &str) -> common::Response {
    Client::connect(gw.addr).request(format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
}

#[test]
fn json_bodies_are_transformed_both_ways() {
    let echo = Upstream::ok(b"{}");
    let (a, b) = (r#"{"id":1,"created_at":"x","#, r#""secret":"s","total":3,"items":[{"id":5,"cost":2}]}"#);
    let raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let chunked = Upstream::raw(Box::leak(raw.into_bytes().into_boxed_slice()));
    let gzip = Upstream::raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nGZIP");
    let text = Upstream::raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
    let bad = Upstream::raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"total\":\"ab\"}\n");
    let gw = json_gateway(&echo, &chunked, &gzip, &text, &bad);

    // Request: the seed's example, nested arrays, a set with nesting.
    let r = post(&gw, "/orders", "application/json", r#"{"user_id":7,"total":"12.50","items":[{"sku_id":"a"},{"sku_id":"b"}],"internal":"x"}"#);
    assert_eq!(r.status, 200, "{}", r.head);
    let got = &echo.requests()[0];
    let sent: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    let rid = r.header("x-request-id").unwrap();
    assert_eq!(sent, serde_json::json!({"userId": 7, "total": 12.5, "items": [{"skuId": "a"}, {"skuId": "b"}], "source": "gateway", "meta": {"via": rid}}));
    assert_eq!(got.headers("content-length"), [got.body.len().to_string()], "the length is the new body's");

    // Request failures: a value that does not convert (named), not JSON, not declared JSON,
    // over the bound, chunked.
    let r = post(&gw, "/orders", "application/json", r#"{"total":"twelve"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "transform_failed"));
    assert!(r.body_str().contains("field `total`"), "{}", r.body_str());
    assert_eq!(post(&gw, "/orders", "application/json", "{not json").error_code(), "invalid_json");
    assert_eq!(post(&gw, "/orders", "text/plain", "{}").status, 415);
    assert_eq!(post(&gw, "/orders", "application/json", &format!("{{\"pad\":\"{}\"}}", "x".repeat(2000))).status, 413);
    // A chunked body over the bound, found while it is read: 413, and the connection closes.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    let mut c = Client::connect(gw.addr);
    let r = c.request(format!("POST /orders HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).as_bytes());
    assert_eq!(r.status, 413);
    assert!(c.is_closed());
    assert_eq!(echo.requests().len(), 1, "no failed request reached the upstream");
    // A chunked body within it: dechunked, transformed, sent with its length.
    let mut c = Client::connect(gw.addr);
    let (a, b) = (r#"{"user"#, r#"_id":5,"total":"1"}"#);
    let r = c.request(
        format!("POST /orders HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len())
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let got = &echo.requests()[1];
    assert!(got.headers("transfer-encoding").is_empty());
    assert_eq!(got.headers("content-length"), [got.body.len().to_string()]);
    let sent: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!((sent["userId"].clone(), sent["total"].clone()), (serde_json::json!(5), serde_json::json!(1.0)));
    assert_eq!(c.request(b"GET /orders HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, "the connection carries on");
    // On one kept-alive connection: a refused body, then a good request: one answer each.
    let mut c = Client::connect(gw.addr);
    let ask = |c: &mut Client, body: &str| {
        c.request(format!("POST /orders HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
    };
    assert_eq!(ask(&mut c, r#"{"total":"twelve"}"#).status, 400);
    assert_eq!(ask(&mut c, "{not json").status, 400);
    assert_eq!(ask(&mut c, r#"{"user_id":1,"total":"2"}"#).status, 200);
    assert_eq!(echo.requests().len(), 4, "only the good requests reached the upstream");
    let last: serde_json::Value = serde_json::from_slice(&echo.requests()[3].body).unwrap();
    assert_eq!((last["userId"].clone(), last["total"].clone()), (serde_json::json!(1), serde_json::json!(2.0)));

    // Response: chunked in, length out; renamed and cut to the allow list.
    let r = common::get(gw.addr, "/chunked");
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"id": 1, "createdAt": "x", "total": 3, "items": [{"id": 5}]}));
    // Compressed and non-JSON responses pass untouched; a value that does not convert is a 502.
    assert_eq!(common::get(gw.addr, "/gzip").body_str(), "GZIP");
    assert_eq!(common::get(gw.addr, "/text").body_str(), "hello");
    let r = common::get(gw.addr, "/bad");
    assert_eq!((r.status, r.error_code().as_str()), (502, "upstream_transform_failed"));
    assert!(r.body_str().contains("field `total`"), "{}", r.body_str());
    // Kept-alive connections carry on after transformed responses.
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        assert_eq!(c.request(b"GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    let metrics = common::get(gw.gateway().admin_addr.unwrap(), "/metrics").body_str();
    for want in [
        "ringgate_transforms_total{route=\"orders\",side=\"request\",result=\"applied\"} 3",
        "ringgate_transforms_total{route=\"orders\",side=\"request\",result=\"failed\"} 4",
        "ringgate_transforms_total{route=\"gzip\",side=\"response\",result=\"skipped\"} 1",
        "ringgate_transforms_total{route=\"bad\",side=\"response\",result=\"failed\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} not in:\n{metrics}");
    }
}

#[test]
fn a_part_declared_over_max_part_is_refused_without_reading_it() {
    let users = Upstream::raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    // Declares 100 MB, sends ten bytes, and keeps the connection open.
    let huge = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{\"a\":\"xxx\"");
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
    });
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\
         [[services]]\nname = \"users\"\nupstreams = [\"{}\"]\n[[services]]\nname = \"huge\"\nupstreams = [\"{}\"]\n\
         [[routes]]\nname = \"d\"\npaths = [\"=/d\"]\n[routes.aggregate]\ntimeout = \"2s\"\nmax_part = \"1KiB\"\n\
         [[routes.aggregate.parts]]\nkey = \"user\"\nservice = \"users\"\npath = \"/u\"\n\
         [[routes.aggregate.parts]]\nkey = \"big\"\nservice = \"huge\"\npath = \"/b\"\nrequired = false\n",
        users.addr, huge.addr
    );
    let gw = Gw::start(&toml);
    let started = std::time::Instant::now();
    let r = common::get(gw.addr, "/d");
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "the part was read, not refused: {:?}", started.elapsed());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["big"].is_null(), "{v}");
    assert_eq!(v["errors"][0]["code"], "part_body_unreadable", "{v}");
}

/// An upstream answering every request with `body` after `delay`.
fn slow(body: &'static str, delay_ms: u64) -> Upstream {
    Upstream::start(move |c| {
        while c.read_request().is_some() {
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            if !c.write(resp.as_bytes()) {
                return;
            }
        }
    })
}

#[test]
fn aggregation_runs_parts_at_once_and_reports_failures() {
    let users = slow(r#"{"name":"alice"}"#, 100);
    let orders = slow(r#"[{"id":1}]"#, 100);
    let notes = slow(r#"{"unread":2}"#, 100);
    let sluggish = slow(r#"{"late":true}"#, 400);
    let text = Upstream::raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno");
    let dead = common::dead_port();
    let svc = |n: &str, a: std::net::SocketAddr| format!("[[services]]\nname = \"{n}\"\nupstreams = [\"{a}\"]\n\n");
    let part = |k: &str, s: &str, path: &str, extra: &str| format!("[[routes.aggregate.parts]]\nkey = \"{k}\"\nservice = \"{s}\"\npath = \"{path}\"\n{extra}\n");
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}{}{}{}{}\
         [[routes]]\nname = \"dashboard\"\npaths = [\"=/api/dashboard\"]\n[routes.aggregate]\ntimeout = \"2s\"\n{}{}{}\n\
         [[routes]]\nname = \"partial\"\npaths = [\"=/partial\"]\n[routes.aggregate]\ntimeout = \"2s\"\n{}{}{}{}\n\
         [[routes]]\nname = \"broken\"\npaths = [\"=/broken\"]\n[routes.aggregate]\n{}{}\n",
        svc("users", users.addr),
        svc("orders", orders.addr),
        svc("notes", notes.addr),
        svc("sluggish", sluggish.addr),
        svc("text", text.addr),
        svc("dead", dead.addr),
        part("user", "users", "/api/users/{query.id}", ""),
        part("orders", "orders", "/api/orders?user={query.id}", ""),
        part("notifications", "notes", "/api/notes", ""),
        part("user", "users", "/api/users/1", ""),
        part("late", "sluggish", "/slow", "timeout = \"100ms\"\nrequired = false"),
        part("gone", "dead", "/x", "required = false"),
        part("text", "text", "/t", "required = false"),
        part("user", "users", "/api/users/1", ""),
        part("gone", "dead", "/x", ""),
    );
    let gw = Gw::start(&toml);
    let started = std::time::Instant::now();
    let r = common::get(gw.addr, "/api/dashboard?id=../admin%3Fx");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.head);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"user": {"name": "alice"}, "orders": [{"id": 1}], "notifications": {"unread": 2}}));
    assert!(took < std::time::Duration::from_millis(200), "three 100 ms parts took {took:?}: not in parallel");
    // The parts got the request id, one trace with a span each, and escaped templates.
    let (u, o, n) = (&users.requests()[0], &orders.requests()[0], &notes.requests()[0]);
    assert_eq!(u.request_line(), "GET /api/users/..%2Fadmin%253Fx HTTP/1.1");
    assert_eq!(o.request_line(), "GET /api/orders?user=..%2Fadmin%253Fx HTTP/1.1");
    let rid = r.header("x-request-id").unwrap();
    let traces: Vec<String> = [u, o, n].iter().map(|x| x.headers("traceparent")[0].clone()).collect();
    assert!([u, o, n].iter().all(|x| x.headers("x-request-id") == [rid.clone()]));
    assert!(traces.iter().all(|t| t[3..35] == traces[0][3..35]), "one trace: {traces:?}");
    assert!(traces[0][36..52] != traces[1][36..52] && traces[1][36..52] != traces[2][36..52], "a span per part: {traces:?}");

    // Optional failures: a timeout, a refused connection, a non-JSON body: null, listed, marked.
    let r = common::get(gw.addr, "/partial");
    assert_eq!(r.status, 200, "{}", r.head);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["user"], serde_json::json!({"name": "alice"}));
    assert!(v["late"].is_null() && v["gone"].is_null() && v["text"].is_null(), "{v}");
    let codes: Vec<(&str, u64, &str)> = v["errors"].as_array().unwrap().iter().map(|e| (e["part"].as_str().unwrap(), e["status"].as_u64().unwrap(), e["code"].as_str().unwrap())).collect();
    assert_eq!(codes, [("late", 504, "upstream_timeout"), ("gone", 502, "upstream_connect_failed"), ("text", 502, "part_not_json")]);
    assert_eq!(r.header("x-ringgate-partial").as_deref(), Some("late, gone, text"));

    // A required part failing: 502, errors listed.
    let r = common::get(gw.addr, "/broken");
    assert_eq!((r.status, r.error_code().as_str()), (502, "aggregate_part_failed"));
    assert!(r.body_str().contains("\"part\":\"gone\""), "{}", r.body_str());
    // Each part's time is measured.
    let metrics = common::get(gw.gateway().admin_addr.unwrap(), "/metrics").body_str();
    assert!(metrics.contains("ringgate_aggregate_part_seconds_count{route=\"dashboard\"} 3"), "{metrics}");
    assert!(metrics.contains("ringgate_aggregate_part_seconds_count{route=\"partial\"} 4"), "{metrics}");
}

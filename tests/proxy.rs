//! End-to-end behaviour of the request path: routing, forwarded heads, keep-alive, pipelining,
//! framing both ways, HTTP/1.0 clients, 1xx and bodiless responses, streaming large bodies.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn forwards_request_with_gateway_headers_and_without_hop_by_hop() {
    let up = Upstream::ok(b"hello");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    let r = c.request(
        b"GET /api/users/7?x=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t/1\r\n\
          Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
          Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Forwarded-For: 10.0.0.1\r\n\
          X-Forwarded-Proto: https\r\nX-Custom:  spaced value \r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    let seen = &up.requests()[0];
    assert_eq!(seen.request_line(), "GET /api/users/7?x=1 HTTP/1.1");
    assert_eq!(seen.header("host").as_deref(), Some("api.example.com"));
    assert_eq!(seen.header("user-agent").as_deref(), Some("t/1"));
    // Original bytes of untouched lines are kept as sent.
    assert!(seen.head.contains("X-Custom:  spaced value\r\n") || seen.head.contains("X-Custom:  spaced value \r\n"), "{}", seen.head);
    for hop in ["connection", "x-secret", "keep-alive", "te", "proxy-connection", "upgrade"] {
        assert!(seen.header(hop).is_none(), "{hop} was forwarded:\n{}", seen.head);
    }
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(seen.headers("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("api.example.com"));
    let rid = seen.header("x-request-id").expect("request id added");
    assert_eq!(rid.len(), 32);
    assert_eq!(r.header("x-request-id"), Some(rid));
    let tp = seen.header("traceparent").expect("traceparent started");
    assert_eq!(tp.len(), 55);
    assert!(tp.starts_with("00-"));
}

#[test]
fn client_request_id_and_traceparent_are_kept_when_well_formed() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = Client::connect(gw.addr).request(
        format!("GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc-123\r\ntraceparent: {tp}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));
    let seen = &up.requests()[0];
    assert_eq!(seen.headers("x-request-id"), vec!["abc-123"]);
    assert_eq!(seen.headers("traceparent"), vec![tp]);

    // A malformed id is replaced, not forwarded.
    let r = Client::connect(gw.addr).request(b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: bad id\"\r\ntraceparent: zz\r\n\r\n");
    let seen = &up.requests()[1];
    let rid = seen.header("x-request-id").unwrap();
    assert_eq!(rid.len(), 32);
    assert_eq!(r.header("x-request-id"), Some(rid));
    assert_ne!(seen.header("traceparent").as_deref(), Some("zz"));
}

fn routing_config(users: &Upstream, orders: &Upstream, products: &Upstream) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\
         [[services]]\nname = \"users\"\nupstreams = [\"{}\"]\n\
         [[services]]\nname = \"orders\"\nupstreams = [\"{}\"]\n\
         [[services]]\nname = \"products\"\nupstreams = [\"{}\"]\n\
         [[routes]]\nname = \"users\"\npaths = [\"/api/users\"]\nmethods = [\"GET\", \"POST\"]\nservice = \"users\"\n\
         [[routes]]\nname = \"users-me\"\npaths = [\"=/api/users/me\"]\nservice = \"orders\"\n\
         [[routes]]\nname = \"orders\"\npaths = [\"/api/orders\"]\nhosts = [\"*.example.com\"]\nservice = \"orders\"\n\
         [[routes]]\nname = \"products\"\npaths = [\"/api/products\"]\nservice = \"products\"\nstrip_prefix = true\n",
        users.addr, orders.addr, products.addr
    )
}

#[test]
fn routes_by_longest_prefix_exact_path_host_and_method() {
    let users = Upstream::ok(b"users");
    let orders = Upstream::ok(b"orders");
    let products = Upstream::ok(b"products");
    let gw = Gw::start(&routing_config(&users, &orders, &products));
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("GET", "/api/users", "h", 200, "users"),
        ("GET", "/api/users/7", "h", 200, "users"),
        ("GET", "/api/users/me", "h", 200, "orders"),
        ("GET", "/api/users/me/x", "h", 200, "users"),
        ("GET", "/api/usersX", "h", 404, ""),
        ("GET", "/api/orders/1", "shop.example.com", 200, "orders"),
        ("GET", "/api/orders/1", "SHOP.EXAMPLE.COM:8080", 200, "orders"),
        ("GET", "/api/orders/1", "example.com", 404, ""),
        ("GET", "/api/products/9", "h", 200, "products"),
        ("DELETE", "/api/users/7", "h", 405, ""),
        ("GET", "/", "h", 404, ""),
    ];
    for &(method, path, host, status, body) in cases {
        let r = Client::connect(gw.addr).request(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status, status, "{method} {path} host {host}");
        if status == 200 {
            assert_eq!(r.body_str(), body, "{method} {path} host {host}");
        } else if status == 404 {
            assert_eq!(r.error_code(), "no_route");
        } else {
            assert_eq!(r.error_code(), "method_not_allowed");
            assert_eq!(r.header("allow").as_deref(), Some("GET, POST"));
        }
    }
    // strip_prefix: /api/products/9 arrives as /9; the bare prefix arrives as /.
    let seen: Vec<String> = products.requests().iter().map(|r| r.request_line().to_string()).collect();
    assert_eq!(seen, vec!["GET /9 HTTP/1.1"]);
    let r = Client::connect(gw.addr).request(b"GET /api/products?q=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(products.requests()[1].request_line(), "GET /?q=1 HTTP/1.1");
    // Nothing that failed routing reached any upstream.
    assert_eq!(users.requests().len() + orders.requests().len(), 6);
}

#[test]
fn keep_alive_reuses_one_upstream_connection() {
    let up = Upstream::ok(b"x");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    for i in 0..20 {
        let r = c.request(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        assert!(r.header("connection").is_none());
    }
    assert_eq!(up.requests().len(), 20);
    assert_eq!(up.accepted(), 1, "the pooled upstream connection is reused");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start(|c| {
        while let Some(r) = c.read_request() {
            let path = r.request_line().split(' ').nth(1).unwrap_or("").to_string();
            if !c.respond(path.as_bytes()) {
                return;
            }
        }
    });
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    batch.extend_from_slice(b"POST /post HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    batch.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: h\r\n\r\n");
    c.send(&batch);
    for i in 0..5 {
        assert_eq!(c.read_response().unwrap().body_str(), format!("/p{i}"));
    }
    assert_eq!(c.read_response().unwrap().body_str(), "/post");
    assert_eq!(c.read_response().unwrap().body_str(), "/last");
    assert_eq!(up.requests()[5].body, b"abc");
}

#[test]
fn http10_clients_get_close_or_keep_alive_as_asked() {
    let up = Upstream::ok(b"old");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    let r = c.request(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"old");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.is_closed());
    // The upstream still gets a well-formed HTTP/1.1 request, with the service as its Host.
    assert_eq!(up.requests()[0].request_line(), "GET / HTTP/1.1");
    assert_eq!(up.requests()[0].headers("host"), vec!["svc"]);

    let mut c = Client::connect(gw.addr);
    let r = c.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n");
    assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    let r = c.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn chunked_request_body_reaches_upstream_intact() {
    let up = Upstream::ok(b"got");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    let r = c.request(
        b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = &up.requests()[0];
    assert_eq!(seen.body, b"hello world");
    assert_eq!(seen.header("transfer-encoding").as_deref(), Some("chunked"));
    assert!(seen.header("content-length").is_none());
    // And the connection carries on.
    assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
}

#[test]
fn chunked_response_passes_to_http11_and_is_decoded_for_http10() {
    let up = Upstream::raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    let r = c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.body, b"Wikipedia");
    assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").body, b"Wikipedia");

    let mut c = Client::connect(gw.addr);
    c.send(b"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    let rest = String::from_utf8(c.read_to_end()).unwrap();
    let (head, body) = rest.split_once("\r\n\r\n").unwrap();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(body, "Wikipedia");
}

/// An upstream that answers each connection's one request with a close-delimited body.
fn close_delimited_upstream(body: &'static [u8]) -> Upstream {
    Upstream::start(move |c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
            c.write(body);
        }
    })
}

#[test]
fn close_delimited_response_is_rechunked_for_http11_clients() {
    let up = close_delimited_upstream(b"until the end");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    let r = c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"until the end");
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert!(r.header("connection").is_none(), "the client connection stays open");
    // It does: the next request on it is served (by a new upstream connection).
    assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").body, b"until the end");
    assert_eq!(up.accepted(), 2);

    // Many chunks: larger than any buffer.
    let big: &'static [u8] = Box::leak(vec![b'q'; 300_000].into_boxed_slice());
    let up = close_delimited_upstream(big);
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let r = Client::connect(gw.addr).request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.body.len(), big.len());
    assert!(r.body.iter().all(|&b| b == b'q'));

    // An empty close-delimited body is an empty chunked one.
    let up = close_delimited_upstream(b"");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let r = Client::connect(gw.addr).request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (200, 0));
}

#[test]
fn close_delimited_response_is_relayed_to_http10_clients_and_closed() {
    let up = close_delimited_upstream(b"until the end");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let rest = String::from_utf8(c.read_to_end()).unwrap();
    let (head, body) = rest.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Connection: close"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    assert_eq!(body, "until the end");
}

#[test]
fn head_204_and_304_responses_have_no_body() {
    let up = Upstream::start(|c| {
        while let Some(r) = c.read_request() {
            let line = r.request_line().to_string();
            let resp: &[u8] = if line.starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
            } else if line.contains("/204") {
                b"HTTP/1.1 204 No Content\r\n\r\n"
            } else {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
            };
            if !c.write(resp) {
                return;
            }
        }
    });
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    c.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response_for(true).unwrap();
    assert_eq!(r.header("content-length").as_deref(), Some("1234"));
    let r = c.request(b"GET /204 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 204);
    let r = c.request(b"GET /304 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag").as_deref(), Some("\"x\""));
    // All three on one connection: the framing stayed in sync.
    assert_eq!(up.accepted(), 1);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let up = Upstream::ok(b"stored");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    c.send(b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_response().unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"data");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    let seen = &up.requests()[0];
    assert_eq!(seen.body, b"data");
    assert!(seen.header("expect").is_none());
}

#[test]
fn early_hints_are_relayed_to_http11_clients() {
    let up = Upstream::raw(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let hints = c.read_response().unwrap();
    assert_eq!(hints.status, 103);
    assert_eq!(hints.header("link").as_deref(), Some("</a.css>; rel=preload"));
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
}

#[test]
fn response_hop_by_hop_headers_are_removed() {
    let up = Upstream::raw(
        b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=3\r\nX-Request-Id: upstream-id\r\nX-Kept: yes\r\nContent-Length: 1\r\n\r\nz",
    );
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let r = get(gw.addr, "/");
    assert_eq!(r.header("x-kept").as_deref(), Some("yes"));
    assert!(r.header("x-internal").is_none());
    assert!(r.header("keep-alive").is_none());
    assert!(r.header("connection").is_none());
    assert_eq!(r.headers("x-request-id").len(), 1);
    assert_ne!(r.header("x-request-id").as_deref(), Some("upstream-id"));
}

/// Sends `total` bytes of a repeating pattern in 64 KiB writes while another thread reads.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn large_bodies_stream_both_ways_in_bounded_memory() {
    const TOTAL: usize = 256 << 20;
    // Upstream: counts and checks the upload without keeping it, then streams a download.
    let up = Upstream::start(|c| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if read_some(&mut c.stream, &mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        let mut ok = true;
        while got < TOTAL {
            let n = read_some(&mut c.stream, &mut buf).unwrap_or(0);
            if n == 0 {
                return;
            }
            ok &= buf[..n].iter().enumerate().all(|(i, &x)| x == pattern(got + i));
            got += n;
        }
        let verdict = if ok { "intact" } else { "corrupt" };
        let _ = c.stream.write_all(format!("HTTP/1.1 200 OK\r\nX-Upload: {verdict}\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes());
        let mut sent = 0;
        while sent < TOTAL {
            let n = buf.len().min(TOTAL - sent);
            for (i, x) in buf[..n].iter_mut().enumerate() {
                *x = pattern(sent + i);
            }
            if c.stream.write_all(&buf[..n]).is_err() {
                return;
            }
            sent += n;
        }
    });
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let before = peak_rss_kib();
    let mut c = Client::connect(gw.addr);
    c.stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.send(format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes());
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut sent = 0;
        while sent < TOTAL {
            let n = buf.len().min(TOTAL - sent);
            for (i, x) in buf[..n].iter_mut().enumerate() {
                *x = pattern(sent + i);
            }
            w.write_all(&buf[..n]).unwrap();
            sent += n;
        }
    });
    // Read the response head, then stream-check the body.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(read_some(&mut c.stream, &mut b).unwrap(), 1, "response head");
        head.push(b[0]);
    }
    writer.join().unwrap();
    let head = String::from_utf8(head).unwrap();
    assert!(head.contains("X-Upload: intact"), "{head}");
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0;
    while got < TOTAL {
        let n = read_some(&mut c.stream, &mut buf).unwrap();
        assert!(n > 0, "download truncated at {got}");
        assert!(buf[..n].iter().enumerate().all(|(i, &x)| x == pattern(got + i)), "download corrupt near {got}");
        got += n;
    }
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    // 512 MiB moved through the process; buffers are fixed-size, so the peak barely moves.
    assert!(grown_mib < 32, "peak RSS grew by {grown_mib} MiB while streaming 2 x 256 MiB");
}

#[test]
fn connection_close_from_an_http11_client_is_honoured() {
    let up = Upstream::ok(b"bye");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    let r = c.request(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"bye"[..]));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.is_closed());
    // The upstream connection is still pooled: close was hop-by-hop, not forwarded.
    assert!(up.requests()[0].header("connection").is_none());
    assert_eq!(get(gw.addr, "/").status, 200);
    assert_eq!(up.accepted(), 1);
}

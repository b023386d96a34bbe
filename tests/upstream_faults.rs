//! Upstream failures: each one becomes the right status with a JSON error (or, once the response
//! has started, a closed client connection), and broken upstream connections are never reused.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn connect_refused_is_502_with_request_id() {
    let dead = dead_port();
    let gw = Gw::start(&config(&[dead.addr], "", ""));
    let r = get(gw.addr, "/");
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_connect_failed");
}

#[test]
fn a_dead_endpoint_is_skipped_for_the_next_one() {
    let up = Upstream::ok(b"alive");
    let dead = dead_port();
    let gw = Gw::start(&config(&[dead.addr, up.addr], "", ""));
    for _ in 0..4 {
        let r = get(gw.addr, "/");
        assert_eq!((r.status, r.body_str().as_str()), (200, "alive"), "{}", r.head);
    }
}

#[test]
fn round_robin_spreads_requests_over_endpoints() {
    let a = Upstream::ok(b"a");
    let b = Upstream::ok(b"b");
    let gw = Gw::start(&config(&[a.addr, b.addr], "", ""));
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "/").status, 200);
    }
    assert_eq!(a.requests().len(), 5);
    assert_eq!(b.requests().len(), 5);
}

#[test]
fn silent_upstream_is_504() {
    let up = Upstream::start(|c| {
        let _ = c.read_request();
        std::thread::sleep(Duration::from_secs(3));
    });
    let gw = Gw::start(&config(&[up.addr], "", "[upstream]\nresponse_timeout = \"300ms\"\n"));
    let r = get(gw.addr, "/");
    assert_eq!(r.status, 504);
    assert_eq!(r.error_code(), "upstream_timeout");
}

#[test]
fn invalid_upstream_responses_are_502() {
    let cases: &[(&str, &'static [u8])] = &[
        ("garbage", b"NOT HTTP AT ALL\r\n\r\n"),
        ("cl_and_te", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("differing_cl", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("bad_status", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
        ("obs_fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
        ("upgrade_unasked", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
        ("te_gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx"),
    ];
    for &(name, resp) in cases {
        let up = Upstream::raw(resp);
        let gw = Gw::start(&config(&[up.addr], "", ""));
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 502, "{name}");
        assert_eq!(r.error_code(), "upstream_bad_response", "{name}");
    }
}

#[test]
fn upstream_closing_before_any_response_is_502() {
    let up = Upstream::start(|c| {
        let _ = c.read_request();
    });
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let r = get(gw.addr, "/");
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_closed");
}

#[test]
fn truncated_length_body_closes_the_client_connection() {
    let up = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part");
        }
    });
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"only part", "the client sees the short body");
    assert!(c.is_closed(), "and then the close");
}

#[test]
fn truncated_chunked_body_never_gets_a_final_chunk() {
    let up = Upstream::start(|c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
        }
    });
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let all = String::from_utf8(c.read_to_end()).unwrap();
    assert!(all.ends_with("5\r\nhello\r\n"), "{all:?}");
    // In the body only: a request id ending in 0 makes the head end in "0\r\n\r\n".
    let body = all.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(!body.contains("0\r\n\r\n"), "{all:?}");
}

#[test]
fn upstream_connection_with_extra_bytes_is_not_reused() {
    let up = Upstream::start(|c| {
        while c.read_request().is_some() {
            // Two bytes more than announced: the connection is out of sync.
            if !c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokXX") {
                return;
            }
        }
    });
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        let r = c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }
    assert_eq!(up.accepted(), 3, "each request needed a fresh upstream connection");
}

#[test]
fn upstream_connection_close_is_honoured() {
    let up = Upstream::raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    assert_eq!(up.accepted(), 3);
}

/// The first connection serves one request, then takes the next one and closes without an
/// answer (what an upstream whose keep-alive timer just fired does). Later connections answer.
fn flaky_keepalive_upstream() -> Upstream {
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    Upstream::start(move |c| {
        let is_first = first.swap(false, std::sync::atomic::Ordering::SeqCst);
        if is_first {
            if c.read_request().is_some() {
                c.respond(b"first");
            }
            let _ = c.read_request();
            return;
        }
        while c.read_request().is_some() {
            if !c.respond(b"fresh") {
                return;
            }
        }
    })
}

#[test]
fn stale_pooled_connection_is_retried_once_for_idempotent_requests() {
    let up = flaky_keepalive_upstream();
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n").body, b"first");
    let r = c.request(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"fresh"[..]));
    let lines: Vec<String> = up.requests().iter().map(|r| r.request_line().to_string()).collect();
    assert_eq!(lines, vec!["GET /1 HTTP/1.1", "GET /2 HTTP/1.1", "GET /2 HTTP/1.1"]);
}

#[test]
fn non_idempotent_request_is_not_repeated_after_it_was_sent() {
    let up = flaky_keepalive_upstream();
    let gw = Gw::start(&config(&[up.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    let r = c.request(b"POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(r.status, 502);
    assert_eq!(up.requests().iter().filter(|r| r.request_line().starts_with("POST")).count(), 1);
}

/// An upstream that answers each connection's first request and closes it at once, without
/// `Connection: close`.
fn one_request_per_connection_upstream() -> Upstream {
    Upstream::start(|c| {
        if c.read_request().is_some() {
            c.respond(b"once");
        }
    })
}

/// A recently used pooled connection is reused unchecked by a request that can be sent again (a
/// GET), so the close is found by sending on it and the GET is resent on a new connection; a
/// POST is never sent on it: its connection is checked first.
#[test]
fn connection_closed_right_after_its_response_costs_no_error() {
    let up = one_request_per_connection_upstream();
    let gw = Gw::start(&config(&[up.addr], "", "[admin]\nlisten = \"127.0.0.1:0\"\n"));
    let mut c = Client::connect(gw.addr);
    for i in 0..3 {
        let r = c.request(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!((r.status, r.body.as_slice()), (200, &b"once"[..]), "GET {i}");
        // Give the close time to arrive, so the POST's check sees it.
        std::thread::sleep(Duration::from_millis(50));
        let r = c.request(b"POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"once"[..]), "POST {i}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let posts = up.requests().iter().filter(|r| r.request_line().starts_with("POST")).count();
    assert_eq!(posts, 3, "each POST reached the upstream exactly once");
    // The GETs after a POST took its closed connection unchecked and were sent again.
    assert!(gw.metric("ringgate_upstream_retries_total{service=\"svc\"}") >= 2.0, "the closed connections were checked, not reused");
}

/// A stale connection taken unchecked costs what the skipped check would have: the resend is
/// charged to no retry budget (here 3 per 10 s), so the fourth and later stale GETs still get
/// their answer.
#[test]
fn unchecked_stale_connections_are_not_charged_to_the_retry_budget() {
    let up = one_request_per_connection_upstream();
    let gw = Gw::start(&config(&[up.addr], "", "[services.retry]\nbudget = 1\n"));
    let mut c = Client::connect(gw.addr);
    for i in 0..6 {
        let r = c.request(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!((r.status, r.body.as_slice()), (200, &b"once"[..]), "GET {i}");
    }
    let gets = up.requests().iter().filter(|r| r.request_line().starts_with("GET")).count();
    assert_eq!(gets, 6, "each GET was answered by one upstream exchange");
}

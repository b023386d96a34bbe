//! Every malformed or ambiguous request is answered with the right status and a JSON error, the
//! connection is closed, and nothing reaches the upstream.

mod common;

use std::time::Duration;

use common::*;

/// (name, raw request, status, error code)
const CASES: &[(&str, &[u8], u16, &str)] = &[
    ("cl_and_te", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    ("te_and_cl_reversed", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    ("differing_cl", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "bad_request"),
    ("cl_list_differs", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello!", 400, "bad_request"),
    ("cl_sign", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello", 400, "bad_request"),
    ("cl_negative", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
    ("cl_inner_space", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\nhello world!", 400, "bad_request"),
    ("cl_hex", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nhello", 400, "bad_request"),
    ("cl_overflow", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400, "bad_request"),
    ("cl_empty", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400, "bad_request"),
    ("te_not_final_chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, "bad_request"),
    ("te_double_chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    ("te_unknown", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: magic\r\n\r\n", 501, "unsupported_transfer_coding"),
    ("te_gzip_chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "unsupported_transfer_coding"),
    ("te_in_http10", b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    ("te_chunked_space_name", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    ("chunk_size_not_hex", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "bad_request_body"),
    ("chunk_size_overflow", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400, "bad_request_body"),
    ("chunk_size_negative", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400, "bad_request_body"),
    ("chunk_missing_crlf_after_data", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, "bad_request_body"),
    ("chunk_bare_lf", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400, "bad_request_body"),
    ("obs_fold", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  folded\r\n\r\n", 400, "bad_request"),
    ("obs_fold_tab", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tfolded\r\n\r\n", 400, "bad_request"),
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost: h\r\nX-A : a\r\n\r\n", 400, "bad_request"),
    ("bad_header_name", b"GET / HTTP/1.1\r\nHost: h\r\nX(A): a\r\n\r\n", 400, "bad_request"),
    ("nul_in_value", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400, "bad_request"),
    ("bare_cr_in_value", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400, "bad_request"),
    ("missing_host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, "bad_request"),
    ("double_host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"),
    ("invalid_host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad_request"),
    ("host_with_userinfo", b"GET / HTTP/1.1\r\nHost: user@h\r\n\r\n", 400, "bad_request"),
    ("bad_version", b"GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400, "bad_request"),
    ("http2_version", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "version_not_supported"),
    ("bad_method_char", b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_request"),
    ("space_in_target", b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_request"),
    ("relative_target", b"GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_request"),
    ("dot_dot_segment", b"GET /public/../admin HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_request"),
    ("encoded_dot_dot_segment", b"GET /public/%2e%2E/admin HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_request"),
    ("dot_segment_at_end", b"GET /public/. HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bad_request"),
    ("connect", b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501, "not_implemented"),
    ("expect_unknown", b"POST / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx", 417, "expectation_failed"),
];

#[test]
fn malformed_requests_get_json_errors_and_close_and_reach_nothing() {
    let up = Upstream::ok(b"should not be seen");
    let gw = Gw::start(&config(&[up.addr], "", ""));
    for &(name, bytes, status, code) in CASES {
        let mut c = Client::connect(gw.addr);
        c.send(bytes);
        let r = c.read_response().unwrap_or_else(|| panic!("{name}: no response"));
        assert_eq!(r.status, status, "{name}: {}", r.body_str());
        assert_eq!(r.error_code(), code, "{name}");
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{name}");
        assert!(c.is_closed(), "{name}: connection left open");
    }
    assert!(up.requests().is_empty(), "an invalid request reached the upstream: {:?}", up.requests());
}

#[test]
fn oversize_head_target_and_header_count_are_refused() {
    let up = Upstream::ok(b"x");
    let limits = "[limits]\nmax_head = \"4KiB\"\nmax_target = \"1KiB\"\nmax_headers = 10\n";
    let gw = Gw::start(&config(&[up.addr], "", limits));
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(2000));
    let long_target_unfinished = format!("GET /{}", "a".repeat(3000));
    let big_head = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "b".repeat(5000));
    let many: String = (0..11).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
    let cases: Vec<(&str, String, u16)> = vec![
        ("target", long_target, 414),
        ("target_unfinished", long_target_unfinished, 414),
        ("head", big_head, 431),
        ("count", many, 431),
    ];
    for (name, req, status) in cases {
        let mut c = Client::connect(gw.addr);
        c.send(req.as_bytes());
        let r = c.read_response().unwrap_or_else(|| panic!("{name}: no response"));
        assert_eq!(r.status, status, "{name}");
        r.error_code();
        assert!(c.is_closed(), "{name}");
    }
    assert!(up.requests().is_empty());
}

#[test]
fn body_over_route_limit_is_refused() {
    let up = Upstream::ok(b"x");
    let extra = "[[services]]\nname = \"small\"\nupstreams = [\"UP\"]\n[[routes]]\nname = \"small\"\npaths = [\"/small\"]\nservice = \"small\"\nmax_body = \"10B\"\n"
        .replace("UP", &up.addr.to_string());
    let gw = Gw::start(&config(&[up.addr], "", &extra));
    // Declared too large: refused before the body is read.
    let mut c = Client::connect(gw.addr);
    c.send(b"POST /small HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "body_too_large");
    assert!(c.is_closed());
    // Chunked bodies are counted as they stream.
    let mut c = Client::connect(gw.addr);
    c.send(b"POST /small HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello!\r\n6\r\nhello!\r\n0\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413);
    assert!(c.is_closed());
    assert!(up.requests().is_empty());
    // Within the limit is fine.
    let r = Client::connect(gw.addr).request(b"POST /small HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789");
    assert_eq!(r.status, 200);
}

#[test]
fn slow_head_is_cut_off_with_408() {
    let up = Upstream::ok(b"x");
    let gw = Gw::start(&config(&[up.addr], "", "[timeouts]\nheader = \"300ms\"\n"));
    let mut c = Client::connect(gw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"X-Slow: 1\r\n");
    let r = c.read_response().expect("408 answer");
    assert_eq!(r.status, 408);
    assert_eq!(r.error_code(), "request_timeout");
    assert!(c.is_closed());
    // A connection that never sends anything is closed quietly.
    let mut c = Client::connect(gw.addr);
    assert!(c.read_response().is_none());
    assert!(up.requests().is_empty());
}

//! Codec tests, table-driven over raw bytes: request heads, response heads, chunked bodies, the
//! head writers, and the llhttp corpus in `tests/data/llhttp/` with ringgate's verdict on every
//! case. Rows are `(name, bytes, expect)`; a failing row names itself and shows its bytes.

use httparse::EMPTY_HEADER;

use super::body::{ChunkError, ChunkedDecoder, Step};
use super::parse::{parse_request, parse_response, Framing, HeadError, HeadLimits, Version};
use super::write::{
    client_framing, error_response, request_head, response_head, ErrorResponse, ForwardInfo, Ids,
};

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

// ---- Request heads ---------------------------------------------------------------------------

const LIMITS: HeadLimits = HeadLimits { max_head: 1024, max_target: 256, max_headers: 16 };

/// `ConnTokens` only answers `contains`, so rows may name only these.
const CONN_PROBES: [&str; 9] = ["close", "keep-alive", "upgrade", "te", "host", "x-secret", "x-a", "x-b", "token"];

#[derive(Debug, Clone, PartialEq)]
enum Req {
    /// `Ok(None)`: more bytes are needed.
    Partial,
    Head(ReqHead),
    Err(HeadError),
}

/// The facts of a parsed request head that a row pins down.
#[derive(Debug, Clone, PartialEq)]
struct ReqHead {
    method: String,
    version: Version,
    path: String,
    query: String,
    host: String,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    /// Input bytes after the head: `head_len` is the input length minus this.
    after_head: usize,
    conn_tokens: Vec<&'static str>,
}

fn req(method: &str, path: &str) -> Req {
    Req::Head(ReqHead {
        method: method.into(),
        version: Version::Http11,
        path: path.into(),
        query: String::new(),
        host: "h".into(),
        framing: Framing::None,
        keep_alive: true,
        expect_continue: false,
        after_head: 0,
        conn_tokens: Vec::new(),
    })
}

fn get(path: &str) -> Req {
    req("GET", path)
}

fn bad(why: &'static str) -> Req {
    Req::Err(HeadError::Malformed(why))
}

impl Req {
    fn with(self, edit: impl FnOnce(&mut ReqHead)) -> Req {
        let Req::Head(mut h) = self else { panic!("only a parsed head has facts") };
        edit(&mut h);
        Req::Head(h)
    }
    fn query(self, q: &str) -> Req {
        self.with(|h| h.query = q.into())
    }
    fn host(self, host: &str) -> Req {
        self.with(|h| h.host = host.into())
    }
    fn len(self, n: u64) -> Req {
        self.with(|h| h.framing = Framing::Length(n))
    }
    fn chunked(self) -> Req {
        self.with(|h| h.framing = Framing::Chunked)
    }
    fn close(self) -> Req {
        self.with(|h| h.keep_alive = false)
    }
    /// HTTP/1.0: not persistent unless it asks to be (RFC 9112 §9.3).
    fn http10(self) -> Req {
        self.with(|h| {
            h.version = Version::Http10;
            h.keep_alive = false;
        })
    }
    fn keep_alive(self) -> Req {
        self.with(|h| h.keep_alive = true)
    }
    fn expect_100(self) -> Req {
        self.with(|h| h.expect_continue = true)
    }
    fn body_follows(self, n: usize) -> Req {
        self.with(|h| h.after_head = n)
    }
    fn conn(self, names: &[&'static str]) -> Req {
        assert!(names.iter().all(|n| CONN_PROBES.contains(n)), "add {names:?} to CONN_PROBES");
        self.with(|h| h.conn_tokens = names.to_vec())
    }
}

fn parse_req(input: &[u8], limits: &HeadLimits) -> Req {
    let mut headers = [EMPTY_HEADER; 32];
    match parse_request(input, &mut headers, limits) {
        Ok(None) => Req::Partial,
        Err(e) => Req::Err(e),
        Ok(Some(h)) => Req::Head(ReqHead {
            method: h.method.into(),
            version: h.version,
            path: String::from_utf8_lossy(h.path).into(),
            query: String::from_utf8_lossy(h.query).into(),
            host: String::from_utf8_lossy(h.host).into(),
            framing: h.framing,
            keep_alive: h.keep_alive,
            expect_continue: h.expect_continue,
            after_head: input.len() - h.head_len,
            conn_tokens: CONN_PROBES.into_iter().filter(|n| h.conn_tokens.contains(n.as_bytes())).collect(),
        }),
    }
}

/// Runs one row, then the same bytes cut at every offset: each prefix must be `Partial` or
/// already the row's verdict (an error seen early, or the head once it is complete), so the
/// result never depends on how the bytes were split into reads.
fn check_request(name: &str, input: &[u8], want: &Req) {
    let got = parse_req(input, &LIMITS);
    assert_eq!(&got, want, "row `{name}`: {}", show(input));
    if let Req::Err(e) = want {
        assert!(json_safe(e.message()), "row `{name}`: the message goes into a JSON string unescaped");
    }
    let mut failed = false;
    for k in 0..input.len() {
        let early = parse_req(&input[..k], &LIMITS);
        let fine = match (&early, want) {
            (Req::Partial, Req::Head(h)) => k < input.len() - h.after_head,
            (Req::Head(e), Req::Head(h)) => {
                let head_len = input.len() - h.after_head;
                k >= head_len && *e == ReqHead { after_head: k - head_len, ..h.clone() }
            }
            (Req::Partial, Req::Err(_)) => !failed,
            (Req::Err(e), Req::Err(w)) => e == w,
            (Req::Partial, Req::Partial) => true,
            _ => false,
        };
        failed |= matches!(early, Req::Err(_));
        assert!(fine, "row `{name}` cut after {k} bytes gave {early:?}: {}", show(&input[..k]));
    }
}

#[test]
fn request_heads() {
    let pad = |n: usize| "a".repeat(n);
    // 16 + 9 + 7 + 4 bytes around the padding: exactly `LIMITS.max_head` with 988.
    let head_at_limit = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n", pad(988));
    let head_over_limit = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n", pad(989));
    let open_head_over_limit = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: {}", pad(1100));
    let fields = |n: usize| (1..n).map(|i| format!("X-{i}: {i}\r\n")).collect::<String>();
    let headers_at_limit = format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", fields(16));
    let headers_over_limit = format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", fields(17));
    let target_at_limit = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", pad(255));
    let target_over_limit = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", pad(256));
    let open_line_long_target = format!("GET /{}", pad(300));
    let open_head_long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n", pad(300));
    let target_over_max_head = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", pad(1100));
    let many_conn_options = format!("GET / HTTP/1.1\r\nHost: h\r\nConnection: {}\r\n\r\n", vec!["x"; 17].join(", "));

    let rows: &[(&str, &[u8], Req)] = &[
        // The basics.
        ("origin-form GET", b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", get("/a")),
        ("query split from the path", b"GET /a/b?x=1&y=?2 HTTP/1.1\r\nHost: h\r\n\r\n", get("/a/b").query("?x=1&y=?2")),
        ("leading CRLFs before the request line are skipped (RFC 9112 §2.2)", b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", get("/")),
        ("body bytes are not part of the head", b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", req("POST", "/p").len(3).body_follows(3)),
        ("unknown method is a token like any other", b"PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n", req("PURGE", "/x")),
        ("method with a non-token byte", b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", bad("invalid method or request target")),
        ("two spaces after the method", b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", bad("invalid method or request target")),
        ("control byte in the target", b"GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n", bad("invalid method or request target")),
        ("UTF-8 in the target (RFC 3986 §2: ASCII only)", "GET /caf\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes(), bad("invalid request target")),
        ("space inside the target", b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", bad("invalid HTTP version")),
        ("obs-text in a field value is allowed", "GET / HTTP/1.1\r\nHost: h\r\nX-A: caf\u{e9}\r\n\r\n".as_bytes(), get("/")),
        // Content-Length (RFC 9110 §8.6, RFC 9112 §6.3).
        ("Content-Length", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", req("POST", "/").len(5)),
        ("Content-Length: 0 means no body", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", req("POST", "/")),
        ("Content-Length with leading zeros", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n", req("POST", "/").len(7)),
        ("Content-Length with surrounding whitespace", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \t 7 \t\r\n\r\n", req("POST", "/").len(7)),
        ("Content-Length of 18 digits", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999999999999\r\n\r\n", req("POST", "/").len(999_999_999_999_999_999)),
        ("duplicate identical Content-Length lines are accepted", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", req("POST", "/").len(5)),
        ("identical Content-Length list is accepted", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", req("POST", "/").len(5)),
        ("differing Content-Length lines", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", bad("conflicting Content-Length values")),
        ("Content-Length list 5, 6", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", bad("conflicting Content-Length values")),
        ("Content-Length list with an empty element", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,,5\r\n\r\n", bad("invalid Content-Length")),
        ("Content-Length with a non-digit", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5a\r\n\r\n", bad("invalid Content-Length")),
        ("Content-Length in hex", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n", bad("invalid Content-Length")),
        ("Content-Length with a plus sign", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", bad("invalid Content-Length")),
        ("Content-Length with a minus sign", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n", bad("invalid Content-Length")),
        ("Content-Length with whitespace inside", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\n", bad("invalid Content-Length")),
        ("empty Content-Length", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", bad("invalid Content-Length")),
        ("Content-Length of 19 digits", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000000000\r\n\r\n", bad("invalid Content-Length")),
        ("Content-Length of 2^64", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", bad("invalid Content-Length")),
        // Transfer-Encoding (RFC 9112 §6.1, §6.3).
        ("chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", req("POST", "/").chunked()),
        ("coding names are case-insensitive", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n", req("POST", "/").chunked()),
        ("Content-Length and Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", bad("both Transfer-Encoding and Content-Length")),
        ("Transfer-Encoding and Content-Length", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", bad("both Transfer-Encoding and Content-Length")),
        ("final coding is not chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", bad("final transfer coding is not chunked")),
        ("chunked before another coding", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", bad("final transfer coding is not chunked")),
        ("chunked then another coding on a second line", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", bad("final transfer coding is not chunked")),
        ("chunked twice in one line", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", bad("chunked applied more than once")),
        ("chunked twice on two lines", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", bad("chunked applied more than once")),
        ("known coding under chunked is not implemented", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Req::Err(HeadError::UnsupportedCoding)),
        ("unknown coding", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: pigeons\r\n\r\n", Req::Err(HeadError::UnsupportedCoding)),
        ("unknown coding under chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: pigeons, chunked\r\n\r\n", Req::Err(HeadError::UnsupportedCoding)),
        ("chunked with a parameter", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", Req::Err(HeadError::UnsupportedCoding)),
        ("empty Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", bad("empty Transfer-Encoding")),
        ("Transfer-Encoding in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", bad("Transfer-Encoding in an HTTP/1.0 request")),
        // Field syntax (RFC 9112 §5, RFC 9110 §5.5).
        ("obs-fold with a space", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n", bad("invalid header name")),
        ("obs-fold with a tab", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\t2\r\n\r\n", bad("invalid header name")),
        ("space before the first field line", b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", bad("invalid header name")),
        ("space between name and colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", bad("invalid header name")),
        ("tab between name and colon", b"GET / HTTP/1.1\r\nHost: h\r\nX-A\t: 1\r\n\r\n", bad("invalid header name")),
        ("non-token byte in a name", b"GET / HTTP/1.1\r\nHost: h\r\nX@A: 1\r\n\r\n", bad("invalid header name")),
        ("empty name", b"GET / HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n", bad("invalid header name")),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n", bad("invalid header value")),
        ("DEL in a value", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n", bad("invalid header value")),
        ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", bad("invalid header value")),
        ("bare CR after the request line", b"GET / HTTP/1.1\rHost: h\r\n\r\n", bad("invalid line ending")),
        ("bare CR before the end of the head", b"GET / HTTP/1.1\r\nHost: h\r\n\rX", bad("invalid line ending")),
        ("bare LF after a field line", b"GET / HTTP/1.1\r\nHost: h\nContent-Length: 5\r\n\r\n", bad("bare LF line ending")),
        ("bare LF everywhere", b"GET / HTTP/1.1\nHost: h\n\n", bad("bare LF line ending")),
        ("bare LF before the request line", b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", bad("bare LF line ending")),
        // Host (RFC 9112 §3.2, RFC 9110 §7.2).
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", bad("missing Host header")),
        ("two Host fields", b"GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", bad("more than one Host header")),
        ("two identical Host fields", b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", bad("more than one Host header")),
        ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", get("/").http10().host("")),
        ("HTTP/1.0 with two Host fields", b"GET / HTTP/1.0\r\nHost: h\r\nHost: i\r\n\r\n", bad("more than one Host header")),
        ("Host with a port", b"GET / HTTP/1.1\r\nHost: h.example:8080\r\n\r\n", get("/").host("h.example:8080")),
        ("IPv6 Host", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", get("/").host("[::1]:8080")),
        ("empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", get("/").host("")),
        ("Host with a space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", bad("invalid Host header")),
        ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", bad("invalid Host header")),
        ("Host with a path", b"GET / HTTP/1.1\r\nHost: h/x\r\n\r\n", bad("invalid Host header")),
        ("Host with a non-numeric port", b"GET / HTTP/1.1\r\nHost: h:8o\r\n\r\n", bad("invalid Host header")),
        ("Host with an unclosed IPv6 literal", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", bad("invalid Host header")),
        // Request-target forms (RFC 9112 §3.2).
        ("dot-dot segment", b"GET /a/../b HTTP/1.1\r\nHost: h\r\n\r\n", bad("dot segment in request path")),
        ("dot segment", b"GET /a/./b HTTP/1.1\r\nHost: h\r\n\r\n", bad("dot segment in request path")),
        ("percent-encoded dot-dot segment", b"GET /a/%2E%2e/b HTTP/1.1\r\nHost: h\r\n\r\n", bad("dot segment in request path")),
        ("mixed dot-dot segment at the end", b"GET /a/.%2e HTTP/1.1\r\nHost: h\r\n\r\n", bad("dot segment in request path")),
        ("dots inside a segment are fine", b"GET /a/..b/c.d/... HTTP/1.1\r\nHost: h\r\n\r\n", get("/a/..b/c.d/...")),
        ("absolute-form: the authority is the host", b"GET http://api.example:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n", get("/p").query("?q=1").host("api.example:8080")),
        ("absolute-form without a path", b"GET http://h2?x HTTP/1.1\r\nHost: h\r\n\r\n", get("/").query("?x").host("h2")),
        ("absolute-form, https, scheme in capitals", b"GET HTTPS://H2/ HTTP/1.1\r\nHost: h\r\n\r\n", get("/").host("H2")),
        ("absolute-form still needs Host in HTTP/1.1", b"GET http://h2/ HTTP/1.1\r\n\r\n", bad("missing Host header")),
        ("absolute-form with userinfo (RFC 9110 §4.2.4)", b"GET http://u:p@h2/ HTTP/1.1\r\nHost: h\r\n\r\n", bad("invalid authority in request target")),
        ("absolute-form with an empty authority", b"GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n", bad("invalid authority in request target")),
        ("absolute-form with a percent-encoded authority", b"GET http://a%2fb/ HTTP/1.1\r\nHost: h\r\n\r\n", get("/").host("a%2fb")),
        ("absolute-form with another scheme", b"GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", bad("invalid request target")),
        ("relative target", b"GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", bad("invalid request target")),
        ("asterisk-form OPTIONS", b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", req("OPTIONS", "*")),
        ("asterisk-form with another method", b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", bad("asterisk-form target is only for OPTIONS")),
        ("CONNECT", b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", Req::Err(HeadError::NotImplemented)),
        ("fragment in the target", b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", bad("fragment in request target")),
        // Versions (RFC 9112 §2.3, RFC 9110 §2.5).
        ("HTTP/1.0", b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", get("/").http10()),
        ("HTTP/2.0 is 505", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", Req::Err(HeadError::VersionNotSupported)),
        ("HTTP/2.0 after a leading CRLF is 505", b"\r\nGET / HTTP/2.0\r\nHost: h\r\n\r\n", Req::Err(HeadError::VersionNotSupported)),
        ("HTTP/3.0 without headers is 505", b"GET / HTTP/3.0\r\n\r\n", Req::Err(HeadError::VersionNotSupported)),
        ("unknown HTTP/1 minor version", b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", bad("invalid HTTP version")),
        ("two-digit major version", b"GET / HTTP/11.1\r\nHost: h\r\n\r\n", bad("invalid HTTP version")),
        ("garbage version", b"GET / FOO/1.1\r\nHost: h\r\n\r\n", bad("invalid HTTP version")),
        ("lowercase version", b"GET / http/1.1\r\nHost: h\r\n\r\n", bad("invalid HTTP version")),
        ("space after the version", b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", bad("invalid line ending")),
        ("no version (HTTP/0.9)", b"GET /\r\n\r\n", bad("invalid method or request target")),
        // Expect (RFC 9110 §10.1.1).
        ("Expect: 100-continue", b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", req("PUT", "/").len(2).expect_100()),
        ("Expect: 100-Continue, any case", b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n", req("PUT", "/").len(2).expect_100()),
        ("other expectation", b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", Req::Err(HeadError::UnsupportedExpectation)),
        ("100-continue from an HTTP/1.0 client is ignored", b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", req("PUT", "/").http10().host("").len(2)),
        // Connection (RFC 9112 §9.3, RFC 9110 §7.6.1).
        ("HTTP/1.1 is persistent by default", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", get("/")),
        ("HTTP/1.1 Connection: close", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", get("/").close()),
        ("HTTP/1.1 Connection: Close, any case", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n", get("/").close()),
        ("HTTP/1.0 is not persistent by default", b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", get("/").http10()),
        ("HTTP/1.0 Connection: keep-alive", b"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", get("/").http10().keep_alive()),
        ("HTTP/1.0 keep-alive then close", b"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n", get("/").http10()),
        ("Connection names header fields", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret, TE\r\n\r\n", get("/").close().conn(&["te", "x-secret"])),
        ("Connection on two lines", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-a\r\nConnection: ,X-B,\r\n\r\n", get("/").conn(&["x-a", "x-b"])),
        ("Connection naming Host is recorded (the writer protects Host)", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n", get("/").conn(&["host"])),
        ("17 Connection options", many_conn_options.as_bytes(), bad("too many Connection options")),
        // Limits.
        ("head of exactly max_head", head_at_limit.as_bytes(), get("/")),
        ("head over max_head", head_over_limit.as_bytes(), Req::Err(HeadError::HeadTooLarge)),
        ("unfinished head over max_head", open_head_over_limit.as_bytes(), Req::Err(HeadError::HeadTooLarge)),
        ("max_headers fields", headers_at_limit.as_bytes(), get("/")),
        ("one field over max_headers", headers_over_limit.as_bytes(), Req::Err(HeadError::HeadTooLarge)),
        ("target of exactly max_target", target_at_limit.as_bytes(), get(&format!("/{}", pad(255)))),
        ("target over max_target", target_over_limit.as_bytes(), Req::Err(HeadError::TargetTooLong)),
        ("target over max_target, request line unfinished", open_line_long_target.as_bytes(), Req::Err(HeadError::TargetTooLong)),
        ("target over max_target, head unfinished", open_head_long_target.as_bytes(), Req::Err(HeadError::TargetTooLong)),
        ("target longer than max_head is still 414", target_over_max_head.as_bytes(), Req::Err(HeadError::TargetTooLong)),
        // Unfinished heads.
        ("nothing yet", b"", Req::Partial),
        ("only an empty line", b"\r\n", Req::Partial),
        ("request line only", b"GET / HTTP/1.1\r\n", Req::Partial),
        ("fields without the final CRLF", b"GET / HTTP/1.1\r\nHost: h\r\n", Req::Partial),
        ("version cut short", b"GET / HTTP/1.", Req::Partial),
        ("HTTP/2 version cut short", b"GET / HTTP/2", Req::Partial),
    ];
    for (name, input, want) in rows {
        check_request(name, input, want);
    }
}

/// `error_response` writes messages into a JSON string as they are.
fn json_safe(message: &str) -> bool {
    message.bytes().all(|b| b != b'"' && b != b'\\' && !b.is_ascii_control())
}

#[test]
fn head_error_statuses() {
    let rows = [
        (HeadError::HeadTooLarge, 431),
        (HeadError::TargetTooLong, 414),
        (HeadError::Malformed("x"), 400),
        (HeadError::VersionNotSupported, 505),
        (HeadError::UnsupportedCoding, 501),
        (HeadError::UnsupportedExpectation, 417),
        (HeadError::NotImplemented, 501),
    ];
    for (e, status) in rows {
        assert_eq!(e.status(), status, "{e:?}");
        assert!(json_safe(e.message()), "{e:?}");
    }
    let chunk_errors = [
        ChunkError::BadSize,
        ChunkError::SizeOverflow,
        ChunkError::BadExtension,
        ChunkError::ExtensionTooLong,
        ChunkError::MissingCrlf,
        ChunkError::BadTrailer,
        ChunkError::TrailerTooLarge,
    ];
    for e in chunk_errors {
        assert!(json_safe(e.message()), "{e:?}");
    }
}

// ---- Response heads --------------------------------------------------------------------------

const RES_MAX_HEAD: usize = 512;

#[derive(Debug, Clone, PartialEq)]
enum Res {
    Partial,
    Head(ResHead),
    Err(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
struct ResHead {
    version: Version,
    code: u16,
    reason: String,
    framing: Framing,
    keep_alive: bool,
    content_length: Option<u64>,
    after_head: usize,
}

fn res(code: u16, reason: &str) -> Res {
    Res::Head(ResHead {
        version: Version::Http11,
        code,
        reason: reason.into(),
        framing: Framing::None,
        keep_alive: true,
        content_length: None,
        after_head: 0,
    })
}

impl Res {
    fn with(self, edit: impl FnOnce(&mut ResHead)) -> Res {
        let Res::Head(mut h) = self else { panic!("only a parsed head has facts") };
        edit(&mut h);
        Res::Head(h)
    }
    /// Framed by a Content-Length of `n`.
    fn len(self, n: u64) -> Res {
        self.with(|h| {
            h.framing = Framing::Length(n);
            h.content_length = Some(n);
        })
    }
    /// Carries a Content-Length of `n` that does not frame it (HEAD, 1xx, 204, 304).
    fn cl(self, n: u64) -> Res {
        self.with(|h| h.content_length = Some(n))
    }
    fn chunked(self) -> Res {
        self.with(|h| h.framing = Framing::Chunked)
    }
    /// Ends at close, so the connection cannot be reused.
    fn until_close(self) -> Res {
        self.with(|h| {
            h.framing = Framing::UntilClose;
            h.keep_alive = false;
        })
    }
    fn close(self) -> Res {
        self.with(|h| h.keep_alive = false)
    }
    fn http10(self) -> Res {
        self.with(|h| {
            h.version = Version::Http10;
            h.keep_alive = false;
        })
    }
    fn keep_alive(self) -> Res {
        self.with(|h| h.keep_alive = true)
    }
    fn body_follows(self, n: usize) -> Res {
        self.with(|h| h.after_head = n)
    }
}

fn parse_res(input: &[u8], method: &str) -> Res {
    let mut headers = [EMPTY_HEADER; 16];
    match parse_response(input, &mut headers, method == "HEAD", RES_MAX_HEAD) {
        Ok(None) => Res::Partial,
        Err(e) => Res::Err(e.0),
        Ok(Some(h)) => Res::Head(ResHead {
            version: h.version,
            code: h.code,
            reason: String::from_utf8_lossy(h.reason).into(),
            framing: h.framing,
            keep_alive: h.keep_alive,
            content_length: h.content_length,
            after_head: input.len() - h.head_len,
        }),
    }
}

fn check_response(name: &str, method: &str, input: &[u8], want: &Res) {
    let got = parse_res(input, method);
    assert_eq!(&got, want, "row `{name}`: {}", show(input));
    let mut failed = false;
    for k in 0..input.len() {
        let early = parse_res(&input[..k], method);
        let fine = match (&early, want) {
            (Res::Partial, Res::Head(h)) => k < input.len() - h.after_head,
            (Res::Head(e), Res::Head(h)) => {
                let head_len = input.len() - h.after_head;
                k >= head_len && *e == ResHead { after_head: k - head_len, ..h.clone() }
            }
            (Res::Partial, Res::Err(_)) => !failed,
            (Res::Err(e), Res::Err(w)) => e == w,
            (Res::Partial, Res::Partial) => true,
            _ => false,
        };
        failed |= matches!(early, Res::Err(_));
        assert!(fine, "row `{name}` cut after {k} bytes gave {early:?}: {}", show(&input[..k]));
    }
}

#[test]
fn response_heads() {
    let big = format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n", "a".repeat(RES_MAX_HEAD));
    let many = format!("HTTP/1.1 200 OK\r\n{}Content-Length: 0\r\n\r\n", "X-A: 1\r\n".repeat(16));
    let rows: &[(&str, &str, &[u8], Res)] = &[
        // Status lines (RFC 9112 §4).
        ("status line with a reason", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", res(200, "OK").len(2).body_follows(2)),
        ("reason with spaces", "GET", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", res(404, "Not Found").len(0)),
        ("no reason", "GET", b"HTTP/1.1 204\r\n\r\n", res(204, "")),
        ("empty reason after the space", "GET", b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", res(200, "").len(0)),
        ("obs-text reason is accepted (and not kept)", "GET", "HTTP/1.1 200 \u{e9}t\u{e9}\r\nContent-Length: 0\r\n\r\n".as_bytes(), res(200, "").len(0)),
        ("leading CRLF before the status line", "GET", b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", res(200, "OK").len(0)),
        ("status 099", "GET", b"HTTP/1.1 099 X\r\n\r\n", Res::Err("invalid status code")),
        ("status 600", "GET", b"HTTP/1.1 600 X\r\n\r\n", Res::Err("invalid status code")),
        ("two-digit status", "GET", b"HTTP/1.1 20 OK\r\n\r\n", Res::Err("invalid status")),
        ("status with a letter", "GET", b"HTTP/1.1 2x0 OK\r\n\r\n", Res::Err("invalid status")),
        ("two spaces before the status", "GET", b"HTTP/1.1  200 OK\r\n\r\n", Res::Err("invalid status")),
        ("tab after the version", "GET", b"HTTP/1.1\t200 OK\r\n\r\n", Res::Err("invalid HTTP version")),
        ("HTTP/2.0 status line", "GET", b"HTTP/2.0 200 OK\r\n\r\n", Res::Err("invalid HTTP version")),
        ("bare CR after the status line", "GET", b"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n", Res::Err("invalid status")),
        ("bare LF line endings", "GET", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", Res::Err("bare LF line ending")),
        ("obs-fold", "GET", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n", Res::Err("invalid header name")),
        ("space between name and colon", "GET", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", Res::Err("invalid header name")),
        // Bodiless responses (RFC 9112 §6.3 (1)).
        ("100 has no body", "GET", b"HTTP/1.1 100 Continue\r\n\r\n", res(100, "Continue")),
        ("101 has no body", "GET", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", res(101, "Switching Protocols")),
        ("103 has no body", "GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", res(103, "Early Hints")),
        ("204 with Content-Length has no body", "GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", res(204, "No Content").cl(5)),
        ("304 with Content-Length has no body", "GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", res(304, "Not Modified").cl(10)),
        ("304 with chunked has no body", "GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", res(304, "Not Modified")),
        ("HEAD response with Content-Length has no body", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", res(200, "OK").cl(5)),
        ("HEAD response with chunked has no body", "HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", res(200, "OK")),
        ("HEAD response without framing has no body", "HEAD", b"HTTP/1.1 200 OK\r\n\r\n", res(200, "OK")),
        // Framing (RFC 9112 §6.3).
        ("Content-Length and Transfer-Encoding", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Res::Err("both Transfer-Encoding and Content-Length")),
        ("Content-Length and Transfer-Encoding on a 304", "GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Res::Err("both Transfer-Encoding and Content-Length")),
        ("differing Content-Length", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Res::Err("invalid or conflicting Content-Length")),
        ("Content-Length list 5, 6", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", Res::Err("invalid or conflicting Content-Length")),
        ("invalid Content-Length", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", Res::Err("invalid or conflicting Content-Length")),
        ("identical Content-Length lines", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", res(200, "OK").len(3).body_follows(3)),
        ("chunked", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", res(200, "OK").chunked()),
        // Codings other than chunked would reach the client unlabelled once the gateway
        // re-frames the body, so they are refused rather than passed on.
        ("gzip then chunked is refused", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Res::Err("unsupported transfer coding in response")),
        ("gzip only is refused", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Res::Err("unsupported transfer coding in response")),
        ("chunked then gzip is refused", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Res::Err("unsupported transfer coding in response")),
        ("chunked twice", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Res::Err("chunked applied more than once")),
        ("empty Transfer-Encoding", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n", Res::Err("invalid Transfer-Encoding")),
        ("Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1)", "GET", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Res::Err("Transfer-Encoding in an HTTP/1.0 response")),
        ("neither Content-Length nor Transfer-Encoding", "GET", b"HTTP/1.1 200 OK\r\n\r\nhello", res(200, "OK").until_close().body_follows(5)),
        // Persistence (RFC 9112 §9.3).
        ("HTTP/1.1 Connection: close", "GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", res(200, "OK").len(0).close()),
        ("HTTP/1.0 is not persistent by default", "GET", b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", res(200, "OK").len(0).http10()),
        ("HTTP/1.0 keep-alive with Content-Length", "GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", res(200, "OK").len(0).http10().keep_alive()),
        ("HTTP/1.0 keep-alive without Content-Length", "GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", res(200, "OK").http10().until_close()),
        ("HTTP/1.0 keep-alive 204", "GET", b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n", res(204, "No Content").http10().keep_alive()),
        // Limits and unfinished heads.
        ("head over max_head", "GET", big.as_bytes(), Res::Err("response head too large")),
        ("too many fields", "GET", many.as_bytes(), Res::Err("too many response headers")),
        ("nothing yet", "GET", b"", Res::Partial),
        ("status line only", "GET", b"HTTP/1.1 200 OK\r\n", Res::Partial),
    ];
    for (name, method, input, want) in rows {
        check_response(name, method, input, want);
    }
}

// ---- Chunked bodies --------------------------------------------------------------------------

const MAX_TRAILER: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Body {
    /// The body ended; `rest` (the next message) follows it untouched.
    Done { data: Vec<u8>, rest: Vec<u8> },
    /// The input ended inside the body.
    Partial { data: Vec<u8> },
    Err(ChunkError),
}

fn done(data: &[u8]) -> Body {
    Body::Done { data: data.to_vec(), rest: Vec::new() }
}

fn done_then(data: &[u8], rest: &[u8]) -> Body {
    Body::Done { data: data.to_vec(), rest: rest.to_vec() }
}

fn partial(data: &[u8]) -> Body {
    Body::Partial { data: data.to_vec() }
}

/// Feeds `input` to `step` in the pieces that `cuts` (ascending offsets) delimit.
fn decode_by_step(input: &[u8], cuts: &[usize]) -> Body {
    let mut dec = ChunkedDecoder::new(MAX_TRAILER);
    let mut data = Vec::new();
    let bounds = cuts.iter().copied().chain([input.len()]);
    let mut start = 0;
    for end in bounds {
        let piece = &input[start..end];
        let mut at = 0;
        while at < piece.len() {
            match dec.step(&piece[at..]) {
                Ok(Step::Framing(n)) => at += n,
                Ok(Step::Data(n)) => {
                    data.extend_from_slice(&piece[at..at + n]);
                    at += n;
                }
                Ok(Step::Done(n)) => {
                    assert_eq!(dec.data_len(), data.len() as u64);
                    return Body::Done { data, rest: input[start + at + n..].to_vec() };
                }
                Err(e) => return Body::Err(e),
            }
        }
        start = end;
    }
    Body::Partial { data }
}

/// The same through `decode_in_place`, each piece decoded in its own place; the bytes after the
/// body must be left as they were.
fn decode_by_place(input: &[u8], cuts: &[usize]) -> Body {
    let mut dec = ChunkedDecoder::new(MAX_TRAILER);
    let mut buf = input.to_vec();
    let mut data = Vec::new();
    let bounds = cuts.iter().copied().chain([input.len()]);
    let mut start = 0;
    for end in bounds {
        match dec.decode_in_place(&mut buf[start..end]) {
            Ok((kept, used, finished)) => {
                data.extend_from_slice(&buf[start..start + kept]);
                if finished {
                    let tail = start + used;
                    assert_eq!(buf[tail..], input[tail..], "decode_in_place touched bytes after the body");
                    return Body::Done { data, rest: input[tail..].to_vec() };
                }
                assert_eq!(used, end - start);
            }
            Err(e) => return Body::Err(e),
        }
        start = end;
    }
    Body::Partial { data }
}

/// `scan` (pass-through) must agree on where the body ends.
fn scan_end(input: &[u8]) -> Result<(usize, bool), ChunkError> {
    ChunkedDecoder::new(MAX_TRAILER).scan(input)
}

fn check_chunked(name: &str, input: &[u8], want: &Body) {
    let whole = decode_by_step(input, &[]);
    assert_eq!(&whole, want, "row `{name}` (step, whole): {}", show(input));
    assert_eq!(&decode_by_place(input, &[]), want, "row `{name}` (decode_in_place, whole)");
    let bytewise: Vec<usize> = (1..input.len()).collect();
    assert_eq!(&decode_by_step(input, &bytewise), want, "row `{name}` (step, byte by byte)");
    assert_eq!(&decode_by_place(input, &bytewise), want, "row `{name}` (decode_in_place, byte by byte)");
    for k in 0..=input.len() {
        assert_eq!(&decode_by_step(input, &[k]), want, "row `{name}` (step, cut at {k})");
        assert_eq!(&decode_by_place(input, &[k]), want, "row `{name}` (decode_in_place, cut at {k})");
    }
    let scanned = scan_end(input);
    match want {
        Body::Done { rest, .. } => assert_eq!(scanned, Ok((input.len() - rest.len(), true)), "row `{name}` (scan)"),
        Body::Partial { .. } => assert_eq!(scanned, Ok((input.len(), false)), "row `{name}` (scan)"),
        Body::Err(e) => assert_eq!(scanned, Err(*e), "row `{name}` (scan)"),
    }
}

#[test]
fn chunked_bodies() {
    let long_ext = |n: usize| format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(n));
    // The extension bound counts the bytes after `;` up to and including the CR.
    let ext_at_limit = long_ext(1023);
    let ext_over_limit = long_ext(1024);
    let big_trailer = format!("0\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_TRAILER));
    let zeros = format!("{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(40));
    let alphabet = "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";

    let rows: &[(&str, &[u8], Body)] = &[
        ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("two chunks", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", done(b"hello world")),
        ("only the last chunk", b"0\r\n\r\n", done(b"")),
        ("lowercase hex", b"a\r\n0123456789\r\n0\r\n\r\n", done(b"0123456789")),
        ("uppercase hex", alphabet.as_bytes(), done(b"abcdefghijklmnopqrstuvwxyz")),
        ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", done(b"hello")),
        ("leading zeros do not count toward the digit bound", zeros.as_bytes(), done(b"hello")),
        ("CRLF inside the data is data", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", done(b"\r\n\r\n")),
        ("the next message is left untouched", b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", done_then(b"abc", b"GET / HTTP/1.1\r\n")),
        // Extensions (RFC 9112 §7.1.1).
        ("extension name", b"5;a\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("extension with a token value", b"5;a=b\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("extension with a quoted value", b"5;a=\"x \\\"y\\\"; z\"\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("several extensions with BWS", b"5 ; a = b ;c;d=\"\"\t;e\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("extension on the last chunk", b"0;end=1\r\n\r\n", done(b"")),
        ("extension of the maximum length", ext_at_limit.as_bytes(), done(b"hello")),
        // Trailers (RFC 9112 §7.1.2).
        ("trailer fields", b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-B:two words\r\n\r\n", done(b"hello")),
        ("trailer with an empty value", b"0\r\nX-A:\r\n\r\nnext", done_then(b"", b"next")),
        // Unfinished bodies.
        ("nothing yet", b"", partial(b"")),
        ("inside the size", b"5", partial(b"")),
        ("inside the data", b"5\r\nhel", partial(b"hel")),
        ("before the CRLF after the data", b"5\r\nhello", partial(b"hello")),
        ("before the final CRLF", b"5\r\nhello\r\n0\r\n", partial(b"hello")),
        ("inside a trailer", b"5\r\nhello\r\n0\r\nX-A: 1", partial(b"hello")),
        ("15 hex digits is the largest size", b"fffffffffffffff\r\nabc", partial(b"abc")),
        // Sizes.
        ("non-hex size", b"g\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("non-hex byte after the digits", b"5g\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("empty size", b"\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("negative size", b"-5\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("whitespace before the size", b" 5\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("whitespace after the size without an extension", b"5 \r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("16 significant hex digits", b"1000000000000000\r\n", Body::Err(ChunkError::SizeOverflow)),
        ("17 hex digits", b"fffffffffffffffff\r\n", Body::Err(ChunkError::SizeOverflow)),
        // Line endings.
        ("bare LF after the size", b"5\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("CR without LF after the size", b"5\rhello\r\n0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("bare LF after the data", b"5\r\nhello\n0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("no CRLF after the data", b"5\r\nhello0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("CR without LF after the data", b"5\r\nhello\r0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("more data than the size", b"3\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("bare LF ending the body", b"0\r\n\n", Body::Err(ChunkError::BadTrailer)),
        ("CR without LF ending the body", b"0\r\n\rX", Body::Err(ChunkError::MissingCrlf)),
        // Bad extensions.
        ("empty extension", b"5;\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension with an empty value", b"5;a=\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension with a control byte", b"5;a\x01\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension with a NUL in a quoted value", b"5;a=\"\0\"\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension ended by a bare LF", b"5;a\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("unterminated quoted value", b"5;a=\"b\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("text after a quoted value", b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("whitespace before the CRLF after an extension", b"5;a \r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("two names without a separator", b"5;a b\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension over the maximum length", ext_over_limit.as_bytes(), Body::Err(ChunkError::ExtensionTooLong)),
        // Bad trailers.
        ("trailer section over the limit", big_trailer.as_bytes(), Body::Err(ChunkError::TrailerTooLarge)),
        ("space in a trailer name", b"0\r\nX A: 1\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("space before a trailer colon", b"0\r\nX-A : 1\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("trailer without a colon", b"0\r\nX-A\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("empty trailer name", b"0\r\n: 1\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("obs-fold in the trailers", b"0\r\nX-A: 1\r\n 2\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("NUL in a trailer value", b"0\r\nX-A: \0\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("bare LF after a trailer", b"0\r\nX-A: 1\n\r\n", Body::Err(ChunkError::BadTrailer)),
    ];
    for (name, input, want) in rows {
        check_chunked(name, input, want);
    }
}

// ---- Writers ---------------------------------------------------------------------------------

/// One expected line of written output: exact, or a prefix plus a generated value.
fn line_matches(want: &str, line: &str) -> bool {
    let generated = |prefix: &str, ok: fn(&str) -> bool| line.strip_prefix(prefix).is_some_and(ok);
    if let Some(prefix) = want.strip_suffix("{id}") {
        generated(prefix, |v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    } else if let Some(prefix) = want.strip_suffix("{traceparent}") {
        generated(prefix, |v| {
            let parts: Vec<&str> = v.split('-').collect();
            let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            parts.len() == 4
                && parts[0] == "00"
                && hex(parts[1], 32)
                && hex(parts[2], 16)
                && parts[3] == "01"
                && parts[1] != "0".repeat(32)
                && parts[2] != "0".repeat(16)
        })
    } else {
        want == line
    }
}

/// Fields the gateway writes itself, each at most once.
const GATEWAY_FIELDS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "traceparent",
];

/// Checks written head lines: every `want` line is there, no field named in `absent` is, and
/// the fields the gateway owns appear at most once.
fn check_lines(name: &str, out: &str, want: &[&str], absent: &[&str]) {
    assert!(out.ends_with("\r\n\r\n"), "row `{name}`: head not terminated: {out:?}");
    let lines: Vec<&str> = out.trim_end_matches("\r\n").split("\r\n").collect();
    for w in want {
        assert!(lines.iter().any(|l| line_matches(w, l)), "row `{name}`: no line `{w}` in\n{out}");
    }
    let named = |field: &str| {
        lines[1..].iter().filter(|l| l.split(':').next().is_some_and(|n| n.eq_ignore_ascii_case(field))).count()
    };
    for a in absent {
        assert_eq!(named(a), 0, "row `{name}`: `{a}` should be gone from\n{out}");
    }
    for field in GATEWAY_FIELDS {
        assert!(named(field) <= 1, "row `{name}`: `{field}` written more than once in\n{out}");
    }
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn forward(raw: &[u8], path: Option<&str>) -> String {
    let mut headers = [EMPTY_HEADER; 32];
    let req = parse_request(raw, &mut headers, &LIMITS).expect("valid").expect("complete");
    let ids = Ids::new(7);
    let id = super::write::request_id(&req, &ids);
    let info = ForwardInfo {
        client_ip: b"10.0.0.1",
        proto: b"http",
        request_id: id.as_bytes(),
        path: path.map_or(req.path, str::as_bytes),
        strip: &[],
        extra: b"",
    };
    let mut out = Vec::new();
    request_head(&mut out, raw, &req, &info, &ids);
    // What goes upstream must pass ringgate's own (strict) parser.
    let mut again = [EMPTY_HEADER; 32];
    let parsed = parse_request(&out, &mut again, &LIMITS);
    assert!(matches!(parsed, Ok(Some(_))), "forwarded head does not parse ({parsed:?}): {}", show(&out));
    String::from_utf8(out).expect("ASCII head")
}

#[test]
fn forwarded_request_heads() {
    let trace_line = format!("traceparent: {TRACE}");
    let with_trace = format!("GET / HTTP/1.1\r\nHost: h\r\n{trace_line}\r\n\r\n");
    let zero_trace = "GET / HTTP/1.1\r\nHost: h\r\ntraceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n\r\n";
    let rows: &[(&str, &[u8], Option<&str>, &[&str], &[&str])] = &[
        ("request line is HTTP/1.1 with path and query", b"GET /a?b=1 HTTP/1.0\r\nHost: h\r\n\r\n", None,
            &["GET /a?b=1 HTTP/1.1", "Host: h"], &[]),
        ("strip_prefix replaces the path and keeps the query", b"GET /api/v1/users?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", Some("/users"),
            &["GET /users?x=1 HTTP/1.1"], &[]),
        ("hop-by-hop fields are dropped", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\nX-Keep: 1\r\n\r\n", None,
            &["X-Keep: 1"], &["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]),
        ("fields named in Connection are dropped, protected ones kept", b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret, cookie, Host, Authorization\r\nX-Secret: s\r\nCookie: c=1\r\nAuthorization: Bearer t\r\n\r\n", None,
            &["Host: h", "Cookie: c=1", "Authorization: Bearer t"], &["x-secret", "connection"]),
        ("Content-Length is normalised", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 005\r\nContent-Length: 5, 5\r\n\r\n", None,
            &["Content-Length: 5"], &["transfer-encoding"]),
        ("chunked is forwarded as chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n", None,
            &["Transfer-Encoding: chunked"], &["content-length"]),
        ("Expect is answered by the gateway, not forwarded", b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", None,
            &["Content-Length: 1"], &["expect"]),
        ("X-Forwarded-For is added", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None,
            &["X-Forwarded-For: 10.0.0.1"], &[]),
        ("X-Forwarded-For is appended to", b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n", None,
            &["X-Forwarded-For: 192.0.2.1, 10.0.0.1"], &[]),
        ("several X-Forwarded-For lines are merged in order", b"GET / HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1,192.0.2.2\r\nHost: h\r\nx-forwarded-for:  192.0.2.3 \r\n\r\n", None,
            &["X-Forwarded-For: 192.0.2.1,192.0.2.2, 192.0.2.3, 10.0.0.1"], &[]),
        ("X-Forwarded-Proto and X-Forwarded-Host are the gateway's", b"GET / HTTP/1.1\r\nHost: api.example:8080\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n", None,
            &["X-Forwarded-Proto: http", "X-Forwarded-Host: api.example:8080"], &[]),
        ("absolute-form: Host is the authority", b"GET http://a.example/p HTTP/1.1\r\nHost: other\r\n\r\n", None,
            &["GET /p HTTP/1.1", "Host: a.example", "X-Forwarded-Host: a.example"], &[]),
        ("a valid X-Request-Id is kept", b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc-123.x_y:z\r\n\r\n", None,
            &["X-Request-Id: abc-123.x_y:z"], &[]),
        ("an invalid X-Request-Id is replaced", b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: no spaces!\r\n\r\n", None,
            &["X-Request-Id: {id}"], &[]),
        ("duplicate X-Request-Id fields are replaced", b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n", None,
            &["X-Request-Id: {id}"], &[]),
        ("a valid traceparent is kept", with_trace.as_bytes(), None,
            &[trace_line.as_str()], &[]),
        ("a traceparent is started when missing", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None,
            &["traceparent: {traceparent}"], &[]),
        ("an invalid traceparent is replaced", zero_trace.as_bytes(), None,
            &["traceparent: {traceparent}"], &[]),
        ("other lines are copied byte for byte", b"GET / HTTP/1.1\r\nHost: h\r\nx-CUSTOM:\tvalue  with  spaces\r\nX-Empty:\r\nAccept: */*\r\n\r\n", None,
            &["x-CUSTOM:\tvalue  with  spaces", "X-Empty:", "Accept: */*"], &[]),
    ];
    for (name, raw, path, want, absent) in rows {
        let out = forward(raw, *path);
        check_lines(name, &out, want, absent);
    }
    // A replaced traceparent is a new one, not the invalid one passed through.
    assert!(!forward(zero_trace.as_bytes(), None).contains("-00000000000000000000000000000000-"));
}

fn respond(raw: &[u8], method: &str, client: Version, keep_alive: bool) -> String {
    let mut headers = [EMPTY_HEADER; 32];
    let res = parse_response(raw, &mut headers, method == "HEAD", 4096).expect("valid").expect("complete");
    let framing = client_framing(&res, client);
    let mut out = Vec::new();
    response_head(&mut out, raw, &res, framing, client, keep_alive, b"rid-1", b"");
    String::from_utf8(out).expect("ASCII head")
}

#[test]
fn client_response_heads() {
    const V11: Version = Version::Http11;
    const V10: Version = Version::Http10;
    let rows: &[(&str, &[u8], &str, Version, bool, &[&str], &[&str])] = &[
        ("status line is HTTP/1.1 with the reason kept", b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n", "GET", V11, true,
            &["HTTP/1.1 404 Not Found", "Content-Length: 0"], &["connection"]),
        ("hop-by-hop fields are dropped", b"HTTP/1.1 200 OK\r\nConnection: X-Internal, keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: close\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\nX-Internal: 1\r\nX-Keep: 1\r\nContent-Length: 0\r\n\r\n", "GET", V11, true,
            &["X-Keep: 1"], &["connection", "keep-alive", "proxy-connection", "trailer", "upgrade", "x-internal"]),
        ("Content-Length framing", b"HTTP/1.1 200 OK\r\nContent-Length: 05\r\n\r\n", "GET", V11, true,
            &["Content-Length: 5"], &["transfer-encoding"]),
        ("chunked to an HTTP/1.1 client stays chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", V11, true,
            &["Transfer-Encoding: chunked"], &["content-length"]),
        ("chunked to an HTTP/1.0 client is decoded and ends at close", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", V10, false,
            &["Connection: close"], &["content-length", "transfer-encoding"]),
        ("until-close body", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", "GET", V11, false,
            &["Connection: close", "X-A: 1"], &["content-length", "transfer-encoding"]),
        ("HEAD keeps the announced Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", "HEAD", V11, true,
            &["Content-Length: 42"], &["transfer-encoding"]),
        ("304 keeps the announced Content-Length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n", "GET", V11, true,
            &["HTTP/1.1 304 Not Modified", "Content-Length: 42"], &[]),
        ("204 gets no Content-Length", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "GET", V11, true,
            &["HTTP/1.1 204 No Content"], &["content-length", "transfer-encoding"]),
        ("keep-alive is said to an HTTP/1.0 client", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", V10, true,
            &["Connection: keep-alive"], &[]),
        ("close is said to an HTTP/1.1 client", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", V11, false,
            &["Connection: close"], &[]),
        ("the upstream's X-Request-Id is replaced", b"HTTP/1.1 200 OK\r\nX-Request-Id: up\r\nContent-Length: 0\r\n\r\n", "GET", V11, true,
            &["X-Request-Id: rid-1"], &[]),
        ("other lines are copied byte for byte", b"HTTP/1.1 200 OK\r\nSet-Cookie: a=b; Path=/\r\nx-odd:  two  spaces\r\nContent-Length: 0\r\n\r\n", "GET", V11, true,
            &["Set-Cookie: a=b; Path=/", "x-odd:  two  spaces"], &[]),
    ];
    for (name, raw, method, client, keep_alive, want, absent) in rows {
        let out = respond(raw, method, *client, *keep_alive);
        check_lines(name, &out, want, absent);
        if *client == Version::Http11 && *keep_alive {
            assert!(!out.to_ascii_lowercase().contains("\r\nconnection:"), "row `{name}`: needless Connection in\n{out}");
        }
        let mut headers = [EMPTY_HEADER; 32];
        let parsed = parse_response(out.as_bytes(), &mut headers, *method == "HEAD", 4096);
        assert!(matches!(parsed, Ok(Some(_))), "row `{name}`: written head does not parse: {out:?}");
    }
}

#[test]
fn error_responses() {
    let rows: &[(&str, u16, &str, bool, bool, Option<&[u8]>, &str)] = &[
        ("400 keeps the connection", 400, "bad_request", false, false, None, "HTTP/1.1 400 Bad Request"),
        ("431 closes", 431, "head_too_large", true, false, None, "HTTP/1.1 431 Request Header Fields Too Large"),
        ("405 with Allow", 405, "method_not_allowed", false, false, Some(b"Allow: GET, HEAD\r\n"), "HTTP/1.1 405 Method Not Allowed"),
        ("502 to a HEAD request has no body", 502, "bad_gateway", false, true, None, "HTTP/1.1 502 Bad Gateway"),
        ("414", 414, "target_too_long", true, false, None, "HTTP/1.1 414 URI Too Long"),
        ("417", 417, "expectation_failed", true, false, None, "HTTP/1.1 417 Expectation Failed"),
        ("501", 501, "not_implemented", true, false, None, "HTTP/1.1 501 Not Implemented"),
        ("505", 505, "version_not_supported", true, false, None, "HTTP/1.1 505 HTTP Version Not Supported"),
    ];
    for &(name, status, code, close, head_only, extra, status_line) in rows {
        let e = ErrorResponse {
            status,
            code,
            message: "something went wrong",
            request_id: b"rid-7",
            close,
            head_only,
            extra: extra.unwrap_or(b""),
        };
        let mut out = Vec::new();
        error_response(&mut out, &e);
        let mut headers = [EMPTY_HEADER; 16];
        let res = parse_response(&out, &mut headers, head_only, 4096).expect("valid").expect("complete");
        let head = std::str::from_utf8(&out[..res.head_len]).expect("ASCII head");
        check_lines(name, head, &["Content-Type: application/json", "X-Request-Id: rid-7"], &[]);
        assert!(head.starts_with(&format!("{status_line}\r\n")), "row `{name}`: {head}");
        assert_eq!(head.contains("\r\nConnection: close\r\n"), close, "row `{name}`: {head}");
        if let Some(x) = extra {
            assert!(head.contains(std::str::from_utf8(x).unwrap()), "row `{name}`: {head}");
        }
        let body = &out[res.head_len..];
        let declared = res.content_length.expect("Content-Length") as usize;
        if head_only {
            assert!(body.is_empty(), "row `{name}`: HEAD answer with a body");
            assert!(declared > 0, "row `{name}`: HEAD answer announces the length a GET would get");
            continue;
        }
        assert_eq!(declared, body.len(), "row `{name}`: Content-Length");
        let json: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
        assert_eq!(json["error"]["status"], status, "row `{name}`");
        assert_eq!(json["error"]["code"], code, "row `{name}`");
        assert_eq!(json["error"]["message"], "something went wrong", "row `{name}`");
        assert_eq!(json["error"]["request_id"], "rid-7", "row `{name}`");
    }
}

// ---- The llhttp corpus -----------------------------------------------------------------------
//
// `tests/data/llhttp/` holds llhttp's own test cases (markdown: a `## title`, a meta comment, an
// ```http block of raw bytes and the ```log of llhttp's events). Every case has a row below with
// the outcome ringgate must produce, as a log of what the codec saw; a case without a row, or a
// row without a case, fails the test. Where ringgate's verdict (accept or reject) differs from
// llhttp's, the row says why.

/// One case of an llhttp markdown file.
struct Case {
    /// `request/uri.md: Fragment in URI`.
    key: String,
    /// llhttp's `skipBody`: the parser is told the message has no body (a HEAD response).
    skip_body: bool,
    input: Vec<u8>,
    log: Vec<String>,
}

fn read_cases(kind: &str) -> Vec<Case> {
    let dir = format!("{}/tests/data/llhttp/{kind}", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("llhttp cases").map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files.iter().filter(|p| p.extension().is_some_and(|x| x == "md")) {
        let text = std::fs::read_to_string(path).expect("case file");
        let file = format!("{kind}/{}", path.file_name().unwrap().to_string_lossy());
        parse_cases(&file, &text, &mut cases);
    }
    assert!(!cases.is_empty(), "no cases in {dir}");
    cases
}

fn parse_cases(file: &str, text: &str, out: &mut Vec<Case>) {
    let mut title = String::new();
    let mut meta = String::new();
    let mut http: Option<String> = None;
    let mut titles = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            title = line.trim_start_matches('#').trim().to_string();
            meta.clear();
            http = None;
        } else if let Some(m) = line.strip_prefix("<!-- meta=") {
            meta = m.to_string();
        } else if line.starts_with("```http") || line.starts_with("```log") {
            // The block's text, each line with its newline, as the markdown reader hands it over.
            let block: String = lines.by_ref().take_while(|l| *l != "```").map(|l| format!("{l}\n")).collect();
            if line.starts_with("```http") {
                http = Some(block);
                continue;
            }
            let input = decode_http(http.take().unwrap_or_else(|| panic!("{file}: `{title}` has no http block")));
            // Titles repeat within a file now and then: the second `x` is `x (2)`.
            let mut key = format!("{file}: {title}");
            titles.push(key.clone());
            let same = titles.iter().filter(|t| **t == key).count();
            if same > 1 {
                key = format!("{key} ({same})");
            }
            let skip_body = meta.replace(' ', "").contains("\"skipBody\":true");
            out.push(Case { key, skip_body, input, log: block.lines().map(String::from).collect() });
        }
    }
}

/// The bytes of an ```http block, decoded as llhttp's `test/md-test.ts` does: drop the final
/// newline and backslash-newline pairs, make every newline CRLF, then expand `\r`, `\n`, `\t`,
/// `\f`, `\xHH` and octal `\NNN` escapes (characters above 0x7f become UTF-8, as in Node).
fn decode_http(block: String) -> Vec<u8> {
    let s = block.strip_suffix('\n').unwrap_or(&block).replace("\\\n", "").replace('\n', "\r\n");
    let s = s.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t").replace("\\f", "\u{c}");
    let s = expand(&s, 'x', 16, usize::MAX);
    expand(&s, '\\', 8, 3).into_bytes()
}

/// Replaces `\<mark><digits>` (or `\<digits>` when `mark` is the backslash) by the character.
fn expand(s: &str, mark: char, radix: u32, max_digits: usize) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let digits_at = if mark == '\\' { after } else { after.strip_prefix(mark).unwrap_or("") };
        let n = digits_at.chars().take(max_digits).take_while(|c| c.is_digit(radix)).count();
        if n == 0 {
            out.push('\\');
            rest = after;
            continue;
        }
        let code = u32::from_str_radix(&digits_at[..n], radix).expect("digits");
        out.push(char::from_u32(code & 0xffff).expect("character"));
        rest = &digits_at[n..];
    }
    out.push_str(rest);
    out
}

impl Case {
    /// llhttp refused the input: an error other than "data after Connection: close" (code 5,
    /// where ringgate simply closes) and the pauses for CONNECT/Upgrade/PRI (21-23).
    fn llhttp_rejects(&self) -> bool {
        self.log.iter().filter_map(|l| l.split(" error code=").nth(1)).any(|rest| {
            let code: u32 = rest.split(' ').next().unwrap().parse().unwrap();
            !matches!(code, 5 | 21..=23)
        })
    }

    /// Where llhttp saw the first head end.
    fn llhttp_head_end(&self) -> Option<usize> {
        let line = self.log.iter().find(|l| l.contains(" headers complete "))?;
        line.strip_prefix("off=")?.split(' ').next()?.parse().ok()
    }
}

fn ringgate_rejects(log: &str) -> bool {
    log.contains("error=")
}

fn body_event(data: &[u8]) -> String {
    match data.len() {
        0 => String::new(),
        1..=40 => format!(" body='{}'", show(data)),
        n => format!(" body[{n}]"),
    }
}

/// Reads the body `framing` announces from `input`: (event text, bytes used, ended cleanly).
fn body_log(input: &[u8], framing: Framing) -> (String, usize, bool) {
    match framing {
        Framing::None => (" end".into(), 0, true),
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap();
            let take = n.min(input.len());
            let end = if take == n { " end" } else { " partial" };
            (body_event(&input[..take]) + end, take, take == n)
        }
        Framing::UntilClose => (body_event(input) + " eof", input.len(), false),
        Framing::Chunked => {
            let stepped = decode_by_step(input, &[]);
            assert_eq!(stepped, decode_by_place(input, &[]), "step and decode_in_place disagree");
            match stepped {
                Body::Done { data, rest } => (body_event(&data) + " end", input.len() - rest.len(), true),
                Body::Partial { data } => (body_event(&data) + " partial", input.len(), false),
                Body::Err(e) => (format!(" chunk-error={e:?}"), input.len(), false),
            }
        }
    }
}

fn only_line_ends(b: &[u8]) -> bool {
    b.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// Parses requests one after another as a connection would, and logs what it saw.
fn request_log(input: &[u8], _skip_body: bool) -> (String, Option<usize>) {
    let limits = HeadLimits { max_head: 16 << 10, max_target: 8 << 10, max_headers: 100 };
    let mut events = Vec::new();
    let mut first_head = None;
    let mut at = 0;
    while !only_line_ends(&input[at..]) {
        let mut headers = [EMPTY_HEADER; 100];
        let head = match parse_request(&input[at..], &mut headers, &limits) {
            Ok(Some(h)) => h,
            Ok(None) => {
                events.push("partial".to_string());
                break;
            }
            Err(e) => {
                events.push(format!("error={} {}", e.status(), e.message()));
                break;
            }
        };
        first_head.get_or_insert(at + head.head_len);
        let mut ev = format!("{} {}{}", head.method, show(head.path), show(head.query));
        if head.version == Version::Http10 {
            ev += " HTTP/1.0";
        }
        if !head.target.starts_with(b"/") && head.target != b"*" {
            ev += &format!(" host={}", show(head.host));
        }
        match head.framing {
            Framing::Length(n) => ev += &format!(" len={n}"),
            Framing::Chunked => ev += " chunked",
            Framing::None | Framing::UntilClose => {}
        }
        if !head.keep_alive {
            ev += " close";
        }
        if head.expect_continue {
            ev += " 100-continue";
        }
        at += head.head_len;
        let (body, used, complete) = body_log(&input[at..], head.framing);
        events.push(ev + &body);
        at += used;
        if !complete {
            break;
        }
        if !head.keep_alive {
            if at < input.len() {
                events.push(format!("closed, {} bytes unread", input.len() - at));
            }
            break;
        }
    }
    (events.join(" | "), first_head)
}

/// Parses responses one after another (1xx, then the final one, then any that follow) and logs
/// what it saw. `head_request` answers llhttp's `skipBody`.
fn response_log(input: &[u8], head_request: bool) -> (String, Option<usize>) {
    let mut events = Vec::new();
    let mut first_head = None;
    let mut at = 0;
    while !only_line_ends(&input[at..]) {
        let mut headers = [EMPTY_HEADER; 100];
        let head = match parse_response(&input[at..], &mut headers, head_request, 16 << 10) {
            Ok(Some(h)) => h,
            Ok(None) => {
                events.push("partial".to_string());
                break;
            }
            Err(e) => {
                events.push(format!("error=502 {}", e.0));
                break;
            }
        };
        first_head.get_or_insert(at + head.head_len);
        let mut ev = head.code.to_string();
        if head.version == Version::Http10 {
            ev += " HTTP/1.0";
        }
        match head.framing {
            Framing::Length(n) => ev += &format!(" len={n}"),
            Framing::Chunked => ev += " chunked",
            Framing::UntilClose => ev += " until-close",
            Framing::None => {}
        }
        if !head.keep_alive {
            ev += " close";
        }
        at += head.head_len;
        let (body, used, complete) = body_log(&input[at..], head.framing);
        events.push(ev + &body);
        at += used;
        if !complete {
            break;
        }
        if !head.keep_alive && head.code >= 200 {
            if at < input.len() {
                events.push(format!("closed, {} bytes unread", input.len() - at));
            }
            break;
        }
    }
    (events.join(" | "), first_head)
}

/// What ringgate must make of a case.
enum Want {
    /// The log for the case's bytes as they are.
    Log(&'static str),
    /// As they are, the bytes are refused for one of the edits' reasons (a rule llhttp does not
    /// check); with the edits applied, the log.
    Edited(&'static [Edit], &'static str),
}

struct Edit {
    from: &'static str,
    to: &'static str,
    /// The refusal the edit avoids.
    refused: &'static str,
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400. Many llhttp cases have none.
const ADD_HOST: Edit = Edit { from: " HTTP/1.1\r\n", to: " HTTP/1.1\r\nHost: example.com\r\n", refused: "missing Host header" };
/// RFC 9112 §3.2: a request-target has no fragment. Several llhttp cases send `#hey`.
const DROP_FRAGMENT: Edit = Edit { from: "#hey", to: "", refused: "fragment in request target" };

fn log(expected: &'static str) -> Want {
    Want::Log(expected)
}

fn host(expected: &'static str) -> Want {
    Want::Edited(&[ADD_HOST], expected)
}

fn no_fragment(expected: &'static str) -> Want {
    Want::Edited(&[DROP_FRAGMENT, ADD_HOST], expected)
}

type Runner = fn(&[u8], bool) -> (String, Option<usize>);

fn check_corpus(kind: &str, rows: &[(&str, Want, &str)], run: Runner) {
    let cases = read_cases(kind);
    let mut failures = Vec::new();
    let mut missing = Vec::new();
    for case in &cases {
        let Some((_, want, why)) = rows.iter().find(|(key, ..)| *key == case.key) else {
            let (got, _) = run(&case.input, case.skip_body);
            missing.push(format!("(\"{}\", log({got:?}), \"\"),", case.key));
            continue;
        };
        let (got, head_end) = run(&case.input, case.skip_body);
        let verdict = match want {
            Want::Log(expected) => {
                if got != *expected {
                    failures.push(format!("{}:\n    want {expected}\n    got  {got}", case.key));
                }
                if let (Some(ours), Some(theirs)) = (head_end, case.llhttp_head_end()) {
                    if ours != theirs {
                        failures.push(format!("{}: head ends at {ours}, llhttp says {theirs}", case.key));
                    }
                }
                got
            }
            Want::Edited(edits, expected) => {
                let reasons: Vec<String> = edits.iter().map(|e| format!("error=400 {}", e.refused)).collect();
                if !reasons.contains(&got) {
                    failures.push(format!("{}: as given, want one of {reasons:?}, got {got}", case.key));
                }
                let mut text = String::from_utf8(case.input.clone()).expect("edited cases are UTF-8");
                for e in edits.iter() {
                    if !text.contains(e.from) {
                        failures.push(format!("{}: edit `{}` does not apply", case.key, e.from.escape_debug()));
                    }
                    text = text.replace(e.from, e.to);
                }
                let (edited, _) = run(text.as_bytes(), case.skip_body);
                if edited != *expected {
                    failures.push(format!("{} (edited):\n    want {expected}\n    got  {edited}", case.key));
                }
                edited
            }
        };
        if ringgate_rejects(&verdict) != case.llhttp_rejects() && why.is_empty() {
            let (ours, theirs) = if case.llhttp_rejects() { ("accepts", "rejects") } else { ("rejects", "accepts") };
            failures.push(format!("{}: ringgate {ours}, llhttp {theirs}; the row must say why", case.key));
        }
    }
    for (key, ..) in rows {
        if !cases.iter().any(|c| c.key == *key) {
            failures.push(format!("row `{key}` matches no case"));
        }
    }
    if !missing.is_empty() {
        failures.push(format!("cases without a row:\n{}", missing.join("\n")));
    }
    assert!(failures.is_empty(), "{} llhttp {kind} problems:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn llhttp_markdown_decoding() {
    let rows: &[(&str, &[u8])] = &[
        ("GET / HTTP/1.1\n\n\n", b"GET / HTTP/1.1\r\n\r\n"),
        ("a\\\nb\n", b"ab"),
        ("Foo\\01\\test\\r\\n\n", b"Foo\x01\test\r\n"),
        ("\\xffV\\065\\x20\n", "\u{ff}V5 ".as_bytes()),
        ("keep\\ralive\\f\n", b"keep\ralive\x0c"),
    ];
    for (block, want) in rows {
        assert_eq!(decode_http(block.to_string()), *want, "{block:?}");
    }
}

#[test]
fn llhttp_request_cases() {
    check_corpus("request", &request_cases(), request_log);
}

#[test]
fn llhttp_response_cases() {
    check_corpus("response", &response_cases(), response_log);
}

// Reasons shared by several rows.
const LENIENT: &str = "llhttp accepts this only in a lenient mode; ringgate has none";
const BARE_LF: &str = "bare LF line ending: RFC 9112 §2.2 allows it, ringgate refuses it as llhttp's strict mode does";
const METHOD_TOKEN: &str = "a method is any token (RFC 9110 §9.1); routes, not the codec, decide which are served";
const UPGRADE: &str = "ringgate does not switch protocols (Upgrade is hop-by-hop and dropped); what follows the head is read as the next request";
const NOT_HTTP1: &str = "only HTTP/1.0 and HTTP/1.1 are spoken";
const HEAD_UNFINISHED: &str = "the case ends before its head does; ringgate judges framing on the complete head (the request table covers the value)";
const CODING_UNDER_CHUNKED: &str = "codings under chunked are not implemented: 501 (RFC 9112 §6.1)";

fn request_cases() -> Vec<(&'static str, Want, &'static str)> {
    vec![
        // connection.md
        ("request/connection.md: Setting flag", host("PUT /url end"), ""),
        ("request/connection.md: Restarting when keep-alive is explicitly", host("PUT /url end | PUT /url end"), ""),
        ("request/connection.md: No restart when keep-alive is off (1.0)", log("PUT /url HTTP/1.0 close end | closed, 21 bytes unread"), ""),
        ("request/connection.md: Resetting flags when keep-alive is off (1.0, lenient)", log("PUT /url HTTP/1.0 close end | closed, 49 bytes unread"), "lenient keep-alive: ringgate closes after a non-persistent request, as strict llhttp does"),
        ("request/connection.md: CRLF between requests, implicit `keep-alive`", log("POST / len=4 body='q=42' end | partial"), ""),
        ("request/connection.md: Not treating `\\r` as `-`", log("error=400 invalid header value"), ""),
        ("request/connection.md: Setting flag on `close`", host("PUT /url close end"), ""),
        ("request/connection.md: Setting flag on `close` followed by tab", host("PUT /url close end"), ""),
        ("request/connection.md: CRLF between requests, explicit `close`", log("POST / len=4 close body='q=42' end | closed, 18 bytes unread"), ""),
        ("request/connection.md: CRLF between requests, explicit `close` followed by tab", log("POST / len=4 close body='q=42' end | closed, 18 bytes unread"), ""),
        ("request/connection.md: CRLF between requests, explicit `close` (lenient)", log("POST / len=4 close body='q=42' end | closed, 18 bytes unread"), "lenient keep-alive: ringgate closes after `Connection: close`, as strict llhttp does"),
        ("request/connection.md: Sample", host("PUT /url close end"), ""),
        ("request/connection.md: Multiple tokens with folding", log("error=400 invalid header name"), LENIENT),
        ("request/connection.md: Multiple tokens with folding and LWS", host("GET /demo end | error=400 invalid HTTP version"), UPGRADE),
        ("request/connection.md: Multiple tokens with folding, LWS, and CRLF", log("error=400 invalid header name"), LENIENT),
        ("request/connection.md: Invalid whitespace token with `Connection` header field", log("error=400 invalid header name"), ""),
        ("request/connection.md: Invalid whitespace token with `Connection` header field (lenient)", log("error=400 invalid header name"), LENIENT),
        ("request/connection.md: Setting a flag and pausing", host("PUT /url end"), ""),
        ("request/connection.md: Emitting part of body and pausing", host("PUT /url len=4 body='abcd' end | partial"), UPGRADE),
        ("request/connection.md: Upgrade GET request", log("GET /demo end | error=400 invalid HTTP version"), UPGRADE),
        ("request/connection.md: Upgrade POST request", log("POST /demo len=15 body='sweet post body' end | error=400 invalid HTTP version"), UPGRADE),
        // content-length.md
        ("request/content-length.md: `Content-Length` with zeroes", host("PUT /url len=3 body='abc' end"), ""),
        ("request/content-length.md: `Content-Length` with follow-up headers", host("PUT /url len=3 body='abc' end"), ""),
        ("request/content-length.md: Error on `Content-Length` overflow", log("partial"), HEAD_UNFINISHED),
        ("request/content-length.md: Error on duplicate `Content-Length`", log("partial"), HEAD_UNFINISHED),
        ("request/content-length.md: Error on simultaneous `Content-Length` and `Transfer-Encoding: identity`", host("error=400 both Transfer-Encoding and Content-Length"), ""),
        ("request/content-length.md: Invalid whitespace token with `Content-Length` header field", log("error=400 invalid header name"), ""),
        ("request/content-length.md: Invalid whitespace token with `Content-Length` header field (lenient)", log("error=400 invalid header name"), LENIENT),
        ("request/content-length.md: No error on simultaneous `Content-Length` and `Transfer-Encoding: identity` (lenient)", host("error=400 both Transfer-Encoding and Content-Length"), LENIENT),
        ("request/content-length.md: Funky `Content-Length` with body", log("GET /get_funky_content_length_body_hello HTTP/1.0 len=5 close body='HELLO' end"), ""),
        ("request/content-length.md: Spaces in `Content-Length` (surrounding)", host("POST / len=42 partial"), ""),
        ("request/content-length.md: Tabs in `Content-Length` (surrounding)", host("POST / len=42 partial"), ""),
        ("request/content-length.md: Spaces in `Content-Length` #2", log("error=400 invalid Content-Length"), ""),
        ("request/content-length.md: Spaces in `Content-Length` #3", log("error=400 invalid Content-Length"), ""),
        ("request/content-length.md: Empty `Content-Length`", log("error=400 invalid Content-Length"), ""),
        ("request/content-length.md: `Content-Length` with CR instead of dash", log("error=400 invalid header name"), ""),
        ("request/content-length.md: Content-Length reset when no body is received", host("PUT /url len=123 body[62] partial"), "skipBody is llhttp's HEAD-response hook; a request's declared body is always read"),
        ("request/content-length.md: Missing CRLF-CRLF before body", log("error=400 invalid line ending"), ""),
        ("request/content-length.md: Missing CRLF-CRLF before body (lenient)", log("error=400 invalid line ending"), LENIENT),
        // finish.md
        ("request/finish.md: It should be safe to finish after GET request", host("GET / end"), ""),
        ("request/finish.md: It should be unsafe to finish after incomplete PUT request", log("partial"), ""),
        ("request/finish.md: It should be unsafe to finish inside of the header", log("partial"), ""),
        // invalid.md
        ("request/invalid.md: ICE protocol and GET method", log("error=400 invalid HTTP version"), ""),
        ("request/invalid.md: ICE protocol, but not really", log("error=400 invalid HTTP version"), ""),
        ("request/invalid.md: RTSP protocol and PUT method", log("error=400 invalid HTTP version"), ""),
        ("request/invalid.md: HTTP protocol and ANNOUNCE method", log("ANNOUNCE /music/sweet/music HTTP/1.0 close end"), METHOD_TOKEN),
        ("request/invalid.md: Headers separated by CR", log("error=400 invalid header value"), ""),
        ("request/invalid.md: Headers separated by LF", log("error=400 bare LF line ending"), ""),
        ("request/invalid.md: Headers separated by dummy characters", log("error=400 invalid line ending"), ""),
        ("request/invalid.md: Headers separated by dummy characters (lenient)", log("error=400 invalid line ending"), LENIENT),
        ("request/invalid.md: Empty headers separated by CR", log("error=400 invalid header value"), ""),
        ("request/invalid.md: Empty headers separated by LF", log("error=400 bare LF line ending"), ""),
        ("request/invalid.md: Invalid header token #1", log("error=400 invalid header name"), ""),
        ("request/invalid.md: Invalid header token #2", log("error=400 invalid header name"), ""),
        ("request/invalid.md: Invalid header token #3", log("error=400 invalid header name"), ""),
        ("request/invalid.md: Invalid method", host("MKCOLA / end"), METHOD_TOKEN),
        ("request/invalid.md: Illegal header field name line folding", log("error=400 invalid header name"), ""),
        ("request/invalid.md: Corrupted Connection header", log("error=400 invalid header name"), ""),
        ("request/invalid.md: Corrupted header name", log("error=400 invalid header name"), ""),
        ("request/invalid.md: Missing CR between headers", log("error=400 bare LF line ending"), ""),
        ("request/invalid.md: Invalid HTTP version", log("error=505 HTTP version not supported"), ""),
        ("request/invalid.md: Invalid space after start line", log("error=400 invalid header name"), ""),
        ("request/invalid.md: Only LFs present", log("error=400 bare LF line ending"), ""),
        ("request/invalid.md: Only LFs present (lenient)", log("error=400 bare LF line ending"), BARE_LF),
        ("request/invalid.md: Spaces before headers", log("error=400 invalid header name"), ""),
        ("request/invalid.md: Spaces before headers (lenient)", log("error=400 invalid header name"), LENIENT),
        // method.md
        ("request/method.md: REPORT request", host("REPORT /test end"), ""),
        ("request/method.md: CONNECT request", log("error=501 method or request form not implemented"), "CONNECT tunnels are not served by a reverse proxy: 501"),
        ("request/method.md: CONNECT request with CAPS", log("error=501 method or request form not implemented"), "CONNECT tunnels are not served by a reverse proxy: 501"),
        ("request/method.md: CONNECT with body", log("error=501 method or request form not implemented"), "CONNECT tunnels are not served by a reverse proxy: 501"),
        ("request/method.md: M-SEARCH request", log("error=400 asterisk-form target is only for OPTIONS"), "the asterisk-form is for OPTIONS only (RFC 9112 §3.2.4); M-SEARCH is SSDP, not HTTP"),
        ("request/method.md: PATCH request", log("PATCH /file.txt len=10 body='cccccccccc' end"), ""),
        ("request/method.md: PURGE request", log("PURGE /file.txt end"), ""),
        ("request/method.md: SEARCH request", log("SEARCH / end"), ""),
        ("request/method.md: LINK request", log("LINK /images/my_dog.jpg end"), ""),
        ("request/method.md: LINK request (2)", log("UNLINK /images/my_dog.jpg end"), ""),
        ("request/method.md: SOURCE request", log("SOURCE /music/sweet/music end"), ""),
        ("request/method.md: SOURCE request with ICE", log("error=400 invalid HTTP version"), NOT_HTTP1),
        ("request/method.md: OPTIONS request with RTSP", log("error=400 invalid HTTP version"), NOT_HTTP1),
        ("request/method.md: ANNOUNCE request with RTSP", log("error=400 invalid HTTP version"), NOT_HTTP1),
        ("request/method.md: PRI request HTTP2", log("error=400 asterisk-form target is only for OPTIONS"), "`PRI *` is the HTTP/2 preface; here it claims HTTP/1.1, and the asterisk-form is for OPTIONS only"),
        ("request/method.md: QUERY request", log("QUERY /contacts len=41 body[41] end"), ""),
        // pipelining.md
        ("request/pipelining.md: Should parse multiple events", host("POST /aaa len=3 body='AAA' end | PUT /bbb len=4 body='BBBB' end | PATCH /ccc len=5 body='CCCC' partial"), ""),
        // sample.md
        ("request/sample.md: Simple request", host("OPTIONS /url end"), ""),
        ("request/sample.md: Request with method starting with `H`", host("HEAD /url end"), ""),
        ("request/sample.md: curl GET", log("GET /test end"), ""),
        ("request/sample.md: Firefox GET", log("GET /favicon.ico end"), ""),
        ("request/sample.md: DUMBPACK", host("GET /dumbpack end"), ""),
        ("request/sample.md: No headers and no body", host("GET /get_no_headers_no_body/world end"), ""),
        ("request/sample.md: One header and no body", host("GET /get_one_header_no_body end"), ""),
        ("request/sample.md: Apache bench GET", log("GET /test HTTP/1.0 close end"), ""),
        ("request/sample.md: Prefix newline", host("GET /test end"), ""),
        ("request/sample.md: No HTTP version", log("error=400 invalid method or request target"), "HTTP/0.9 requests are not served"),
        ("request/sample.md: Line folding in header value with CRLF", log("error=400 invalid header name"), LENIENT),
        ("request/sample.md: Line folding in header value with LF", log("error=400 invalid header name"), ""),
        ("request/sample.md: No LF after CR", log("error=400 invalid line ending"), ""),
        ("request/sample.md: No LF after CR (lenient)", log("error=400 invalid line ending"), LENIENT),
        ("request/sample.md: Request starting with CRLF", host("GET /url end"), ""),
        ("request/sample.md: Extended Characters", host("GET / end"), ""),
        ("request/sample.md: 255 ASCII in header value", host("OPTIONS /url end"), ""),
        ("request/sample.md: X-SSL-Nonsense", log("error=400 invalid header name"), LENIENT),
        // transfer-encoding.md
        ("request/transfer-encoding.md: Parsing and setting flag", host("PUT /url chunked partial"), ""),
        ("request/transfer-encoding.md: Parse chunks with lowercase size", host("PUT /url chunked body='0123456789' end"), ""),
        ("request/transfer-encoding.md: Parse chunks with uppercase size", host("PUT /url chunked body='0123456789' end"), ""),
        ("request/transfer-encoding.md: POST with `Transfer-Encoding: chunked`", host("POST /post_chunked_all_your_base chunked body='all your base are belong to us' end"), ""),
        ("request/transfer-encoding.md: Two chunks and triple zero prefixed end chunk", host("POST /two_chunks_mult_zero_end chunked body='hello world' end"), ""),
        ("request/transfer-encoding.md: Trailing headers", host("POST /chunked_w_trailing_headers chunked body='hello world' end"), ""),
        ("request/transfer-encoding.md: Chunk extensions", host("POST /chunked_w_unicorns_after_length chunked body='hello world' partial"), ""),
        ("request/transfer-encoding.md: No semicolon before chunk extensions", log("POST /chunked_w_unicorns_after_length chunked chunk-error=BadSize"), ""),
        ("request/transfer-encoding.md: No extension after semicolon", log("POST /chunked_w_unicorns_after_length chunked chunk-error=BadExtension"), ""),
        ("request/transfer-encoding.md: Chunk extensions quoting", host("POST /chunked_w_unicorns_after_length chunked body='hello world' partial"), ""),
        ("request/transfer-encoding.md: Unbalanced chunk extensions quoting", host("POST /chunked_w_unicorns_after_length chunked chunk-error=BadExtension"), ""),
        ("request/transfer-encoding.md: Ignoring `pigeons`", host("error=501 unsupported transfer coding"), ""),
        ("request/transfer-encoding.md: POST with `Transfer-Encoding` and `Content-Length`", no_fragment("error=400 both Transfer-Encoding and Content-Length"), ""),
        ("request/transfer-encoding.md: POST with `Transfer-Encoding` and `Content-Length` (lenient)", no_fragment("error=400 both Transfer-Encoding and Content-Length"), LENIENT),
        ("request/transfer-encoding.md: POST with empty `Transfer-Encoding` and `Content-Length` (lenient)", log("error=400 empty Transfer-Encoding"), ""),
        ("request/transfer-encoding.md: POST with `chunked` before other transfer coding names", no_fragment("error=400 final transfer coding is not chunked"), ""),
        ("request/transfer-encoding.md: POST with `chunked` and duplicate transfer-encoding", no_fragment("error=400 final transfer coding is not chunked"), ""),
        ("request/transfer-encoding.md: POST with `chunked` before other transfer-coding (lenient)", no_fragment("error=400 final transfer coding is not chunked"), LENIENT),
        ("request/transfer-encoding.md: POST with `chunked` and duplicate transfer-encoding (lenient)", no_fragment("error=400 final transfer coding is not chunked"), LENIENT),
        ("request/transfer-encoding.md: POST with `chunked` as last transfer-encoding", no_fragment("error=501 unsupported transfer coding"), CODING_UNDER_CHUNKED),
        ("request/transfer-encoding.md: POST with `chunked` as last transfer-encoding (multiple headers)", no_fragment("error=501 unsupported transfer coding"), CODING_UNDER_CHUNKED),
        ("request/transfer-encoding.md: POST with `chunkedchunked` as transfer-encoding", no_fragment("error=501 unsupported transfer coding"), ""),
        ("request/transfer-encoding.md: Missing last-chunk", host("PUT /url chunked chunk-error=BadSize"), ""),
        ("request/transfer-encoding.md: Validate chunk parameters", host("PUT /url chunked chunk-error=BadSize"), ""),
        ("request/transfer-encoding.md: Invalid OBS fold after chunked value", log("error=400 invalid header name"), LENIENT),
        ("request/transfer-encoding.md: Chunk header not terminated by CRLF", log("GET / chunked close chunk-error=MissingCrlf"), ""),
        ("request/transfer-encoding.md: Chunk header not terminated by CRLF (lenient)", log("GET / chunked close chunk-error=MissingCrlf"), LENIENT),
        ("request/transfer-encoding.md: Chunk data not terminated by CRLF", log("GET / chunked close chunk-error=MissingCrlf"), ""),
        ("request/transfer-encoding.md: Chunk data not terminated by CRLF (lenient)", log("GET / chunked close chunk-error=MissingCrlf"), LENIENT),
        ("request/transfer-encoding.md: Space after chunk header", host("PUT /url chunked chunk-error=BadSize"), ""),
        ("request/transfer-encoding.md: Space after chunk header (lenient)", host("PUT /url chunked chunk-error=BadSize"), LENIENT),
        // uri.md
        ("request/uri.md: Quotes in URI", host(r#"GET /with_\"lovely\"_quotes?foo=\\\"bar\\\" end"#), ""),
        ("request/uri.md: Query URL with question mark", host("GET /test.cgi?foo=bar?baz end"), ""),
        ("request/uri.md: Host terminated by a query string", host("GET /?hail=all host=hypnotoad.org end"), ""),
        ("request/uri.md: `host:port` terminated by a query string", host("GET /?hail=all host=hypnotoad.org:1234 end"), ""),
        ("request/uri.md: Query URL with vertical bar character", host("GET /test.cgi?query=| end"), ""),
        ("request/uri.md: `host:port` terminated by a space", host("GET / host=hypnotoad.org:1234 end"), ""),
        ("request/uri.md: Disallow UTF-8 in URI path in strict mode", log("error=400 invalid request target"), ""),
        ("request/uri.md: Fragment in URI", log("error=400 fragment in request target"), "a request-target has no fragment (RFC 9112 §3.2); forwarding one would be guessing"),
        ("request/uri.md: Underscore in hostname", log("error=501 method or request form not implemented"), "CONNECT tunnels are not served by a reverse proxy: 501"),
        ("request/uri.md: `host:port` and basic auth", log("error=400 invalid authority in request target"), "userinfo in a target is an error (RFC 9110 §4.2.4)"),
        ("request/uri.md: Space in URI", log("error=400 invalid HTTP version"), ""),
    ]
}

const UPGRADE_RESPONSE: &str = "ringgate never asks to switch protocols and refuses any 101 (proxy.rs); what follows is read as a response";

fn response_cases() -> Vec<(&'static str, Want, &'static str)> {
    vec![
        // connection.md
        ("response/connection.md: Proxy-Connection", log("200 len=11 body='hello world' end"), "Proxy-Connection is dropped as hop-by-hop but does not decide reuse; only Connection does"),
        ("response/connection.md: HTTP/1.0 with keep-alive and EOF-terminated 200 status", log("200 HTTP/1.0 until-close close body='HTTP/1.0 200 OK' eof"), ""),
        ("response/connection.md: HTTP/1.0 with keep-alive and 204 status", log("204 HTTP/1.0 end | partial"), ""),
        ("response/connection.md: HTTP/1.1 with EOF-terminated 200 status", log("200 until-close close body='HTTP/1.1 200 OK' eof"), ""),
        ("response/connection.md: HTTP/1.1 with 204 status", log("204 end | partial"), ""),
        ("response/connection.md: HTTP/1.1 with keep-alive disabled and 204 status", log("204 close end | closed, 15 bytes unread"), ""),
        ("response/connection.md: HTTP/1.1 with keep-alive disabled, content-length (lenient)", log("200 len=5 close body='2ad73' end | closed, 31 bytes unread"), "lenient data-after-close: ringgate stops reading at close, as strict llhttp does"),
        ("response/connection.md: HTTP/1.1 with keep-alive disabled, content-length", log("200 len=5 close body='2ad73' end | closed, 31 bytes unread"), ""),
        ("response/connection.md: HTTP/1.1 with keep-alive disabled and 204 status (lenient)", log("204 close end | closed, 15 bytes unread"), "lenient keep-alive: ringgate stops reading at close, as strict llhttp does"),
        ("response/connection.md: HTTP 101 response with Upgrade and Content-Length header", log("101 end | error=502 invalid HTTP version"), UPGRADE_RESPONSE),
        ("response/connection.md: HTTP 101 response with Upgrade and Transfer-Encoding header", log("101 end | error=502 invalid HTTP version"), UPGRADE_RESPONSE),
        ("response/connection.md: HTTP 200 response with Upgrade header", log("200 until-close close body='body' eof"), ""),
        ("response/connection.md: HTTP 200 response with Upgrade header and Content-Length", log("200 len=4 body='body' end"), ""),
        ("response/connection.md: HTTP 200 response with Upgrade header and Transfer-Encoding", log("200 chunked body='body' end"), ""),
        ("response/connection.md: HTTP 304 with Content-Length", log("304 end | 200 len=5 body='hello' end"), ""),
        ("response/connection.md: HTTP 304 with Transfer-Encoding", log("304 end | 200 chunked body='hello' partial"), ""),
        ("response/connection.md: HTTP 100 first, then 400", log("100 end | 404 len=14 body='404: Not Found' end"), ""),
        ("response/connection.md: HTTP 103 first, then 200", log("103 end | 200 len=17 body='response content' partial"), ""),
        // content-length.md
        ("response/content-length.md: Response without `Content-Length`, but with body", log("200 until-close close body[317] eof"), ""),
        ("response/content-length.md: Content-Length-X", log("200 chunked body='OK' end"), ""),
        ("response/content-length.md: Content-Length reset when no body is received", log("200 end | 200 end"), ""),
        ("response/content-length.md: Tabs in `Content-Length` (surrounding)", log("200 len=42 partial"), ""),
        // finish.md
        ("response/finish.md: It should be safe to finish with cb after empty response", log("200 until-close close eof"), ""),
        // invalid.md
        ("response/invalid.md: Incomplete HTTP protocol", log("error=502 invalid HTTP version"), ""),
        ("response/invalid.md: Extra digit in HTTP major version", log("error=502 invalid HTTP version"), ""),
        ("response/invalid.md: Extra digit in HTTP major version #2", log("error=502 invalid HTTP version"), ""),
        ("response/invalid.md: Extra digit in HTTP minor version", log("error=502 invalid HTTP version"), ""),
        ("response/invalid.md: Tab after HTTP version", log("error=502 invalid HTTP version"), ""),
        ("response/invalid.md: CR before response and tab after HTTP version", log("error=502 invalid line ending"), ""),
        ("response/invalid.md: Headers separated by CR", log("error=502 invalid header value"), ""),
        ("response/invalid.md: Bare CR after response line", log("error=502 invalid status"), ""),
        ("response/invalid.md: Bare CR after response line (lenient)", log("error=502 invalid status"), LENIENT),
        ("response/invalid.md: Bare CR followed by CR after response line", log("error=502 invalid status"), ""),
        ("response/invalid.md: Invalid HTTP version", log("error=502 invalid HTTP version"), ""),
        ("response/invalid.md: Invalid space after start line", log("error=502 invalid header name"), ""),
        ("response/invalid.md: Extra space between HTTP version and status code", log("error=502 invalid status"), ""),
        ("response/invalid.md: Extra space between status code and reason", log("200 until-close close eof"), ""),
        ("response/invalid.md: One-digit status code", log("error=502 invalid status"), ""),
        ("response/invalid.md: Only LFs present and no body", log("error=502 bare LF line ending"), ""),
        ("response/invalid.md: Only LFs present and no body (lenient)", log("error=502 bare LF line ending"), BARE_LF),
        ("response/invalid.md: Only LFs present", log("error=502 bare LF line ending"), ""),
        ("response/invalid.md: Only LFs present (lenient)", log("error=502 bare LF line ending"), BARE_LF),
        // pipelining.md
        ("response/pipelining.md: Should parse multiple events", log("200 len=3 body='AAA' end | 201 len=4 body='BBBB' end | 202 len=5 body='CCCC' partial"), ""),
        // sample.md
        ("response/sample.md: Simple response", log("200 len=0 end"), ""),
        ("response/sample.md: RTSP response", log("error=502 invalid HTTP version"), NOT_HTTP1),
        ("response/sample.md: ICE response", log("error=502 invalid HTTP version"), NOT_HTTP1),
        ("response/sample.md: Error on invalid response start", log("error=502 invalid HTTP version"), ""),
        ("response/sample.md: Empty body should not trigger spurious span callbacks", log("200 until-close close eof"), ""),
        ("response/sample.md: Google 301", log("301 len=219 body[213] partial"), ""),
        ("response/sample.md: amazon.com", log(r"301 chunked body='\n' end"), ""),
        ("response/sample.md: No headers and no body", log("404 until-close close eof"), ""),
        ("response/sample.md: No reason phrase", log("301 until-close close eof"), ""),
        ("response/sample.md: Empty reason phrase after space", log("200 until-close close eof"), ""),
        ("response/sample.md: No carriage ret", log("error=502 bare LF line ending"), ""),
        ("response/sample.md: No carriage ret (lenient)", log("error=502 bare LF line ending"), BARE_LF),
        ("response/sample.md: Underscore in header key", log("200 len=0 end"), ""),
        ("response/sample.md: bonjourmadame.fr", log("301 HTTP/1.0 len=0 end"), ""),
        ("response/sample.md: Spaces in header value", log("200 chunked close end"), ""),
        ("response/sample.md: Spaces in header name", log("error=502 invalid header name"), ""),
        ("response/sample.md: Non ASCII in status line", log("500 len=0 close end"), ""),
        ("response/sample.md: HTTP version 0.9", log("error=502 invalid HTTP version"), NOT_HTTP1),
        ("response/sample.md: No Content-Length, no Transfer-Encoding", log("200 until-close close body='hello world' eof"), ""),
        ("response/sample.md: Response starting with CRLF", log("200 len=0 end"), ""),
        // transfer-encoding.md
        ("response/transfer-encoding.md: Trailing space on chunked body", log("200 chunked chunk-error=BadSize"), ""),
        ("response/transfer-encoding.md: `chunked` before other transfer-encoding", log("error=502 unsupported transfer coding in response"), "a coding other than chunked would reach the client unlabelled after re-framing"),
        ("response/transfer-encoding.md: multiple transfer-encoding where chunked is not the last one", log("error=502 unsupported transfer coding in response"), "a coding other than chunked would reach the client unlabelled after re-framing"),
        ("response/transfer-encoding.md: `chunkedchunked` transfer-encoding does not enable chunked enconding", log("error=502 unsupported transfer coding in response"), "an unknown coding would reach the client unlabelled after re-framing"),
        ("response/transfer-encoding.md: Chunk extensions", log("200 chunked body='hello world' end"), ""),
        ("response/transfer-encoding.md: No semicolon before chunk extensions", log("200 chunked chunk-error=BadSize"), ""),
        ("response/transfer-encoding.md: No extension after semicolon", log("200 chunked chunk-error=BadExtension"), ""),
        ("response/transfer-encoding.md: Chunk extensions quoting", log("200 chunked body='hello world' partial"), ""),
        ("response/transfer-encoding.md: Unbalanced chunk extensions quoting", log("200 chunked chunk-error=BadExtension"), ""),
        ("response/transfer-encoding.md: Invalid OBS fold after chunked value", log("error=502 invalid header name"), LENIENT),
    ]
}

/// Found by the `parse_request` fuzz target: a long method used to count toward `max_target`
/// while the request line was incomplete, so the verdict depended on how the bytes arrived.
#[test]
fn long_method_counts_toward_the_head_not_the_target() {
    let limits = HeadLimits { max_head: 16 << 10, max_target: 2 << 10, max_headers: 100 };
    let head = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "A".repeat(2100));
    let bytes = head.as_bytes();
    for cut in 0..bytes.len() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let r = parse_request(&bytes[..cut], &mut headers, &limits);
        assert!(matches!(r, Ok(None)), "prefix of {cut} bytes: {r:?}");
    }
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let r = parse_request(bytes, &mut headers, &limits).expect("valid").expect("complete");
    assert_eq!(r.method.len(), 2100);
}

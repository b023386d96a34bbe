//! The head writers and JSON error responses.

use super::*;


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
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; 32];
    let req = parse_request(raw, &mut headers, &LIMITS).expect("valid").expect("complete");
    let ids = Ids::new(7);
    let id = crate::http::write::request_id(&req, &ids);
    let info = ForwardInfo {
        client_ip: b"10.0.0.1",
        proto: b"http",
        request_id: id.as_bytes(),
        path: path.map_or(req.path, str::as_bytes),
        query: req.query,
        edits: None,
        framing: req.framing,
        strip: &[],
        extra: b"",
        default_host: b"svc",
        strip_conditionals: false,
    };
    let mut out = Vec::new();
    request_head(&mut out, raw, &req, &info, &ids);
    // What goes upstream must pass ringgate's own (strict) parser.
    let mut again = [const { std::mem::MaybeUninit::uninit() }; 32];
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
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; 32];
    let res = parse_response(raw, &mut headers, method == "HEAD", 4096).expect("valid").expect("complete");
    let framing = client_framing(&res, client);
    let mut out = Vec::new();
    response_head(&mut out, raw, &res, framing, client, keep_alive, b"rid-1", b"", None);
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
        ("until-close body is re-chunked for an HTTP/1.1 client", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", "GET", V11, true,
            &["Transfer-Encoding: chunked", "X-A: 1"], &["content-length", "connection"]),
        ("until-close body to an HTTP/1.0 client ends at close", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", "GET", V10, false,
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
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; 32];
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
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; 16];
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


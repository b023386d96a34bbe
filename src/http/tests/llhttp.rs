//! `tests/data/llhttp/` holds llhttp's own test cases (markdown: a `## title`, a meta comment, an
//! ```http block of raw bytes and the ```log of llhttp's events). Every case has a row below with
//! the outcome ringgate must produce, as a log of what the codec saw; a case without a row, or a
//! row without a case, fails the test. Where ringgate's verdict (accept or reject) differs from
//! llhttp's, the row says why.

use super::*;

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
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; 100];
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
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; 100];
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



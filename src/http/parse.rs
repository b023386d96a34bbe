//! Request and response heads: `httparse` over the connection buffer, then the framing decisions
//! of RFC 9112 §6. Results borrow the buffer; nothing here allocates.

use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the connection closes.
    UntilClose,
}

/// Why a head was refused. `status()` gives the response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Header section over the limit, or too many fields.
    HeadTooLarge,
    TargetTooLong,
    /// Syntax or framing the RFC forbids or that could be read two ways.
    Malformed(&'static str),
    VersionNotSupported,
    /// A transfer coding other than a lone `chunked`.
    UnsupportedCoding,
    UnsupportedExpectation,
    /// CONNECT and other forms a reverse proxy does not serve.
    NotImplemented,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::HeadTooLarge => 431,
            HeadError::TargetTooLong => 414,
            HeadError::Malformed(_) => 400,
            HeadError::VersionNotSupported => 505,
            HeadError::UnsupportedCoding => 501,
            HeadError::UnsupportedExpectation => 417,
            HeadError::NotImplemented => 501,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            HeadError::HeadTooLarge => "request header section too large",
            HeadError::TargetTooLong => "request target too long",
            HeadError::Malformed(why) => why,
            HeadError::VersionNotSupported => "HTTP version not supported",
            HeadError::UnsupportedCoding => "unsupported transfer coding",
            HeadError::UnsupportedExpectation => "unsupported expectation",
            HeadError::NotImplemented => "method or request form not implemented",
        }
    }
}

/// Names listed in a `Connection` header (hop-by-hop fields to drop), bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnTokens<'b> {
    names: [&'b [u8]; MAX_CONN_TOKENS],
    len: usize,
}

pub const MAX_CONN_TOKENS: usize = 16;

impl<'b> ConnTokens<'b> {
    fn new() -> Self {
        ConnTokens { names: [&[]; MAX_CONN_TOKENS], len: 0 }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.names[..self.len].iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// What the `Connection` header said, plus the names it listed.
#[derive(Debug, Clone, Copy)]
struct ConnectionInfo<'b> {
    close: bool,
    keep_alive: bool,
    tokens: ConnTokens<'b>,
}

#[derive(Debug)]
pub struct RequestHead<'b, 'h> {
    pub method: &'b str,
    pub version: Version,
    /// The full request-target as sent.
    pub target: &'b [u8],
    /// Path part used for routing and forwarding (origin-form), without the query.
    pub path: &'b [u8],
    /// `?...` including the question mark, or empty.
    pub query: &'b [u8],
    pub headers: &'h [Header<'b>],
    /// Bytes of request line plus header section, including the final CRLF.
    pub head_len: usize,
    /// Host from the absolute-form target or the Host header, port included, as sent.
    pub host: &'b [u8],
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub conn_tokens: ConnTokens<'b>,
}

#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    pub version: Version,
    pub code: u16,
    pub reason: &'b [u8],
    pub headers: &'h [Header<'b>],
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream allows this connection to be reused after the body.
    pub keep_alive: bool,
    pub conn_tokens: ConnTokens<'b>,
    /// The value of a valid `Content-Length`, kept for HEAD and 304 replies that carry one.
    pub content_length: Option<u64>,
}

/// Limits applied while reading a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head: usize,
    pub max_target: usize,
    pub max_headers: usize,
}

fn version_of(v: Option<u8>) -> Version {
    if v == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more bytes are needed and the
/// limits still allow them.
///
/// `headers` may be uninitialised (`[const { MaybeUninit::uninit() }; N]`): httparse writes the
/// ones it parses, so the hot path never clears a large header array.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<Header<'b>>],
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'b, 'h>>, HeadError> {
    let max_headers = limits.max_headers.min(headers.len());
    let mut req = httparse::Request::new(&mut []);
    let parsed = ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, &mut headers[..max_headers]);
    let head_len = match parsed {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => {
            check_partial_request(buf, limits)?;
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadTooLarge),
        Err(httparse::Error::Version) => match version_error(buf) {
            Some(e) => return Err(e),
            None => {
                check_partial_request(buf, limits)?;
                return Ok(None);
            }
        },
        Err(e) => return Err(HeadError::Malformed(httparse_reason(e))),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let target = target.as_bytes();
    // The target is checked before the head size so that a long request line gets 414 whether
    // it arrives in one read or several (`check_partial_request` sees it first in the latter).
    if target.len() > limits.max_target {
        return Err(HeadError::TargetTooLong);
    }
    if head_len > limits.max_head {
        return Err(HeadError::HeadTooLarge);
    }
    if bare_lf(&buf[..head_len]) {
        return Err(HeadError::Malformed("bare LF line ending"));
    }
    let version = version_of(req.version);
    let headers: &'h [Header<'b>] = req.headers;

    if method == "CONNECT" {
        return Err(HeadError::NotImplemented);
    }
    // RFC 9112 §3.2.4: the asterisk-form is only used for a server-wide OPTIONS request.
    if target == b"*" && method != "OPTIONS" {
        return Err(HeadError::Malformed("asterisk-form target is only for OPTIONS"));
    }
    let (authority, path, query) = split_target(target)?;

    let mut host: Option<&'b [u8]> = None;
    let mut host_count = 0;
    let mut cl = ContentLength::default();
    let mut te = TransferEncoding::default();
    let mut conn = ConnectionInfo { close: false, keep_alive: false, tokens: ConnTokens::new() };
    let mut expect_continue = false;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            host_count += 1;
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            cl.add(h.value)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.add(h.value)?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection(h.value, &mut conn)?;
        } else if name.eq_ignore_ascii_case(b"expect") {
            if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored
                // (RFC 9110 §15.2: an HTTP/1.0 client is never sent a 1xx response).
                expect_continue = version == Version::Http11;
            } else {
                return Err(HeadError::UnsupportedExpectation);
            }
        }
    }

    // RFC 9112 §3.2: a 1.1 request carries exactly one Host; several are always an error.
    if host_count > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    if version == Version::Http11 && host_count == 0 {
        return Err(HeadError::Malformed("missing Host header"));
    }
    if let Some(h) = host {
        if !valid_host(h) {
            return Err(HeadError::Malformed("invalid Host header"));
        }
    }
    // RFC 9112 §3.2.2: with an absolute-form target the authority replaces Host.
    let host = match authority {
        Some(a) => {
            if !valid_host(a) {
                return Err(HeadError::Malformed("invalid authority in request target"));
            }
            a
        }
        None => host.unwrap_or(b""),
    };

    let framing = if te.present {
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means framing is faulty.
        if version == Version::Http10 {
            return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        // RFC 9112 §6.3 (3): TE with CL may be a smuggling attempt; reject and close.
        if cl.value.is_some() {
            return Err(HeadError::Malformed("both Transfer-Encoding and Content-Length"));
        }
        te.request_framing()?
    } else {
        match cl.value {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };

    let keep_alive = match version {
        Version::Http11 => !conn.close,
        Version::Http10 => conn.keep_alive && !conn.close,
    };
    Ok(Some(RequestHead {
        method,
        version,
        target,
        path,
        query,
        headers,
        head_len,
        host,
        framing,
        keep_alive,
        expect_continue,
        conn_tokens: conn.tokens,
    }))
}

/// Decides between "wait for more" and a limit error for an incomplete request head.
fn check_partial_request(buf: &[u8], limits: &HeadLimits) -> Result<(), HeadError> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    // method SP request-target SP version: only the target counts toward max_target, whether or
    // not the line is complete yet, so the verdict does not depend on how the bytes arrived.
    let target = line.splitn(3, |&b| b == b' ').nth(1).unwrap_or(b"");
    if target.len() > limits.max_target {
        return Err(HeadError::TargetTooLong);
    }
    if buf.len() >= limits.max_head {
        return Err(HeadError::HeadTooLarge);
    }
    Ok(())
}

/// Classifies a version httparse refused: "HTTP/2.0" and friends are well-formed but not ours
/// (505); anything else, including an unknown HTTP/1 minor version, is a 400. `None` while the
/// line is still open and what has arrived may yet become `HTTP/d.d`: the verdict must not
/// depend on how the bytes were split into reads.
fn version_error(buf: &[u8]) -> Option<HeadError> {
    // httparse skips empty lines before the request line (RFC 9112 §2.2).
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let rest = &buf[start..];
    let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]), true),
        None => (rest.strip_suffix(b"\r").unwrap_or(rest), false),
    };
    // method SP request-target SP HTTP-version: the version is all that follows the 2nd space,
    // so a stray space elsewhere in the line also surfaces here, as a 400.
    let version = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or(b"");
    const SHAPE: &[u8; 8] = b"HTTP/0.0";
    let fits = version.len() <= SHAPE.len()
        && version.iter().zip(SHAPE).all(|(&b, &s)| if s == b'0' { b.is_ascii_digit() } else { b == s });
    if fits && version.len() < SHAPE.len() && !complete {
        return None;
    }
    if fits && version.len() == SHAPE.len() && version[5] != b'1' {
        return Some(HeadError::VersionNotSupported);
    }
    Some(HeadError::Malformed("invalid HTTP version"))
}

/// RFC 9112 §2.2 lets a recipient accept a bare LF as a line terminator. A proxy that accepts it
/// can see header lines that a CRLF-only peer in front of it does not (a smuggling vector), so a
/// head with an LF not preceded by CR is refused instead, as llhttp's strict mode does.
fn bare_lf(head: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in head {
        if b == b'\n' && prev != b'\r' {
            return true;
        }
        prev = b;
    }
    false
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// (authority for absolute-form, path, query) of a request-target.
type TargetParts<'a> = (Option<&'a [u8]>, &'a [u8], &'a [u8]);

/// Splits a request-target into its parts.
fn split_target(target: &[u8]) -> Result<TargetParts<'_>, HeadError> {
    // Origin-form ("/path?q") and asterisk-form ("*") carry no authority.
    let (authority, rest) = if target.first() == Some(&b'/') || target == b"*" {
        (None, target)
    } else if let Some(after) = strip_prefix_ci(target, b"http://").or_else(|| strip_prefix_ci(target, b"https://")) {
        let end = after.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(after.len());
        let (auth, rest) = after.split_at(end);
        if auth.is_empty() || auth.contains(&b'@') {
            return Err(HeadError::Malformed("invalid authority in request target"));
        }
        (Some(auth), if rest.is_empty() { &b"/"[..] } else { rest })
    } else {
        return Err(HeadError::Malformed("invalid request target"));
    };
    // RFC 9112 §3.2 / RFC 3986 §2: a request-target is ASCII; httparse lets UTF-8 through.
    if !target.is_ascii() {
        return Err(HeadError::Malformed("invalid request target"));
    }
    if rest.contains(&b'#') {
        return Err(HeadError::Malformed("fragment in request target"));
    }
    let q = rest.iter().position(|&b| b == b'?').unwrap_or(rest.len());
    let (path, query) = rest.split_at(q);
    // A target like "http://h?x" has no path: forward it as "/?x".
    let path = if path.is_empty() { &b"/"[..] } else { path };
    if has_dot_segment(path) {
        return Err(HeadError::Malformed("dot segment in request path"));
    }
    Ok((authority, path, query))
}

/// True when a path segment is `.` or `..`, also percent-encoded (`%2e`, `%2E%2e`, ...).
/// Routing matches raw segments, while upstreams resolve dot segments (RFC 3986 §5.2.4): a
/// request for `/public/../admin` would be routed, and policed, as `/public` yet served as
/// `/admin`. Clients resolve dot segments before sending, so such paths are refused.
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|seg| {
        let mut dots = 0;
        let mut i = 0;
        while i < seg.len() {
            if seg[i] == b'.' {
                i += 1;
            } else if seg[i] == b'%' && seg.get(i + 1) == Some(&b'2') && matches!(seg.get(i + 2), Some(b'e' | b'E')) {
                i += 3;
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// RFC 3986 host with optional port: reg-name / IPv4 / [IPv6], then `:digits`.
fn valid_host(h: &[u8]) -> bool {
    if h.is_empty() {
        return true;
    }
    if h.len() > 255 {
        return false;
    }
    let (name, port) = if h[0] == b'[' {
        let Some(close) = h.iter().position(|&b| b == b']') else { return false };
        let inner = &h[1..close];
        if inner.is_empty() || !inner.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        let rest = &h[close + 1..];
        match rest.split_first() {
            None => return true,
            Some((b':', port)) => (&b"x"[..], port),
            Some(_) => return false,
        }
    } else {
        match h.iter().rposition(|&b| b == b':') {
            Some(i) => (&h[..i], &h[i + 1..]),
            None => (h, &b""[..]),
        }
    };
    let name_ok = !name.is_empty()
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    name_ok && port_ok
}

/// The host part of a Host value, port removed (`api.example.com:8080` → `api.example.com`).
/// The media type of a Content-Type value (`application/json` of `application/json;
/// charset=utf-8`), parameters and surrounding whitespace removed.
pub fn media_type(content_type: &[u8]) -> &[u8] {
    trim(content_type.split(|&b| b == b';').next().unwrap_or_default())
}

pub fn host_without_port(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        return match h.iter().position(|&b| b == b']') {
            Some(i) => &h[..=i],
            None => h,
        };
    }
    match h.iter().rposition(|&b| b == b':') {
        Some(i) => &h[..i],
        None => h,
    }
}

/// RFC 9110 §5.6.2 token characters (header names, chunk extension names, ...).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    &v[start..end]
}

/// Comma-separated list elements, trimmed, empty elements skipped (RFC 9110 §5.6.1).
pub fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|s| !s.is_empty())
}

#[derive(Default)]
struct ContentLength {
    value: Option<u64>,
}

impl ContentLength {
    /// RFC 9110 §8.6 / RFC 9112 §6.3 (5): every value must be digits and all must agree.
    fn add(&mut self, v: &[u8]) -> Result<(), HeadError> {
        let mut any = false;
        for item in v.split(|&b| b == b',') {
            let item = trim(item);
            let n = parse_decimal(item).ok_or(HeadError::Malformed("invalid Content-Length"))?;
            if self.value.is_some_and(|old| old != n) {
                return Err(HeadError::Malformed("conflicting Content-Length values"));
            }
            self.value = Some(n);
            any = true;
        }
        if !any {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        Ok(())
    }
}

/// Digits only, no sign, no whitespace, at most 18 digits (no overflow).
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

#[derive(Default)]
struct TransferEncoding {
    present: bool,
    chunked_count: u32,
    /// The last coding seen was `chunked`.
    chunked_last: bool,
    /// A coding other than chunked appeared.
    other: bool,
    /// A coding name we do not know at all.
    unknown: bool,
}

impl TransferEncoding {
    fn add(&mut self, v: &[u8]) -> Result<(), HeadError> {
        self.present = true;
        let mut any = false;
        for coding in list_items(v) {
            any = true;
            // Parameters (`;q=...`) are not allowed on chunked; compare the whole element.
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked_count += 1;
                self.chunked_last = true;
            } else {
                self.chunked_last = false;
                self.other = true;
                let known = [&b"gzip"[..], b"x-gzip", b"deflate", b"compress", b"x-compress", b"identity"];
                if !known.iter().any(|k| coding.eq_ignore_ascii_case(k)) {
                    self.unknown = true;
                }
            }
        }
        if !any {
            return Err(HeadError::Malformed("empty Transfer-Encoding"));
        }
        Ok(())
    }

    fn request_framing(&self) -> Result<Framing, HeadError> {
        // RFC 9112 §6.1: chunked must be applied exactly once, as the final coding.
        if self.chunked_count > 1 {
            return Err(HeadError::Malformed("chunked applied more than once"));
        }
        if !self.chunked_last {
            // RFC 9112 §6.3 (4): a request whose final coding is not chunked cannot be framed.
            return Err(if self.unknown { HeadError::UnsupportedCoding } else { HeadError::Malformed("final transfer coding is not chunked") });
        }
        if self.other {
            // Codings under chunked would have to be forwarded as-is; not supported.
            return Err(HeadError::UnsupportedCoding);
        }
        Ok(Framing::Chunked)
    }
}

fn connection<'b>(v: &'b [u8], c: &mut ConnectionInfo<'b>) -> Result<(), HeadError> {
    for token in list_items(v) {
        if token.eq_ignore_ascii_case(b"close") {
            c.close = true;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            c.keep_alive = true;
        } else {
            if c.tokens.len == MAX_CONN_TOKENS {
                return Err(HeadError::Malformed("too many Connection options"));
            }
            c.tokens.names[c.tokens.len] = token;
            c.tokens.len += 1;
        }
    }
    Ok(())
}

/// Why an upstream response head is unusable (always a 502 to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

/// Parses a response head. `head_request` is true when answering HEAD (no body follows).
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [MaybeUninit<Header<'b>>],
    head_request: bool,
    max_head: usize,
) -> Result<Option<ResponseHead<'b, 'h>>, BadResponse> {
    let mut res = httparse::Response::new(&mut []);
    let parsed = ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, headers);
    let head_len = match parsed {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) if buf.len() >= max_head => return Err(BadResponse("response head too large")),
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse("too many response headers")),
        Err(e) => return Err(BadResponse(httparse_reason(e))),
    };
    if head_len > max_head {
        return Err(BadResponse("response head too large"));
    }
    if bare_lf(&buf[..head_len]) {
        return Err(BadResponse("bare LF line ending"));
    }
    let code = res.code.ok_or(BadResponse("missing status"))?;
    if !(100..=599).contains(&code) {
        return Err(BadResponse("invalid status code"));
    }
    let version = version_of(res.version);
    let reason = res.reason.unwrap_or("").as_bytes();
    let headers: &'h [Header<'b>] = res.headers;

    let mut cl = ContentLength::default();
    let mut te = TransferEncoding::default();
    let mut conn = ConnectionInfo { close: false, keep_alive: false, tokens: ConnTokens::new() };
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            cl.add(h.value).map_err(|_| BadResponse("invalid or conflicting Content-Length"))?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.add(h.value).map_err(|_| BadResponse("invalid Transfer-Encoding"))?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection(h.value, &mut conn).map_err(|_| BadResponse("too many Connection options"))?;
        }
    }
    if te.present && cl.value.is_some() {
        return Err(BadResponse("both Transfer-Encoding and Content-Length"));
    }
    // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means its framing is faulty.
    if te.present && version == Version::Http10 {
        return Err(BadResponse("Transfer-Encoding in an HTTP/1.0 response"));
    }
    if te.chunked_count > 1 {
        return Err(BadResponse("chunked applied more than once"));
    }
    // The gateway re-frames bodies and drops Transfer-Encoding as hop-by-hop; a coding other than
    // chunked (gzip, ...) would reach the client unlabelled, so such responses are refused.
    if te.other {
        return Err(BadResponse("unsupported transfer coding in response"));
    }
    // RFC 9112 §6.3 (1): HEAD, 1xx, 204 and 304 responses end with the header section.
    let framing = if head_request || code < 200 || code == 204 || code == 304 {
        Framing::None
    } else if te.present {
        // RFC 9112 §6.3 (4): chunked last → chunked; otherwise the body runs to close.
        if te.chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match cl.value {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = match version {
        Version::Http11 => !conn.close,
        Version::Http10 => conn.keep_alive && !conn.close,
    } && framing != Framing::UntilClose;
    Ok(Some(ResponseHead {
        version,
        code,
        reason,
        headers,
        head_len,
        framing,
        keep_alive,
        conn_tokens: conn.tokens,
        content_length: cl.value,
    }))
}

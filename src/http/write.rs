//! Writing heads: the request forwarded upstream and the response sent back, each a copy of the
//! original lines minus hop-by-hop fields plus the few fields the gateway owns; and the JSON error
//! responses. Lines are copied byte for byte from the connection buffer (targeted edits, no
//! header map), into a reused output buffer.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use httparse::Header;

use crate::config::transform::HeaderEdits;
use crate::policy::transform::{self, Field};
use super::parse::{ConnTokens, Framing, RequestHead, ResponseHead, Version};

/// Hop-by-hop fields (RFC 9110 §7.6.1) plus the ones the gateway rewrites itself.
pub(crate) fn skip_always(name: &[u8]) -> bool {
    const HOP: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Fields a client may not remove by naming them in `Connection`.
fn protected(name: &[u8]) -> bool {
    const KEEP: [&[u8]; 3] = [b"host", b"authorization", b"cookie"];
    KEEP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

fn dropped(name: &[u8], tokens: &ConnTokens) -> bool {
    skip_always(name) || (tokens.contains(name) && !protected(name))
}

/// The original bytes of one header line (`name: value`, without CRLF), when `h` points into `buf`.
fn raw_line<'b>(buf: &'b [u8], h: &Header<'b>) -> Option<&'b [u8]> {
    let base = buf.as_ptr() as usize;
    let start = (h.name.as_ptr() as usize).checked_sub(base)?;
    let end = if h.value.is_empty() {
        start + h.name.len() + 1
    } else {
        (h.value.as_ptr() as usize).checked_sub(base)? + h.value.len()
    };
    buf.get(start..end)
}

fn put_header(out: &mut Vec<u8>, buf: &[u8], h: &Header) {
    match raw_line(buf, h) {
        Some(line) => out.extend_from_slice(line),
        None => {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A small inline string for ids and addresses, kept across awaits without allocating.
#[derive(Clone, Copy)]
pub struct Inline<const N: usize> {
    bytes: [u8; N],
    len: u8,
}

impl<const N: usize> Inline<N> {
    pub fn new(v: &[u8]) -> Self {
        let mut bytes = [0; N];
        let len = v.len().min(N).min(255);
        bytes[..len].copy_from_slice(&v[..len]);
        Inline { bytes, len: len as u8 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

pub type RequestId = Inline<64>;

/// An IP address as text (at most 45 characters, IPv6 with embedded IPv4), without allocating.
pub fn ip_text(ip: std::net::IpAddr) -> Inline<46> {
    use std::io::Write;
    let mut buf = [0u8; 46];
    let mut w = &mut buf[..];
    let _ = write!(w, "{ip}");
    let len = 46 - w.len();
    Inline::new(&buf[..len])
}

/// Request ids and trace ids for one shard: a random seed plus a counter, no locks.
pub struct Ids {
    seed: u64,
    counter: Cell<u64>,
    rng: Cell<u64>,
}

impl Ids {
    pub fn new(shard: usize) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(shard);
        let seed = h.finish();
        Ids { seed, counter: Cell::new(0), rng: Cell::new(seed ^ 0x9E37_79B9_7F4A_7C15) }
    }

    fn next_random(&self) -> u64 {
        // splitmix64: fast, well-distributed, enough for ids (not for secrets).
        let z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(z);
        mix64(z)
    }

    /// 32 hex digits: the shard's random seed, then the request counter through a bijective
    /// mix, so ids are unique per shard without revealing how many requests were served.
    pub fn request_id(&self) -> RequestId {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        let mut b = [0u8; 32];
        hex_into(&mut b[..16], self.seed);
        hex_into(&mut b[16..], mix64(n ^ self.seed.rotate_left(17)));
        RequestId::new(&b)
    }

    /// A new W3C traceparent: version 00, random trace and span ids, sampled.
    pub fn traceparent(&self) -> Inline<55> {
        let mut b = *b"00-00000000000000000000000000000000-0000000000000000-01";
        hex_into(&mut b[3..19], self.next_random() | 1);
        hex_into(&mut b[19..35], self.next_random());
        hex_into(&mut b[36..52], self.next_random() | 1);
        Inline::new(&b)
    }
}

/// The splitmix64 finaliser: a bijection on u64 that scatters nearby inputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hex_into(out: &mut [u8], mut v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = HEX[(v & 15) as usize];
        v >>= 4;
    }
}

/// A client-supplied X-Request-Id is kept when it is 1..=64 safe characters.
fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 64 && v.iter().all(|&b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// W3C trace-context `traceparent`, version 00 layout, ids not all zero.
pub(crate) fn valid_traceparent(v: &[u8]) -> bool {
    if v.len() != 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return false;
    }
    let lower_hex = |s: &[u8]| s.iter().all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |s: &[u8]| s.iter().any(|&b| b != b'0');
    &v[..2] != b"ff"
        && lower_hex(&v[..2])
        && lower_hex(&v[3..35])
        && nonzero(&v[3..35])
        && lower_hex(&v[36..52])
        && nonzero(&v[36..52])
        && lower_hex(&v[53..])
}

/// The request id for a request: the client's when well-formed and single, else a new one.
pub fn request_id(req: &RequestHead, ids: &Ids) -> RequestId {
    let mut found = None;
    for h in req.headers {
        if h.name.eq_ignore_ascii_case("x-request-id") {
            if found.is_some() {
                return ids.request_id();
            }
            found = Some(h.value);
        }
    }
    match found {
        Some(v) if valid_request_id(v) => RequestId::new(v),
        _ => ids.request_id(),
    }
}

/// Writes a header line as a route's edits say: as it is, renamed, or not at all.
fn put_edited(out: &mut Vec<u8>, buf: &[u8], h: &Header, edits: Option<&HeaderEdits>) {
    match edits.map_or(Field::Keep, |e| transform::field(e, h.name.as_bytes())) {
        Field::Keep => put_header(out, buf, h),
        Field::Drop => {}
        Field::Rename(to) => put_field(out, to.as_bytes(), h.value),
    }
}

/// Ends a head that was written without its framing line: `Content-Length`, the blank line, the
/// body.
pub fn length_and_body(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(b"Content-Length: ");
    put_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// What the gateway adds to a forwarded request.
pub struct ForwardInfo<'a> {
    pub client_ip: &'a [u8],
    pub proto: &'a [u8],
    pub request_id: &'a [u8],
    /// Path to send (after `strip_prefix`), without the query.
    pub path: &'a [u8],
    /// The query to send, with its `?` (the client's, or the route's transform of it).
    pub query: &'a [u8],
    /// The route's header edits: client fields removed, renamed or replaced by set ones.
    pub edits: Option<&'a HeaderEdits>,
    /// The body's framing as sent (the request's, or none when the gateway writes it after a
    /// body transform).
    pub framing: Framing,
    /// Header names the gateway sets itself from verified credentials: client copies are dropped.
    pub strip: &'a [String],
    /// Lines to add (each ending with CRLF), e.g. forwarded claims.
    pub extra: &'a [u8],
    /// Host sent upstream when the client named none (HTTP/1.0 without Host).
    pub default_host: &'a [u8],
    /// The cache fetches whole responses with validators of its own: the client's conditional
    /// and range fields are not forwarded (it answers them from what it gets).
    pub strip_conditionals: bool,
}

/// Request fields the cache answers itself.
fn conditional_field(name: &[u8]) -> bool {
    const NAMES: &[&[u8]] = &[b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range", b"range"];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Writes the request head sent upstream: HTTP/1.1, hop-by-hop fields removed, framing
/// normalised (one Content-Length, or chunked), X-Forwarded-*, X-Request-Id and traceparent set.
/// Returns the `traceparent` the request carries upstream (the client's, or a new one).
pub fn request_head(out: &mut Vec<u8>, buf: &[u8], req: &RequestHead, info: &ForwardInfo, ids: &Ids) -> Inline<55> {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(info.path);
    out.extend_from_slice(info.query);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff_seen = false;
    let mut trace: Option<Inline<55>> = None;
    let mut host_seen = false;
    for h in req.headers {
        let name = h.name.as_bytes();
        if dropped(name, &req.conn_tokens)
            || name.eq_ignore_ascii_case(b"x-forwarded-for")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || name.eq_ignore_ascii_case(b"x-request-id")
            // The gateway answers `100 Continue` itself before streaming the body.
            || name.eq_ignore_ascii_case(b"expect")
            || info.strip.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(name))
            || (info.strip_conditionals && conditional_field(name))
        {
            if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                xff_seen = true;
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"traceparent") {
            if trace.is_some() || !valid_traceparent(h.value) {
                continue;
            }
            trace = Some(Inline::new(h.value));
        }
        if name.eq_ignore_ascii_case(b"host") {
            host_seen = true;
            if req.target.first() != Some(&b'/') {
                // Absolute-form: the target's authority is the host (RFC 9112 §3.2.2).
                continue;
            }
        }
        put_edited(out, buf, h, info.edits);
    }
    if !host_seen || req.target.first() != Some(&b'/') {
        // An HTTP/1.0 request may come without any host; name the service instead, as nginx
        // names its upstream group, so the upstream never sees an empty Host.
        put_field(out, b"Host", if req.host.is_empty() { info.default_host } else { req.host });
    }
    match info.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    // X-Forwarded-For: earlier hops in order, then this client (several fields are joined).
    out.extend_from_slice(b"X-Forwarded-For: ");
    if xff_seen {
        for h in req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for")) {
            let v = super::parse::trim(h.value);
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(info.client_ip);
    out.extend_from_slice(b"\r\n");
    put_field(out, b"X-Forwarded-Proto", info.proto);
    if !req.host.is_empty() {
        put_field(out, b"X-Forwarded-Host", req.host);
    }
    put_field(out, b"X-Request-Id", info.request_id);
    out.extend_from_slice(info.extra);
    let trace = trace.unwrap_or_else(|| {
        let t = ids.traceparent();
        put_field(out, b"traceparent", t.as_bytes());
        t
    });
    out.extend_from_slice(b"\r\n");
    trace
}

/// How the response body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    None,
    Length(u64),
    /// Chunked passed through unchanged.
    Chunked,
    /// Chunked from upstream decoded for an HTTP/1.0 client, ended by close.
    Dechunk,
    /// Body ends when the connection closes (HTTP/1.0 clients).
    UntilClose,
    /// A close-delimited upstream body re-framed as chunked for an HTTP/1.1 client, so the
    /// client connection can be kept (RFC 9112 §7.1).
    Rechunk,
}

/// Chooses the client-side framing for an upstream response.
pub fn client_framing(res: &ResponseHead, client: Version) -> ClientFraming {
    match (res.framing, client) {
        (Framing::None, _) => ClientFraming::None,
        (Framing::Length(n), _) => ClientFraming::Length(n),
        (Framing::Chunked, Version::Http11) => ClientFraming::Chunked,
        (Framing::Chunked, Version::Http10) => ClientFraming::Dechunk,
        (Framing::UntilClose, Version::Http11) => ClientFraming::Rechunk,
        (Framing::UntilClose, Version::Http10) => ClientFraming::UntilClose,
    }
}

/// Writes the response head sent to the client. `keep_alive` is the gateway's decision for the
/// client connection; `client` is the client's HTTP version.
#[allow(clippy::too_many_arguments)] // each argument is a distinct fact of this one response
pub fn response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    res: &ResponseHead,
    framing: ClientFraming,
    client: Version,
    keep_alive: bool,
    request_id: &[u8],
    extra: &[u8],
    edits: Option<&HeaderEdits>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(res.code));
    out.push(b' ');
    out.extend_from_slice(res.reason);
    out.extend_from_slice(b"\r\n");
    for h in res.headers {
        let name = h.name.as_bytes();
        if dropped(name, &res.conn_tokens) || name.eq_ignore_ascii_case(b"x-request-id") {
            continue;
        }
        put_edited(out, buf, h, edits);
    }
    match framing {
        ClientFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ClientFraming::Chunked | ClientFraming::Rechunk => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ClientFraming::None => {
            // HEAD and 304 keep the length the upstream announced (RFC 9110 §8.6).
            if let (Some(n), true) = (res.content_length, res.code >= 200 && res.code != 204) {
                out.extend_from_slice(b"Content-Length: ");
                put_u64(out, n);
                out.extend_from_slice(b"\r\n");
            }
        }
        ClientFraming::Dechunk | ClientFraming::UntilClose => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if client == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    put_field(out, b"X-Request-Id", request_id);
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

/// A bodiless answer made by the gateway itself (a CORS preflight's 204).
pub fn reply_head(out: &mut Vec<u8>, status: u16, extra: &[u8], request_id: &[u8], keep_alive: bool) {
    status_line(out, status);
    head_end(out, extra, request_id, keep_alive);
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The lines every gateway-made head ends with: `extra`, the close, the request id, CRLF.
fn head_end(out: &mut Vec<u8>, extra: &[u8], request_id: &[u8], keep_alive: bool) {
    out.extend_from_slice(extra);
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    put_field(out, b"X-Request-Id", request_id);
    out.extend_from_slice(b"\r\n");
}

/// A gateway-made response with a configured body (a breaker's fallback).
pub struct BodyResponse<'a> {
    pub status: u16,
    pub content_type: &'a [u8],
    pub body: &'a [u8],
    /// Extra header lines, each ending with CRLF.
    pub extra: &'a [u8],
    pub request_id: &'a [u8],
    pub keep_alive: bool,
    pub head_only: bool,
}

pub fn body_response(out: &mut Vec<u8>, r: &BodyResponse) {
    let BodyResponse { status, content_type, body, extra, request_id, keep_alive, head_only } = *r;
    status_line(out, status);
    put_field(out, b"Content-Type", content_type);
    out.extend_from_slice(b"Content-Length: ");
    put_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    head_end(out, extra, request_id, keep_alive);
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Writes an informational (1xx) response head for an HTTP/1.1 client, e.g. 103 Early Hints.
pub fn informational_head(out: &mut Vec<u8>, buf: &[u8], res: &ResponseHead) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(res.code));
    out.push(b' ');
    out.extend_from_slice(res.reason);
    out.extend_from_slice(b"\r\n");
    for h in res.headers {
        if !dropped(h.name.as_bytes(), &res.conn_tokens) {
            put_header(out, buf, h);
        }
    }
    out.extend_from_slice(b"\r\n");
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        411 => "Length Required",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A JSON error response: `{"error":{"status":..,"code":..,"message":..,"request_id":..}}`.
/// `code` and `message` are static text without quotes; `request_id` is validated.
pub struct ErrorResponse<'a> {
    pub status: u16,
    pub code: &'a str,
    pub message: &'a str,
    pub request_id: &'a [u8],
    pub close: bool,
    pub head_only: bool,
    /// Extra header lines, each ending with CRLF (e.g. `Allow: GET, POST\r\n`).
    pub extra: &'a [u8],
}

pub fn error_response(out: &mut Vec<u8>, e: &ErrorResponse) {
    let mut body = [0u8; 512];
    let body_len = {
        let mut w = Writer { buf: &mut body, len: 0 };
        w.put(b"{\"error\":{\"status\":");
        w.put(itoa::Buffer::new().format(e.status).as_bytes());
        w.put(b",\"code\":\"");
        w.put(e.code.as_bytes());
        w.put(b"\",\"message\":\"");
        w.put(e.message.as_bytes());
        w.put(b"\",\"request_id\":\"");
        w.put(e.request_id);
        w.put(b"\"}}\n");
        w.len
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(e.status));
    out.push(b' ');
    out.extend_from_slice(reason(e.status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    put_u64(out, body_len as u64);
    out.extend_from_slice(b"\r\n");
    if e.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(e.extra);
    put_field(out, b"X-Request-Id", e.request_id);
    out.extend_from_slice(b"\r\n");
    if !e.head_only {
        out.extend_from_slice(&body[..body_len]);
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }
}

//! The response cache: a shared cache by RFC 9111, one store per `[[caches]]` entry on each
//! shard. This module owns the key of a request, the lookup among stored variants (`Vary`),
//! turning an upstream response into an entry, the heads served from entries (`Age`,
//! `Cache-Status` by RFC 9211, 304s for the client's own conditionals) and purges across shards.
//! The request path that uses it is `proxy::cached`.

pub mod rules;
pub mod store;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hash::Hasher;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::config::cache::{CachePolicy, KeyPart};
use crate::http::parse::{self, RequestHead, ResponseHead};
use crate::policy::stage;
use rules::{RequestCc, ResponseCc, Times, Use};
pub use store::{Entry, Field, Fill, FillGuard, Store, VaryValue};

/// A request's place in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The URL part (host, path, query as the policy uses them): every variant of a URL.
    pub bucket: u64,
    /// The policy's other parts (headers, cookies, consumer).
    pub secondary: u64,
}

impl Key {
    /// The fill a request joins: one per URL and secondary key.
    pub fn fill(&self) -> u64 {
        self.bucket ^ self.secondary.rotate_left(17)
    }
}

fn put_url(url: &mut Vec<u8>, policy: &CachePolicy, host: &[u8], path: &[u8], query: &[u8]) -> usize {
    url.clear();
    if policy.uses(&KeyPart::Host) {
        url.extend(parse::host_without_port(host).iter().map(u8::to_ascii_lowercase));
    }
    let host_len = url.len();
    url.extend_from_slice(path);
    if policy.uses(&KeyPart::Query) {
        url.extend_from_slice(query);
    }
    host_len
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = store::hasher();
    h.write(b);
    h.finish()
}

/// The key of a URL (for invalidation by another method, or a `Location`), written into `url`.
pub fn url_key(policy: &CachePolicy, host: &[u8], path: &[u8], query: &[u8], url: &mut Vec<u8>) -> (u64, usize) {
    let host_len = put_url(url, policy, host, path, query);
    (hash_bytes(url), host_len)
}

/// The key of a request; `url` receives its URL part.
pub fn key(policy: &CachePolicy, req: &RequestHead, consumer: Option<&[u8]>, url: &mut Vec<u8>) -> (Key, usize) {
    let (bucket, host_len) = url_key(policy, req.host, req.path, req.query, url);
    let mut h = store::hasher();
    for part in &policy.key {
        match part {
            KeyPart::Header(name) => {
                for v in req.headers.iter().filter(|x| x.name.eq_ignore_ascii_case(name)) {
                    h.write(v.value);
                    h.write_u8(0);
                }
                h.write_u8(1);
            }
            KeyPart::Cookie(name) => {
                h.write(stage::cookie(req, name).unwrap_or_default());
                h.write_u8(1);
            }
            KeyPart::Consumer => {
                h.write(consumer.unwrap_or_default());
                h.write_u8(1);
            }
            _ => {}
        }
    }
    (Key { bucket, secondary: h.finish() }, host_len)
}

/// A request's values of a field, normalised for `Vary` (RFC 9111 §4.1: list elements trimmed and
/// joined by a comma), into `out`; false when the request has no such field.
fn vary_value(req_headers: &[httparse::Header], name: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut any = false;
    for h in req_headers.iter().filter(|h| h.name.as_bytes().eq_ignore_ascii_case(name)) {
        any = true;
        for e in parse::list_items(h.value) {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(e);
        }
    }
    any
}

thread_local!(static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256)));

/// Whether a stored variant answers a request with these headers.
fn vary_matches(e: &Entry, req_headers: &[httparse::Header]) -> bool {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        e.vary.iter().all(|(name, stored)| {
            let present = vary_value(req_headers, name, &mut s);
            match stored {
                None => !present,
                Some(v) => present && **v == s[..],
            }
        })
    })
}

/// What a lookup found.
pub enum Found {
    /// A stored response that may be served now.
    Hit { entry: Rc<Entry>, stale: bool },
    /// A stored response to validate with the origin first.
    Validate(Rc<Entry>),
    /// Nothing stored for this URL (`vary`: variants exist, none for this request).
    Miss { vary: bool },
}

/// Finds the stored variant for a request and what its freshness allows.
pub fn lookup(store: &Store, key: Key, url: &[u8], headers: &[httparse::Header], req_cc: &RequestCc, now: i64) -> Found {
    let mut any = false;
    for e in store.variants(key.bucket) {
        if e.secondary != key.secondary || *e.url != *url {
            continue;
        }
        any = true;
        if !vary_matches(e, headers) {
            continue;
        }
        let f = rules::Freshness { lifetime: e.lifetime, age: e.times.current_age(now), cc: e.cc, swr: e.swr };
        return match rules::usable(&f, req_cc) {
            Use::Fresh => Found::Hit { entry: e.clone(), stale: false },
            Use::StaleRevalidate => Found::Hit { entry: e.clone(), stale: true },
            Use::Validate => Found::Validate(e.clone()),
        };
    }
    Found::Miss { vary: any }
}

/// Fields a cache does not store or forward from a response (RFC 9111 §3.1; framing and `Age`
/// are the cache's own).
pub fn unstored(name: &[u8]) -> bool {
    const ALSO: &[&[u8]] = &[b"proxy-authenticate", b"proxy-authentication-info", b"age", b"x-request-id", b"surrogate-control"];
    crate::http::write::skip_always(name) || ALSO.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// A response's headers read into what decides storing and freshness.
pub struct ResponseFacts {
    pub cc: ResponseCc,
    pub expires: Option<Option<i64>>,
    pub date: Option<i64>,
    pub age: i64,
    pub last_modified: Option<i64>,
    pub vary_star: bool,
    pub set_cookie: bool,
}

pub fn response_facts(res: &ResponseHead) -> ResponseFacts {
    let values = |name: &'static str| res.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    // Surrogate-Control (a gateway's own directives from the origin) takes precedence over
    // Cache-Control where it speaks.
    let surrogate = surrogate_cc(values("surrogate-control"));
    let mut cc = rules::response_cc(values("cache-control"));
    if surrogate.no_store {
        cc.no_store = true;
    }
    if let Some(m) = surrogate.max_age {
        cc.s_maxage = Some(m);
        cc.no_store = surrogate.no_store;
    }
    let first = |name: &'static str| values(name).next();
    let vary_star = values("vary").any(|v| parse::list_items(v).any(|t| t == b"*"));
    ResponseFacts {
        cc,
        expires: first("expires").map(rules::http_date),
        date: first("date").and_then(rules::http_date),
        age: age_value(values("age")),
        last_modified: first("last-modified").and_then(rules::http_date),
        vary_star,
        set_cookie: values("set-cookie").next().is_some(),
    }
}

/// The `Age` of a response (RFC 9111 §5.1). A value that is not one non-negative integer
/// (a list, a parameter, a fraction, two field lines) cannot be trusted to be small: the response
/// is taken as stale, which is safe.
fn age_value<'a>(mut lines: impl Iterator<Item = &'a [u8]>) -> i64 {
    const STALE: i64 = 1 << 31;
    let Some(v) = lines.next() else { return 0 };
    if lines.next().is_some() {
        return STALE;
    }
    let v = parse::trim(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return STALE;
    }
    std::str::from_utf8(v).ok().and_then(|t| t.parse::<i64>().ok()).unwrap_or(STALE).min(STALE)
}

/// Fields a 304 does not change in a stored response: they describe its stored bytes
/// (RFC 9111 §3.2 excepts the framing; the validator itself stays the stored one's).
fn kept_on_refresh(name: &[u8]) -> bool {
    const NAMES: &[&[u8]] = &[b"content-encoding", b"content-length", b"content-md5", b"content-range", b"etag"];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The name this cache answers to in `Surrogate-Capability` and targeted `Surrogate-Control`
/// directives (Edge Architecture 1.0).
pub const SURROGATE_NAME: &str = "ringgate";

/// `Surrogate-Control` directives meant for this cache: untargeted ones and those targeted at
/// `ringgate` (`max-age=60;ringgate`).
fn surrogate_cc<'a>(values: impl Iterator<Item = &'a [u8]>) -> ResponseCc {
    let mut mine = Vec::new();
    for v in values {
        for d in v.split(|&b| b == b',') {
            let (directive, target) = match d.iter().position(|&b| b == b';') {
                Some(i) => (&d[..i], Some(parse::trim(&d[i + 1..]))),
                None => (d, None),
            };
            if target.is_none_or(|t| t.eq_ignore_ascii_case(SURROGATE_NAME.as_bytes())) {
                mine.extend_from_slice(directive);
                mine.push(b',');
            }
        }
    }
    rules::response_cc(std::iter::once(&mine[..]))
}

/// An entry being made from an upstream response: everything but the body.
pub struct Draft {
    pub bucket: u64,
    pub url: Box<[u8]>,
    pub host_len: usize,
    pub secondary: u64,
    pub vary: Vec<VaryValue>,
    pub status: u16,
    pub reason: Box<[u8]>,
    pub fields: Vec<Field>,
    pub times: Times,
    pub lifetime: i64,
    pub cc: ResponseCc,
    pub swr: i64,
    pub sie: i64,
}

/// The request a draft is made for.
pub struct DraftRequest<'a> {
    pub policy: &'a CachePolicy,
    pub key: Key,
    pub url: &'a [u8],
    pub host_len: usize,
    pub request_headers: &'a [httparse::Header<'a>],
    pub request_time: i64,
}

/// The stored fields of a response: what it sent, less hop-by-hop and framing fields and those
/// its `Connection` names, edited as the route says.
pub fn stored_fields(res: &ResponseHead, edits: Option<&crate::config::transform::HeaderEdits>) -> Vec<Field> {
    use crate::policy::transform::{field, Field};
    let mut out = Vec::with_capacity(res.headers.len());
    for h in res.headers {
        let name = h.name.as_bytes();
        if unstored(name) || res.conn_tokens.contains(name) {
            continue;
        }
        match edits.map_or(Field::Keep, |e| field(e, name)) {
            Field::Keep => out.push((name.into(), h.value.into())),
            Field::Drop => {}
            Field::Rename(to) => out.push((to.as_bytes().into(), h.value.into())),
        }
    }
    out
}

pub fn draft(r: &DraftRequest, res: &ResponseHead, facts: &ResponseFacts, fields: Vec<Field>, now: i64) -> Draft {
    let date = facts.date.unwrap_or(now);
    let lifetime = rules::lifetime(res.code, &facts.cc, facts.expires, date, facts.last_modified, r.policy.ttl);
    let mut vary = Vec::new();
    let mut scratch = Vec::new();
    for v in res.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("vary")) {
        for name in parse::list_items(v.value) {
            let name = name.to_ascii_lowercase();
            if vary.iter().any(|(n, _): &VaryValue| **n == name[..]) {
                continue;
            }
            let value = vary_value(r.request_headers, &name, &mut scratch).then(|| scratch.clone().into_boxed_slice());
            vary.push((name.into_boxed_slice(), value));
        }
    }
    let window = |own: Option<u64>, default: std::time::Duration| own.map_or(default.as_secs() as i64, |s| s as i64);
    // s-maxage, must-revalidate and proxy-revalidate forbid stale serving the route would
    // otherwise allow; an explicit RFC 5861 directive of the origin still counts.
    let strict = facts.cc.s_maxage.is_some() || facts.cc.no_stale();
    let swr = if strict { facts.cc.stale_while_revalidate.map_or(0, |s| s as i64) } else { window(facts.cc.stale_while_revalidate, r.policy.stale_while_revalidate) };
    let sie = if strict { facts.cc.stale_if_error.map_or(0, |s| s as i64) } else { window(facts.cc.stale_if_error, r.policy.stale_if_error) };
    Draft {
        bucket: r.key.bucket,
        url: r.url.into(),
        host_len: r.host_len,
        secondary: r.key.secondary,
        vary,
        status: res.code,
        reason: res.reason.into(),
        fields,
        times: Times { request_time: r.request_time, response_time: now, date_value: date, age_value: facts.age },
        lifetime,
        cc: facts.cc,
        swr: if facts.cc.must_revalidate || facts.cc.proxy_revalidate { 0 } else { swr },
        sie: if facts.cc.must_revalidate || facts.cc.proxy_revalidate { 0 } else { sie },
    }
}

/// Writes a status line and stored fields.
pub fn put_status_and_fields<'f>(out: &mut Vec<u8>, status: u16, reason: &[u8], fields: impl Iterator<Item = &'f Field>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    for (n, v) in fields {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
}

/// Status line, fields and framing of a stored response.
fn entry_head(status: u16, reason: &[u8], fields: &[Field], body_len: usize) -> Box<[u8]> {
    let mut head = Vec::with_capacity(64 + fields.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>());
    put_status_and_fields(&mut head, status, reason, fields.iter());
    if status != 204 && status != 304 {
        head.extend_from_slice(b"Content-Length: ");
        head.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.into_boxed_slice()
}

impl Draft {
    pub fn finish(self, body: Vec<u8>) -> Entry {
        Entry {
            head: entry_head(self.status, &self.reason, &self.fields, body.len()),
            url: self.url,
            host_len: self.host_len,
            secondary: self.secondary,
            vary: self.vary,
            status: self.status,
            fields: self.fields,
            body: body.into_boxed_slice(),
            times: self.times,
            lifetime: self.lifetime,
            cc: self.cc,
            swr: self.swr,
            sie: self.sie,
        }
    }
}

/// A stored response refreshed by a 304 (RFC 9111 §4.3.4): the 304's fields (edited as the
/// route says) replace the stored ones of the same name (framing, hop-by-hop fields and those
/// describing the stored bytes excepted), with new times. Also whether the result may be stored:
/// the 304 may have made it `private` or `no-store`.
pub fn refreshed(
    e: &Entry,
    res: &ResponseHead,
    facts: &ResponseFacts,
    policy: &CachePolicy,
    edits: Option<&crate::config::transform::HeaderEdits>,
    request_time: i64,
    now: i64,
) -> (Entry, bool) {
    let mut fields: Vec<Field> = Vec::with_capacity(e.fields.len() + 2);
    let mut updates = stored_fields(res, edits);
    updates.retain(|(n, _)| !kept_on_refresh(n));
    for (n, v) in e.fields.iter() {
        if !updates.iter().any(|(u, _)| u.eq_ignore_ascii_case(n)) {
            fields.push((n.clone(), v.clone()));
        }
    }
    fields.extend(updates);
    // Freshness from the merged fields, as if the stored response had been received now.
    let value = |name: &'static str| fields.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| &v[..]);
    let cc = rules::response_cc(value("cache-control"));
    // The 304's Date, or now: the stored response's own Date would make it look old.
    let date = facts.date.unwrap_or(now);
    let expires = value("expires").next().map(rules::http_date);
    let storable = !(cc.no_store || cc.private || (!policy.store_set_cookie && value("set-cookie").next().is_some()));
    let last_modified = value("last-modified").next().and_then(rules::http_date);
    let cc = if facts.cc.s_maxage.is_some() && cc.s_maxage.is_none() { ResponseCc { s_maxage: facts.cc.s_maxage, ..cc } } else { cc };
    let lifetime = rules::lifetime(e.status, &cc, expires, date, last_modified, policy.ttl);
    let entry = Entry {
        head: entry_head(e.status, reason_of(&e.head), &fields, e.body.len()),
        url: e.url.clone(),
        host_len: e.host_len,
        secondary: e.secondary,
        vary: e.vary.clone(),
        status: e.status,
        fields,
        body: e.body.clone(),
        times: Times { request_time, response_time: now, date_value: date, age_value: facts.age },
        lifetime,
        cc,
        swr: e.swr,
        sie: e.sie,
    };
    (entry, storable)
}

/// The reason phrase of a stored head.
fn reason_of(head: &[u8]) -> &[u8] {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    line.get(13..).unwrap_or_default()
}

/// What the cache did for a response, sent as `Cache-Status` (RFC 9211).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit { ttl: i64 },
    /// Served stale while a refresh runs in the background.
    StaleWhileRevalidate { ttl: i64 },
    /// Served after waiting for another request's fill.
    Collapsed { ttl: i64 },
    /// Forwarded: why, the upstream's status when it answered, and whether the response was stored.
    Forward { fwd: &'static str, status: Option<u16>, stored: bool, ttl: Option<i64> },
    /// Forwarded, the upstream failed, and a stale response was served.
    StaleIfError { status: Option<u16>, ttl: i64 },
}

/// Writes the `Cache-Status` line.
pub fn put_status(out: &mut Vec<u8>, s: Status) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"Cache-Status: ringgate");
    let ttl = |out: &mut Vec<u8>, t: i64, n: &mut itoa::Buffer| {
        out.extend_from_slice(b"; ttl=");
        out.extend_from_slice(n.format(t).as_bytes());
    };
    match s {
        Status::Hit { ttl: t } => {
            out.extend_from_slice(b"; hit");
            ttl(out, t, &mut n);
        }
        Status::StaleWhileRevalidate { ttl: t } => {
            out.extend_from_slice(b"; hit");
            ttl(out, t, &mut n);
            out.extend_from_slice(b"; detail=stale-while-revalidate");
        }
        Status::Collapsed { ttl: t } => {
            out.extend_from_slice(b"; hit");
            ttl(out, t, &mut n);
            out.extend_from_slice(b"; collapsed");
        }
        Status::Forward { fwd, status, stored, ttl: t } => {
            out.extend_from_slice(b"; fwd=");
            out.extend_from_slice(fwd.as_bytes());
            if let Some(st) = status {
                out.extend_from_slice(b"; fwd-status=");
                out.extend_from_slice(n.format(st).as_bytes());
            }
            if stored {
                out.extend_from_slice(b"; stored");
            }
            if let Some(t) = t {
                ttl(out, t, &mut n);
            }
        }
        Status::StaleIfError { status, ttl: t } => {
            out.extend_from_slice(b"; fwd=stale");
            if let Some(st) = status {
                out.extend_from_slice(b"; fwd-status=");
                out.extend_from_slice(n.format(st).as_bytes());
            }
            ttl(out, t, &mut n);
            out.extend_from_slice(b"; detail=stale-if-error");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The client's own conditionals (RFC 9110 §13.2.2), answered from a stored response.
#[derive(Debug, Clone, Default)]
pub struct Conditional {
    pub if_none_match: Option<Vec<u8>>,
    pub if_modified_since: Option<i64>,
}

impl Conditional {
    pub fn of(req: &RequestHead) -> Conditional {
        let inm: Vec<&[u8]> = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("if-none-match")).map(|h| h.value).collect();
        Conditional {
            if_none_match: (!inm.is_empty()).then(|| inm.join(&b","[..])),
            if_modified_since: stage::header(req, "if-modified-since").and_then(rules::http_date),
        }
    }

    /// True when the stored response is "not modified" for the client.
    pub fn not_modified(&self, e: &Entry) -> bool {
        not_modified(e, self.if_none_match.as_deref().map(std::iter::once), self.if_modified_since)
    }

    /// The same answer read straight from a request's head (a hit: nothing kept, nothing
    /// allocated).
    pub fn not_modified_for(req: &RequestHead, e: &Entry) -> bool {
        let inm = || req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("if-none-match")).map(|h| h.value);
        let ims = stage::header(req, "if-modified-since").and_then(rules::http_date);
        not_modified(e, inm().next().is_some().then(inm), ims)
    }
}

/// RFC 9110 §13.2.2: `If-None-Match` when present (its field values), else `If-Modified-Since`
/// against the stored `Last-Modified`.
fn not_modified<'a>(e: &Entry, if_none_match: Option<impl Iterator<Item = &'a [u8]>>, if_modified_since: Option<i64>) -> bool {
    if e.status != 200 {
        return false;
    }
    if let Some(inm) = if_none_match {
        return rules::none_match(inm, e.field("etag"));
    }
    match (if_modified_since, e.field("last-modified").and_then(rules::http_date)) {
        (Some(ims), Some(lm)) => lm <= ims,
        _ => false,
    }
}

/// Fields a 304 from the cache carries (RFC 9110 §15.4.5).
fn in_304(name: &[u8], has_etag: bool) -> bool {
    const NAMES: &[&[u8]] = &[b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name)) || (!has_etag && name.eq_ignore_ascii_case(b"last-modified"))
}

/// Writes the start of the head served from `e`: its status line and fields (or a 304's), then
/// `Age` and `Cache-Status`. The caller ends the head.
pub fn put_head(out: &mut Vec<u8>, e: &Entry, not_modified: bool, now: i64, status: Status) {
    if not_modified {
        let has_etag = e.field("etag").is_some();
        put_status_and_fields(out, 304, b"Not Modified", e.fields.iter().filter(|(n, _)| in_304(n, has_etag)));
    } else {
        out.extend_from_slice(&e.head);
    }
    out.extend_from_slice(b"Age: ");
    out.extend_from_slice(itoa::Buffer::new().format(e.times.current_age(now).max(0)).as_bytes());
    out.extend_from_slice(b"\r\n");
    put_status(out, status);
}

/// Seconds of freshness left (negative: stale by that much).
pub fn ttl(e: &Entry, now: i64) -> i64 {
    e.lifetime - e.times.current_age(now)
}

/// Purges asked on the admin listener, applied by every shard to its own stores.
pub struct Purges {
    seq: AtomicU64,
    log: Mutex<VecDeque<Purge>>,
    /// Per shard: the last purge it applied.
    applied: Vec<AtomicU64>,
}

pub struct Purge {
    pub seq: u64,
    /// Lower-case host without port; empty: any host.
    pub host: Vec<u8>,
    /// Path with query (one URL), or a path prefix.
    pub path: Vec<u8>,
    pub prefix: bool,
    pub removed: AtomicU64,
}

/// Purges kept for shards that have not applied them yet; a shard further behind clears its
/// stores instead.
const PURGE_LOG: usize = 1024;

impl Purges {
    pub fn new(shards: usize) -> Purges {
        Purges { seq: AtomicU64::new(0), log: Mutex::new(VecDeque::new()), applied: (0..shards).map(|_| AtomicU64::new(0)).collect() }
    }

    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Records a purge; returns its number.
    pub fn push(&self, host: Vec<u8>, path: Vec<u8>, prefix: bool) -> u64 {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.seq.load(Ordering::Acquire) + 1;
        log.push_back(Purge { seq, host, path, prefix, removed: AtomicU64::new(0) });
        while log.len() > PURGE_LOG {
            log.pop_front();
        }
        self.seq.store(seq, Ordering::Release);
        seq
    }

    /// Waits up to `limit` for every shard to apply purge `seq`; returns the entries removed and
    /// whether every shard did.
    pub fn wait(&self, seq: u64, limit: std::time::Duration) -> (u64, bool) {
        let until = std::time::Instant::now() + limit;
        loop {
            let all = self.applied.iter().all(|a| a.load(Ordering::Acquire) >= seq);
            if all || std::time::Instant::now() >= until {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                let removed = log.iter().find(|p| p.seq == seq).map_or(0, |p| p.removed.load(Ordering::Relaxed));
                return (removed, all);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// A shard applies the purges its stores have not seen (on its tick, and before a lookup).
    /// The log's lock is held only to copy them out.
    pub fn apply(&self, shard: usize, stores: &[Rc<RefCell<Store>>]) {
        let seq = self.seq();
        let oldest_seen = stores.iter().map(|s| s.borrow().purge_seen).min().unwrap_or(seq);
        if oldest_seen < seq {
            let pending: Option<Vec<(u64, Vec<u8>, Vec<u8>, bool)>> = {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                match log.front() {
                    Some(oldest) if oldest.seq <= oldest_seen + 1 => Some(
                        log.iter()
                            .filter(|p| p.seq > oldest_seen && p.seq <= seq)
                            .map(|p| (p.seq, p.host.clone(), p.path.clone(), p.prefix))
                            .collect(),
                    ),
                    // The shard fell further behind than the log keeps.
                    _ => None,
                }
            };
            let mut removed: Vec<(u64, u64)> = Vec::new();
            for s in stores {
                let mut s = s.borrow_mut();
                let seen = s.purge_seen;
                if seen >= seq {
                    continue;
                }
                match &pending {
                    Some(list) => {
                        for (pseq, host, path, prefix) in list.iter().filter(|p| p.0 > seen) {
                            let n = s.purge(host, path, *prefix) as u64;
                            s.metrics.purged.set(s.metrics.purged.get() + n);
                            removed.push((*pseq, n));
                        }
                    }
                    None => {
                        let n = s.clear() as u64;
                        s.metrics.purged.set(s.metrics.purged.get() + n);
                    }
                }
                s.purge_seen = seq;
            }
            if !removed.is_empty() {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                for (pseq, n) in removed {
                    if let Some(p) = log.iter().find(|p| p.seq == pseq) {
                        p.removed.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        }
        if let Some(a) = self.applied.get(shard) {
            a.fetch_max(seq, Ordering::AcqRel);
        }
    }
}

/// Percent-decodes a query parameter value (`+` is a space).
pub fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The host (lower-case, no port) and path-with-query of a purge URL: `http://host/path?q`,
/// `//host/path` or `/path`.
pub fn split_url(url: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = if let Some(r) = url.strip_prefix(b"http://").or_else(|| url.strip_prefix(b"https://")).or_else(|| url.strip_prefix(b"//")) {
        r
    } else if url.first() == Some(&b'/') {
        return Some((Vec::new(), url.to_vec()));
    } else {
        return None;
    };
    let slash = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
    let host = parse::host_without_port(&rest[..slash]).to_ascii_lowercase();
    let mut path = rest[slash..].to_vec();
    if path.first() != Some(&b'/') {
        path.insert(0, b'/');
    }
    Some((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_urls() {
        assert_eq!(split_url(b"http://Shop.example:8080/p?x=1"), Some((b"shop.example".to_vec(), b"/p?x=1".to_vec())));
        assert_eq!(split_url(b"/a/b"), Some((Vec::new(), b"/a/b".to_vec())));
        assert_eq!(split_url(b"http://h"), Some((b"h".to_vec(), b"/".to_vec())));
        assert_eq!(split_url(b"ftp://h/x"), None);
        assert_eq!(percent_decode(b"http%3A%2F%2Fh%2Fa%3Fb%3D1"), b"http://h/a?b=1".to_vec());
        assert_eq!(percent_decode(b"a%2"), b"a%2".to_vec());
    }

    #[test]
    fn cache_status_lines() {
        let table = [
            (Status::Hit { ttl: 30 }, "Cache-Status: ringgate; hit; ttl=30\r\n"),
            (Status::Forward { fwd: "miss", status: Some(200), stored: true, ttl: Some(60) }, "Cache-Status: ringgate; fwd=miss; fwd-status=200; stored; ttl=60\r\n"),
            (Status::StaleIfError { status: Some(503), ttl: -5 }, "Cache-Status: ringgate; fwd=stale; fwd-status=503; ttl=-5; detail=stale-if-error\r\n"),
            (Status::StaleWhileRevalidate { ttl: -2 }, "Cache-Status: ringgate; hit; ttl=-2; detail=stale-while-revalidate\r\n"),
        ];
        for (s, want) in table {
            let mut out = Vec::new();
            put_status(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}

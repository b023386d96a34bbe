//! The response cache on the request path. After the route's stages admit a GET or HEAD, the
//! request's key is looked up in the shard's store: a usable entry is served from its stored,
//! immutable bytes (head and body in one vectored write, nothing copied per hit); a stale one
//! within `stale-while-revalidate` is served and refreshed in the background; otherwise the
//! request goes upstream (with validators when an entry is held, joined by concurrent misses of
//! the same key, which wait for it), and the response is stored when RFC 9111 allows, refreshed
//! by a 304, or replaced by a stale entry when the upstream fails within `stale-if-error`. A
//! successful unsafe method invalidates its URL.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use monoio::buf::IoVecBuf;

use super::{client_write, read_bounded, timed_fill, Body, Client, Failure, Intake, NoBody, Next, Plan};
use crate::cache::rules::{self, RequestCc};
use crate::cache::{self, Conditional, Draft, Entry, Fill, FillGuard, Found, Key, Status, Store};
use crate::config::cache::CachePolicy;
use crate::config::transform::HeaderEdits;
use crate::error::ProxyError;
use crate::http::body::ChunkedDecoder;
use crate::http::io::{ClientStream, ReadBuf};
use crate::http::parse::{self, Framing, RequestHead, ResponseHead, Version};
use crate::http::write::RequestId;
use crate::observe::metrics::CacheMetrics;
use crate::policy::transform;
use crate::policy::HeaderBuf;
use crate::ctx::Ctx;
use crate::runtime::generation::Generation;
use crate::runtime::shard::Shard;
use crate::upstream::{self, Head};

/// A response served from the store.
pub(super) struct Hit {
    pub entry: Rc<Entry>,
    pub status: Status,
    /// The client's own conditional matched: a 304.
    pub not_modified: bool,
    pub head_only: bool,
    pub version: Version,
    pub request_id: RequestId,
    pub response_headers: HeaderBuf,
    pub route: usize,
    /// A stale hit: the revalidation to run in the background once it is served.
    pub refresh: Option<Box<Refresh>>,
}

/// A background revalidation of a stale entry.
pub(super) struct Refresh {
    /// The forwarded request head, with validators.
    head: Vec<u8>,
    fill: FillCtx,
    _guard: FillGuard,
}

/// What the store needs to make an entry from a response to a request.
pub(super) struct FillCtx {
    pub store: Rc<RefCell<Store>>,
    pub key: Key,
    pub url: Vec<u8>,
    pub host_len: usize,
    /// The client's request head (its Vary fields, and a lookup again after waiting).
    pub request: Vec<u8>,
    pub request_time: i64,
    pub authorization: bool,
    pub req_cc: RequestCc,
    /// The entry being validated.
    pub validating: Option<Rc<Entry>>,
    /// The route (for the headers the gateway owns on it).
    pub route: usize,
}

/// A cached route's request that goes upstream.
pub(super) struct CachePlan {
    pub fill: FillCtx,
    pub what: What,
    pub conditional: Conditional,
    pub guard: Option<FillGuard>,
}

pub(super) enum What {
    /// Another request is filling this key: wait for it.
    Wait(Rc<Fill>),
    /// Validate the held entry (`fill.validating`) with the upstream.
    Validate,
    /// Nothing usable stored (`vary`: other variants of the URL are).
    Miss { vary: bool },
    /// A HEAD with nothing stored: forwarded as it is, not stored.
    Bypass,
    /// An unsafe method: a success invalidates the URL.
    Invalidate,
}

/// What the lookup of a request decided.
pub(super) enum Looked {
    Hit(Hit),
    /// A stale hit to serve and revalidate: the forwarded head is still to be written.
    StaleHit(Hit, FillCtx, FillGuard),
    Forward(Box<CachePlan>),
    NotCached,
}

thread_local!(static URL: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512)));

fn metrics(store: &Rc<RefCell<Store>>) -> Rc<CacheMetrics> {
    store.borrow().metrics.clone()
}

/// Looks a request up in the route's store (step 1b of the request path).
#[allow(clippy::too_many_arguments)]
pub(super) fn lookup(
    shard: &Shard,
    gen: &Generation,
    policy: &CachePolicy,
    route: usize,
    req: &RequestHead,
    head_bytes: &[u8],
    consumer: Option<&[u8]>,
    request_id: RequestId,
    response_headers: &HeaderBuf,
) -> Looked {
    let store = &gen.caches[policy.cache];
    if shard.global.purges.seq() != store.borrow().purge_seen {
        shard.global.purges.apply(shard.id, &gen.caches);
    }
    let now = rules::now();
    let cc_values = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("cache-control")).map(|h| h.value);
    let pragma = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("pragma")).map(|h| h.value);
    let req_cc = rules::request_cc(cc_values, pragma);
    let cacheable_method = matches!(req.method, "GET" | "HEAD");
    URL.with(|url| {
        let mut url = url.borrow_mut();
        let (key, host_len) = cache::key(policy, req, consumer, &mut url);
        let fill_ctx = |validating| FillCtx {
            store: store.clone(),
            key,
            url: url.clone(),
            host_len,
            request: head_bytes.to_vec(),
            request_time: now,
            // RFC 9111 §3.5 speaks of Authorization; any credential the route checked (an API
            // key, a cookie, a client certificate) makes the response as personal, unless the
            // key already separates consumers.
            authorization: req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("authorization"))
                || (consumer.is_some() && !policy.uses(&crate::config::cache::KeyPart::Consumer)),
            req_cc,
            validating,
            route,
        };
        let plan = |what, validating, guard| {
            Looked::Forward(Box::new(CachePlan { fill: fill_ctx(validating), what, conditional: Conditional::of(req), guard }))
        };
        if !cacheable_method {
            // RFC 9111 §4.4: unsafe methods (and unknown ones) invalidate; OPTIONS and TRACE are safe.
            let what = if matches!(req.method, "OPTIONS" | "TRACE") { What::Bypass } else { What::Invalidate };
            return plan(what, None, None);
        }
        let found = cache::lookup(&store.borrow(), key, &url, req.headers, &req_cc, now);
        let m = metrics(store);
        let hit = |entry: Rc<Entry>, status| {
            Hit {
                not_modified: Conditional::not_modified_for(req, &entry),
                entry,
                status,
                head_only: req.method == "HEAD",
                version: req.version,
                request_id,
                response_headers: response_headers.clone(),
                route,
                refresh: None,
            }
        };
        match found {
            Found::Hit { entry, stale: false } => {
                store.borrow().touch(key.bucket, &entry);
                CacheMetrics::count(&m.hits);
                let ttl = cache::ttl(&entry, now);
                Looked::Hit(hit(entry, Status::Hit { ttl }))
            }
            Found::Hit { entry, stale: true } => {
                store.borrow().touch(key.bucket, &entry);
                CacheMetrics::count(&m.stale);
                let ttl = cache::ttl(&entry, now);
                match Store::fill(store, key.fill()) {
                    Ok(guard) if req.method == "GET" => Looked::StaleHit(hit(entry.clone(), Status::StaleWhileRevalidate { ttl }), fill_ctx(Some(entry)), guard),
                    // A refresh is under way already.
                    _ => Looked::Hit(hit(entry, Status::StaleWhileRevalidate { ttl })),
                }
            }
            _ if req_cc.only_if_cached => Looked::NotCached,
            Found::Validate(entry) => {
                CacheMetrics::count(&m.misses);
                if req.method == "HEAD" {
                    // A HEAD is forwarded as it is, the client's validators with it: its 304 is the
                    // client's, not a refresh of the held entry.
                    let _ = entry;
                    return plan(What::Bypass, None, None);
                }
                match Store::fill(store, key.fill()) {
                    Ok(guard) => plan(What::Validate, Some(entry), Some(guard)),
                    Err(fill) => plan(What::Wait(fill), Some(entry), None),
                }
            }
            Found::Miss { vary } => {
                CacheMetrics::count(&m.misses);
                if req.method == "HEAD" {
                    return plan(What::Bypass, None, None);
                }
                match Store::fill(store, key.fill()) {
                    Ok(guard) => plan(What::Miss { vary }, None, Some(guard)),
                    Err(fill) => plan(What::Wait(fill), None, None),
                }
            }
        }
    })
}


/// Announces this cache to the origin, which may then target `Surrogate-Control` at it.
pub(super) const SURROGATE_CAPABILITY: &[u8] = b"Surrogate-Capability: ringgate=\"Surrogate/1.0\"\r\n";

/// The validators sent upstream for a held entry (RFC 9111 §4.3.1).
pub(super) fn validators(e: &Entry, lines: &mut HeaderBuf) {
    if let Some(etag) = e.field("etag") {
        lines.line(b"If-None-Match", etag);
    }
    if let Some(lm) = e.field("last-modified") {
        lines.line(b"If-Modified-Since", lm);
    }
}

impl Hit {
    pub(super) fn stale_with_refresh(mut hit: Hit, head: &[u8], fill: FillCtx, guard: FillGuard) -> Hit {
        hit.refresh = Some(Box::new(Refresh { head: head.to_vec(), fill, _guard: guard }));
        hit
    }

    pub(super) fn from_plan(plan: &Plan, entry: Rc<Entry>, status: Status) -> Hit {
        Hit {
            not_modified: plan.cache.as_ref().is_some_and(|c| c.conditional.not_modified(&entry)),
            entry,
            status,
            head_only: plan.head_request,
            version: plan.version,
            request_id: plan.request_id,
            response_headers: plan.response_headers.clone(),
            route: plan.route,
            refresh: None,
        }
    }
}

/// Serves a stored response: its head with `Age`, `Cache-Status`, the route's response lines
/// and the request id, and its body, in one vectored write.
pub(super) async fn serve<S: ClientStream>(
    shard: &Rc<Shard>,
    gen: &Rc<Generation>,
    ctx: &mut Ctx,
    client: &mut Client<S>,
    out: &mut Vec<u8>,
    mut hit: Hit,
    intake: &mut Intake,
) -> Result<Next, Failure> {
    if let Some(r) = hit.refresh.take() {
        let (shard2, gen2, route) = (shard.clone(), gen.clone(), hit.route);
        monoio::spawn(async move {
            if AssertUnwindSafe(refresh(shard2, gen2, route, r)).catch_unwind().await.is_err() {
                tracing::error!("panic while refreshing a cached response");
            }
        });
    }
    let keep = intake.settle(&mut client.rbuf) && !shard.drain.is_draining();
    let now = rules::now();
    out.clear();
    cache::put_head(out, &hit.entry, hit.not_modified, now, hit.status);
    let route = &gen.routes[hit.route];
    route_lines(out, gen, hit.route, hit.request_id, &hit.response_headers);
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if hit.version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ctx.status = if hit.not_modified { 304 } else { hit.entry.status };
    ctx.service = Some(route.service);
    let dur = gen.cfg.timeouts.body;
    let with_body = !hit.not_modified && !hit.head_only && !hit.entry.body.is_empty();
    let written = if with_body { write_head_body(client, out, hit.entry.clone(), dur).await } else { client_write(client, out, dur).await.is_ok() };
    if !written {
        return Err(Failure::silent());
    }
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// The lines every response of the route gets after the stored ones: its response `set`
/// headers, the request id, and the policies' lines (CORS, RateLimit).
fn route_lines(out: &mut Vec<u8>, gen: &Generation, route: usize, request_id: RequestId, policy_lines: &HeaderBuf) {
    if let Some(edits) = gen.routes[route].transform.response.as_ref().map(|t| &t.headers) {
        for (name, value) in &edits.set {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            transform::render_response(out, value, request_id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"X-Request-Id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(policy_lines.as_bytes());
}

/// Head and stored body as one `writev`: the body is the entry's own bytes.
struct HeadBody {
    iov: Box<[libc::iovec; 2]>,
    head: Vec<u8>,
    _entry: Rc<Entry>,
}

// SAFETY: the iovecs point into `head` and the entry's body, both owned by the value (the
// boxed array does not move with it) and unchanged while the runtime holds it.
unsafe impl IoVecBuf for HeadBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        2
    }
}

// Boxed on purpose: the kernel reads the iovecs while the value holding the box moves.
#[allow(clippy::vec_box)]
mod iovs {
    use std::cell::RefCell;
    thread_local!(pub static IOVS: RefCell<Vec<Box<[libc::iovec; 2]>>> = const { RefCell::new(Vec::new()) });
}
use iovs::IOVS;

async fn write_head_body<S: ClientStream>(client: &mut Client<S>, out: &mut Vec<u8>, entry: Rc<Entry>, dur: Duration) -> bool {
    let iov = IOVS.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| Box::new([libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2]));
    let head = std::mem::take(out);
    let total = head.len() + entry.body.len();
    let mut buf = HeadBody { iov, head, _entry: entry.clone() };
    buf.iov[0] = libc::iovec { iov_base: buf.head.as_ptr() as *mut _, iov_len: buf.head.len() };
    buf.iov[1] = libc::iovec { iov_base: entry.body.as_ptr() as *mut _, iov_len: entry.body.len() };
    let mut sent = 0;
    let ok = loop {
        if sent == total {
            break true;
        }
        let (res, b) = match monoio::time::timeout(dur, client.stream.writev(buf)).await {
            Ok(r) => r,
            Err(_) => return false,
        };
        buf = b;
        match res {
            Ok(0) | Err(_) => break false,
            Ok(mut n) => {
                sent += n;
                for v in buf.iov.iter_mut() {
                    let k = n.min(v.iov_len);
                    v.iov_base = (v.iov_base as usize + k) as *mut _;
                    v.iov_len -= k;
                    n -= k;
                }
            }
        }
    };
    client.sent += sent as u64;
    *out = std::mem::take(&mut buf.head);
    IOVS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < 64 {
            p.push(buf.iov);
        }
    });
    ok
}

/// What to do with the upstream's response to a cached route's request.
pub(super) enum Action {
    /// Relay it as any response (it is not stored).
    Relay,
    /// Read the body, store it, serve the entry.
    Store(Box<Draft>),
    /// A 304 refreshed the held entry: serve it.
    Refreshed(Rc<Entry>),
    /// The upstream failed: serve the held entry stale.
    Stale(Rc<Entry>, u16),
}

/// Decides, from the response head, what the cache does with it. For a response relayed as it
/// is, the `Cache-Status` line is added to `lines`.
#[allow(clippy::too_many_arguments)]
pub(super) fn response_action(
    shard: &Shard,
    gen: &Generation,
    policy: &CachePolicy,
    c: &CachePlan,
    res: &ResponseHead,
    head_request: bool,
    edits: Option<&HeaderEdits>,
    lines: &mut HeaderBuf,
) -> Action {
    let now = rules::now();
    let fill = &c.fill;
    let m = metrics(&fill.store);
    if matches!(c.what, What::Invalidate) {
        if (200..400).contains(&res.code) {
            invalidate(shard, gen, policy, fill, res);
        }
        let mut l = Vec::new();
        cache::put_status(&mut l, Status::Forward { fwd: "bypass", status: Some(res.code), stored: false, ttl: None });
        lines.raw(&l);
        return Action::Relay;
    }
    match classify(gen, policy, fill, res, head_request, edits, now) {
        Classified::Refreshed(e) => {
            CacheMetrics::count(&m.revalidated);
            if let Some(g) = &c.guard {
                g.finish(Some(e.clone()));
            }
            return Action::Refreshed(e);
        }
        Classified::Store(d) if !head_request => return Action::Store(d),
        _ => {}
    }
    // Not stored: the requests waiting for this fill need not wait for its body.
    if let Some(g) = &c.guard {
        g.finish(None);
    }
    if let Some(e) = fill.validating.as_ref().filter(|e| matches!(res.code, 500 | 502 | 503 | 504) && stale_allowed(e, now)) {
        CacheMetrics::count(&m.stale);
        return Action::Stale(e.clone(), res.code);
    }
    let fwd = match c.what {
        What::Validate => "stale",
        What::Miss { vary: true } => "vary-miss",
        _ if fill.req_cc.no_cache => "request",
        _ => "miss",
    };
    let mut l = Vec::new();
    cache::put_status(&mut l, Status::Forward { fwd, status: Some(res.code), stored: false, ttl: None });
    lines.raw(&l);
    Action::Relay
}

enum Classified {
    Refreshed(Rc<Entry>),
    Store(Box<Draft>),
    No,
}

/// A response to a GET of a cached route: a 304 that refreshes the held entry, one to store, or
/// neither.
#[allow(clippy::too_many_arguments)]
fn classify(gen: &Generation, policy: &CachePolicy, fill: &FillCtx, res: &ResponseHead, head_request: bool, edits: Option<&HeaderEdits>, now: i64) -> Classified {
    let facts = cache::response_facts(res);
    if res.code == 304 {
        let Some(held) = fill.validating.as_ref() else { return Classified::No };
        // The 304 answers the validators this cache sent for `held` (a HEAD's own 304 never
        // gets here): it freshens `held`, whose own ETag stays (an ETag the 304 carries is not
        // taken over, as the cache-tests suite expects of RFC 9111 §3.2).
        let (e, storable) = cache::refreshed(held, res, &facts, policy, edits, fill.request_time, now);
        let e = Rc::new(e);
        // A 304 that now forbids storing still answers this request, once.
        if storable {
            fill.store.borrow_mut().insert(fill.key.bucket, e.clone());
        } else {
            fill.store.borrow_mut().invalidate(fill.key.bucket);
        }
        return Classified::Refreshed(e);
    }
    if head_request {
        return Classified::No;
    }
    let why = rules::not_storable(&rules::StoreFacts {
        status: res.code,
        cc: facts.cc,
        has_expires: facts.expires.is_some(),
        vary_star: facts.vary_star,
        set_cookie: facts.set_cookie,
        authorization: fill.authorization,
        request_no_store: fill.req_cc.no_store,
        skip_set_cookie: !policy.store_set_cookie,
    });
    let max = fill.store.borrow().def.max_object;
    let fits = match res.framing {
        Framing::Length(n) => n <= max,
        Framing::Chunked | Framing::UntilClose => true,
        Framing::None => true,
    };
    if why.is_some() || !fits || varies_on_gateway_header(gen, fill.route, res) {
        return Classified::No;
    }
    let mut headers = [httparse::EMPTY_HEADER; crate::config::MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut headers);
    let request_headers: &[httparse::Header] = match req.parse(&fill.request) {
        Ok(_) => req.headers,
        Err(_) => &[],
    };
    let r = cache::DraftRequest {
        policy,
        key: fill.key,
        url: &fill.url,
        host_len: fill.host_len,
        request_headers,
        request_time: fill.request_time,
    };
    Classified::Store(Box::new(cache::draft(&r, res, &facts, cache::stored_fields(res, edits), now)))
}

/// Whether the response varies on a request header the gateway sets, removes or renames on this
/// route (identity headers from credentials, transforms): the variant would be chosen by what
/// the client sent, not by what the upstream saw, so such a response is not stored.
fn varies_on_gateway_header(gen: &Generation, route: usize, res: &ResponseHead) -> bool {
    let rt = &gen.routes[route];
    let edits = rt.transform.request.as_ref().map(|t| &t.headers);
    let owned = |name: &[u8]| {
        let is = |h: &String| h.as_bytes().eq_ignore_ascii_case(name);
        rt.strip_headers.iter().any(is)
            || edits.is_some_and(|e| {
                e.set.iter().any(|(h, _)| is(h)) || e.remove.iter().any(is) || e.rename.iter().any(|(a, b)| is(a) || is(b))
            })
    };
    res.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("vary"))
        .flat_map(|h| parse::list_items(h.value))
        .any(owned)
}

/// Whether a held entry may be served stale because the upstream failed (RFC 5861 §4).
fn stale_allowed(e: &Entry, now: i64) -> bool {
    let ttl = cache::ttl(e, now);
    !e.cc.no_stale() && (ttl > 0 || -ttl <= e.sie) && e.sie > 0
}

/// The held entry to serve when the upstream cannot be reached (or its breaker is open).
pub(super) fn stale_on_error(plan: &Plan) -> Option<Hit> {
    let c = plan.cache.as_ref()?;
    let e = c.fill.validating.as_ref()?;
    let now = rules::now();
    if !stale_allowed(e, now) {
        return None;
    }
    CacheMetrics::count(&metrics(&c.fill.store).stale);
    Some(Hit::from_plan(plan, e.clone(), Status::StaleIfError { status: None, ttl: cache::ttl(e, now) }))
}

/// RFC 9111 §4.4: a successful unsafe request invalidates its URL, and the URLs in `Location`
/// and `Content-Location` on the same host, on every shard (as a purge: this shard at once, the
/// others before their next lookup).
fn invalidate(shard: &Shard, gen: &Generation, policy: &CachePolicy, fill: &FillCtx, res: &ResponseHead) {
    let host = fill.url[..fill.host_len].to_vec();
    let purges = &shard.global.purges;
    purges.push(host.clone(), fill.url[fill.host_len..].to_vec(), false);
    let mut url = Vec::new();
    for h in res.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("location") || h.name.eq_ignore_ascii_case("content-location")) {
        let Some((to_host, target)) = cache::split_url(parse::trim(h.value)) else { continue };
        if !to_host.is_empty() && !host.is_empty() && to_host != host {
            continue;
        }
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(q) => (&target[..q], &target[q..]),
            None => (&target[..], &b""[..]),
        };
        let (_, host_len) = cache::url_key(policy, &host, path, query, &mut url);
        purges.push(host.clone(), url[host_len..].to_vec(), false);
    }
    let before = fill.store.borrow().len();
    purges.apply(shard.id, &gen.caches);
    let n = before.saturating_sub(fill.store.borrow().len());
    let m = &fill.store.borrow().metrics;
    m.invalidated.set(m.invalidated.get() + n as u64);
}

/// After waiting for another request's fill: the stored response, if it answers this request
/// (one the fill just validated is served even if it must be validated on other uses).
pub(super) fn after_wait(plan: &Plan, fill: &Fill) -> Option<Hit> {
    let c = plan.cache.as_ref()?;
    let mut headers = [httparse::EMPTY_HEADER; crate::config::MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&c.fill.request).ok()?;
    let now = rules::now();
    let found = cache::lookup(&c.fill.store.borrow(), c.fill.key, &c.fill.url, req.headers, &c.fill.req_cc, now);
    let entry = match found {
        Found::Hit { entry, .. } => entry,
        Found::Validate(entry) if fill.entry.borrow().as_ref().is_some_and(|f| Rc::ptr_eq(f, &entry)) => entry,
        _ => return None,
    };
    CacheMetrics::count(&metrics(&c.fill.store).collapsed);
    let ttl = cache::ttl(&entry, now);
    Some(Hit::from_plan(plan, entry, Status::Collapsed { ttl }))
}

/// Reads a response to store, stores it and serves it; one larger than `max_object` streams
/// through instead (chunked to an HTTP/1.1 client, to the close otherwise).
#[allow(clippy::too_many_arguments)]
pub(super) async fn store_and_serve<S: ClientStream>(
    shard: &Rc<Shard>,
    gen: &Rc<Generation>,
    ctx: &mut Ctx,
    client: &mut Client<S>,
    out: &mut Vec<u8>,
    plan: &Plan,
    mut ex: upstream::Exchange<'_>,
    framing: Framing,
    upstream_keep_alive: bool,
    draft: Box<Draft>,
    intake: &mut Intake,
) -> Result<Next, Failure> {
    let Some(c) = plan.cache.as_ref() else { return Err(Failure::new(ProxyError::Internal, Some(plan))) };
    let dur = gen.cfg.timeouts.body;
    let max = c.fill.store.borrow().def.max_object;
    let read = read_bounded(&mut ex.conn.stream, &mut ex.buf, framing, max, gen.cfg.limits.max_trailer, dur).await;
    ctx.upstream_done = Some(Instant::now());
    let leftover = ex.buf.pending_len();
    match read {
        Err(detail) => {
            shard.bufs.put(std::mem::take(&mut ex.buf.data));
            // Nothing was sent yet: a held entry may still answer (RFC 5861 §4).
            if let Some(hit) = stale_on_error(plan) {
                return serve(shard, gen, ctx, client, out, hit, intake).await;
            }
            let mut f = Failure::new(ProxyError::UpstreamClosed, Some(plan));
            f.detail = Some(detail.to_string());
            Err(f)
        }
        Ok(Body::Whole(body)) => {
            shard.bufs.put(std::mem::take(&mut ex.buf.data));
            if upstream_keep_alive && leftover == 0 && framing != Framing::UntilClose {
                gen.upstreams.checkin(ex.conn);
            }
            let status = draft.status;
            let bucket = draft.bucket;
            let entry = Rc::new(draft.finish(body));
            let stored = c.fill.store.borrow_mut().insert(bucket, entry.clone());
            if let Some(g) = &c.guard {
                g.finish(stored.then(|| entry.clone()));
            }
            let fwd = if matches!(c.what, What::Validate) { "stale" } else { "miss" };
            let ttl = cache::ttl(&entry, rules::now());
            let hit = Hit::from_plan(plan, entry, Status::Forward { fwd, status: Some(status), stored, ttl: Some(ttl) });
            serve(shard, gen, ctx, client, out, hit, intake).await
        }
        Ok(Body::Over(prefix, decoder)) => stream_over(shard, gen, ctx, client, out, plan, ex, &draft, prefix, decoder).await,
    }
}

/// A response found larger than `max_object` while being read: what was read, then the rest,
/// relayed uncached.
#[allow(clippy::too_many_arguments)]
async fn stream_over<S: ClientStream>(
    shard: &Shard,
    gen: &Generation,
    ctx: &mut Ctx,
    client: &mut Client<S>,
    out: &mut Vec<u8>,
    plan: &Plan,
    mut ex: upstream::Exchange<'_>,
    draft: &Draft,
    prefix: Vec<u8>,
    mut decoder: Option<ChunkedDecoder>,
) -> Result<Next, Failure> {
    let dur = gen.cfg.timeouts.body;
    let chunked = plan.version == Version::Http11;
    out.clear();
    cache::put_status_and_fields(out, draft.status, &draft.reason, draft.fields.iter());
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    cache::put_status(out, Status::Forward { fwd: "miss", status: Some(draft.status), stored: false, ttl: None });
    route_lines(out, gen, plan.route, plan.request_id, &plan.response_headers);
    out.extend_from_slice(b"\r\n");
    ctx.status = draft.status;
    let put = |out: &mut Vec<u8>, data: &[u8]| {
        if chunked {
            if !data.is_empty() {
                super::put_chunk(out, data);
            }
        } else {
            out.extend_from_slice(data);
        }
    };
    put(out, &prefix);
    let fail = |shard: &Shard, ex: &mut upstream::Exchange<'_>| shard.bufs.put(std::mem::take(&mut ex.buf.data));
    if client_write(client, out, dur).await.is_err() {
        fail(shard, &mut ex);
        return Err(Failure::silent());
    }
    loop {
        out.clear();
        let done = match decoder.as_mut() {
            Some(d) => {
                let start = ex.buf.start;
                let Ok((data, consumed, done)) = d.decode_in_place(&mut ex.buf.data[start..]) else {
                    fail(shard, &mut ex);
                    return Err(Failure::after_response(ProxyError::UpstreamClosed));
                };
                put(out, &ex.buf.data[start..start + data]);
                ex.buf.consume(consumed);
                done
            }
            None => {
                let n = ex.buf.pending_len();
                put(out, &ex.buf.data[ex.buf.start..ex.buf.start + n]);
                ex.buf.consume(n);
                false
            }
        };
        if !done {
            if !out.is_empty() && client_write(client, out, dur).await.is_err() {
                fail(shard, &mut ex);
                return Err(Failure::silent());
            }
            match timed_fill(&mut ex.conn.stream, &mut ex.buf, dur).await {
                Ok(k) if k > 0 => continue,
                // A close-delimited body ends with the upstream's close.
                Ok(_) if decoder.is_none() => out.clear(),
                _ => {
                    fail(shard, &mut ex);
                    return Err(Failure::after_response(ProxyError::UpstreamClosed));
                }
            }
        }
        // The end: the last chunk for an HTTP/1.1 client (which keeps its connection).
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        let r = client_write(client, out, dur).await;
        fail(shard, &mut ex);
        return match r {
            Ok(()) if chunked => Ok(Next::KeepAlive),
            Ok(()) => Ok(Next::Close),
            Err(_) => Err(Failure::silent()),
        };
    }
}

/// The response to a background revalidation, as its head decided.
struct RefreshHead {
    class: Classified,
    framing: Framing,
    keep_alive: bool,
    status: u16,
}

/// A stale entry's revalidation in the background: the response (a 304, or a new one that may
/// be stored) replaces it; a failure leaves it as it was.
async fn refresh(shard: Rc<Shard>, gen: Rc<Generation>, route: usize, r: Box<Refresh>) {
    let Refresh { mut head, fill, _guard } = *r;
    let Some(policy) = gen.cfg.routes[route].cache.as_ref() else { return };
    let service = gen.routes[route].service;
    let ups = &gen.upstreams;
    let shared = ups.shared(service);
    let Some(_in_flight) = shared.enter() else { return };
    if shared.breaker.as_ref().is_some_and(|b| b.admit() == upstream::Admit::No) {
        return;
    }
    let max_head = gen.head_limits.max_head;
    let edits = gen.cfg.routes[route].transform.response.as_ref().map(|t| &t.headers);
    let planner = |b: &mut ReadBuf, _: &mut Vec<u8>| -> Result<Option<Head<RefreshHead>>, ProxyError> {
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; crate::config::MAX_HEADERS_CAP];
        let res = match parse::parse_response(b.pending(), &mut headers, false, max_head) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(bad) => return Err(ProxyError::BadResponse(bad.0)),
        };
        if res.code < 200 {
            let n = res.head_len;
            b.consume(n);
            return Ok(Some(Head::Informational));
        }
        let c = classify(&gen, policy, &fill, &res, false, edits, rules::now());
        let h = RefreshHead { class: c, framing: res.framing, keep_alive: res.keep_alive, status: res.code };
        let n = res.head_len;
        b.consume(n);
        Ok(Some(Head::Final(h)))
    };
    let req = upstream::Request { service, first: &mut head, replayable: true, idempotent: true, write_timeout: gen.cfg.timeouts.body, deadline: None, key: None };
    let Ok((mut ex, Head::Final(RefreshHead { class, framing, keep_alive, status }))) = upstream::call(ups, &shard.bufs, req, &mut NoBody, planner).await else { return };
    ups.report(service, ex.conn.endpoint, upstream::Outcome::Responded(status));
    if let Classified::Store(draft) = class {
        let max = fill.store.borrow().def.max_object;
        let read = read_bounded(&mut ex.conn.stream, &mut ex.buf, framing, max, gen.cfg.limits.max_trailer, gen.cfg.timeouts.body).await;
        let leftover = ex.buf.pending_len();
        shard.bufs.put(std::mem::take(&mut ex.buf.data));
        if let Ok(Body::Whole(body)) = read {
            let bucket = draft.bucket;
            let entry = Rc::new(draft.finish(body));
            if fill.store.borrow_mut().insert(bucket, entry.clone()) {
                _guard.finish(Some(entry));
            }
            if keep_alive && leftover == 0 && framing != Framing::UntilClose {
                ups.checkin(ex.conn);
            }
        }
    } else {
        if let Classified::Refreshed(e) = class {
            CacheMetrics::count(&metrics(&fill.store).revalidated);
            _guard.finish(Some(e));
        }
        let leftover = ex.buf.pending_len();
        shard.bufs.put(std::mem::take(&mut ex.buf.data));
        if status == 304 && keep_alive && leftover == 0 {
            ups.checkin(ex.conn);
        }
    }
}

/// `Cache-Status` for a gateway error on a cached route.
pub(super) fn error_status(extra: &mut HeaderBuf) {
    extra.raw(b"Cache-Status: ringgate; fwd=miss; detail=error\r\n");
}

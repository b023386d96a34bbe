//! The request path, top to bottom: read the head → route → policies (IP rules, CORS, auth,
//! rate limits, validation) → forward head and body upstream (pool; a connect failure moves on to
//! the next endpoint, a connection closed before any response byte is retried once elsewhere) →
//! read the response head → forward head and body to the client → decide keep-alive. Every
//! failure becomes a `ProxyError`, answered in one place.
//!
//! What of a request has been read off the connection is owned by one value, [`Intake`]: the head
//! is consumed the moment it parses, whatever the outcome, and the connection carries another
//! request only when `Intake::settle` says every byte of this one is gone. No answer, error or
//! not, can leave a request in the buffer to be parsed again.
//! Allocates nothing per request in steady state (buffers come from the shard pool; the
//! connection loop boxes each request's future, its one allocation), except a JSON-checked body
//! larger than the read buffer, which is buffered whole, and a request whose stages wait (a
//! cluster rate limit's call to Redis: a handful of small allocations).

mod cached;

use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::config::{Balance, HashOn, MAX_HEADERS_CAP};
use crate::ctx::Ctx;
use crate::error::{ProxyError, Side};
use crate::http::body::{ChunkError, ChunkedDecoder};
use crate::http::io::{timed_write, ClientStream, ReadBuf, WriteFail};
use crate::http::parse::{self, Framing, Version};
use crate::http::write::{self, ClientFraming, ErrorResponse, ForwardInfo, Inline, RequestId};
use crate::policy::cors;
use crate::policy::transform;
use crate::policy::stage::{self, Admitted, Flow, Local};
use crate::policy::HeaderBuf;
use crate::router::{strip_segments, RouteMatch};
use crate::runtime::generation::Generation;
use crate::runtime::shard::Shard;
use crate::upstream::{self, BodySource, Head, UpStream};

/// One client connection's state between requests, over any `ClientStream` (plain TCP today).
pub struct Client<S: ClientStream = TcpStream> {
    pub stream: S,
    /// Peer IP as text, for X-Forwarded-For.
    pub ip: Inline<46>,
    pub peer: std::net::IpAddr,
    pub rbuf: ReadBuf,
    /// Bytes written to the client so far (for the request's `bytes_out`).
    pub sent: u64,
}

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// What of the current request has been read off the client connection.
enum Intake {
    /// No complete head yet (or one that failed to parse): where the request ends is unknown.
    NoHead,
    /// The head was parsed and consumed; `body` is what is left of the request.
    Head { keep_alive: bool, body: RequestBody },
}

impl Intake {
    /// The only way to a parsed request: its head leaves the buffer here, whatever follows.
    fn consume_head(rbuf: &mut ReadBuf, head: &HeadInfo, max_trailer: usize) -> Intake {
        rbuf.consume(head.len);
        Intake::Head { keep_alive: head.keep_alive, body: RequestBody::new(head.framing, max_trailer) }
    }

    /// Whether the connection may carry another request: the client wants it and every byte of
    /// this request has been consumed. A body not yet read is discarded if it is already wholly
    /// in the buffer (as nginx discards the body of a request it refused); otherwise the next
    /// request's start is unknown and the connection must close. Idempotent.
    fn settle(&mut self, rbuf: &mut ReadBuf) -> bool {
        match self {
            Intake::NoHead => false,
            Intake::Head { keep_alive, body } => body.discard_buffered(rbuf) && *keep_alive,
        }
    }

    /// The body will not be read (it was refused as too large): the connection closes after the
    /// answer.
    fn abandon_body(&mut self) {
        if let Intake::Head { body, .. } = self {
            if !body.is_done() {
                *body = RequestBody::Abandoned;
            }
        }
    }
}

/// Everything decided from the request head; owned, so it survives the awaits that follow.
struct Plan {
    route: usize,
    service: usize,
    framing: Framing,
    max_body: u64,
    idempotent: bool,
    head_request: bool,
    version: Version,
    expect_continue: bool,
    request_id: RequestId,
    /// Lines the policies add to the response (CORS, RateLimit).
    response_headers: HeaderBuf,
    /// The body is buffered whole (up to this bound) and run through the body stages before it
    /// is forwarded.
    body_bound: Option<u64>,
    /// The request's key on the service's hash ring (consistent_hash).
    balance_key: Option<u64>,
    /// The route transforms the JSON body: the rendered `set` values. The forwarded head then
    /// lacks its framing line and final CRLF, which follow the transformed body's length.
    json: Option<Vec<String>>,
    /// An aggregating route: each part's whole request (head, no body).
    parts: Option<Vec<Vec<u8>>>,
    /// A cached route's request that goes upstream.
    cache: Option<Box<cached::CachePlan>>,
}

/// A request that ends in an error response (or a silent close).
struct Failure {
    err: ProxyError,
    request_id: Option<RequestId>,
    /// Bytes were already sent to the client: the only honest move left is to close.
    responded: bool,
    head_request: bool,
    /// Close without answering (the client is gone or sent nothing).
    silent: bool,
    /// Header lines for the error response (Allow, WWW-Authenticate, RateLimit, ...).
    extra: HeaderBuf,
    /// For an open circuit: the service whose fallback answers.
    service: Option<usize>,
    /// A message naming what failed (a JSON field), instead of the error's general one.
    detail: Option<String>,
}

impl Failure {
    fn new(err: ProxyError, plan: Option<&Plan>) -> Self {
        Failure {
            detail: None,
            err,
            request_id: plan.map(|p| p.request_id),
            responded: false,
            head_request: plan.is_some_and(|p| p.head_request),
            silent: false,
            // Policy headers (RateLimit, CORS) go on every response of the route, errors too.
            extra: plan.map_or_else(HeaderBuf::default, |p| {
                let mut extra = p.response_headers.clone();
                if p.cache.is_some() {
                    cached::error_status(&mut extra);
                }
                extra
            }),
            service: None,
        }
    }

    fn silent() -> Self {
        Failure { silent: true, ..Failure::new(ProxyError::ClientGone, None) }
    }

    fn after_response(err: ProxyError) -> Self {
        Failure { responded: true, ..Failure::new(err, None) }
    }

    /// A body stage's answer.
    fn local(local: Local, plan: &Plan) -> Self {
        match local {
            Local::Error(err, extra) => Failure { extra, ..Failure::new(err, Some(plan)) },
            // Body stages refuse; they do not answer with a success of their own.
            Local::Reply(..) => Failure::new(ProxyError::Internal, Some(plan)),
        }
    }
}

/// Serves one request whose first bytes are in `client.rbuf`. `deadline` bounds the head read.
/// The request runs on the shard's current generation to its end, whatever a reload does
/// meanwhile, and is recorded (metrics, access log) in one place when it ends.
pub async fn serve_request<S: ClientStream>(shard: &Rc<Shard>, client: &mut Client<S>, deadline: Instant) -> Next {
    let gen = shard.generation();
    let mut ctx = Ctx::new(client.peer);
    let (consumed, sent) = (client.rbuf.consumed, client.sent);
    let mut out = shard.bufs.get();
    let mut intake = Intake::NoHead;
    let answered = match request(shard, &gen, &mut ctx, client, &mut out, deadline, &mut intake).await {
        Ok(next) => next,
        Err(f) => answer_failure(shard, &gen, &mut ctx, client, &mut out, f, &mut intake).await,
    };
    shard.bufs.put(out);
    ctx.bytes_in = client.rbuf.consumed - consumed;
    ctx.bytes_out = client.sent - sent;
    ctx.record(shard, &gen);
    // The one place that lets the connection carry on: whatever the answer was, only when this
    // request's bytes are all consumed. (Draining is not checked here: an answer that did not say
    // `Connection: close` promised the client it could send another request, and the drain
    // grace keeps that promise.)
    if answered == Next::KeepAlive && intake.settle(&mut client.rbuf) {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

#[allow(clippy::too_many_arguments)]
async fn request<S: ClientStream>(
    shard: &Rc<Shard>,
    gen: &Rc<Generation>,
    ctx: &mut Ctx,
    client: &mut Client<S>,
    out: &mut Vec<u8>,
    deadline: Instant,
    intake: &mut Intake,
) -> Result<Next, Failure> {
    // 1. Read the head and decide everything it allows: route, policies, the forwarded head.
    //    A stage that waits (a cluster rate limit asking Redis) leaves the head in the buffer,
    //    untouched while it waits, and the head is parsed again to carry on after it.
    let mut resume = None;
    let outcome = loop {
        match plan_request(shard, gen, ctx, client, out, resume.take()) {
            Planned::Head(head, outcome) => {
                *intake = Intake::consume_head(&mut client.rbuf, &head, gen.cfg.limits.max_trailer);
                break outcome;
            }
            Planned::Wait(mut r) => {
                r.wait = r.wait.run().await;
                resume = Some(r);
            }
            Planned::BadHead(f) => return Err(f),
            Planned::NeedMore => match monoio::time::timeout_at(deadline.into(), client.rbuf.fill(&mut client.stream)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Err(Failure::silent()),
                Err(_) => return Err(Failure::new(ProxyError::HeaderTimeout, None)),
            },
        }
    };
    let mut plan = match outcome {
        Outcome::Forward(plan) => plan,
        Outcome::Reject(f) => return Err(f),
        Outcome::Reply(r) => return reply(shard, gen, ctx, client, out, r, intake).await,
        Outcome::Hit(hit) => return cached::serve(shard, gen, ctx, client, out, hit, intake).await,
    };
    // A miss that another request is filling waits for it (bounded), then is served from what
    // it stored, or goes upstream itself.
    if let Some(c) = plan.cache.as_mut() {
        if let cached::What::Wait(fill) = &c.what {
            let fill = fill.clone();
            c.what = cached::What::Miss { vary: false };
            let wait = gen.cfg.routes[plan.route].cache.as_ref().map_or(Duration::ZERO, |p| p.lock_timeout);
            let _ = monoio::time::timeout(wait, fill.wait()).await;
            if fill.entry.borrow().is_some() {
                if let Some(hit) = cached::after_wait(&plan, &fill) {
                    return cached::serve(shard, gen, ctx, client, out, hit, intake).await;
                }
            }
        }
    }
    let Intake::Head { keep_alive, body } = intake else { return Err(Failure::new(ProxyError::Internal, Some(&plan))) };
    let keep_alive = *keep_alive;
    let body_timeout = gen.cfg.timeouts.body;
    // `out` holds the forwarded head from here on.

    // 2. `Expect: 100-continue`: the gateway answers it, then the client sends the body.
    if plan.expect_continue && plan.version == Version::Http11 && plan.framing != Framing::None {
        let (res, _) = client.stream.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]).await;
        if res.is_err() {
            return Err(Failure::silent());
        }
        client.sent += 25;
    }

    // An aggregating route answers from its parts; the request's own body is not forwarded.
    if let Some(heads) = &plan.parts {
        return aggregate(shard, gen, ctx, client, out, &plan, heads, keep_alive).await;
    }

    // 3. Body stages (JSON validation): the whole, bounded body is read and checked before
    //    anything is forwarded.
    let mut buffered = None;
    if let (Some(_), Framing::Length(n)) = (plan.body_bound, plan.framing) {
        let admitted = Admitted { response_headers: plan.response_headers.clone(), ..Admitted::default() };
        let in_out = buffer_body(gen, client, body, n, &plan, out).await?;
        buffered = Some(in_out);
        let n = n as usize;
        let whole: &[u8] = if in_out { &out[out.len() - n..] } else { &client.rbuf.pending()[..n] };
        if let Flow::Respond(local) = gen.routes[plan.route].pipeline.on_body(whole, &admitted) {
            return Err(Failure::local(local, &plan));
        }
    }

    // 3b. A JSON body transform: the body is read whole (a chunked one dechunked), transformed,
    //     and sent with its new length behind the head.
    if let Some(values) = &plan.json {
        let original = match plan.framing {
            Framing::Length(n) => {
                let in_out = match buffered {
                    Some(b) => b,
                    None => buffer_body(gen, client, body, n, &plan, out).await?,
                };
                let n = n as usize;
                if in_out {
                    out.split_off(out.len() - n)
                } else {
                    let v = client.rbuf.pending()[..n].to_vec();
                    client.rbuf.consume(n);
                    v
                }
            }
            _ => {
                let max = gen.cfg.routes[plan.route].transform.request.as_ref().and_then(|t| t.json.as_ref()).map_or(0, |j| j.max);
                read_chunked_body(gen, client, body, max, &plan).await?
            }
        };
        *body = RequestBody::Done;
        let edits = gen.cfg.routes[plan.route].transform.request.as_ref().and_then(|t| t.json.as_ref());
        let transformed = edits.map(|e| transform::json_body(&original, e, values));
        let route_metrics = &gen.routes[plan.route].metrics;
        match transformed {
            Some(Ok(bytes)) => {
                route_metrics.transform("request", "applied");
                write::length_and_body(out, &bytes);
            }
            Some(Err(why)) => {
                route_metrics.transform("request", "failed");
                let err = if why == transform::JsonFail::NotJson { ProxyError::InvalidJson } else { ProxyError::TransformFailed };
                let mut f = Failure::new(err, Some(&plan));
                f.detail = Some(why.detail());
                return Err(f);
            }
            None => write::length_and_body(out, &original),
        }
    }

    // 4. Whatever of the body already arrived goes out with the head, in one write.
    body.take_prefix(&mut client.rbuf, out, plan.max_body).map_err(|e| Failure::new(e, Some(&plan)))?;
    let replayable = body.is_done();

    // 5. Upstream: `upstream::call` picks endpoints, connects or reuses, sends, retries where
    //    safe and reports every attempt; it never writes to the client. 1xx heads come back here
    //    to be relayed.
    let ups = &gen.upstreams;
    ctx.service = Some(plan.service);
    // Fail fast: over the service's max_concurrent, or while its breaker is open.
    let shared = ups.shared(plan.service);
    let in_flight = shared.enter();
    let open = in_flight.is_some() && shared.breaker.as_ref().is_some_and(|b| b.admit() == upstream::Admit::No);
    if in_flight.is_none() || open {
        // RFC 5861 §4: a stale response rather than an error, where the entry allows it.
        if let Some(hit) = cached::stale_on_error(&plan) {
            return cached::serve(shard, gen, ctx, client, out, hit, intake).await;
        }
    }
    let Some(_in_flight) = in_flight else { return Err(Failure::new(ProxyError::Overloaded, Some(&plan))) };
    if open {
        shared.fallbacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut f = Failure::new(ProxyError::CircuitOpen, Some(&plan));
        f.extra.line(b"X-Ringgate-Circuit", b"open");
        f.service = Some(plan.service);
        return Err(f);
    }
    let planner = |b: &mut ReadBuf, o: &mut Vec<u8>| plan_response(shard, gen, &plan, keep_alive, b, o);
    let called = {
        let mut source = ClientBody { body, client: &mut *client, timeout: body_timeout, max_body: plan.max_body };
        let req = upstream::Request {
            service: plan.service,
            first: &mut *out,
            replayable,
            idempotent: plan.idempotent,
            write_timeout: body_timeout,
            deadline: gen.routes[plan.route].timeout.map(|t| ctx.started + t),
            key: plan.balance_key,
        };
        upstream::call(ups, &shard.bufs, req, &mut source, planner).await
    };
    let (mut ex, mut head) = match called {
        Ok(x) => x,
        Err(e) => {
            ctx.upstream = e.addr;
            ctx.os_error = e.os_error;
            if e.err.side() == Side::Upstream {
                if let Some(hit) = cached::stale_on_error(&plan) {
                    return cached::serve(shard, gen, ctx, client, out, hit, intake).await;
                }
            }
            let mut f = Failure::new(e.err, Some(&plan));
            f.silent = e.from_body && e.err == ProxyError::ClientGone;
            return Err(f);
        }
    };
    ctx.upstream = Some(ex.addr);
    ctx.upstream_started = Some(ex.sent_at);
    let resp = loop {
        match head {
            Head::Final(r) => break r,
            Head::Informational => {
                if !out.is_empty() && client_write(client, out, body_timeout).await.is_err() {
                    shard.bufs.put(std::mem::take(&mut ex.buf.data));
                    return Err(Failure::silent());
                }
                head = match ex.next_head(out, planner).await {
                    Ok(h) => h,
                    Err(e) => {
                        shard.bufs.put(std::mem::take(&mut ex.buf.data));
                        return Err(Failure::new(e, Some(&plan)));
                    }
                };
            }
        }
    };
    ups.report(plan.service, ex.conn.endpoint, upstream::Outcome::Responded(resp.status));
    // 5b. The cache: store the response, serve a refreshed or a stale entry.
    match resp.cache {
        cached::Action::Relay => {}
        cached::Action::Store(draft) => {
            return cached::store_and_serve(shard, gen, ctx, client, out, &plan, ex, resp.upstream_framing, resp.upstream_keep_alive, draft, intake).await;
        }
        cached::Action::Refreshed(entry) => {
            let leftover = ex.buf.pending_len();
            shard.bufs.put(std::mem::take(&mut ex.buf.data));
            if resp.upstream_keep_alive && leftover == 0 {
                ups.checkin(ex.conn);
            }
            ctx.upstream_done = Some(Instant::now());
            let ttl = crate::cache::ttl(&entry, crate::cache::rules::now());
            let status = crate::cache::Status::Forward { fwd: "stale", status: Some(304), stored: true, ttl: Some(ttl) };
            let hit = cached::Hit::from_plan(&plan, entry, status);
            return cached::serve(shard, gen, ctx, client, out, hit, intake).await;
        }
        cached::Action::Stale(entry, status) => {
            // The failed response's body is not read: its connection is not reused.
            shard.bufs.put(std::mem::take(&mut ex.buf.data));
            let ttl = crate::cache::ttl(&entry, crate::cache::rules::now());
            let status = crate::cache::Status::StaleIfError { status: Some(status), ttl };
            let hit = cached::Hit::from_plan(&plan, entry, status);
            return cached::serve(shard, gen, ctx, client, out, hit, intake).await;
        }
    }
    let (mut up, mut ubuf, _active) = (ex.conn, ex.buf, ex.active);

    // 6a. A JSON response transform: the body is read whole (dechunked), transformed, and sent
    //     with its length behind the head already in `out`.
    if resp.json {
        let route = &gen.routes[plan.route];
        let edits = route.transform.response.as_ref().and_then(|t| t.json.as_ref());
        let read = read_whole(&mut up.stream, &mut ubuf, resp.upstream_framing, edits.map_or(0, |e| e.max), gen.cfg.limits.max_trailer, body_timeout).await;
        ctx.upstream_done = Some(Instant::now());
        let leftover = ubuf.pending_len();
        shard.bufs.put(std::mem::take(&mut ubuf.data));
        let body = match read {
            Ok(b) => b,
            Err(detail) => {
                route.metrics.transform("response", "failed");
                let mut f = Failure::new(ProxyError::ResponseTransformFailed, Some(&plan));
                f.detail = Some(detail.to_string());
                return Err(f);
            }
        };
        if resp.upstream_keep_alive && leftover == 0 {
            ups.checkin(up);
        }
        let values = edits.map(|e| transform::json_set_values(e, None, plan.request_id.as_bytes())).unwrap_or_default();
        match edits.map(|e| transform::json_body(&body, e, &values)) {
            Some(Ok(bytes)) => {
                route.metrics.transform("response", "applied");
                write::length_and_body(out, &bytes);
            }
            Some(Err(why)) => {
                route.metrics.transform("response", "failed");
                let mut f = Failure::new(ProxyError::ResponseTransformFailed, Some(&plan));
                f.detail = Some(format!("the upstream's body: {}", why.detail()));
                return Err(f);
            }
            None => write::length_and_body(out, &body),
        }
        ctx.status = resp.status;
        if client_write(client, out, body_timeout).await.is_err() {
            return Err(Failure::silent());
        }
        return Ok(if resp.client_keep_alive { Next::KeepAlive } else { Next::Close });
    }

    // 6. Response head, plus whatever of the body fits, to the client in one write.
    ctx.status = resp.status;
    let mut rbody = ResponseBody::new(resp.client_framing, resp.upstream_framing, gen.cfg.limits.max_trailer);
    let prefix_ok = rbody.take_prefix(&mut ubuf, out);
    if client_write(client, out, body_timeout).await.is_err() {
        shard.bufs.put(ubuf.data);
        return Err(Failure::silent());
    }
    if let Err(e) = prefix_ok {
        shard.bufs.put(ubuf.data);
        return Err(Failure::after_response(e));
    }
    let relayed = rbody.relay(&mut up.stream, &mut ubuf, client, out, body_timeout).await;
    ctx.upstream_done = Some(Instant::now());
    let leftover = ubuf.pending_len();
    shard.bufs.put(std::mem::take(&mut ubuf.data));
    match relayed {
        Ok(()) => {
            // RFC 9112 §9.3: reuse only after a complete, well-framed exchange with nothing extra.
            if resp.upstream_keep_alive && leftover == 0 {
                ups.checkin(up);
            }
            Ok(if resp.client_keep_alive { Next::KeepAlive } else { Next::Close })
        }
        Err(RelayError::Write) => Err(Failure::silent()),
        // A truncated or broken upstream body: close so the client sees the truncation.
        Err(_) => Err(Failure::after_response(ProxyError::UpstreamClosed)),
    }
}

/// How a parse of the buffered bytes ended.
enum Planned {
    NeedMore,
    /// A stage waits; the head stays unconsumed until the stages run again with the answer.
    Wait(Box<Resume>),
    /// The head is malformed or too large: where the request ends is unknown.
    BadHead(Failure),
    /// A complete head, and what to do with it.
    Head(HeadInfo, Outcome),
}

/// What the stages of a head decided before one of them waited.
struct Resume {
    wait: Box<stage::Wait>,
    admitted: Admitted,
    request_id: RequestId,
}

/// Where a parsed request's head ends and how its body is framed.
struct HeadInfo {
    len: usize,
    framing: Framing,
    keep_alive: bool,
}

enum Outcome {
    Forward(Plan),
    /// Served from the cache.
    Hit(cached::Hit),
    Reject(Failure),
    /// Answered by the gateway itself (a CORS preflight).
    Reply(Reply),
}

struct Reply {
    status: u16,
    headers: HeaderBuf,
    request_id: RequestId,
}

/// Sends a gateway-made bodiless answer.
#[allow(clippy::too_many_arguments)]
async fn reply<S: ClientStream>(shard: &Shard, gen: &Generation, ctx: &mut Ctx, client: &mut Client<S>, out: &mut Vec<u8>, r: Reply, intake: &mut Intake) -> Result<Next, Failure> {
    let keep = intake.settle(&mut client.rbuf) && !shard.drain.is_draining();
    out.clear();
    write::reply_head(out, r.status, r.headers.as_bytes(), r.request_id.as_bytes(), keep);
    ctx.status = r.status;
    if client_write(client, out, gen.cfg.timeouts.body).await.is_err() {
        return Err(Failure::silent());
    }
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// Reads a Content-Length body of `n` bytes (at most the route's body bound) whole, for the body
/// stages. One that fits the client buffer stays there, to be forwarded from it (a refused one is
/// discarded by `Intake::settle`); a larger one is appended to `out` behind the forwarded head
/// (growing it: the only allocation, for bodies beyond the read buffer), consumed as it
/// arrives, and the request body is then complete. Returns where the body is: true for `out`.
async fn buffer_body<S: ClientStream>(gen: &Generation, client: &mut Client<S>, body: &mut RequestBody, n: u64, plan: &Plan, out: &mut Vec<u8>) -> Result<bool, Failure> {
    let dur = gen.cfg.timeouts.body;
    let n = usize::try_from(n).map_err(|_| Failure::new(ProxyError::BodyTooLarge, Some(plan)))?;
    if n <= client.rbuf.data.capacity() {
        client.rbuf.compact();
        while client.rbuf.pending_len() < n {
            match timed_fill(&mut client.stream, &mut client.rbuf, dur).await {
                Ok(k) if k > 0 => {}
                _ => return Err(Failure::silent()),
            }
        }
        return Ok(false);
    }
    out.reserve(n);
    let mut left = n;
    loop {
        let take = client.rbuf.pending_len().min(left);
        out.extend_from_slice(&client.rbuf.pending()[..take]);
        client.rbuf.consume(take);
        left -= take;
        if left == 0 {
            break;
        }
        match timed_fill(&mut client.stream, &mut client.rbuf, dur).await {
            Ok(k) if k > 0 => {}
            _ => {
                *body = RequestBody::Abandoned;
                return Err(Failure::silent());
            }
        }
    }
    *body = RequestBody::Done;
    Ok(true)
}

/// Reads a chunked request body whole, dechunked, for a JSON transform: at most `max` bytes of
/// data (more is a 413, and the rest of the body is abandoned with the connection).
async fn read_chunked_body<S: ClientStream>(gen: &Generation, client: &mut Client<S>, body: &mut RequestBody, max: u64, plan: &Plan) -> Result<Vec<u8>, Failure> {
    let RequestBody::Chunked(dec) = body else { return Err(Failure::new(ProxyError::Internal, Some(plan))) };
    let mut data = Vec::new();
    loop {
        let start = client.rbuf.start;
        let step = dec.decode_in_place(&mut client.rbuf.data[start..]);
        let (n, consumed, done) = match step {
            Ok(x) => x,
            Err(e) => {
                *body = RequestBody::Abandoned;
                return Err(Failure::new(ProxyError::BadRequestBody(e), Some(plan)));
            }
        };
        data.extend_from_slice(&client.rbuf.data[start..start + n]);
        client.rbuf.consume(consumed);
        if data.len() as u64 > max {
            *body = RequestBody::Abandoned;
            return Err(Failure::new(ProxyError::BodyTooLarge, Some(plan)));
        }
        if done {
            return Ok(data);
        }
        client.rbuf.compact();
        match timed_fill(&mut client.stream, &mut client.rbuf, gen.cfg.timeouts.body).await {
            Ok(k) if k > 0 => {}
            _ => {
                *body = RequestBody::Abandoned;
                return Err(Failure::silent());
            }
        }
    }
}

/// Parses the head in `client.rbuf` and, when complete, routes it, runs the route's head stages
/// and writes the forwarded head into `out`. Synchronous, so nothing borrowed from the buffer
/// lives across an await.
fn plan_request<S: ClientStream>(shard: &Shard, gen: &Generation, ctx: &mut Ctx, client: &Client<S>, out: &mut Vec<u8>, resume: Option<Box<Resume>>) -> Planned {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let buf = client.rbuf.pending();
    let req = match parse::parse_request(buf, &mut headers, &gen.head_limits) {
        Ok(Some(r)) => r,
        Ok(None) => return Planned::NeedMore,
        Err(e) => return Planned::BadHead(Failure::new(ProxyError::BadHead(e), None)),
    };
    let head = HeadInfo { len: req.head_len, framing: req.framing, keep_alive: req.keep_alive };
    #[cfg(feature = "fault-injection")]
    if req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("x-ringgate-fault") && h.value == b"panic") {
        panic!("fault injected by request header");
    }
    let request_id = match &resume {
        Some(r) => r.request_id,
        None => write::request_id(&req, &shard.ids),
    };
    ctx.request_id = Some(request_id);
    ctx.set_head(req.method, req.path, req.query, gen.cfg.log.access_query, req.version);
    let head_request = req.method == "HEAD";
    let reject = |head: HeadInfo, err: ProxyError, extra: HeaderBuf| {
        let mut f = Failure::new(err, None);
        f.request_id = Some(request_id);
        f.head_request = head_request;
        f.extra = extra;
        Planned::Head(head, Outcome::Reject(f))
    };
    let host = parse::host_without_port(req.host);
    // RFC 9110 §15.5.20: with strict_sni_host, a Host that the connection's TLS server name does
    // not name is misdirected.
    if let (Some(tls), Some(t)) = (client.stream.tls(), gen.cfg.tls.as_ref()) {
        if t.strict_sni_host && tls.sni.as_deref().is_some_and(|sni| !host.eq_ignore_ascii_case(sni.as_bytes())) {
            return reject(head, ProxyError::MisdirectedRequest, HeaderBuf::default());
        }
    }
    let preflight =
        cors::is_preflight(req.method, stage::header(&req, "origin"), stage::header(&req, "access-control-request-method"));
    let (route_idx, segments, only_preflight) = match gen.router.lookup(host, req.path, req.method) {
        RouteMatch::Found { route, segments } => (route, segments, false),
        RouteMatch::NotFound => return reject(head, ProxyError::NoRoute, HeaderBuf::default()),
        // A CORS preflight is OPTIONS whatever methods the route serves; its CORS stage answers
        // it, and nothing else may pass this way.
        RouteMatch::MethodNotAllowed { route, segments } if preflight && gen.routes[route].has_cors => (route, segments, true),
        RouteMatch::MethodNotAllowed { route, .. } => {
            ctx.route = Some(route);
            let mut allow = HeaderBuf::default();
            allow.raw(gen.routes[route].allow_header.as_bytes());
            return reject(head, ProxyError::MethodNotAllowed, allow);
        }
    };
    ctx.route = Some(route_idx);
    let route = &gen.routes[route_idx];
    // RFC 9110 §15.5.14: refuse an oversized body before reading it when its length is declared.
    if let Framing::Length(n) = req.framing {
        if n > route.max_body {
            return reject(head, ProxyError::BodyTooLarge, HeaderBuf::default());
        }
    }
    // The route's stages: IP rules, CORS, authentication, rate limits, validation.
    out.clear();
    let (mut admitted, waited) = match resume {
        Some(r) => {
            let Resume { wait, admitted, .. } = *r;
            (admitted, Some(wait))
        }
        None => (Admitted::default(), None),
    };
    let flow = route.pipeline.on_head(&req, client.peer, client.stream.tls(), &mut admitted, out, waited);
    ctx.consumer = admitted.consumer;
    if let Some(ip) = admitted.client {
        ctx.client_ip = ip;
    }
    match flow {
        Flow::Continue if only_preflight => {
            let mut allow = HeaderBuf::default();
            allow.raw(route.allow_header.as_bytes());
            return reject(head, ProxyError::MethodNotAllowed, allow);
        }
        Flow::Continue => {}
        Flow::Respond(Local::Error(err, extra)) => return reject(head, err, extra),
        Flow::Respond(Local::Reply(status, headers)) => {
            return Planned::Head(head, Outcome::Reply(Reply { status, headers, request_id }));
        }
        Flow::Wait(wait) => return Planned::Wait(Box::new(Resume { wait, admitted, request_id })),
    }
    // The route's cache: a stored response answers here; anything else goes on with its key.
    let mut cache_plan = None;
    let mut stale_hit = None;
    if let Some(policy) = gen.cfg.routes[route_idx].cache.as_ref() {
        let consumer = admitted.consumer.as_ref().map(|c| c.as_bytes());
        match cached::lookup(shard, gen, policy, route_idx, &req, &buf[..req.head_len], consumer, request_id, &admitted.response_headers) {
            cached::Looked::Hit(hit) => return Planned::Head(head, Outcome::Hit(hit)),
            cached::Looked::StaleHit(hit, fill, guard) => {
                if let Some(e) = &fill.validating {
                    cached::validators(e, &mut admitted.forward_headers);
                }
                stale_hit = Some((hit, fill, guard));
            }
            cached::Looked::Forward(c) => {
                if let (cached::What::Validate, Some(e)) = (&c.what, &c.fill.validating) {
                    cached::validators(e, &mut admitted.forward_headers);
                }
                cache_plan = Some(c);
            }
            cached::Looked::NotCached => return reject(head, ProxyError::NotCached, admitted.response_headers),
        }
        admitted.forward_headers.raw(cached::SURROGATE_CAPABILITY);
    }
    // The cache asks the upstream for the whole response, with its own validators.
    let strip_conditionals = stale_hit.is_some()
        || cache_plan.as_ref().is_some_and(|c| matches!(c.what, cached::What::Validate | cached::What::Miss { .. } | cached::What::Wait(_)));
    // The route's request transform: set headers join the forwarded lines; a rewritten target
    // is built here (its one allocation).
    let path = if route.strip_prefix { strip_segments(req.path, segments) } else { req.path };
    let edits = route.transform.request.as_ref();
    let claims = admitted.claims.clone();
    let vars = transform::Vars {
        req: &req,
        consumer: admitted.consumer.as_ref().map(|c| c.as_bytes()),
        claims: claims.as_deref().map_or(&[][..], |c| &c[..]),
        request_id: request_id.as_bytes(),
    };
    if let Some(t) = edits {
        for (name, value) in &t.headers.set {
            out.clear();
            if transform::render(out, value, &vars, transform::Escape::Header).is_err() {
                return reject(head, ProxyError::TransformRefused, HeaderBuf::default());
            }
            admitted.forward_headers.line(name.as_bytes(), out);
        }
    }
    let mut target = Vec::new();
    if let Some(t) = edits.filter(|t| t.edits_target()) {
        if transform::target(&mut target, t, path, req.query, &vars, out).is_err() {
            return reject(head, ProxyError::TransformRefused, HeaderBuf::default());
        }
    }
    // A JSON body transform needs the whole body, declared and within its bound, and JSON.
    let json_edits = edits.and_then(|t| t.json.as_ref()).filter(|_| req.framing != Framing::None);
    if let Some(j) = json_edits {
        // A chunked body is read (dechunked) up to the bound as it arrives.
        if let Framing::Length(n) = req.framing {
            if n > j.max {
                return reject(head, ProxyError::BodyTooLarge, admitted.response_headers);
            }
        }
        if !transform::is_json(stage::header(&req, "content-type")) {
            return reject(head, ProxyError::UnsupportedMediaType, admitted.response_headers);
        }
    }
    let json = json_edits.map(|j| transform::json_set_values(j, Some(&vars), request_id.as_bytes()));
    // An aggregating route: one GET per part, with the request id, the client's address, the
    // verified identity lines and a child span of the request's trace.
    let parts = match &gen.cfg.routes[route_idx].aggregate {
        None => None,
        Some(agg) => {
            let parent = stage::header(&req, "traceparent").filter(|t| write::valid_traceparent(t)).map(write::Inline::<55>::new);
            let parent = parent.unwrap_or_else(|| shard.ids.traceparent());
            ctx.traceparent = parent;
            let mut heads = Vec::with_capacity(agg.parts.len());
            for part in &agg.parts {
                let mut h = Vec::with_capacity(256);
                h.extend_from_slice(b"GET ");
                if transform::render(&mut h, &part.path, &vars, transform::Escape::Url).is_err() {
                    return reject(head, ProxyError::TransformRefused, HeaderBuf::default());
                }
                h.extend_from_slice(b" HTTP/1.1\r\nHost: ");
                h.extend_from_slice(gen.cfg.services[part.service].name.as_bytes());
                h.extend_from_slice(b"\r\nX-Request-Id: ");
                h.extend_from_slice(request_id.as_bytes());
                h.extend_from_slice(b"\r\nX-Forwarded-For: ");
                h.extend_from_slice(client.ip.as_bytes());
                h.extend_from_slice(b"\r\ntraceparent: ");
                let fresh = shard.ids.traceparent();
                let (p, f) = (parent.as_bytes(), fresh.as_bytes());
                h.extend_from_slice(&p[..36]);
                h.extend_from_slice(&f[36..52]);
                h.extend_from_slice(&p[52..]);
                h.extend_from_slice(b"\r\n");
                h.extend_from_slice(admitted.forward_headers.as_bytes());
                h.extend_from_slice(b"\r\n");
                heads.push(h);
            }
            Some(heads)
        }
    };
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        _ if target.is_empty() => (path, req.query),
        Some(q) => (&target[..q], &target[q..]),
        None => (&target[..], &b""[..]),
    };
    // A header line that did not fit is an error, never a silent drop.
    if admitted.forward_headers.overflowed() {
        return reject(head, ProxyError::ForwardHeadersTooLarge, HeaderBuf::default());
    }
    if admitted.response_headers.overflowed() {
        tracing::error!(route = %route.name, "response header lines from the route's policies exceed 1 KiB");
        return reject(head, ProxyError::Internal, HeaderBuf::default());
    }
    out.clear();
    let info = ForwardInfo {
        client_ip: client.ip.as_bytes(),
        proto: if client.stream.tls().is_some() { b"https" } else { b"http" },
        request_id: request_id.as_bytes(),
        path,
        query,
        edits: edits.map(|t| &t.headers).filter(|h| !h.is_empty()),
        framing: if json.is_some() { Framing::None } else { req.framing },
        strip: &route.strip_headers,
        extra: admitted.forward_headers.as_bytes(),
        default_host: gen.cfg.services[route.service].name.as_bytes(),
        strip_conditionals,
    };
    ctx.traceparent = write::request_head(out, buf, &req, &info, &shard.ids);
    if json.is_some() {
        out.truncate(out.len() - 2); // the length line follows the transformed body
    }
    let plan = Plan {
        route: route_idx,
        service: route.service,
        framing: req.framing,
        max_body: route.max_body,
        idempotent: matches!(req.method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"),
        head_request,
        version: req.version,
        expect_continue: req.expect_continue,
        request_id,
        response_headers: admitted.response_headers,
        body_bound: route.pipeline.body_bound(req.framing),
        balance_key: balance_key(gen, route.service, &req, ctx),
        json,
        parts,
        cache: cache_plan,
    };
    if let Some((hit, fill, guard)) = stale_hit {
        return Planned::Head(head, Outcome::Hit(cached::Hit::stale_with_refresh(hit, out, fill, guard)));
    }
    Planned::Head(head, Outcome::Forward(plan))
}

/// The consistent-hash key of a request, for a service balanced that way.
fn balance_key(gen: &Generation, service: usize, req: &parse::RequestHead, ctx: &Ctx) -> Option<u64> {
    let Balance::ConsistentHash(on) = &gen.cfg.services[service].balance else { return None };
    let ip;
    let key: &[u8] = match on {
        HashOn::ClientIp => {
            ip = write::ip_text(ctx.client_ip);
            ip.as_bytes()
        }
        HashOn::Path => req.path,
        HashOn::Consumer => ctx.consumer.as_ref().map_or(&b""[..], |c| c.as_bytes()),
        HashOn::Header(h) => stage::header(req, h).unwrap_or_default(),
        HashOn::Cookie(k) => stage::cookie(req, k).unwrap_or_default(),
    };
    Some(upstream::fnv1a(&[key]))
}

/// How the client side of the response was decided.
struct ResponsePlan {
    status: u16,
    upstream_framing: Framing,
    client_framing: ClientFraming,
    upstream_keep_alive: bool,
    client_keep_alive: bool,
    /// The route's JSON transform applies: `out` holds the head without its framing line.
    json: bool,
    /// What the route's cache does with the response.
    cache: cached::Action,
}

/// The planner `upstream::call` runs on each read: once a response head is complete, writes the
/// client's head into `out` (or, for a 1xx to relay, that head) and consumes the upstream's.
fn plan_response(
    shard: &Shard,
    gen: &Generation,
    plan: &Plan,
    keep_alive: bool,
    ubuf: &mut ReadBuf,
    out: &mut Vec<u8>,
) -> Result<Option<Head<ResponsePlan>>, ProxyError> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let buf = ubuf.pending();
    let res = match parse::parse_response(buf, &mut headers, plan.head_request, gen.head_limits.max_head) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(bad) => return Err(ProxyError::BadResponse(bad.0)),
    };
    if res.code == 101 {
        return Err(ProxyError::BadResponse("protocol upgrade was not requested"));
    }
    if res.code < 200 {
        out.clear();
        // 100 was already answered by the gateway; other 1xx (103 Early Hints) go to 1.1 clients.
        if res.code != 100 && plan.version == Version::Http11 {
            write::informational_head(out, buf, &res);
        }
        let n = res.head_len;
        ubuf.consume(n);
        return Ok(Some(Head::Informational));
    }
    // A cached route: the cache may take the response (to store it, or to serve an entry).
    let mut cache_lines = HeaderBuf::default();
    let action = match (&plan.cache, gen.cfg.routes[plan.route].cache.as_ref()) {
        (Some(c), Some(policy)) => {
            let edits = gen.cfg.routes[plan.route].transform.response.as_ref().map(|t| &t.headers);
            cached::response_action(shard, gen, policy, c, &res, plan.head_request, edits, &mut cache_lines)
        }
        _ => cached::Action::Relay,
    };
    if !matches!(action, cached::Action::Relay) {
        let p = ResponsePlan {
            status: res.code,
            upstream_framing: res.framing,
            client_framing: ClientFraming::None,
            upstream_keep_alive: res.keep_alive,
            client_keep_alive: false,
            json: false,
            cache: action,
        };
        let n = res.head_len;
        ubuf.consume(n);
        return Ok(Some(Head::Final(p)));
    }
    let client_framing = write::client_framing(&res, plan.version);
    // A JSON response transform: a 2xx JSON body, not compressed, within the bound (a chunked
    // one is checked as it is read). Others pass through untouched, and are counted.
    let json = match gen.routes[plan.route].transform.response.as_ref().and_then(|t| t.json.as_ref()) {
        Some(j) if !plan.head_request && (200..300).contains(&res.code) && res.code != 204 => {
            let field = |name: &str| res.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
            let fits = match res.framing {
                Framing::Length(n) => n <= j.max,
                Framing::Chunked => true,
                Framing::None | Framing::UntilClose => false,
            };
            let applies = fits && transform::is_json(field("content-type")) && field("content-encoding").is_none();
            if !applies {
                gen.routes[plan.route].metrics.transform("response", "skipped");
            }
            applies
        }
        _ => false,
    };
    let client_keep_alive = keep_alive
        && (json || !matches!(client_framing, ClientFraming::UntilClose | ClientFraming::Dechunk))
        && !shard.drain.is_draining();
    out.clear();
    let edits = gen.cfg.routes[plan.route].transform.response.as_ref().map(|t| &t.headers);
    // The policies' lines, joined by the cache's and the transform's where there are any.
    let joined;
    let lines = if cache_lines.is_empty() && edits.is_none_or(|e| e.set.is_empty()) {
        &plan.response_headers
    } else {
        let mut l = plan.response_headers.clone();
        l.raw(cache_lines.as_bytes());
        for (name, value) in edits.iter().flat_map(|e| &e.set) {
            out.clear();
            transform::render_response(out, value, plan.request_id.as_bytes());
            l.line(name.as_bytes(), out);
        }
        joined = l;
        &joined
    };
    if lines.overflowed() {
        return Err(ProxyError::BadResponse("the route's response header lines exceed 1 KiB"));
    }
    out.clear();
    write::response_head(
        out,
        buf,
        &res,
        if json { ClientFraming::UntilClose } else { client_framing },
        plan.version,
        client_keep_alive,
        plan.request_id.as_bytes(),
        lines.as_bytes(),
        edits,
    );
    if json {
        // Written without a framing line (as a body read to the close would be); the length
        // of the transformed body follows.
        out.truncate(out.len() - 2);
    }
    let p = ResponsePlan {
        status: res.code,
        upstream_framing: res.framing,
        client_framing,
        upstream_keep_alive: res.keep_alive,
        client_keep_alive,
        json,
        cache: cached::Action::Relay,
    };
    let n = res.head_len;
    ubuf.consume(n);
    Ok(Some(Head::Final(p)))
}

/// Writes the error response for a failed request, if one can still be sent, and logs it with
/// what an operator needs to find it: route, upstream address, request id, OS error.
#[allow(clippy::too_many_arguments)]
async fn answer_failure<S: ClientStream>(
    shard: &Shard,
    gen: &Generation,
    ctx: &mut Ctx,
    client: &mut Client<S>,
    out: &mut Vec<u8>,
    f: Failure,
    intake: &mut Intake,
) -> Next {
    let rid = f.request_id.unwrap_or_else(|| shard.ids.request_id());
    if !f.silent {
        ctx.error = Some(f.err.code());
        let route = ctx.route.and_then(|i| gen.routes.get(i)).map_or("", |r| r.name.as_str());
        let upstream = ctx.upstream.map(|a| a.to_string()).unwrap_or_default();
        let os_error = ctx.os_error.map(|e| std::io::Error::from_raw_os_error(e).to_string()).unwrap_or_default();
        let rid_text = String::from_utf8_lossy(rid.as_bytes());
        if f.err.side() != Side::Upstream {
            tracing::debug!(status = f.err.status(), code = f.err.code(), route, request_id = %rid_text, "request refused");
        } else {
            tracing::warn!(
                status = f.err.status(),
                code = f.err.code(),
                route,
                upstream,
                request_id = %rid_text,
                os_error,
                responded = f.responded,
                "request failed"
            );
        }
    }
    if f.silent || f.responded {
        return Next::Close;
    }
    if f.err == ProxyError::BodyTooLarge {
        intake.abandon_body();
    }
    let keep = intake.settle(&mut client.rbuf) && !shard.drain.is_draining();
    if ctx.request_id.is_none() {
        ctx.request_id = Some(rid);
    }
    ctx.status = f.err.status();
    if out.capacity() == 0 {
        *out = shard.bufs.get();
    }
    out.clear();
    let fallback = f.service.and_then(|s| gen.upstreams.shared(s).breaker.as_ref()).and_then(|b| b.cfg.fallback.as_ref());
    if let Some(fb) = fallback {
        ctx.status = fb.status;
        write::body_response(
            out,
            &write::BodyResponse {
                status: fb.status,
                content_type: fb.content_type.as_bytes(),
                body: fb.body.as_bytes(),
                extra: f.extra.as_bytes(),
                request_id: rid.as_bytes(),
                keep_alive: keep,
                head_only: f.head_request,
            },
        );
    } else {
        write::error_response(
        out,
        &ErrorResponse {
            status: f.err.status(),
            code: f.err.code(),
            message: f.detail.as_deref().unwrap_or(f.err.message()),
            request_id: rid.as_bytes(),
            close: !keep,
            head_only: f.head_request,
            extra: f.extra.as_bytes(),
        },
    );
    }
    if client_write(client, out, gen.cfg.timeouts.body).await.is_err() {
        return Next::Close;
    }
    if keep {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Writes all of `data` to the client within `dur`, counting the bytes sent.
async fn client_write<S: ClientStream>(client: &mut Client<S>, data: &mut Vec<u8>, dur: Duration) -> Result<(), WriteFail> {
    let n = data.len();
    timed_write(&mut client.stream, data, 0, n, dur).await?;
    client.sent += n as u64;
    Ok(())
}

/// A part's request has no body.
struct NoBody;

impl BodySource for NoBody {
    fn is_done(&self) -> bool {
        true
    }

    async fn send(&mut self, _: &mut UpStream) -> Result<(), ProxyError> {
        Ok(())
    }
}

/// A part's response head: status and framing.
struct PartHead {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

fn plan_part(ubuf: &mut ReadBuf, max_head: usize) -> Result<Option<Head<PartHead>>, ProxyError> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let res = match parse::parse_response(ubuf.pending(), &mut headers, false, max_head) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(bad) => return Err(ProxyError::BadResponse(bad.0)),
    };
    let (n, head) = (res.head_len, PartHead { status: res.code, framing: res.framing, keep_alive: res.keep_alive });
    ubuf.consume(n);
    Ok(Some(if head.status < 200 { Head::Informational } else { Head::Final(head) }))
}

/// One part: its service's pool, breaker and retries, within `deadline`. Its JSON, or why not
/// (status, code).
async fn run_part(shard: &Shard, gen: &Generation, service: usize, head: &[u8], max: u64, deadline: Instant) -> Result<serde_json::Value, (u16, &'static str)> {
    let ups = &gen.upstreams;
    let shared = ups.shared(service);
    let Some(_in_flight) = shared.enter() else { return Err((503, ProxyError::Overloaded.code())) };
    if shared.breaker.as_ref().is_some_and(|b| b.admit() == upstream::Admit::No) {
        return Err((503, ProxyError::CircuitOpen.code()));
    }
    let mut first = head.to_vec();
    let req = upstream::Request { service, first: &mut first, replayable: true, idempotent: true, write_timeout: gen.cfg.timeouts.body, deadline: Some(deadline), key: None };
    let max_head = gen.head_limits.max_head;
    let called = monoio::time::timeout_at(deadline.into(), upstream::call(ups, &shard.bufs, req, &mut NoBody, |b: &mut ReadBuf, _: &mut Vec<u8>| plan_part(b, max_head))).await;
    let (mut ex, h) = match called {
        Err(_) => return Err((504, ProxyError::UpstreamTimeout.code())),
        Ok(Err(e)) => return Err((e.err.status(), e.err.code())),
        Ok(Ok(x)) => x,
    };
    let Head::Final(h) = h else {
        shard.bufs.put(std::mem::take(&mut ex.buf.data));
        return Err((502, "upstream_bad_response"));
    };
    ups.report(service, ex.conn.endpoint, upstream::Outcome::Responded(h.status));
    let left = deadline.saturating_duration_since(Instant::now());
    let read = read_whole(&mut ex.conn.stream, &mut ex.buf, h.framing, max, gen.cfg.limits.max_trailer, left).await;
    let leftover = ex.buf.pending_len();
    shard.bufs.put(std::mem::take(&mut ex.buf.data));
    let body = read.map_err(|_| (502, "part_body_unreadable"))?;
    if h.keep_alive && leftover == 0 {
        ups.checkin(ex.conn);
    }
    if !(200..300).contains(&h.status) {
        return Err((h.status, "part_status"));
    }
    serde_json::from_slice(&body).map_err(|_| (502, "part_not_json"))
}

/// Runs every part at once on the shard (the answer takes as long as the slowest part, not the
/// sum) and answers with their JSON: `{"key": value, ...}` (or merged at the top level). A
/// failed optional part is `null`, listed in `errors` and in `X-Ringgate-Partial`; a failed
/// required part makes the answer a 502 listing the errors.
#[allow(clippy::too_many_arguments)]
async fn aggregate<S: ClientStream>(shard: &Shard, gen: &Generation, ctx: &mut Ctx, client: &mut Client<S>, out: &mut Vec<u8>, plan: &Plan, heads: &[Vec<u8>], keep_alive: bool) -> Result<Next, Failure> {
    let Some(agg) = gen.cfg.routes[plan.route].aggregate.as_ref() else { return Err(Failure::new(ProxyError::Internal, Some(plan))) };
    let started = Instant::now();
    let metrics = &gen.routes[plan.route].metrics;
    let calls = agg.parts.iter().zip(heads).map(|(part, head)| async move {
        let r = run_part(shard, gen, part.service, head, agg.max_part, started + part.timeout).await;
        metrics.record_part(started.elapsed().as_micros() as u64);
        r
    });
    let results = futures_util::future::join_all(calls).await;
    ctx.upstream_started = Some(started);
    ctx.upstream_done = Some(Instant::now());
    let mut body = serde_json::Map::new();
    let mut errors = Vec::new();
    let mut failed_required = false;
    let mut partial: Vec<&str> = Vec::new();
    for (part, r) in agg.parts.iter().zip(results) {
        match r {
            Ok(v) => {
                metrics.transform("part", "ok");
                match (agg.merge, v) {
                    (true, serde_json::Value::Object(fields)) => body.extend(fields),
                    (_, v) => {
                        body.insert(part.key.clone(), v);
                    }
                }
            }
            Err((status, code)) => {
                metrics.transform("part", "failed");
                failed_required |= part.required;
                if !part.required {
                    partial.push(&part.key);
                }
                if !agg.merge {
                    body.insert(part.key.clone(), serde_json::Value::Null);
                }
                errors.push(serde_json::json!({ "part": part.key, "status": status, "code": code }));
            }
        }
    }
    let status = if failed_required { 502 } else { 200 };
    let bytes = if failed_required {
        // The gateway's error shape, with the parts' errors added.
        let errors = serde_json::to_string(&errors).unwrap_or_default();
        let rid = String::from_utf8_lossy(plan.request_id.as_bytes());
        format!("{{\"error\":{{\"status\":502,\"code\":\"aggregate_part_failed\",\"message\":\"a required part of this response failed\",\"request_id\":\"{rid}\",\"errors\":{errors}}}}}\n").into_bytes()
    } else {
        if !errors.is_empty() {
            body.insert("errors".to_string(), serde_json::Value::Array(errors));
        }
        serde_json::to_vec(&body).unwrap_or_default()
    };
    let mut extra = plan.response_headers.clone();
    if !partial.is_empty() && !failed_required {
        extra.line(b"X-Ringgate-Partial", partial.join(", ").as_bytes());
    }
    let keep = keep_alive && !shard.drain.is_draining();
    out.clear();
    write::body_response(
        out,
        &write::BodyResponse { status, content_type: b"application/json", body: &bytes, extra: extra.as_bytes(), request_id: plan.request_id.as_bytes(), keep_alive: keep, head_only: plan.head_request },
    );
    ctx.status = status;
    if client_write(client, out, gen.cfg.timeouts.body).await.is_err() {
        return Err(Failure::silent());
    }
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// A response body read whole up to `max` bytes, or what was read when it turned out larger
/// (the cache then streams the rest through).
enum Body {
    Whole(Vec<u8>),
    Over(Vec<u8>, Option<ChunkedDecoder>),
}

async fn read_bounded(up: &mut UpStream, ubuf: &mut ReadBuf, framing: Framing, max: u64, max_trailer: usize, dur: Duration) -> Result<Body, &'static str> {
    let mut body = Vec::new();
    let mut decoder = (framing == Framing::Chunked).then(|| ChunkedDecoder::new(max_trailer));
    loop {
        match (&mut decoder, framing) {
            (_, Framing::None) => return Ok(Body::Whole(body)),
            (None, Framing::Length(n)) => {
                let take = ubuf.pending_len().min((n as usize).saturating_sub(body.len()));
                body.extend_from_slice(&ubuf.pending()[..take]);
                ubuf.consume(take);
                if body.len() as u64 >= n {
                    return Ok(Body::Whole(body));
                }
            }
            (Some(d), _) => {
                let start = ubuf.start;
                let (data, consumed, done) = d.decode_in_place(&mut ubuf.data[start..]).map_err(|_| "the upstream's chunked body is malformed")?;
                body.extend_from_slice(&ubuf.data[start..start + data]);
                ubuf.consume(consumed);
                if done {
                    return Ok(Body::Whole(body));
                }
                if body.len() as u64 > max {
                    return Ok(Body::Over(body, decoder));
                }
            }
            (None, _) => {
                let n = ubuf.pending_len();
                body.extend_from_slice(ubuf.pending());
                ubuf.consume(n);
                if body.len() as u64 > max {
                    return Ok(Body::Over(body, None));
                }
            }
        }
        match timed_fill(up, ubuf, dur).await {
            Ok(k) if k > 0 => {}
            Ok(_) if framing == Framing::UntilClose => return Ok(Body::Whole(body)),
            _ => return Err("the upstream's body ended early"),
        }
    }
}

/// Reads a whole response body (a length, or chunked: dechunked) of at most `max` bytes.
async fn read_whole(up: &mut UpStream, ubuf: &mut ReadBuf, framing: Framing, max: u64, max_trailer: usize, dur: Duration) -> Result<Vec<u8>, &'static str> {
    match framing {
        Framing::None | Framing::UntilClose => return Err("the upstream's body has no length"),
        // Declared over the bound: refused before a byte of it is read into memory.
        Framing::Length(n) if n > max => return Err("the upstream's body is larger than the route's max_json"),
        _ => {}
    }
    match read_bounded(up, ubuf, framing, max, max_trailer, dur).await? {
        Body::Whole(body) if body.len() as u64 <= max => Ok(body),
        _ => Err("the upstream's body is larger than the route's max_json"),
    }
}

async fn timed_fill<R: AsyncReadRent>(s: &mut R, rbuf: &mut ReadBuf, dur: Duration) -> Result<usize, RelayError> {
    match monoio::time::timeout(dur, rbuf.fill(s)).await {
        Ok(Ok(n)) => Ok(n),
        _ => Err(RelayError::Read),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayError {
    Read,
    /// The source closed before the body was complete.
    Truncated,
    Write,
    Chunk(ChunkError),
}

/// Streams `n` pending bytes of `sbuf` to `dst`, consuming them; adds them to `sent`.
async fn forward_pending<W: AsyncWriteRentExt>(dst: &mut W, sbuf: &mut ReadBuf, n: usize, dur: Duration, sent: &mut u64) -> Result<(), RelayError> {
    let start = sbuf.start;
    timed_write(dst, &mut sbuf.data, start, start + n, dur).await.map_err(|_| RelayError::Write)?;
    sbuf.consume(n);
    *sent += n as u64;
    Ok(())
}

/// The rest of the request body, read from the client as `upstream::call` sends it.
struct ClientBody<'a, S: ClientStream> {
    body: &'a mut RequestBody,
    client: &'a mut Client<S>,
    timeout: Duration,
    max_body: u64,
}

impl<S: ClientStream> BodySource for ClientBody<'_, S> {
    fn is_done(&self) -> bool {
        self.body.is_done()
    }

    async fn send(&mut self, up: &mut UpStream) -> Result<(), ProxyError> {
        self.body.relay(self.client, up, self.timeout, self.max_body).await
    }
}

/// The request body still to forward after the head.
enum RequestBody {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
    /// Reading or forwarding it failed part-way, or it was refused as too large: where it ends
    /// is no longer known, so the connection cannot carry another request.
    Abandoned,
}

impl RequestBody {
    fn new(framing: Framing, max_trailer: usize) -> Self {
        match framing {
            Framing::Length(n) => RequestBody::Length(n),
            Framing::Chunked => RequestBody::Chunked(ChunkedDecoder::new(max_trailer)),
            Framing::None | Framing::UntilClose => RequestBody::Done,
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, RequestBody::Done)
    }

    /// Consumes the rest of the body if all of it is in `rbuf`; true when nothing of it is left.
    /// A body still arriving is not waited for: the connection closes instead.
    fn discard_buffered(&mut self, rbuf: &mut ReadBuf) -> bool {
        let n = match self {
            RequestBody::Done => return true,
            RequestBody::Abandoned => return false,
            RequestBody::Length(remaining) => match usize::try_from(*remaining) {
                Ok(n) if n <= rbuf.pending_len() => n,
                _ => return false,
            },
            RequestBody::Chunked(dec) => match dec.scan(rbuf.pending()) {
                Ok((n, true)) => n,
                _ => return false,
            },
        };
        rbuf.consume(n);
        *self = RequestBody::Done;
        true
    }

    /// Moves the body bytes already read (as many as fit) from `rbuf` to the end of `out`.
    fn take_prefix(&mut self, rbuf: &mut ReadBuf, out: &mut Vec<u8>, max_body: u64) -> Result<(), ProxyError> {
        let r = self.take_prefix_inner(rbuf, out, max_body);
        if r.is_err() {
            *self = RequestBody::Abandoned;
        }
        r
    }

    fn take_prefix_inner(&mut self, rbuf: &mut ReadBuf, out: &mut Vec<u8>, max_body: u64) -> Result<(), ProxyError> {
        let room = out.capacity() - out.len();
        let avail = &rbuf.pending()[..rbuf.pending_len().min(room)];
        let n = match self {
            RequestBody::Done => return Ok(()),
            RequestBody::Abandoned => return Err(ProxyError::Internal),
            RequestBody::Length(remaining) => {
                let n = (avail.len() as u64).min(*remaining) as usize;
                *remaining -= n as u64;
                if *remaining == 0 {
                    *self = RequestBody::Done;
                }
                n
            }
            RequestBody::Chunked(dec) => {
                let (n, done) = dec.scan(avail).map_err(ProxyError::BadRequestBody)?;
                if dec.data_len() > max_body {
                    return Err(ProxyError::BodyTooLarge);
                }
                if done {
                    *self = RequestBody::Done;
                }
                n
            }
        };
        out.extend_from_slice(&avail[..n]);
        rbuf.consume(n);
        Ok(())
    }

    /// Streams the rest of the body from the client to the upstream through the client buffer.
    async fn relay<S: ClientStream>(&mut self, client: &mut Client<S>, up: &mut UpStream, dur: Duration, max_body: u64) -> Result<(), ProxyError> {
        let r = self.relay_inner(client, up, dur, max_body).await;
        if r.is_err() {
            *self = RequestBody::Abandoned;
        }
        r
    }

    async fn relay_inner<S: ClientStream>(&mut self, client: &mut Client<S>, up: &mut UpStream, dur: Duration, max_body: u64) -> Result<(), ProxyError> {
        loop {
            if client.rbuf.pending_len() == 0 {
                match timed_fill(&mut client.stream, &mut client.rbuf, dur).await {
                    Ok(n) if n > 0 => {}
                    _ => return Err(ProxyError::ClientGone),
                }
            }
            let n = match self {
                RequestBody::Done => return Ok(()),
                RequestBody::Abandoned => return Err(ProxyError::Internal),
                RequestBody::Length(remaining) => {
                    let n = (client.rbuf.pending_len() as u64).min(*remaining) as usize;
                    *remaining -= n as u64;
                    n
                }
                RequestBody::Chunked(dec) => {
                    let (n, _) = dec.scan(client.rbuf.pending()).map_err(ProxyError::BadRequestBody)?;
                    if dec.data_len() > max_body {
                        return Err(ProxyError::BodyTooLarge);
                    }
                    n
                }
            };
            forward_pending(up, &mut client.rbuf, n, dur, &mut 0).await.map_err(|_| ProxyError::UpstreamClosed)?;
            let done = match self {
                RequestBody::Length(r) => *r == 0,
                RequestBody::Chunked(dec) => dec.is_done(),
                RequestBody::Done | RequestBody::Abandoned => true,
            };
            if done {
                *self = RequestBody::Done;
                return Ok(());
            }
        }
    }
}

/// Bytes of chunk framing around the data: up to 16 hex digits, CRLF, CRLF.
const CHUNK_FRAMING: usize = 20;

/// Appends one chunk (`{len:x}\r\n{data}\r\n`).
fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = data.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The response body still to forward after the head.
struct ResponseBody {
    client: ClientFraming,
    remaining: u64,
    decoder: Option<ChunkedDecoder>,
    done: bool,
}

impl ResponseBody {
    fn new(client: ClientFraming, upstream: Framing, max_trailer: usize) -> Self {
        let remaining = if let Framing::Length(n) = upstream { n } else { 0 };
        let decoder = matches!(upstream, Framing::Chunked).then(|| ChunkedDecoder::new(max_trailer));
        let done = matches!(client, ClientFraming::None) || (matches!(client, ClientFraming::Length(_)) && remaining == 0);
        ResponseBody { client, remaining, decoder, done }
    }

    /// Moves body bytes already read (as many as fit) behind the head in `out`.
    fn take_prefix(&mut self, ubuf: &mut ReadBuf, out: &mut Vec<u8>) -> Result<(), ProxyError> {
        if self.done {
            return Ok(());
        }
        let room = out.capacity() - out.len();
        let avail = &ubuf.pending()[..ubuf.pending_len().min(room)];
        let n = match (self.client, self.decoder.as_mut()) {
            (ClientFraming::Length(_), _) => {
                let n = (avail.len() as u64).min(self.remaining) as usize;
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                n
            }
            (ClientFraming::Chunked, Some(dec)) => {
                let (n, done) = dec.scan(avail).map_err(|e| ProxyError::BadResponse(e.message()))?;
                self.done = done;
                n
            }
            (ClientFraming::Rechunk, _) => {
                let n = avail.len().min(room.saturating_sub(CHUNK_FRAMING));
                if n > 0 {
                    put_chunk(out, &avail[..n]);
                    ubuf.consume(n);
                }
                return Ok(());
            }
            // De-chunking and close-delimited bodies go through `relay`.
            _ => 0,
        };
        out.extend_from_slice(&avail[..n]);
        ubuf.consume(n);
        Ok(())
    }

    /// Streams the rest of the body; `out` (its head already sent) is scratch for re-chunking.
    async fn relay<S: ClientStream>(
        &mut self,
        up: &mut UpStream,
        ubuf: &mut ReadBuf,
        client: &mut Client<S>,
        out: &mut Vec<u8>,
        dur: Duration,
    ) -> Result<(), RelayError> {
        while !self.done {
            if ubuf.pending_len() == 0 {
                let n = timed_fill(up, ubuf, dur).await?;
                if n == 0 {
                    match self.client {
                        ClientFraming::UntilClose => return Ok(()),
                        ClientFraming::Rechunk => {
                            // The upstream's close ends the body: send the last chunk.
                            out.clear();
                            out.extend_from_slice(b"0\r\n\r\n");
                            return client_write(client, out, dur).await.map_err(|_| RelayError::Write);
                        }
                        _ => return Err(RelayError::Truncated),
                    }
                }
            }
            match (self.client, self.decoder.as_mut()) {
                (ClientFraming::Length(_), _) => {
                    let n = (ubuf.pending_len() as u64).min(self.remaining) as usize;
                    self.remaining -= n as u64;
                    self.done = self.remaining == 0;
                    forward_pending(&mut client.stream, ubuf, n, dur, &mut client.sent).await?;
                }
                (ClientFraming::Chunked, Some(dec)) => {
                    let (n, done) = dec.scan(ubuf.pending()).map_err(RelayError::Chunk)?;
                    self.done = done;
                    forward_pending(&mut client.stream, ubuf, n, dur, &mut client.sent).await?;
                }
                (ClientFraming::Dechunk, Some(dec)) => {
                    let start = ubuf.start;
                    let (data, consumed, done) = dec.decode_in_place(&mut ubuf.data[start..]).map_err(RelayError::Chunk)?;
                    self.done = done;
                    timed_write(&mut client.stream, &mut ubuf.data, start, start + data, dur).await.map_err(|_| RelayError::Write)?;
                    client.sent += data as u64;
                    ubuf.consume(consumed);
                }
                (ClientFraming::UntilClose, _) => {
                    let n = ubuf.pending_len();
                    forward_pending(&mut client.stream, ubuf, n, dur, &mut client.sent).await?;
                }
                (ClientFraming::Rechunk, _) => {
                    // At most a buffer's worth less the framing, so `out` never grows.
                    let n = ubuf.pending_len().min(out.capacity().saturating_sub(CHUNK_FRAMING).max(1));
                    out.clear();
                    put_chunk(out, &ubuf.pending()[..n]);
                    ubuf.consume(n);
                    client_write(client, out, dur).await.map_err(|_| RelayError::Write)?;
                }
                _ => self.done = true,
            }
        }
        Ok(())
    }
}

//! One request's exchange with a service, up to its first response head: choose the endpoints
//! (`Attempts`), take a pooled connection or open one, send the head and the body, read until a
//! head is complete, and retry where that is safe. Every attempt's outcome goes to
//! `Upstreams::report`, the one place the coming circuit breaker and passive health checks read.
//! Never writes to the client: the caller supplies the body (`BodySource`) and turns each
//! response head into the client's (`planner`), and writes it itself.
//!
//! Retry rules (the default floor): a connect failure (refused, reset, timed out) moves on to the
//! next endpoint until each has been tried once. A request whose connection closed or reset
//! before any response byte is sent once more when that is safe (its body is all in hand, and it
//! is idempotent (RFC 9110 §9.2.2) or was never written): to an endpoint not yet tried where one
//! exists, else, after a pooled connection went stale, to the same endpoint on a new connection.
//! No attempt starts after the service's connect + response timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::UpStream;

use super::shared::Active;
use super::{Attempts, UpConn, Upstreams};
use crate::error::ProxyError;
use crate::http::io::{timed_write, BufPool, ReadBuf, WriteFail};

/// What one attempt came to, as `report` receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived with this status.
    Responded(u16),
    ConnectFailed,
    ConnectTimeout,
    /// The connection closed or reset before a complete response head.
    Closed,
    ResponseTimeout,
    BadResponse,
}

/// The rest of a request body, streamed to the upstream after the first write.
pub trait BodySource {
    /// Whether nothing is left to send.
    fn is_done(&self) -> bool;
    /// Streams what is left to `up`.
    fn send(&mut self, up: &mut UpStream) -> impl Future<Output = Result<(), ProxyError>>;
}

/// What the planner made of a complete response head.
pub enum Head<T> {
    /// A 1xx head: `out` holds what to relay to the client (possibly nothing); more follows.
    Informational,
    Final(T),
}

/// A request to send.
pub struct Request<'a> {
    pub service: usize,
    /// The forwarded head and the body bytes that go with it, kept intact for a resend; after the
    /// send, scratch for the planner.
    pub first: &'a mut Vec<u8>,
    /// The whole body is in `first`, so the request can be sent again.
    pub replayable: bool,
    pub idempotent: bool,
    /// Bounds each write.
    pub write_timeout: Duration,
    /// The route's total deadline (retries included), if it sets one.
    pub deadline: Option<Instant>,
    /// The request's key for consistent hashing.
    pub key: Option<u64>,
}

/// A failed call, with what the error log needs.
#[derive(Debug)]
pub struct CallError {
    pub err: ProxyError,
    /// The endpoint of the last attempt.
    pub addr: Option<SocketAddr>,
    pub os_error: Option<i32>,
    /// The body source failed (the client side), not the upstream.
    pub from_body: bool,
}

/// An exchange with a response head read: its connection, the bytes read after the head, and
/// when the request was sent.
pub struct Exchange<'u> {
    pub conn: UpConn,
    pub buf: ReadBuf,
    pub addr: SocketAddr,
    pub sent_at: Instant,
    /// Keeps the attempt counted on its endpoint (least_request) until the exchange ends.
    pub active: Active<'u>,
    deadline: Instant,
}

enum HeadError {
    Failed(ProxyError),
    /// Closed or reset with no byte of a response: a resend may be safe.
    NothingReceived,
}

/// Sends `req` and reads until `planner` accepts a complete head. `planner` is called on every
/// read with the buffered bytes and `req.first` as scratch; it returns `None` until a head is
/// complete.
pub async fn call<'u, B, P, T>(
    ups: &'u Upstreams,
    bufs: &BufPool,
    req: Request<'_>,
    body: &mut B,
    mut planner: P,
) -> Result<(Exchange<'u>, Head<T>), CallError>
where
    B: BodySource,
    P: FnMut(&mut ReadBuf, &mut Vec<u8>) -> Result<Option<Head<T>>, ProxyError>,
{
    let mut attempts = ups.attempts(req.service, req.key);
    let started = Instant::now();
    let give_up = req.deadline.unwrap_or_else(|| started + ups.retry_window(req.service));
    let shared = ups.shared(req.service);
    ups.count_request(req.service, started);
    // Sends again of a request that reached an upstream: at most `retry.attempts`, each within
    // the service's retry budget.
    let mut resends = shared.retry.attempts;
    let mut resend = req.replayable && resends > 0 && shared.retry.on_reset;
    let mut waited = 0u32;
    let mut new_only = false;
    // Whether `checkout` may still skip its check (until an unchecked connection proves stale),
    // and the endpoint of the one that did: the request goes on there, as after a failed check.
    let mut trust = true;
    let mut stay = None;
    let mut last: (Option<SocketAddr>, Option<i32>) = (None, None);
    loop {
        if attempts.made() > 0 {
            let m = &ups.metrics(req.service).retries;
            m.set(m.get() + 1);
        }
        // A stale pooled connection is found by sending on it when the request can then be
        // sent again (`checkout` skips its check for a recently used one).
        let resendable = trust && resend && req.idempotent;
        let mut up = connect(ups, &mut attempts, stay.take(), give_up, new_only, resendable, &mut last)
            .await
            .map_err(|err| CallError { err, addr: last.0, os_error: last.1, from_body: false })?;
        let addr = ups.addr(up.service, up.endpoint);
        let active = shared.endpoints[up.endpoint].begin(shared.balance == crate::config::Balance::LeastRequest);
        let may_resend =
            |up: &UpConn, attempts: &Attempts| Instant::now() < give_up && (attempts.untried() > 0 || up.reused);
        let fail = |err: ProxyError| CallError { err, addr: Some(addr), os_error: None, from_body: false };
        let sent_at = Instant::now();
        let n = req.first.len();
        let written = match timed_write(&mut up.stream, req.first, 0, n, req.write_timeout).await {
            Ok(()) => Ok(()),
            Err(WriteFail::Io(os)) => Err(os),
            // The buffer went with the cancelled write, so nothing can be resent.
            Err(WriteFail::TimedOut) => return Err(fail(ProxyError::UpstreamTimeout)),
        };
        if let Err(os) = written {
            if up.unchecked {
                // Stale: what the skipped check would have found. Dropped, charged to nothing.
                (trust, stay) = (false, Some(up.endpoint));
                continue;
            }
            // A connection the upstream had closed (a stale pooled one, or an endpoint that died).
            ups.report(req.service, up.endpoint, Outcome::Closed);
            if resend && (up.reused || req.idempotent) && may_resend(&up, &attempts) && ups.try_retry(req.service) {
                resends -= 1;
                resend = resends > 0;
                new_only = attempts.untried() == 0;
                backoff(shared.retry.backoff, &mut waited, give_up).await;
                continue;
            }
            return Err(CallError { os_error: os, ..fail(ProxyError::UpstreamClosed) });
        }
        if !body.is_done() {
            body.send(&mut up.stream).await.map_err(|err| CallError { from_body: true, ..fail(err) })?;
        }
        let deadline = (Instant::now() + ups.response_timeout(req.service)).min(give_up);
        let mut ubuf = ReadBuf::new(bufs.get());
        match read_head(&mut up, &mut ubuf, deadline, req.first, &mut planner).await {
            Ok(head) => return Ok((Exchange { conn: up, buf: ubuf, addr, sent_at, active, deadline }, head)),
            Err(e) => {
                bufs.put(std::mem::take(&mut ubuf.data));
                if up.unchecked && matches!(e, HeadError::NothingReceived) {
                    (trust, stay) = (false, Some(up.endpoint));
                    continue;
                }
                let (err, outcome) = match e {
                    HeadError::NothingReceived => (ProxyError::UpstreamClosed, Outcome::Closed),
                    HeadError::Failed(ProxyError::UpstreamTimeout) => (ProxyError::UpstreamTimeout, Outcome::ResponseTimeout),
                    HeadError::Failed(ProxyError::UpstreamClosed) => (ProxyError::UpstreamClosed, Outcome::Closed),
                    HeadError::Failed(err) => (err, Outcome::BadResponse),
                };
                ups.report(req.service, up.endpoint, outcome);
                if matches!(e, HeadError::NothingReceived) && resend && req.idempotent && may_resend(&up, &attempts) && ups.try_retry(req.service) {
                    resends -= 1;
                    resend = resends > 0;
                    new_only = attempts.untried() == 0;
                    backoff(shared.retry.backoff, &mut waited, give_up).await;
                    continue;
                }
                return Err(fail(err));
            }
        }
    }
}

/// Waits before a resend: `base` doubled per earlier resend, jittered to 50–150 %, never past
/// `give_up`.
async fn backoff(base: Duration, waited: &mut u32, give_up: Instant) {
    if base.is_zero() {
        return;
    }
    let nominal = base.saturating_mul(1 << (*waited).min(6));
    *waited += 1;
    let jitter = 50 + super::next_random() % 101;
    let d = nominal.mul_f64(jitter as f64 / 100.0);
    let until = (Instant::now() + d).min(give_up);
    monoio::time::sleep_until(until.into()).await;
}

impl Exchange<'_> {
    /// After an informational head: reads the next head (no retries: the upstream answered).
    pub async fn next_head<P, T>(&mut self, out: &mut Vec<u8>, mut planner: P) -> Result<Head<T>, ProxyError>
    where
        P: FnMut(&mut ReadBuf, &mut Vec<u8>) -> Result<Option<Head<T>>, ProxyError>,
    {
        match read_head(&mut self.conn, &mut self.buf, self.deadline, out, &mut planner).await {
            Ok(h) => Ok(h),
            Err(HeadError::NothingReceived) => Err(ProxyError::UpstreamClosed),
            Err(HeadError::Failed(e)) => Err(e),
        }
    }
}

/// Reads until the planner takes a complete head, within `deadline`.
async fn read_head<P, T>(
    up: &mut UpConn,
    ubuf: &mut ReadBuf,
    deadline: Instant,
    out: &mut Vec<u8>,
    planner: &mut P,
) -> Result<Head<T>, HeadError>
where
    P: FnMut(&mut ReadBuf, &mut Vec<u8>) -> Result<Option<Head<T>>, ProxyError>,
{
    let mut received = false;
    loop {
        if ubuf.pending_len() > 0 {
            match planner(ubuf, out) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err(HeadError::Failed(e)),
            }
        }
        match monoio::time::timeout_at(deadline.into(), ubuf.fill(&mut up.stream)).await {
            Ok(Ok(n)) if n > 0 => received = true,
            Ok(_) if !received => return Err(HeadError::NothingReceived),
            Ok(_) => return Err(HeadError::Failed(ProxyError::UpstreamClosed)),
            Err(_) => return Err(HeadError::Failed(ProxyError::UpstreamTimeout)),
        }
    }
}

/// A connection for the next attempt: pooled if the endpoint has one (unless `new_only`), else
/// new. The endpoint is `stay` if given, else the next the service picks. A failed connect moves
/// on to the next endpoint while one is untried and time remains.
async fn connect(
    ups: &Upstreams,
    attempts: &mut Attempts,
    mut stay: Option<usize>,
    give_up: Instant,
    new_only: bool,
    resendable: bool,
    last: &mut (Option<SocketAddr>, Option<i32>),
) -> Result<UpConn, ProxyError> {
    loop {
        let service = attempts.service();
        let Some(ep) = stay.take().or_else(|| ups.pick(attempts)) else {
            // Every endpoint is out (failing its checks or ejected): fail fast rather than hang.
            if attempts.made() <= attempts.count() && last.0.is_none() {
                ups.shared(service).no_healthy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(ProxyError::NoHealthyUpstream);
            }
            return Err(ProxyError::ConnectFailed);
        };
        if !new_only {
            if let Some(c) = ups.checkout(service, ep, resendable) {
                return Ok(c);
            }
        }
        // Boxed: a new connection is the rare case (and allocates anyway), and its future (the
        // connect and TLS handshake states, kilobytes) would otherwise sit in every call's.
        let connected = match Box::pin(monoio::time::timeout_at(give_up.into(), ups.connect(service, ep))).await {
            Ok(r) => r,
            Err(_) => Err((ProxyError::ConnectTimeout, Some(libc::ETIMEDOUT))),
        };
        match connected {
            Ok(c) => return Ok(c),
            Err((e, os)) => {
                *last = (Some(ups.addr(service, ep)), os);
                let outcome = if e == ProxyError::ConnectTimeout { Outcome::ConnectTimeout } else { Outcome::ConnectFailed };
                ups.report(service, ep, outcome);
                if attempts.untried() == 0 || Instant::now() >= give_up || !ups.shared(service).retry.on_connect {
                    return Err(e);
                }
            }
        }
    }
}

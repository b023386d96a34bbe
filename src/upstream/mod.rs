//! Upstream connections for one shard: per service a round-robin set of endpoints (and the order
//! one request tries them in, `Attempts`), per endpoint a LIFO pool of idle keep-alive
//! connections. Never shared across shards, so no locks.
//! A pooled connection is reused only if it is still open and has no unread bytes.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls_pki_types::ServerName;

use crate::config::tls::UpstreamTls;
use crate::tls::TlsConn;

use crate::config::Config;
use crate::error::ProxyError;
use crate::http::io::{peek, Peek};
use crate::observe::metrics::{ServiceMetrics, ShardMetrics};

mod breaker;
mod call;
pub use breaker::{Admit, State as BreakerState};
pub use call::{call, BodySource, Exchange, Head, Outcome, Request};
mod health;
mod shared;
pub use shared::{fnv1a, now_ms, ServiceShared};

/// A shard-local xorshift for balancing choices (no lock, no syscall).
pub(crate) fn next_random() -> u64 {
    thread_local!(static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed()));
    fn seed() -> u64 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        (t ^ (std::ptr::addr_of!(t) as u64)) | 1
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// The shared state of a service from config, with its active health checks started.
pub fn service_shared(s: &crate::config::Service) -> Arc<ServiceShared> {
    let shared = Arc::new(ServiceShared::new(s));
    health::start(&shared);
    shared
}

use std::sync::Arc;

/// Retries allowed as a share of requests over the last `BUDGET_SECONDS`, plus a floor so a
/// quiet service can still retry (Finagle's and Envoy's retry budgets work this way). Kept per
/// shard: each shard's retries stay within its share of its own requests, so the host's do too,
/// and no request writes state another shard reads.
const BUDGET_SECONDS: u64 = 10;
const BUDGET_FLOOR: u64 = 3;

struct Budget {
    percent: u64,
    /// Per one-second slot: (second, requests, retries).
    slots: [Cell<(u64, u64, u64)>; BUDGET_SECONDS as usize],
}

impl Budget {
    fn new(percent: u32) -> Budget {
        Budget { percent: u64::from(percent), slots: std::array::from_fn(|_| Cell::new((0, 0, 0))) }
    }

    fn slot(&self, now_s: u64) -> &Cell<(u64, u64, u64)> {
        let s = &self.slots[(now_s % BUDGET_SECONDS) as usize];
        if s.get().0 != now_s {
            s.set((now_s, 0, 0));
        }
        s
    }

    fn request(&self, now_ms: u64) {
        let s = self.slot(now_ms / 1000);
        let (t, r, x) = s.get();
        s.set((t, r + 1, x));
    }

    /// Takes one retry from the budget, if the window has room for it.
    fn try_retry(&self) -> bool {
        let now_s = now_ms() / 1000;
        let (requests, retries) = self
            .slots
            .iter()
            .map(Cell::get)
            .filter(|(t, _, _)| t + BUDGET_SECONDS > now_s)
            .fold((0, 0), |(a, b), (_, r, x)| (a + r, b + x));
        if retries >= BUDGET_FLOOR.max(requests * self.percent / 100) {
            return false;
        }
        let s = self.slot(now_s);
        let (t, r, x) = s.get();
        s.set((t, r, x + 1));
        true
    }
}

struct Idle {
    stream: UpStream,
    since: Instant,
}

/// A connection to an upstream: plain TCP, or TLS over it.
pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

impl UpStream {
    fn socket(&self) -> &TcpStream {
        match self {
            UpStream::Plain(s) => s,
            UpStream::Tls(t) => t.socket(),
        }
    }

    /// Whether the connection holds decrypted or undecrypted bytes already read.
    fn has_buffered(&self) -> bool {
        match self {
            UpStream::Plain(_) => false,
            UpStream::Tls(t) => crate::http::io::ClientStream::has_buffered(&**t),
        }
    }
}

impl AsyncReadRent for UpStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.read(buf).await,
            UpStream::Tls(t) => t.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.readv(buf).await,
            UpStream::Tls(t) => t.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.write(buf).await,
            UpStream::Tls(t) => t.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.writev(buf).await,
            UpStream::Tls(t) => t.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => s.flush().await,
            UpStream::Tls(t) => t.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => s.shutdown().await,
            UpStream::Tls(t) => t.shutdown().await,
        }
    }
}

struct Endpoint {
    addr: SocketAddr,
    idle: RefCell<Vec<Idle>>,
}

struct Service {
    endpoints: Vec<Endpoint>,
    budget: Budget,
    shared: Arc<ServiceShared>,
    tls: Option<UpstreamTls>,
    connect_timeout: Duration,
    response_timeout: Duration,
    metrics: Rc<ServiceMetrics>,
}

pub struct Upstreams {
    services: Vec<Service>,
    idle_timeout: Duration,
    max_idle: usize,
}

/// The endpoints one request tries, in order: a round-robin start, then each following endpoint
/// once. Walking on from the start (rather than asking the shared counter again, which concurrent
/// requests move) means a retry never returns to an endpoint this request already tried while
/// another exists. Once all were tried, the walk wraps around.
pub struct Attempts {
    service: usize,
    first: usize,
    made: usize,
    count: usize,
}

impl Attempts {
    pub fn service(&self) -> usize {
        self.service
    }

    /// The endpoint for the next attempt.
    pub fn next_endpoint(&mut self) -> usize {
        let ep = (self.first + self.made) % self.count;
        self.made += 1;
        ep
    }

    /// Endpoints the service has.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Attempts made so far.
    pub fn made(&self) -> usize {
        self.made
    }

    /// Endpoints not yet tried.
    pub fn untried(&self) -> usize {
        self.count.saturating_sub(self.made)
    }
}

/// A connection in use, and where it came from.
pub struct UpConn {
    pub stream: UpStream,
    pub service: usize,
    pub endpoint: usize,
    /// Taken from the pool (it may have gone stale since).
    pub reused: bool,
    /// Taken from the pool without the liveness check (`checkout` trusts a recently used one
    /// for a request that can be sent again).
    pub unchecked: bool,
}

impl Upstreams {
    /// `shared` holds each service's cross-shard state, in config order.
    pub fn new(cfg: &Config, shared: &[Arc<ServiceShared>], metrics: &ShardMetrics) -> Self {
        Upstreams {
            services: cfg
                .services
                .iter()
                .zip(shared)
                .map(|(s, sh)| Service {
                    endpoints: s
                        .upstreams
                        .iter()
                        .map(|&addr| Endpoint { addr, idle: RefCell::new(Vec::new()) })
                        .collect(),
                    shared: sh.clone(),
                    tls: s.tls.clone(),
                    budget: Budget::new(s.retry.budget_percent),
                    connect_timeout: s.connect_timeout,
                    response_timeout: s.response_timeout,
                    metrics: metrics.service(&s.name),
                })
                .collect(),
            idle_timeout: cfg.upstream.idle_timeout,
            max_idle: cfg.upstream.max_idle_per_endpoint,
        }
    }

    /// Takes over `prev`'s idle connections to every address this set also has (a reload keeps
    /// warm connections to upstreams that stayed).
    pub fn adopt_idle(&self, prev: &Upstreams) {
        for s in &self.services {
            for ep in &s.endpoints {
                let mut mine = ep.idle.borrow_mut();
                // Only from a service that speaks to the address the same way (plain, or TLS with
                // the same settings).
                let same = prev.services.iter().filter(|o| o.tls == s.tls);
                for old in same.flat_map(|s| &s.endpoints).filter(|e| e.addr == ep.addr) {
                    let mut theirs = old.idle.borrow_mut();
                    while mine.len() < self.max_idle {
                        match theirs.pop() {
                            Some(c) => mine.push(c),
                            None => break,
                        }
                    }
                }
            }
        }
    }

    pub fn metrics(&self, service: usize) -> &ServiceMetrics {
        &self.services[service].metrics
    }

    pub fn addr(&self, service: usize, endpoint: usize) -> SocketAddr {
        self.services[service].endpoints[endpoint].addr
    }

    pub fn response_timeout(&self, service: usize) -> Duration {
        self.services[service].response_timeout
    }

    /// How long after a request's first attempt another may start: the service's connect plus
    /// response timeout.
    pub fn retry_window(&self, service: usize) -> Duration {
        let s = &self.services[service];
        s.connect_timeout + s.response_timeout
    }

    pub fn shared(&self, service: usize) -> &ServiceShared {
        &self.services[service].shared
    }

    /// A request starts at `at` (for the retry budget).
    pub fn count_request(&self, service: usize, at: Instant) {
        self.services[service].budget.request(shared::ms_at(at));
    }

    /// Whether a request that reached an upstream may be sent again now, within the budget.
    pub fn try_retry(&self, service: usize) -> bool {
        let ok = self.services[service].budget.try_retry();
        if !ok {
            self.services[service].shared.budget_exhausted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ok
    }

    /// The next endpoint for `a` that is available (healthy, not ejected); `None` when none is.
    pub fn pick(&self, a: &mut Attempts) -> Option<usize> {
        let s = &self.services[a.service];
        if s.shared.always_available {
            return Some(a.next_endpoint());
        }
        let now = shared::now_ms();
        (0..a.count).map(|_| a.next_endpoint()).find(|&ep| s.shared.endpoints[ep].available(now))
    }

    /// The endpoints one request may try: the first as the service balances (`key` for
    /// consistent hashing), then each following endpoint once.
    pub fn attempts(&self, service: usize, key: Option<u64>) -> Attempts {
        let s = &self.services[service];
        let first = s.shared.first(key, next_random());
        Attempts { service, first: first % s.endpoints.len(), made: 0, count: s.endpoints.len() }
    }

    /// An idle pooled connection to this endpoint that is still usable, if any.
    ///
    /// Each is checked with a non-blocking peek (a syscall) for a close or stray bytes from the
    /// upstream, except, when `resendable` (the request is sent again should the connection
    /// prove closed), one idle for less than `TRUSTED_IDLE`.
    pub fn checkout(&self, service: usize, endpoint: usize, resendable: bool) -> Option<UpConn> {
        let ep = &self.services[service].endpoints[endpoint];
        let mut idle = ep.idle.borrow_mut();
        let now = Instant::now();
        while let Some(c) = idle.pop() {
            let idle_for = now.duration_since(c.since);
            let trusted = resendable && idle_for < TRUSTED_IDLE && !c.stream.has_buffered();
            if idle_for < self.idle_timeout && (trusted || quiet(&c.stream)) {
                let m = &self.services[service].metrics;
                m.pool_reused.set(m.pool_reused.get() + 1);
                return Some(UpConn { stream: c.stream, service, endpoint, reused: true, unchecked: trusted });
            }
        }
        None
    }

    /// Opens a new connection to this endpoint; a failure carries the OS error, if any.
    pub async fn connect(&self, service: usize, endpoint: usize) -> Result<UpConn, (ProxyError, Option<i32>)> {
        let s = &self.services[service];
        let addr = s.endpoints[endpoint].addr;
        let m = &s.metrics;
        let started = Instant::now();
        let stream = match monoio::time::timeout(s.connect_timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err((ProxyError::ConnectFailed, e.raw_os_error())),
            Err(_) => return Err((ProxyError::ConnectTimeout, Some(libc::ETIMEDOUT))),
        };
        let _ = stream.set_nodelay(true);
        let stream = match &s.tls {
            None => UpStream::Plain(stream),
            Some(t) => {
                // The handshake counts in the connect timeout.
                let left = s.connect_timeout.saturating_sub(started.elapsed());
                let name = match &t.sni {
                    Some(n) => ServerName::try_from(n.clone()).map_err(|_| (ProxyError::UpstreamTls, None))?,
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                let session = rustls::ClientConnection::new(t.config.clone(), name).map_err(|_| (ProxyError::UpstreamTls, None))?;
                let mut tls = TlsConn::new(stream, session);
                match monoio::time::timeout(left, tls.handshake()).await {
                    Ok(Ok(())) => UpStream::Tls(Box::new(tls)),
                    Ok(Err(e)) => {
                        tracing::warn!(upstream = %addr, error = %e, "TLS handshake with the upstream failed");
                        return Err((ProxyError::UpstreamTls, e.raw_os_error()));
                    }
                    Err(_) => return Err((ProxyError::ConnectTimeout, Some(libc::ETIMEDOUT))),
                }
            }
        };
        m.pool_new.set(m.pool_new.get() + 1);
        Ok(UpConn { stream, service, endpoint, reused: false, unchecked: false })
    }

    /// Where the outcome of every attempt arrives (from `call`, and from the request path once a
    /// response is relayed). Counts it today; the circuit breaker and passive health checks
    /// judge endpoints here next.
    pub fn report(&self, service: usize, endpoint: usize, outcome: Outcome) {
        let ok = matches!(outcome, Outcome::Responded(s) if s < 500);
        let sh = &self.services[service].shared;
        if let Some(b) = &sh.breaker {
            b.record(ok);
        }
        sh.passive(endpoint, ok);
        let m = &self.services[service].metrics;
        let c = match outcome {
            Outcome::ConnectFailed => &m.connect_failures,
            Outcome::ConnectTimeout => &m.connect_timeouts,
            Outcome::ResponseTimeout => &m.response_timeouts,
            Outcome::Responded(_) | Outcome::Closed | Outcome::BadResponse => return,
        };
        c.set(c.get() + 1);
    }

    /// Returns a connection whose exchange finished cleanly.
    pub fn checkin(&self, conn: UpConn) {
        let ep = &self.services[conn.service].endpoints[conn.endpoint];
        let mut idle = ep.idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push(Idle { stream: conn.stream, since: Instant::now() });
        }
    }

    /// Drops idle connections past their idle timeout or closed by the upstream.
    pub fn sweep(&self) {
        let now = Instant::now();
        for s in &self.services {
            for ep in &s.endpoints {
                ep.idle.borrow_mut().retain(|c| now.duration_since(c.since) < self.idle_timeout && quiet(&c.stream));
            }
        }
    }

}

/// How long a pooled connection may sit idle and still be reused unchecked by a request that
/// can be sent again. Under load a connection goes back out microseconds after its response,
/// and checking it was a `recv` syscall per request (3 % of a shard's CPU at 36k req/s);
/// upstreams close idle connections after seconds (nginx 75 s, Node.js 5 s), so one closed
/// within this window is rare (a crash or restart). One found closed costs what the check
/// would have: it is dropped and the request goes on to the same endpoint (`call`), charged to
/// no `retry.attempts` or budget and reported to no health check, once per request. Stray
/// bytes an upstream sends after a complete response and within the window are not seen before
/// reuse; they are read as the start of the next response (a 502 unless they form a valid
/// head), as they are with the check when they arrive just after it: no check before reuse
/// rules them out.
const TRUSTED_IDLE: Duration = Duration::from_millis(500);

/// True when an idle connection has nothing to read and is not closed. Anything readable on an
/// idle upstream connection (EOF, a reset, stray bytes) makes it unusable.
fn quiet(stream: &UpStream) -> bool {
    !stream.has_buffered() && peek(stream.socket()) == Peek::Quiet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_endpoints() -> Config {
        Config::parse("[[services]]\nname = \"s\"\nupstreams = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n")
            .unwrap()
    }

    fn shared(cfg: &Config) -> Vec<Arc<ServiceShared>> {
        cfg.services.iter().map(|s| Arc::new(ServiceShared::new(s))).collect()
    }

    #[test]
    fn round_robin_is_shared_across_shards() {
        // Two shards' first requests go to two endpoints, not both to the first.
        let cfg = two_endpoints();
        let sh = shared(&cfg);
        let firsts: Vec<usize> = (0..2).map(|_| Upstreams::new(&cfg, &sh, &ShardMetrics::default()).attempts(0, None).next_endpoint()).collect();
        assert_eq!(firsts, vec![0, 1]);
    }

    #[test]
    fn attempts_walk_every_endpoint_once_from_their_start() {
        let cfg = two_endpoints();
        let ups = Upstreams::new(&cfg, &shared(&cfg), &ShardMetrics::default());
        let _ = ups.attempts(0, None);
        // Another request moved the counter; this one still walks 1, 0 and then wraps.
        let mut a = ups.attempts(0, None);
        let walk: Vec<usize> = (0..3).map(|_| a.next_endpoint()).collect();
        assert_eq!(walk, vec![1, 0, 1]);
        assert_eq!(a.untried(), 0);
    }
}

//! Shard-local metrics: plain cells and hdrhistograms owned by one shard thread, written on the
//! request path without atomics or locks, and copied into a `Snapshot` only when the admin
//! listener asks (the shard answers on its next housekeeping tick). Series are kept by name (route,
//! service, limit, provider), so they survive a config reload. Metric names are in `names`.
//! Never allocates per request in steady state: a series is created once, when first used.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use hdrhistogram::Histogram;

/// Histogram range: 1 µs to 1 hour, 2 significant digits (≤ 1 % error, ~10 KiB each).
const HIST_MAX_US: u64 = 3_600_000_000;
const HIST_SIGFIG: u8 = 2;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).expect("constant histogram bounds are valid")
}

/// The method label: one of the methods the router knows, or `OTHER`, so labels stay bounded.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("OTHER")
}

/// Requests of one route (or of no route), by method and status; durations; bytes.
pub struct RouteMetrics {
    /// (method, status, count); a few entries per route, searched linearly.
    requests: RefCell<Vec<(&'static str, u16, u64)>>,
    /// Body transforms: (side, result, count); result is applied, failed or skipped.
    transforms: RefCell<Vec<(&'static str, &'static str, u64)>>,
    /// Aggregation parts: time from the start of the fan-out to each part's answer.
    parts_us: RefCell<Option<Histogram<u64>>>,
    parts_sum_us: Cell<u64>,
    duration_us: RefCell<Histogram<u64>>,
    duration_sum_us: Cell<u64>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
}

impl RouteMetrics {
    fn new() -> Self {
        RouteMetrics {
            requests: RefCell::new(Vec::new()),
            transforms: RefCell::new(Vec::new()),
            parts_us: RefCell::new(None),
            parts_sum_us: Cell::new(0),
            duration_us: RefCell::new(new_histogram()),
            duration_sum_us: Cell::new(0),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
        }
    }

    pub fn record_part(&self, us: u64) {
        self.parts_us.borrow_mut().get_or_insert_with(new_histogram).saturating_record(us.max(1));
        self.parts_sum_us.set(self.parts_sum_us.get().wrapping_add(us));
    }

    pub fn transform(&self, side: &'static str, result: &'static str) {
        let mut t = self.transforms.borrow_mut();
        match t.iter_mut().find(|(s, r, _)| *s == side && *r == result) {
            Some(e) => e.2 += 1,
            None => t.push((side, result, 1)),
        }
    }

    pub fn record(&self, method: &'static str, status: u16, duration_us: u64, bytes_in: u64, bytes_out: u64) {
        let mut reqs = self.requests.borrow_mut();
        match reqs.iter_mut().find(|(m, s, _)| *m == method && *s == status) {
            Some(e) => e.2 += 1,
            None => reqs.push((method, status, 1)),
        }
        self.duration_us.borrow_mut().saturating_record(duration_us.max(1));
        self.duration_sum_us.set(self.duration_sum_us.get().wrapping_add(duration_us));
        self.bytes_in.set(self.bytes_in.get() + bytes_in);
        self.bytes_out.set(self.bytes_out.get() + bytes_out);
    }
}

/// One upstream service: exchange durations and connection outcomes.
#[derive(Default)]
pub struct ServiceMetrics {
    duration_us: RefCell<Option<Histogram<u64>>>,
    duration_sum_us: Cell<u64>,
    pub connect_failures: Cell<u64>,
    pub connect_timeouts: Cell<u64>,
    pub response_timeouts: Cell<u64>,
    pub retries: Cell<u64>,
    pub pool_reused: Cell<u64>,
    pub pool_new: Cell<u64>,
}

impl ServiceMetrics {
    pub fn record_duration(&self, us: u64) {
        self.duration_us.borrow_mut().get_or_insert_with(new_histogram).saturating_record(us.max(1));
        self.duration_sum_us.set(self.duration_sum_us.get().wrapping_add(us));
    }
}

/// Decisions of one rate limit.
#[derive(Default)]
pub struct LimitMetrics {
    pub allowed: Cell<u64>,
    pub rejected: Cell<u64>,
    /// Cluster limits: refusals answered from the deny cache, without Redis.
    pub deny_cache_hits: Cell<u64>,
    /// Cluster limits: decisions made by `on_error` (local, allow, deny) because Redis failed.
    pub on_error: [Cell<u64>; 3],
}

/// TLS handshakes on the shard, by result (`full`, `resumed`, `failed`, `timeout`,
/// `plain_http`, `not_tls`) and protocol version.
#[derive(Default)]
pub struct TlsMetrics {
    handshakes: RefCell<Vec<(&'static str, &'static str, u64)>>,
}

impl TlsMetrics {
    pub fn handshake(&self, result: &'static str, version: &'static str) {
        let mut h = self.handshakes.borrow_mut();
        match h.iter_mut().find(|(r, v, _)| *r == result && *v == version) {
            Some(e) => e.2 += 1,
            None => h.push((result, version, 1)),
        }
    }
}

/// The shard's Redis client (cluster rate limits).
#[derive(Default)]
pub struct RedisMetrics {
    pub calls: Cell<u64>,
    latency_us: RefCell<Option<Histogram<u64>>>,
    latency_sum_us: Cell<u64>,
    /// Commands per pipelined write.
    batch: RefCell<Option<Histogram<u64>>>,
    batch_sum: Cell<u64>,
    /// Failed calls by kind: unavailable, timeout, overloaded, error_reply, protocol.
    errors: RefCell<Vec<(&'static str, u64)>>,
    pub moved: Cell<u64>,
    pub ask: Cell<u64>,
    pub script_loads: Cell<u64>,
    pub slot_refreshes: Cell<u64>,
    pub connects: Cell<u64>,
    pub sync_rounds: Cell<u64>,
    pub sync_failures: Cell<u64>,
}

impl RedisMetrics {
    pub fn record_call(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        self.calls.set(self.calls.get() + 1);
        self.latency_us.borrow_mut().get_or_insert_with(new_histogram).saturating_record(us.max(1));
        self.latency_sum_us.set(self.latency_sum_us.get().wrapping_add(us));
    }

    pub fn record_batch(&self, n: usize) {
        self.batch.borrow_mut().get_or_insert_with(new_histogram).saturating_record(n.max(1) as u64);
        self.batch_sum.set(self.batch_sum.get() + n as u64);
    }

    pub fn error(&self, kind: &'static str) {
        let mut e = self.errors.borrow_mut();
        match e.iter_mut().find(|(k, _)| *k == kind) {
            Some(x) => x.1 += 1,
            None => e.push((kind, 1)),
        }
    }

    fn snapshot(&self) -> RedisSnap {
        RedisSnap {
            calls: self.calls.get(),
            latency_us: self.latency_us.borrow().clone(),
            latency_sum_us: self.latency_sum_us.get(),
            batch: self.batch.borrow().clone(),
            batch_sum: self.batch_sum.get(),
            errors: self.errors.borrow().clone(),
            counters: [
                ("moved", self.moved.get()),
                ("ask", self.ask.get()),
                ("script_load", self.script_loads.get()),
                ("slot_refresh", self.slot_refreshes.get()),
                ("connect", self.connects.get()),
                ("sync_round", self.sync_rounds.get()),
                ("sync_round_failed", self.sync_failures.get()),
            ],
        }
    }
}

#[derive(Clone, Default)]
pub struct RedisSnap {
    pub calls: u64,
    pub latency_us: Option<Histogram<u64>>,
    pub latency_sum_us: u64,
    pub batch: Option<Histogram<u64>>,
    pub batch_sum: u64,
    pub errors: Vec<(&'static str, u64)>,
    /// Events by name (redirections, script loads, connects, sync rounds).
    pub counters: [(&'static str, u64); 7],
}

/// The `on_error` decision labels, in `LimitMetrics::on_error` order.
pub const ON_ERROR_LABELS: [&str; 3] = ["local", "allow", "deny"];

/// One authentication provider: failures by reason, and (JWT) cache use.
#[derive(Default)]
pub struct AuthMetrics {
    failures: RefCell<Vec<(&'static str, u64)>>,
    pub cache_hits: Cell<u64>,
    pub cache_misses: Cell<u64>,
}

impl AuthMetrics {
    pub fn failure(&self, reason: &'static str) {
        let mut f = self.failures.borrow_mut();
        match f.iter_mut().find(|(r, _)| *r == reason) {
            Some(e) => e.1 += 1,
            None => f.push((reason, 1)),
        }
    }
}

/// Connection counters of one shard.
/// One cache's counters on one shard (`bytes` and `entries` are gauges).
#[derive(Default)]
pub struct CacheMetrics {
    pub hits: Cell<u64>,
    pub misses: Cell<u64>,
    /// Served stale (while revalidating, or because the upstream failed).
    pub stale: Cell<u64>,
    /// Validated with the upstream (a 304 refreshed the stored response).
    pub revalidated: Cell<u64>,
    /// Answered from another request's fill.
    pub collapsed: Cell<u64>,
    pub stored: Cell<u64>,
    pub evicted: Cell<u64>,
    pub purged: Cell<u64>,
    /// Removed because an unsafe method succeeded on the URL.
    pub invalidated: Cell<u64>,
    pub bytes: Cell<u64>,
    pub entries: Cell<u64>,
}

impl CacheMetrics {
    pub fn count(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }

    fn snapshot(&self, name: &str) -> CacheSnap {
        CacheSnap {
            name: name.to_string(),
            counters: [
                ("hit", self.hits.get()),
                ("miss", self.misses.get()),
                ("stale", self.stale.get()),
                ("revalidated", self.revalidated.get()),
                ("collapsed", self.collapsed.get()),
            ],
            stored: self.stored.get(),
            evicted: self.evicted.get(),
            purged: self.purged.get(),
            invalidated: self.invalidated.get(),
            bytes: self.bytes.get(),
            entries: self.entries.get(),
        }
    }
}

/// One cache on one shard, for the admin thread.
#[derive(Clone, Default)]
pub struct CacheSnap {
    pub name: String,
    /// Responses by how the cache answered them.
    pub counters: [(&'static str, u64); 5],
    pub stored: u64,
    pub evicted: u64,
    pub purged: u64,
    pub invalidated: u64,
    pub bytes: u64,
    pub entries: u64,
}

#[derive(Default)]
pub struct ConnMetrics {
    pub accepted: Cell<u64>,
    pub refused_per_ip: Cell<u64>,
    pub accept_errors_fd: Cell<u64>,
    pub accept_paused: Cell<u64>,
    /// Quiet connections moved out of their tasks into the shard's parking lot.
    pub parked: Cell<u64>,
}

/// Every series of one shard, by name.
#[derive(Default)]
pub struct ShardMetrics {
    routes: RefCell<Vec<(String, Rc<RouteMetrics>)>>,
    services: RefCell<Vec<(String, Rc<ServiceMetrics>)>>,
    limits: RefCell<Vec<(String, Rc<LimitMetrics>)>>,
    auth: RefCell<Vec<(String, Rc<AuthMetrics>)>>,
    caches: RefCell<Vec<(String, Rc<CacheMetrics>)>>,
    pub conns: ConnMetrics,
    pub redis: Rc<RedisMetrics>,
    pub tls: TlsMetrics,
    /// Access-log lines dropped because the writer fell behind.
    pub log_dropped: Cell<u64>,
    /// Times this shard returned free heap pages to the OS after a burst.
    pub heap_trims: Cell<u64>,
}

fn series<T>(list: &RefCell<Vec<(String, Rc<T>)>>, name: &str, make: impl FnOnce() -> T) -> Rc<T> {
    let mut list = list.borrow_mut();
    if let Some((_, m)) = list.iter().find(|(n, _)| n == name) {
        return m.clone();
    }
    let m = Rc::new(make());
    list.push((name.to_string(), m.clone()));
    m
}

/// The route label of requests that matched no route.
pub const NO_ROUTE: &str = "";

impl ShardMetrics {
    /// The series of a route by name (created on first use; kept across reloads).
    pub fn route(&self, name: &str) -> Rc<RouteMetrics> {
        series(&self.routes, name, RouteMetrics::new)
    }

    pub fn service(&self, name: &str) -> Rc<ServiceMetrics> {
        series(&self.services, name, ServiceMetrics::default)
    }

    pub fn limit(&self, name: &str) -> Rc<LimitMetrics> {
        series(&self.limits, name, LimitMetrics::default)
    }

    pub fn auth(&self, name: &str) -> Rc<AuthMetrics> {
        series(&self.auth, name, AuthMetrics::default)
    }

    pub fn cache(&self, name: &str) -> Rc<CacheMetrics> {
        series(&self.caches, name, CacheMetrics::default)
    }

    /// A copy of everything, to hand to the admin thread.
    pub fn snapshot(&self, open_connections: u64, parked_now: u64, buffers_released: u64) -> Snapshot {
        Snapshot {
            routes: self
                .routes
                .borrow()
                .iter()
                .map(|(n, m)| RouteSnap {
                    name: n.clone(),
                    requests: m.requests.borrow().clone(),
                    transforms: m.transforms.borrow().clone(),
                    parts_us: m.parts_us.borrow().clone(),
                    parts_sum_us: m.parts_sum_us.get(),
                    duration_us: m.duration_us.borrow().clone(),
                    duration_sum_us: m.duration_sum_us.get(),
                    bytes_in: m.bytes_in.get(),
                    bytes_out: m.bytes_out.get(),
                })
                .collect(),
            services: self
                .services
                .borrow()
                .iter()
                .map(|(n, m)| ServiceSnap {
                    name: n.clone(),
                    duration_us: m.duration_us.borrow().clone(),
                    duration_sum_us: m.duration_sum_us.get(),
                    connect_failures: m.connect_failures.get(),
                    connect_timeouts: m.connect_timeouts.get(),
                    response_timeouts: m.response_timeouts.get(),
                    retries: m.retries.get(),
                    pool_reused: m.pool_reused.get(),
                    pool_new: m.pool_new.get(),
                })
                .collect(),
            limits: self.limits.borrow().iter().map(|(n, m)| (n.clone(), m.allowed.get(), m.rejected.get())).collect(),
            limits_cluster: self
                .limits
                .borrow()
                .iter()
                .map(|(n, m)| (n.clone(), m.deny_cache_hits.get(), [m.on_error[0].get(), m.on_error[1].get(), m.on_error[2].get()]))
                .collect(),
            redis: self.redis.snapshot(),
            tls_handshakes: self.tls.handshakes.borrow().clone(),
            auth: self
                .auth
                .borrow()
                .iter()
                .map(|(n, m)| AuthSnap {
                    name: n.clone(),
                    failures: m.failures.borrow().clone(),
                    cache_hits: m.cache_hits.get(),
                    cache_misses: m.cache_misses.get(),
                })
                .collect(),
            caches: self.caches.borrow().iter().map(|(n, m)| m.snapshot(n)).collect(),
            accepted: self.conns.accepted.get(),
            open_connections,
            parked_now,
            parked: self.conns.parked.get(),
            refused_per_ip: self.conns.refused_per_ip.get(),
            accept_errors_fd: self.conns.accept_errors_fd.get(),
            accept_paused: self.conns.accept_paused.get(),
            log_dropped: self.log_dropped.get(),
            heap_trims: self.heap_trims.get(),
            buffers_released,
        }
    }
}

/// A shard's metrics at one instant, owned so it can cross threads.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub routes: Vec<RouteSnap>,
    pub services: Vec<ServiceSnap>,
    /// (limit, allowed, rejected)
    pub limits: Vec<(String, u64, u64)>,
    /// (limit, deny-cache hits, on_error decisions as in `ON_ERROR_LABELS`)
    pub limits_cluster: Vec<(String, u64, [u64; 3])>,
    pub redis: RedisSnap,
    /// (result, version, count)
    pub tls_handshakes: Vec<(&'static str, &'static str, u64)>,
    pub auth: Vec<AuthSnap>,
    pub caches: Vec<CacheSnap>,
    pub accepted: u64,
    pub open_connections: u64,
    /// Open connections parked (idle, without a task) now.
    pub parked_now: u64,
    /// Connections parked so far.
    pub parked: u64,
    pub refused_per_ip: u64,
    pub accept_errors_fd: u64,
    pub accept_paused: u64,
    pub log_dropped: u64,
    pub heap_trims: u64,
    /// Buffers freed because the shard's pool was full.
    pub buffers_released: u64,
}

#[derive(Clone)]
pub struct RouteSnap {
    pub name: String,
    pub requests: Vec<(&'static str, u16, u64)>,
    pub transforms: Vec<(&'static str, &'static str, u64)>,
    pub parts_us: Option<Histogram<u64>>,
    pub parts_sum_us: u64,
    pub duration_us: Histogram<u64>,
    pub duration_sum_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Clone)]
pub struct ServiceSnap {
    pub name: String,
    pub duration_us: Option<Histogram<u64>>,
    pub duration_sum_us: u64,
    pub connect_failures: u64,
    pub connect_timeouts: u64,
    pub response_timeouts: u64,
    pub retries: u64,
    pub pool_reused: u64,
    pub pool_new: u64,
}

#[derive(Clone)]
pub struct AuthSnap {
    pub name: String,
    pub failures: Vec<(&'static str, u64)>,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

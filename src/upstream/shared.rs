//! What every shard shares of one service, lock-free: the round-robin position, the in-flight
//! count for `max_concurrent`, the circuit breaker, the retry budget, and each endpoint's health
//! (active checks) and ejection (outlier detection). Kept across a reload, by name, while the
//! service's settings and endpoints are unchanged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::OnceLock;
use std::time::Instant;

use super::breaker::Breaker;
use crate::config::{HealthConfig, OutlierConfig, RetryConfig, Service};

/// Milliseconds since a process-wide monotonic epoch.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One endpoint as every shard sees it.
pub struct EndpointShared {
    pub addr: SocketAddr,
    /// The active checks' verdict (healthy until they say otherwise).
    pub healthy: AtomicBool,
    /// Consecutive check results in the current direction.
    pub check_streak: AtomicU32,
    /// Consecutive failed requests (outlier detection).
    failures: AtomicU32,
    /// Ejected until this time (`now_ms`), 0 when not ejected.
    ejected_until: AtomicU64,
    pub ejections: AtomicU64,
}

impl EndpointShared {
    fn new(addr: SocketAddr) -> EndpointShared {
        EndpointShared {
            addr,
            healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Acquire) > now
    }

    /// Whether requests may go here: healthy by the active checks and not ejected.
    pub fn available(&self, now: u64) -> bool {
        self.healthy.load(Acquire) && !self.ejected(now)
    }
}

/// Retries allowed as a share of requests over the last `BUDGET_SECONDS`, plus a floor so a
/// quiet service can still retry (Finagle's and Envoy's retry budgets work this way).
const BUDGET_SECONDS: u64 = 10;
const BUDGET_FLOOR: u64 = 3;

struct Budget {
    percent: u64,
    /// Per one-second slot: (second, requests, retries).
    slots: [(AtomicU64, AtomicU64, AtomicU64); BUDGET_SECONDS as usize],
}

impl Budget {
    fn slot(&self, now_s: u64) -> &(AtomicU64, AtomicU64, AtomicU64) {
        let s = &self.slots[(now_s % BUDGET_SECONDS) as usize];
        let seen = s.0.load(Acquire);
        if seen != now_s && s.0.compare_exchange(seen, now_s, AcqRel, Acquire).is_ok() {
            s.1.store(0, Release);
            s.2.store(0, Release);
        }
        s
    }

    fn request(&self) {
        self.slot(now_ms() / 1000).1.fetch_add(1, AcqRel);
    }

    /// Takes one retry from the budget, if the window has room for it.
    fn try_retry(&self) -> bool {
        let now_s = now_ms() / 1000;
        let (mut requests, mut retries) = (0, 0);
        for s in &self.slots {
            if s.0.load(Acquire) + BUDGET_SECONDS > now_s {
                requests += s.1.load(Acquire);
                retries += s.2.load(Acquire);
            }
        }
        if retries >= BUDGET_FLOOR.max(requests * self.percent / 100) {
            return false;
        }
        self.slot(now_s).2.fetch_add(1, AcqRel);
        true
    }
}

pub struct ServiceShared {
    pub name: String,
    pub breaker: Option<Breaker>,
    pub endpoints: Vec<EndpointShared>,
    pub health: Option<HealthConfig>,
    outlier: Option<OutlierConfig>,
    pub retry: RetryConfig,
    budget: Budget,
    max_concurrent: usize,
    pub(super) rr: AtomicUsize,
    in_flight: AtomicUsize,
    /// Requests answered with the breaker's fallback.
    pub fallbacks: AtomicU64,
    /// Requests refused for `max_concurrent`.
    pub overloaded: AtomicU64,
    /// Retries refused by the budget.
    pub budget_exhausted: AtomicU64,
    /// Requests refused because no endpoint was available.
    pub no_healthy: AtomicU64,
}

impl ServiceShared {
    pub fn new(s: &Service) -> ServiceShared {
        ServiceShared {
            name: s.name.clone(),
            breaker: s.breaker.as_ref().map(Breaker::new),
            endpoints: s.upstreams.iter().map(|&a| EndpointShared::new(a)).collect(),
            health: s.health.clone(),
            outlier: s.outlier.clone(),
            retry: s.retry.clone(),
            budget: Budget {
                percent: u64::from(s.retry.budget_percent),
                slots: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0))),
            },
            max_concurrent: s.max_concurrent,
            rr: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            fallbacks: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            no_healthy: AtomicU64::new(0),
        }
    }

    /// Whether `s` keeps this state on a reload (same endpoints and resilience settings).
    pub fn matches(&self, s: &Service) -> bool {
        self.name == s.name
            && self.max_concurrent == s.max_concurrent
            && self.breaker.as_ref().map(|b| &b.cfg) == s.breaker.as_ref()
            && self.health == s.health
            && self.outlier == s.outlier
            && self.retry == s.retry
            && self.endpoints.iter().map(|e| e.addr).eq(s.upstreams.iter().copied())
    }

    /// Counts a request in flight; `None` when the service is at `max_concurrent`.
    pub fn enter(&self) -> Option<InFlight<'_>> {
        if self.max_concurrent == 0 {
            return Some(InFlight(None));
        }
        if self.in_flight.fetch_add(1, AcqRel) >= self.max_concurrent {
            self.in_flight.fetch_sub(1, AcqRel);
            self.overloaded.fetch_add(1, Relaxed);
            return None;
        }
        Some(InFlight(Some(self)))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// A request starts (for the retry budget).
    pub fn count_request(&self) {
        self.budget.request();
    }

    /// Whether a request that reached the upstream may be sent again now.
    pub fn try_retry(&self) -> bool {
        let ok = self.budget.try_retry();
        if !ok {
            self.budget_exhausted.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Outlier detection: a run of `consecutive_failures` ejects the endpoint for `eject_for`
    /// (doubling with each ejection, up to 8×), unless `max_ejected_percent` are out already.
    pub fn passive(&self, endpoint: usize, ok: bool) {
        let Some(o) = &self.outlier else { return };
        let Some(ep) = self.endpoints.get(endpoint) else { return };
        if ok {
            ep.failures.store(0, Release);
            return;
        }
        if ep.failures.fetch_add(1, AcqRel) + 1 < o.consecutive_failures {
            return;
        }
        let now = now_ms();
        let out = self.endpoints.iter().filter(|e| e.ejected(now)).count();
        if ep.ejected(now) || (out + 1) * 100 > o.max_ejected_percent as usize * self.endpoints.len() {
            return;
        }
        ep.failures.store(0, Release);
        let n = ep.ejections.fetch_add(1, AcqRel);
        let length = o.eject_for.as_millis() as u64 * (1u64 << n.min(3));
        ep.ejected_until.store(now + length, Release);
        tracing::warn!(service = %self.name, upstream = %ep.addr, eject_ms = length, "endpoint ejected after consecutive failures");
    }
}

/// A request counted against `max_concurrent` until dropped.
pub struct InFlight<'a>(Option<&'a ServiceShared>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            s.in_flight.fetch_sub(1, AcqRel);
        }
    }
}

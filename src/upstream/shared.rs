//! What every shard shares of one service, lock-free: the round-robin position, the in-flight
//! count for `max_concurrent`, the circuit breaker, and each endpoint's health (active checks),
//! ejection (outlier detection) and load (for least_request). Kept across a reload, by name, while the
//! service's settings and endpoints are unchanged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::OnceLock;
use std::time::Instant;

use super::breaker::Breaker;
use crate::config::{Balance, HealthConfig, OutlierConfig, RetryConfig, Service};

/// Milliseconds since a process-wide monotonic epoch.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// `t` in the same milliseconds as `now_ms`, for a caller that already read the clock.
pub fn ms_at(t: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    t.saturating_duration_since(*EPOCH.get_or_init(Instant::now)).as_millis() as u64
}

/// One endpoint as every shard sees it.
pub struct EndpointShared {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Attempts in flight to this endpoint from the whole host (for least_request).
    pub active: AtomicU32,
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
    fn new(addr: SocketAddr, weight: u32) -> EndpointShared {
        EndpointShared {
            addr,
            weight: weight.max(1),
            active: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// Counts an attempt in flight here until the guard drops (only least_request reads it, so
    /// other services skip the shared write).
    pub fn begin(&self, counted: bool) -> Active<'_> {
        if !counted {
            return Active(None);
        }
        self.active.fetch_add(1, AcqRel);
        Active(Some(self))
    }

    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Acquire) > now
    }

    /// Whether requests may go here: healthy by the active checks and not ejected.
    pub fn available(&self, now: u64) -> bool {
        self.healthy.load(Acquire) && !self.ejected(now)
    }
}

pub struct ServiceShared {
    pub name: String,
    pub balance: Balance,
    /// Round robin by weight: endpoint indices in smooth weighted order, walked by `rr`.
    schedule: Vec<u16>,
    /// consistent_hash: (point, endpoint), sorted; `VNODES` points per unit of weight.
    ring: Vec<(u64, u16)>,
    pub breaker: Option<Breaker>,
    pub endpoints: Vec<EndpointShared>,
    pub health: Option<HealthConfig>,
    /// TLS to the endpoints (health probes speak it too).
    pub tls: Option<crate::config::tls::UpstreamTls>,
    outlier: Option<OutlierConfig>,
    /// Without health checks or outlier detection every endpoint is always available, and
    /// picking one needs no clock read.
    pub always_available: bool,
    pub retry: RetryConfig,
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
            balance: s.balance.clone(),
            schedule: smooth_weighted(&s.weights),
            ring: if matches!(s.balance, Balance::ConsistentHash(_)) { ring(&s.upstreams, &s.weights) } else { Vec::new() },
            breaker: s.breaker.as_ref().map(Breaker::new),
            endpoints: s.upstreams.iter().zip(s.weights.iter().chain(std::iter::repeat(&1))).map(|(&a, &w)| EndpointShared::new(a, w)).collect(),
            health: s.health.clone(),
            tls: s.tls.clone(),
            outlier: s.outlier.clone(),
            always_available: s.health.is_none() && s.outlier.is_none(),
            retry: s.retry.clone(),
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
            && self.tls == s.tls
            && self.outlier == s.outlier
            && self.retry == s.retry
            && self.balance == s.balance
            && self.endpoints.iter().map(|e| (e.addr, e.weight)).eq(s.upstreams.iter().copied().zip(s.weights.iter().copied()))
    }

    /// Where a request starts: by weighted round robin, the less loaded of two random endpoints,
    /// or the hash ring, as the service balances. Retries walk on from there.
    pub fn first(&self, key: Option<u64>, rng: u64) -> usize {
        let n = self.endpoints.len();
        match (&self.balance, key) {
            (Balance::ConsistentHash(_), Some(k)) if !self.ring.is_empty() => {
                let i = self.ring.partition_point(|&(p, _)| p < k) % self.ring.len();
                // The first point whose endpoint is available, so a key moves only when its own
                // endpoint goes.
                let now = now_ms();
                (0..self.ring.len())
                    .map(|j| self.ring[(i + j) % self.ring.len()].1 as usize)
                    .find(|&ep| self.endpoints[ep].available(now))
                    .unwrap_or(self.ring[i].1 as usize)
            }
            (Balance::LeastRequest, _) if n > 1 => {
                let a = (rng % n as u64) as usize;
                let b = (a + 1 + ((rng >> 32) % (n as u64 - 1)) as usize) % n;
                let now = now_ms();
                let load = |i: usize| {
                    let e = &self.endpoints[i];
                    // Unavailable ones lose; otherwise in-flight per unit of weight.
                    if e.available(now) { (u64::from(e.active.load(Relaxed)) + 1) * 1000 / u64::from(e.weight) } else { u64::MAX }
                };
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
            _ => self.schedule[self.rr.fetch_add(1, Relaxed) % self.schedule.len()] as usize,
        }
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

/// Endpoint indices in smooth weighted round-robin order (nginx's algorithm): weights 1 and 3
/// give `1 0 1 1`, interleaved rather than bunched.
fn smooth_weighted(weights: &[u32]) -> Vec<u16> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w.max(1)));
    let w: Vec<i64> = weights.iter().map(|&x| i64::from(x.max(1) / g.max(1))).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total.max(1) as usize);
    for _ in 0..total.max(1) {
        for (c, x) in current.iter_mut().zip(&w) {
            *c += x;
        }
        let best = (0..w.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i))).unwrap_or(0);
        current[best] -= total;
        out.push(best as u16);
    }
    if out.is_empty() {
        out.push(0);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Virtual nodes per unit of weight on the hash ring: enough that removing one of N endpoints
/// moves close to 1/N of the keys.
const VNODES: u32 = 160;

/// 64-bit FNV-1a: stable across shards and restarts, so a key lands on the same endpoint.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // FNV's low bits mix poorly; a final avalanche spreads points over the ring.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn ring(addrs: &[SocketAddr], weights: &[u32]) -> Vec<(u64, u16)> {
    let mut out = Vec::new();
    for (i, (a, &w)) in addrs.iter().zip(weights).enumerate() {
        let name = a.to_string();
        for v in 0..VNODES * w.max(1) {
            out.push((fnv1a(&[name.as_bytes(), b"#", &v.to_le_bytes()]), i as u16));
        }
    }
    out.sort_unstable();
    out
}

/// An attempt counted in its endpoint's `active` until dropped.
pub struct Active<'a>(Option<&'a EndpointShared>);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.0 {
            e.active.fetch_sub(1, AcqRel);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_order_interleaves_by_weight() {
        assert_eq!(smooth_weighted(&[1, 3]), vec![1, 0, 1, 1]);
        assert_eq!(smooth_weighted(&[2, 2]), vec![0, 1]);
        assert_eq!(smooth_weighted(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn removing_one_of_four_endpoints_moves_about_a_quarter_of_the_keys() {
        let addrs: Vec<SocketAddr> = (1..=4).map(|i| format!("10.0.0.{i}:80").parse().unwrap()).collect();
        let four = ring(&addrs, &[1; 4]);
        let three = ring(&addrs[..3], &[1; 3]);
        let owner = |r: &[(u64, u16)], k: u64| r[r.partition_point(|&(p, _)| p < k) % r.len()].1;
        let keys: Vec<u64> = (0..20_000u32).map(|i| fnv1a(&[&i.to_le_bytes()])).collect();
        let moved = keys.iter().filter(|&&k| owner(&four, k) != owner(&three, k)).count();
        let share = moved as f64 / keys.len() as f64;
        // Only the removed endpoint's keys move: a quarter, give or take the ring's spread.
        assert!((0.18..=0.30).contains(&share), "{share}");
        // And those were exactly the keys of endpoint 3.
        assert!(keys.iter().filter(|&&k| owner(&four, k) != owner(&three, k)).all(|&k| owner(&four, k) == 3));
    }
}

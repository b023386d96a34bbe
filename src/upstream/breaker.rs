//! The circuit breaker of one service, shared by every shard (atomics only, no lock): it opens
//! on the host's failure rate over a rolling window, not on one shard's share. Closed → open when
//! failures reach `error_rate` percent of at least `min_requests` in the window; open → every
//! request is answered at once (the fallback) without touching the upstream; after `open_for`,
//! half-open lets `half_open_requests` probes through: all succeed → closed with a fresh window,
//! any fails → open again.
//!
//! The window is `BUCKETS` buckets of `window / BUCKETS` each; a bucket is reset by the first
//! result that lands in it in a new period, so counts at a bucket boundary are approximate (a
//! result racing the reset may be lost), never inflated.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::time::Duration;

use super::shared::now_ms;
use crate::config::BreakerConfig;

const BUCKETS: usize = 10;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What the breaker says of a request about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Open (or half-open with its probes taken): answer at once.
    No,
}

/// The breaker's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

struct Bucket {
    /// Which period (`now / width`) the counts belong to.
    period: AtomicU64,
    total: AtomicU32,
    failures: AtomicU32,
}

pub struct Breaker {
    pub cfg: BreakerConfig,
    width_ms: u64,
    buckets: [Bucket; BUCKETS],
    state: AtomicU8,
    /// Milliseconds (since the process epoch) when it last opened.
    opened_at: AtomicU64,
    /// Probes let through, and probes that succeeded, in the current half-open spell.
    probes: AtomicU32,
    probe_ok: AtomicU32,
    /// Times it opened (metrics).
    pub opened: AtomicU64,
}

impl Breaker {
    pub fn new(cfg: &BreakerConfig) -> Breaker {
        let width_ms = (cfg.window.as_millis() as u64 / BUCKETS as u64).max(1);
        Breaker {
            cfg: cfg.clone(),
            width_ms,
            buckets: std::array::from_fn(|_| Bucket { period: AtomicU64::new(0), total: AtomicU32::new(0), failures: AtomicU32::new(0) }),
            state: AtomicU8::new(CLOSED),
            opened_at: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            probe_ok: AtomicU32::new(0),
            opened: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> State {
        match self.state.load(Acquire) {
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            _ => State::Closed,
        }
    }

    /// Whether a request may go to the upstream now.
    pub fn admit(&self) -> Admit {
        match self.state.load(Acquire) {
            CLOSED => Admit::Yes,
            OPEN => {
                let since = now_ms().saturating_sub(self.opened_at.load(Acquire));
                if Duration::from_millis(since) < self.cfg.open_for {
                    return Admit::No;
                }
                // One request moves it to half-open and resets the probe counts.
                if self.state.compare_exchange(OPEN, HALF_OPEN, AcqRel, Acquire).is_ok() {
                    self.start_probing();
                    tracing::info!(open_for = ?self.cfg.open_for, "circuit half-open: letting probes through");
                }
                self.admit_probe()
            }
            _ => match self.admit_probe() {
                Admit::Yes => Admit::Yes,
                // Probes whose results never came (their clients went away first) must not keep
                // it half-open for ever: after another `open_for`, a fresh set of probes.
                Admit::No => {
                    let since = now_ms().saturating_sub(self.opened_at.load(Acquire));
                    if Duration::from_millis(since) >= self.cfg.open_for {
                        self.start_probing();
                        self.admit_probe()
                    } else {
                        Admit::No
                    }
                }
            },
        }
    }

    /// A new half-open spell: probe counts from zero, its start noted.
    fn start_probing(&self) {
        self.probe_ok.store(0, Release);
        self.probes.store(0, Release);
        self.opened_at.store(now_ms(), Release);
    }

    fn admit_probe(&self) -> Admit {
        if self.probes.fetch_add(1, AcqRel) < self.cfg.half_open_requests {
            Admit::Yes
        } else {
            Admit::No
        }
    }

    /// One upstream result: `ok` false for a 5xx, a connect failure or a timeout. Not called for
    /// failures of the client's own making (it timed out or went away).
    pub fn record(&self, ok: bool) {
        match self.state.load(Acquire) {
            HALF_OPEN => {
                if !ok {
                    self.trip("a half-open probe failed");
                } else if self.probe_ok.fetch_add(1, AcqRel) + 1 >= self.cfg.half_open_requests
                    && self.state.compare_exchange(HALF_OPEN, CLOSED, AcqRel, Acquire).is_ok()
                {
                    self.clear_window();
                    tracing::info!("circuit closed: the half-open probes succeeded");
                }
            }
            CLOSED => {
                let (total, failures) = self.count(ok);
                if total >= self.cfg.min_requests && u64::from(failures) * 100 >= u64::from(self.cfg.error_rate) * u64::from(total) {
                    self.trip("failure rate reached error_rate");
                }
            }
            // Results of requests sent before it opened change nothing.
            _ => {}
        }
    }

    fn trip(&self, why: &str) {
        let prev = self.state.swap(OPEN, AcqRel);
        self.opened_at.store(now_ms(), Release);
        if prev != OPEN {
            self.opened.fetch_add(1, Relaxed);
            tracing::warn!(why, open_for = ?self.cfg.open_for, "circuit open: failing fast");
        }
    }

    /// Adds a result to the current bucket; returns the window's (total, failures).
    fn count(&self, ok: bool) -> (u32, u32) {
        let period = now_ms() / self.width_ms;
        let b = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = b.period.load(Acquire);
        if seen != period && b.period.compare_exchange(seen, period, AcqRel, Acquire).is_ok() {
            b.total.store(0, Release);
            b.failures.store(0, Release);
        }
        b.total.fetch_add(1, AcqRel);
        if !ok {
            b.failures.fetch_add(1, AcqRel);
        }
        let oldest = period.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=period).contains(&b.period.load(Acquire)))
            .fold((0, 0), |(t, f), b| (t + b.total.load(Acquire), f + b.failures.load(Acquire)))
    }

    fn clear_window(&self) {
        for b in &self.buckets {
            b.total.store(0, Release);
            b.failures.store(0, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: u32, rate: u32, open_for_ms: u64, probes: u32) -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_requests: min,
            error_rate: rate,
            open_for: Duration::from_millis(open_for_ms),
            half_open_requests: probes,
            fallback: None,
        }
    }

    #[test]
    fn opens_at_the_error_rate_once_min_requests_are_seen() {
        let b = Breaker::new(&cfg(10, 50, 60_000, 1));
        // 4 failures in 9 requests: below min_requests, no decision.
        for i in 0..9 {
            b.record(i % 2 == 1);
        }
        assert_eq!(b.state(), State::Closed);
        b.record(false); // 10 requests, 5 failures: 50 %.
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(), Admit::No);
    }

    #[test]
    fn stays_closed_below_the_rate() {
        let b = Breaker::new(&cfg(10, 50, 60_000, 1));
        for i in 0..100 {
            b.record(i % 3 != 0);
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn half_open_probes_close_it_or_open_it_again() {
        let b = Breaker::new(&cfg(1, 100, 30, 2));
        b.record(false);
        assert_eq!(b.admit(), Admit::No);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!((b.admit(), b.admit(), b.admit()), (Admit::Yes, Admit::Yes, Admit::No), "two probes only");
        assert_eq!(b.state(), State::HalfOpen);
        b.record(true);
        b.record(true);
        assert_eq!(b.state(), State::Closed);
        // A fresh window: one failure reopens it (min 1, rate 100 %).
        b.record(false);
        assert_eq!(b.state(), State::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Yes);
        b.record(false);
        assert_eq!(b.state(), State::Open, "a failed probe opens it again");
        assert_eq!(b.opened.load(Relaxed), 3);
    }

    #[test]
    fn probes_that_never_report_do_not_keep_it_half_open() {
        let b = Breaker::new(&cfg(1, 100, 30, 1));
        b.record(false);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Yes, "the probe");
        assert_eq!(b.admit(), Admit::No, "its result never comes");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Yes, "a fresh probe after open_for");
    }
}

//! Exact, lock-free GCRA rate limiting shared by all shards, and the RateLimit response headers.
//! Owns the per-key buckets of one configured limit. Never spawns a thread, never blocks on
//! another request's bucket, never allocates except to start tracking a new key.
//!
//! # Algorithm
//!
//! GCRA (the generic cell rate algorithm, a token bucket written as one timestamp): each key holds
//! its *theoretical arrival time* (TAT) in one `AtomicU64`, nanoseconds on [`Limiter::now`]'s
//! clock. With emission interval `T = window / requests` and bucket size `burst`:
//!
//! ```text
//! next = max(TAT, now) + T
//! admit  iff  next <= now + burst·T      (then TAT := next, by compare-and-swap)
//! ```
//!
//! A key that has been idle long enough (`TAT <= now`) has a full bucket and admits exactly
//! `burst` requests at once; after that it admits one request every `T`, i.e. `requests` per
//! `window`. `burst` is therefore the bucket size, not an extra on top of it (the config default
//! is `burst = requests`: a client may spend a whole window's allowance at once). In the classic
//! formulation (`admit iff TAT <= now + τ`) this is the tolerance `τ = (burst − 1)·T`.
//!
//! `T` is rounded down to whole nanoseconds, so the limiter never admits fewer than configured
//! and admits at most one extra request per `T / 1 ns` emissions (under 1 ppm when `T ≥ 1 ms`).
//!
//! The update is a compare-and-swap loop on a single word: every shard sees the same bucket, the
//! count is exact under any interleaving, and a caller that loses a race retries with the value
//! that beat it instead of waiting for anyone.
//!
//! # Keys
//!
//! Keys (client IPs, consumer names, header values, route names) are never stored: the table
//! holds a 128-bit keyed hash (two outputs of std's SipHash under a random key per limiter), so
//! each tracked key costs the same few dozen bytes however long it is, and nobody who does not
//! know the random key can aim for a collision. Two keys that collide would share a bucket. With
//! `n` keys tracked, a new key collides with probability `n / 2^128`: a million tracked keys and
//! a billion new keys a second for a century stay below `10^-14`. With 64 bits the same table would see a collision with probability about `5·10^-5`
//! per billion new keys, which is why the table spends 8 more bytes a key and one more SipHash
//! finalisation (about 5 ns).
//!
//! # Concurrency
//!
//! The table is a [`DashMap`] from key hash to an inline `AtomicU64`. A check takes the read
//! lock of one of its 64 shards for the lookup *and the compare-and-swap loop* (the value lives
//! inside the shard, so the read guard is what keeps it in place). Readers never wait for
//! readers; only the rare writers wait: the insertion of a new key into the same shard, and
//! eviction. Holding the read guard across the CAS is also what makes eviction exact: the sweep
//! removes a key under the shard's write lock, so it can never race a concurrent update of the
//! same key (with an `Arc<AtomicU64>` released before the CAS, an update could land on an
//! already evicted bucket and be lost, admitting one request too many).
//!
//! # Memory bound and eviction
//!
//! A key whose bucket has fully refilled (`TAT <= now`) behaves exactly like a key never seen
//! (`max(TAT, now) = now`), so it can be dropped without changing any decision. The number of
//! tracked keys never exceeds `max_keys`: a slot is reserved before a key is inserted. When the
//! table is full, the arrival of a new key sweeps the whole table and evicts every refilled key.
//! The sweep is kept cheap in aggregate two ways:
//!
//! - the limiter keeps a lower bound on the smallest TAT in the table; while `now` is below it,
//!   no key can be refilled, and the sweep is skipped in O(1);
//! - after a sweep, the next one waits for 100× the time the last one took, so sweeping uses at
//!   most about 1 % of one core however keys arrive.
//!
//! # At capacity: fail closed
//!
//! If the table is full and no key can be evicted (every tracked key is still refilling, or a
//! sweep has just run or is running), the new key is **refused**: [`Decision::allowed`] is false
//! with `remaining = 0` and `retry_after_secs` set to when the first tracked key refills (at
//! least 1 s). Keys already tracked are unaffected and keep their exact buckets.
//!
//! The alternative, one overflow bucket shared by all untracked keys, was rejected: under the
//! flood of distinct keys that fills the table it is drained by the flood anyway, so it refuses
//! the same clients while making their count depend on strangers' traffic, and in the honest
//! case (`max_keys` sized too small) it hides the misconfiguration. Failing closed keeps the
//! promise that no key ever gets more than its limit (an evicted-but-busy client never gets a
//! fresh bucket, the flaw of LRU-evicting limiters), costs nothing per refusal (no shared bucket
//! for the flood to contend on), and is visible: [`Limiter::capacity_refusals`] counts every such
//! refusal, so an operator can tell a flood or an undersized `max_keys` from ordinary 429s.
//!
//! # Clock
//!
//! [`Limiter::now`] is nanoseconds since a process-wide `Instant` taken on its first call: a
//! monotonic clock, immune to wall-clock steps. Callers read it once per request and pass the
//! same `now` to every limit the request meets. A caller whose `now` lags another's by a few
//! microseconds only sees a slightly stricter bucket; eviction with a later `now` than a lagging
//! caller's can favour that caller by at most the lag.

mod headers;
#[cfg(test)]
mod tests;

pub use headers::write_headers;

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Keys tracked per limit unless configured otherwise: about 3.5 MB of table when full.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Shards of the key table. More shards keep a sweep's write lock on a small slice of the keys
/// and keep unrelated keys off each other's lock word.
const TABLE_SHARDS: usize = 64;

/// A sweep that took `d` is followed by none for `SWEEP_COST_RATIO · d` (≤ 1 % of a core).
const SWEEP_COST_RATIO: u64 = 100;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Longest interval and bucket span, about 146 years. With `now` below it too (146 years of
/// uptime), `now + burst·T + T` stays below 2^64, so no TAT saturates into "always allowed".
const MAX_SPAN: u64 = 1 << 62;

/// Validated config of one limit (built by the config loader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitConfig {
    /// Appears in the `RateLimit-Policy` and `RateLimit` headers.
    pub name: String,
    /// Allowance per window (`q`).
    pub requests: u64,
    /// The window (`w`).
    pub window: Duration,
    /// Bucket size: how many requests a key that has been idle long enough may send at once.
    /// The loader defaults it to `requests`; `1` spaces requests evenly, one every
    /// `window / requests`. Must be at least 1.
    pub burst: u64,
    /// Bound on tracked keys; see the module docs for what happens when it is reached.
    pub max_keys: usize,
}

impl LimitConfig {
    /// A limit of `requests` per `window` with the default bucket (`burst = requests`) and key
    /// bound.
    pub fn new(name: impl Into<String>, requests: u64, window: Duration) -> LimitConfig {
        LimitConfig { name: name.into(), requests, window, burst: requests, max_keys: DEFAULT_MAX_KEYS }
    }

    /// Every problem with this limit, as `(field, what is wrong and how to fix it)`, for the
    /// config loader to report under the limit's key path. Empty when the limit is usable.
    /// [`Limiter::new`] never panics on a bad config (it clamps), but the loader should refuse
    /// one that has problems.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        let printable = |b: &u8| (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\';
        if self.name.is_empty() || !self.name.bytes().all(|b| printable(&b)) {
            out.push((
                "name",
                "must be non-empty printable ASCII without '\"' or '\\' (it is sent in RateLimit headers)",
            ));
        }
        if self.window.is_zero() {
            out.push(("window", "must be longer than zero, e.g. \"1s\" or \"60s\""));
        }
        if self.requests == 0 {
            out.push(("requests", "must be at least 1 (requests allowed per window)"));
        } else if self.requests as u128 > self.window.as_nanos() {
            out.push(("requests", "allows more than one request per nanosecond; lower it or lengthen the window"));
        }
        if self.burst == 0 {
            out.push((
                "burst",
                "must be at least 1 (1 spaces requests evenly; leave it out to allow a whole window at once)",
            ));
        }
        if self.max_keys == 0 {
            out.push(("max_keys", "must be at least 1"));
        }
        out
    }
}

/// The outcome of one check, with what the response headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The configured allowance per window (`requests`).
    pub limit: u64,
    /// Requests this key could still send right now. Exceeds `limit` only if `burst > requests`.
    pub remaining: u64,
    /// Seconds until this key's bucket is full again (rounded up).
    pub reset_secs: u64,
    /// When refused: seconds until a retry can be admitted, rounded up, at least 1. Otherwise 0.
    pub retry_after_secs: u64,
}

/// One limit shared by all shards (`Arc<Limiter>`), `Send + Sync`. A check never waits for
/// another check: it holds one table shard's (shared) read lock while it updates the key's TAT
/// by compare-and-swap; only inserting a new key or sweeping takes a shard's write lock.
pub struct Limiter {
    cfg: LimitConfig,
    /// Emission interval `T` in nanoseconds (≥ 1).
    interval: u64,
    /// `burst · T`: how far ahead of `now` a TAT may run after an admitted request.
    capacity: u64,
    max_keys: usize,
    keys: RandomState,
    table: DashMap<u128, AtomicU64, PassThrough>,
    /// Slots reserved in `table`: never below its length, never above `max_keys`.
    tracked: AtomicUsize,
    /// A lower bound on every TAT in the table: before it, no tracked key is refilled.
    /// `u64::MAX` while a sweep recomputes it.
    earliest: AtomicU64,
    /// When an at-capacity insert may sweep next; `u64::MAX` while a sweep runs.
    next_sweep: AtomicU64,
    capacity_refusals: AtomicU64,
}

impl Limiter {
    pub fn new(cfg: &LimitConfig) -> Limiter {
        let window = u64::try_from(cfg.window.as_nanos()).unwrap_or(u64::MAX);
        let interval = (window / cfg.requests.max(1)).clamp(1, MAX_SPAN);
        Limiter {
            cfg: cfg.clone(),
            interval,
            capacity: interval.saturating_mul(cfg.burst.max(1)).min(MAX_SPAN),
            max_keys: cfg.max_keys.max(1),
            keys: RandomState::new(),
            table: DashMap::with_hasher_and_shard_amount(PassThrough, TABLE_SHARDS),
            tracked: AtomicUsize::new(0),
            earliest: AtomicU64::new(u64::MAX),
            next_sweep: AtomicU64::new(0),
            capacity_refusals: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since a process-wide monotonic epoch: the clock `check` expects.
    pub fn now() -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// Checks and, if allowed, consumes one request for `key` at `now` ([`Limiter::now`]).
    /// Allocates only when it starts tracking a new key.
    pub fn check(&self, key: &[u8], now: u64) -> Decision {
        let id = self.key_id(key);
        if let Some(tat) = self.table.get(&id) {
            return self.consume(&tat, now);
        }
        self.check_untracked(id, now)
    }

    /// Keys currently tracked (including ones being inserted); never above `max_keys`.
    pub fn tracked_keys(&self) -> usize {
        self.tracked.load(Relaxed)
    }

    /// New keys refused because the table was full of keys still refilling.
    pub fn capacity_refusals(&self) -> u64 {
        self.capacity_refusals.load(Relaxed)
    }

    /// Evicts every key whose bucket is full at `now` and returns how many. Checks do this on
    /// their own when the table is full; a runtime may also call it from an idle timer to return
    /// memory earlier. Takes each table shard's write lock in turn.
    pub fn sweep(&self, now: u64) -> usize {
        // Inserts from here on lower `earliest` themselves; keys already present are scanned
        // below (an insert into a shard is ordered before or after the scan by the shard lock).
        self.earliest.store(u64::MAX, Relaxed);
        let mut oldest = u64::MAX;
        let mut removed = 0;
        self.table.retain(|_, tat| {
            let tat = *tat.get_mut();
            if tat <= now {
                removed += 1;
                false
            } else {
                oldest = oldest.min(tat);
                true
            }
        });
        self.tracked.fetch_sub(removed, Relaxed);
        self.earliest.fetch_min(oldest, Relaxed);
        removed
    }

    /// Two 64-bit outputs of one keyed SipHash: of the key, and of the key followed by one more
    /// byte. For two keys to share an id, two pairs of distinct inputs must collide under a keyed
    /// PRF at once (2^-128); one pass over the key serves both halves.
    fn key_id(&self, key: &[u8]) -> u128 {
        let mut h = self.keys.build_hasher();
        h.write(key);
        let low = h.finish();
        h.write_u8(0xff);
        (u128::from(h.finish()) << 64) | u128::from(low)
    }

    /// The GCRA step on a tracked key. Relaxed is enough: the TAT is the only shared state the
    /// decision reads, and a single location's modification order is total.
    fn consume(&self, tat: &AtomicU64, now: u64) -> Decision {
        let mut seen = tat.load(Relaxed);
        loop {
            let next = seen.max(now).saturating_add(self.interval);
            if next > now.saturating_add(self.capacity) {
                return self.rejected(seen, next, now);
            }
            match tat.compare_exchange_weak(seen, next, Relaxed, Relaxed) {
                Ok(_) => return self.admitted(next, now),
                Err(actual) => seen = actual,
            }
        }
    }

    #[cold]
    fn check_untracked(&self, id: u128, now: u64) -> Decision {
        if !self.reserve_slot() {
            // Another caller may have inserted this very key since the lookup.
            if let Some(tat) = self.table.get(&id) {
                return self.consume(&tat, now);
            }
            if self.sweep_at_capacity(now) == 0 || !self.reserve_slot() {
                return self.refuse(now);
            }
        }
        match self.table.entry(id) {
            Entry::Occupied(e) => {
                self.tracked.fetch_sub(1, Relaxed);
                self.consume(e.get(), now)
            }
            Entry::Vacant(e) => {
                // A new key has a full bucket, and a full bucket (burst ≥ 1) always admits.
                let next = now.saturating_add(self.interval);
                let _guard = e.insert(AtomicU64::new(next));
                // Under the shard lock, so a concurrent sweep either scans this key or runs its
                // reset of `earliest` before this line.
                self.earliest.fetch_min(next, Relaxed);
                self.admitted(next, now)
            }
        }
    }

    fn reserve_slot(&self) -> bool {
        self.tracked.fetch_update(Relaxed, Relaxed, |n| (n < self.max_keys).then_some(n + 1)).is_ok()
    }

    /// The amortised sweep a full table runs for a new key: skipped while no key can be refilled
    /// yet, or while the previous sweep's cooldown lasts, or while another sweep runs.
    fn sweep_at_capacity(&self, now: u64) -> usize {
        if now < self.earliest.load(Relaxed) {
            return 0;
        }
        let due = self.next_sweep.load(Relaxed);
        if now < due || self.next_sweep.compare_exchange(due, u64::MAX, Relaxed, Relaxed).is_err() {
            return 0;
        }
        let started = Instant::now();
        let removed = self.sweep(now);
        let cost = started.elapsed().as_nanos() as u64;
        self.next_sweep.store(now.saturating_add(cost.saturating_mul(SWEEP_COST_RATIO)), Relaxed);
        removed
    }

    #[cold]
    fn refuse(&self, now: u64) -> Decision {
        self.capacity_refusals.fetch_add(1, Relaxed);
        // The first tracked key refills at `earliest`; if that has passed, a sweep is cooling
        // down or running and the table frees up at its next chance.
        let earliest = self.earliest.load(Relaxed);
        let next_sweep = self.next_sweep.load(Relaxed);
        let wait = if earliest > now && earliest != u64::MAX {
            earliest - now
        } else if next_sweep > now && next_sweep != u64::MAX {
            next_sweep - now
        } else {
            NANOS_PER_SEC
        };
        let retry = ceil_secs(wait).max(1);
        Decision { allowed: false, limit: self.cfg.requests, remaining: 0, reset_secs: retry, retry_after_secs: retry }
    }

    fn admitted(&self, tat: u64, now: u64) -> Decision {
        Decision {
            allowed: true,
            limit: self.cfg.requests,
            remaining: (now.saturating_add(self.capacity) - tat) / self.interval,
            reset_secs: ceil_secs(tat - now),
            retry_after_secs: 0,
        }
    }

    /// `seen` is the TAT left in place, `next` the one this request would have needed.
    fn rejected(&self, seen: u64, next: u64, now: u64) -> Decision {
        Decision {
            allowed: false,
            limit: self.cfg.requests,
            remaining: 0,
            reset_secs: ceil_secs(seen.saturating_sub(now)),
            retry_after_secs: ceil_secs(next - self.capacity - now).max(1),
        }
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("cfg", &self.cfg)
            .field("interval_ns", &self.interval)
            .field("tracked_keys", &self.tracked_keys())
            .finish_non_exhaustive()
    }
}

fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SEC)
}

/// The table's keys are already keyed hashes: hashing them again would only cost time.
#[derive(Clone, Copy, Default)]
struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys reach this hasher; fold anything else rather than lose it.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
}

//! The rate limiter under real threads and a real clock: more threads than cores hammering one
//! key admit exactly the allowance, private keys do not feel each other or a hot shared key, the
//! key bound holds under a concurrent flood, and a check on a tracked key never allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use ringgate::policy::ratelimit::{write_headers, Decision, LimitConfig, Limiter};

/// Counts allocations per thread, so tests running in parallel do not see each other's.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator unchanged; only counts calls in a const-initialised
// thread-local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

const THREADS: usize = 8;

/// The threaded tests run one at a time: 8 threads each on a 2-core machine is contention
/// enough, and a thread starved for longer than its bucket span cannot use its allowance.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const RUN: Duration = Duration::from_millis(500);

/// What threads saw of one key: admitted count and the first and last `now` checked at.
#[derive(Clone, Copy)]
struct Seen {
    admitted: u64,
    first: u64,
    last: u64,
}

impl Seen {
    fn new() -> Seen {
        Seen { admitted: 0, first: u64::MAX, last: 0 }
    }

    fn record(&mut self, d: Decision, now: u64) {
        self.admitted += u64::from(d.allowed);
        self.first = self.first.min(now);
        self.last = self.last.max(now);
    }

    fn merge(self, o: Seen) -> Seen {
        Seen { admitted: self.admitted + o.admitted, first: self.first.min(o.first), last: self.last.max(o.last) }
    }
}

fn interval(cfg: &LimitConfig) -> u64 {
    cfg.window.as_nanos() as u64 / cfg.requests
}

/// GCRA's promise to a client that never stops asking: the whole bucket at once, then one
/// request per interval. (Eight threads on one key keep asking between them; a single thread
/// may be descheduled for longer than its bucket lasts, which is why private keys are checked
/// against `reference_gcra` instead.)
fn allowance(cfg: &LimitConfig, seen: Seen) -> u64 {
    cfg.burst + (seen.last - seen.first) / interval(cfg)
}

/// The textbook GCRA (one TAT, admit when the next TAT stays within the bucket span) over a
/// sequence of instants, single-threaded: the model the lock-free limiter must equal.
fn reference_gcra(cfg: &LimitConfig, times: &[u64]) -> u64 {
    let t = interval(cfg);
    let span = cfg.burst * t;
    let mut tat = 0u64;
    let mut admitted = 0;
    for &now in times {
        let next = tat.max(now) + t;
        if next <= now + span {
            tat = next;
            admitted += 1;
        }
    }
    admitted
}

fn assert_within_one_percent(what: &str, got: u64, want: u64) {
    let diff = got.abs_diff(want);
    assert!(diff * 100 <= want, "{what}: admitted {got}, allowance {want} (off by {diff})");
}

/// Runs `work(thread index, deadline)` on `THREADS` threads started together.
fn on_threads<T: Send + 'static>(work: impl Fn(usize, u64) -> T + Send + Sync + 'static) -> Vec<T> {
    let work = Arc::new(work);
    let start = Arc::new(Barrier::new(THREADS));
    let deadline = Limiter::now() + RUN.as_nanos() as u64 + 50_000_000;
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (work, start) = (work.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                work(i, deadline)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn one_key_hammered_by_more_threads_than_cores_admits_exactly_the_allowance() {
    let _serial = serial();
    // T = 50 µs; a bucket of 5000 (250 ms) rides out a descheduled thread on a busy machine.
    let cfg = LimitConfig { burst: 5000, ..LimitConfig::new("shared", 20_000, Duration::from_secs(1)) };
    let limiter = Arc::new(Limiter::new(&cfg));
    let l = limiter.clone();
    let seen = on_threads(move |_, deadline| {
        let mut seen = Seen::new();
        loop {
            let now = Limiter::now();
            if now >= deadline {
                return seen;
            }
            seen.record(l.check(b"203.0.113.7", now), now);
        }
    });
    let total = seen.into_iter().reduce(Seen::merge).unwrap();
    let want = allowance(&cfg, total);
    assert!(want > 10_000, "the run was too short to mean anything: {want}");
    assert_within_one_percent("shared key", total.admitted, want);
    assert_eq!(limiter.tracked_keys(), 1);
}

#[test]
fn private_keys_get_their_own_allowance_beside_a_hot_shared_key() {
    let _serial = serial();
    // Private: T = 500 µs, bucket of 500 (250 ms). Shared: as in the test above.
    let private = LimitConfig { burst: 500, ..LimitConfig::new("private", 2_000, Duration::from_secs(1)) };
    let shared = LimitConfig { burst: 5000, ..LimitConfig::new("shared", 20_000, Duration::from_secs(1)) };
    // One limiter holds all the keys, so they share table shards and locks.
    let limiter = Arc::new(Limiter::new(&private));
    let hot = Arc::new(Limiter::new(&shared));
    let (l, h) = (limiter.clone(), hot.clone());
    let seen = on_threads(move |i, deadline| {
        let key = format!("consumer-{i}");
        let (mut own, mut common) = (Seen::new(), Seen::new());
        let mut times = Vec::with_capacity(1 << 20);
        loop {
            let now = Limiter::now();
            if now >= deadline {
                return (own, common, times);
            }
            own.record(l.check(key.as_bytes(), now), now);
            times.push(now);
            common.record(h.check(b"route:/api", now), now);
        }
    });
    for (i, (own, _, times)) in seen.iter().enumerate() {
        // A private key sees only its own thread, so its decisions must be exactly those of a
        // plain single-threaded GCRA fed the same instants, however the threads were scheduled.
        let want = reference_gcra(&private, times);
        assert!(want > 500, "thread {i} barely ran: {want}");
        assert_eq!(own.admitted, want, "consumer-{i}: admitted {} where a lone GCRA admits {want}", own.admitted);
    }
    let common = seen.iter().map(|&(_, c, _)| c).reduce(Seen::merge).unwrap();
    assert_within_one_percent("shared key", common.admitted, allowance(&shared, common));
    assert_eq!(limiter.tracked_keys(), THREADS);
}

#[test]
fn concurrent_flood_of_distinct_keys_never_exceeds_max_keys() {
    let _serial = serial();
    // 1 request per ms per key: flood keys refill 1 ms after they arrive, so the table is swept
    // and refilled while other threads insert.
    let cfg = LimitConfig { burst: 1, max_keys: 256, ..LimitConfig::new("flood", 1000, Duration::from_secs(1)) };
    let limiter = Arc::new(Limiter::new(&cfg));
    let l = limiter.clone();
    let results = on_threads(move |i, _| {
        let (mut admitted, mut refused, mut most) = (0u64, 0u64, 0usize);
        for n in 0..20_000u64 {
            let key = (i as u64) << 32 | n;
            let d = l.check(&key.to_le_bytes(), Limiter::now());
            if d.allowed {
                admitted += 1;
            } else {
                refused += 1;
                assert!(d.retry_after_secs >= 1);
            }
            most = most.max(l.tracked_keys());
        }
        (admitted, refused, most)
    });
    let most = results.iter().map(|r| r.2).max().unwrap();
    let admitted: u64 = results.iter().map(|r| r.0).sum();
    let refused: u64 = results.iter().map(|r| r.1).sum();
    assert!(most <= 256, "tracked {most} keys");
    assert!(admitted >= 256, "the table filled: {admitted}");
    assert_eq!(refused, limiter.capacity_refusals());
    // The count of tracked keys matches the table: a sweep far in the future evicts exactly that
    // many and leaves zero.
    let tracked = limiter.tracked_keys();
    assert_eq!(limiter.sweep(u64::MAX / 2), tracked);
    assert_eq!(limiter.tracked_keys(), 0);
}

#[test]
fn check_on_a_tracked_key_and_header_writing_never_allocate() {
    let a = LimitConfig::new("per-ip", 100, Duration::from_secs(60));
    let b = LimitConfig::new("per-consumer", 10, Duration::from_secs(1));
    let (la, lb) = (Limiter::new(&a), Limiter::new(&b));
    let mut out = Vec::with_capacity(1024);
    let now = Limiter::now();
    la.check(b"198.51.100.1", now);
    lb.check(b"alice", now);
    let before = allocs();
    for i in 0..10_000u64 {
        let now = now + i * 1_000_000;
        let da = la.check(b"198.51.100.1", now);
        let db = lb.check(b"alice", now);
        out.clear();
        write_headers(&mut out, &[(&a, da), (&b, db)]);
    }
    assert_eq!(allocs() - before, 0, "allocations on the steady-state path");
    assert!(out.starts_with(b"RateLimit-Policy: "));
}

#[test]
fn limiter_is_shareable_across_shards() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Limiter>();
}

//! The GCRA limiter against the naive token bucket it replaces, a
//! `Mutex<HashMap<Vec<u8>, (f64 tokens, Instant)>>`: on one thread and on two threads contending,
//! for one hot key and for 10 000 keys. Both read the clock once per check and admit every
//! request (the admitting path writes, so it is the one contention hurts).
//!
//! Two-thread timings are wall time per iteration, where one iteration is one check on each
//! thread at once (criterion's throughput line counts both).
//!
//! Run: `cargo bench --bench ratelimit -- --warm-up-time 1 --measurement-time 2`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringgate::policy::ratelimit::{LimitConfig, Limiter};

/// The textbook per-key token bucket behind one lock.
struct NaiveBucket {
    per_sec: f64,
    burst: f64,
    keys: Mutex<HashMap<Vec<u8>, (f64, Instant)>>,
}

impl NaiveBucket {
    fn new(cfg: &LimitConfig) -> NaiveBucket {
        NaiveBucket {
            per_sec: cfg.requests as f64 / cfg.window.as_secs_f64(),
            burst: cfg.burst as f64,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, key: &[u8]) -> bool {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap();
        if !keys.contains_key(key) {
            keys.insert(key.to_vec(), (self.burst, now));
        }
        let (tokens, last) = keys.get_mut(key).unwrap();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Generous enough that every check is admitted.
fn config() -> LimitConfig {
    LimitConfig::new("bench", 1_000_000_000, Duration::from_secs(1))
}

fn client_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).into_bytes()).collect()
}

const HOT: &[u8] = b"203.0.113.7";
const MANY: usize = 10_000;

/// The two contenders behind one signature: check `key`, say whether it was admitted.
trait Check: Sync {
    fn check(&self, key: &[u8]) -> bool;
}

impl Check for Limiter {
    fn check(&self, key: &[u8]) -> bool {
        Limiter::check(self, key, Limiter::now()).allowed
    }
}

impl Check for NaiveBucket {
    fn check(&self, key: &[u8]) -> bool {
        NaiveBucket::check(self, key)
    }
}

/// Runs `iters` checks on each of two threads started together; returns the wall time.
fn two_threads(l: &dyn Check, keys: &[Vec<u8>], iters: u64) -> Duration {
    let start = Barrier::new(3);
    thread::scope(|s| {
        for t in 0..2 {
            let start = &start;
            s.spawn(move || {
                // The second thread walks the keys from the middle: mostly different keys.
                let offset = t * keys.len() / 2;
                start.wait();
                for i in 0..iters as usize {
                    black_box(l.check(&keys[(offset + i) % keys.len()]));
                }
            });
        }
        start.wait();
        let began = Instant::now();
        // Leaving the scope joins both threads.
        began
    })
    .elapsed()
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    let hot = vec![HOT.to_vec()];
    let many = client_keys(MANY);
    for (case, keys) in [("same_key", &hot), ("10k_keys", &many)] {
        let gcra = Limiter::new(&cfg);
        let naive = NaiveBucket::new(&cfg);
        // Track every key first: the steady state, not the first sighting, is what is measured.
        for k in keys.iter() {
            Check::check(&gcra, k);
            Check::check(&naive, k);
        }
        let contenders: [(&str, &dyn Check); 2] = [("gcra", &gcra), ("mutex_hashmap", &naive)];

        let mut g = c.benchmark_group(format!("ratelimit_1_thread/{case}"));
        g.throughput(Throughput::Elements(1));
        for (name, l) in contenders {
            g.bench_function(name, |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % keys.len();
                    black_box(l.check(&keys[i]))
                })
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("ratelimit_2_threads/{case}"));
        g.throughput(Throughput::Elements(2));
        for (name, l) in contenders {
            g.bench_function(name, |b| b.iter_custom(|iters| two_threads(l, keys, iters)));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

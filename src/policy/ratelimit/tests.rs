//! GCRA arithmetic, eviction and the at-capacity policy on a manually driven clock, and the exact
//! header bytes.

use std::time::Duration;

use super::*;

const SEC: u64 = NANOS_PER_SEC;
const MS: u64 = 1_000_000;

/// An arbitrary, non-zero start so that no test depends on the clock starting at zero.
const T0: u64 = 1_000 * SEC;

fn limit(requests: u64, window: Duration, burst: u64) -> LimitConfig {
    LimitConfig { burst, ..LimitConfig::new("test", requests, window) }
}

fn allowed(limit: u64, remaining: u64, reset_secs: u64) -> Decision {
    Decision { allowed: true, limit, remaining, reset_secs, retry_after_secs: 0 }
}

fn refused(limit: u64, reset_secs: u64, retry_after_secs: u64) -> Decision {
    Decision { allowed: false, limit, remaining: 0, reset_secs, retry_after_secs }
}

/// Admits requests for `key` at `now` until one is refused; returns how many were admitted.
fn drain(l: &Limiter, key: &[u8], now: u64) -> u64 {
    let mut n = 0;
    while l.check(key, now).allowed {
        n += 1;
        assert!(n <= 1_000_000, "bucket never ran dry");
    }
    n
}

/// (requests, window, burst)
const SHAPES: &[(u64, Duration, u64)] = &[
    (100, Duration::from_secs(60), 100),
    (10, Duration::from_secs(1), 1),
    (7, Duration::from_secs(60), 3),
    (1, Duration::from_secs(1), 5),
    (1000, Duration::from_secs(1), 50),
    (3, Duration::from_millis(1500), 2),
];

#[test]
fn full_bucket_admits_burst_at_once_then_refuses() {
    for &(q, w, burst) in SHAPES {
        let l = Limiter::new(&limit(q, w, burst));
        assert_eq!(drain(&l, b"k", T0), burst, "q={q} w={w:?} burst={burst}");
        assert!(!l.check(b"k", T0).allowed);
        // Other keys have their own full buckets.
        assert_eq!(drain(&l, b"other", T0), burst);
    }
}

#[test]
fn steady_rate_admits_exactly_requests_per_window_after_the_burst() {
    for &(q, w, burst) in SHAPES {
        let l = Limiter::new(&limit(q, w, burst));
        assert_eq!(drain(&l, b"k", T0), burst);
        // Knock as often as a greedy client would, over exactly one window after the burst.
        let w = w.as_nanos() as u64;
        let steps = 1000;
        let admitted: u64 = (1..=steps).map(|i| drain(&l, b"k", T0 + w * i / steps)).sum();
        assert_eq!(admitted, q, "q={q} w={w} burst={burst}");
        // And the same over a second window, without a second burst.
        let again: u64 = (1..=steps).map(|i| drain(&l, b"k", T0 + w + w * i / steps)).sum();
        assert_eq!(again, q, "second window, q={q} w={w} burst={burst}");
    }
}

#[test]
fn decisions_report_remaining_reset_and_retry_after() {
    // 10 per 10 s (T = 1 s), bucket of 3.
    let l = Limiter::new(&limit(10, Duration::from_secs(10), 3));
    let steps: &[(u64, Decision)] = &[
        (T0, allowed(10, 2, 1)),
        (T0, allowed(10, 1, 2)),
        (T0, allowed(10, 0, 3)),
        // Empty: the next slot opens in 1 s; full again in 3 s.
        (T0, refused(10, 3, 1)),
        // Half a second later the wait is 0.5 s, reported as 1 s, never 0.
        (T0 + 500 * MS, refused(10, 3, 1)),
        (T0 + 999 * MS, refused(10, 3, 1)),
        (T0 + SEC, allowed(10, 0, 3)),
        // 2.5 s later two slots have refilled: one taken, one left.
        (T0 + 3500 * MS, allowed(10, 1, 2)),
        (T0 + 3500 * MS, allowed(10, 0, 3)),
        (T0 + 3500 * MS, refused(10, 3, 1)),
        // Idle past the reset: full bucket.
        (T0 + 7 * SEC, allowed(10, 2, 1)),
    ];
    for (i, &(now, want)) in steps.iter().enumerate() {
        assert_eq!(l.check(b"k", now), want, "step {i} at +{}ms", (now - T0) / MS);
    }
}

#[test]
fn retry_after_counts_whole_seconds_of_a_long_wait() {
    // 1 per minute, bucket of 1: the second request waits the full minute.
    let l = Limiter::new(&limit(1, Duration::from_secs(60), 1));
    assert_eq!(l.check(b"k", T0), allowed(1, 0, 60));
    assert_eq!(l.check(b"k", T0 + 1), refused(1, 60, 60));
    assert_eq!(l.check(b"k", T0 + 59 * SEC + 1), refused(1, 1, 1));
    assert_eq!(l.check(b"k", T0 + 60 * SEC), allowed(1, 0, 60));
}

#[test]
fn bucket_refills_one_request_per_interval_up_to_burst() {
    // T = 100 ms, bucket of 5: (time since the bucket was emptied, requests refilled by then).
    let cfg = limit(10, Duration::from_secs(1), 5);
    for (elapsed, refilled) in [(99 * MS, 0), (100 * MS, 1), (250 * MS, 2), (300 * MS, 3), (SEC, 5), (60 * SEC, 5)] {
        let l = Limiter::new(&cfg);
        assert_eq!(drain(&l, b"k", T0), 5);
        assert_eq!(drain(&l, b"k", T0 + elapsed), refilled, "after {}ms", elapsed / MS);
    }
    // Refills accumulate across partial drains and never beyond the bucket.
    let l = Limiter::new(&cfg);
    assert_eq!(drain(&l, b"k", T0), 5);
    assert_eq!(drain(&l, b"k", T0 + 200 * MS), 2);
    assert_eq!(drain(&l, b"k", T0 + 250 * MS), 0);
    assert_eq!(drain(&l, b"k", T0 + 300 * MS), 1);
    assert_eq!(drain(&l, b"k", T0 + 10 * SEC), 5);
}

#[test]
fn zero_burst_is_treated_as_one_and_extreme_configs_still_limit() {
    let l = Limiter::new(&limit(10, Duration::from_secs(1), 0));
    assert_eq!(drain(&l, b"k", T0), 1);
    // One request per nanosecond with an enormous bucket: admits, without overflow.
    let l = Limiter::new(&limit(u64::MAX, Duration::from_secs(1), u64::MAX));
    assert!(l.check(b"k", T0).allowed);
    // A window of centuries: one request, then refusals (no saturation into "always allowed").
    let l = Limiter::new(&limit(1, Duration::MAX, 1));
    assert!(l.check(b"k", T0).allowed);
    assert!(!l.check(b"k", T0).allowed);
}

/// Replays `script` on two limiters of the same shape, one of which evicts every refilled key
/// before each step; every decision must be identical.
fn assert_eviction_invisible(cfg: &LimitConfig, script: &[(u64, &[u8])]) {
    let kept = Limiter::new(cfg);
    let swept = Limiter::new(cfg);
    for (i, &(now, key)) in script.iter().enumerate() {
        swept.sweep(now);
        assert_eq!(swept.check(key, now), kept.check(key, now), "step {i}");
    }
}

#[test]
fn evicting_refilled_keys_changes_no_decision() {
    let cfg = limit(10, Duration::from_secs(10), 3);
    let mut script: Vec<(u64, &[u8])> = Vec::new();
    // A busy key, an idle key and a key that comes back exactly as its bucket refills.
    for i in 0..40u64 {
        script.push((T0 + i * 250 * MS, b"busy"));
        if i % 10 == 0 {
            script.push((T0 + i * 250 * MS, b"idle"));
        }
    }
    script.push((T0, b"edge"));
    script.push((T0 + SEC, b"edge"));
    script.sort_by_key(|&(now, _)| now);
    assert_eviction_invisible(&cfg, &script);
}

#[test]
fn evicted_key_seen_again_has_a_full_bucket() {
    let l = Limiter::new(&limit(10, Duration::from_secs(10), 3));
    assert_eq!(drain(&l, b"k", T0), 3);
    // Refilled exactly at T0 + 3 s (TAT = now): evictable.
    assert_eq!(l.sweep(T0 + 3 * SEC - 1), 0);
    assert_eq!(l.sweep(T0 + 3 * SEC), 1);
    assert_eq!(l.tracked_keys(), 0);
    let fresh = Limiter::new(&limit(10, Duration::from_secs(10), 3));
    for _ in 0..4 {
        assert_eq!(l.check(b"k", T0 + 3 * SEC), fresh.check(b"never-seen", T0 + 3 * SEC));
    }
}

#[test]
fn sweep_keeps_keys_still_refilling() {
    let l = Limiter::new(&limit(1, Duration::from_secs(1), 2));
    for key in [&b"a"[..], b"b", b"c"] {
        l.check(key, T0);
    }
    l.check(b"a", T0); // TAT a = T0 + 2 s; b, c = T0 + 1 s
    assert_eq!(l.sweep(T0 + SEC), 2);
    assert_eq!(l.tracked_keys(), 1);
    assert_eq!(l.check(b"a", T0 + SEC), allowed(1, 0, 2));
    assert_eq!(l.check(b"a", T0 + SEC), refused(1, 2, 1));
}

#[test]
fn new_key_at_capacity_is_refused_until_a_tracked_key_refills() {
    // 1 per second, bucket of 2, room for 4 keys.
    let cfg = LimitConfig { max_keys: 4, ..limit(1, Duration::from_secs(1), 2) };
    let l = Limiter::new(&cfg);
    let twin = Limiter::new(&LimitConfig { max_keys: 1000, ..cfg.clone() });
    let both = |key: &[u8], now: u64| {
        let d = l.check(key, now);
        assert_eq!(d, twin.check(key, now), "tracked key {key:?} must not notice the capacity");
        d
    };
    for key in [&b"a"[..], b"b", b"c", b"d"] {
        both(key, T0);
    }
    both(b"a", T0);
    both(b"b", T0); // TATs: a, b = T0 + 2 s; c, d = T0 + 1 s
    assert_eq!(l.tracked_keys(), 4);

    // Full of keys still refilling: fail closed until the first refills (c and d, in 0.5 s).
    assert_eq!(l.check(b"e", T0 + 500 * MS), refused(1, 1, 1));
    assert_eq!(l.capacity_refusals(), 1);
    assert_eq!(l.tracked_keys(), 4);

    // c and d refill at T0 + 1 s: they are evicted and e takes a slot.
    assert_eq!(l.check(b"e", T0 + SEC), allowed(1, 1, 1));
    assert_eq!(l.tracked_keys(), 3);
    assert_eq!(l.check(b"f", T0 + SEC), allowed(1, 1, 1));
    assert_eq!(l.tracked_keys(), 4);
    // Full again, the earliest TAT is T0 + 2 s: refused without a sweep.
    assert_eq!(l.check(b"g", T0 + SEC), refused(1, 1, 1));
    assert_eq!(l.capacity_refusals(), 2);

    // a and b kept their buckets through all of this.
    both(b"a", T0 + SEC);
    both(b"b", T0 + SEC);
    both(b"a", T0 + SEC);
    // An evicted key comes back as fresh as in a table that never evicted it.
    assert_eq!(l.tracked_keys(), 4);
    assert_eq!(l.check(b"c", T0 + 3 * SEC), twin.check(b"c", T0 + 3 * SEC));
}

#[test]
fn flood_of_distinct_keys_never_exceeds_max_keys_nor_frees_a_busy_key() {
    // 10 per second (T = 100 ms), bucket of 10, room for 64 keys; a new key every 0.1 ms for 2 s.
    let cfg = LimitConfig { max_keys: 64, ..limit(10, Duration::from_secs(1), 10) };
    let l = Limiter::new(&cfg);
    let mut victim_admitted = 0;
    let mut flood_admitted = 0u64;
    let mut refusals = 0u64;
    let mut key = [0u8; 8];
    for i in 0..20_000u64 {
        let now = T0 + i * 100_000;
        key.copy_from_slice(&i.to_le_bytes());
        let d = l.check(&key, now);
        if d.allowed {
            flood_admitted += 1;
        } else {
            refusals += 1;
            assert_eq!((d.remaining, d.retry_after_secs >= 1), (0, true));
        }
        assert!(l.tracked_keys() <= 64, "tracked {} at step {i}", l.tracked_keys());
        if l.check(b"victim", now).allowed {
            victim_admitted += 1;
        }
    }
    assert_eq!(refusals, l.capacity_refusals());
    // 63 flood keys fill the table beside the victim; after that a slot frees only when its key
    // refills, at least T = 100 ms after it was taken: at most 21 tenants per slot in 2 s.
    assert!(flood_admitted >= 63, "the table filled: {flood_admitted}");
    assert!(flood_admitted <= 63 * 21, "slots recycled faster than keys refill: {flood_admitted}");
    assert!(refusals >= 20_000 - 63 * 21, "a flood of live keys fails closed: {refusals}");
    // The victim, tracked from the start, got exactly its own allowance: the burst plus one per
    // 100 ms over 2 s (the last step is 1999.9 ms in), neither reset by the flood nor refused
    // for it.
    assert_eq!(victim_admitted, 10 + 19);
}

#[test]
fn at_capacity_sweep_frees_room_once_flood_keys_refill() {
    let cfg = LimitConfig { max_keys: 100, ..limit(1, Duration::from_secs(1), 1) };
    let l = Limiter::new(&cfg);
    for i in 0..1000u32 {
        l.check(&i.to_le_bytes(), T0);
    }
    assert_eq!((l.tracked_keys(), l.capacity_refusals()), (100, 900));
    // All 100 refill at T0 + 1 s; a new key then sweeps them all.
    assert!(l.check(b"late", T0 + SEC).allowed);
    assert_eq!(l.tracked_keys(), 1);
}

#[test]
fn config_problems_name_each_bad_field() {
    let ok = LimitConfig::new("per-ip", 100, Duration::from_secs(60));
    assert_eq!(ok.burst, 100);
    assert!(ok.problems().is_empty());
    let cases: &[(LimitConfig, &[&str])] = &[
        (LimitConfig { name: String::new(), ..ok.clone() }, &["name"]),
        (LimitConfig { name: "a\"b".into(), ..ok.clone() }, &["name"]),
        (LimitConfig { name: "tab\there".into(), ..ok.clone() }, &["name"]),
        (LimitConfig { requests: 0, ..ok.clone() }, &["requests"]),
        (LimitConfig { window: Duration::ZERO, ..ok.clone() }, &["window", "requests"]),
        (LimitConfig { requests: 2_000, window: Duration::from_micros(1), ..ok.clone() }, &["requests"]),
        (LimitConfig { burst: 0, max_keys: 0, ..ok.clone() }, &["burst", "max_keys"]),
    ];
    for (cfg, fields) in cases {
        let got: Vec<_> = cfg.problems().into_iter().map(|(field, _)| field).collect();
        assert_eq!(&got, fields, "{cfg:?}");
    }
}

fn headers(applied: &[(&LimitConfig, Decision)]) -> String {
    let mut out = Vec::new();
    write_headers(&mut out, applied);
    String::from_utf8(out).unwrap()
}

#[test]
fn headers_for_one_limit() {
    let ip = LimitConfig::new("per-ip", 100, Duration::from_secs(60));
    assert_eq!(
        headers(&[(&ip, allowed(100, 42, 17))]),
        "RateLimit-Policy: \"per-ip\";q=100;w=60\r\n\
         RateLimit: \"per-ip\";r=42;t=17\r\n\
         RateLimit-Limit: 100\r\n\
         RateLimit-Remaining: 42\r\n\
         RateLimit-Reset: 17\r\n"
    );
    assert_eq!(
        headers(&[(&ip, refused(100, 60, 1))]),
        "RateLimit-Policy: \"per-ip\";q=100;w=60\r\n\
         RateLimit: \"per-ip\";r=0;t=60\r\n\
         RateLimit-Limit: 100\r\n\
         RateLimit-Remaining: 0\r\n\
         RateLimit-Reset: 60\r\n\
         Retry-After: 1\r\n"
    );
}

#[test]
fn headers_for_two_limits_describe_the_most_restrictive() {
    let ip = LimitConfig::new("per-ip", 100, Duration::from_secs(60));
    let user = LimitConfig::new("per-consumer", 1000, Duration::from_secs(3600));
    let policy = "RateLimit-Policy: \"per-ip\";q=100;w=60, \"per-consumer\";q=1000;w=3600\r\n";
    let cases: &[(Decision, Decision, &str)] = &[
        // Both admit: the fewer remaining decides.
        (
            allowed(100, 42, 17),
            allowed(1000, 7, 3000),
            "RateLimit: \"per-consumer\";r=7;t=3000\r\nRateLimit-Limit: 1000\r\n\
             RateLimit-Remaining: 7\r\nRateLimit-Reset: 3000\r\n",
        ),
        // Equal remaining: the longer reset decides.
        (
            allowed(100, 7, 50),
            allowed(1000, 7, 20),
            "RateLimit: \"per-ip\";r=7;t=50\r\nRateLimit-Limit: 100\r\n\
             RateLimit-Remaining: 7\r\nRateLimit-Reset: 50\r\n",
        ),
        // One refuses: it decides, even over an admitting limit with nothing left.
        (
            allowed(100, 0, 60),
            refused(1000, 3600, 4),
            "RateLimit: \"per-consumer\";r=0;t=3600\r\nRateLimit-Limit: 1000\r\n\
             RateLimit-Remaining: 0\r\nRateLimit-Reset: 3600\r\nRetry-After: 4\r\n",
        ),
        // Both refuse: the longer wait decides.
        (
            refused(100, 60, 9),
            refused(1000, 3600, 4),
            "RateLimit: \"per-ip\";r=0;t=60\r\nRateLimit-Limit: 100\r\n\
             RateLimit-Remaining: 0\r\nRateLimit-Reset: 60\r\nRetry-After: 9\r\n",
        ),
    ];
    for (i, &(a, b, rest)) in cases.iter().enumerate() {
        assert_eq!(headers(&[(&ip, a), (&user, b)]), format!("{policy}{rest}"), "case {i}");
    }
}

#[test]
fn headers_edge_cases() {
    assert_eq!(headers(&[]), "");
    // Sub-second windows round up; a hand-made refusal never says Retry-After: 0; a name that
    // slipped past validation is still a well-formed sf-string.
    let odd = LimitConfig::new("a\"b\\c\u{e9}", 3, Duration::from_millis(1500));
    assert_eq!(
        headers(&[(&odd, refused(3, 0, 0))]),
        "RateLimit-Policy: \"a\\\"b\\\\c??\";q=3;w=2\r\n\
         RateLimit: \"a\\\"b\\\\c??\";r=0;t=0\r\n\
         RateLimit-Limit: 3\r\n\
         RateLimit-Remaining: 0\r\n\
         RateLimit-Reset: 0\r\n\
         Retry-After: 1\r\n"
    );
}

#[test]
fn headers_from_real_decisions() {
    let cfg = limit(2, Duration::from_secs(10), 2);
    let l = Limiter::new(&cfg);
    let first = l.check(b"k", T0);
    l.check(b"k", T0);
    let third = l.check(b"k", T0 + SEC);
    assert_eq!(
        headers(&[(&cfg, first)]),
        "RateLimit-Policy: \"test\";q=2;w=10\r\nRateLimit: \"test\";r=1;t=5\r\n\
         RateLimit-Limit: 2\r\nRateLimit-Remaining: 1\r\nRateLimit-Reset: 5\r\n"
    );
    assert_eq!(
        headers(&[(&cfg, third)]),
        "RateLimit-Policy: \"test\";q=2;w=10\r\nRateLimit: \"test\";r=0;t=9\r\n\
         RateLimit-Limit: 2\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 9\r\nRetry-After: 4\r\n"
    );
}

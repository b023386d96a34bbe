//! Rate limits shared by many gateway hosts through Redis (`scope = "cluster"`).
//!
//! # Exact mode (`sync = "exact"`)
//!
//! Every decision is one GCRA step in Redis, atomically, by a Lua script ([`GCRA_SCRIPT`]) loaded
//! once and called with `EVALSHA` (sent as `EVAL`, which loads it again, after a `NOSCRIPT`
//! reply). The script reads Redis' own clock (`TIME`), so hosts with skewed clocks agree, and
//! stores one value per key (its theoretical arrival time, µs) with a TTL of the time the bucket
//! takes to refill: at most `burst · window / requests`, about one window. Each shard sends the
//! decisions of all its in-flight requests over one pipelined connection per Redis node
//! ([`client`]). A key Redis refused is refused locally, from a per-shard deny cache, until its
//! `Retry-After` passes: a flood against one key costs Redis about one call per shard per
//! emission interval, not one per request.
//!
//! # Synced mode (`sync = "100ms"`)
//!
//! Decisions are made locally, against the host's view of the cluster's count; see [`synced`]
//! for the algorithm and its worst-case overshoot.
//!
//! # When Redis cannot answer
//!
//! A call that gets no reply within `[cluster] timeout` (Redis down, slow, restarted, answering
//! errors) gets the limit's `on_error` decision: `local` (the host's own limiter for this limit
//! decides, so the limit holds per host), `allow`, or `deny` (503 `limit_store_unavailable`).
//! Failures are counted in metrics and logged once per burst, with the Redis address.

mod client;
pub mod synced;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use std::time::{Duration, Instant};

pub use client::{ping, Client, Fail};
use redis_protocol::resp2::types::OwnedFrame;

use crate::config::cluster::OnError;
use crate::policy::ratelimit::{Decision, LimitConfig};

/// `n` GCRA steps at one instant (the algorithm of the local limiter, `policy::ratelimit`) on
/// Redis' clock. `KEYS[1]`: the key. `ARGV[1]`: emission interval `T` (µs). `ARGV[2]`: bucket span
/// `burst·T` (µs). `ARGV[3]`: `n`, the requests deciding at once. Admits the first `k ≤ n` that
/// fit, exactly as `n` single steps in a row would, and returns `{k, TAT − now}` with the TAT as
/// it was before them (µs). The value expires when the bucket is full again. Numbers are
/// formatted with `%d`: Lua would print a TAT (~1.7e15 µs) in exponent notation and lose digits.
pub const GCRA_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local k = math.floor((now + span - tat) / interval)
if k > n then k = n end
if k < 0 then k = 0 end
if k > 0 then
  local nxt = tat + k * interval
  local ttl = math.ceil((nxt - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', string.format('%d', ttl))
end
return {k, tat - now}
";

/// The hex SHA-1 of a script, as `EVALSHA` names it.
pub fn script_sha(script: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, script.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn gcra_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha(GCRA_SCRIPT))
}

/// Redis key of one limit's key: `PREFIX` `g:` `LIMIT` `:` `KEY` (exact) or `s:` (synced). A key
/// longer than 128 bytes (a header value) is replaced by its SHA-256, so Redis keys stay small
/// and every host names the same key the same way.
pub fn redis_key(out: &mut Vec<u8>, prefix: &str, mode: &str, limit: &str, key: &[u8]) {
    out.clear();
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(mode.as_bytes());
    out.extend_from_slice(limit.as_bytes());
    out.push(b':');
    if key.len() <= 128 {
        out.extend_from_slice(key);
    } else {
        let d = ring::digest::digest(&ring::digest::SHA256, key);
        out.extend_from_slice(b"sha256:");
        for b in d.as_ref() {
            out.extend_from_slice(format!("{b:02x}").as_bytes());
        }
    }
}

/// One exact cluster limit on one shard.
pub struct ExactLimit {
    pub client: Rc<Client>,
    pub limit: LimitConfig,
    pub on_error: OnError,
    interval_us: u64,
    span_us: u64,
    /// `ARGV` of the script: the interval and the span, as text.
    args: Rc<[String; 2]>,
    deny: RefCell<DenyCache>,
    /// Calls queued for the shard's connection and not yet written, by key: a request for a
    /// key that has one joins it instead of making its own.
    open: Rc<RefCell<HashMap<u64, Rc<Batch>>>>,
    batch_keys: RandomState,
}

/// Requests for one key decided by one call.
struct Batch {
    n: Cell<u64>,
    /// Written: no one joins any more.
    closed: Cell<bool>,
    /// `(admitted k, TAT − now before them)`, or why there is no answer.
    result: RefCell<Option<Result<(u64, u64), Fail>>>,
    waiters: RefCell<Vec<Waker>>,
}

impl Batch {
    fn finish(&self, r: Result<(u64, u64), Fail>) {
        if self.result.borrow().is_none() {
            *self.result.borrow_mut() = Some(r);
        }
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Waits for a batch's answer.
struct Answer<'a>(&'a Batch);

impl Future for Answer<'_> {
    type Output = Result<(u64, u64), Fail>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &*self.0.result.borrow() {
            Some(r) => Poll::Ready(r.clone()),
            None => {
                self.0.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The leader of a batch answers its followers however it ends (a leader dropped at its
/// deadline leaves them an error, not a wait).
struct Leader<'a> {
    batch: &'a Rc<Batch>,
    open: &'a RefCell<HashMap<u64, Rc<Batch>>>,
    key: u64,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut open = self.open.borrow_mut();
        if open.get(&self.key).is_some_and(|b| Rc::ptr_eq(b, self.batch)) {
            open.remove(&self.key);
        }
        drop(open);
        self.batch.closed.set(true);
        self.batch.finish(Err(Fail::TimedOut));
    }
}

impl ExactLimit {
    pub fn new(client: Rc<Client>, limit: &LimitConfig, on_error: OnError) -> ExactLimit {
        let window_us = u64::try_from(limit.window.as_micros()).unwrap_or(u64::MAX);
        let interval_us = (window_us / limit.requests.max(1)).max(1);
        let span_us = interval_us.saturating_mul(limit.burst.max(1));
        ExactLimit {
            client,
            limit: limit.clone(),
            on_error,
            interval_us,
            span_us,
            args: Rc::new([interval_us.to_string(), span_us.to_string()]),
            deny: RefCell::new(DenyCache::new(limit.max_keys)),
            open: Rc::new(RefCell::new(HashMap::new())),
            batch_keys: RandomState::new(),
        }
    }

    /// The Redis key for a request's limit key.
    pub fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        redis_key(&mut out, &self.client.settings().key_prefix, "g:", &self.limit.name, key);
        out
    }

    /// A refusal from the deny cache, when Redis refused this key and its wait is not over.
    pub fn cached_refusal(&self, key: &[u8], now: Instant) -> Option<Decision> {
        let until = self.deny.borrow_mut().get(key, now)?;
        let wait = until - now;
        Some(Decision {
            allowed: false,
            limit: self.limit.requests,
            remaining: 0,
            // When the wait ends the bucket holds one request; it is full `span − T` later.
            reset_secs: ceil_secs_us(wait.as_micros() as u64 + self.span_us.saturating_sub(self.interval_us)),
            retry_after_secs: ceil_secs_us(wait.as_micros() as u64).max(1),
        })
    }

    /// One decision in Redis for `redis_key` (the deny cache's key is the request's own `key`).
    /// Requests for the same key waiting for the shard's connection at once share one call
    /// that decides them all (`n` steps at one instant, exactly as one call each would), so a
    /// busy key costs Redis one call per round trip, not one per request.
    pub async fn decide(&self, key: &[u8], redis_key: &[u8], deadline: Instant) -> Result<Decision, Fail> {
        let h = self.batch_keys.hash_one(key);
        let joined = self.open.borrow().get(&h).filter(|b| !b.closed.get()).cloned();
        let (ticket, answer) = match joined {
            Some(batch) => {
                let ticket = batch.n.get();
                batch.n.set(ticket + 1);
                let answer = match monoio::time::timeout_at(deadline.into(), Answer(&batch)).await {
                    Ok(r) => r,
                    Err(_) => Err(Fail::TimedOut),
                };
                (ticket, answer)
            }
            None => {
                let batch = Rc::new(Batch { n: Cell::new(1), closed: Cell::new(false), result: RefCell::new(None), waiters: RefCell::new(Vec::new()) });
                self.open.borrow_mut().insert(h, batch.clone());
                let leader = Leader { batch: &batch, open: &self.open, key: h };
                let encode: client::Encode = {
                    let (batch, open, args, redis_key) = (batch.clone(), self.open.clone(), self.args.clone(), redis_key.to_vec());
                    Rc::new(move |out: &mut Vec<u8>, eval: bool| {
                        // Written now: the batch is closed to newcomers.
                        if !batch.closed.replace(true) {
                            let mut open = open.borrow_mut();
                            if open.get(&h).is_some_and(|b| Rc::ptr_eq(b, &batch)) {
                                open.remove(&h);
                            }
                        }
                        let (cmd, script): (&[u8], &[u8]) =
                            if eval { (b"EVAL", GCRA_SCRIPT.as_bytes()) } else { (b"EVALSHA", gcra_sha().as_bytes()) };
                        let n = itoa::Buffer::new().format(batch.n.get()).to_owned();
                        client::encode(out, &[cmd, script, b"1", &redis_key, args[0].as_bytes(), args[1].as_bytes(), n.as_bytes()]);
                    })
                };
                let reply = self.client.call(redis_key, deadline, encode).await;
                let answer = reply.and_then(|r| match &r {
                    OwnedFrame::Array(v) => match (v.first(), v.get(1)) {
                        (Some(OwnedFrame::Integer(k)), Some(OwnedFrame::Integer(o))) => Ok(((*k).max(0) as u64, (*o).max(0) as u64)),
                        _ => Err(Fail::Protocol),
                    },
                    _ => Err(Fail::Protocol),
                });
                batch.finish(answer.clone());
                drop(leader);
                (0, answer)
            }
        };
        let (admitted, base) = answer?;
        Ok(self.ticket(key, ticket, admitted, base))
    }

    /// The decision of the `ticket`-th request of a batch in which Redis admitted `admitted`,
    /// the TAT having been `base` µs ahead of its clock before them.
    fn ticket(&self, key: &[u8], ticket: u64, admitted: u64, base: u64) -> Decision {
        let t = self.interval_us;
        if ticket < admitted {
            let tat = base + (ticket + 1) * t;
            return Decision {
                allowed: true,
                limit: self.limit.requests,
                remaining: self.span_us.saturating_sub(tat) / t,
                reset_secs: ceil_secs_us(tat),
                retry_after_secs: 0,
            };
        }
        let seen = base + admitted * t;
        let wait_us = (seen + t).saturating_sub(self.span_us);
        self.deny.borrow_mut().insert(key, Instant::now() + Duration::from_micros(wait_us));
        Decision { allowed: false, limit: self.limit.requests, remaining: 0, reset_secs: ceil_secs_us(seen), retry_after_secs: ceil_secs_us(wait_us).max(1) }
    }
}

fn ceil_secs_us(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Keys Redis refused, until when; per shard, bounded. When full, expired entries are dropped;
/// if none has expired the new refusal is simply not cached (Redis is asked again).
struct DenyCache {
    keys: RandomState,
    until: HashMap<u64, Instant>,
    max: usize,
}

impl DenyCache {
    fn new(max: usize) -> DenyCache {
        DenyCache { keys: RandomState::new(), until: HashMap::new(), max: max.clamp(1, 100_000) }
    }

    fn get(&mut self, key: &[u8], now: Instant) -> Option<Instant> {
        let h = self.keys.hash_one(key);
        match self.until.get(&h) {
            Some(&t) if t > now => Some(t),
            Some(_) => {
                self.until.remove(&h);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: &[u8], until: Instant) {
        if self.until.len() >= self.max {
            let now = Instant::now();
            self.until.retain(|_, t| *t > now);
            if self.until.len() >= self.max {
                return;
            }
        }
        self.until.insert(self.keys.hash_one(key), until);
    }
}

/// A synced limit as one shard uses it: the host's table, the shard's client for the rounds.
pub struct SyncedRt {
    pub table: Arc<synced::SyncedLimit>,
    pub client: Rc<Client>,
    pub on_error: OnError,
}

impl SyncedRt {
    /// Checks `key`; the first use on a host (and after a reload) starts the rounds.
    pub fn check(self: &Rc<Self>, key: &[u8], now: u64) -> synced::Check {
        if self.table.claim() {
            let metrics = self.client.metrics().clone();
            let on_round = Rc::new(move |ok: bool| {
                let m = if ok { &metrics.sync_rounds } else { &metrics.sync_failures };
                m.set(m.get() + 1);
            });
            synced::spawn_rounds(self.table.clone(), self.client.clone(), Rc::downgrade(self), on_round);
        }
        self.table.check(key, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_keys_are_bounded_and_stable() {
        let mut k = Vec::new();
        redis_key(&mut k, "rg:", "g:", "per-ip", b"10.0.0.1");
        assert_eq!(k, b"rg:g:per-ip:10.0.0.1");
        let long = vec![b'x'; 500];
        redis_key(&mut k, "rg:", "g:", "h", &long);
        assert_eq!(k.len(), "rg:g:h:sha256:".len() + 64);
        let mut k2 = Vec::new();
        redis_key(&mut k2, "rg:", "g:", "h", &long);
        assert_eq!(k, k2);
    }

    #[test]
    fn script_sha_is_redis_sha1() {
        // Redis names `return 1` by this digest (SCRIPT LOAD "return 1").
        assert_eq!(script_sha("return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    /// The batched step (the script's `k`, computed here as the script does) gives each request
    /// the decision a single step of its own, in order, would have given.
    #[test]
    fn a_batch_decides_as_single_steps_would() {
        use crate::config::cluster::{ClusterSettings, RedisAddr};
        let settings = ClusterSettings {
            redis: vec![RedisAddr::parse("redis://127.0.0.1:1").unwrap()],
            timeout: Duration::from_millis(5),
            on_error: OnError::Local,
            key_prefix: "t:".into(),
        };
        let client = Client::new(Arc::new(settings), Rc::new(crate::observe::metrics::RedisMetrics::default()));
        let limit = LimitConfig { burst: 4, ..LimitConfig::new("b", 10, Duration::from_secs(10)) };
        let x = ExactLimit::new(client, &limit, OnError::Local);
        let (t, span) = (1_000_000u64, 4_000_000u64);
        for base in [0, t / 2, t, 3 * t, 4 * t] {
            for n in 1..8u64 {
                let k = ((span.saturating_sub(base)) / t).min(n);
                let mut tat = base;
                for i in 0..n {
                    let got = x.ticket(b"k", i, k, base);
                    let next = tat + t;
                    let want = if next <= span {
                        tat = next;
                        Decision { allowed: true, limit: 10, remaining: (span - tat) / t, reset_secs: ceil_secs_us(tat), retry_after_secs: 0 }
                    } else {
                        Decision { allowed: false, limit: 10, remaining: 0, reset_secs: ceil_secs_us(tat), retry_after_secs: ceil_secs_us(next - span).max(1) }
                    };
                    assert_eq!(got, want, "base {base}, n {n}, request {i}");
                }
            }
        }
    }

    #[test]
    fn deny_cache_expires_and_stays_bounded() {
        let mut c = DenyCache::new(2);
        let now = Instant::now();
        c.insert(b"a", now + Duration::from_secs(5));
        c.insert(b"b", now + Duration::from_secs(5));
        c.insert(b"c", now + Duration::from_secs(5));
        assert!(c.get(b"a", now).is_some());
        assert!(c.get(b"c", now).is_none(), "over the bound: not cached");
        assert!(c.get(b"a", now + Duration::from_secs(6)).is_none());
    }
}

//! Synced cluster limits (`sync = "100ms"`): decided locally, counts shared every interval.
//!
//! # Algorithm
//!
//! A sliding window over Redis' clock. Redis keeps, per key, one hash with the count of the
//! current window and of the previous one (fields named by window number, `TIME / window`; the
//! hash expires two windows after its last write). Every `sync` interval one shard of each host
//! runs a round: for every key the host checked since the previous round, it pushes the
//! requests it admitted since then (`HINCRBY`) and pulls the cluster's counts of the current and previous window and
//! how far into the window Redis is ([`SYNC_SCRIPT`]). A limit's keys are spread over 16 groups,
//! each one hash slot, and a round makes one pipelined call per group and 128 keys.
//!
//! A request is admitted when the host's estimate of the cluster's count stays under the limit:
//!
//! ```text
//! estimate = prev · (window − elapsed) / window + cur + pushed-but-unanswered + unsynced
//! admit iff estimate < requests          (then unsynced += 1, by compare-and-swap)
//! ```
//!
//! `cur` and `prev` are the cluster's counts as of the last round (this host's pushed counts
//! included), rolled forward locally when a window ends between rounds. Within one host the
//! count is exact (one table, shared by all shards, updated by compare-and-swap).
//!
//! # Worst-case overshoot
//!
//! A host learns of another host's admissions at most `2 · sync + rtt` after they happen: they
//! wait up to one interval to be pushed, and up to one more for this host's next pull. So with
//! `H` hosts, each admitting at most `r` requests per second for the key, the cluster admits at
//! most
//!
//! ```text
//! requests + (H − 1) · min(requests, r · (2 · sync + rtt))
//! ```
//!
//! per window, and none more once every host has seen a round after the limit was reached (one
//! interval after the burst, every host refuses). A burst faster than the interval can take the
//! `min` to `requests`: every host then admits up to the whole limit before it hears of the
//! others. Choose `exact` where that matters.
//!
//! # Memory bound
//!
//! A host tracks at most `max_keys` keys per limit; a new key beyond it is refused (fail closed,
//! as the local limiter does) until a round drops keys not used for two windows.
//!
//! # When Redis cannot answer
//!
//! A failed round keeps its counts to push with the next one. When no round has succeeded for
//! three intervals (at least one second), the limit is degraded and its `on_error` decision
//! applies until a round succeeds again.

use std::hash::{BuildHasher, RandomState};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis_protocol::resp2::types::OwnedFrame;

use super::client::{self, Client, Fail};
use crate::policy::ratelimit::{Decision, LimitConfig, Limiter};

/// Push one host's counts and pull the cluster's, for up to [`KEYS_PER_CALL`] keys of one group
/// (one hash slot). `KEYS`: each key's hash. `ARGV[1]`: the window (ms); `ARGV[1 + i]`: requests
/// admitted for `KEYS[i]` since the last push. Returns `{cur_1, prev_1, ..., cur_n, prev_n,
/// elapsed_ms}`.
pub const SYNC_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[1])
local idx = math.floor(now / w)
local cur_f = string.format('%d', idx)
local prev_f = string.format('%d', idx - 1)
local ttl = string.format('%d', 2 * w)
local out = {}
for i, key in ipairs(KEYS) do
  local add = tonumber(ARGV[i + 1])
  local cur
  if add > 0 then
    cur = redis.call('HINCRBY', key, cur_f, add)
    -- The first write of a window sets the expiry (two windows from then covers this window
    -- and the next, where it counts as the previous one) and drops older windows' fields.
    if cur == add then
      redis.call('PEXPIRE', key, ttl)
      if redis.call('HLEN', key) > 2 then
        for _, f in ipairs(redis.call('HKEYS', key)) do
          if f ~= cur_f and f ~= prev_f then redis.call('HDEL', key, f) end
        end
      end
    end
  else
    cur = tonumber(redis.call('HGET', key, cur_f) or 0)
  end
  local prev = tonumber(redis.call('HGET', key, prev_f) or 0)
  out[2 * i - 1] = cur
  out[2 * i] = prev
end
out[2 * #KEYS + 1] = now - idx * w
return out
";

/// Keys of a limit are spread over this many groups, each one hash slot (a hash tag in the key),
/// so one call can carry many keys (a Redis Cluster refuses a script over keys of several slots).
const GROUPS: u64 = 16;
/// Keys per sync call at most.
pub const KEYS_PER_CALL: usize = 128;

fn sync_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| super::script_sha(SYNC_SCRIPT))
}

const NEVER: u64 = u64::MAX;

/// One key's view of the cluster.
struct Entry {
    /// The Redis key.
    redis_key: Box<[u8]>,
    group: u64,
    unsynced: AtomicU64,
    /// Pushed in the round under way, not yet in `cur`.
    in_flight: AtomicU64,
    cur: AtomicU64,
    prev: AtomicU64,
    /// When Redis' current window began, on `Limiter::now`'s clock; `NEVER` before the first
    /// round.
    window_start: AtomicU64,
    last_seen: AtomicU64,
}

/// A synced limit's state, shared by the shards of one host (carried over a reload when its
/// settings are unchanged).
pub struct SyncedLimit {
    pub limit: LimitConfig,
    pub interval: Duration,
    window_ns: u64,
    prefix: String,
    keys: RandomState,
    table: DashMap<u64, Arc<Entry>>,
    /// A shard runs this limit's rounds.
    driven: AtomicBool,
    /// Since when rounds fail; `NEVER` while they succeed.
    failing_since: AtomicU64,
    started: u64,
    /// When the last round began: keys not checked since are left out of the next.
    last_round: AtomicU64,
}

/// What a synced check found.
pub enum Check {
    Decided(Decision),
    /// No round has succeeded for too long: the limit's `on_error` decides.
    Degraded,
}

impl SyncedLimit {
    pub fn new(limit: &LimitConfig, interval: Duration, key_prefix: &str) -> SyncedLimit {
        SyncedLimit {
            limit: limit.clone(),
            interval,
            window_ns: u64::try_from(limit.window.as_nanos()).unwrap_or(u64::MAX).max(1),
            prefix: key_prefix.to_string(),
            keys: RandomState::new(),
            table: DashMap::new(),
            driven: AtomicBool::new(false),
            failing_since: AtomicU64::new(NEVER),
            started: Limiter::now(),
            last_round: AtomicU64::new(0),
        }
    }

    pub fn same_settings(&self, limit: &LimitConfig, interval: Duration, key_prefix: &str) -> bool {
        self.limit == *limit && self.interval == interval && self.prefix == key_prefix
    }

    fn degraded(&self, now: u64) -> bool {
        let grace = (self.interval * 3).max(Duration::from_secs(1)).as_nanos() as u64;
        match self.failing_since.load(Relaxed) {
            NEVER => false,
            since => now.saturating_sub(since) > grace,
        }
    }

    /// Checks and, if admitted, counts one request for `key`.
    pub fn check(&self, key: &[u8], now: u64) -> Check {
        if self.degraded(now) {
            return Check::Degraded;
        }
        let Some(e) = self.entry(key) else {
            let retry = self.interval.as_secs().max(1);
            return Check::Decided(Decision { allowed: false, limit: self.limit.requests, remaining: 0, reset_secs: retry, retry_after_secs: retry });
        };
        e.last_seen.store(now, Relaxed);
        let (cluster, into_window, prev) = self.estimate(&e, now);
        let window = self.window_ns;
        let reset_secs = (window - into_window).div_ceil(1_000_000_000);
        let mut u = e.unsynced.load(Relaxed);
        loop {
            let count = cluster + e.in_flight.load(Relaxed) as f64 + u as f64;
            if count + 1.0 > self.limit.requests as f64 {
                // Wait until the previous window's share has decayed enough, or the window ends.
                let excess = count + 1.0 - self.limit.requests as f64;
                let to_end = window - into_window;
                let wait = if prev > 0.0 { ((excess / prev) * window as f64) as u64 } else { to_end };
                let retry = wait.min(to_end).div_ceil(1_000_000_000).max(1);
                return Check::Decided(Decision { allowed: false, limit: self.limit.requests, remaining: 0, reset_secs, retry_after_secs: retry });
            }
            match e.unsynced.compare_exchange_weak(u, u + 1, Relaxed, Relaxed) {
                Ok(_) => {
                    let remaining = (self.limit.requests as f64 - count - 1.0).max(0.0) as u64;
                    return Check::Decided(Decision { allowed: true, limit: self.limit.requests, remaining, reset_secs, retry_after_secs: 0 });
                }
                Err(actual) => u = actual,
            }
        }
    }

    /// (cluster count weighted for the sliding window, ns into the current window, the previous
    /// window's count) as of `now`.
    fn estimate(&self, e: &Entry, now: u64) -> (f64, u64, f64) {
        let w = self.window_ns;
        let start = e.window_start.load(Relaxed);
        if start == NEVER {
            return (0.0, (now - self.started.min(now)) % w, 0.0);
        }
        let elapsed = now.saturating_sub(start);
        let (prev, cur) = match elapsed / w {
            0 => (e.prev.load(Relaxed), e.cur.load(Relaxed)),
            1 => (e.cur.load(Relaxed), 0),
            _ => (0, 0),
        };
        let into = elapsed % w;
        let prev = prev as f64;
        (prev * (w - into) as f64 / w as f64 + cur as f64, into, prev * (w - into) as f64 / w as f64)
    }

    fn entry(&self, key: &[u8]) -> Option<Arc<Entry>> {
        let h = self.keys.hash_one(key);
        if let Some(e) = self.table.get(&h) {
            return Some(e.clone());
        }
        if self.table.len() >= self.limit.max_keys {
            return None;
        }
        // `{PREFIX s:LIMIT:GROUP}:KEY`: the braces make the group the hash slot. The group comes
        // from an unkeyed hash, so every host puts a key in the same group (`h` is keyed per
        // process).
        let group = crate::upstream::fnv1a(&[key]) % GROUPS;
        let mut redis_key = Vec::new();
        super::redis_key(&mut redis_key, &self.prefix, "s:", &self.limit.name, key);
        let tail = redis_key.split_off(self.prefix.len() + 2 + self.limit.name.len() + 1);
        redis_key.insert(0, b'{');
        redis_key.pop();
        redis_key.extend_from_slice(format!(":{group}}}:").as_bytes());
        redis_key.extend_from_slice(&tail);
        let e = self
            .table
            .entry(h)
            .or_insert_with(|| {
                Arc::new(Entry {
                    redis_key: redis_key.into_boxed_slice(),
                    group,
                    unsynced: AtomicU64::new(0),
                    in_flight: AtomicU64::new(0),
                    cur: AtomicU64::new(0),
                    prev: AtomicU64::new(0),
                    window_start: AtomicU64::new(NEVER),
                    last_seen: AtomicU64::new(0),
                })
            })
            .clone();
        Some(e)
    }

    /// Takes the rounds for this host, unless another shard runs them.
    pub fn claim(&self) -> bool {
        !self.driven.load(Relaxed) && self.driven.compare_exchange(false, true, Relaxed, Relaxed).is_ok()
    }

    /// One round: push every key's count, pull the cluster's. Returns whether every call
    /// succeeded.
    async fn round(&self, client: &Rc<Client>) -> bool {
        let now = Limiter::now();
        // Keys this host has not seen for two windows are dropped: Redis' counts for them have
        // expired or will have by the time they are seen again.
        self.table.retain(|_, e| {
            e.unsynced.load(Relaxed) > 0 || e.in_flight.load(Relaxed) > 0 || now.saturating_sub(e.last_seen.load(Relaxed)) < 2 * self.window_ns
        });
        // Only keys checked since the last round (or with counts still to push): a key this host
        // does not use needs no fresh count until it does, and its first decisions then are at
        // most one interval behind, as any key's are between rounds.
        let since = self.last_round.swap(now, Relaxed);
        let mut entries: Vec<Arc<Entry>> = self
            .table
            .iter()
            .filter(|e| e.unsynced.load(Relaxed) > 0 || e.last_seen.load(Relaxed) >= since)
            .map(|e| e.value().clone())
            .collect();
        entries.sort_unstable_by_key(|e| e.group);
        let window_ms: Rc<str> = itoa::Buffer::new().format(self.window_ns.div_ceil(1_000_000)).into();
        let deadline = Instant::now() + (self.interval / 2).max(client.settings().timeout);
        // One call per group and up to KEYS_PER_CALL keys, all pipelined on the shard's
        // connections.
        let chunks: Vec<Vec<Arc<Entry>>> = entries
            .chunk_by(|a, b| a.group == b.group)
            .flat_map(|g| g.chunks(KEYS_PER_CALL))
            .map(|c| c.to_vec())
            .collect();
        let calls = chunks.into_iter().map(|chunk| {
            let counts: Vec<u64> = chunk
                .iter()
                .map(|e| {
                    let n = e.unsynced.swap(0, Relaxed);
                    e.in_flight.fetch_add(n, Relaxed);
                    n
                })
                .collect();
            let window_ms = window_ms.clone();
            async move {
                let chunk = Rc::new(chunk);
                let counts = Rc::new(counts);
                let write: client::Encode = {
                    let (chunk, counts) = (chunk.clone(), counts.clone());
                    Rc::new(move |out: &mut Vec<u8>, eval: bool| {
                        let (cmd, script): (&[u8], &[u8]) =
                            if eval { (b"EVAL", SYNC_SCRIPT.as_bytes()) } else { (b"EVALSHA", sync_sha().as_bytes()) };
                        let n = chunk.len().to_string();
                        let counts: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
                        let mut args: Vec<&[u8]> = vec![cmd, script, n.as_bytes()];
                        args.extend(chunk.iter().map(|e| &*e.redis_key));
                        args.push(window_ms.as_bytes());
                        args.extend(counts.iter().map(|c| c.as_bytes()));
                        client::encode(out, &args);
                    })
                };
                let sent = Limiter::now();
                let reply = client.call(&chunk[0].redis_key, deadline, write).await;
                let ok = match reply.and_then(|r| totals(&r, chunk.len()).ok_or(Fail::Protocol)) {
                    Ok((pairs, elapsed_ms)) => {
                        for (e, (cur, prev)) in chunk.iter().zip(pairs) {
                            e.cur.store(cur, Relaxed);
                            e.prev.store(prev, Relaxed);
                            e.window_start.store(sent.saturating_sub(elapsed_ms * 1_000_000), Relaxed);
                        }
                        true
                    }
                    Err(_) => {
                        // Pushed nothing: push it with the next round.
                        for (e, n) in chunk.iter().zip(counts.iter()) {
                            e.unsynced.fetch_add(*n, Relaxed);
                        }
                        false
                    }
                };
                for (e, n) in chunk.iter().zip(counts.iter()) {
                    e.in_flight.fetch_sub(*n, Relaxed);
                }
                ok
            }
        });
        let results = futures_util::future::join_all(calls).await;
        let ok = results.iter().all(|r| *r);
        if ok {
            self.failing_since.store(NEVER, Relaxed);
        } else if self.failing_since.load(Relaxed) == NEVER {
            self.failing_since.store(now, Relaxed);
        }
        ok
    }
}

/// `(cur, prev)` per key and the ms into the window, from the script's reply for `n` keys.
fn totals(r: &OwnedFrame, n: usize) -> Option<(Vec<(u64, u64)>, u64)> {
    let OwnedFrame::Array(v) = r else { return None };
    if v.len() != 2 * n + 1 {
        return None;
    }
    let int = |f: &OwnedFrame| match f {
        OwnedFrame::Integer(i) => Some((*i).max(0) as u64),
        _ => None,
    };
    let pairs = v[..2 * n].chunks(2).map(|p| Some((int(&p[0])?, int(&p[1])?))).collect::<Option<Vec<_>>>()?;
    Some((pairs, int(&v[2 * n])?))
}

/// Runs the rounds of `limit` on this shard every interval while `owner` (the shard's current
/// use of the limit) lives; then hands the rounds back for another shard (or the next config
/// generation) to claim.
pub fn spawn_rounds<T: 'static>(limit: Arc<SyncedLimit>, client: Rc<Client>, owner: Weak<T>, on_round: Rc<dyn Fn(bool)>) {
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(limit.interval).await;
            if owner.strong_count() == 0 {
                break;
            }
            let ok = limit.round(&client).await;
            on_round(ok);
        }
        limit.driven.store(false, Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u64) -> SyncedLimit {
        SyncedLimit::new(&LimitConfig::new("s", n, Duration::from_secs(60)), Duration::from_millis(100), "t:")
    }

    #[test]
    fn admits_up_to_the_limit_before_any_round() {
        let l = limit(3);
        let now = Limiter::now();
        let admitted = (0..5).filter(|_| matches!(l.check(b"k", now), Check::Decided(d) if d.allowed)).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn cluster_counts_count() {
        let l = limit(10);
        let now = Limiter::now();
        let Check::Decided(d) = l.check(b"k", now) else { panic!("degraded") };
        assert!(d.allowed);
        let e = l.entry(b"k").unwrap();
        // A round said the cluster is at 9 (this host's 1 included) from the window's start.
        e.unsynced.store(0, Relaxed);
        e.cur.store(9, Relaxed);
        e.window_start.store(now, Relaxed);
        let Check::Decided(d) = l.check(b"k", now) else { panic!("degraded") };
        assert!(d.allowed && d.remaining == 0);
        let Check::Decided(d) = l.check(b"k", now) else { panic!("degraded") };
        assert!(!d.allowed && d.retry_after_secs >= 1);
        // Two windows later, nothing of it remains.
        let Check::Decided(d) = l.check(b"k", now + 2 * 60_000_000_000 + 1) else { panic!("degraded") };
        assert!(d.allowed);
    }

    #[test]
    fn keys_carry_their_group_as_hash_tag() {
        let l = limit(1);
        let e = l.entry(b"10.0.0.1").unwrap();
        let k = String::from_utf8(e.redis_key.to_vec()).unwrap();
        assert_eq!(k, format!("{{t:s:s:{}}}:10.0.0.1", e.group), "{k}");
        assert!(e.group < GROUPS);
        // Every host (every process) names a key the same way.
        let other = limit(1);
        assert_eq!(other.entry(b"10.0.0.1").unwrap().redis_key, e.redis_key);
    }

    #[test]
    fn previous_window_decays() {
        let l = limit(10);
        let now = Limiter::now();
        let e = l.entry(b"k").unwrap();
        e.prev.store(10, Relaxed);
        e.window_start.store(now, Relaxed);
        let Check::Decided(d) = l.check(b"k", now) else { panic!("degraded") };
        assert!(!d.allowed, "a full previous window still counts at the new window's start");
        let Check::Decided(d) = l.check(b"k", now + 30_000_000_000) else { panic!("degraded") };
        assert!(d.allowed, "half way through, half of it counts");
    }
}

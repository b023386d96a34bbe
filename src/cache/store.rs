//! One shard's copy of a `[[caches]]` store: entries by key, bounded by bytes, evicted with
//! S3-FIFO (a small probationary queue that a scan passes through without touching the main
//! queue, a main queue with second chances, and a ghost list of keys evicted from the small
//! queue so that a key seen again goes straight to main). Owned by its shard; no locks.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::task::Waker;

use super::rules::{ResponseCc, Times};
use crate::config::cache::CacheDef;
use crate::observe::metrics::CacheMetrics;

/// Bookkeeping counted per entry beyond its bytes: the entry, its slot, its map and queue
/// places, rounded up.
pub const ENTRY_OVERHEAD: usize = 384;

/// A stored header field: (name, value).
pub type Field = (Box<[u8]>, Box<[u8]>);

/// A request's value of a field the response varies on: (lower-case name, normalised value, or
/// None when the request had no such field).
pub type VaryValue = (Box<[u8]>, Option<Box<[u8]>>);

/// A stored response, immutable once stored (a refresh stores a new one); shared by every
/// request serving it.
pub struct Entry {
    /// The key's URL part: host (lower-case), path and query as the key uses them.
    pub url: Box<[u8]>,
    pub host_len: usize,
    /// Hash of the key's other parts (headers, cookies, consumer).
    pub secondary: u64,
    /// Request values of the fields the response varies on: (lower-case name, normalised value).
    pub vary: Vec<VaryValue>,
    pub status: u16,
    /// The stored header fields (no hop-by-hop fields, no framing, no Age), as (name, value).
    pub fields: Vec<Field>,
    /// Status line, fields and `Content-Length`, ready to send (without the end of the head).
    pub head: Box<[u8]>,
    pub body: Box<[u8]>,
    pub times: Times,
    pub lifetime: i64,
    pub cc: ResponseCc,
    /// Effective RFC 5861 windows in seconds (the response's, else the route's).
    pub swr: i64,
    pub sie: i64,
}

impl Entry {
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| &v[..])
    }

    pub fn size(&self) -> usize {
        ENTRY_OVERHEAD
            + self.url.len()
            + self.head.len()
            + self.body.len()
            + self.fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>()
            + self.vary.iter().map(|(n, v)| n.len() + v.as_ref().map_or(0, |v| v.len()) + 32).sum::<usize>()
    }

    pub fn path(&self) -> &[u8] {
        &self.url[self.host_len..]
    }

    pub fn host(&self) -> &[u8] {
        &self.url[..self.host_len]
    }
}

/// Keys are already hashes with a per-process random seed: the map need not hash them again.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

struct Slot {
    entry: Rc<Entry>,
    bucket: u64,
    size: usize,
    freq: Cell<u8>,
    queue: Queue,
    /// Distinguishes this slot's occupant from later ones in the queues.
    generation: u64,
}

/// A fill under way: the request that went to the upstream for a key, and the requests waiting
/// for it.
#[derive(Default)]
pub struct Fill {
    done: Cell<bool>,
    /// What the fill stored (or refreshed), if anything: waiters look again when there is one
    /// (and are served it even when it is to be validated on every other use, `no-cache`, since
    /// it was validated just now); otherwise each goes upstream.
    pub entry: RefCell<Option<Rc<Entry>>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Fill {
    /// Waits until the fill ends (bounded by the caller).
    pub fn wait(self: &Rc<Self>) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.done.get() {
                return std::task::Poll::Ready(());
            }
            self.wakers.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
    }
}

/// Held by the request filling a key. The fill ends as soon as the response is stored or known
/// not to be (`finish`), and in any case when the guard goes (a panic or a dropped future
/// included), so waiters never wait past it.
pub struct FillGuard {
    store: Rc<RefCell<Store>>,
    key: u64,
    pub fill: Rc<Fill>,
}

impl FillGuard {
    /// Ends the fill: waiters wake and look again (`entry`: what was stored, if anything).
    pub fn finish(&self, entry: Option<Rc<Entry>>) {
        if self.fill.done.get() {
            return;
        }
        *self.fill.entry.borrow_mut() = entry;
        if let Ok(mut s) = self.store.try_borrow_mut() {
            if s.fills.get(&self.key).is_some_and(|f| Rc::ptr_eq(f, &self.fill)) {
                s.fills.remove(&self.key);
            }
        }
        self.fill.done.set(true);
        for w in self.fill.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.finish(None);
    }
}

pub struct Store {
    pub def: CacheDef,
    buckets: IdMap<Vec<u32>>,
    slots: slab::Slab<Slot>,
    small: VecDeque<(u32, u64)>,
    main: VecDeque<(u32, u64)>,
    ghost: VecDeque<u64>,
    ghost_set: HashSet<u64, BuildHasherDefault<IdHasher>>,
    bytes: usize,
    small_bytes: usize,
    next_generation: u64,
    fills: IdMap<Rc<Fill>>,
    pub metrics: Rc<CacheMetrics>,
    /// The last cross-shard purge applied.
    pub purge_seen: u64,
}

/// The process's key hasher (seeded at random once, so keys cannot be chosen to collide).
pub fn hasher() -> std::collections::hash_map::DefaultHasher {
    thread_local!(static SEED: std::collections::hash_map::RandomState = std::collections::hash_map::RandomState::new());
    SEED.with(|s| s.build_hasher())
}

impl Store {
    pub fn new(def: CacheDef, metrics: Rc<CacheMetrics>) -> Store {
        Store {
            def,
            buckets: IdMap::default(),
            slots: slab::Slab::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_set: HashSet::default(),
            bytes: 0,
            small_bytes: 0,
            next_generation: 0,
            fills: IdMap::default(),
            metrics,
            purge_seen: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The stored variants of a URL key, newest first (after a change of `Vary`, the entry
    /// stored under the new rule wins over an older one that would match more widely).
    pub fn variants(&self, bucket: u64) -> impl Iterator<Item = &Rc<Entry>> {
        self.buckets.get(&bucket).into_iter().flat_map(|l| l.iter().rev()).filter_map(|&i| self.slots.get(i as usize)).map(|s| &s.entry)
    }

    /// Marks a stored entry as used (S3-FIFO's frequency, at most 3).
    pub fn touch(&self, bucket: u64, entry: &Rc<Entry>) {
        for &i in self.buckets.get(&bucket).into_iter().flatten() {
            if let Some(s) = self.slots.get(i as usize) {
                if Rc::ptr_eq(&s.entry, entry) {
                    s.freq.set((s.freq.get() + 1).min(3));
                }
            }
        }
    }

    /// Stores `entry` under `bucket`, replacing a stored variant with the same secondary key and
    /// request values of its Vary fields, then evicts down to `max_memory`.
    pub fn insert(&mut self, bucket: u64, entry: Rc<Entry>) -> bool {
        let size = entry.size();
        if size as u64 > self.def.max_object + ENTRY_OVERHEAD as u64 * 4 || size as u64 > self.def.max_memory / 4 {
            return false;
        }
        // The same variant, or the oldest one beyond max_variants, gives way.
        let mut gone = Vec::new();
        if let Some(list) = self.buckets.get(&bucket) {
            for &i in list {
                let Some(s) = self.slots.get(i as usize) else { continue };
                let e = &s.entry;
                if e.secondary == entry.secondary && e.vary == entry.vary && e.url == entry.url {
                    gone.push(i);
                }
            }
            if list.len() - gone.len() >= self.def.max_variants {
                if let Some(&oldest) = list.iter().find(|i| !gone.contains(i)) {
                    gone.push(oldest);
                }
            }
        }
        for i in gone {
            self.remove_slot(i);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let queue = if self.ghost_set.remove(&bucket) { Queue::Main } else { Queue::Small };
        let idx = self.slots.insert(Slot { entry, bucket, size, freq: Cell::new(0), queue, generation }) as u32;
        self.buckets.entry(bucket).or_default().push(idx);
        match queue {
            Queue::Small => {
                self.small.push_back((idx, generation));
                self.small_bytes += size;
            }
            Queue::Main => self.main.push_back((idx, generation)),
        }
        self.bytes += size;
        self.metrics.stored.set(self.metrics.stored.get() + 1);
        self.evict();
        self.compact_queues();
        self.publish();
        true
    }

    fn publish(&self) {
        self.metrics.bytes.set(self.bytes as u64);
        self.metrics.entries.set(self.slots.len() as u64);
    }

    fn remove_slot(&mut self, i: u32) -> Option<Slot> {
        let slot = self.slots.try_remove(i as usize)?;
        self.bytes -= slot.size;
        if slot.queue == Queue::Small {
            self.small_bytes -= slot.size;
        }
        if let Some(list) = self.buckets.get_mut(&slot.bucket) {
            list.retain(|&x| x != i);
            if list.is_empty() {
                self.buckets.remove(&slot.bucket);
            }
        }
        Some(slot)
    }

    fn live(&self, (i, generation): (u32, u64)) -> bool {
        self.slots.get(i as usize).is_some_and(|s| s.generation == generation)
    }

    /// S3-FIFO: evict from the small queue while it holds more than a tenth of the bytes (an
    /// entry used while there moves to main), else from main (a used entry gets another round).
    fn evict(&mut self) {
        let max = self.def.max_memory as usize;
        while self.bytes > max {
            let from_small = self.small_bytes > max / 10 || self.main.is_empty();
            if from_small {
                let Some(id) = self.small.pop_front() else { break };
                if !self.live(id) {
                    continue;
                }
                let (idx, _) = id;
                let used = self.slots[idx as usize].freq.get() > 0;
                if used {
                    let s = &mut self.slots[idx as usize];
                    s.queue = Queue::Main;
                    s.freq.set(0);
                    self.small_bytes -= s.size;
                    self.main.push_back(id);
                } else if let Some(slot) = self.remove_slot(idx) {
                    self.remember(slot.bucket);
                    self.metrics.evicted.set(self.metrics.evicted.get() + 1);
                }
            } else {
                let Some(id) = self.main.pop_front() else { break };
                if !self.live(id) {
                    continue;
                }
                let (idx, _) = id;
                let f = self.slots[idx as usize].freq.get();
                if f > 0 {
                    self.slots[idx as usize].freq.set(f - 1);
                    self.main.push_back(id);
                } else if self.remove_slot(idx).is_some() {
                    self.metrics.evicted.set(self.metrics.evicted.get() + 1);
                }
            }
        }
    }

    /// Keys evicted from the small queue, as many as the store holds entries (at least 1,024).
    fn remember(&mut self, bucket: u64) {
        if self.ghost_set.insert(bucket) {
            self.ghost.push_back(bucket);
        }
        let cap = self.slots.len().max(1024);
        while self.ghost.len() > cap {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }

    /// Queue places of removed entries are dropped lazily; when they outnumber the live ones
    /// the queues are rebuilt, so invalidations cannot grow them without bound.
    fn compact_queues(&mut self) {
        if self.small.len() + self.main.len() > 2 * self.slots.len() + 64 {
            let slots = &self.slots;
            let live = |&(i, g): &(u32, u64)| slots.get(i as usize).is_some_and(|s| s.generation == g);
            self.small.retain(live);
            self.main.retain(live);
        }
    }

    /// Removes every variant of a URL key; returns how many.
    pub fn invalidate(&mut self, bucket: u64) -> usize {
        let list = self.buckets.get(&bucket).cloned().unwrap_or_default();
        let n = list.len();
        for i in list {
            self.remove_slot(i);
        }
        self.compact_queues();
        self.publish();
        n
    }

    /// Removes the entries whose URL part matches: `exact` (host and path with query) or those
    /// whose path starts with `prefix` (any host when `host` is empty).
    pub fn purge(&mut self, host: &[u8], path: &[u8], prefix: bool) -> usize {
        let matching: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                let e = &s.entry;
                let host_ok = host.is_empty() || e.host().is_empty() || e.host().eq_ignore_ascii_case(host);
                let p = e.path();
                host_ok && if prefix { p.starts_with(path) } else { p == path }
            })
            .map(|(i, _)| i as u32)
            .collect();
        let n = matching.len();
        for i in matching {
            self.remove_slot(i);
        }
        self.compact_queues();
        self.publish();
        n
    }

    pub fn clear(&mut self) -> usize {
        let n = self.slots.len();
        self.buckets.clear();
        self.slots.clear();
        self.small.clear();
        self.main.clear();
        self.bytes = 0;
        self.small_bytes = 0;
        self.publish();
        n
    }

    /// Joins the fill under way for `key`, or starts one (the guard).
    pub fn fill(this: &Rc<RefCell<Store>>, key: u64) -> Result<FillGuard, Rc<Fill>> {
        let mut s = this.borrow_mut();
        // A fill that ended but is still listed (its guard could not reach the store) is replaced.
        if let Some(f) = s.fills.get(&key).filter(|f| !f.done.get()) {
            return Err(f.clone());
        }
        let fill = Rc::new(Fill::default());
        s.fills.insert(key, fill.clone());
        Ok(FillGuard { store: this.clone(), key, fill })
    }

    /// Changes the bound (a reload that keeps the cache with another `max_memory`).
    pub fn resize(&mut self, def: CacheDef) {
        self.def = def;
        self.evict();
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, body: usize) -> Rc<Entry> {
        Rc::new(Entry {
            url: url.as_bytes().into(),
            host_len: 0,
            secondary: 0,
            vary: Vec::new(),
            status: 200,
            fields: Vec::new(),
            head: Box::default(),
            body: vec![0; body].into(),
            times: Times { request_time: 0, response_time: 0, date_value: 0, age_value: 0 },
            lifetime: 60,
            cc: ResponseCc::default(),
            swr: 0,
            sie: 0,
        })
    }

    fn store(max: u64) -> Store {
        Store::new(CacheDef { name: "t".into(), max_memory: max, max_object: max / 4, max_variants: 4 }, Rc::new(CacheMetrics::default()))
    }

    #[test]
    fn bytes_stay_within_the_bound() {
        let mut s = store(1 << 20);
        for i in 0..10_000u64 {
            s.insert(i, entry(&format!("/x{i}"), 1000));
            assert!(s.bytes() <= 1 << 20);
        }
        assert!(s.len() > 500, "{} entries", s.len());
        assert!(s.small.len() + s.main.len() <= 2 * s.len() + 64);
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set() {
        let mut s = store(1 << 20);
        // 200 hot entries, used again and again, then a scan of 20,000 keys seen once.
        for i in 0..200u64 {
            s.insert(i, entry(&format!("/hot{i}"), 1000));
        }
        for round in 0..3 {
            for i in 0..200u64 {
                let e = s.variants(i).next().cloned();
                if let Some(e) = e {
                    s.touch(i, &e);
                } else if round > 0 {
                    s.insert(i, entry(&format!("/hot{i}"), 1000));
                }
            }
            for j in 0..20_000u64 {
                let k = 1_000_000 + round * 100_000 + j;
                s.insert(k, entry(&format!("/scan{k}"), 1000));
                if j % 100 == 0 {
                    for i in 0..200u64 {
                        if let Some(e) = s.variants(i).next().cloned() {
                            s.touch(i, &e);
                        }
                    }
                }
            }
        }
        let kept = (0..200u64).filter(|&i| s.variants(i).next().is_some()).count();
        assert!(kept >= 180, "{kept} of 200 hot entries survived the scans");
    }

    #[test]
    fn variants_replace_and_are_bounded() {
        let mut s = store(1 << 20);
        s.insert(1, entry("/a", 10));
        s.insert(1, entry("/a", 20));
        assert_eq!(s.variants(1).count(), 1);
        for k in 0..10u64 {
            let mut e = entry("/a", 10);
            Rc::get_mut(&mut e).unwrap().secondary = k + 1;
            s.insert(1, e);
        }
        assert_eq!(s.variants(1).count(), 4);
        assert_eq!(s.invalidate(1), 4);
        assert_eq!(s.len(), 0);
        assert_eq!(s.bytes(), 0);
    }
}

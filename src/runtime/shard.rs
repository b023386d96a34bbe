//! One shard's state, owned by one thread: its current `Generation`, buffers, ids, drain signal,
//! connection count and metrics. Shared with other threads only through `Global`: the connection
//! counters, the stop flag, the published config, and metric snapshots handed to the admin thread.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::drain::Drain;
use super::generation::{Generation, Published};
use super::park::Lot;
use crate::http::io::BufPool;
use crate::http::write::Ids;
use crate::observe::log::AccessLog;
use crate::observe::metrics::{ShardMetrics, Snapshot};

/// State shared by all shards (lock-free on the request path).
pub struct Global {
    /// Open client connections across shards (for `limits.max_connections`).
    pub conns: AtomicUsize,
    /// Set by the signal handler or `Gateway::shutdown`.
    pub stop: AtomicBool,
    /// Open connections per client address, for `security.max_connections_per_ip`. Counted
    /// whatever the cap, so a reload that sets or changes the cap finds exact counts.
    pub per_ip: dashmap::DashMap<IpAddr, u32>,
    /// Connections closed at once because their address was over its cap.
    pub refused_per_ip: AtomicUsize,
    /// The config shards should run; they pick up a new one on their next tick.
    published: Mutex<Arc<Published>>,
    published_id: AtomicU64,
    /// Listening sockets by configured address, one per shard, each taken by its shard.
    pub listeners: Mutex<Vec<ListenerSet>>,
    /// Shards serving (started and not draining).
    pub serving: AtomicUsize,
    /// Every shard has finished: the admin listener and other helpers end.
    pub finished: AtomicBool,
    pub shards: usize,
    snapshots: Snapshots,
    /// Cache purges from the admin listener, applied by each shard.
    pub purges: crate::cache::Purges,
}

/// The sockets of one configured listen address. A shard takes its own slot when its generation
/// lists the address and it has no listener there of this `version` (a reload that removes an
/// address and adds it back makes a new version).
pub struct ListenerSet {
    pub addr: SocketAddr,
    /// Connections on it speak TLS.
    pub tls: bool,
    pub version: u64,
    pub slots: Vec<Option<std::net::TcpListener>>,
}

/// Metric snapshots requested by the admin thread and answered by each shard on its tick.
struct Snapshots {
    wanted: AtomicU64,
    answers: Mutex<Vec<(u64, Snapshot)>>,
    ready: Condvar,
}

impl Global {
    pub fn new(first: Published, shards: usize, listeners: Vec<ListenerSet>) -> Global {
        Global {
            listeners: Mutex::new(listeners),
            conns: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            per_ip: dashmap::DashMap::new(),
            refused_per_ip: AtomicUsize::new(0),
            published_id: AtomicU64::new(first.id),
            published: Mutex::new(Arc::new(first)),
            serving: AtomicUsize::new(0),
            finished: AtomicBool::new(false),
            shards,
            purges: crate::cache::Purges::new(shards),
            snapshots: Snapshots {
                wanted: AtomicU64::new(0),
                answers: Mutex::new((0..shards).map(|_| (0, Snapshot::default())).collect()),
                ready: Condvar::new(),
            },
        }
    }

    pub fn published(&self) -> Arc<Published> {
        self.published.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn published_id(&self) -> u64 {
        self.published_id.load(Ordering::Acquire)
    }

    /// Makes `p` the config every shard switches to on its next tick.
    pub fn publish(&self, p: Published) {
        let id = p.id;
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
        self.published_id.store(id, Ordering::Release);
    }

    /// Counts a new connection from `ip`; false when that address is at `cap` (0 = no cap).
    pub fn admit_ip(&self, ip: IpAddr, cap: usize) -> bool {
        let mut n = self.per_ip.entry(ip).or_insert(0);
        if cap > 0 && *n as usize >= cap {
            drop(n);
            self.per_ip.remove_if(&ip, |_, v| *v == 0);
            self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *n += 1;
        true
    }

    pub fn release_ip(&self, ip: IpAddr) {
        if let Some(mut n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
        }
        self.per_ip.remove_if(&ip, |_, v| *v == 0);
    }

    /// Asks every shard for its metrics and waits up to `limit` for the answers. A shard that
    /// does not answer in time contributes its previous snapshot.
    pub fn collect(&self, limit: Duration) -> Vec<Snapshot> {
        let want = self.snapshots.wanted.fetch_add(1, Ordering::AcqRel) + 1;
        let answers = self.snapshots.answers.lock().unwrap_or_else(|e| e.into_inner());
        let (answers, _) = self
            .snapshots
            .ready
            .wait_timeout_while(answers, limit, |a| a.iter().any(|(seq, _)| *seq < want))
            .unwrap_or_else(|e| e.into_inner());
        answers.iter().map(|(_, s)| s.clone()).collect()
    }

    /// A shard answers a pending snapshot request, if any (called on its tick).
    fn answer_snapshot(&self, shard: &Shard) {
        let want = self.snapshots.wanted.load(Ordering::Acquire);
        if want == shard.answered.get() {
            return;
        }
        shard.answered.set(want);
        let snap = shard.metrics.snapshot(shard.conns.get() as u64, shard.lot.len() as u64, shard.bufs.released());
        let mut answers = self.snapshots.answers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = answers.get_mut(shard.id) {
            *slot = (want, snap);
        }
        self.snapshots.ready.notify_all();
    }
}

pub struct Shard {
    pub id: usize,
    generation: RefCell<Rc<Generation>>,
    /// Read and write buffers, each `max(read_buffer, max_head)` bytes of the first config.
    pub bufs: BufPool,
    pub ids: Ids,
    pub drain: Drain,
    /// Open client connections on this shard (parked ones included).
    pub conns: Cell<usize>,
    /// Idle plain connections without a task.
    pub(super) lot: Lot,
    pub global: Arc<Global>,
    pub metrics: ShardMetrics,
    pub log: AccessLog,
    /// The last snapshot request answered.
    answered: Cell<u64>,
}

impl Shard {
    pub fn new(id: usize, global: Arc<Global>, log: AccessLog) -> Shard {
        let p = global.published();
        let metrics = ShardMetrics::default();
        let generation = Generation::build(&p, None, &metrics);
        let size = p.cfg.server.read_buffer.max(p.cfg.limits.max_head);
        Shard {
            id,
            generation: RefCell::new(Rc::new(generation)),
            bufs: BufPool::new(size, p.cfg.server.pooled_buffers),
            ids: Ids::new(id),
            drain: Drain::default(),
            conns: Cell::new(0),
            lot: Lot::new(),
            global,
            metrics,
            log,
            answered: Cell::new(0),
        }
    }

    /// The generation new requests start on.
    pub fn generation(&self) -> Rc<Generation> {
        self.generation.borrow().clone()
    }

    /// On each tick: switches to a newly published config, answers a metrics request.
    /// Returns the new generation when it switched.
    pub fn tick(&self) -> Option<Rc<Generation>> {
        self.global.answer_snapshot(self);
        self.log.flush(&self.metrics);
        let current = self.generation();
        self.global.purges.apply(self.id, &current.caches);
        if self.global.published_id() == current.id {
            return None;
        }
        let p = self.global.published();
        let next = Rc::new(Generation::build(&p, Some(&current), &self.metrics));
        *self.generation.borrow_mut() = next.clone();
        Some(next)
    }
}

//! One shard's state: everything a request needs, owned by one thread. Shared-nothing except the
//! immutable config and the global connection counter.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use super::drain::Drain;
use crate::config::Config;
use crate::http::io::BufPool;
use crate::http::parse::HeadLimits;
use crate::http::write::Ids;
use crate::policy::jwt::TokenCache;
use crate::policy::ratelimit::Limiter;
use crate::router::Router;
use crate::upstream::Upstreams;

/// State shared by all shards: counters, the stop flag and the rate limiters (all lock-free on
/// the request path, so that limits are exact across shards).
#[derive(Default)]
pub struct Global {
    /// Open client connections across shards (for `limits.max_connections`).
    pub conns: AtomicUsize,
    /// Set by the signal handler or `Gateway::shutdown`.
    pub stop: AtomicBool,
    /// One per `[[rate_limits]]` entry, by index.
    pub limiters: Vec<Limiter>,
    /// Open connections per client address, for `security.max_connections_per_ip`.
    pub per_ip: dashmap::DashMap<IpAddr, u32>,
    /// Connections closed at once because their address was over its cap.
    pub refused_per_ip: AtomicUsize,
}

impl Global {
    pub fn new(cfg: &Config) -> Global {
        Global { limiters: cfg.rate_limits.iter().map(|d| Limiter::new(&d.limit)).collect(), ..Global::default() }
    }

    /// Counts a new connection from `ip`; false when that address is at `cap` (0 = no cap).
    pub fn admit_ip(&self, ip: IpAddr, cap: usize) -> bool {
        if cap == 0 {
            return true;
        }
        let mut n = self.per_ip.entry(ip).or_insert(0);
        if *n as usize >= cap {
            drop(n);
            self.per_ip.remove_if(&ip, |_, v| *v == 0);
            self.refused_per_ip.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        *n += 1;
        true
    }

    pub fn release_ip(&self, ip: IpAddr, cap: usize) {
        if cap == 0 {
            return;
        }
        if let Some(mut n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
        }
        self.per_ip.remove_if(&ip, |_, v| *v == 0);
    }
}

pub struct Shard {
    pub id: usize,
    pub cfg: Arc<Config>,
    pub router: Router,
    pub upstreams: Upstreams,
    /// Read and write buffers, each `max(read_buffer, max_head)` bytes.
    pub bufs: BufPool,
    pub ids: Ids,
    pub drain: Drain,
    /// Open client connections on this shard.
    pub conns: Cell<usize>,
    pub head_limits: HeadLimits,
    pub global: Arc<Global>,
    /// Verified JWTs, one cache per `[[jwt]]` provider, by index.
    pub token_caches: Vec<RefCell<TokenCache>>,
}

impl Shard {
    pub fn new(id: usize, cfg: Arc<Config>, global: Arc<Global>) -> Shard {
        let size = cfg.server.read_buffer.max(cfg.limits.max_head);
        Shard {
            id,
            router: Router::new(&cfg.routes),
            upstreams: Upstreams::new(&cfg),
            bufs: BufPool::new(size, cfg.server.pooled_buffers),
            ids: Ids::new(id),
            drain: Drain::default(),
            conns: Cell::new(0),
            head_limits: HeadLimits {
                max_head: cfg.limits.max_head,
                max_target: cfg.limits.max_target,
                max_headers: cfg.limits.max_headers,
            },
            token_caches: cfg.jwt.iter().map(|p| RefCell::new(p.verifier.0.token_cache(p.cache_size))).collect(),
            cfg,
            global,
        }
    }
}

//! One shard's state: everything a request needs, owned by one thread. Shared-nothing except the
//! immutable config and the global connection counter.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use super::drain::Drain;
use crate::config::Config;
use crate::http::io::BufPool;
use crate::http::parse::HeadLimits;
use crate::http::write::Ids;
use crate::router::Router;
use crate::upstream::Upstreams;

/// State shared by all shards: counters and the stop flag, all atomics.
#[derive(Default)]
pub struct Global {
    /// Open client connections across shards (for `limits.max_connections`).
    pub conns: AtomicUsize,
    /// Set by the signal handler or `Gateway::shutdown`.
    pub stop: AtomicBool,
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
            cfg,
            global,
        }
    }
}

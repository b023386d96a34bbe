//! Upstream connections for one shard: per service a round-robin set of endpoints (and the order
//! one request tries them in, `Attempts`), per endpoint a LIFO pool of idle keep-alive
//! connections. Never shared across shards, so no locks.
//! A pooled connection is reused only if it is still open and has no unread bytes.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::config::Config;
use crate::error::ProxyError;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

struct Endpoint {
    addr: SocketAddr,
    idle: RefCell<Vec<Idle>>,
}

struct Service {
    endpoints: Vec<Endpoint>,
    next: Cell<usize>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

pub struct Upstreams {
    services: Vec<Service>,
    idle_timeout: Duration,
    max_idle: usize,
}

/// The endpoints one request tries, in order: a round-robin start, then each following endpoint
/// once. Walking on from the start (rather than asking the shared counter again, which concurrent
/// requests move) means a retry never returns to an endpoint this request already tried while
/// another exists. Once all were tried, the walk wraps around.
pub struct Attempts {
    service: usize,
    first: usize,
    made: usize,
    count: usize,
}

impl Attempts {
    pub fn service(&self) -> usize {
        self.service
    }

    /// The endpoint for the next attempt.
    pub fn next_endpoint(&mut self) -> usize {
        let ep = (self.first + self.made) % self.count;
        self.made += 1;
        ep
    }

    /// Endpoints not yet tried.
    pub fn untried(&self) -> usize {
        self.count.saturating_sub(self.made)
    }
}

/// A connection in use, and where it came from.
pub struct UpConn {
    pub stream: TcpStream,
    pub service: usize,
    pub endpoint: usize,
    /// Taken from the pool (it may have gone stale since).
    pub reused: bool,
}

impl Upstreams {
    pub fn new(cfg: &Config) -> Self {
        Upstreams {
            services: cfg
                .services
                .iter()
                .map(|s| Service {
                    endpoints: s
                        .upstreams
                        .iter()
                        .map(|&addr| Endpoint { addr, idle: RefCell::new(Vec::new()) })
                        .collect(),
                    next: Cell::new(0),
                    connect_timeout: s.connect_timeout,
                    response_timeout: s.response_timeout,
                })
                .collect(),
            idle_timeout: cfg.upstream.idle_timeout,
            max_idle: cfg.upstream.max_idle_per_endpoint,
        }
    }

    pub fn response_timeout(&self, service: usize) -> Duration {
        self.services[service].response_timeout
    }

    /// How long after a request's first attempt another may start: the service's connect plus
    /// response timeout.
    pub fn retry_window(&self, service: usize) -> Duration {
        let s = &self.services[service];
        s.connect_timeout + s.response_timeout
    }

    /// The endpoints one request may try, starting at the service's next in round-robin order.
    pub fn attempts(&self, service: usize) -> Attempts {
        let s = &self.services[service];
        let first = s.next.get();
        s.next.set(first.wrapping_add(1));
        Attempts { service, first: first % s.endpoints.len(), made: 0, count: s.endpoints.len() }
    }

    /// An idle pooled connection to this endpoint that is still usable, if any.
    pub fn checkout(&self, service: usize, endpoint: usize) -> Option<UpConn> {
        let ep = &self.services[service].endpoints[endpoint];
        let mut idle = ep.idle.borrow_mut();
        let now = Instant::now();
        while let Some(c) = idle.pop() {
            if now.duration_since(c.since) < self.idle_timeout && quiet(&c.stream) {
                return Some(UpConn { stream: c.stream, service, endpoint, reused: true });
            }
        }
        None
    }

    /// Opens a new connection to this endpoint.
    pub async fn connect(&self, service: usize, endpoint: usize) -> Result<UpConn, ProxyError> {
        let s = &self.services[service];
        let addr = s.endpoints[endpoint].addr;
        match monoio::time::timeout(s.connect_timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(UpConn { stream, service, endpoint, reused: false })
            }
            Ok(Err(_)) => Err(ProxyError::ConnectFailed),
            Err(_) => Err(ProxyError::ConnectTimeout),
        }
    }

    /// Returns a connection whose exchange finished cleanly.
    pub fn checkin(&self, conn: UpConn) {
        let ep = &self.services[conn.service].endpoints[conn.endpoint];
        let mut idle = ep.idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push(Idle { stream: conn.stream, since: Instant::now() });
        }
    }

    /// Drops idle connections past their idle timeout or closed by the upstream.
    pub fn sweep(&self) {
        let now = Instant::now();
        for s in &self.services {
            for ep in &s.endpoints {
                ep.idle.borrow_mut().retain(|c| now.duration_since(c.since) < self.idle_timeout && quiet(&c.stream));
            }
        }
    }

    pub fn idle_count(&self) -> usize {
        self.services.iter().flat_map(|s| &s.endpoints).map(|e| e.idle.borrow().len()).sum()
    }
}

/// True when an idle connection has nothing to read and is not closed: a peek that would block.
/// Anything readable on an idle upstream connection (EOF, a reset, stray bytes) makes it unusable.
fn quiet(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: `b` is a valid writable buffer of length 1 for the duration of the call, and the
    // fd is owned by `stream`, which outlives the call. MSG_PEEK leaves the socket unchanged.
    let n = unsafe {
        libc::recv(stream.as_raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    n < 0 && matches!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN))
}

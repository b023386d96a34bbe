//! Shards: one monoio runtime per worker thread (pinned to a core when asked), each with its own
//! SO_REUSEPORT listeners, router, upstream pools and buffers. Also start-up, the accept loops and
//! graceful shutdown.

pub mod conn;
pub mod drain;
pub mod shard;

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use monoio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, DriverChoice};
use shard::{Global, Shard};

/// The io driver actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// A running gateway: its bound addresses and its shard threads.
pub struct Gateway {
    pub addrs: Vec<SocketAddr>,
    pub driver: Driver,
    global: Arc<Global>,
    threads: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds every listener (port 0 is resolved once and shared by all shards) and starts shards.
    pub fn start(cfg: Config) -> io::Result<Gateway> {
        let cfg = Arc::new(cfg);
        let driver = match cfg.server.driver {
            DriverChoice::Epoll => Driver::Epoll,
            DriverChoice::IoUring => Driver::IoUring,
            DriverChoice::Auto if monoio::utils::detect_uring() => Driver::IoUring,
            DriverChoice::Auto => Driver::Epoll,
        };
        let workers = cfg.server.workers;
        // listeners[shard][i] for listen address i.
        let mut listeners: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for &want in &cfg.server.listen {
            let mut addr = want;
            for shard_listeners in listeners.iter_mut() {
                let l = bind(addr, cfg.server.backlog)?;
                addr = l.local_addr()?;
                shard_listeners.push(l);
            }
            addrs.push(addr);
        }
        let cores = if cfg.server.pin_cores { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let global = Arc::new(Global::new(&cfg));
        let mut threads = Vec::new();
        for (id, ls) in listeners.into_iter().enumerate() {
            let cfg = cfg.clone();
            let global = global.clone();
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let t = std::thread::Builder::new().name(format!("ringgate-{id}")).spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let entries = cfg.server.uring_entries;
                let shard = Rc::new(Shard::new(id, cfg, global));
                let result = match driver {
                    Driver::IoUring => {
                        let build = |tuned| {
                            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                                .uring_builder(uring_builder(tuned))
                                .with_entries(entries)
                                .enable_timer()
                                .build()
                        };
                        build(true).or_else(|_| build(false)).map(|mut rt| rt.block_on(run_shard(shard, ls)))
                    }
                    Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(run_shard(shard, ls))),
                };
                if let Err(e) = result {
                    tracing::error!(shard = id, error = %e, "could not start the shard runtime");
                }
            })?;
            threads.push(t);
        }
        Ok(Gateway { addrs, driver, global, threads })
    }

    /// Stops accepting and lets shards drain in-flight requests (up to `timeouts.drain`).
    pub fn shutdown(&self) {
        self.stopper().stop();
    }

    /// A handle that can stop the gateway from another thread (e.g. a signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.global.clone())
    }

    /// Waits for every shard to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    pub fn open_connections(&self) -> usize {
        self.global.conns.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because their client address was at its cap.
    pub fn refused_per_ip(&self) -> usize {
        self.global.refused_per_ip.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct Stopper(Arc<Global>);

impl Stopper {
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// io_uring setup flags: each shard thread is the only submitter of its ring
/// (SINGLE_ISSUER), and completion work runs when the shard asks for events instead of
/// interrupting it (COOP_TASKRUN, DEFER_TASKRUN; Linux 6.1+). Older kernels refuse these flags,
/// and the shard then builds a plain ring.
fn uring_builder(tuned: bool) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    if tuned {
        b.setup_coop_taskrun().setup_single_issuer().setup_defer_taskrun();
    }
    b
}

fn bind(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

async fn run_shard(shard: Rc<Shard>, listeners: Vec<std::net::TcpListener>) {
    for l in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => {
                monoio::spawn(accept_loop(shard.clone(), l));
            }
            Err(e) => tracing::error!(shard = shard.id, error = %e, "cannot use listener"),
        }
    }
    monoio::spawn(housekeeping(shard.clone()));
    shard.drain.wait().await;
    // Drain: listeners are closed; wait for in-flight connections to finish, bounded.
    let deadline = Instant::now() + shard.cfg.timeouts.drain;
    while shard.conns.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if shard.conns.get() > 0 {
        tracing::warn!(shard = shard.id, open = shard.conns.get(), "drain timeout; closing remaining connections");
    }
}

/// Every 50 ms: watches the stop flag; every 250 ms: expires idle and header-wait deadlines;
/// every second: sweeps idle upstream connections.
async fn housekeeping(shard: Rc<Shard>) {
    let mut ticks = 0u32;
    loop {
        monoio::time::sleep(Duration::from_millis(50)).await;
        if shard.global.stop.load(Ordering::Relaxed) && !shard.drain.is_draining() {
            shard.drain.start(Instant::now() + shard.cfg.timeouts.drain_grace);
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(5) || shard.drain.is_draining() {
            shard.drain.tick(Instant::now());
        }
        if ticks.is_multiple_of(20) {
            shard.upstreams.sweep();
        }
    }
}

/// Counts a connection on its shard, globally and per client address for as long as it lives.
struct ConnGuard(Rc<Shard>, std::net::IpAddr);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.conns.set(self.0.conns.get() - 1);
        self.0.global.conns.fetch_sub(1, Ordering::Relaxed);
        self.0.global.release_ip(self.1, self.0.cfg.security.max_connections_per_ip);
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let max = shard.cfg.limits.max_connections;
    loop {
        // At the connection limit, stop accepting (the kernel backlog holds new clients) rather
        // than accept-and-close; check again shortly.
        while shard.global.conns.load(Ordering::Relaxed) >= max {
            monoio::select! {
                _ = monoio::time::sleep(Duration::from_millis(10)) => {}
                _ = shard.drain.wait() => return accept_backlog(&shard, &listener),
            }
        }
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = shard.drain.wait() => return accept_backlog(&shard, &listener),
        };
        match accepted {
            Ok((stream, peer)) => spawn_conn(&shard, stream, peer),
            Err(e) if is_resource_exhaustion(&e) => {
                // Out of file descriptors or memory: accept would fail again at once, so wait
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed for lack of resources; pausing 100ms");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
}

/// On drain, before the listener closes: takes the connections whose handshake already
/// completed (closing the listener would reset them, and their clients may already have sent a
/// request). They are served like any other during the drain grace, with `Connection: close`.
/// Nothing that connects after this point is accepted.
fn accept_backlog(shard: &Rc<Shard>, listener: &TcpListener) {
    // SAFETY: the descriptor belongs to `listener`, which outlives this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(listener)) };
    let sock = socket2::SockRef::from(&fd);
    let max = shard.cfg.limits.max_connections;
    while shard.global.conns.load(Ordering::Relaxed) < max {
        // The listener is non-blocking: WouldBlock ends the backlog.
        let Ok((s, addr)) = sock.accept() else { break };
        let Some(peer) = addr.as_socket() else { continue };
        if s.set_nonblocking(true).is_err() {
            continue;
        }
        match monoio::net::TcpStream::from_std(std::net::TcpStream::from(s)) {
            Ok(stream) => spawn_conn(shard, stream, peer),
            Err(e) => tracing::debug!(error = %e, "could not serve a connection from the backlog"),
        }
    }
}

/// Counts a new connection and serves it on its own task.
fn spawn_conn(shard: &Rc<Shard>, stream: monoio::net::TcpStream, peer: SocketAddr) {
    // Over its per-address cap: closed at once (dropping the stream), and counted.
    if !shard.global.admit_ip(peer.ip(), shard.cfg.security.max_connections_per_ip) {
        return;
    }
    shard.conns.set(shard.conns.get() + 1);
    shard.global.conns.fetch_add(1, Ordering::Relaxed);
    let guard = ConnGuard(shard.clone(), peer.ip());
    monoio::spawn(async move {
        let shard = guard.0.clone();
        // A panic while serving one connection closes that connection only.
        if AssertUnwindSafe(conn::serve(shard, stream, peer)).catch_unwind().await.is_err() {
            tracing::error!("panic while serving a connection; it was closed");
        }
        drop(guard);
    });
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

//! Shards: one monoio runtime per worker thread (pinned to a core when asked), each with its own
//! SO_REUSEPORT listeners, router, upstream pools and buffers. Also start-up, the accept loops and
//! graceful shutdown.

mod conn;
mod drain;
pub(crate) mod generation;
mod park;
pub(crate) mod reload;
pub(crate) mod shard;

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use monoio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Config, DriverChoice};
use crate::observe::admin;
use crate::observe::log::{self, AccessLog, Sink};
use drain::Drain;
use generation::Published;
use reload::Reloader;
use shard::{Global, ListenerSet, Shard};

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
    /// The plain HTTP listeners' addresses (port 0 resolved), in `server.listen` order.
    pub addrs: Vec<SocketAddr>,
    /// The TLS listeners' addresses, in `tls.listen` order.
    pub tls_addrs: Vec<SocketAddr>,
    /// The admin listener's address, when `[admin] listen` is set.
    pub admin_addr: Option<SocketAddr>,
    pub driver: Driver,
    global: Arc<Global>,
    reloader: Arc<Reloader>,
    sink: Arc<Sink>,
    threads: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Starts from a parsed config; reloads then need `reload_with` (there is no file to re-read).
    pub fn start(cfg: Config) -> io::Result<Gateway> {
        Gateway::start_from(cfg, None)
    }

    /// Binds every listener (port 0 is resolved once and shared by all shards), starts the
    /// access-log writer, the admin listener and the shards. `path` is the file SIGHUP and
    /// `POST /reload` re-read.
    pub fn start_from(cfg: Config, path: Option<PathBuf>) -> io::Result<Gateway> {
        let driver = match cfg.server.driver {
            DriverChoice::Epoll => Driver::Epoll,
            DriverChoice::IoUring => Driver::IoUring,
            DriverChoice::Auto if monoio::utils::detect_uring() => Driver::IoUring,
            DriverChoice::Auto => Driver::Epoll,
        };
        let workers = cfg.server.workers;
        // One socket per shard for each listen address; each shard takes its own.
        let mut listeners = Vec::new();
        let (mut addrs, mut tls_addrs) = (Vec::new(), Vec::new());
        for (want, tls) in cfg.listeners() {
            let sockets = bind_all(want, workers, cfg.server.backlog).map_err(io::Error::other)?;
            if tls { &mut tls_addrs } else { &mut addrs }.push(sockets[0].local_addr()?);
            listeners.push(ListenerSet { addr: want, tls, version: 1, slots: sockets.into_iter().map(Some).collect() });
        }
        let (sink, log_tx) = log::start_writer(&cfg.log.access, workers)
            .map_err(|e| io::Error::other(format!("cannot open the access log {:?}: {e}", cfg.log.access)))?;
        let admin = match cfg.admin.listen {
            Some(a) => Some(admin::bind(a).map_err(|e| io::Error::new(e.kind(), format!("admin listener {a}: {e}")))?),
            None => None,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
        let cores = if cfg.server.pin_cores { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let entries = cfg.server.uring_entries;
        let backlog = cfg.server.backlog;
        let global = Arc::new(Global::new(Published::new(1, Arc::new(cfg), None), workers, listeners));
        let reloader = Arc::new(Reloader::new(path, global.clone(), sink.clone(), backlog));
        if let Some(l) = admin {
            admin::serve(l, reloader.clone());
        }
        reload::start_resolver(reloader.clone());
        let mut threads = Vec::new();
        for id in 0..workers {
            let global = global.clone();
            let log_tx = log_tx.clone();
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let t = std::thread::Builder::new().name(format!("ringgate-{id}")).spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let shard = Rc::new(Shard::new(id, global, AccessLog::new(log_tx)));
                let result = match driver {
                    Driver::IoUring => {
                        let build = |tuned| {
                            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                                .uring_builder(uring_builder(tuned))
                                .with_entries(entries)
                                .enable_timer()
                                .build()
                        };
                        build(true).or_else(|_| build(false)).map(|mut rt| rt.block_on(run_shard(shard)))
                    }
                    Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(run_shard(shard))),
                };
                if let Err(e) = result {
                    tracing::error!(shard = id, error = %e, "could not start the shard runtime");
                }
            })?;
            threads.push(t);
        }
        Ok(Gateway { addrs, tls_addrs, admin_addr, driver, global, reloader, sink, threads })
    }

    /// Stops accepting and lets shards drain in-flight requests (up to `timeouts.drain`).
    pub fn shutdown(&self) {
        self.stopper().stop();
    }

    /// A handle that can stop the gateway from another thread (e.g. a signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.global.clone())
    }

    /// The reload entry point (SIGHUP, `POST /reload`).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Applies `cfg` as a reload; every shard switches within one tick.
    pub fn reload_with(&self, cfg: Config) -> Result<u64, Vec<String>> {
        self.reloader.reload_with(cfg)
    }

    /// The generation every shard has switched to, once they all have.
    pub fn generation(&self) -> u64 {
        self.global.published_id()
    }

    /// Makes the access-log writer reopen its file (SIGUSR1, for logrotate).
    pub fn reopen_logs(&self) {
        self.sink.reopen();
    }

    /// A handle for reopening the access log from another thread.
    pub fn log_reopener(&self) -> Arc<Sink> {
        self.sink.clone()
    }

    /// Waits for every shard to finish, then ends the admin listener (so nothing it holds
    /// outlives the gateway: its socket, the shared state, the health probers).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        self.global.finished.store(true, Ordering::Release);
        if let Some(a) = self.admin_addr {
            let _ = std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1));
        }
    }

    pub fn open_connections(&self) -> usize {
        self.global.conns.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because their client address was at its cap.
    pub fn refused_per_ip(&self) -> usize {
        self.global.refused_per_ip.load(Ordering::Relaxed)
    }

    /// Open connections counted for one client address.
    pub fn connections_from(&self, ip: std::net::IpAddr) -> u32 {
        self.global.per_ip.get(&ip).map_or(0, |n| *n)
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

/// One listening socket per shard on `want` (port 0: the port the first one gets). Refuses an
/// address another process already listens on: SO_REUSEPORT would otherwise share it silently
/// and split the traffic between the two.
pub(crate) fn bind_all(want: SocketAddr, shards: usize, backlog: i32) -> Result<Vec<std::net::TcpListener>, String> {
    let fail = |e: io::Error| {
        if e.kind() == io::ErrorKind::AddrInUse {
            format!("{want}: address already in use by another process")
        } else {
            format!("{want}: {e}")
        }
    };
    if want.port() != 0 {
        // A socket without SO_REUSEPORT cannot bind where anything listens.
        let probe = Socket::new(Domain::for_address(want), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
        probe.set_reuse_address(true).map_err(fail)?;
        if want.is_ipv6() {
            probe.set_only_v6(true).map_err(fail)?;
        }
        probe.bind(&want.into()).map_err(fail)?;
    }
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(shards);
    let mut addr = want;
    for _ in 0..shards {
        let l = bind(addr, backlog).map_err(fail)?;
        addr = l.local_addr().map_err(fail)?;
        out.push(l);
    }
    Ok(out)
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

/// The shard's open listeners: configured address, registry version, and the signal that closes
/// it.
type Listeners = Rc<RefCell<Vec<((SocketAddr, bool), u64, Rc<Drain>)>>>;

async fn run_shard(shard: Rc<Shard>) {
    let open: Listeners = Rc::default();
    reconcile_listeners(&shard, &open);
    shard.global.serving.fetch_add(1, Ordering::Relaxed);
    monoio::spawn(housekeeping(shard.clone(), open.clone()));
    monoio::spawn(watch_parked(shard.clone()));
    shard.drain.wait().await;
    shard.global.serving.fetch_sub(1, Ordering::Relaxed);
    // Drain: listeners are closed; wait for in-flight connections to finish, bounded.
    let deadline = Instant::now() + shard.generation().cfg.timeouts.drain;
    while shard.conns.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if shard.conns.get() > 0 {
        tracing::warn!(shard = shard.id, open = shard.conns.get(), "drain timeout; closing remaining connections");
    }
    // Parked connections hold their shard (through their guards): close them.
    shard.lot.clear();
    shard.log.flush(&shard.metrics);
}

/// Makes the shard's listeners match its generation: closes those the config no longer lists (or
/// that a reload replaced), and takes this shard's socket of each listed address it lacks. Keyed
/// by address and version in the registry, so a shard that skipped a generation still ends up
/// with exactly the listeners of the one it runs.
fn reconcile_listeners(shard: &Rc<Shard>, open: &Listeners) {
    let gen = shard.generation();
    let listed = gen.cfg.listeners();
    let mut reg = shard.global.listeners.lock().unwrap_or_else(|e| e.into_inner());
    open.borrow_mut().retain(|(key, version, stop)| {
        let current = listed.contains(key) && reg.iter().any(|s| (s.addr, s.tls) == *key && s.version == *version);
        if !current {
            stop.start(Instant::now());
        }
        current
    });
    for set in reg.iter_mut().filter(|s| listed.contains(&(s.addr, s.tls))) {
        if open.borrow().iter().any(|(k, v, _)| *k == (set.addr, set.tls) && *v == set.version) {
            continue;
        }
        let Some(l) = set.slots.get_mut(shard.id).and_then(Option::take) else { continue };
        match TcpListener::from_std(l) {
            Ok(l) => {
                let stop = Rc::new(Drain::default());
                open.borrow_mut().push(((set.addr, set.tls), set.version, stop.clone()));
                monoio::spawn(accept_loop(shard.clone(), l, stop, set.tls));
            }
            Err(e) => tracing::error!(shard = shard.id, addr = %set.addr, error = %e, "cannot use listener"),
        }
    }
}

/// Every 50 ms: watches the stop flag, switches to a newly published config (opening and
/// closing listeners as it says), answers metric requests, flushes the access log, ends idle
/// waits past their deadline (parking quiet connections, closing expired ones); every second:
/// sweeps idle upstream connections.
async fn housekeeping(shard: Rc<Shard>, open: Listeners) {
    let mut ticks = 0u32;
    let mut burst = Burst::default();
    loop {
        monoio::time::sleep(Duration::from_millis(50)).await;
        let gen = shard.generation();
        if shard.global.stop.load(Ordering::Relaxed) && !shard.drain.is_draining() {
            shard.drain.start(Instant::now() + gen.cfg.timeouts.drain_grace);
        }
        if shard.tick().is_some() && !shard.drain.is_draining() {
            reconcile_listeners(&shard, &open);
        }
        ticks = ticks.wrapping_add(1);
        // Cheap at any connection count: quiet connections leave these waits for the lot.
        let now = Instant::now();
        shard.drain.tick(now);
        expire_parked(&shard, now);
        if ticks.is_multiple_of(20) {
            shard.generation().upstreams.sweep();
        }
        if ticks.is_multiple_of(5) {
            burst.watch(&shard);
        }
    }
}

/// Gives the memory of a burst back to the OS once the burst is over. A burst of requests (many
/// connections opened at once, say) leaves what its requests used (pool buffers beyond
/// `server.pooled_buffers`, request futures) in the allocator's free lists, and glibc keeps such
/// pages for the process. When the shard's pool had to free buffers and then, for a quarter
/// second, did not, free pages are returned with `malloc_trim`. It walks every arena, so the
/// process trims at most once a second, whichever shard asks.
#[derive(Default)]
struct Burst {
    released: u64,
    pending: bool,
}

impl Burst {
    fn watch(&mut self, shard: &Shard) {
        let released = shard.bufs.released();
        if released != self.released {
            self.released = released;
            self.pending = true;
            return;
        }
        if self.pending && trim_heap() {
            self.pending = false;
            let m = &shard.metrics.heap_trims;
            m.set(m.get() + 1);
        }
    }
}

/// Returns free heap pages to the OS, unless another shard did within the last second.
fn trim_heap() -> bool {
    use std::sync::atomic::AtomicU64;
    use std::sync::OnceLock;
    static BASE: OnceLock<Instant> = OnceLock::new();
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now = BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1_000;
    let last = LAST_MS.load(Ordering::Relaxed);
    if now < last + 1_000 || LAST_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return false;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: takes no pointers; glibc returns whole free pages and keeps everything in use.
    unsafe {
        libc::malloc_trim(0);
    }
    true
}

/// Counts a connection on its shard, globally and per client address for as long as it lives.
struct ConnGuard(Rc<Shard>, std::net::IpAddr);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.conns.set(self.0.conns.get() - 1);
        self.0.global.conns.fetch_sub(1, Ordering::Relaxed);
        self.0.global.release_ip(self.1);
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, stop: Rc<Drain>, tls: bool) {
    loop {
        // At the connection limit, stop accepting (the kernel backlog holds new clients) rather
        // than accept-and-close; check again shortly.
        let max = shard.generation().cfg.limits.max_connections;
        if shard.global.conns.load(Ordering::Relaxed) >= max {
            let m = &shard.metrics.conns.accept_paused;
            m.set(m.get() + 1);
        }
        while shard.global.conns.load(Ordering::Relaxed) >= max {
            monoio::select! {
                _ = monoio::time::sleep(Duration::from_millis(10)) => {}
                _ = shard.drain.wait() => return accept_backlog(&shard, &listener, tls),
                _ = stop.wait() => return accept_backlog(&shard, &listener, tls),
            }
        }
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = shard.drain.wait() => return accept_backlog(&shard, &listener, tls),
            _ = stop.wait() => return accept_backlog(&shard, &listener, tls),
        };
        match accepted {
            Ok((stream, peer)) => spawn_conn(&shard, stream, peer, tls),
            Err(e) if is_resource_exhaustion(&e) => {
                // Out of file descriptors or memory: accept would fail again at once, so wait
                // instead of spinning.
                let m = &shard.metrics.conns.accept_errors_fd;
                m.set(m.get() + 1);
                tracing::warn!(error = %e, "accept failed for lack of resources; pausing 100ms");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
}

/// On drain (or when a reload removes the listener), before the listener closes: takes the
/// connections whose handshake already completed (closing the listener would reset them, and
/// their clients may already have sent a request). They are served like any other, during the
/// drain grace with `Connection: close`. Nothing that connects after this point is accepted.
fn accept_backlog(shard: &Rc<Shard>, listener: &TcpListener, tls: bool) {
    // SAFETY: the descriptor belongs to `listener`, which outlives this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(listener)) };
    let sock = socket2::SockRef::from(&fd);
    let max = shard.generation().cfg.limits.max_connections;
    while shard.global.conns.load(Ordering::Relaxed) < max {
        // The listener is non-blocking: WouldBlock ends the backlog.
        let Ok((s, addr)) = sock.accept() else { break };
        let Some(peer) = addr.as_socket() else { continue };
        if s.set_nonblocking(true).is_err() {
            continue;
        }
        match monoio::net::TcpStream::from_std(std::net::TcpStream::from(s)) {
            Ok(stream) => spawn_conn(shard, stream, peer, tls),
            Err(e) => tracing::debug!(error = %e, "could not serve a connection from the backlog"),
        }
    }
}

/// Counts a new connection and serves it on its own task.
fn spawn_conn(shard: &Rc<Shard>, stream: monoio::net::TcpStream, peer: SocketAddr, tls: bool) {
    // Over its per-address cap: closed at once (dropping the stream), and counted.
    let cap = shard.generation().cfg.security.max_connections_per_ip;
    if !shard.global.admit_ip(peer.ip(), cap) {
        let m = &shard.metrics.conns.refused_per_ip;
        m.set(m.get() + 1);
        return;
    }
    let m = &shard.metrics.conns.accepted;
    m.set(m.get() + 1);
    shard.conns.set(shard.conns.get() + 1);
    shard.global.conns.fetch_add(1, Ordering::Relaxed);
    let guard = ConnGuard(shard.clone(), peer.ip());
    // Two tasks of their own sizes: one future holding either would give every plain
    // connection the size of a TLS one (its rustls state), idle or not.
    if tls {
        monoio::spawn(guarded(guard, conn::serve_tls(shard.clone(), stream, peer).map(|()| None)));
    } else {
        monoio::spawn(guarded(guard, conn::serve(shard.clone(), stream, peer.ip(), conn::Start::New)));
    }
}

/// Serves one connection; a panic while serving it closes that connection only. The guard
/// uncounts it when it ends either way (or when the task is dropped unfinished), unless it ends
/// by parking: then the guard goes to the lot with the socket. A combinator, not an `async fn`:
/// an `async fn` would hold `serve` twice, as its argument and inside the `catch_unwind` future
/// it was moved into, doubling every connection's task.
fn guarded(guard: ConnGuard, serve: impl std::future::Future<Output = conn::Parking>) -> impl std::future::Future<Output = ()> {
    AssertUnwindSafe(serve).catch_unwind().map(move |r| match r {
        Ok(Some((stream, deadline))) => park(stream, guard, deadline),
        Ok(None) => drop(guard),
        Err(_) => {
            tracing::error!("panic while serving a connection; it was closed");
            drop(guard);
        }
    })
}

/// Moves a quiet connection into its shard's lot. Its socket is kept as a second descriptor
/// (`dup`): an io_uring poll just cancelled may still hold the stream's own until it completes.
fn park(stream: monoio::net::TcpStream, guard: ConnGuard, deadline: Instant) {
    // SAFETY: the descriptor belongs to `stream`, open for this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&stream)) };
    let fd = match fd.try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            // Closed, as an idle connection past its wait would be (nothing was waiting on it).
            tracing::debug!(error = %e, "could not park a quiet connection; closed");
            return;
        }
    };
    drop(stream);
    let shard = guard.0.clone();
    if let Err(back) = shard.lot.park(fd, guard, deadline) {
        tracing::debug!("could not register a quiet connection with the parking lot; closed");
        drop(back);
        return;
    }
    let m = &shard.metrics.conns.parked;
    m.set(m.get() + 1);
}

/// Gives a connection out of the lot a task again.
fn resume(shard: &Rc<Shard>, p: park::Unparked) {
    let ip = p.guard.1;
    match monoio::net::TcpStream::from_std(std::net::TcpStream::from(p.fd)) {
        Ok(stream) => {
            monoio::spawn(guarded(p.guard, conn::serve(shard.clone(), stream, ip, conn::Start::Woken)));
        }
        Err(e) => tracing::debug!(error = %e, "could not resume a parked connection"),
    }
}

/// The shard's parked connections: wakes those that became readable. Runs for the shard's life.
async fn watch_parked(shard: Rc<Shard>) {
    let Ok(fd) = shard.lot.watch_fd() else { return };
    // monoio waits for readiness only on its own socket types, so the epoll instance is wrapped
    // in one for `readable` alone; nothing is ever read from or written to it.
    let Ok(poll) = monoio::net::TcpStream::from_std(std::net::TcpStream::from(fd)) else {
        tracing::warn!("cannot wait on the parking lot; idle connections keep their tasks");
        return;
    };
    let mut woken = Vec::new();
    loop {
        if let Err(e) = poll.readable(false).await {
            tracing::warn!(error = %e, "waiting on the parking lot failed; retrying");
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        shard.lot.take_ready(&mut woken);
        for p in woken.drain(..) {
            resume(&shard, p);
        }
    }
}

/// On the housekeeping tick: parked connections past their deadline (or the drain grace) are
/// closed; one that got bytes in the meantime is served instead.
fn expire_parked(shard: &Rc<Shard>, now: Instant) {
    let mut expired = Vec::new();
    shard.lot.take_expired(now, shard.drain.grace_end(), &mut expired);
    for p in expired {
        if crate::http::io::peek(&p.fd) == crate::http::io::Peek::Bytes {
            resume(shard, p);
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// `PING`s every `[cluster] redis` node once (blocking, 1 s each), for `ringgate check --connect`:
/// each address (password redacted) with the outcome.
pub fn ping_redis(cfg: &crate::config::Config) -> Vec<(String, Result<(), String>)> {
    let Some(cluster) = &cfg.cluster else { return Vec::new() };
    cluster.redis.iter().map(|a| (a.to_string(), crate::cluster::ping(a, std::time::Duration::from_secs(1)))).collect()
}

//! A shard's pipelined Redis client. One connection per Redis node, owned by one driver task on
//! the shard; every request of the shard that needs the node puts its command on the node's queue,
//! and the driver writes all queued commands in one write and reads their replies in order (RESP
//! replies come back in command order), so the decisions of all in-flight requests share round
//! trips. Nothing here is shared with other shards: no lock, no atomic.
//!
//! A caller waits for its reply at most until its deadline, then gives up; the driver skips calls
//! whose caller has given up. A node that cannot be reached is marked down for a backoff (50 ms,
//! doubling to 2 s) during which calls to it fail at once; the next call after the backoff makes
//! the driver connect again, so a Redis that comes back is used again without a restart.
//!
//! Redis Cluster: with several seed addresses, the slot map is read with `CLUSTER SLOTS` and each
//! key goes to its slot's node; `MOVED` updates the map (and refreshes it in the background),
//! `ASK` sends the one command to the named node after `ASKING`.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};

use crate::config::cluster::{ClusterSettings, RedisAddr};
use crate::http::io::ReadBuf;
use crate::observe::metrics::RedisMetrics;

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16_384;
/// Commands written in one batch at most.
const MAX_BATCH: usize = 512;
/// Calls queued for one node at most; beyond it calls fail at once (Redis is far behind).
const MAX_QUEUED: usize = 8_192;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A reply larger than this is a protocol error (ours are a few dozen bytes; a slot map of a
/// large cluster a few KiB).
const MAX_REPLY: usize = 1 << 20;
/// Redirections followed for one call.
const MAX_REDIRECTS: usize = 3;

/// Why a call got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// The node is down or the connection broke.
    Unavailable,
    /// No reply before the caller's deadline.
    TimedOut,
    /// Too many calls queued for the node.
    Overloaded,
    /// Redis answered with an error (`-ERR ...`, `-CLUSTERDOWN ...`, ...).
    Reply(String),
    /// A reply that is not what the command returns, or too many redirections.
    Protocol,
}

impl Fail {
    pub fn kind(&self) -> &'static str {
        match self {
            Fail::Unavailable => "unavailable",
            Fail::TimedOut => "timeout",
            Fail::Overloaded => "overloaded",
            Fail::Reply(_) => "error_reply",
            Fail::Protocol => "protocol",
        }
    }
}

/// Encodes a command: `(out, eval)`, `eval` after a `NOSCRIPT` reply (see `Client::call`).
pub type Encode = Rc<dyn Fn(&mut Vec<u8>, bool)>;

struct Call {
    /// Encoded when the driver writes the call, not before: a command that counts requests (a
    /// batched GCRA step) takes in every request that joined it until then.
    encode: Encode,
    eval: bool,
    /// Send `ASKING` first (an `ASK` redirection).
    asking: bool,
    reply: oneshot::Sender<Result<OwnedFrame, Fail>>,
}

/// A node's state as its callers see it.
struct NodeState {
    addr: RedisAddr,
    queued: Cell<usize>,
    /// Calls fail at once until then (the last connect failed).
    down_until: Cell<Option<Instant>>,
    /// The current failure burst has been logged.
    logged: Cell<bool>,
}

struct Node {
    state: Rc<NodeState>,
    tx: mpsc::UnboundedSender<Call>,
}

pub struct Client {
    settings: Arc<ClusterSettings>,
    nodes: RefCell<Vec<Node>>,
    /// Slot → index in `nodes`; empty until a cluster's slot map is known (then every key goes
    /// to the first seed, and redirections teach the rest).
    slots: RefCell<Vec<u16>>,
    refreshing: Cell<bool>,
    metrics: Rc<RedisMetrics>,
    /// When a failed call (other than an unreachable node, which its driver logs) was last
    /// logged: at most one line per `LOG_EVERY`.
    logged_at: Cell<Option<Instant>>,
}

/// Failed calls are logged at most this often per shard (their count is in the metrics).
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Client {
    pub fn new(settings: Arc<ClusterSettings>, metrics: Rc<RedisMetrics>) -> Rc<Client> {
        Rc::new(Client {
            settings,
            nodes: RefCell::new(Vec::new()),
            slots: RefCell::new(Vec::new()),
            refreshing: Cell::new(false),
            metrics,
            logged_at: Cell::new(None),
        })
    }

    pub fn settings(&self) -> &Arc<ClusterSettings> {
        &self.settings
    }

    pub fn metrics(&self) -> &Rc<RedisMetrics> {
        &self.metrics
    }

    /// Runs one single-key command within `deadline`, following redirections. `encode` writes
    /// the command when the driver sends it (and again to resend it elsewhere); its `eval` flag
    /// turns an `EVALSHA` into the `EVAL` that reloads the script after a `NOSCRIPT` reply.
    pub async fn call(self: &Rc<Self>, key: &[u8], deadline: Instant, encode: Encode) -> Result<OwnedFrame, Fail> {
        if self.settings.redis.len() > 1 && self.slots.borrow().is_empty() {
            self.refresh_slots();
        }
        let started = Instant::now();
        let mut node = self.node_for(key);
        let (mut asking, mut eval) = (false, false);
        for _ in 0..=MAX_REDIRECTS + 1 {
            let reply = self.send(node, encode.clone(), eval, asking, deadline).await;
            asking = false;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    self.failed(node, &e);
                    return Err(e);
                }
            };
            if let OwnedFrame::Error(e) = &reply {
                if e.starts_with("NOSCRIPT") && !eval {
                    self.metrics.script_loads.set(self.metrics.script_loads.get() + 1);
                    eval = true;
                    continue;
                }
                if let Some((slot, addr)) = redirect(e, "MOVED ") {
                    self.metrics.moved.set(self.metrics.moved.get() + 1);
                    node = self.node_at(&addr);
                    let mut slots = self.slots.borrow_mut();
                    if slots.len() == SLOTS {
                        slots[slot] = node as u16;
                    }
                    drop(slots);
                    self.refresh_slots();
                    continue;
                }
                if let Some((_, addr)) = redirect(e, "ASK ") {
                    self.metrics.ask.set(self.metrics.ask.get() + 1);
                    node = self.node_at(&addr);
                    asking = true;
                    continue;
                }
                let fail = Fail::Reply(e.clone());
                self.failed(node, &fail);
                return Err(fail);
            }
            self.metrics.record_call(started.elapsed());
            return Ok(reply);
        }
        self.failed(node, &Fail::Protocol);
        Err(Fail::Protocol)
    }

    /// Counts a failed call; logs it with the node's address, once per burst.
    fn failed(&self, node: usize, e: &Fail) {
        self.metrics.error(e.kind());
        if *e == Fail::Unavailable {
            return; // the node's driver logs its connection failures
        }
        let now = Instant::now();
        if self.logged_at.get().is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        self.logged_at.set(Some(now));
        let addr = self.nodes.borrow().get(node).map(|n| n.state.addr.to_string()).unwrap_or_default();
        let detail = match e {
            // The error's first word (`OOM`, `LOADING`, ...); the rest may quote data.
            Fail::Reply(text) => text.split(' ').next().unwrap_or("").to_string(),
            _ => String::new(),
        };
        tracing::warn!(redis = %addr, kind = e.kind(), detail = %detail, "Redis call failed; cluster limits use their on_error decision (logged once per 10 s)");
    }

    /// Queues one command on a node and waits for its reply until `deadline`.
    async fn send(&self, node: usize, encode: Encode, eval: bool, asking: bool, deadline: Instant) -> Result<OwnedFrame, Fail> {
        let rx = {
            let nodes = self.nodes.borrow();
            let n = &nodes[node];
            if n.state.down_until.get().is_some_and(|t| Instant::now() < t) {
                return Err(Fail::Unavailable);
            }
            if n.state.queued.get() >= MAX_QUEUED {
                return Err(Fail::Overloaded);
            }
            let (tx, rx) = oneshot::channel();
            n.tx.unbounded_send(Call { encode, eval, asking, reply: tx }).map_err(|_| Fail::Unavailable)?;
            n.state.queued.set(n.state.queued.get() + 1);
            rx
        };
        match monoio::time::timeout_at(deadline.into(), rx).await {
            Err(_) => Err(Fail::TimedOut),
            Ok(Err(_)) => Err(Fail::Unavailable),
            Ok(Ok(r)) => r,
        }
    }

    fn node_for(&self, key: &[u8]) -> usize {
        let slots = self.slots.borrow();
        if slots.len() == SLOTS {
            return slots[usize::from(redis_protocol::redis_keyslot(key)) % SLOTS] as usize;
        }
        drop(slots);
        self.node_at(&self.settings.redis[0].host_port())
    }

    /// The node at `host:port`, its driver started on first use. Credentials are the first
    /// seed's: every node of one cluster takes the same.
    fn node_at(&self, host_port: &str) -> usize {
        let mut nodes = self.nodes.borrow_mut();
        if let Some(i) = nodes.iter().position(|n| n.state.addr.host_port() == host_port) {
            return i;
        }
        let seed = &self.settings.redis[0];
        let addr = self.settings.redis.iter().find(|a| a.host_port() == host_port).cloned().unwrap_or_else(|| {
            let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "6379"));
            RedisAddr {
                host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
                port: port.parse().unwrap_or(6379),
                user: seed.user.clone(),
                password: seed.password.clone(),
            }
        });
        let state = Rc::new(NodeState { addr, queued: Cell::new(0), down_until: Cell::new(None), logged: Cell::new(false) });
        let (tx, rx) = mpsc::unbounded();
        monoio::spawn(drive(rx, state.clone(), self.metrics.clone(), self.settings.timeout));
        nodes.push(Node { state, tx });
        nodes.len() - 1
    }

    /// Reads the slot map again, in the background (one refresh at a time).
    fn refresh_slots(self: &Rc<Self>) {
        if self.refreshing.replace(true) {
            return;
        }
        let me = Rc::downgrade(self);
        monoio::spawn(async move {
            let Some(client) = me.upgrade() else { return };
            let map = client.read_slot_map().await;
            if let Some(map) = map {
                *client.slots.borrow_mut() = map;
                client.metrics.slot_refreshes.set(client.metrics.slot_refreshes.get() + 1);
            }
            // Not more often than every 100 ms, whatever the redirections.
            monoio::time::sleep(Duration::from_millis(100)).await;
            client.refreshing.set(false);
        });
    }

    /// `CLUSTER SLOTS` from the first node that answers it; None if none does (or Redis is not
    /// a cluster).
    async fn read_slot_map(&self) -> Option<Vec<u16>> {
        let cmd: Encode = Rc::new(|out: &mut Vec<u8>, _| encode(out, &[b"CLUSTER", b"SLOTS"]));
        let seeds: Vec<String> = self.settings.redis.iter().map(RedisAddr::host_port).collect();
        for seed in seeds {
            let node = self.node_at(&seed);
            let deadline = Instant::now() + self.settings.timeout.max(Duration::from_millis(500));
            let Ok(OwnedFrame::Array(ranges)) = self.send(node, cmd.clone(), false, false, deadline).await else { continue };
            let mut map = vec![u16::MAX; SLOTS];
            for range in ranges {
                let OwnedFrame::Array(r) = range else { return None };
                let (Some(OwnedFrame::Integer(start)), Some(OwnedFrame::Integer(end)), Some(OwnedFrame::Array(master))) = (r.first(), r.get(1), r.get(2)) else {
                    return None;
                };
                let (Some(OwnedFrame::BulkString(ip)), Some(OwnedFrame::Integer(port))) = (master.first(), master.get(1)) else { return None };
                let ip = String::from_utf8_lossy(ip);
                let ip = if ip.is_empty() || ip == "?" { seed.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h).to_string() } else { ip.into_owned() };
                let host_port = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
                let idx = self.node_at(&host_port) as u16;
                let (start, end) = ((*start).clamp(0, SLOTS as i64 - 1) as usize, (*end).clamp(0, SLOTS as i64 - 1) as usize);
                map[start..=end.max(start)].iter_mut().for_each(|s| *s = idx);
            }
            // Slots no node serves go to the first seed (which answers CLUSTERDOWN or MOVED).
            let first = self.node_at(&self.settings.redis[0].host_port()) as u16;
            map.iter_mut().filter(|s| **s == u16::MAX).for_each(|s| *s = first);
            return Some(map);
        }
        None
    }
}

/// `MOVED 3999 127.0.0.1:6381` → (3999, "127.0.0.1:6381").
fn redirect(e: &str, prefix: &str) -> Option<(usize, String)> {
    let rest = e.strip_prefix(prefix)?;
    let (slot, addr) = rest.trim().split_once(' ')?;
    let slot: usize = slot.parse().ok().filter(|s| *s < SLOTS)?;
    // An empty host (`:6381`) means the node that sent the redirection; not used by the
    // versions we support, and refused rather than guessed.
    addr.rsplit_once(':').filter(|(h, _)| !h.is_empty())?;
    Some((slot, addr.to_string()))
}

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut inline: [BorrowedFrame; 8] = [const { BorrowedFrame::Null }; 8];
    let mut heap = Vec::new();
    let frames: &mut [BorrowedFrame] = if args.len() <= inline.len() {
        &mut inline[..args.len()]
    } else {
        heap.resize(args.len(), BorrowedFrame::Null);
        &mut heap
    };
    for (f, a) in frames.iter_mut().zip(args) {
        *f = BorrowedFrame::BulkString(a);
    }
    let frame = BorrowedFrame::Array(frames);
    let at = out.len();
    out.resize(at + frame.encode_len(false), 0);
    // The buffer was sized by the encoder's own length: encoding cannot fail.
    let n = encode_borrowed(&mut out[at..], &frame, false).unwrap_or(0);
    out.truncate(at + n);
}

/// One node's connection: batches of queued commands out, their replies back in order.
async fn drive(mut rx: mpsc::UnboundedReceiver<Call>, node: Rc<NodeState>, metrics: Rc<RedisMetrics>, timeout: Duration) {
    // Redis answers in well under a millisecond; a connection that gives no reply for this long
    // is dropped and made again.
    let io_timeout = (timeout * 100).clamp(Duration::from_millis(200), Duration::from_secs(2));
    let mut conn: Option<(TcpStream, ReadBuf)> = None;
    let mut backoff = MIN_BACKOFF;
    let mut batch: Vec<Call> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(8 * 1024);
    while let Some(first) = rx.next().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        node.queued.set(node.queued.get().saturating_sub(batch.len()));
        // Callers that gave up wait for nothing: their commands are not sent.
        batch.retain(|c| !c.reply.is_canceled());
        if batch.is_empty() {
            continue;
        }
        if conn.is_none() {
            match connect(&node.addr, io_timeout).await {
                Ok(c) => {
                    if node.logged.replace(false) {
                        tracing::warn!(redis = %node.addr, "Redis reachable again");
                    }
                    node.down_until.set(None);
                    backoff = MIN_BACKOFF;
                    metrics.connects.set(metrics.connects.get() + 1);
                    conn = Some(c);
                }
                Err(e) => {
                    if !node.logged.replace(true) {
                        tracing::warn!(redis = %node.addr, error = %e, "Redis unreachable; cluster limits use their on_error decision until it answers");
                    }
                    node.down_until.set(Some(Instant::now() + backoff));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    for c in batch.drain(..) {
                        let _ = c.reply.send(Err(Fail::Unavailable));
                    }
                    continue;
                }
            }
        }
        let Some((stream, rbuf)) = conn.as_mut() else { continue };
        out.clear();
        for c in &batch {
            if c.asking {
                encode(&mut out, &[b"ASKING"]);
            }
            (c.encode)(&mut out, c.eval);
        }
        metrics.record_batch(batch.len());
        if let Err(e) = exchange(stream, rbuf, &mut out, &mut batch, io_timeout).await {
            if !node.logged.replace(true) {
                tracing::warn!(redis = %node.addr, error = %e, "Redis connection lost; reconnecting");
            }
            conn = None;
            node.down_until.set(Some(Instant::now() + MIN_BACKOFF));
            for c in batch.drain(..) {
                let _ = c.reply.send(Err(Fail::Unavailable));
            }
        }
    }
}

/// Writes the batch's commands and hands each caller its reply, in order.
async fn exchange(stream: &mut TcpStream, rbuf: &mut ReadBuf, out: &mut Vec<u8>, batch: &mut Vec<Call>, io_timeout: Duration) -> Result<(), String> {
    let buf = std::mem::take(out);
    let (res, buf) = match monoio::time::timeout(io_timeout, stream.write_all(buf)).await {
        Ok(r) => r,
        Err(_) => return Err("write timed out".into()),
    };
    *out = buf;
    res.map_err(|e| e.to_string())?;
    for c in batch.drain(..) {
        if c.asking {
            read_frame(stream, rbuf, io_timeout).await?;
        }
        let frame = read_frame(stream, rbuf, io_timeout).await?;
        let _ = c.reply.send(Ok(frame));
    }
    Ok(())
}

async fn read_frame(stream: &mut TcpStream, rbuf: &mut ReadBuf, io_timeout: Duration) -> Result<OwnedFrame, String> {
    loop {
        match decode(rbuf.pending()) {
            Ok(Some((frame, n))) => {
                rbuf.consume(n);
                return Ok(frame);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("bad reply: {e:?}")),
        }
        if rbuf.pending_len() >= MAX_REPLY {
            return Err("reply too large".into());
        }
        if rbuf.is_full() {
            rbuf.compact();
            if rbuf.is_full() {
                let want = rbuf.data.capacity() * 2;
                rbuf.data.reserve(want - rbuf.data.len());
            }
        }
        match monoio::time::timeout(io_timeout, rbuf.fill(stream)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => return Err("connection closed".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no reply in time".into()),
        }
    }
}

fn socket_addr(addr: &RedisAddr) -> Result<SocketAddr, String> {
    // A host name is resolved here, when a connection is made (rarely: at start and after a
    // failure); addresses keep DNS off the shards entirely.
    (addr.host.as_str(), addr.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", addr.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", addr.host))
}

/// Connects and authenticates.
async fn connect(addr: &RedisAddr, io_timeout: Duration) -> Result<(TcpStream, ReadBuf), String> {
    let sa = socket_addr(addr)?;
    let stream = match monoio::time::timeout(io_timeout, TcpStream::connect(sa)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("connect timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let mut rbuf = ReadBuf::new(Vec::with_capacity(4096));
    if let Some(cmd) = auth_command(addr) {
        let (res, _) = match monoio::time::timeout(io_timeout, stream.write_all(cmd)).await {
            Ok(r) => r,
            Err(_) => return Err("AUTH timed out".into()),
        };
        res.map_err(|e| e.to_string())?;
        if let OwnedFrame::Error(e) = read_frame(&mut stream, &mut rbuf, io_timeout).await? {
            return Err(format!("AUTH refused: {}", e.split(' ').next().unwrap_or("error")));
        }
    }
    Ok((stream, rbuf))
}

fn auth_command(addr: &RedisAddr) -> Option<Vec<u8>> {
    let password = addr.password.as_deref()?;
    let mut cmd = Vec::new();
    match &addr.user {
        Some(user) => encode(&mut cmd, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
        None => encode(&mut cmd, &[b"AUTH", password.as_bytes()]),
    }
    Some(cmd)
}

/// `PING` each configured node once, blocking, for `ringgate check --connect`.
pub fn ping(addr: &RedisAddr, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let sa = socket_addr(addr)?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut cmd = auth_command(addr).unwrap_or_default();
    encode(&mut cmd, &[b"PING"]);
    s.write_all(&cmd).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let want = if addr.password.is_some() { 2 } else { 1 };
    let mut chunk = [0u8; 512];
    while replies.len() < want {
        match decode(&buf) {
            Ok(Some((frame, n))) => {
                buf.drain(..n);
                replies.push(frame);
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(format!("bad reply: {e:?}")),
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 || buf.len() > MAX_REPLY {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    for r in replies {
        if let OwnedFrame::Error(e) = r {
            return Err(format!("Redis answered: {}", e.split(' ').next().unwrap_or("error")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections() {
        assert_eq!(redirect("MOVED 3999 127.0.0.1:6381", "MOVED "), Some((3999, "127.0.0.1:6381".into())));
        assert_eq!(redirect("ASK 1 10.0.0.2:7000", "ASK "), Some((1, "10.0.0.2:7000".into())));
        assert_eq!(redirect("MOVED 16384 127.0.0.1:6381", "MOVED "), None);
        assert_eq!(redirect("MOVED 1 :6381", "MOVED "), None);
        assert_eq!(redirect("ERR MOVED", "MOVED "), None);
    }

    #[test]
    fn commands_are_resp_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[b"EVALSHA", b"abc", b"1", b"k"]);
        assert_eq!(out, b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$1\r\nk\r\n");
    }
}

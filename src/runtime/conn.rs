//! A client connection's life: wait for bytes without holding a buffer, serve requests in order
//! (pipelined ones straight from the buffer), close on error, timeout or the end of the drain
//! grace. Never serves the same bytes twice: a request that consumed nothing ends the connection.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;


use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::park;
use super::shard::Shard;
use crate::http::io::{peek, peek_byte, ClientStream, Peek, ReadBuf};
use crate::http::write::{self, ip_text, ErrorResponse};
use crate::proxy::{self, Client, Next};
use crate::tls::{ClientIdentity, TlsConn};

/// A TLS handshake record starts with this byte (content type 22).
const TLS_HANDSHAKE: u8 = 0x16;

/// A connection on a TLS listener: a client that speaks plain HTTP gets a clear 400 (as nginx
/// answers it), anything else gets the handshake, bounded by the header timeout, and then the
/// same request loop as plain connections.
pub async fn serve_tls(shard: Rc<Shard>, tcp: TcpStream, peer: SocketAddr) {
    let gen = shard.generation();
    let Some(config) = gen.tls.clone() else { return };
    let deadline = Instant::now() + gen.cfg.timeouts.header;
    drop(gen);
    let ready = monoio::select! {
        r = tcp.readable(false) => r.is_ok(),
        _ = shard.drain.wait_idle(deadline) => false,
    };
    let first = ready.then(|| peek_byte(&tcp).ok()).flatten();
    match first {
        Some(TLS_HANDSHAKE) => {}
        Some(b) if b.is_ascii_uppercase() => {
            shard.metrics.tls.handshake("plain_http", "");
            let mut out = Vec::with_capacity(512);
            let e = ErrorResponse {
                status: 400,
                code: "plain_http_on_tls_port",
                message: "the plain HTTP request was sent to a TLS port; use https://",
                request_id: b"-",
                close: true,
                head_only: false,
                extra: b"",
            };
            write::error_response(&mut out, &e);
            // Take what the client sent off the socket first: closing with unread bytes would
            // reset the connection, and the client might lose the answer.
            discard_pending(&tcp);
            let mut tcp = tcp;
            let _ = monoio::time::timeout_at(deadline.into(), tcp.write_all(out)).await;
            let _ = monoio::io::AsyncWriteRent::shutdown(&mut tcp).await;
            discard_pending(&tcp);
            return;
        }
        _ => {
            shard.metrics.tls.handshake("not_tls", "");
            return;
        }
    }
    let session = match rustls::ServerConnection::new(config) {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut tls = TlsConn::new(tcp, session);
    match monoio::time::timeout_at(deadline.into(), tls.handshake()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            shard.metrics.tls.handshake("failed", "");
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shard.metrics.tls.handshake("timeout", "");
            return;
        }
    }
    let rustls::Connection::Server(s) = tls.session() else { return };
    let version = match s.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "other",
    };
    let resumed = s.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let client = s.peer_certificates().and_then(|c| c.first()).and_then(|leaf| ClientIdentity::from_der(leaf.as_ref())).map(Box::new);
    let sni = s.server_name().map(|n| n.to_ascii_lowercase().into_boxed_str());
    tls.info = crate::tls::TlsInfo { sni, version, resumed, client };
    shard.metrics.tls.handshake(if resumed { "resumed" } else { "full" }, version);
    // A TLS connection never parks: its session state lives in its task.
    let _ = serve(shard, tls, peer.ip(), Start::New).await;
}

/// Reads and drops what is waiting on the socket (at most 64 KiB), without blocking.
fn discard_pending(tcp: &TcpStream) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(tcp);
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        // SAFETY: a read into a local buffer of its length; the descriptor outlives the call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            break;
        }
    }
}

/// How a connection's task begins.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Just accepted: the first request has the header timeout.
    New,
    /// Out of the parking lot because bytes (or a close) arrived: read at once.
    Woken,
}

/// What a connection's task ends with: nothing (the connection is closed), or the socket to park,
/// quiet for `park::LINGER`, with the deadline of the wait it was in.
pub type Parking = Option<(TcpStream, Instant)>;

pub async fn serve<S: ClientStream>(shard: Rc<Shard>, stream: S, peer: IpAddr, start: Start) -> Option<(S, Instant)> {
    if start == Start::New {
        let _ = stream.socket().set_nodelay(true);
    }
    let mut client = Client { stream, ip: ip_text(peer), peer, rbuf: ReadBuf::default(), sent: 0 };
    let mut first = start == Start::New;
    let mut woken = start == Start::Woken;
    loop {
        if client.rbuf.pending_len() == 0 {
            // Idle: hold no buffer while waiting (an io_uring read would pin one).
            shard.bufs.put(std::mem::take(&mut client.rbuf.data));
            client.rbuf.start = 0;
            if std::mem::take(&mut woken) {
                // Woken by a close as often as by a request (a client going away, many at once
                // when a client host ends): close those without taking a buffer.
                if peek(client.stream.socket()) == Peek::Closed {
                    break;
                }
            } else {
                let timeouts = &shard.generation().cfg.timeouts;
                let now = Instant::now();
                let deadline = now + if first { timeouts.header } else { timeouts.idle };
                // Quiet for LINGER: leave the task for the shard's parking lot (plain TCP only;
                // a TLS connection's state lives in its task).
                let park_at = now + park::LINGER;
                let parks = S::PARKS && park_at < deadline && shard.lot.enabled() && !shard.drain.is_draining();
                let ready = client.stream.has_buffered()
                    || monoio::select! {
                        r = client.stream.socket().readable(false) => r.is_ok(),
                        _ = shard.drain.wait_idle(if parks { park_at } else { deadline }) => false,
                    };
                if !ready {
                    // A request that arrived just as the wait ended is still served, not reset
                    // by the close.
                    match peek(client.stream.socket()) {
                        Peek::Bytes => {}
                        Peek::Quiet if parks && Instant::now() < deadline => return Some((client.stream, deadline)),
                        _ => break,
                    }
                }
            }
            client.rbuf = ReadBuf::new(shard.bufs.get());
            let filled = if S::RECORDS {
                // A readable TLS socket may hold only part of a record: bounded like a head. (In
                // its own allocation, so the plain connection's future stays small.)
                let limit = Instant::now() + shard.generation().cfg.timeouts.header;
                Box::pin(monoio::time::timeout_at(limit.into(), client.rbuf.fill(&mut client.stream))).await.unwrap_or(Ok(0))
            } else {
                client.rbuf.fill(&mut client.stream).await
            };
            match filled {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        first = false;
        let deadline = Instant::now() + shard.generation().cfg.timeouts.header;
        // The request's state (several KiB of futures) lives in its own allocation only while a
        // request is in flight, so an idle connection's task stays a few hundred bytes.
        let before = client.rbuf.consumed;
        let next = Box::pin(proxy::serve_request(&shard, &mut client, deadline)).await;
        if next == Next::Close {
            break;
        }
        if client.rbuf.consumed == before {
            // Serving again would parse the same bytes again, and answer them forever.
            debug_assert!(false, "a kept-alive request consumed no bytes");
            tracing::error!("a request consumed no bytes; closing its connection");
            break;
        }
    }
    shard.bufs.put(std::mem::take(&mut client.rbuf.data));
    None
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::Arc;

    use monoio::net::TcpStream;

    use super::*;
    use crate::config::Config;
    use crate::observe::log::AccessLog;
    use crate::runtime::generation::Published;
    use crate::runtime::shard::Global;

    /// An idle keep-alive connection must cost little memory: its task holds no buffer and no
    /// timer (buffers come from the shard pool once bytes arrive; idle deadlines live in a
    /// shard-level slab). The task's future is the per-connection memory, so its size is pinned.
    #[test]
    fn idle_connection_future_stays_under_one_kib() {
        let cfg = Config::parse(
            "[[services]]\nname = \"s\"\nupstreams = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n",
        )
        .unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async move {
            let global = Arc::new(Global::new(Published::new(1, Arc::new(cfg), None), 1, Vec::new()));
            let (tx, _rx) = std::sync::mpsc::sync_channel(1);
            let shard = Rc::new(Shard::new(0, global, AccessLog::new(tx)));
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let peer = listener.local_addr().unwrap();
            let fut = serve(shard, stream, peer.ip(), Start::New);
            let size = std::mem::size_of_val(&fut);
            println!("connection future: {size} bytes");
            assert!(size <= 1024, "connection future grew to {size} bytes");
        });
    }
}

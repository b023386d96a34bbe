//! A client connection's life: wait for bytes without holding a buffer, serve requests in order
//! (pipelined ones straight from the buffer), close on error, timeout or drain.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::shard::Shard;
use crate::http::io::ReadBuf;
use crate::http::write::ip_text;
use crate::proxy::{self, Client, Next};

pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut client = Client { stream, ip: ip_text(peer.ip()), peer: peer.ip(), rbuf: ReadBuf::default() };
    let timeouts = &shard.cfg.timeouts;
    let mut first = true;
    loop {
        if client.rbuf.pending_len() == 0 {
            // Idle: hold no buffer while waiting (an io_uring read would pin one).
            shard.bufs.put(std::mem::take(&mut client.rbuf.data));
            client.rbuf.start = 0;
            let wait = if first { timeouts.header } else { timeouts.idle };
            let ready = monoio::select! {
                r = client.stream.readable(false) => r.is_ok(),
                _ = shard.drain.wait_until(Instant::now() + wait) => false,
            };
            if !ready {
                break;
            }
            client.rbuf = ReadBuf::new(shard.bufs.get());
            match client.rbuf.fill(&mut client.stream).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        first = false;
        let deadline = Instant::now() + timeouts.header;
        // The request's state (several KiB of futures) lives in its own allocation only while a
        // request is in flight, so an idle connection's task stays a few hundred bytes.
        if Box::pin(proxy::serve_request(&shard, &mut client, deadline)).await == Next::Close {
            break;
        }
    }
    shard.bufs.put(std::mem::take(&mut client.rbuf.data));
}

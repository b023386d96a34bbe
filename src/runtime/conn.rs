//! A client connection's life: wait for bytes without holding a buffer, serve requests in order
//! (pipelined ones straight from the buffer), close on error, timeout or the end of the drain
//! grace. Never serves the same bytes twice: a request that consumed nothing ends the connection.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;


use super::shard::Shard;
use crate::http::io::{peek, ClientStream, Peek, ReadBuf};
use crate::http::write::ip_text;
use crate::proxy::{self, Client, Next};

pub async fn serve<S: ClientStream>(shard: Rc<Shard>, stream: S, peer: SocketAddr) {
    let _ = stream.socket().set_nodelay(true);
    let mut client = Client { stream, ip: ip_text(peer.ip()), peer: peer.ip(), rbuf: ReadBuf::default(), sent: 0 };
    let mut first = true;
    loop {
        if client.rbuf.pending_len() == 0 {
            // Idle: hold no buffer while waiting (an io_uring read would pin one).
            shard.bufs.put(std::mem::take(&mut client.rbuf.data));
            client.rbuf.start = 0;
            let timeouts = &shard.generation().cfg.timeouts;
            let wait = if first { timeouts.header } else { timeouts.idle };
            let ready = client.stream.has_buffered()
                || monoio::select! {
                    r = client.stream.socket().readable(false) => r.is_ok(),
                    _ = shard.drain.wait_idle(Instant::now() + wait) => false,
                };
            // A request that arrived just as the wait ended is still served, not reset by the close.
            if !ready && peek(client.stream.socket()) != Peek::Bytes {
                break;
            }
            client.rbuf = ReadBuf::new(shard.bufs.get());
            match client.rbuf.fill(&mut client.stream).await {
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
            let fut = serve(shard, stream, peer);
            let size = std::mem::size_of_val(&fut);
            println!("connection future: {size} bytes");
            assert!(size <= 1024, "connection future grew to {size} bytes");
        });
    }
}

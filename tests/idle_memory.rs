//! An idle keep-alive connection must cost little memory: its task holds no buffer and no timer
//! (buffers come from the shard pool once bytes arrive; idle deadlines live in a shard-level
//! slab). The task's future is the per-connection memory, so its size is pinned here.

use std::rc::Rc;
use std::sync::Arc;

use ringgate::config::Config;
use ringgate::runtime::{conn, shard::Shard};

#[test]
fn idle_connection_future_stays_under_one_kib() {
    let cfg = Config::parse(
        "[[services]]\nname = \"s\"\nupstreams = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n",
    )
    .unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
    rt.block_on(async move {
        let shard = Rc::new(Shard::new(0, Arc::new(cfg), Default::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = monoio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let peer = listener.local_addr().unwrap();
        let fut = conn::serve(shard, stream, peer);
        let size = std::mem::size_of_val(&fut);
        println!("connection future: {size} bytes");
        assert!(size <= 1024, "connection future grew to {size} bytes");
    });
}

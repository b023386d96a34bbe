//! Heap held per idle keep-alive connection, counted by a global allocator that tracks live
//! bytes: 2,000 connections that each made one request and then sit idle. A quiet connection
//! leaves its task for the shard's parking lot and holds only its slot there (descriptor,
//! deadline, counting guard) and its place in the lot's deadline heap; buffers go back to the
//! shard pool.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

struct Counting;
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as i64 - l.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One request on a new connection, read to its end, the connection kept.
fn open(addr: std::net::SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 512];
    while !got.ends_with(b"ok") {
        let n = c.read(&mut b).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    c
}

#[test]
fn an_idle_keep_alive_connection_holds_under_256_bytes_of_heap() {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in up.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                        break;
                    }
                }
            });
        }
    });
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\
         [[services]]\nname = \"s\"\nupstreams = [\"{up_addr}\"]\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n"
    );
    let gw = ringgate::runtime::Gateway::start(ringgate::config::Config::parse(&cfg).unwrap()).unwrap();
    let addr = gw.addrs[0];
    // Warm up: the buffer pool, the upstream pool, the per-address table.
    let warm: Vec<TcpStream> = (0..50).map(|_| open(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    const N: usize = 2000;
    let mut conns = Vec::with_capacity(N);
    let after_vec = LIVE.load(Ordering::Relaxed);
    for _ in 0..N {
        conns.push(open(addr));
    }
    // Parked after 50-100 ms of quiet.
    std::thread::sleep(Duration::from_millis(500));
    let per_conn = (LIVE.load(Ordering::Relaxed) - after_vec) / N as i64;
    println!("live heap per idle keep-alive connection: {per_conn} B");
    assert!(per_conn <= 256, "{per_conn} B of heap per idle connection");
    drop(conns);
    drop(warm);
    gw.shutdown();
    gw.join();
}

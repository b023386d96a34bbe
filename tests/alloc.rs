//! Heap allocations per proxied keep-alive request in steady state, counted by a global counting
//! allocator. The client and the upstream here are allocation-free loops over fixed buffers, so
//! every allocation counted during the measured window is the gateway's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};

use ringgate::config::Config;
use ringgate::runtime::Gateway;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"hello\":\"world\"}";

/// Reads one request head (no body) into `buf`, allocation-free.
fn read_head(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut len = 0;
    loop {
        match s.read(&mut buf[len..]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return false,
            Ok(n) => len += n,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
    }
}

/// Starts an allocation-free upstream and a one-worker gateway with `route_extra` (and `top`
/// policy tables), then measures heap allocations per keep-alive request in steady state.
fn allocations_per_request(top: &str, route_extra: &str, request: &[u8]) -> f64 {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in upstream.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while read_head(&mut s, &mut buf) {
                    if s.write_all(RESPONSE).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n{top}\n\
         [[services]]\nname = \"s\"\nupstreams = [\"{up_addr}\"]\n\
         [[routes]]\nname = \"r\"\npaths = [\"/api\"]\nservice = \"s\"\n{route_extra}\n"
    );
    let gw = Gateway::start(Config::parse(&cfg).unwrap()).unwrap();
    let mut c = TcpStream::connect(gw.addrs[0]).unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = [0u8; 8192];
    let mut one = |c: &mut TcpStream| {
        c.write_all(request).unwrap();
        let mut len = 0;
        // Head plus a 17-byte body; the gateway adds its own headers, so read until the body.
        loop {
            let n = match c.read(&mut buf[len..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.unwrap(),
            };
            assert!(n > 0);
            len += n;
            if buf[..len].ends_with(b"{\"hello\":\"world\"}") {
                break;
            }
            assert!(!buf[..len].starts_with(b"HTTP/1.1 4"), "{}", String::from_utf8_lossy(&buf[..len]));
        }
    };
    let warm_start = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..2000 {
        one(&mut c);
    }
    // The counter is live: warming up fills the shard's buffer pool and upstream pool.
    let warm = ALLOCS.load(Ordering::Relaxed) - warm_start;
    assert!(warm > 0, "the counting allocator saw nothing");
    const N: u64 = 20_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..N {
        one(&mut c);
    }
    let per_request = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    gw.shutdown();
    gw.join();
    per_request
}

/// One test, run sequentially, because the counter is process-wide.
#[test]
fn proxied_keep_alive_requests_allocate_at_most_once() {
    let plain = allocations_per_request(
        "",
        "",
        b"GET /api/items/42?x=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: application/json\r\n\r\n",
    );
    // A cache hit: served from the stored bytes (the response has no Cache-Control; the route's
    // ttl makes it fresh for an hour).
    let hit = allocations_per_request(
        "[[caches]]\nname = \"edge\"\n",
        "cache = \"edge\"\n[routes.cache_policy]\nttl = \"1h\"\n",
        b"GET /api/items/42?x=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: application/json\r\n\r\n",
    );
    println!("heap allocations per cache hit on a keep-alive connection: {hit:.3} (the request future's box)");
    assert!(hit < 1.1, "{hit} allocations per cache hit");
    println!("heap allocations per proxied keep-alive request (plain route): {plain:.3}");
    assert!(plain < 1.1, "{plain} allocations per request");

    // HS256 token (exp in 2100), verified once then served from the shard cache; a rate limit
    // whose allowance the test cannot exhaust, charged on every request.
    let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.";
    let secret = "an-hs256-secret-of-at-least-32-bytes!";
    let signed = sign_hs256(token, secret);
    let top = format!(
        "[[jwt]]\nname = \"main\"\nforward_claims = {{ sub = \"X-Consumer-Id\" }}\n\
         [[jwt.keys]]\nalg = \"HS256\"\nsecret = \"{secret}\"\n\
         [[rate_limits]]\nname = \"lim\"\nrequests = 1000000000\nwindow = \"1s\"\nkey = \"ip\"\n"
    );
    let request = format!("GET /api/items/42 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer {signed}\r\n\r\n");
    let guarded = allocations_per_request(&top, "auth = [\"main\"]\nrate_limits = [\"lim\"]", request.as_bytes());
    println!("heap allocations per proxied keep-alive request (JWT + rate limit): {guarded:.3}");
    assert!(guarded < 1.1, "{guarded} allocations per request");

    // Observability on: metrics are always recorded; add the access log (to a file) and the
    // admin listener. A log buffer is handed to the writer every 32 KiB, one allocation per
    // ~150 lines.
    let log = std::env::temp_dir().join(format!("ringgate-alloc-{}.log", std::process::id()));
    let top = format!("[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"{}\"\n", log.display());
    let observed = allocations_per_request(
        &top,
        "",
        b"GET /api/items/42?x=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: application/json\r\n\r\n",
    );
    let lines = std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0);
    let _ = std::fs::remove_file(&log);
    println!("heap allocations per proxied keep-alive request (metrics + access log): {observed:.3}; {lines} lines logged");
    assert!(observed < 1.1, "{observed} allocations per request");
    assert!(lines >= 20_000, "only {lines} access-log lines");
}

/// Completes an unsigned `header.payload.` token with its HS256 signature.
fn sign_hs256(unsigned: &str, secret: &str) -> String {
    use base64::Engine;
    let input = unsigned.trim_end_matches('.');
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

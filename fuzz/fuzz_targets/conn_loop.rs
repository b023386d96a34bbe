//! Arbitrary bytes on one client connection to the real gateway (one shard, a loopback upstream
//! that answers every request): the connection loop must never send more final responses than
//! the input holds request heads (plus one error for bytes that never made a head), so no answer
//! is repeated and no request is served twice. Seeded with pipelined requests of every outcome.

#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringgate::config::Config;
use ringgate::runtime::Gateway;

/// The gateway's address; started once, with its upstream, and kept for the whole run.
fn gateway() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let up = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let up_addr = up.local_addr().expect("upstream address");
        std::thread::spawn(move || {
            for s in up.incoming().flatten() {
                std::thread::spawn(move || answer_all(s));
            }
        });
        let toml = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\
             [limits]\nmax_head = \"4KiB\"\nmax_target = \"2KiB\"\nmax_body = \"1KiB\"\n\
             [timeouts]\nheader = \"2s\"\nbody = \"2s\"\n\
             [[services]]\nname = \"svc\"\nupstreams = [\"{up_addr}\"]\n\
             [[routes]]\nname = \"ok\"\npaths = [\"/ok\"]\nmethods = [\"GET\", \"HEAD\", \"POST\"]\nservice = \"svc\"\n\
             [[routes]]\nname = \"json\"\npaths = [\"/json\"]\nservice = \"svc\"\n\
             [routes.validate]\ncontent_types = [\"application/json\"]\njson = true\nmax_json = \"1KiB\"\n"
        );
        let gw = Gateway::start(Config::parse(&toml).expect("config")).expect("gateway starts");
        let addr = gw.addrs[0];
        // Runs until the fuzzer exits.
        std::mem::forget(gw);
        addr
    })
}

/// Answers every request head with an empty 200; bodies are skipped by Content-Length only, so a
/// chunked body shows up as garbage and closes the connection (fine for counting answers).
fn answer_all(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < p + 4 + len {
                break;
            }
            buf.drain(..p + 4 + len);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err() {
                return;
            }
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 16 << 10 {
        return;
    }
    let Ok(mut c) = TcpStream::connect(gateway()) else { return };
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    if c.write_all(data).is_err() {
        return;
    }
    let _ = c.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    // Every request needs a head ending in an empty line; bare-LF endings count too.
    let heads = data.windows(2).filter(|w| *w == b"\n\n").count() + data.windows(3).filter(|w| *w == b"\n\r\n").count();
    let finals = got.windows(12).filter(|w| w.starts_with(b"HTTP/1.") && w[8] == b' ' && w[9] != b'1').count();
    assert!(finals <= heads + 1, "{finals} final responses for at most {heads} requests");
});

//! Retries that never return to an endpoint this request already tried while another exists:
//! a refusing endpoint costs no request, an endpoint that dies under load costs at most what it
//! had half-answered, and a request the upstream dropped unanswered is resent elsewhere only
//! when that is safe.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Clients looping on kept-alive connections for `dur`; returns (requests, non-200 answers or
/// requests that got no answer).
fn load(addr: SocketAddr, clients: usize, dur: Duration, mid: impl FnOnce()) -> (usize, usize) {
    let total = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + dur;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (total, failed) = (total.clone(), failed.clone());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                while Instant::now() < end {
                    c.send(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
                    total.fetch_add(1, Ordering::Relaxed);
                    match c.read_response() {
                        Some(r) if r.status == 200 => {}
                        Some(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if r.header("connection").as_deref() == Some("close") {
                                c = Client::connect(addr);
                            }
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            c = Client::connect(addr);
                        }
                    }
                }
            })
        })
        .collect();
    thread::sleep(dur / 3);
    mid();
    for t in threads {
        t.join().unwrap();
    }
    (total.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

#[test]
fn a_refusing_endpoint_costs_no_request_under_concurrent_load() {
    let up = Upstream::ok(b"ok");
    let dead = dead_port();
    let gw = Gw::start(&config(&[dead.addr, up.addr], "", ""));
    let (total, failed) = load(gw.addr, 16, Duration::from_millis(1500), || {});
    assert!(total > 500, "only {total} requests");
    assert_eq!(failed, 0, "{failed} of {total} failed with one endpoint refusing");
}

#[test]
fn connect_failures_try_every_endpoint_once() {
    let up = Upstream::ok(b"ok");
    let (d1, d2, d3) = (dead_port(), dead_port(), dead_port());
    let gw = Gw::start(&config(&[d1.addr, d2.addr, d3.addr, up.addr], "", ""));
    // Whichever endpoint round robin starts at, the live one is reached.
    for _ in 0..8 {
        assert_eq!(get(gw.addr, "/").status, 200);
    }
    // All dead: one attempt each, then 502.
    let all_dead = Gw::start(&config(&[d1.addr, d2.addr, d3.addr], "", ""));
    let r = get(all_dead.addr, "/");
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_connect_failed");
}

/// An upstream that can be killed: it stops listening (so connects are refused) and closes
/// every open connection, answered or not.
struct Killable {
    addr: SocketAddr,
    killed: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
}

impl Killable {
    fn start() -> Killable {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let killed = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (k, s) = (killed.clone(), served.clone());
        thread::spawn(move || {
            while !k.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        conns.lock().unwrap().push(stream.try_clone().unwrap());
                        let s = s.clone();
                        thread::spawn(move || serve_until_closed(stream, &s));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
            drop(listener);
            for c in conns.lock().unwrap().iter() {
                let _ = c.shutdown(Shutdown::Both);
            }
        });
        Killable { addr, killed, served }
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

/// Answers each GET head with a small 200 until the connection closes.
fn serve_until_closed(mut s: TcpStream, served: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..p + 4);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
            served.fetch_add(1, Ordering::Relaxed);
        }
        match read_some(&mut s, &mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

#[test]
fn one_of_two_endpoints_dying_under_load_costs_at_most_a_tenth_of_a_percent() {
    let a = Killable::start();
    let b = Killable::start();
    let gw = Gw::start(&config(&[a.addr, b.addr], "", ""));
    let (total, failed) = load(gw.addr, 16, Duration::from_millis(1800), || a.kill());
    assert!(a.served.load(Ordering::Relaxed) > 0 && b.served.load(Ordering::Relaxed) > 0);
    assert!(total > 500, "only {total} requests");
    assert!(failed * 1000 <= total, "{failed} of {total} failed when one endpoint died");
}

#[test]
fn idempotent_request_dropped_unanswered_is_resent_to_the_other_endpoint() {
    // `drop` reads each request and closes without a byte of answer.
    let drop = Upstream::start(|c| {
        let _ = c.read_request();
    });
    let good = Upstream::ok(b"ok");
    let gw = Gw::start(&config(&[drop.addr, good.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    for i in 0..6 {
        let r = c.request(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "GET {i}");
    }
    assert_eq!(good.requests().len(), 6);
    assert!(!drop.requests().is_empty(), "round robin reached the dropping endpoint too");
    // A POST that reached the dropping endpoint is not repeated: 502, seen once.
    let mut saw_502 = false;
    for _ in 0..4 {
        let r = Client::connect(gw.addr).request(b"POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx");
        saw_502 |= r.status == 502;
    }
    assert!(saw_502);
    let posts = |u: &Upstream| u.requests().iter().filter(|r| r.request_line().starts_with("POST")).count();
    assert_eq!(posts(&drop) + posts(&good), 4, "no POST was sent twice");
}

#[test]
fn a_single_endpoint_that_drops_requests_is_not_retried_on_a_new_connection() {
    let drop = Upstream::start(|c| {
        let _ = c.read_request();
    });
    let gw = Gw::start(&config(&[drop.addr], "", ""));
    let r = get(gw.addr, "/");
    assert_eq!((r.status, r.error_code().as_str()), (502, "upstream_closed"));
    assert_eq!(drop.requests().len(), 1, "only another endpoint, or a stale pooled connection, earns a resend");
}

#[test]
fn request_written_to_a_connection_reset_mid_request_is_answered_once() {
    // Reads part of the head, then resets: a write failure or an early close, never two answers.
    let rst = Upstream::start(|c| {
        let mut b = [0u8; 8];
        let _ = c.stream.read(&mut b);
        let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
    });
    let good = Upstream::ok(b"ok");
    let gw = Gw::start(&config(&[rst.addr, good.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    for _ in 0..4 {
        assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
}

#[test]
fn with_health_checks_and_retries_killing_one_of_two_endpoints_costs_no_request() {
    let a = Killable::start();
    let b = Killable::start();
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{}\", \"{}\"]\n\
         [services.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_after = 2\n\
         [services.retry]\nattempts = 2\nbudget = 20\n\
         [[routes]]\nname = \"all\"\npaths = [\"/\"]\nservice = \"svc\"\n",
        a.addr, b.addr
    );
    let gw = Gw::start(&cfg);
    let (total, failed) = load(gw.addr, 16, Duration::from_millis(1800), || a.kill());
    assert!(total > 500, "only {total} requests");
    assert_eq!(failed, 0, "{failed} of {total} failed");
}

#[test]
fn without_a_budget_every_dropped_idempotent_request_is_resent() {
    // The default sets no retry budget: one endpoint closing connections unanswered costs no
    // request, however many (a budget of 20 % would fail the rest).
    let drop = Upstream::start(|c| {
        let _ = c.read_request();
    });
    let good = Upstream::ok(b"ok");
    let gw = Gw::start(&config(&[drop.addr, good.addr], "", ""));
    let mut c = Client::connect(gw.addr);
    for i in 0..60 {
        assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, "request {i}");
    }
    assert!(drop.requests().len() >= 20, "round robin reached the dropping endpoint");
}

//! Graceful drain: listeners close at once, but every request that reaches an open connection
//! during the grace is answered (with `Connection: close`), idle connections close at the end of
//! the grace, in-flight requests finish, and the shard stops within `timeouts.drain`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn no_request_sent_on_a_kept_alive_connection_is_lost_to_shutdown() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&config(&[up.addr], "", "[timeouts]\ndrain = \"5s\"\ndrain_grace = \"1s\"\n"));
    let addr = gw.addr;
    let (answered, lost, closes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let end = Instant::now() + Duration::from_secs(6);
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (answered, lost, closes) = (answered.clone(), lost.clone(), closes.clone());
            thread::spawn(move || {
                let Some(mut c) = Client::try_connect(addr) else { return };
                while Instant::now() < end {
                    if std::io::Write::write_all(&mut c.stream, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").is_err() {
                        // Closed before this request left: not a lost request; reconnect.
                        match Client::try_connect(addr) {
                            Some(n) => c = n,
                            None => return,
                        }
                        continue;
                    }
                    match c.read_response() {
                        Some(r) => {
                            assert_eq!(r.status, 200);
                            answered.fetch_add(1, Ordering::Relaxed);
                            if r.header("connection").as_deref() == Some("close") {
                                closes.fetch_add(1, Ordering::Relaxed);
                                match Client::try_connect(addr) {
                                    Some(n) => c = n,
                                    None => return,
                                }
                            }
                        }
                        None => {
                            lost.fetch_add(1, Ordering::Relaxed);
                            match Client::try_connect(addr) {
                                Some(n) => c = n,
                                None => return,
                            }
                        }
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    let started = Instant::now();
    gw.shutdown_and_join();
    let took = started.elapsed();
    for c in clients {
        c.join().unwrap();
    }
    let (answered, lost, closes) = (answered.load(Ordering::Relaxed), lost.load(Ordering::Relaxed), closes.load(Ordering::Relaxed));
    eprintln!("drain: answered {answered}, lost {lost}, answered with close {closes}, shutdown took {took:?}");
    assert!(answered > 100, "only {answered} answered");
    assert!(closes > 0, "requests during the drain are answered with Connection: close");
    assert_eq!(lost, 0, "{lost} requests lost ({answered} answered)");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}

#[test]
fn an_idle_connection_is_answered_during_the_grace_then_idle_ones_close() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&config(&[up.addr], "", "[timeouts]\ndrain = \"5s\"\ndrain_grace = \"1s\"\n"));
    let mut talker = Client::connect(gw.addr);
    assert_eq!(talker.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    let mut idle = Client::connect(gw.addr);
    assert_eq!(idle.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    let addr = gw.addr;
    let started = Instant::now();
    let stopper = thread::spawn(move || gw.shutdown_and_join());
    thread::sleep(Duration::from_millis(300));
    // Listeners closed at once.
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting after shutdown began");
    // A request on an open connection during the grace is answered, as the connection's last.
    let r = talker.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(talker.is_closed());
    // The idle one is closed at the end of the grace (plus a housekeeping tick), not before.
    assert!(idle.is_closed());
    let closed_at = started.elapsed();
    assert!(closed_at >= Duration::from_millis(900) && closed_at < Duration::from_millis(2500), "idle closed after {closed_at:?}");
    stopper.join().unwrap();
}

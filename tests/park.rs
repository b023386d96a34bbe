//! Idle keep-alive connections leave their tasks for the shard's parking lot and come back when
//! bytes arrive: every request on a parked connection is answered exactly once and in order, a
//! client that closes a parked connection frees it, the idle timeout and the drain grace close
//! parked connections as they close waiting ones, and parked connections stay counted.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn gateway(up: SocketAddr, timeouts: &str) -> Gw {
    gateway_on(up, "", timeouts)
}

fn gateway_on(up: SocketAddr, server: &str, timeouts: &str) -> Gw {
    Gw::start(&config(&[up], server, &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{timeouts}")))
}

fn wait_parked(gw: &Gw, n: f64) {
    let ok = wait_until(Duration::from_secs(3), || gw.metric("ringgate_connections_parked") == n);
    assert!(ok, "parked: {} (wanted {n})", gw.metric("ringgate_connections_parked"));
}

/// Nothing arrives on `c` within `dur`.
fn silent_for(c: &mut Client, dur: Duration) -> bool {
    c.stream.set_read_timeout(Some(dur)).unwrap();
    let got = c.read_bounded(1, dur);
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    got.is_empty()
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";

/// `n` connections that each made one request and have been parked since.
fn parked_clients(gw: &Gw, n: usize) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..n).map(|_| Client::connect(gw.addr)).collect();
    for c in &mut clients {
        assert_eq!(c.request(GET).status, 200);
    }
    wait_parked(gw, n as f64);
    clients
}

#[test]
fn quiet_connections_are_parked_and_every_request_after_is_answered_once_in_order() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(up.addr, "");
    let mut clients = parked_clients(&gw, 20);
    assert_eq!(gw.metric("ringgate_connections_open"), 20.0);
    // Each wakes with one request, then three pipelined in one write, on the same connection.
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.request(format!("GET /one/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }
    wait_parked(&gw, 20.0);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("GET /p/{i}/a HTTP/1.1\r\nHost: h\r\n\r\nGET /p/{i}/b HTTP/1.1\r\nHost: h\r\n\r\nGET /p/{i}/c HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    for c in &mut clients {
        for _ in 0..3 {
            assert_eq!(c.read_response().expect("an answer per pipelined request").status, 200);
        }
        // Nothing more than one answer per request.
        assert!(silent_for(c, Duration::from_millis(50)));
    }
    let paths: Vec<String> = up.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths.len(), 20 + 20 + 60);
    for i in 0..20 {
        let mine: Vec<&String> = paths.iter().filter(|p| p.starts_with(&format!("/p/{i}/"))).collect();
        assert_eq!(mine, [&format!("/p/{i}/a"), &format!("/p/{i}/b"), &format!("/p/{i}/c")], "in order");
    }
    assert!(gw.metric("ringgate_connections_parked_total") >= 40.0);
}

#[test]
fn a_parked_connection_its_client_closes_is_let_go() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(up.addr, "");
    let mut clients = parked_clients(&gw, 10);
    // Half close politely, half reset.
    for (i, c) in clients.drain(..).enumerate() {
        if i % 2 == 1 {
            let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
        }
        drop(c);
    }
    assert!(wait_until(Duration::from_secs(2), || gw.gateway().open_connections() == 0), "open: {}", gw.gateway().open_connections());
    assert_eq!(gw.metric("ringgate_connections_parked"), 0.0);
}

#[test]
fn parked_connections_close_at_their_idle_timeout_and_a_new_connection_at_its_header_timeout() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(up.addr, "[timeouts]\nidle = \"1s\"\nheader = \"2s\"\n");
    let mut used = Client::connect(gw.addr);
    assert_eq!(used.request(GET).status, 200);
    let used_at = Instant::now();
    // Connected, nothing sent: parked under the header timeout.
    let mut silent = Client::connect(gw.addr);
    let silent_at = Instant::now();
    wait_parked(&gw, 2.0);
    assert!(used.is_closed());
    let t = used_at.elapsed();
    assert!(t >= Duration::from_millis(950) && t < Duration::from_millis(1600), "idle connection closed after {t:?}");
    assert!(silent.is_closed());
    let t = silent_at.elapsed();
    assert!(t >= Duration::from_millis(1950) && t < Duration::from_millis(2600), "silent connection closed after {t:?}");
    assert!(wait_until(Duration::from_secs(1), || gw.gateway().open_connections() == 0));
}

#[test]
fn a_bad_head_on_a_woken_connection_gets_one_400_and_the_close() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(up.addr, "");
    let mut clients = parked_clients(&gw, 2);
    // A malformed header line, with a good request pipelined behind it: one answer, the 400,
    // and the connection closes (its framing is in doubt); nothing reaches the upstream.
    clients[0].send(b"GET /bad HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = clients[0].read_response().expect("an answer to the bad head");
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "bad_request", "{}", r.body_str());
    assert!(clients[0].is_closed());
    assert_eq!(up.requests().len(), 2, "only the two requests that parked the connections");
    // The other parked connection is untouched and serves on.
    assert_eq!(clients[1].request(GET).status, 200);
    assert_eq!(up.requests().len(), 3);
}

#[test]
fn a_slow_head_on_a_parked_connection_is_read_to_its_end() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(up.addr, "");
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(GET).status, 200);
    wait_parked(&gw, 1.0);
    // The first bytes wake it; the rest of the head comes after it could have parked again.
    c.send(b"GET /slow HTTP/1.1\r\n");
    thread::sleep(Duration::from_millis(300));
    c.send(b"Host: h\r\n\r\n");
    assert_eq!(c.read_response().expect("answered").status, 200);
    assert_eq!(up.requests().last().map(|r| r.path().to_string()).as_deref(), Some("/slow"));
}

#[test]
fn parked_connections_count_towards_the_connection_limit() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&config(&[up.addr], "", "[admin]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_connections = 3\n"));
    let mut clients = parked_clients(&gw, 3);
    // A fourth waits in the backlog, unanswered, until one of the three goes.
    let mut fourth = Client::connect(gw.addr);
    fourth.send(GET);
    assert!(silent_for(&mut fourth, Duration::from_millis(400)), "served over the limit");
    drop(clients.pop());
    assert_eq!(fourth.read_response().expect("served once a slot freed").status, 200);
}

#[test]
fn draining_serves_a_parked_connection_that_speaks_and_closes_the_rest_after_the_grace() {
    let up = Upstream::ok(b"ok");
    let gw = gateway(up.addr, "[timeouts]\ndrain = \"5s\"\ndrain_grace = \"1s\"\n");
    let mut talker = Client::connect(gw.addr);
    let mut quiet = Client::connect(gw.addr);
    for c in [&mut talker, &mut quiet] {
        assert_eq!(c.request(GET).status, 200);
    }
    wait_parked(&gw, 2.0);
    let started = Instant::now();
    let stopper = thread::spawn(move || gw.shutdown_and_join());
    thread::sleep(Duration::from_millis(300));
    let r = talker.request(GET);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(talker.is_closed());
    assert!(quiet.is_closed());
    let t = started.elapsed();
    assert!(t >= Duration::from_millis(900) && t < Duration::from_millis(2500), "parked connection closed after {t:?}");
    stopper.join().unwrap();
    // Writing to it now fails or is never answered: it is closed, not parked forever.
    let _ = quiet.stream.write_all(GET);
    assert!(quiet.read_response().is_none());
}

#[test]
fn the_epoll_driver_parks_and_wakes_connections_too() {
    let up = Upstream::ok(b"ok");
    let gw = gateway_on(up.addr, "driver = \"epoll\"", "");
    let mut clients = parked_clients(&gw, 10);
    for c in &mut clients {
        assert_eq!(c.request(GET).status, 200);
    }
    wait_parked(&gw, 10.0);
    drop(clients);
    assert!(wait_until(Duration::from_secs(2), || gw.gateway().open_connections() == 0));
    assert_eq!(up.requests().len(), 20);
}

//! Connection and process lifecycle: idle keep-alive timeout, the connection limit, graceful
//! drain on shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let up = Upstream::ok(b"x");
    let gw = Gw::start(&config(&[up.addr], "", "[timeouts]\nidle = \"300ms\"\n"));
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    let t = Instant::now();
    assert!(c.is_closed());
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(3), "closed after {waited:?}");
}

#[test]
fn connection_limit_pauses_accepting_until_a_slot_frees() {
    let up = Upstream::ok(b"x");
    let gw = Gw::start(&config(&[up.addr], "", "[limits]\nmax_connections = 2\n"));
    let mut a = Client::connect(gw.addr);
    let mut b = Client::connect(gw.addr);
    assert_eq!(a.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert_eq!(b.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    // The third connection completes in the kernel backlog but is not served yet.
    let mut c = Client::connect(gw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    c.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut probe = [0u8; 1];
    let early = read_some(&mut c.stream, &mut probe);
    assert!(early.is_err(), "served beyond the connection limit");
    assert_eq!(gw.gateway().open_connections(), 2);
    drop(a);
    c.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = c.read_response().expect("served once a slot freed");
    assert_eq!(r.status, 200);
}

#[test]
fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let up = Upstream::start(|c| {
        while let Some(r) = c.read_request() {
            if r.request_line().contains("/slow") {
                std::thread::sleep(Duration::from_millis(1500));
            }
            if !c.respond(b"finished") {
                return;
            }
        }
    });
    let gw = Gw::start(&config(&[up.addr], "", "[timeouts]\ndrain = \"5s\"\n"));
    let addr = gw.addr;
    let mut busy = Client::connect(addr);
    busy.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut idle = Client::connect(addr);
    assert_eq!(idle.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert!(wait_until(Duration::from_secs(2), || up.requests().len() == 2));
    let stopper = std::thread::spawn(move || gw.shutdown_and_join());
    // The in-flight request completes, marked as the connection's last.
    let r = busy.read_response().expect("in-flight request completes");
    assert_eq!((r.status, r.body_str().as_str()), (200, "finished"));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(busy.is_closed());
    // Idle keep-alive connections are closed.
    assert!(idle.is_closed());
    stopper.join().unwrap();
    // And nothing listens any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn a_second_gateway_on_a_served_port_is_refused_with_the_address() {
    // SO_REUSEPORT would let a second process share the port and split the traffic silently.
    let up = Upstream::ok(b"ok");
    let first = Gw::start(&config(&[up.addr], "", ""));
    let taken = first.addr;
    let text = config(&[up.addr], "", "").replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{taken}\"]"));
    let err = match ringgate::runtime::Gateway::start(ringgate::config::Config::parse(&text).unwrap()) {
        Ok(_) => panic!("a second gateway started on {taken}"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&taken.to_string()) && err.contains("already in use"), "{err}");
    assert_eq!(get(taken, "/").status, 200, "the first gateway still serves");
}

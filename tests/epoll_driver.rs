//! The epoll fallback driver (used where io_uring is unavailable) runs the same request path:
//! keep-alive with pooled upstreams, pipelining, chunked both ways, streamed bodies, timeouts.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

const EPOLL: &str = "driver = \"epoll\"";

#[test]
fn epoll_driver_serves_keep_alive_and_pipelined_requests() {
    let up = Upstream::ok(b"epoll");
    let gw = Gw::start(&config(&[up.addr], EPOLL, ""));
    let mut c = Client::connect(gw.addr);
    for _ in 0..5 {
        assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").body, b"epoll");
    }
    c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 200);
    assert_eq!(c.read_response().unwrap().status, 200);
    assert_eq!(up.accepted(), 1);
}

#[test]
fn epoll_driver_streams_chunked_and_large_bodies() {
    const TOTAL: usize = 16 << 20;
    let up = Upstream::start(|c| {
        while let Some(r) = c.read_request() {
            let body = format!("{}", r.body.len());
            if !c.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") {
                return;
            }
            let chunk = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
            if !c.write(chunk.as_bytes()) {
                return;
            }
        }
    });
    let gw = Gw::start(&config(&[up.addr], EPOLL, ""));
    let mut c = Client::connect(gw.addr);
    c.send(format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes());
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&vec![b'z'; TOTAL]).unwrap());
    let r = c.read_response().unwrap();
    writer.join().unwrap();
    assert_eq!(r.body_str(), TOTAL.to_string());
    let r = c.request(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(r.body_str(), "3");
}

#[test]
fn epoll_driver_enforces_idle_and_header_timeouts() {
    let up = Upstream::ok(b"x");
    let gw = Gw::start(&config(&[up.addr], EPOLL, "[timeouts]\nidle = \"300ms\"\nheader = \"300ms\"\n"));
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert!(c.is_closed());
    let mut slow = Client::connect(gw.addr);
    slow.send(b"GET / HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(slow.read_response().map(|r| r.status), Some(408));
}

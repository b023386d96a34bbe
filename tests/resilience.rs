//! Failing fast: a service's circuit breaker (shared by every shard) and its `max_concurrent`
//! bound, over real upstreams on port 0.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// An upstream answering 500 while `failing` is set, 200 otherwise.
fn switchable() -> (Upstream, Arc<AtomicBool>) {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let up = Upstream::start(move |c| {
        while c.read_request().is_some() {
            let ok = if f.load(Ordering::SeqCst) {
                c.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail")
            } else {
                c.respond(b"fine")
            };
            if !ok {
                return;
            }
        }
    });
    (up, failing)
}

fn breaker_config(up: &Upstream, workers: usize, breaker: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[services]]\nname = \"orders\"\nupstreams = [\"{}\"]\n{breaker}\n\
         [[routes]]\nname = \"all\"\npaths = [\"/\"]\nservice = \"orders\"\n",
        up.addr
    )
}

const BREAKER: &str = "[services.breaker]\nwindow = \"10s\"\nmin_requests = 4\nerror_rate = 50\nopen_for = \"300ms\"\nhalf_open_requests = 2\n\
                       fallback = { status = 503, content_type = \"application/json\", body = '{\"error\":\"orders temporarily unavailable\"}' }";

#[test]
fn breaker_opens_serves_the_fallback_and_closes_after_good_probes() {
    let (up, failing) = switchable();
    let gw = Gw::start(&breaker_config(&up, 1, BREAKER));
    let mut c = Client::connect(gw.addr);
    let req = b"GET /orders HTTP/1.1\r\nHost: h\r\n\r\n";
    for _ in 0..4 {
        assert_eq!(c.request(req).status, 500, "failures pass through until min_requests");
    }
    // Open: answered at once with the fallback, the upstream sees nothing.
    let started = Instant::now();
    for _ in 0..5 {
        let r = c.request(req);
        assert_eq!(r.status, 503);
        assert_eq!(r.body_str(), "{\"error\":\"orders temporarily unavailable\"}");
        assert_eq!(r.header("x-ringgate-circuit").as_deref(), Some("open"));
        assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    }
    assert!(started.elapsed() < Duration::from_millis(250), "not fast: {:?}", started.elapsed());
    assert_eq!(up.requests().len(), 4);
    // Half-open after open_for: two probes reach the upstream; both succeed, so it closes.
    failing.store(false, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(350));
    assert_eq!(c.request(req).status, 200);
    assert_eq!(c.request(req).status, 200);
    for _ in 0..3 {
        assert_eq!(c.request(req).status, 200, "closed again");
    }
    assert_eq!(up.requests().len(), 9);
    let admin = gw.gateway().admin_addr.unwrap();
    let text = metrics_text(admin);
    assert!(text.contains("ringgate_breaker_state{service=\"orders\"} 0"), "{text}");
    assert!(text.contains("ringgate_breaker_opened_total{service=\"orders\"} 1"));
    assert!(text.contains("ringgate_breaker_fallbacks_total{service=\"orders\"} 5"));
}

#[test]
fn a_failed_half_open_probe_opens_the_breaker_again() {
    let (up, _failing) = switchable();
    let gw = Gw::start(&breaker_config(&up, 1, BREAKER));
    let mut c = Client::connect(gw.addr);
    let req = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    for _ in 0..4 {
        c.request(req);
    }
    assert_eq!(c.request(req).status, 503);
    thread::sleep(Duration::from_millis(350));
    assert_eq!(c.request(req).status, 500, "the probe reaches the failing upstream");
    let r = c.request(req);
    assert_eq!((r.status, r.header("x-ringgate-circuit").as_deref()), (503, Some("open")), "open again at once");
    assert_eq!(up.requests().len(), 5);
}

#[test]
fn without_a_fallback_an_open_breaker_answers_a_json_503() {
    let (up, _failing) = switchable();
    let breaker = "[services.breaker]\nmin_requests = 2\nerror_rate = 100\nopen_for = \"10s\"";
    let gw = Gw::start(&breaker_config(&up, 1, breaker));
    let mut c = Client::connect(gw.addr);
    for _ in 0..2 {
        c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }
    let r = c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.error_code().as_str()), (503, "circuit_open"));
}

#[test]
fn a_two_shard_gateway_trips_on_the_combined_failure_rate() {
    // min_requests 10: neither shard alone sees 10 of the 12 requests, together they do.
    let (up, _failing) = switchable();
    let breaker = "[services.breaker]\nmin_requests = 10\nerror_rate = 50\nopen_for = \"10s\"";
    let gw = Gw::start(&breaker_config(&up, 2, breaker));
    for _ in 0..12 {
        // New connections spread over both shards' listeners.
        let _ = get(gw.addr, "/");
    }
    let r = get(gw.addr, "/");
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(r.error_code(), "circuit_open");
    assert!(up.requests().len() <= 12);
}

#[test]
fn over_max_concurrent_requests_are_refused_at_once() {
    let slow = Upstream::start(|c| {
        while c.read_request().is_some() {
            thread::sleep(Duration::from_millis(600));
            if !c.respond(b"slow") {
                return;
            }
        }
    });
    let gw = Gw::start(&config(&[slow.addr], "", "").replace("upstreams =", "max_concurrent = 2\nupstreams ="));
    let addr = gw.addr;
    let busy: Vec<_> = (0..2).map(|_| thread::spawn(move || get(addr, "/").status)).collect();
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = get(addr, "/");
    assert_eq!((r.status, r.error_code().as_str()), (503, "service_overloaded"));
    assert!(started.elapsed() < Duration::from_millis(300));
    for b in busy {
        assert_eq!(b.join().unwrap(), 200);
    }
    assert_eq!(get(addr, "/").status, 200, "a slot is free again");
}

fn metrics_text(admin: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

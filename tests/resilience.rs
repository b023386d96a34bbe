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

/// An upstream whose `/healthz` answers 200 or 503 by `healthy`, and 200 to everything else.
fn with_health_switch() -> (Upstream, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let up = Upstream::start(move |c| {
        while let Some(r) = c.read_request() {
            let ok = if r.request_line().contains("/healthz") && !h.load(Ordering::SeqCst) {
                c.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            } else {
                c.respond(b"ok")
            };
            if !ok {
                return;
            }
        }
    });
    (up, healthy)
}

fn two_endpoint_config(a: &Upstream, b: &Upstream, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{}\", \"{}\"]\n{extra}\n\
         [[routes]]\nname = \"all\"\npaths = [\"/\"]\nservice = \"svc\"\n",
        a.addr, b.addr
    )
}

fn api_requests(u: &Upstream) -> usize {
    u.requests().iter().filter(|r| !r.request_line().contains("/healthz")).count()
}

#[test]
fn active_health_takes_a_failing_endpoint_out_and_brings_it_back() {
    let (a, a_healthy) = with_health_switch();
    let (b, _) = with_health_switch();
    let health = "[services.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nhealthy_after = 2\nunhealthy_after = 2";
    let started = Instant::now();
    let gw = Gw::start(&two_endpoint_config(&a, &b, health));
    a_healthy.store(false, Ordering::SeqCst);
    // Out within interval x unhealthy_after (plus one interval of slack).
    thread::sleep(Duration::from_millis(350));
    let before = api_requests(&a);
    let mut c = Client::connect(gw.addr);
    for _ in 0..10 {
        assert_eq!(c.request(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    assert_eq!(api_requests(&a), before, "the unhealthy endpoint got requests");
    let text = metrics_text(gw.gateway().admin_addr.unwrap());
    assert!(text.contains(&format!("ringgate_upstream_endpoint_healthy{{service=\"svc\",endpoint=\"{}\"}} 0", a.addr)), "{text}");
    // Healthy again: back in the set.
    a_healthy.store(true, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(350));
    for _ in 0..10 {
        assert_eq!(c.request(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    assert!(api_requests(&a) > before, "the endpoint did not come back");
    // Health probes come once per endpoint per interval from the host, not once per shard.
    let probes = a.requests().iter().filter(|r| r.request_line().contains("/healthz")).count();
    let intervals = started.elapsed().as_millis() as usize / 100;
    assert!(probes <= intervals + 1, "{probes} probes in {intervals} intervals");
}

#[test]
fn every_endpoint_unhealthy_fails_fast_with_503() {
    let (a, ah) = with_health_switch();
    let (b, bh) = with_health_switch();
    ah.store(false, Ordering::SeqCst);
    bh.store(false, Ordering::SeqCst);
    let health = "[services.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_after = 1";
    let gw = Gw::start(&two_endpoint_config(&a, &b, health));
    thread::sleep(Duration::from_millis(250));
    let started = Instant::now();
    let r = get(gw.addr, "/x");
    assert_eq!((r.status, r.error_code().as_str()), (503, "no_healthy_upstream"));
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(api_requests(&a) + api_requests(&b), 0);
}

#[test]
fn outlier_detection_ejects_an_endpoint_that_keeps_failing() {
    let (bad, _failing) = switchable();
    let good = Upstream::ok(b"good");
    let outlier = "[services.outlier]\nconsecutive_failures = 3\neject_for = \"10s\"\nmax_ejected_percent = 50";
    let gw = Gw::start(&two_endpoint_config(&bad, &good, outlier));
    let mut c = Client::connect(gw.addr);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status);
    }
    assert_eq!(bad.requests().len(), 3, "ejected after 3 failures in a row");
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 3);
    let text = metrics_text(gw.gateway().admin_addr.unwrap());
    assert!(text.contains(&format!("ringgate_upstream_ejections_total{{service=\"svc\",endpoint=\"{}\"}} 1", bad.addr)), "{text}");
    assert!(text.contains(&format!("ringgate_upstream_endpoint_available{{service=\"svc\",endpoint=\"{}\"}} 0", bad.addr)));
}

#[test]
fn outlier_detection_never_ejects_more_than_its_share() {
    let (a, _) = switchable();
    let (b, _) = switchable();
    let outlier = "[services.outlier]\nconsecutive_failures = 2\neject_for = \"10s\"\nmax_ejected_percent = 50";
    let gw = Gw::start(&two_endpoint_config(&a, &b, outlier));
    let mut c = Client::connect(gw.addr);
    for _ in 0..12 {
        // One of the two may go; the other keeps serving (here, failing) rather than none.
        assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 500);
    }
}

#[test]
fn under_a_total_outage_retries_stay_within_the_budget() {
    // Both endpoints take each request and close without answering: every request is retried
    // unless the budget (20 % of requests, at least 3) says no.
    let drop_a = Upstream::start(|c| {
        let _ = c.read_request();
    });
    let drop_b = Upstream::start(|c| {
        let _ = c.read_request();
    });
    let retry = "[services.retry]\nattempts = 2\nbudget = 20";
    let gw = Gw::start(&two_endpoint_config(&drop_a, &drop_b, retry));
    const N: usize = 60;
    for _ in 0..N {
        assert_eq!(get(gw.addr, "/").status, 502);
    }
    let received = drop_a.requests().len() + drop_b.requests().len();
    assert!(received <= N + N / 5 + 3, "{received} upstream requests for {N} client requests");
    assert!(received > N, "no retry at all");
    let text = metrics_text(gw.gateway().admin_addr.unwrap());
    assert!(!text.contains("ringgate_upstream_retry_budget_exhausted_total{service=\"svc\"} 0"), "{text}");
}

#[test]
fn a_route_timeout_bounds_the_whole_upstream_exchange() {
    // The service would wait 10 s; the route's total timeout answers 504 after 300 ms.
    let silent = Upstream::start(|c| {
        let _ = c.read_request();
        thread::sleep(Duration::from_secs(3));
    });
    let cfg = config(&[silent.addr], "", "[upstream]\nresponse_timeout = \"10s\"\n").replace("service = \"svc\"", "service = \"svc\"\ntimeout = \"300ms\"");
    let gw = Gw::start(&cfg);
    let started = Instant::now();
    let r = get(gw.addr, "/");
    let took = started.elapsed();
    assert_eq!((r.status, r.error_code().as_str()), (504, "upstream_timeout"));
    assert!(took >= Duration::from_millis(280) && took < Duration::from_millis(1000), "{took:?}");
}

#[test]
fn retry_conditions_are_named_and_responses_are_not_retried() {
    let base = |retry: &str| {
        format!(
            "[[services]]\nname = \"s\"\nupstreams = [\"127.0.0.1:1\"]\n[services.retry]\n{retry}\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n"
        )
    };
    let err = ringgate::config::Config::parse(&base("on = [\"connect\", \"503\"]")).unwrap_err().to_string();
    assert!(err.contains("services[0].retry.on[1]") && err.contains("reached the application"), "{err}");
    assert!(ringgate::config::Config::parse(&base("on = [\"connect\", \"reset\"]\nbackoff = \"25ms\"")).is_ok());
}

#[test]
fn without_reset_in_on_a_dropped_request_is_not_sent_again() {
    let drop_a = Upstream::start(|c| {
        let _ = c.read_request();
    });
    let drop_b = Upstream::start(|c| {
        let _ = c.read_request();
    });
    let gw = Gw::start(&two_endpoint_config(&drop_a, &drop_b, "[services.retry]\non = [\"connect\"]"));
    assert_eq!(get(gw.addr, "/").status, 502);
    assert_eq!(drop_a.requests().len() + drop_b.requests().len(), 1);
    // With reset (the default), it is sent once more, to the other endpoint, after the backoff.
    let gw = Gw::start(&two_endpoint_config(&drop_a, &drop_b, "[services.retry]\nbackoff = \"100ms\""));
    let started = Instant::now();
    assert_eq!(get(gw.addr, "/").status, 502);
    assert!(started.elapsed() >= Duration::from_millis(50), "no backoff: {:?}", started.elapsed());
    assert_eq!(drop_a.requests().len() + drop_b.requests().len(), 3);
}

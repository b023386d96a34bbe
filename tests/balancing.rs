//! Balancing over real upstreams: weighted round robin shared by all shards, least_request
//! (power of two choices) away from a slow endpoint, and consistent hashing that keeps a key on
//! one endpoint across shards and moves few keys when an endpoint goes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ringgate::config::Config;

/// An upstream that names itself in its body, after `delay` (head and body in one write, so
/// Nagle's algorithm adds no delay of its own).
fn named(name: &'static str, delay: Duration) -> Upstream {
    Upstream::start(move |c| {
        let _ = c.stream.set_nodelay(true);
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}", name.len());
        while c.read_request().is_some() {
            thread::sleep(delay);
            if !c.write(response.as_bytes()) {
                return;
            }
        }
    })
}

fn service_config(workers: usize, upstreams: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\npin_cores = false\n\
         [[services]]\nname = \"svc\"\nupstreams = [{upstreams}]\n{extra}\n\
         [[routes]]\nname = \"all\"\npaths = [\"/\"]\nservice = \"svc\"\n"
    )
}

#[test]
fn weights_hold_within_five_percent_over_ten_thousand_requests() {
    let a = named("a", Duration::ZERO);
    let b = named("b", Duration::ZERO);
    let gw = Gw::start(&service_config(2, &format!("\"{}\", {{ addr = \"{}\", weight = 3 }}", a.addr, b.addr), ""));
    let mut c = Client::connect(gw.addr);
    const N: usize = 10_000;
    let mut to_b = 0;
    for _ in 0..N {
        if c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").body == b"b" {
            to_b += 1;
        }
    }
    let share = to_b as f64 / N as f64;
    assert!((share - 0.75).abs() <= 0.05 * 0.75, "weight 3 of 4 got {share}");
}

#[test]
fn round_robin_alternates_whichever_shard_takes_the_request() {
    // Shared across shards: new connections (spread over two shards) still alternate.
    let a = named("a", Duration::ZERO);
    let b = named("b", Duration::ZERO);
    let gw = Gw::start(&service_config(2, &format!("\"{}\", \"{}\"", a.addr, b.addr), ""));
    let bodies: Vec<Vec<u8>> = (0..6).map(|_| get(gw.addr, "/").body).collect();
    for pair in bodies.windows(2) {
        assert_ne!(pair[0], pair[1], "{:?}", bodies.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>());
    }
}

#[test]
fn least_request_sends_most_requests_to_the_fast_endpoint() {
    let fast = named("fast", Duration::ZERO);
    let slow = named("slow", Duration::from_millis(50));
    let gw = Gw::start(&service_config(1, &format!("\"{}\", \"{}\"", fast.addr, slow.addr), "balance = \"least_request\""));
    let addr = gw.addr;
    let (to_fast, total) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let end = Instant::now() + Duration::from_millis(1500);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (to_fast, total) = (to_fast.clone(), total.clone());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                while Instant::now() < end {
                    if c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").body == b"fast" {
                        to_fast.fetch_add(1, Ordering::Relaxed);
                    }
                    total.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (f, t) = (to_fast.load(Ordering::Relaxed), total.load(Ordering::Relaxed));
    assert!(f * 100 >= t * 80, "{f} of {t} to the fast endpoint");
}

#[test]
fn consistent_hash_keeps_keys_across_shards_and_moves_few_when_one_goes() {
    let ups: Vec<Upstream> = ["a", "b", "c", "d"].into_iter().map(|n| named(n, Duration::ZERO)).collect();
    let list = |n: usize| ups[..n].iter().map(|u| format!("\"{}\"", u.addr)).collect::<Vec<_>>().join(", ");
    let hashed = "balance = \"consistent_hash\"\nhash_on = \"header:X-User\"";
    let gw = Gw::start(&service_config(2, &list(4), hashed));
    let owner = |user: usize| {
        // A new connection per request, so both shards answer keys.
        let r = Client::connect(gw.addr).request(format!("GET / HTTP/1.1\r\nHost: h\r\nX-User: user-{user}\r\n\r\n").as_bytes());
        String::from_utf8_lossy(&r.body).into_owned()
    };
    const USERS: usize = 200;
    let before: Vec<String> = (0..USERS).map(owner).collect();
    for (u, o) in before.iter().enumerate().take(50) {
        assert_eq!(&owner(u), o, "user {u} moved without a change");
    }
    let spread: std::collections::HashSet<&String> = before.iter().collect();
    assert_eq!(spread.len(), 4, "keys spread over every endpoint");
    gw.gateway().reload_with(Config::parse(&service_config(2, &list(3), hashed)).unwrap()).expect("reload accepted");
    thread::sleep(Duration::from_millis(200));
    let after: Vec<String> = (0..USERS).map(owner).collect();
    // Exactly the removed endpoint's keys move (its share varies with the random ports the test
    // endpoints get: about a quarter, bounded loosely here).
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let on_d = before.iter().filter(|b| *b == "d").count();
    assert_eq!(moved, on_d, "{moved} keys moved, {on_d} were on the removed endpoint");
    assert!(on_d * 100 <= USERS * 45, "{on_d} of {USERS} keys were on one of four endpoints");
    assert!(before.iter().zip(&after).filter(|(b, a)| b != a).all(|(b, _)| b == "d"), "only the removed endpoint's keys move");
}

#[test]
fn balancing_settings_are_checked_at_load() {
    let cases = [
        ("{ addr = \"127.0.0.1:1\", wieght = 2 }", "", "services[0].upstreams[0].wieght"),
        ("{ weight = 2 }", "", "services[0].upstreams[0].addr"),
        ("{ addr = \"127.0.0.1:1\", weight = 0 }", "", "services[0].upstreams[0].weight"),
        ("\"127.0.0.1:1\"", "balance = \"fastest\"", "services[0].balance"),
        ("\"127.0.0.1:1\"", "balance = \"consistent_hash\"\nhash_on = \"body\"", "services[0].hash_on"),
        ("\"127.0.0.1:1\"", "hash_on = \"ip\"", "services[0].hash_on"),
    ];
    for (upstreams, extra, path) in cases {
        let err = Config::parse(&service_config(1, upstreams, extra)).unwrap_err().to_string();
        assert!(err.contains(path), "{upstreams} {extra}: {err}");
    }
    assert!(Config::parse(&service_config(1, "{ addr = \"127.0.0.1:1\", weight = 5 }, \"127.0.0.1:2\"", "balance = \"least_request\"")).is_ok());
}

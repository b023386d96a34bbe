//! The response cache end to end: a real origin that counts requests and answers what each test
//! asks of it (by path), the real gateway in front, raw HTTP bytes from the client. What is
//! asserted: what the origin received (how many requests, which validators) and what the client
//! got (status, body, Age, Cache-Status).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Gw, Received, Response, UpConn, Upstream};

/// An origin whose answer is made by `f` from the request and the count of requests so far.
fn origin(f: impl Fn(&Received, usize) -> Vec<u8> + Send + Sync + 'static) -> (Upstream, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    let f = Arc::new(f);
    let up = Upstream::start(move |c: &mut UpConn| {
        while let Some(r) = c.read_request() {
            let k = n.fetch_add(1, Ordering::SeqCst) + 1;
            let bytes = f(&r, k);
            if !c.write(&bytes) {
                return;
            }
            if bytes.windows(17).any(|w| w.eq_ignore_ascii_case(b"connection: close")) {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    });
    (up, count)
}

fn ok(extra: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn gateway(up: SocketAddr, workers: usize, cache_extra: &str, policy: &str) -> Gw {
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\npin_cores = false\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[caches]]\nname = \"edge\"\n{cache_extra}\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{up}\"]\n\
         [[routes]]\nname = \"products\"\npaths = [\"/\"]\nservice = \"svc\"\ncache = \"edge\"\n{policy}\n"
    );
    Gw::start(&toml)
}

fn get(c: &mut Client, path: &str, extra: &str) -> Response {
    c.request(format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n{extra}\r\n").as_bytes())
}

fn status_of(r: &Response) -> String {
    r.header("cache-status").unwrap_or_default()
}

fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("admin listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn metric(gw: &Gw, name: &str) -> u64 {
    let (_, text) = admin(gw.gateway().admin_addr.unwrap(), "GET", "/metrics");
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

#[test]
fn a_fresh_hit_does_not_reach_the_origin_and_head_is_answered_from_a_stored_get() {
    let (up, n) = origin(|_, k| ok("Cache-Control: max-age=60\r\nETag: \"v1\"\r\n", &format!("body-{k}")));
    let gw = gateway(up.addr, 1, "", "");
    let mut c = Client::connect(gw.addr);
    let first = get(&mut c, "/p/1", "");
    assert_eq!(first.body_str(), "body-1");
    assert!(status_of(&first).contains("fwd=miss") && status_of(&first).contains("stored"), "{}", first.head);
    thread::sleep(Duration::from_millis(1100));
    let second = get(&mut c, "/p/1", "");
    assert_eq!(second.body_str(), "body-1");
    assert!(status_of(&second).starts_with("ringgate; hit"), "{}", second.head);
    let age: u64 = second.header("age").unwrap().parse().unwrap();
    assert!((1..=2).contains(&age), "age {age}");
    assert_eq!(second.header("content-length").as_deref(), Some("6"));
    c.send(b"HEAD /p/1 HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    let head = c.read_response_for(true).expect("HEAD answer");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length").as_deref(), Some("6"));
    assert!(status_of(&head).contains("hit"));
    // The client's own conditional, answered by the cache.
    let cond = get(&mut c, "/p/1", "If-None-Match: \"v1\"\r\n");
    assert_eq!(cond.status, 304, "{}", cond.head);
    assert_eq!(cond.header("etag").as_deref(), Some("\"v1\""));
    assert_eq!(n.load(Ordering::SeqCst), 1);
    // Another query is another URL.
    assert_eq!(get(&mut c, "/p/1?x=1", "").body_str(), "body-2");
    assert!(metric(&gw, "ringgate_cache_responses_total{cache=\"edge\",result=\"hit\"}") >= 3);
}

#[test]
fn an_expired_entry_is_fetched_again_and_a_304_refreshes_it() {
    let (up, n) = origin(|r, k| {
        if r.path_is("/plain") {
            return ok("Cache-Control: max-age=1\r\n", &format!("plain-{k}"));
        }
        if r.header("if-none-match").as_deref() == Some("\"v1\"") {
            return b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\nX-Version: refreshed\r\n\r\n".to_vec();
        }
        ok("Cache-Control: max-age=1\r\nETag: \"v1\"\r\nX-Version: first\r\n", "validated-body")
    });
    let gw = gateway(up.addr, 1, "", "");
    let mut c = Client::connect(gw.addr);
    assert_eq!(get(&mut c, "/plain", "").body_str(), "plain-1");
    assert_eq!(get(&mut c, "/v", "").header("x-version").as_deref(), Some("first"));
    thread::sleep(Duration::from_millis(2100));
    // No validator: fetched whole again.
    assert_eq!(get(&mut c, "/plain", "").body_str(), "plain-3");
    let r = get(&mut c, "/v", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "validated-body");
    assert_eq!(r.header("x-version").as_deref(), Some("refreshed"), "the 304's fields replace the stored ones");
    assert!(status_of(&r).contains("fwd=stale") && status_of(&r).contains("fwd-status=304"), "{}", r.head);
    let sent = up.requests();
    assert_eq!(sent.last().unwrap().header("if-none-match").as_deref(), Some("\"v1\""));
    // Refreshed with max-age=60: a hit now.
    assert!(status_of(&get(&mut c, "/v", "")).contains("hit"));
    assert_eq!(n.load(Ordering::SeqCst), 4);
}

#[test]
fn vary_selects_among_stored_variants() {
    let (up, n) = origin(|r, _| {
        let lang = r.header("accept-language").unwrap_or_default();
        ok("Cache-Control: max-age=60\r\nVary: Accept-Language\r\n", &format!("hello-{lang}"))
    });
    let gw = gateway(up.addr, 1, "", "");
    let mut c = Client::connect(gw.addr);
    assert_eq!(get(&mut c, "/greet", "Accept-Language: en\r\n").body_str(), "hello-en");
    assert_eq!(get(&mut c, "/greet", "Accept-Language: fr\r\n").body_str(), "hello-fr");
    let again = get(&mut c, "/greet", "Accept-Language: en\r\n");
    assert_eq!(again.body_str(), "hello-en");
    assert!(status_of(&again).contains("hit"));
    assert_eq!(get(&mut c, "/greet", "Accept-Language:   fr\r\n").body_str(), "hello-fr");
    assert_eq!(n.load(Ordering::SeqCst), 2);
    // No Accept-Language is a variant of its own.
    assert_eq!(get(&mut c, "/greet", "").body_str(), "hello-");
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[test]
fn authorization_no_store_private_and_set_cookie_follow_the_rfc() {
    let (up, n) = origin(|r, k| {
        let cc = match r.path() {
            "/auth-plain" => "max-age=60",
            "/auth-shared" => "s-maxage=60",
            "/no-store" => "no-store, max-age=60",
            "/private" => "private, max-age=60",
            _ => "max-age=60",
        };
        let cookie = if r.path_is("/cookie") { "Set-Cookie: s=1\r\n" } else { "" };
        ok(&format!("Cache-Control: {cc}\r\n{cookie}"), &format!("{k}"))
    });
    let gw = gateway(up.addr, 1, "", "");
    let mut c = Client::connect(gw.addr);
    let twice = |c: &mut Client, path: &str, extra: &str| {
        let before = n.load(Ordering::SeqCst);
        get(c, path, extra);
        let r = get(c, path, extra);
        (n.load(Ordering::SeqCst) - before, r)
    };
    assert_eq!(twice(&mut c, "/auth-plain", "Authorization: Basic YTpi\r\n").0, 2, "Authorization without public/s-maxage");
    assert_eq!(twice(&mut c, "/auth-shared", "Authorization: Basic YTpi\r\n").0, 1, "s-maxage makes it shareable");
    assert_eq!(twice(&mut c, "/no-store", "").0, 2);
    assert_eq!(twice(&mut c, "/private", "").0, 2);
    let (fetched, r) = twice(&mut c, "/cookie", "");
    assert_eq!(fetched, 1, "RFC 9111 lets a shared cache store Set-Cookie");
    assert_eq!(r.header("set-cookie").as_deref(), Some("s=1"));
    let (fetched, r) = twice(&mut c, "/plain", "Cache-Control: no-store\r\n");
    assert_eq!(fetched, 2, "a request's no-store is not stored");
    assert!(status_of(&r).contains("fwd="));
    // A request's no-cache revalidates; only-if-cached with nothing stored is a 504.
    get(&mut c, "/fresh", "");
    let before = n.load(Ordering::SeqCst);
    get(&mut c, "/fresh", "Cache-Control: no-cache\r\n");
    assert_eq!(n.load(Ordering::SeqCst), before + 1);
    let r = get(&mut c, "/never-stored", "Cache-Control: only-if-cached\r\n");
    assert_eq!(r.status, 504);
    assert_eq!(r.error_code(), "not_cached");
    // A route that keeps cookies out of the cache.
    let strict = gateway(up.addr, 1, "", "[routes.cache_policy]\nstore_set_cookie = false");
    let mut c = Client::connect(strict.addr);
    assert_eq!(twice(&mut c, "/cookie", "").0, 2);
}

#[test]
fn a_successful_unsafe_method_invalidates_the_url_and_its_location() {
    let (up, n) = origin(|r, k| {
        if r.request_line().starts_with("POST") {
            return b"HTTP/1.1 201 Created\r\nLocation: /items/9\r\nContent-Length: 0\r\n\r\n".to_vec();
        }
        if r.request_line().starts_with("DELETE") {
            return b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_vec();
        }
        ok("Cache-Control: max-age=60\r\n", &format!("v{k}"))
    });
    let gw = gateway(up.addr, 1, "", "");
    let mut c = Client::connect(gw.addr);
    assert_eq!(get(&mut c, "/items", "").body_str(), "v1");
    assert_eq!(get(&mut c, "/items/9", "").body_str(), "v2");
    assert_eq!(get(&mut c, "/items", "").body_str(), "v1");
    let post = c.request(b"POST /items HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(post.status, 201);
    assert!(status_of(&post).contains("fwd=bypass"), "{}", post.head);
    assert_eq!(get(&mut c, "/items", "").body_str(), "v4", "the POST's URL was invalidated");
    assert_eq!(get(&mut c, "/items/9", "").body_str(), "v5", "so was its Location");
    // A failed unsafe request invalidates nothing.
    let del = c.request(b"DELETE /items HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    assert_eq!(del.status, 500);
    assert_eq!(get(&mut c, "/items", "").body_str(), "v4");
    assert_eq!(n.load(Ordering::SeqCst), 6);
}

#[test]
fn purges_reach_every_shard() {
    let (up, n) = origin(|_, k| ok("Cache-Control: max-age=300\r\n", &format!("v{k}")));
    let gw = gateway(up.addr, 2, "", "");
    // Connections land on both shards (SO_REUSEPORT spreads them); each shard stores its own copy.
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(gw.addr)).collect();
    for c in clients.iter_mut() {
        assert_eq!(get(c, "/cat/shoes?page=1", "").status, 200);
        assert_eq!(get(c, "/cat/hats", "").status, 200);
    }
    let shards = n.load(Ordering::SeqCst) / 2;
    assert!((1..=2).contains(&shards), "{} origin requests", n.load(Ordering::SeqCst));
    let a = gw.gateway().admin_addr.unwrap();
    let (status, body) = admin(a, "DELETE", "/cache?url=http%3A%2F%2Fshop.test%2Fcat%2Fshoes%3Fpage%3D1");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["purged"].as_u64(), Some(shards as u64), "{body}");
    for c in clients.iter_mut() {
        let r = get(c, "/cat/hats", "");
        assert!(status_of(&r).contains("hit"), "not purged: {}", r.head);
    }
    let before = n.load(Ordering::SeqCst);
    for c in clients.iter_mut() {
        get(c, "/cat/shoes?page=1", "");
    }
    assert_eq!(n.load(Ordering::SeqCst) - before, shards, "one fetch per shard after the purge");
    let (status, body) = admin(a, "DELETE", "/cache?prefix=/cat");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["purged"].as_u64(), Some(2 * shards as u64), "{body}");
    assert_eq!(admin(a, "DELETE", "/cache").0, 400);
}

#[test]
fn concurrent_misses_collapse_into_one_upstream_request() {
    let (up, n) = origin(|_, k| {
        thread::sleep(Duration::from_millis(300));
        ok("Cache-Control: max-age=60\r\n", &format!("v{k}"))
    });
    let gw = gateway(up.addr, 1, "", "");
    let addr = gw.addr;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let bodies = bodies.clone();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = get(&mut c, "/hot", "");
                bodies.lock().unwrap().push((r.status, r.body_str(), status_of(&r)));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 100);
    assert!(bodies.iter().all(|(s, b, _)| *s == 200 && b == "v1"), "{bodies:?}");
    assert_eq!(n.load(Ordering::SeqCst), 1, "one upstream request for 100 concurrent misses");
    assert!(bodies.iter().filter(|(_, _, cs)| cs.contains("collapsed")).count() >= 90);
}

#[test]
fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let (up, n) = origin(|_, k| {
        if k > 1 {
            thread::sleep(Duration::from_millis(300));
        }
        ok("Cache-Control: max-age=1, stale-while-revalidate=30\r\n", &format!("v{k}"))
    });
    let gw = gateway(up.addr, 1, "", "");
    let mut c = Client::connect(gw.addr);
    assert_eq!(get(&mut c, "/swr", "").body_str(), "v1");
    thread::sleep(Duration::from_millis(2100));
    let t = Instant::now();
    let r = get(&mut c, "/swr", "");
    assert_eq!(r.body_str(), "v1");
    assert!(t.elapsed() < Duration::from_millis(250), "served stale at once, not after the origin");
    assert!(status_of(&r).contains("stale-while-revalidate"), "{}", r.head);
    assert!(common::wait_until(Duration::from_secs(3), || n.load(Ordering::SeqCst) == 2));
    // One background request made v2 (counted when v2 is first served: v2 goes stale itself a
    // second later, on a busy machine possibly before the loop sees it).
    let mut upstream_at_v2 = 0;
    assert!(common::wait_until(Duration::from_secs(3), || {
        upstream_at_v2 = n.load(Ordering::SeqCst);
        get(&mut c, "/swr", "").body_str() == "v2"
    }));
    assert_eq!(upstream_at_v2, 2);
}

#[test]
fn stale_if_error_serves_stale_when_the_origin_fails_or_is_gone() {
    let fail = Arc::new(AtomicUsize::new(0));
    let f = fail.clone();
    let (up, _) = origin(move |r, k| match f.load(Ordering::SeqCst) {
        0 if r.path_is("/strict") => ok("Cache-Control: max-age=1, must-revalidate\r\n", &format!("v{k}")),
        0 => ok("Cache-Control: max-age=1, stale-if-error=60\r\n", &format!("v{k}")),
        1 => b"HTTP/1.1 503 Down\r\nContent-Length: 4\r\n\r\ndown".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 100\r\n\r\ntrunc".to_vec(),
    });
    // The route's default applies to /strict too; must-revalidate forbids it there.
    let gw = gateway(up.addr, 1, "", "[routes.cache_policy]\nstale_if_error = \"60s\"");
    let mut c = Client::connect(gw.addr);
    assert_eq!(get(&mut c, "/sie", "").body_str(), "v1");
    fail.store(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(2100));
    let r = get(&mut c, "/sie", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "v1");
    assert!(status_of(&r).contains("stale-if-error") && status_of(&r).contains("fwd-status=503"), "{}", r.head);

    // The origin drops connections without answering.
    fail.store(2, Ordering::SeqCst);
    let r = get(&mut c, "/sie", "");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "v1");
    assert!(status_of(&r).contains("stale-if-error"), "{}", r.head);
    // must-revalidate forbids it: the error goes through.
    fail.store(0, Ordering::SeqCst);
    assert_eq!(get(&mut c, "/strict", "").status, 200);
    fail.store(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(2100));
    assert_eq!(get(&mut c, "/strict", "").status, 503);
}

#[test]
fn chunked_and_close_delimited_bodies_are_stored_whole() {
    let (up, n) = origin(|r, _| match r.path() {
        "/chunked" => b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: close\r\n\r\nuntil-the-close".to_vec(),
    });
    let gw = gateway(up.addr, 1, "", "");
    let mut c = Client::connect(gw.addr);
    for _ in 0..2 {
        let r = get(&mut c, "/chunked", "");
        assert_eq!(r.body_str(), "hello world");
        assert_eq!(r.header("content-length").as_deref(), Some("11"));
        assert!(r.header("transfer-encoding").is_none());
        let r = get(&mut c, "/close", "");
        assert_eq!(r.body_str(), "until-the-close");
        assert_eq!(r.header("content-length").as_deref(), Some("15"));
    }
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

#[test]
fn objects_over_max_object_stream_through_uncached() {
    let big = "x".repeat(100_000);
    let big2 = big.clone();
    let (up, n) = origin(move |r, _| match r.path() {
        "/big-length" => ok("Cache-Control: max-age=60\r\n", &big2),
        "/big-close" => format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: close\r\n\r\n{big2}").into_bytes(),
        _ => {
            let mut b = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..10 {
                b.extend_from_slice(format!("{:x}\r\n{}\r\n", 10_000, &big2[..10_000]).as_bytes());
            }
            b.extend_from_slice(b"0\r\n\r\n");
            b
        }
    });
    let gw = gateway(up.addr, 1, "max_memory = \"1MiB\"\nmax_object = \"64KiB\"", "");
    let mut c = Client::connect(gw.addr);
    for _ in 0..2 {
        let r = get(&mut c, "/big-length", "");
        assert_eq!(r.body.len(), 100_000);
        let r = get(&mut c, "/big-chunked", "");
        assert_eq!(r.body_str(), big);
        assert!(status_of(&r).contains("fwd=miss") && !status_of(&r).contains("stored"), "{}", r.head);
        // Close-delimited: re-chunked for the HTTP/1.1 client, which keeps its connection.
        let r = get(&mut c, "/big-close", "");
        assert_eq!(r.body_str(), big);
        assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    }
    assert_eq!(n.load(Ordering::SeqCst), 6);
    // The connection is still good.
    assert_eq!(get(&mut c, "/big-length", "").status, 200);
}

#[test]
fn memory_stays_within_max_memory_under_many_urls() {
    let (up, _) = origin(|_, _| ok("Cache-Control: max-age=300\r\n", &"b".repeat(2000)));
    let gw = gateway(up.addr, 1, "max_memory = \"256KiB\"\nmax_object = \"16KiB\"", "");
    let mut c = Client::connect(gw.addr);
    for i in 0..1500 {
        assert_eq!(get(&mut c, &format!("/u/{i}"), "").status, 200);
    }
    let bytes = metric(&gw, "ringgate_cache_bytes{");
    let entries = metric(&gw, "ringgate_cache_entries{");
    assert!(bytes <= 256 << 10, "{bytes} bytes held");
    assert!(entries > 50, "{entries} entries");
    assert!(metric(&gw, "ringgate_cache_evicted_total{") >= 1400 - entries);
}

#[test]
fn a_kept_alive_connection_gets_one_answer_per_request_whatever_the_cache_does() {
    let (up, _) = origin(|r, k| match r.path() {
        "/err" => b"HTTP/1.1 502 Bad\r\nContent-Length: 3\r\n\r\nbad".to_vec(),
        "/nostore" => ok("Cache-Control: no-store\r\n", &format!("n{k}")),
        _ => ok("Cache-Control: max-age=60\r\n", &format!("c{k}")),
    });
    let gw = gateway(up.addr, 1, "", "");
    let mut c = Client::connect(gw.addr);
    // Pipelined: hits, misses, a HEAD, an error, a 304, all in one write.
    let paths = ["/a", "/a", "/err", "/nostore", "/a", "/b", "/a"];
    let mut batch = String::new();
    for p in paths {
        batch.push_str(&format!("GET {p} HTTP/1.1\r\nHost: shop.test\r\n\r\n"));
    }
    batch.push_str("HEAD /a HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    batch.push_str("GET /a HTTP/1.1\r\nHost: shop.test\r\nIf-None-Match: *\r\n\r\n");
    c.send(batch.as_bytes());
    let mut statuses = Vec::new();
    for (i, _) in paths.iter().enumerate() {
        let r = c.read_response().unwrap_or_else(|| panic!("answer {i}"));
        statuses.push(r.status);
    }
    statuses.push(c.read_response_for(true).expect("HEAD answer").status);
    statuses.push(c.read_response().expect("304 answer").status);
    assert_eq!(statuses, [200, 200, 502, 200, 200, 200, 200, 200, 304]);
    assert!(c.read_bounded(1, Duration::from_millis(200)).is_empty(), "nothing more");
}

#[test]
fn a_reload_keeps_the_stored_responses_of_a_cache_it_keeps() {
    let (up, n) = origin(|_, k| ok("Cache-Control: max-age=300\r\n", &format!("v{k}")));
    let toml = |extra: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n[[caches]]\nname = \"edge\"\n{extra}\n\
             [[services]]\nname = \"svc\"\nupstreams = [\"{}\"]\n\
             [[routes]]\nname = \"products\"\npaths = [\"/\"]\nservice = \"svc\"\ncache = \"edge\"\n",
            up.addr
        )
    };
    let gw = Gw::start(&toml(""));
    let mut c = Client::connect(gw.addr);
    assert_eq!(get(&mut c, "/kept", "").body_str(), "v1");
    // Same cache, another bound: kept.
    let cfg = ringgate::config::Config::parse(&toml("max_memory = \"32MiB\"")).unwrap();
    gw.gateway().reload_with(cfg).expect("reload");
    thread::sleep(Duration::from_millis(200));
    let mut c = Client::connect(gw.addr);
    let r = get(&mut c, "/kept", "");
    assert_eq!(r.body_str(), "v1");
    assert!(status_of(&r).contains("hit"), "{}", r.head);
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn credentials_other_than_authorization_keep_responses_personal() {
    let (up, n) = origin(|r, k| {
        let vary = if r.path_is("/vary-consumer") { "Vary: X-Consumer\r\n" } else { "" };
        let who = r.header("x-consumer").unwrap_or_default();
        ok(&format!("Cache-Control: max-age=60\r\n{vary}"), &format!("{who}-{k}"))
    });
    let toml = |key: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n[[caches]]\nname = \"edge\"\n\
             [[api_keys]]\nname = \"keys\"\nheader = \"X-Api-Key\"\nforward_consumer = \"X-Consumer\"\n\
             keys = [{{ consumer = \"alice\", sha256 = \"f82ed249117cbb38d189bb742ad45f93b3993287304f8951c8949286283d9af3\" }}, {{ consumer = \"bob\", sha256 = \"98358f149143cb5a32a6c7f9d993680c4dc5d487628634bfd8247a5850fbde15\" }}]\n\
             [[services]]\nname = \"svc\"\nupstreams = [\"{}\"]\n\
             [[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"svc\"\nauth = [\"keys\"]\ncache = \"edge\"\n{key}\n",
            up.addr
        )
    };
    let gw = Gw::start(&toml(""));
    let mut c = Client::connect(gw.addr);
    let as_ = |c: &mut Client, who: &str, path: &str| {
        let key = if who == "alice" { "key-alice-0123456789" } else { "key-bob-0123456789ab" };
        get(c, path, &format!("X-Api-Key: {key}\r\nX-Consumer: {who}-forged\r\n")).body_str()
    };
    // Authenticated and not public: not shared.
    assert_eq!(as_(&mut c, "alice", "/me"), "alice-1");
    assert_eq!(as_(&mut c, "bob", "/me"), "bob-2");
    // Varying on a header the gateway sets: not stored (the client's forged copy would pick it).
    assert_eq!(as_(&mut c, "alice", "/vary-consumer"), "alice-3");
    assert_eq!(as_(&mut c, "bob", "/vary-consumer"), "bob-4");
    assert_eq!(n.load(Ordering::SeqCst), 4);
    // Keyed by consumer: each consumer has their own entry.
    let gw = Gw::start(&toml("[routes.cache_policy]\nkey = [\"method\", \"host\", \"path\", \"query\", \"consumer\"]"));
    let mut c = Client::connect(gw.addr);
    assert_eq!(as_(&mut c, "alice", "/me"), "alice-5");
    assert_eq!(as_(&mut c, "bob", "/me"), "bob-6");
    assert_eq!(as_(&mut c, "alice", "/me"), "alice-5");
    assert_eq!(as_(&mut c, "bob", "/me"), "bob-6");
}

#[test]
fn an_unsafe_request_invalidates_the_url_on_every_shard() {
    let (up, n) = origin(|r, k| {
        if r.request_line().starts_with("PUT") {
            return b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        }
        ok("Cache-Control: max-age=300\r\n", &format!("v{k}"))
    });
    let gw = gateway(up.addr, 2, "", "");
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(gw.addr)).collect();
    for c in clients.iter_mut() {
        get(c, "/doc", "");
    }
    let shards = n.load(Ordering::SeqCst);
    let put = clients[0].request(b"PUT /doc HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(put.status, 204);
    let before = n.load(Ordering::SeqCst);
    for c in clients.iter_mut() {
        let r = get(c, "/doc", "");
        assert_eq!(r.status, 200);
    }
    assert_eq!(n.load(Ordering::SeqCst) - before, shards, "every shard fetched it again, once");
}

#[test]
fn waiters_are_released_as_soon_as_the_response_is_known_not_to_be_stored() {
    let (up, n) = origin(|_, k| {
        thread::sleep(Duration::from_millis(300));
        // A long body, relayed uncached: waiters must not wait for its end.
        ok("Cache-Control: private\r\n", &format!("{k}"))
    });
    let gw = gateway(up.addr, 1, "", "[routes.cache_policy]\nlock_timeout = \"10s\"");
    let addr = gw.addr;
    let t = Instant::now();
    let threads: Vec<_> = (0..10)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                get(&mut c, "/private", "").status
            })
        })
        .collect();
    for th in threads {
        assert_eq!(th.join().unwrap(), 200);
    }
    assert_eq!(n.load(Ordering::SeqCst), 10, "each went upstream");
    assert!(t.elapsed() < Duration::from_secs(3), "waiters were released at the first response head ({:?})", t.elapsed());
}

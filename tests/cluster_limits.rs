//! Rate limits shared across gateway hosts through a real `redis-server` (started by the tests
//! on free ports): exact and synced modes over two gateway processes, Redis failures and
//! restarts, a three-master Redis Cluster with a moved slot, TTLs on every key.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::redis::{cluster3, GwProc, Redis};
use common::{Client, Gw, Response, Upstream};

fn gateway_config(listen: &str, workers: usize, upstream: SocketAddr, redis: &[String], limits: &str, routes: &str) -> String {
    let redis: Vec<String> = redis.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[server]\nlisten = [\"{listen}\"]\nworkers = {workers}\npin_cores = false\n\n\
         [cluster]\nredis = [{}]\ntimeout = \"50ms\"\nkey_prefix = \"t:\"\n\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{upstream}\"]\n\n{limits}\n{routes}",
        redis.join(", ")
    )
}

fn get(c: &mut Client, path: &str, key: &str) -> Response {
    c.request(format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Key: {key}\r\n\r\n").as_bytes())
}

fn remaining(r: &Response) -> u64 {
    r.header("ratelimit-remaining").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no RateLimit-Remaining: {}", r.head))
}

/// `n` requests per gateway from `threads` keep-alive connections each, all at once.
fn flood(gateways: &[SocketAddr], per_gateway: usize, threads: usize, path: &'static str, pace: Option<Duration>) -> Vec<Response> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for &addr in gateways {
        for _ in 0..threads {
            let out = out.clone();
            handles.push(thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut mine = Vec::new();
                for _ in 0..per_gateway / threads {
                    mine.push(get(&mut c, path, "tenant-1"));
                    if let Some(p) = pace {
                        thread::sleep(p);
                    }
                }
                out.lock().unwrap().extend(mine);
            }));
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

const EXACT_LIMIT: &str = "[[rate_limits]]\nname = \"shared\"\nrequests = 200\nwindow = \"1h\"\nkey = \"header:X-Key\"\nscope = \"cluster\"\non_error = \"deny\"\n";
const ROUTE: &str = "[[routes]]\nname = \"api\"\npaths = [\"/api\"]\nservice = \"svc\"\nrate_limits = [\"shared\"]\n";

#[test]
fn exact_mode_two_gateway_processes_admit_exactly_the_limit() {
    let redis = Redis::start();
    let up = Upstream::ok(b"ok");
    let cfg = gateway_config("{listen}", 2, up.addr, &[redis.url()], EXACT_LIMIT, ROUTE);
    let (a, b) = (GwProc::start(&cfg), GwProc::start(&cfg));
    let responses = flood(&[a.addr, b.addr], 400, 8, "/api/x", None);
    assert_eq!(responses.len(), 800);
    let admitted: Vec<&Response> = responses.iter().filter(|r| r.status == 200).collect();
    let refused: Vec<&Response> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(admitted.len(), 200, "exactly the limit across both hosts");
    assert_eq!(refused.len(), 600, "every other request refused, none failed");
    // One decision per admitted request, in one order: each saw a different count.
    let seen: BTreeSet<u64> = admitted.iter().map(|r| remaining(r)).collect();
    assert_eq!(seen, (0..200).collect::<BTreeSet<u64>>(), "RateLimit-Remaining counts down once per admitted request");
    for r in &refused {
        assert_eq!(remaining(r), 0);
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After on 429");
        assert!((1..=18).contains(&retry), "one emission interval (1h / 200 = 18 s) at most: {retry}");
        assert_eq!(r.header("ratelimit-policy").as_deref(), Some("\"shared\";q=200;w=3600"));
    }
    assert_eq!(up.requests().len(), 200, "only admitted requests reached the upstream");
    // Every key Redis holds expires.
    let keys = redis.keys_with_ttl();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys.iter().all(|(k, ttl)| k == "t:g:shared:tenant-1" && *ttl > 0 && *ttl <= 3_600_000), "{keys:?}");
}

#[test]
fn synced_mode_overshoot_stays_within_its_bound_and_every_host_then_denies() {
    let redis = Redis::start();
    let up = Upstream::ok(b"ok");
    let limit = "[[rate_limits]]\nname = \"shared\"\nrequests = 200\nwindow = \"1h\"\nkey = \"header:X-Key\"\nscope = \"cluster\"\nsync = \"100ms\"\n";
    let cfg = gateway_config("{listen}", 2, up.addr, &[redis.url()], limit, ROUTE);
    let (a, b) = (GwProc::start(&cfg), GwProc::start(&cfg));
    // Each host is sent at most r = 200 requests/s (2 connections, one request each per 10 ms
    // at most), 3 s long: 600 per host, well past the limit.
    let started = Instant::now();
    let responses = flood(&[a.addr, b.addr], 600, 2, "/api/x", Some(Duration::from_millis(10)));
    let took = started.elapsed();
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    assert!(responses.iter().all(|r| r.status == 200 || r.status == 429));
    // The documented bound: requests + (H − 1) · min(requests, r · (2 · sync + rtt)); with
    // H = 2, r = 200/s, sync = 100 ms and rtt counted generously as 50 ms: 200 + 50 = 250.
    eprintln!("synced mode: {admitted} of 1200 requests admitted against a limit of 200, in {took:?}");
    assert!(admitted >= 200, "the limit itself is admitted: {admitted}");
    assert!(admitted <= 250, "overshoot beyond the bound: {admitted} admitted in {took:?}");
    // One interval (plus a round trip) after the burst, every host refuses.
    thread::sleep(Duration::from_millis(250));
    for gw in [&a, &b] {
        let mut c = Client::connect(gw.addr);
        for _ in 0..5 {
            assert_eq!(get(&mut c, "/api/x", "tenant-1").status, 429);
        }
    }
    let keys = redis.keys_with_ttl();
    assert!(!keys.is_empty() && keys.iter().all(|(_, ttl)| *ttl > 0), "{keys:?}");
}

#[test]
fn redis_killed_then_restarted() {
    let mut redis = Redis::start();
    let up = Upstream::ok(b"ok");
    let admin = common::redis::free_port();
    let limits = "[[rate_limits]]\nname = \"fallback-local\"\nrequests = 3\nwindow = \"1h\"\nkey = \"header:X-Key\"\nscope = \"cluster\"\non_error = \"local\"\n\n\
                  [[rate_limits]]\nname = \"fallback-deny\"\nrequests = 1000\nwindow = \"1h\"\nkey = \"header:X-Key\"\nscope = \"cluster\"\non_error = \"deny\"\n";
    let routes = format!(
        "[[routes]]\nname = \"local\"\npaths = [\"/local\"]\nservice = \"svc\"\nrate_limits = [\"fallback-local\"]\n\n\
         [[routes]]\nname = \"deny\"\npaths = [\"/deny\"]\nservice = \"svc\"\nrate_limits = [\"fallback-deny\"]\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    let gw = Gw::start(&gateway_config("127.0.0.1:0", 1, up.addr, &[redis.url()], limits, &routes));
    let mut c = Client::connect(gw.addr);
    assert_eq!(get(&mut c, "/local", "a").status, 200);
    assert_eq!(get(&mut c, "/deny", "a").status, 200);

    // Slow: Redis holds every command for a second. Each decision gives up at the timeout and
    // takes `on_error`.
    redis.cli(&["CLIENT", "PAUSE", "1000", "ALL"]);
    let t = Instant::now();
    let r = get(&mut c, "/deny", "slow");
    assert!(t.elapsed() < Duration::from_millis(500), "took {:?}", t.elapsed());
    assert_eq!((r.status, r.error_code().as_str()), (503, "limit_store_unavailable"));
    thread::sleep(Duration::from_millis(1100));
    assert!(common::wait_until(Duration::from_secs(5), || get(&mut c, "/deny", "after-pause").status == 200));

    // Answering errors: out of memory, so the script's write fails.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let r = get(&mut c, "/deny", "oom");
    assert_eq!((r.status, r.error_code().as_str()), (503, "limit_store_unavailable"));
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(get(&mut c, "/deny", "oom").status, 200);

    redis.kill();
    // `local`: the host's own limiter (3 per hour for key b) answers; `deny`: 503. Each within
    // the 50 ms timeout plus a margin, never hung.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = get(&mut c, "/local", "b");
        assert!(t.elapsed() < Duration::from_millis(500), "took {:?}", t.elapsed());
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "the local limiter decides while Redis is down");
    for _ in 0..3 {
        let t = Instant::now();
        let r = get(&mut c, "/deny", "b");
        assert!(t.elapsed() < Duration::from_millis(500), "took {:?}", t.elapsed());
        assert_eq!(r.status, 503);
        assert_eq!(r.error_code(), "limit_store_unavailable");
    }

    // Back on the same port, empty: decisions are made in Redis again (the script is loaded
    // again after NOSCRIPT) without restarting the gateway.
    redis.restart();
    let back = common::wait_until(Duration::from_secs(10), || get(&mut c, "/deny", "c").status == 200);
    assert!(back, "decisions did not resume after Redis came back");
    for i in 0..3 {
        assert_eq!(get(&mut c, "/local", "d").status, 200, "request {i}");
    }
    assert_eq!(get(&mut c, "/local", "d").status, 429);
    let keys = redis.keys_with_ttl();
    let names: BTreeSet<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains("t:g:fallback-local:d") && names.contains("t:g:fallback-deny:c"), "{keys:?}");
    assert!(keys.iter().all(|(_, ttl)| *ttl > 0), "{keys:?}");
    let metrics = common::get(format!("127.0.0.1:{admin}").parse().unwrap(), "/metrics").body_str();
    let value = |needle: &str| -> f64 {
        metrics.lines().find(|l| l.starts_with(needle)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    assert!(value("ringgate_redis_events_total{event=\"script_load\"}") >= 1.0, "{metrics}");
    assert!(value("ringgate_ratelimit_on_error_total{limit=\"fallback-local\",decision=\"local\"}") >= 5.0, "{metrics}");
    assert!(value("ringgate_ratelimit_on_error_total{limit=\"fallback-deny\",decision=\"deny\"}") >= 3.0, "{metrics}");
    assert!(value("ringgate_redis_errors_total{kind=\"unavailable\"}") >= 1.0, "{metrics}");
    assert!(value("ringgate_redis_errors_total{kind=\"timeout\"}") >= 1.0, "{metrics}");
    assert!(value("ringgate_redis_errors_total{kind=\"error_reply\"}") >= 1.0, "{metrics}");
}

#[test]
fn password_protected_redis_and_check_connect() {
    let redis = Redis::start_with(&["--requirepass", "s3cret-pw"]);
    let up = Upstream::ok(b"ok");
    let admin = common::redis::free_port();
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port);
    let limits = "[[rate_limits]]\nname = \"auth\"\nrequests = 1\nwindow = \"1h\"\nkey = \"header:X-Key\"\nscope = \"cluster\"\non_error = \"deny\"\n";
    let routes = format!("[[routes]]\nname = \"api\"\npaths = [\"/api\"]\nservice = \"svc\"\nrate_limits = [\"auth\"]\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let cfg = gateway_config("127.0.0.1:0", 1, up.addr, std::slice::from_ref(&url), limits, &routes);
    let gw = Gw::start(&cfg);
    let mut c = Client::connect(gw.addr);
    assert_eq!(get(&mut c, "/api", "x").status, 200, "AUTH with the password, then decided in Redis");
    assert_eq!(get(&mut c, "/api", "x").status, 429);
    let config = common::get(format!("127.0.0.1:{admin}").parse().unwrap(), "/config").body_str();
    assert!(!config.contains("s3cret-pw") && config.contains(":(redacted)@127.0.0.1"), "{config}");

    // `ringgate check --connect` PINGs each node with its credentials.
    let dir = std::env::temp_dir().join(format!("ringgate-check-{}-{}", std::process::id(), redis.port));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |url: &str| {
        let path = dir.join("gw.toml");
        std::fs::write(&path, gateway_config("127.0.0.1:0", 1, up.addr, &[url.to_string()], limits, "[[routes]]\nname = \"api\"\npaths = [\"/api\"]\nservice = \"svc\"\nrate_limits = [\"auth\"]\n")).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_ringgate")).args(["check", "--connect", "--config", path.to_str().unwrap()]).output().unwrap()
    };
    let ok = check(&url);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("PONG"));
    let wrong = check(&format!("redis://:wrong@127.0.0.1:{}", redis.port));
    let err = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert!(!wrong.status.success() && err.contains("(redacted)") && !err.contains("wrong@"), "{err}");
    let dead = check(&format!("redis://127.0.0.1:{}", common::dead_port().addr.port()));
    assert!(!dead.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deny_cache_spares_redis_under_a_one_key_flood() {
    let redis = Redis::start();
    let up = Upstream::ok(b"ok");
    let limits = "[[rate_limits]]\nname = \"one\"\nrequests = 2\nwindow = \"1h\"\nkey = \"header:X-Key\"\nscope = \"cluster\"\n";
    let routes = "[[routes]]\nname = \"api\"\npaths = [\"/api\"]\nservice = \"svc\"\nrate_limits = [\"one\"]\n";
    let gw = Gw::start(&gateway_config("127.0.0.1:0", 1, up.addr, &[redis.url()], limits, routes));
    let mut c = Client::connect(gw.addr);
    let statuses: Vec<u16> = (0..300).map(|_| get(&mut c, "/api", "flood").status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2);
    // Two admitted, one refused by Redis, the other 297 from the deny cache. (The first call
    // finds no script loaded: NOSCRIPT, then EVAL.)
    let stats = redis.cli(&["INFO", "commandstats"]);
    let calls = |cmd: &str| -> u64 {
        stats.lines().find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls="))).and_then(|v| v.split(',').next()?.parse().ok()).unwrap_or(0)
    };
    let (evalsha, eval) = (calls("evalsha"), calls("eval"));
    assert_eq!((evalsha, eval), (3, 1), "script calls for 300 requests: {stats}");
}

#[test]
fn redis_cluster_keys_across_slots_and_a_moved_slot() {
    let nodes = cluster3();
    let up = Upstream::ok(b"ok");
    let seeds: Vec<String> = nodes.iter().map(Redis::url).collect();
    let limits = "[[rate_limits]]\nname = \"per-key\"\nrequests = 5\nwindow = \"1h\"\nkey = \"header:X-Key\"\nscope = \"cluster\"\non_error = \"deny\"\n\n\
                  [[rate_limits]]\nname = \"synced\"\nrequests = 5\nwindow = \"1h\"\nkey = \"header:X-Key\"\nscope = \"cluster\"\nsync = \"100ms\"\n";
    let routes = "[[routes]]\nname = \"api\"\npaths = [\"/api\"]\nservice = \"svc\"\nrate_limits = [\"per-key\"]\n\n\
                  [[routes]]\nname = \"synced\"\npaths = [\"/synced\"]\nservice = \"svc\"\nrate_limits = [\"synced\"]\n";
    let mut cfg = gateway_config("127.0.0.1:0", 2, up.addr, &seeds, limits, routes);
    cfg = cfg.replace("timeout = \"50ms\"", "timeout = \"200ms\"");
    let gw = Gw::start(&cfg);
    let mut c = Client::connect(gw.addr);
    // 40 keys, 7 requests each: exactly 5 admitted per key, whichever node holds it.
    for k in 0..40 {
        let key = format!("k{k}");
        let statuses: Vec<u16> = (0..7).map(|_| get(&mut c, "/api", &key).status).collect();
        assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429], "key {key}");
    }
    for n in &nodes {
        let size: u64 = n.cli(&["DBSIZE"]).trim().parse().unwrap();
        assert!(size > 0, "node {} holds none of the 40 keys", n.port);
        for (k, ttl) in n.keys_with_ttl() {
            assert!(ttl > 0, "{k} has no TTL");
        }
    }

    // Move the slot of a fresh key's Redis key to another node, with the key in it, then go on
    // counting: the gateway follows MOVED and the count carries on exactly.
    let key = "moving";
    let rkey = format!("t:g:per-key:{key}");
    for _ in 0..3 {
        assert_eq!(get(&mut c, "/api", key).status, 200);
    }
    let slot = nodes[0].cli(&["CLUSTER", "KEYSLOT", &rkey]).trim().to_string();
    let owner = nodes.iter().position(|n| n.cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot]).trim() != "0").expect("a node holds the key");
    let target = (owner + 1) % 3;
    let id = |n: &Redis| n.cli(&["CLUSTER", "MYID"]).trim().to_string();
    let (from_id, to_id) = (id(&nodes[owner]), id(&nodes[target]));
    nodes[target].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    nodes[owner].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    let moved = nodes[owner].cli(&["MIGRATE", "127.0.0.1", &nodes[target].port.to_string(), &rkey, "0", "5000"]);
    assert_eq!(moved.trim(), "OK", "MIGRATE: {moved}");
    for n in &nodes {
        n.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
    assert_eq!(nodes[target].cli(&["EXISTS", &rkey]).trim(), "1");
    let statuses: Vec<u16> = (0..4).map(|_| get(&mut c, "/api", key).status).collect();
    assert_eq!(statuses, [200, 200, 429, 429], "the count carried on across the moved slot");

    // Synced counts go to the cluster too: one call per group of keys (one hash slot each).
    for k in 0..40 {
        for _ in 0..3 {
            assert_eq!(get(&mut c, "/synced", &format!("s{k}")).status, 200);
        }
    }
    let pushed = common::wait_until(Duration::from_secs(5), || {
        nodes.iter().flat_map(|n| n.keys_with_ttl()).filter(|(k, _)| k.starts_with("{t:s:synced:")).count() == 40
    });
    assert!(pushed, "every synced key reached the cluster");
    let keys: Vec<(String, i64)> = nodes.iter().flat_map(|n| n.keys_with_ttl()).filter(|(k, _)| k.starts_with("{t:s:")).collect();
    assert!(keys.iter().all(|(_, ttl)| *ttl > 0), "{keys:?}");
    let holding = nodes.iter().filter(|n| n.keys_with_ttl().iter().any(|(k, _)| k.starts_with("{t:s:"))).count();
    assert!(holding >= 2, "16 groups spread over the nodes: {holding} node(s) hold synced keys");
}

//! Operating a running gateway: the admin listener (metrics, health, readiness, effective config,
//! reload), the access log, and hot reload with state carried over by name.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ringgate::config::Config;

fn base(up: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\npin_cores = false\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{up}\"]\n\
         [[routes]]\nname = \"api\"\npaths = [\"/api\"]\nservice = \"svc\"\n"
    )
}

#[test]
fn metrics_count_requests_by_route_method_and_code() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&base(up.addr, ""));
    let admin_addr = gw.gateway().admin_addr.expect("admin listener");
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        assert_eq!(c.request(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    assert_eq!(c.request(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n").status, 404);
    let (status, ct, text) = admin(admin_addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert_eq!(sample(&text, "ringgate_requests_total{route=\"api\",method=\"GET\",code=\"200\"}"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "ringgate_requests_total{route=\"\",method=\"GET\",code=\"404\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ringgate_request_duration_seconds_count{route=\"api\"}"), Some(3.0));
    assert_eq!(sample(&text, "ringgate_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"}"), Some(3.0));
    assert_eq!(sample(&text, "ringgate_upstream_duration_seconds_count{service=\"svc\"}"), Some(3.0));
    assert_eq!(sample(&text, "ringgate_upstream_connections_total{service=\"svc\",source=\"new\"}"), Some(1.0));
    assert_eq!(sample(&text, "ringgate_upstream_connections_total{service=\"svc\",source=\"pool\"}"), Some(2.0));
    assert!(sample(&text, "ringgate_request_bytes_total{route=\"api\"}").unwrap() > 90.0);
    assert!(sample(&text, "ringgate_response_bytes_total{route=\"api\"}").unwrap() > 90.0);
    assert_eq!(sample(&text, "ringgate_connections_accepted_total"), Some(1.0));
    assert_eq!(sample(&text, "ringgate_connections_open"), Some(1.0));
    // By shard: the one connection is on one of the two shards.
    let by_shard = |name: &str| (0..2).map(|i| sample(&text, &format!("{name}{{shard=\"{i}\"}}")).unwrap_or(-1.0)).collect::<Vec<_>>();
    let accepted = by_shard("ringgate_shard_connections_accepted_total");
    assert!(accepted == [1.0, 0.0] || accepted == [0.0, 1.0], "{accepted:?}");
    assert_eq!(by_shard("ringgate_shard_connections_open"), accepted);
    assert_eq!(sample(&text, "ringgate_config_generation"), Some(1.0));
    assert!(text.contains("ringgate_build_info{version=\""));
    assert!(text.contains("ringgate_request_duration_quantile_seconds{route=\"api\",quantile=\"0.99\"}"));
    // Every family's samples follow its own TYPE line.
    let mut current = String::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            current = rest.split(' ').next().unwrap().to_string();
        } else if !l.starts_with('#') {
            assert!(l.starts_with(current.as_str()), "{l} outside its family {current}");
        }
    }
    // OpenMetrics when asked.
    let (status, ct, text) = admin(admin_addr, "GET", "/metrics", "application/openmetrics-text; version=1.0.0");
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE ringgate_requests counter"));
}

#[test]
fn policy_metrics_count_limits_and_auth_failures() {
    let up = Upstream::ok(b"ok");
    let digest: String = ring::digest::digest(&ring::digest::SHA256, b"k").as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let extra = format!(
        "[[api_keys]]\nname = \"keys\"\nkeys = [{{ consumer = \"c\", sha256 = \"{digest}\" }}]\n\
         [[rate_limits]]\nname = \"two\"\nrequests = 2\nwindow = \"1h\"\n"
    );
    let gw = Gw::start(&(base(up.addr, &extra) + "auth = [\"keys\"]\nrate_limits = [\"two\"]\n"));
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n").status, 401);
    assert_eq!(c.request(b"GET /api HTTP/1.1\r\nHost: h\r\nX-Api-Key: wrong\r\n\r\n").status, 401);
    for want in [200, 200, 429] {
        assert_eq!(c.request(b"GET /api HTTP/1.1\r\nHost: h\r\nX-Api-Key: k\r\n\r\n").status, want);
    }
    let (_, _, text) = admin(gw.gateway().admin_addr.unwrap(), "GET", "/metrics", "");
    assert_eq!(sample(&text, "ringgate_auth_failures_total{provider=\"keys\",reason=\"missing credentials\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ringgate_auth_failures_total{provider=\"keys\",reason=\"invalid API key\"}"), Some(1.0));
    assert_eq!(sample(&text, "ringgate_ratelimit_decisions_total{limit=\"two\",result=\"allowed\"}"), Some(2.0));
    assert_eq!(sample(&text, "ringgate_ratelimit_decisions_total{limit=\"two\",result=\"rejected\"}"), Some(1.0));
}

#[test]
fn health_readiness_and_redacted_config() {
    let up = Upstream::ok(b"ok");
    let secret = "a-very-secret-hs256-key-of-32-bytes!!";
    let extra = format!("[[jwt]]\nname = \"main\"\n[[jwt.keys]]\nkid = \"k1\"\nalg = \"HS256\"\nsecret = \"{secret}\"\n");
    let gw = Gw::start(&(base(up.addr, &extra) + "auth = [\"main\"]\n"));
    let a = gw.gateway().admin_addr.unwrap();
    assert_eq!(admin(a, "GET", "/healthz", "").0, 200);
    assert!(wait_until(Duration::from_secs(2), || admin(a, "GET", "/ready", "").0 == 200));
    let (status, ct, body) = admin(a, "GET", "/config", "");
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["routes"][0]["auth"][0], "main");
    assert_eq!(v["timeouts"]["drain"], "30000ms");
    assert!(!body.contains(secret), "the secret leaked: {body}");
    assert_eq!(admin(a, "DELETE", "/config", "").0, 405);
    assert_eq!(admin(a, "GET", "/nothing", "").0, 404);
    // Not ready once draining.
    gw.gateway().shutdown();
    assert!(wait_until(Duration::from_secs(2), || admin(a, "GET", "/ready", "").0 == 503));
}

#[test]
fn the_admin_listener_is_not_the_public_one() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&base(up.addr, ""));
    // The public listener routes /metrics like any path: no route here, so 404 from the proxy.
    assert_eq!(get(gw.addr, "/metrics").status, 404);
    let same = "[server]\nlisten = [\"127.0.0.1:9\"]\n[admin]\nlisten = \"127.0.0.1:9\"\n[[services]]\nname = \"s\"\nupstreams = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n";
    let err = Config::parse(same).unwrap_err().to_string();
    assert!(err.contains("admin.listen"), "{err}");
}

#[test]
fn access_log_writes_one_json_line_per_request_and_reopens() {
    let up = Upstream::ok(b"ok");
    let dir = std::env::temp_dir().join(format!("ringgate-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let extra = format!("[log]\naccess = \"{}\"\n", path.display());
    let gw = Gw::start(&base(up.addr, &extra));
    let mut c = Client::connect(gw.addr);
    c.request(b"GET /api/a?token=secret HTTP/1.1\r\nHost: h\r\nX-Request-Id: rid-1\r\n\r\n");
    c.request(b"GET /nope HTTP/1.1\r\nHost: h\r\nX-Request-Id: rid-2\r\n\r\n");
    let read_lines = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p).unwrap_or_default().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    };
    assert!(wait_until(Duration::from_secs(3), || read_lines(&path).len() == 2), "{:?}", std::fs::read_to_string(&path));
    let lines = read_lines(&path);
    let first = &lines[0];
    assert_eq!(first["request_id"], "rid-1");
    assert_eq!(first["path"], "/api/a", "the query is not logged unless asked");
    assert_eq!(first["status"], 200);
    assert_eq!(first["route"], "api");
    assert_eq!(first["service"], "svc");
    assert_eq!(first["upstream"], up.addr.to_string());
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(first["upstream_ms"].as_f64().is_some());
    assert_eq!(first["traceparent"].as_str().unwrap().len(), 55);
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[1]["error"], "no_route");
    // logrotate: move the file, signal, and new lines go to a new file at the old path.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    gw.gateway().reopen_logs();
    thread::sleep(Duration::from_millis(600));
    c.request(b"GET /api/b HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(wait_until(Duration::from_secs(3), || read_lines(&path).len() == 1));
    assert_eq!(read_lines(&rotated).len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reload_changes_routes_and_keeps_an_unchanged_limits_count() {
    let a = Upstream::ok(b"a");
    let b = Upstream::ok(b"b");
    let limit = "[[rate_limits]]\nname = \"three\"\nrequests = 3\nwindow = \"1h\"\n";
    let cfg = |up: SocketAddr, route_extra: &str| base(up, limit) + "rate_limits = [\"three\"]\n" + route_extra;
    let gw = Gw::start(&cfg(a.addr, ""));
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n").body, b"a");
    assert_eq!(c.request(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n").body, b"a");
    // Same limit, another upstream and a new route: the limit keeps its two spent requests.
    let next = cfg(b.addr, "[[routes]]\nname = \"more\"\npaths = [\"/more\"]\nservice = \"svc\"\n");
    let g = gw.gateway().reload_with(Config::parse(&next).unwrap()).expect("reload accepted");
    assert_eq!(g, 2);
    thread::sleep(Duration::from_millis(200));
    let r = c.request(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"b"[..]), "the new upstream answers on the same connection");
    assert_eq!(c.request(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n").status, 429, "3 of 3 spent across the reload");
    assert_eq!(c.request(b"GET /more HTTP/1.1\r\nHost: h\r\n\r\n").status, 200, "the new route serves (it has no limit)");
    // A changed limit starts afresh.
    let changed = cfg(b.addr, "").replace("requests = 3", "requests = 4");
    gw.gateway().reload_with(Config::parse(&changed).unwrap()).expect("reload accepted");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(c.request(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    let (_, _, text) = admin(gw.gateway().admin_addr.unwrap(), "GET", "/metrics", "");
    assert_eq!(sample(&text, "ringgate_config_generation"), Some(3.0));
    assert_eq!(sample(&text, "ringgate_config_reloads_total{result=\"success\"}"), Some(2.0));
}

#[test]
fn a_config_that_fails_check_is_refused_and_the_old_one_serves() {
    let up = Upstream::ok(b"ok");
    let dir = std::env::temp_dir().join(format!("ringgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, base(up.addr, "")).unwrap();
    let cfg = Config::load(&path).unwrap();
    let gw = ringgate::runtime::Gateway::start_from(cfg, Some(path.clone())).unwrap();
    let a = gw.admin_addr.unwrap();
    std::fs::write(&path, base(up.addr, "").replace("service = \"svc\"", "service = \"nope\"")).unwrap();
    let (status, _, body) = admin(a, "POST", "/reload", "");
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reloaded"], false);
    assert!(v["errors"][0].as_str().unwrap().contains("routes[0].service"), "{body}");
    assert_eq!(get(gw.addrs[0], "/api").status, 200, "the old config still serves");
    // Settings only a restart can change are refused by name.
    std::fs::write(&path, base(up.addr, "").replace("workers = 2", "workers = 1")).unwrap();
    let (status, _, body) = admin(a, "POST", "/reload", "");
    assert_eq!(status, 400);
    assert!(body.contains("server.workers"), "{body}");
    // A good file is taken.
    std::fs::write(&path, base(up.addr, "").replace("/api", "/v2")).unwrap();
    let (status, _, body) = admin(a, "POST", "/reload", "");
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(Duration::from_secs(2), || get(gw.addrs[0], "/v2").status == 200));
    assert_eq!(get(gw.addrs[0], "/api").status, 404);
    let (_, _, text) = admin(a, "GET", "/metrics", "");
    assert_eq!(sample(&text, "ringgate_config_reloads_total{result=\"failure\"}"), Some(2.0));
    assert_eq!(sample(&text, "ringgate_config_last_reload_success"), Some(1.0));
    gw.shutdown();
    gw.join();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway listening on port 0, a free address, and its config with that address added.
fn gateway_and_a_second_address(up: &Upstream) -> (Gw, SocketAddr, String) {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra_addr = free.local_addr().unwrap();
    drop(free);
    let gw = Gw::start(&base(up.addr, ""));
    let text = base(up.addr, "").replace("listen = [\"127.0.0.1:0\"]", &format!("listen = [\"127.0.0.1:0\", \"{extra_addr}\"]"));
    (gw, extra_addr, text)
}

#[test]
fn reload_opens_added_listeners_and_closes_removed_ones() {
    let up = Upstream::ok(b"ok");
    let (gw, extra_addr, text) = gateway_and_a_second_address(&up);
    gw.gateway().reload_with(Config::parse(&text).unwrap()).expect("reload accepted");
    assert!(wait_until(Duration::from_secs(2), || TcpStream::connect(extra_addr).is_ok()));
    assert_eq!(get(extra_addr, "/api").status, 200);
    gw.gateway().reload_with(Config::parse(&base(up.addr, "")).unwrap()).expect("reload accepted");
    assert!(wait_until(Duration::from_secs(2), || TcpStream::connect(extra_addr).is_err()), "removed listener still open");
    assert_eq!(get(gw.addr, "/api").status, 200);
}

#[test]
fn a_changed_per_ip_cap_finds_exact_connection_counts() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&base(up.addr, ""));
    let ip = "127.0.0.1".parse().unwrap();
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(gw.addr)).collect();
    for c in held.iter_mut() {
        assert_eq!(c.request(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    assert_eq!(gw.gateway().connections_from(ip), 3, "counted with no cap set");
    let capped = base(up.addr, "[security]\nmax_connections_per_ip = 3\n");
    gw.gateway().reload_with(Config::parse(&capped).unwrap()).expect("reload accepted");
    thread::sleep(Duration::from_millis(200));
    // At the cap: a fourth is refused.
    let mut fourth = Client::connect(gw.addr);
    assert!(fourth.is_closed(), "a fourth connection passed the new cap");
    drop(held.pop());
    assert!(wait_until(Duration::from_secs(2), || gw.gateway().connections_from(ip) == 2));
    let mut again = Client::connect(gw.addr);
    assert_eq!(again.request(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    // Removing the cap keeps counting exactly.
    gw.gateway().reload_with(Config::parse(&base(up.addr, "")).unwrap()).expect("reload accepted");
    thread::sleep(Duration::from_millis(200));
    drop(held);
    drop(again);
    assert!(wait_until(Duration::from_secs(2), || gw.gateway().connections_from(ip) == 0));
}

#[test]
fn twenty_reloads_under_load_lose_no_request() {
    let a = Upstream::ok(b"a");
    let b = Upstream::ok(b"b");
    let limit = "[[rate_limits]]\nname = \"big\"\nrequests = 1000000\nwindow = \"1s\"\n";
    let cfg = |i: usize| {
        let up = if i.is_multiple_of(2) { a.addr } else { b.addr };
        base(up, limit).replace("paths = [\"/api\"]", &format!("paths = [\"/api\", \"/r{i}\"]")) + "rate_limits = [\"big\"]\n"
    };
    let gw = Gw::start(&cfg(0));
    let addr = gw.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    c.send(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n");
                    match c.read_response() {
                        Some(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let started = Instant::now();
    for i in 1..=20 {
        thread::sleep(Duration::from_millis(50));
        gw.gateway().reload_with(Config::parse(&cfg(i)).unwrap()).expect("reload accepted");
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!("20 reloads in {:?}: {ok} answered 200, {bad} failed", started.elapsed());
    assert!(ok > 100);
    assert_eq!(bad, 0);
    assert_eq!(gw.gateway().generation(), 21);
    assert_eq!(get(addr, "/r20").status, 200);
}

#[test]
fn listeners_added_by_a_reload_are_served_even_when_shards_skip_its_generation() {
    // Two reloads before the shards' next tick: they jump straight to the last generation and
    // must still take the sockets the first one opened; every connection gets an answer.
    let up = Upstream::ok(b"ok");
    let (gw, extra_addr, text) = gateway_and_a_second_address(&up);
    gw.gateway().reload_with(Config::parse(&text).unwrap()).expect("reload accepted");
    gw.gateway().reload_with(Config::parse(&text.replace("/api", "/v2")).unwrap()).expect("reload accepted");
    thread::sleep(Duration::from_millis(200));
    for _ in 0..16 {
        assert_eq!(get(extra_addr, "/v2").status, 200);
    }
}

#[test]
fn the_admin_listener_ends_with_the_gateway() {
    let up = Upstream::ok(b"ok");
    let gw = Gw::start(&base(up.addr, ""));
    let a = gw.gateway().admin_addr.unwrap();
    assert_eq!(admin(a, "GET", "/healthz", "").0, 200);
    gw.shutdown_and_join();
    assert!(wait_until(Duration::from_secs(2), || TcpStream::connect(a).is_err()), "admin still listening after the gateway stopped");
}

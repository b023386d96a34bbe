//! The admin listener: `GET /metrics` (Prometheus text, or OpenMetrics when `Accept` asks for
//! it), `GET /healthz` (the process is alive), `GET /ready` (every shard serving, none
//! draining), `GET /config` (the effective config, secrets redacted) and `POST /reload`. It runs
//! on its own thread with blocking sockets, one request per connection, so a scrape never runs on
//! (or stalls) a shard: shards only copy their counters on their next tick. Bind it to a private
//! address; it is never reachable from the public listeners (config load refuses a shared address).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::expose::{self, Info, ServiceInfo};
use crate::upstream::BreakerState;
use crate::config::{AccessLogTarget, Config, HostMatch, PathMatch};
use crate::runtime::reload::Reloader;

/// Binds the admin address; the caller names it in its error.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves admin requests until the process ends.
pub fn serve(listener: TcpListener, reloader: Arc<Reloader>) {
    let _ = std::thread::Builder::new().name("ringgate-admin".into()).spawn(move || {
        for conn in listener.incoming() {
            // The gateway has stopped (every shard finished): the wake-up connection ends this.
            if reloader.global().finished.load(Ordering::Acquire) {
                return;
            }
            let Ok(stream) = conn else { continue };
            let r = reloader.clone();
            // One short-lived thread per admin connection: admin traffic is rare, and a slow
            // client must not hold up a scrape.
            let _ = std::thread::Builder::new().name("ringgate-admin-conn".into()).spawn(move || handle(stream, &r));
        }
    });
}

struct Request {
    method: String,
    path: String,
    accept: String,
}

fn read_request(s: &mut TcpStream) -> Option<Request> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    loop {
        let n = s.read(&mut buf[len..]).ok()?;
        if n == 0 {
            return None;
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let accept = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("accept"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    .unwrap_or_default();
                return Some(Request { method: req.method?.to_string(), path: req.path?.to_string(), accept });
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return None,
        }
    }
}

fn respond(s: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

fn json_body(s: &mut TcpStream, status: u16, v: serde_json::Value) {
    respond(s, status, "application/json", format!("{v}\n").as_bytes());
}

fn handle(mut s: TcpStream, r: &Reloader) {
    let Some(req) = read_request(&mut s) else { return };
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("GET", "/metrics") => {
            let open = req.accept.contains("application/openmetrics-text");
            let g = r.global();
            let shards = g.collect(Duration::from_secs(1));
            let st = r.status();
            let services = g
                .published()
                .services
                .iter()
                .map(|s| ServiceInfo {
                    name: s.name.clone(),
                    breaker: s.breaker.as_ref().map(|b| match b.state() {
                        BreakerState::Closed => 0,
                        BreakerState::Open => 1,
                        BreakerState::HalfOpen => 2,
                    }),
                    opened: s.breaker.as_ref().map_or(0, |b| b.opened.load(Ordering::Relaxed)),
                    fallbacks: s.fallbacks.load(Ordering::Relaxed),
                    overloaded: s.overloaded.load(Ordering::Relaxed),
                    in_flight: s.in_flight(),
                    budget_exhausted: s.budget_exhausted.load(Ordering::Relaxed),
                    no_healthy: s.no_healthy.load(Ordering::Relaxed),
                    endpoints: s
                        .endpoints
                        .iter()
                        .map(|e| {
                            let now = crate::upstream::now_ms();
                            (e.addr.to_string(), e.available(now), e.healthy.load(Ordering::Relaxed), e.ejections.load(Ordering::Relaxed))
                        })
                        .collect(),
                })
                .collect();
            let published = g.published();
            let certs = published.cfg.tls.iter().flat_map(|t| t.certs.iter().map(|c| (c.cert_file.display().to_string(), c.not_after))).collect();
            let info = Info {
                services,
                certs,
                version: env!("CARGO_PKG_VERSION"),
                generation: g.published_id(),
                last_reload_unix: st.last_unix,
                last_reload_ok: st.last_ok,
                reloads_ok: st.ok,
                reloads_failed: st.failed,
                shards: g.shards,
                ready_shards: g.serving.load(Ordering::Relaxed),
            };
            let text = expose::render(&shards, &info, open);
            let ct = if open {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            respond(&mut s, 200, ct, text.as_bytes());
        }
        ("GET", "/healthz") => json_body(&mut s, 200, json!({"status": "alive"})),
        ("GET", "/ready") => {
            let g = r.global();
            let serving = g.serving.load(Ordering::Relaxed);
            let stopping = g.stop.load(Ordering::Relaxed);
            let ready = serving == g.shards && !stopping;
            let status = if ready { 200 } else { 503 };
            json_body(&mut s, status, json!({"ready": ready, "shards": g.shards, "serving": serving, "draining": stopping}));
        }
        ("GET", "/config") => {
            let p = r.global().published();
            json_body(&mut s, 200, config_json(&p.cfg, p.id));
        }
        ("POST", "/reload") => match r.reload() {
            Ok(generation) => json_body(&mut s, 200, json!({"reloaded": true, "generation": generation})),
            Err(errors) => json_body(&mut s, 400, json!({"reloaded": false, "errors": errors})),
        },
        ("DELETE", "/cache") => {
            let query = req.path.split_once('?').map_or("", |(_, q)| q);
            let param = |name: &str| crate::policy::apikey::query_param(query.as_bytes(), name.as_bytes()).map(crate::cache::percent_decode);
            let (target, prefix) = match (param("url"), param("prefix")) {
                (Some(u), None) => (crate::cache::split_url(&u), false),
                (None, Some(p)) if p.first() == Some(&b'/') => {
                    let host = param("host").map(|h| crate::http::parse::host_without_port(&h).to_ascii_lowercase()).unwrap_or_default();
                    (Some((host, p)), true)
                }
                _ => (None, false),
            };
            let Some((host, path)) = target else {
                let hint = "DELETE /cache?url=http://host/path?query (one URL, every variant) or /cache?prefix=/path[&host=name]";
                return json_body(&mut s, 400, json!({"error": "name what to purge", "usage": hint}));
            };
            let g = r.global();
            let seq = g.purges.push(host, path, prefix);
            let (purged, all) = g.purges.wait(seq, Duration::from_secs(2));
            json_body(&mut s, if all { 200 } else { 202 }, json!({"purged": purged, "shards": g.shards, "applied_by_every_shard": all}));
        }
        (_, "/metrics" | "/healthz" | "/ready" | "/config" | "/reload" | "/cache") => {
            json_body(&mut s, 405, json!({"error": "method not allowed"}))
        }
        _ => json_body(&mut s, 404, json!({"error": "not found", "endpoints": ["/metrics", "/healthz", "/ready", "/config", "/reload", "/cache"]})),
    }
}

fn dur(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The effective config (defaults filled in) as JSON. Secrets never appear: JWT keys show only
/// their kid and algorithm, API keys only their consumers.
pub fn config_json(cfg: &Config, generation: u64) -> serde_json::Value {
    let routes: Vec<_> = cfg
        .routes
        .iter()
        .map(|r| {
            let rp = &r.policy;
            json!({
                "name": r.name,
                "paths": r.paths.iter().map(|p| match p { PathMatch::Prefix(p) => p.clone(), PathMatch::Exact(p) => format!("={p}") }).collect::<Vec<_>>(),
                "hosts": r.hosts.iter().map(|h| match h { HostMatch::Exact(h) => h.clone(), HostMatch::Suffix(s) => format!("*{s}") }).collect::<Vec<_>>(),
                "methods": r.methods,
                "service": cfg.services[r.service].name,
                "strip_prefix": r.strip_prefix,
                "max_body": r.max_body,
                "auth": rp.auth.iter().map(|a| match *a {
                    crate::config::policy::AuthRef::Jwt(i) => cfg.jwt[i].name.clone(),
                    crate::config::policy::AuthRef::ApiKey(i) => cfg.api_keys[i].name.clone(),
                    crate::config::policy::AuthRef::Mtls(i) => cfg.mtls[i].name.clone(),
                }).collect::<Vec<_>>(),
                "rate_limits": rp.rate_limits.iter().map(|&k| cfg.rate_limits[k].limit.name.clone()).collect::<Vec<_>>(),
                "cors": rp.cors.is_some(),
                "validate": { "content_types": rp.validate.content_types, "json": rp.validate.json, "max_json": rp.validate.max_json },
                "cache": r.cache.as_ref().map(|c| json!({
                    "cache": cfg.caches[c.cache].name,
                    "ttl": dur(c.ttl),
                    "key": c.key.iter().map(|k| format!("{k:?}").to_lowercase()).collect::<Vec<_>>(),
                    "stale_while_revalidate": dur(c.stale_while_revalidate),
                    "stale_if_error": dur(c.stale_if_error),
                    "lock_timeout": dur(c.lock_timeout),
                    "store_set_cookie": c.store_set_cookie,
                })),
            })
        })
        .collect();
    let caches: Vec<_> = cfg.caches.iter().map(|c| json!({"name": c.name, "max_memory": c.max_memory, "max_object": c.max_object, "max_variants": c.max_variants})).collect();
    json!({
        "generation": generation,
        "caches": caches,
        "server": {
            "listen": cfg.server.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "workers": cfg.server.workers, "pin_cores": cfg.server.pin_cores, "driver": format!("{:?}", cfg.server.driver).to_lowercase(),
            "uring_entries": cfg.server.uring_entries, "read_buffer": cfg.server.read_buffer, "backlog": cfg.server.backlog,
            "pooled_buffers": cfg.server.pooled_buffers,
        },
        "limits": {
            "max_head": cfg.limits.max_head, "max_target": cfg.limits.max_target, "max_headers": cfg.limits.max_headers,
            "max_body": cfg.limits.max_body, "max_connections": cfg.limits.max_connections, "max_trailer": cfg.limits.max_trailer,
        },
        "timeouts": {
            "header": dur(cfg.timeouts.header), "idle": dur(cfg.timeouts.idle), "body": dur(cfg.timeouts.body),
            "drain": dur(cfg.timeouts.drain), "drain_grace": dur(cfg.timeouts.drain_grace),
        },
        "upstream": {
            "connect_timeout": dur(cfg.upstream.connect_timeout), "response_timeout": dur(cfg.upstream.response_timeout),
            "idle_timeout": dur(cfg.upstream.idle_timeout), "max_idle_per_endpoint": cfg.upstream.max_idle_per_endpoint,
        },
        "services": cfg.services.iter().map(|s| json!({
            "name": s.name,
            "upstreams": s.upstreams.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "connect_timeout": dur(s.connect_timeout), "response_timeout": dur(s.response_timeout),
            "tls": s.tls.as_ref().map(|t| json!({ "sni": t.sni, "verify": t.verify, "ca_file": t.ca_file.as_ref().map(|p| p.display().to_string()) })),
        })).collect::<Vec<_>>(),
        "tls": cfg.tls.as_ref().map(|t| json!({
            "listen": t.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "min_version": format!("{:?}", t.min_version), "alpn": t.alpn, "unknown_sni": format!("{:?}", t.unknown_sni),
            "strict_sni_host": t.strict_sni_host, "session_cache": t.session_cache,
            // Keys never appear: certificates by file, names and expiry.
            "certs": t.certs.iter().map(|c| json!({ "cert_file": c.cert_file.display().to_string(), "hosts": c.hosts, "not_after_unix": c.not_after })).collect::<Vec<_>>(),
            "client_auth": t.client_auth.as_ref().map(|c| json!({ "ca_file": c.ca_file.display().to_string(), "required": c.required })),
        })),
        "mtls": cfg.mtls.iter().map(|m| json!({ "name": m.name, "consumer_from": format!("{:?}", m.consumer_from), "forward_subject": m.forward_subject })).collect::<Vec<_>>(),
        "routes": routes,
        "security": {
            "trusted_proxies": cfg.security.trusted_proxies.0.len(),
            "client_ip_header": cfg.security.client_ip_header,
            "max_connections_per_ip": cfg.security.max_connections_per_ip,
        },
        "jwt": cfg.jwt.iter().map(|p| json!({
            "name": p.name, "cache_size": p.cache_size, "forward_headers": p.forward_headers,
            "token_cookie": p.token_cookie, "token_query": p.token_query, "keys": "(redacted)",
        })).collect::<Vec<_>>(),
        "api_keys": cfg.api_keys.iter().map(|k| json!({
            "name": k.name, "forward_consumer": k.forward_consumer, "consumers": k.consumer_count(), "keys": "(redacted)",
        })).collect::<Vec<_>>(),
        "rate_limits": cfg.rate_limits.iter().map(|d| json!({
            "name": d.limit.name, "requests": d.limit.requests, "window": dur(d.limit.window), "burst": d.limit.burst,
            "max_keys": d.limit.max_keys, "key": format!("{:?}", d.key),
            "scope": match d.scope {
                crate::config::cluster::Scope::Local => json!("local"),
                crate::config::cluster::Scope::Cluster { sync, on_error } => json!({
                    "cluster": {
                        "sync": match sync { crate::config::cluster::SyncMode::Exact => "exact".to_string(), crate::config::cluster::SyncMode::Every(d) => dur(d) },
                        "on_error": on_error.as_str(),
                    }
                }),
            },
        })).collect::<Vec<_>>(),
        "cluster": cfg.cluster.as_ref().map(|c| json!({
            // Display redacts passwords.
            "redis": c.redis.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "timeout": dur(c.timeout), "on_error": c.on_error.as_str(), "key_prefix": c.key_prefix,
        })),
        "admin": { "listen": cfg.admin.listen.map(|a| a.to_string()) },
        "log": {
            "access": match &cfg.log.access { AccessLogTarget::Off => "off".to_string(), AccessLogTarget::Stdout => "stdout".into(), AccessLogTarget::File(p) => p.display().to_string() },
            "access_query": cfg.log.access_query,
        },
    })
}

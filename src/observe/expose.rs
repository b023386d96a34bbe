//! Merges shard snapshots and writes them as Prometheus text (version 0.0.4) or OpenMetrics
//! 1.0. Runs on the admin thread, never on a shard. Durations are exported in seconds: as
//! histograms with fixed buckets, plus p50/p90/p99/p99.9 gauges computed exactly (to the
//! histogram's 1 % precision) from the merged hdrhistograms.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;

use super::metrics::{new_histogram, Snapshot};

/// Bucket upper bounds in seconds.
const BUCKETS: [f64; 16] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")];

/// Gateway-wide facts that are not per shard.
pub struct Info<'a> {
    pub version: &'a str,
    pub generation: u64,
    pub last_reload_unix: f64,
    pub last_reload_ok: bool,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub shards: usize,
    pub ready_shards: usize,
    /// Per service: the state all shards share.
    pub services: Vec<ServiceInfo>,
    /// Per TLS certificate: its file and when its chain expires (unix seconds).
    pub certs: Vec<(String, i64)>,
}

/// A service's shared state at scrape time.
pub struct ServiceInfo {
    pub name: String,
    /// 0 closed, 1 open, 2 half-open; `None` without a breaker.
    pub breaker: Option<u8>,
    pub opened: u64,
    pub fallbacks: u64,
    pub overloaded: u64,
    pub in_flight: usize,
    pub budget_exhausted: u64,
    pub no_healthy: u64,
    /// (address, available, healthy by the active checks, ejections so far)
    pub endpoints: Vec<(String, bool, bool, u64)>,
}

#[derive(Default)]
struct RouteAgg {
    requests: BTreeMap<(&'static str, u16), u64>,
    hist: Option<Histogram<u64>>,
    sum_us: u64,
    bytes_in: u64,
    bytes_out: u64,
}

#[derive(Default)]
struct ServiceAgg {
    hist: Option<Histogram<u64>>,
    sum_us: u64,
    connect_failures: u64,
    connect_timeouts: u64,
    response_timeouts: u64,
    retries: u64,
    pool_reused: u64,
    pool_new: u64,
}

fn merge(into: &mut Option<Histogram<u64>>, h: &Histogram<u64>) {
    let target = into.get_or_insert_with(new_histogram);
    // Same bounds everywhere, so adding never fails; a failure would only lose this shard's share.
    let _ = target.add(h);
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
    open: bool,
}

impl Out {
    /// `# HELP` and `# TYPE` for a family. OpenMetrics names a counter family without `_total`.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let fam = if self.open && kind == "counter" { name.trim_end_matches("_total") } else { name };
        let _ = writeln!(self.text, "# HELP {fam} {help}");
        let _ = writeln!(self.text, "# TYPE {fam} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
        }
    }

    fn histogram(&mut self, name: &str, labels: &str, h: &Histogram<u64>, sum_us: u64) {
        let sep = if labels.is_empty() { "" } else { "," };
        for le in BUCKETS {
            let le_us = (le * 1e6) as u64;
            let n: u64 = h.iter_recorded().filter(|v| v.value_iterated_to() <= le_us).map(|v| v.count_since_last_iteration()).sum();
            self.sample(&format!("{name}_bucket"), &format!("{labels}{sep}le=\"{le}\""), n);
        }
        self.sample(&format!("{name}_bucket"), &format!("{labels}{sep}le=\"+Inf\""), h.len());
        self.sample(&format!("{name}_sum"), labels, sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.len());
    }

    /// `{base}_seconds` (a histogram) and `{base}_quantile_seconds` (gauges), one series per
    /// `(label value, histogram, sum in µs)`.
    fn durations(&mut self, base: &str, key: &str, what: &str, items: &[(&str, Option<&Histogram<u64>>, u64)]) {
        let hist = format!("{base}_seconds");
        self.family(&hist, "histogram", &format!("Time from {what}, by {key}."));
        for (name, h, sum) in items {
            if let Some(h) = h {
                self.histogram(&hist, &format!("{key}=\"{}\"", label(name)), h, *sum);
            }
        }
        let q = format!("{base}_quantile_seconds");
        self.family(&q, "gauge", &format!("Quantiles of the time from {what} since start, by {key} (from merged hdrhistograms)."));
        for (name, h, _) in items {
            if let Some(h) = h {
                self.quantiles(&q, &format!("{key}=\"{}\"", label(name)), h);
            }
        }
    }

    fn quantiles(&mut self, name: &str, labels: &str, h: &Histogram<u64>) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (q, text) in QUANTILES {
            let v = if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e6 };
            self.sample(name, &format!("{labels}{sep}quantile=\"{text}\""), v);
        }
    }
}

/// Renders every shard's snapshot merged, plus `info`. `open_metrics` selects OpenMetrics 1.0.
pub fn render(shards: &[Snapshot], info: &Info, open_metrics: bool) -> String {
    let mut routes: BTreeMap<&str, RouteAgg> = BTreeMap::new();
    let mut services: BTreeMap<&str, ServiceAgg> = BTreeMap::new();
    let mut limits: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut limits_cluster: BTreeMap<&str, (u64, [u64; 3])> = BTreeMap::new();
    let mut redis = crate::observe::metrics::RedisSnap::default();
    let mut redis_errors: BTreeMap<&str, u64> = BTreeMap::new();
    let mut handshakes: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut transforms: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    let mut parts: BTreeMap<&str, (Option<Histogram<u64>>, u64)> = BTreeMap::new();
    let mut auth_fail: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut jwt_cache: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut caches: BTreeMap<&str, crate::observe::metrics::CacheSnap> = BTreeMap::new();
    let (mut accepted, mut open, mut per_ip, mut fd, mut paused, mut dropped) = (0, 0, 0, 0, 0, 0);
    let (mut parked_now, mut parked) = (0, 0);
    let (mut trims, mut released) = (0, 0);
    for s in shards {
        for r in &s.routes {
            for &(side, result, n) in &r.transforms {
                *transforms.entry((&r.name, side, result)).or_default() += n;
            }
            if let Some(h) = &r.parts_us {
                let e = parts.entry(&r.name).or_default();
                merge(&mut e.0, h);
                e.1 += r.parts_sum_us;
            }
            let a = routes.entry(&r.name).or_default();
            for &(m, code, n) in &r.requests {
                *a.requests.entry((m, code)).or_default() += n;
            }
            merge(&mut a.hist, &r.duration_us);
            a.sum_us += r.duration_sum_us;
            a.bytes_in += r.bytes_in;
            a.bytes_out += r.bytes_out;
        }
        for sv in &s.services {
            let a = services.entry(&sv.name).or_default();
            if let Some(h) = &sv.duration_us {
                merge(&mut a.hist, h);
            }
            a.sum_us += sv.duration_sum_us;
            a.connect_failures += sv.connect_failures;
            a.connect_timeouts += sv.connect_timeouts;
            a.response_timeouts += sv.response_timeouts;
            a.retries += sv.retries;
            a.pool_reused += sv.pool_reused;
            a.pool_new += sv.pool_new;
        }
        for (name, ok, no) in &s.limits {
            let e = limits.entry(name).or_default();
            e.0 += ok;
            e.1 += no;
        }
        for (name, hits, on_error) in &s.limits_cluster {
            let e = limits_cluster.entry(name).or_default();
            e.0 += hits;
            for (a, b) in e.1.iter_mut().zip(on_error) {
                *a += b;
            }
        }
        for &(result, version, n) in &s.tls_handshakes {
            *handshakes.entry((result, version)).or_default() += n;
        }
        redis.calls += s.redis.calls;
        redis.latency_sum_us += s.redis.latency_sum_us;
        redis.batch_sum += s.redis.batch_sum;
        if let Some(h) = &s.redis.latency_us {
            merge(&mut redis.latency_us, h);
        }
        if let Some(h) = &s.redis.batch {
            merge(&mut redis.batch, h);
        }
        for &(kind, n) in &s.redis.errors {
            *redis_errors.entry(kind).or_default() += n;
        }
        for (i, &(name, n)) in s.redis.counters.iter().enumerate() {
            redis.counters[i] = (name, redis.counters[i].1 + n);
        }
        for a in &s.auth {
            for &(reason, n) in &a.failures {
                *auth_fail.entry((&a.name, reason)).or_default() += n;
            }
            if a.cache_hits + a.cache_misses > 0 {
                let e = jwt_cache.entry(&a.name).or_default();
                e.0 += a.cache_hits;
                e.1 += a.cache_misses;
            }
        }
        for c in &s.caches {
            let e = caches.entry(c.name.as_str()).or_insert_with(|| crate::observe::metrics::CacheSnap { name: c.name.clone(), counters: c.counters.map(|(k, _)| (k, 0)), ..Default::default() });
            for (i, &(_, n)) in c.counters.iter().enumerate() {
                e.counters[i].1 += n;
            }
            e.stored += c.stored;
            e.evicted += c.evicted;
            e.purged += c.purged;
            e.invalidated += c.invalidated;
            e.bytes += c.bytes;
            e.entries += c.entries;
        }
        accepted += s.accepted;
        open += s.open_connections;
        parked_now += s.parked_now;
        parked += s.parked;
        per_ip += s.refused_per_ip;
        fd += s.accept_errors_fd;
        paused += s.accept_paused;
        dropped += s.log_dropped;
        trims += s.heap_trims;
        released += s.buffers_released;
    }

    let mut o = Out { text: String::with_capacity(16 << 10), open: open_metrics };
    o.family("ringgate_build_info", "gauge", "Build information; always 1.");
    o.sample("ringgate_build_info", &format!("version=\"{}\"", label(info.version)), 1);
    o.family("ringgate_config_generation", "gauge", "Config generation in force (1 at start, +1 per successful reload).");
    o.sample("ringgate_config_generation", "", info.generation);
    o.family("ringgate_config_last_reload_timestamp_seconds", "gauge", "Unix time of the last reload attempt (0: none yet).");
    o.sample("ringgate_config_last_reload_timestamp_seconds", "", info.last_reload_unix);
    o.family("ringgate_config_last_reload_success", "gauge", "1 if the last reload attempt succeeded (or none was made), else 0.");
    o.sample("ringgate_config_last_reload_success", "", u8::from(info.last_reload_ok));
    o.family("ringgate_config_reloads_total", "counter", "Reload attempts by result.");
    o.sample("ringgate_config_reloads_total", "result=\"success\"", info.reloads_ok);
    o.sample("ringgate_config_reloads_total", "result=\"failure\"", info.reloads_failed);
    o.family("ringgate_shards", "gauge", "Shards running, and how many of them are serving (not draining).");
    o.sample("ringgate_shards", "state=\"running\"", info.shards);
    o.sample("ringgate_shards", "state=\"serving\"", info.ready_shards);

    o.family("ringgate_requests_total", "counter", "Requests answered, by route, method and status code.");
    for (name, a) in &routes {
        for ((m, code), n) in &a.requests {
            o.sample("ringgate_requests_total", &format!("route=\"{}\",method=\"{m}\",code=\"{code}\"", label(name)), n);
        }
    }
    let route_hists: Vec<_> = routes.iter().map(|(n, a)| (*n, a.hist.as_ref(), a.sum_us)).collect();
    o.durations("ringgate_request_duration", "route", "a request's first byte to its last response byte", &route_hists);
    o.family("ringgate_request_bytes_total", "counter", "Bytes received from clients (heads and bodies), by route.");
    for (name, a) in &routes {
        o.sample("ringgate_request_bytes_total", &format!("route=\"{}\"", label(name)), a.bytes_in);
    }
    o.family("ringgate_response_bytes_total", "counter", "Bytes sent to clients (heads and bodies), by route.");
    for (name, a) in &routes {
        o.sample("ringgate_response_bytes_total", &format!("route=\"{}\"", label(name)), a.bytes_out);
    }

    let service_hists: Vec<_> = services.iter().map(|(n, a)| (*n, a.hist.as_ref(), a.sum_us)).collect();
    o.durations("ringgate_upstream_duration", "service", "sending a request upstream to its last response byte", &service_hists);
    // Each family's samples stay together, as both formats require.
    type Pick = fn(&ServiceAgg) -> Vec<(&'static str, u64)>;
    let families: [(&str, &str, Pick); 4] = [
        ("ringgate_upstream_connect_failures_total", "Upstream connects refused or reset, by service.", |a| {
            vec![("", a.connect_failures)]
        }),
        ("ringgate_upstream_timeouts_total", "Upstream connect and response timeouts, by service and phase.", |a| {
            vec![(",phase=\"connect\"", a.connect_timeouts), (",phase=\"response\"", a.response_timeouts)]
        }),
        ("ringgate_upstream_retries_total", "Requests sent again to an upstream, by service.", |a| vec![("", a.retries)]),
        ("ringgate_upstream_connections_total", "Upstream connections used, by service and whether taken from the pool.", |a| {
            vec![(",source=\"pool\"", a.pool_reused), (",source=\"new\"", a.pool_new)]
        }),
    ];
    for (family, help, pick) in families {
        o.family(family, "counter", help);
        for (name, a) in &services {
            for (extra, v) in pick(a) {
                o.sample(family, &format!("service=\"{}\"{extra}", label(name)), v);
            }
        }
    }

    // One series per service for each of these families.
    type PerService = fn(&ServiceInfo) -> u64;
    let per_service: [(&str, &str, &str, PerService); 4] = [
        ("ringgate_upstream_in_flight", "gauge", "Requests in flight to a service from the whole host (counted when max_concurrent is set).", |s| s.in_flight as u64),
        ("ringgate_upstream_overloaded_total", "counter", "Requests refused at once because the service had max_concurrent in flight.", |s| s.overloaded),
        ("ringgate_upstream_retry_budget_exhausted_total", "counter", "Retries refused because the service's retry budget was spent.", |s| s.budget_exhausted),
        ("ringgate_upstream_no_healthy_total", "counter", "Requests answered 503 at once because no endpoint was available.", |s| s.no_healthy),
    ];
    for (family, kind, help, value) in per_service {
        o.family(family, kind, help);
        for s in &info.services {
            o.sample(family, &format!("service=\"{}\"", label(&s.name)), value(s));
        }
    }
    o.family("ringgate_upstream_endpoint_available", "gauge", "1 while an endpoint is in the balancing set (healthy and not ejected).");
    for s in &info.services {
        for (addr, available, _, _) in &s.endpoints {
            o.sample("ringgate_upstream_endpoint_available", &format!("service=\"{}\",endpoint=\"{addr}\"", label(&s.name)), u8::from(*available));
        }
    }
    o.family("ringgate_upstream_endpoint_healthy", "gauge", "The active health checks' verdict per endpoint (1 without checks).");
    for s in &info.services {
        for (addr, _, healthy, _) in &s.endpoints {
            o.sample("ringgate_upstream_endpoint_healthy", &format!("service=\"{}\",endpoint=\"{addr}\"", label(&s.name)), u8::from(*healthy));
        }
    }
    o.family("ringgate_upstream_ejections_total", "counter", "Times outlier detection ejected an endpoint.");
    for s in &info.services {
        for (addr, _, _, n) in &s.endpoints {
            o.sample("ringgate_upstream_ejections_total", &format!("service=\"{}\",endpoint=\"{addr}\"", label(&s.name)), n);
        }
    }
    o.family("ringgate_breaker_state", "gauge", "Circuit breaker state by service: 0 closed, 1 open, 2 half-open.");
    for s in info.services.iter().filter(|s| s.breaker.is_some()) {
        o.sample("ringgate_breaker_state", &format!("service=\"{}\"", label(&s.name)), s.breaker.unwrap_or(0));
    }
    o.family("ringgate_breaker_opened_total", "counter", "Times a service's circuit breaker opened.");
    for s in info.services.iter().filter(|s| s.breaker.is_some()) {
        o.sample("ringgate_breaker_opened_total", &format!("service=\"{}\"", label(&s.name)), s.opened);
    }
    o.family("ringgate_breaker_fallbacks_total", "counter", "Requests answered at once (fallback or 503) while a service's breaker was open.");
    for s in info.services.iter().filter(|s| s.breaker.is_some()) {
        o.sample("ringgate_breaker_fallbacks_total", &format!("service=\"{}\"", label(&s.name)), s.fallbacks);
    }

    if !caches.is_empty() {
        o.family("ringgate_cache_responses_total", "counter", "Responses of cached routes by how the cache answered: hit, miss (forwarded), stale (served stale), revalidated (304 refreshed an entry), collapsed (served from another request's fill).");
        for (name, c) in &caches {
            for (result, n) in c.counters {
                o.sample("ringgate_cache_responses_total", &format!("cache=\"{}\",result=\"{result}\"", label(name)), n);
            }
        }
        type Counter = (&'static str, &'static str, fn(&crate::observe::metrics::CacheSnap) -> u64);
        let counters: [Counter; 4] = [
            ("ringgate_cache_stored_total", "Responses stored.", |c| c.stored),
            ("ringgate_cache_evicted_total", "Entries evicted to stay within max_memory.", |c| c.evicted),
            ("ringgate_cache_purged_total", "Entries removed by purges on the admin listener.", |c| c.purged),
            ("ringgate_cache_invalidated_total", "Entries removed because an unsafe method succeeded on their URL.", |c| c.invalidated),
        ];
        for (metric, help, get) in counters {
            o.family(metric, "counter", help);
            for (name, c) in &caches {
                o.sample(metric, &format!("cache=\"{}\"", label(name)), get(c));
            }
        }
        o.family("ringgate_cache_bytes", "gauge", "Bytes held by the cache on all shards, bookkeeping included.");
        for (name, c) in &caches {
            o.sample("ringgate_cache_bytes", &format!("cache=\"{}\"", label(name)), c.bytes);
        }
        o.family("ringgate_cache_entries", "gauge", "Entries held by the cache on all shards.");
        for (name, c) in &caches {
            o.sample("ringgate_cache_entries", &format!("cache=\"{}\"", label(name)), c.entries);
        }
    }

    o.family("ringgate_ratelimit_decisions_total", "counter", "Rate-limit checks, by limit and result.");
    for (name, (ok, no)) in &limits {
        o.sample("ringgate_ratelimit_decisions_total", &format!("limit=\"{}\",result=\"allowed\"", label(name)), ok);
        o.sample("ringgate_ratelimit_decisions_total", &format!("limit=\"{}\",result=\"rejected\"", label(name)), no);
    }
    if !limits_cluster.values().all(|(h, e)| *h == 0 && e.iter().all(|n| *n == 0)) || redis.calls > 0 || !redis_errors.is_empty() {
        o.family("ringgate_ratelimit_deny_cache_hits_total", "counter", "Cluster-limit refusals answered from the local deny cache, without Redis, by limit.");
        for (name, (hits, _)) in &limits_cluster {
            o.sample("ringgate_ratelimit_deny_cache_hits_total", &format!("limit=\"{}\"", label(name)), hits);
        }
        o.family("ringgate_ratelimit_on_error_total", "counter", "Cluster-limit decisions made by on_error because Redis did not answer, by limit and decision.");
        for (name, (_, on_error)) in &limits_cluster {
            for (decision, n) in crate::observe::metrics::ON_ERROR_LABELS.iter().zip(on_error) {
                o.sample("ringgate_ratelimit_on_error_total", &format!("limit=\"{}\",decision=\"{decision}\"", label(name)), n);
            }
        }
        o.family("ringgate_redis_calls_total", "counter", "Redis calls answered (cluster rate limits).");
        o.sample("ringgate_redis_calls_total", "", redis.calls);
        o.family("ringgate_redis_call_seconds", "histogram", "Time from queueing a Redis call to its reply.");
        if let Some(h) = &redis.latency_us {
            o.histogram("ringgate_redis_call_seconds", "", h, redis.latency_sum_us);
        }
        o.family("ringgate_redis_pipeline_depth", "summary", "Commands per pipelined write to Redis.");
        if let Some(h) = &redis.batch {
            for (q, text) in QUANTILES {
                o.sample("ringgate_redis_pipeline_depth", &format!("quantile=\"{text}\""), h.value_at_quantile(q));
            }
            o.sample("ringgate_redis_pipeline_depth_sum", "", redis.batch_sum);
            o.sample("ringgate_redis_pipeline_depth_count", "", h.len());
        }
        o.family("ringgate_redis_errors_total", "counter", "Redis calls that failed, by kind.");
        for (kind, n) in &redis_errors {
            o.sample("ringgate_redis_errors_total", &format!("kind=\"{kind}\""), n);
        }
        o.family("ringgate_redis_events_total", "counter", "Redis client events: redirections, script loads, slot-map refreshes, connects, sync rounds.");
        for (name, n) in &redis.counters {
            o.sample("ringgate_redis_events_total", &format!("event=\"{name}\""), n);
        }
    }
    if !handshakes.is_empty() || !info.certs.is_empty() {
        o.family("ringgate_tls_handshakes_total", "counter", "TLS connections by handshake result (full, resumed, failed, timeout, plain_http, not_tls) and version.");
        for ((result, version), n) in &handshakes {
            o.sample("ringgate_tls_handshakes_total", &format!("result=\"{result}\",version=\"{version}\""), n);
        }
        o.family("ringgate_tls_certificate_expiry_timestamp_seconds", "gauge", "When each configured certificate chain expires (its earliest notAfter), unix time.");
        for (file, not_after) in &info.certs {
            o.sample("ringgate_tls_certificate_expiry_timestamp_seconds", &format!("cert=\"{}\"", label(file)), not_after);
        }
    }
    if !transforms.is_empty() {
        o.family("ringgate_transforms_total", "counter", "JSON body transforms by route, side (request, response) and result (applied, failed, skipped).");
        for ((route, side, result), n) in &transforms {
            o.sample("ringgate_transforms_total", &format!("route=\"{}\",side=\"{side}\",result=\"{result}\"", label(route)), n);
        }
    }
    if !parts.is_empty() {
        let items: Vec<(&str, Option<&Histogram<u64>>, u64)> = parts.iter().map(|(n, (h, sum))| (*n, h.as_ref(), *sum)).collect();
        o.durations("ringgate_aggregate_part", "route", "the start of an aggregated request's fan-out to each part's answer", &items);
    }
    o.family("ringgate_auth_failures_total", "counter", "Credentials refused, by provider and reason.");
    for ((name, reason), n) in &auth_fail {
        o.sample("ringgate_auth_failures_total", &format!("provider=\"{}\",reason=\"{}\"", label(name), label(reason)), n);
    }
    o.family("ringgate_jwt_cache_total", "counter", "JWT cache lookups, by provider and result.");
    for (name, (hit, miss)) in &jwt_cache {
        o.sample("ringgate_jwt_cache_total", &format!("provider=\"{}\",result=\"hit\"", label(name)), hit);
        o.sample("ringgate_jwt_cache_total", &format!("provider=\"{}\",result=\"miss\"", label(name)), miss);
    }

    o.family("ringgate_connections_accepted_total", "counter", "Client connections accepted.");
    o.sample("ringgate_connections_accepted_total", "", accepted);
    o.family("ringgate_connections_open", "gauge", "Client connections open now.");
    o.sample("ringgate_connections_open", "", open);
    o.family("ringgate_connections_parked", "gauge", "Open client connections idle in a parking lot (no task) now.");
    o.sample("ringgate_connections_parked", "", parked_now);
    o.family("ringgate_connections_parked_total", "counter", "Idle client connections moved out of their tasks into a parking lot.");
    o.sample("ringgate_connections_parked_total", "", parked);
    // By shard: SO_REUSEPORT spreads connections by a hash, not by load; these show the spread.
    o.family("ringgate_shard_connections_accepted_total", "counter", "Client connections accepted, by shard.");
    for (i, s) in shards.iter().enumerate() {
        o.sample("ringgate_shard_connections_accepted_total", &format!("shard=\"{i}\""), s.accepted);
    }
    o.family("ringgate_shard_connections_open", "gauge", "Client connections open now, by shard.");
    for (i, s) in shards.iter().enumerate() {
        o.sample("ringgate_shard_connections_open", &format!("shard=\"{i}\""), s.open_connections);
    }
    o.family("ringgate_connections_refused_total", "counter", "Client connections refused or not accepted, by reason.");
    o.sample("ringgate_connections_refused_total", "reason=\"per_ip_cap\"", per_ip);
    o.sample("ringgate_connections_refused_total", "reason=\"fd_exhausted\"", fd);
    o.family("ringgate_accept_paused_total", "counter", "Times accepting paused because limits.max_connections was reached.");
    o.sample("ringgate_accept_paused_total", "", paused);
    o.family("ringgate_access_log_dropped_total", "counter", "Access-log lines dropped because the writer fell behind.");
    o.sample("ringgate_access_log_dropped_total", "", dropped);
    o.family("ringgate_buffers_released_total", "counter", "Buffers freed because a shard's pool already held server.pooled_buffers.");
    o.sample("ringgate_buffers_released_total", "", released);
    o.family("ringgate_heap_trims_total", "counter", "Times free heap pages were returned to the OS after a burst of requests.");
    o.sample("ringgate_heap_trims_total", "", trims);
    if open_metrics {
        o.text.push_str("# EOF\n");
    }
    o.text
}

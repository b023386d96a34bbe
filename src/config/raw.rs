//! Raw TOML shapes, exactly as written by users. `read` fills them one table at a time so that
//! every unknown key and every value of the wrong type is reported with its key path, not just
//! the first one serde meets.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::{Table, Value};

use super::cluster::RawCluster;
use super::tls::{RawMtls, RawTls};
use super::policy::{RawApiKeys, RawCors, RawJwt, RawRateLimit, RawSecurity, RawValidate};
use super::{suggest, ConfigError};

#[derive(Debug, Default)]
pub struct RawConfig {
    pub server: RawServer,
    pub limits: RawLimits,
    pub timeouts: RawTimeouts,
    pub upstream: RawUpstream,
    pub services: Vec<RawService>,
    pub routes: Vec<RawRoute>,
    pub security: RawSecurity,
    pub jwt: Vec<RawJwt>,
    pub api_keys: Vec<RawApiKeys>,
    pub rate_limits: Vec<RawRateLimit>,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub cluster: Option<RawCluster>,
    pub tls: Option<RawTls>,
    pub mtls: Vec<RawMtls>,
    pub caches: Vec<super::cache::RawCache>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    pub access: Option<String>,
    pub access_query: Option<bool>,
}

/// The top-level keys, each a `[table]` or a list of `[[tables]]`.
const SECTIONS: &[&str] =
    &["server", "limits", "timeouts", "upstream", "services", "routes", "security", "jwt", "api_keys", "rate_limits", "admin", "log", "cluster", "tls", "mtls", "caches"];

/// Reads a parsed TOML document. A value of the wrong type is reported at its key path and left
/// out (as if unset), so validation still runs over everything else.
pub fn read(doc: Table, errors: &mut Vec<ConfigError>) -> RawConfig {
    let mut raw = RawConfig::default();
    for (key, value) in doc {
        match key.as_str() {
            "server" => raw.server = table(&key, value, errors),
            "limits" => raw.limits = table(&key, value, errors),
            "timeouts" => raw.timeouts = table(&key, value, errors),
            "upstream" => raw.upstream = table(&key, value, errors),
            "services" => raw.services = tables(&key, value, errors),
            "routes" => raw.routes = tables(&key, value, errors),
            "security" => raw.security = table(&key, value, errors),
            "jwt" => raw.jwt = tables(&key, value, errors),
            "api_keys" => raw.api_keys = tables(&key, value, errors),
            "rate_limits" => raw.rate_limits = tables(&key, value, errors),
            "admin" => raw.admin = table(&key, value, errors),
            "log" => raw.log = table(&key, value, errors),
            "cluster" => raw.cluster = Some(table(&key, value, errors)),
            "tls" => raw.tls = Some(table(&key, value, errors)),
            "mtls" => raw.mtls = tables(&key, value, errors),
            "caches" => raw.caches = tables(&key, value, errors),
            _ => {
                let fix = suggest::did_you_mean(&key, SECTIONS.iter().copied());
                errors.push(unknown_key(key, fix));
            }
        }
    }
    raw
}

/// `fix` is a "did you mean" when a known key is close to the unknown one.
fn unknown_key(path: String, fix: Option<String>) -> ConfigError {
    ConfigError {
        path,
        problem: "unknown key".into(),
        fix: fix.unwrap_or_else(|| "remove it or correct its spelling; config/gateway.toml lists every key".into()),
        line: None,
    }
}

fn wrong_type(path: String, problem: String) -> ConfigError {
    ConfigError { path, problem, fix: "write it as config/gateway.toml shows".into(), line: None }
}

/// One `[name]` table. Its keys are flat, so a `serde_ignored` path is just the key.
fn table<T: DeserializeOwned + Default>(path: &str, value: Value, errors: &mut Vec<ConfigError>) -> T {
    let Value::Table(t) = value else {
        errors.push(wrong_type(path.into(), format!("must be a table, found {}", value.type_str())));
        return T::default();
    };
    let mut unknown = Vec::new();
    let v = match serde_ignored::deserialize(Value::Table(t.clone()), |p| unknown.push(p.to_string())) {
        Ok(v) => v,
        Err(_) => {
            // Some value has the wrong type: try the keys one at a time to name each bad one,
            // then read the others without them.
            unknown.clear();
            let mut good = Table::new();
            for (key, v) in t {
                let one: Table = [(key.clone(), v.clone())].into_iter().collect();
                match T::deserialize(Value::Table(one)) {
                    Ok(_) => {
                        good.insert(key, v);
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let first = msg.lines().next().unwrap_or_default().to_string();
                        errors.push(wrong_type(format!("{path}.{key}"), first));
                    }
                }
            }
            serde_ignored::deserialize(Value::Table(good), |p| unknown.push(p.to_string())).unwrap_or_default()
        }
    };
    if !unknown.is_empty() {
        let known = suggest::known_keys::<T>();
        for k in unknown {
            let at = key_path(&k);
            // The keys known beside this one: `keys[0].kind` is looked up among the keys of `keys[]`.
            let pattern = at.split('[').map(|s| s.split_once(']').map_or(s, |(_, rest)| rest)).collect::<Vec<_>>().join("[]");
            let (parent, name) = pattern.rsplit_once('.').unwrap_or(("", &pattern));
            let siblings = known.iter().filter(|(p, _)| p == parent).flat_map(|(_, keys)| keys.iter().copied());
            errors.push(unknown_key(format!("{path}.{at}"), suggest::did_you_mean(name, siblings)));
        }
    }
    v
}

/// Turns a `serde_ignored` path (`keys.0.?.x`: `?` marks an Option) into `keys[0].x`.
fn key_path(ignored: &str) -> String {
    let mut out = String::new();
    for seg in ignored.split('.').filter(|s| *s != "?") {
        if seg.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// A `[[name]]` array of tables; a bad element still takes its place so indices stay true.
fn tables<T: DeserializeOwned + Default>(path: &str, value: Value, errors: &mut Vec<ConfigError>) -> Vec<T> {
    let Value::Array(items) = value else {
        errors.push(wrong_type(path.into(), format!("must be a list of [[{path}]] tables, found {}", value.type_str())));
        return Vec::new();
    };
    items.into_iter().enumerate().map(|(i, v)| table(&format!("{path}[{i}]"), v, errors)).collect()
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<Vec<String>>,
    pub workers: Option<i64>,
    pub pin_cores: Option<bool>,
    /// "auto", "io_uring" or "epoll".
    pub driver: Option<String>,
    pub uring_entries: Option<i64>,
    pub read_buffer: Option<String>,
    pub backlog: Option<i64>,
    /// Buffers each shard keeps for reuse; more are allocated under load and freed after.
    pub pooled_buffers: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_head: Option<String>,
    pub max_target: Option<String>,
    pub max_headers: Option<i64>,
    pub max_body: Option<String>,
    pub max_connections: Option<i64>,
    pub max_trailer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTimeouts {
    pub header: Option<String>,
    pub idle: Option<String>,
    pub body: Option<String>,
    pub drain: Option<String>,
    pub drain_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawUpstream {
    pub resolve_every: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_idle_per_endpoint: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawService {
    pub name: Option<String>,
    pub upstreams: Option<Vec<RawEndpoint>>,
    pub balance: Option<String>,
    pub hash_on: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub max_concurrent: Option<i64>,
    pub breaker: Option<RawBreaker>,
    pub health: Option<RawHealth>,
    pub outlier: Option<RawOutlier>,
    pub retry: Option<RawRetry>,
    pub tls: Option<super::tls::RawUpstreamTls>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHealth {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_after: Option<i64>,
    pub unhealthy_after: Option<i64>,
    pub expect: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOutlier {
    pub consecutive_failures: Option<i64>,
    pub eject_for: Option<String>,
    pub max_ejected_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRetry {
    pub attempts: Option<i64>,
    pub on: Option<Vec<String>>,
    pub budget: Option<i64>,
    pub backoff: Option<String>,
}

/// One `upstreams` entry: `"host:port"` or `{ addr = "host:port", weight = 3 }`.
#[derive(Debug)]
pub enum RawEndpoint {
    Addr(String),
    Table { addr: Option<String>, weight: Option<i64>, unknown: Vec<String> },
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EndpointVisitor)
    }
}

struct EndpointVisitor;

impl<'de> serde::de::Visitor<'de> for EndpointVisitor {
    type Value = RawEndpoint;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a \"host:port\" string or a table { addr = \"host:port\", weight = 1 }")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawEndpoint, E> {
        Ok(RawEndpoint::Addr(v.to_string()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<RawEndpoint, A::Error> {
        let (mut addr, mut weight, mut unknown) = (None, None, Vec::new());
        while let Some(k) = m.next_key::<String>()? {
            match k.as_str() {
                "addr" => addr = Some(m.next_value()?),
                "weight" => weight = Some(m.next_value()?),
                _ => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                    unknown.push(k);
                }
            }
        }
        Ok(RawEndpoint::Table { addr, weight, unknown })
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawBreaker {
    pub window: Option<String>,
    pub min_requests: Option<i64>,
    pub error_rate: Option<i64>,
    pub open_for: Option<String>,
    pub half_open_requests: Option<i64>,
    pub fallback: Option<RawFallback>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawFallback {
    pub status: Option<i64>,
    pub content_type: Option<String>,
    pub body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRoute {
    pub name: Option<String>,
    pub paths: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub service: Option<String>,
    pub strip_prefix: Option<bool>,
    pub max_body: Option<String>,
    pub auth: Option<Vec<String>>,
    pub rate_limits: Option<Vec<String>>,
    pub ip_allow: Option<Vec<String>>,
    pub ip_deny: Option<Vec<String>>,
    pub cors: Option<RawCors>,
    pub validate: Option<RawValidate>,
    pub timeout: Option<String>,
    pub transform: Option<super::transform::RawTransform>,
    pub aggregate: Option<super::transform::RawAggregate>,
    pub cache: Option<String>,
    pub cache_policy: Option<super::cache::RawCachePolicy>,
}

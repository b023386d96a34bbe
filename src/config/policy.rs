//! The policy parts of the config: `[security]`, `[[jwt]]`, `[[api_keys]]`, `[[rate_limits]]`,
//! and the per-route `auth`, `rate_limits`, `ip_allow`/`ip_deny`, `cors` and `validate` keys.
//! Keys and key files are read and parsed here, once, so a bad key is a config error.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::cluster::{self, ClusterSettings, OnError, Scope, SyncMode};
use super::{suggest, units, Checker};
use crate::policy::apikey::{ApiKeySet, KeyLocation};
use crate::policy::cors::Cors;
use crate::policy::ip::{Cidr, IpList, IpRules};
use crate::policy::jwt::{JwtConfig, JwtVerifier, KeySource};
use crate::policy::ratelimit::LimitConfig;

#[derive(Debug, Default, Deserialize)]
pub struct RawSecurity {
    pub trusted_proxies: Option<Vec<String>>,
    pub client_ip_header: Option<String>,
    pub ip_allow: Option<Vec<String>>,
    pub ip_deny: Option<Vec<String>>,
    pub max_connections_per_ip: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawJwt {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub leeway: Option<String>,
    pub required_claims: Option<Vec<String>>,
    pub jwks_file: Option<String>,
    pub keys: Option<Vec<RawJwtKey>>,
    pub token_cookie: Option<String>,
    pub token_query: Option<String>,
    pub forward_claims: Option<BTreeMap<String, String>>,
    pub cache_size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawJwtKey {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub secret: Option<String>,
    pub secret_base64: Option<String>,
    pub pem_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawApiKeys {
    pub name: Option<String>,
    pub header: Option<String>,
    pub query: Option<String>,
    pub forward_consumer: Option<String>,
    pub keys: Option<Vec<RawApiKey>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawApiKey {
    pub consumer: Option<String>,
    pub sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRateLimit {
    pub name: Option<String>,
    pub requests: Option<i64>,
    pub window: Option<String>,
    pub burst: Option<i64>,
    pub key: Option<String>,
    pub max_keys: Option<i64>,
    pub scope: Option<String>,
    pub sync: Option<String>,
    pub on_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCors {
    pub allow_origins: Option<Vec<String>>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawValidate {
    pub content_types: Option<Vec<String>>,
    pub json: Option<bool>,
    pub max_json: Option<String>,
}

/// Server-wide client-address rules.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub trusted_proxies: IpList,
    /// Header read for the client address when the peer is a trusted proxy.
    pub client_ip_header: String,
    pub ip: IpRules,
    /// 0 = no cap.
    pub max_connections_per_ip: usize,
}

/// A verifier shared by all shards.
#[derive(Clone)]
pub struct SharedVerifier(pub Arc<JwtVerifier>);

impl fmt::Debug for SharedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtVerifier")
    }
}

#[derive(Debug, Clone)]
pub struct JwtProvider {
    pub name: String,
    pub verifier: SharedVerifier,
    pub token_cookie: Option<String>,
    pub token_query: Option<String>,
    pub cache_size: usize,
    /// Claim headers this provider sets upstream (client copies are stripped).
    pub forward_headers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    Consumer,
    Route,
    Header(String),
}

#[derive(Debug, Clone)]
pub struct RateLimitDef {
    pub limit: LimitConfig,
    pub key: LimitKey,
    /// Where the counts live: this host, or Redis shared with other hosts.
    pub scope: Scope,
}

/// One way a route may authenticate a request; any one that succeeds is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRef {
    Jwt(usize),
    ApiKey(usize),
    Mtls(usize),
}

#[derive(Debug, Clone, Default)]
pub struct Validate {
    /// Lower-case media types (no parameters); empty = any.
    pub content_types: Vec<String>,
    pub json: bool,
    pub max_json: u64,
}

/// Per-route policy settings.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    pub auth: Vec<AuthRef>,
    pub rate_limits: Vec<usize>,
    pub ip: IpRules,
    pub cors: Option<Cors>,
    pub validate: Validate,
    /// Identity headers the route's providers set upstream; client-sent copies are dropped.
    pub strip_headers: Vec<String>,
}

fn ip_list(c: &mut Checker, path: &str, v: &Option<Vec<String>>) -> IpList {
    let mut out = Vec::new();
    for (i, s) in v.iter().flatten().enumerate() {
        match Cidr::parse(s) {
            Ok(cidr) => out.push(cidr),
            Err(e) => c.err(format!("{path}[{i}]"), e, "write an address (\"203.0.113.7\") or a block (\"10.0.0.0/8\", \"2001:db8::/32\")"),
        }
    }
    IpList(out)
}

fn header_name_ok(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(crate::http::parse::is_tchar)
}

pub(crate) fn security(c: &mut Checker, raw: &RawSecurity) -> Security {
    let header = raw.client_ip_header.clone().unwrap_or_else(|| "X-Forwarded-For".into());
    if !header_name_ok(&header) {
        c.err("security.client_ip_header", format!("`{header}` is not a header name"), "use e.g. \"X-Forwarded-For\"");
    }
    Security {
        trusted_proxies: ip_list(c, "security.trusted_proxies", &raw.trusted_proxies),
        client_ip_header: header,
        ip: IpRules {
            allow: ip_list(c, "security.ip_allow", &raw.ip_allow),
            deny: ip_list(c, "security.ip_deny", &raw.ip_deny),
        },
        max_connections_per_ip: c.int("security.max_connections_per_ip", raw.max_connections_per_ip, 0, 0, 1_000_000) as usize,
    }
}

pub(crate) fn jwt(c: &mut Checker, i: usize, raw: &RawJwt, base: &std::path::Path, template_claims: &[String]) -> Option<JwtProvider> {
    let p = format!("jwt[{i}]");
    let Some(name) = raw.name.clone().filter(|n| !n.is_empty()) else {
        c.err(format!("{p}.name"), "missing", "add name = \"main\" (routes refer to it in auth = [...])");
        return None;
    };
    let errors_before = c.errors.len();
    let mut keys = Vec::new();
    for (j, k) in raw.keys.iter().flatten().enumerate() {
        let kp = format!("{p}.keys[{j}]");
        let Some(alg) = k.alg.clone() else {
            c.err(format!("{kp}.alg"), "missing", "every key names its algorithm, e.g. alg = \"RS256\" (the key decides the algorithm)");
            continue;
        };
        let sources = [k.secret.is_some(), k.secret_base64.is_some(), k.pem_file.is_some()];
        if sources.iter().filter(|&&x| x).count() != 1 {
            c.err(kp.clone(), "needs exactly one of secret, secret_base64, pem_file", "HS* keys take a secret; RS*/PS*/ES*/EdDSA keys a pem_file");
            continue;
        }
        if let Some(s) = &k.secret {
            keys.push(KeySource::Secret { kid: k.kid.clone(), alg, secret: s.as_bytes().to_vec() });
        } else if let Some(b) = &k.secret_base64 {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b.trim()));
            match decoded {
                Ok(secret) => keys.push(KeySource::Secret { kid: k.kid.clone(), alg, secret }),
                Err(_) => c.err(format!("{kp}.secret_base64"), "not valid base64", "encode the secret with standard or URL-safe base64"),
            }
        } else if let Some(f) = &k.pem_file {
            keys.push(KeySource::PemFile { kid: k.kid.clone(), alg, path: base.join(f) });
        }
    }
    let jwks_file = raw.jwks_file.as_ref().map(|f| base.join(f));
    if keys.is_empty() && jwks_file.is_none() && c.errors.len() == errors_before {
        c.err(format!("{p}.keys"), "no keys", "add [[jwt.keys]] entries or a jwks_file");
    }
    let forward: Vec<(String, String)> =
        raw.forward_claims.iter().flatten().map(|(claim, header)| (claim.clone(), header.clone())).collect();
    for (claim, header) in &forward {
        if !header_name_ok(header) {
            c.err(format!("{p}.forward_claims.{claim}"), format!("`{header}` is not a header name"), "use e.g. \"X-Consumer-Id\"");
        }
    }
    let cfg = JwtConfig {
        name: name.clone(),
        issuer: raw.issuer.clone(),
        audiences: raw.audiences.clone().unwrap_or_default(),
        leeway: c.seconds(&format!("{p}.leeway"), &raw.leeway, Duration::from_secs(60)),
        required_claims: raw.required_claims.clone().unwrap_or_default(),
        keys,
        jwks_file,
        forward_claims: forward.clone(),
        template_claims: template_claims.to_vec(),
    };
    let cache_size = c.int(&format!("{p}.cache_size"), raw.cache_size, 10_000, 0, 10_000_000) as usize;
    if c.errors.len() > errors_before {
        // Already reported; building the verifier would only restate the same problems.
        return None;
    }
    match JwtVerifier::from_config(&cfg) {
        Ok(v) => Some(JwtProvider {
            name,
            verifier: SharedVerifier(Arc::new(v)),
            token_cookie: raw.token_cookie.clone(),
            token_query: raw.token_query.clone(),
            cache_size,
            forward_headers: forward.into_iter().map(|(_, h)| h).collect(),
        }),
        Err(problems) => {
            for problem in problems {
                c.err(p.clone(), problem, "check the key material and its alg");
            }
            None
        }
    }
}

pub(crate) fn api_keys(c: &mut Checker, i: usize, raw: &RawApiKeys) -> Option<ApiKeySet> {
    let p = format!("api_keys[{i}]");
    let Some(name) = raw.name.clone().filter(|n| !n.is_empty()) else {
        c.err(format!("{p}.name"), "missing", "add name = \"partners\" (routes refer to it in auth = [...])");
        return None;
    };
    let location = match (&raw.header, &raw.query) {
        (Some(h), None) if header_name_ok(h) => KeyLocation::Header(h.clone()),
        (None, Some(q)) if !q.is_empty() => KeyLocation::Query(q.clone()),
        (None, None) => KeyLocation::Header("X-Api-Key".into()),
        _ => {
            c.err(p.clone(), "needs one valid key location", "set header = \"X-Api-Key\" or query = \"api_key\", not both");
            return None;
        }
    };
    let mut keys = Vec::new();
    for (j, k) in raw.keys.iter().flatten().enumerate() {
        match (&k.consumer, &k.sha256) {
            (Some(cn), Some(h)) if !cn.is_empty() => keys.push((cn.clone(), h.clone())),
            _ => c.err(format!("{p}.keys[{j}]"), "needs consumer and sha256", "e.g. { consumer = \"acme\", sha256 = \"<hex of sha256(key)>\" }"),
        }
    }
    if let Some(h) = &raw.forward_consumer {
        if !header_name_ok(h) {
            c.err(format!("{p}.forward_consumer"), format!("`{h}` is not a header name"), "use e.g. \"X-Consumer-Id\"");
        }
    }
    match ApiKeySet::new(name, location, raw.forward_consumer.clone(), &keys) {
        Ok(set) => Some(set),
        Err(e) => {
            c.err(format!("{p}.keys"), e, "store each key as the hex SHA-256 of the key (e.g. `printf %s KEY | sha256sum`)");
            None
        }
    }
}

pub(crate) fn rate_limit(c: &mut Checker, i: usize, raw: &RawRateLimit, cluster: Option<&ClusterSettings>, has_cluster: bool) -> Option<RateLimitDef> {
    let p = format!("rate_limits[{i}]");
    let Some(name) = raw.name.clone().filter(|n| !n.is_empty() && !n.contains(['"', '\\'])) else {
        c.err(format!("{p}.name"), "missing or contains quotes", "add name = \"per-ip\" (it appears in RateLimit-Policy)");
        return None;
    };
    if raw.requests.is_none() {
        c.err(format!("{p}.requests"), "missing", "add requests = 100 (allowed per window)");
        return None;
    }
    let requests = c.int(&format!("{p}.requests"), raw.requests, 1, 1, i64::MAX) as u64;
    let window = c.duration(&format!("{p}.window"), &raw.window, Duration::from_secs(1));
    let burst = c.int(&format!("{p}.burst"), raw.burst, requests as i64, 1, i64::MAX) as u64;
    let max_keys = c.int(&format!("{p}.max_keys"), raw.max_keys, 100_000, 1, 100_000_000) as usize;
    let key = match raw.key.as_deref() {
        None | Some("ip") => LimitKey::ClientIp,
        Some("consumer") => LimitKey::Consumer,
        Some("route") => LimitKey::Route,
        Some(other) => match other.strip_prefix("header:") {
            Some(h) if header_name_ok(h) => LimitKey::Header(h.to_string()),
            _ => {
                c.err(format!("{p}.key"), format!("unknown key `{other}`"), "use \"ip\", \"consumer\", \"route\" or \"header:X-Name\"");
                LimitKey::ClientIp
            }
        },
    };
    let limit = LimitConfig { name, requests, window, burst, max_keys };
    for (field, problem) in limit.problems() {
        c.err(format!("{p}.{field}"), problem, "see the [[rate_limits]] example in config/gateway.toml");
    }
    let scope = scope(c, &p, raw, cluster, has_cluster, window);
    Some(RateLimitDef { limit, key, scope })
}

/// `scope`, `sync` and `on_error` of one limit.
fn scope(c: &mut Checker, p: &str, raw: &RawRateLimit, cluster: Option<&ClusterSettings>, has_cluster: bool, window: Duration) -> Scope {
    let on_error = cluster::on_error(c, &format!("{p}.on_error"), raw.on_error.as_deref());
    match raw.scope.as_deref() {
        None | Some("local") => {
            for (key, set) in [("sync", raw.sync.is_some()), ("on_error", raw.on_error.is_some())] {
                if set {
                    c.err(format!("{p}.{key}"), "only applies to a limit with scope = \"cluster\"", "add scope = \"cluster\" or remove it");
                }
            }
            Scope::Local
        }
        Some("cluster") => {
            if !has_cluster {
                c.err(format!("{p}.scope"), "scope = \"cluster\" needs a [cluster] table", "add [cluster] with redis = [\"redis://127.0.0.1:6379\"]");
            }
            let sync = match raw.sync.as_deref() {
                None | Some("exact") => SyncMode::Exact,
                Some(text) => match units::parse_duration(text) {
                    Ok(d) if d.is_zero() => {
                        c.err(format!("{p}.sync"), "an interval of zero", "use \"exact\" or an interval such as \"100ms\"");
                        SyncMode::Exact
                    }
                    Ok(d) if d >= window => {
                        c.err(format!("{p}.sync"), format!("the interval {text} is not shorter than the window"), "sync several times a window, e.g. \"100ms\"");
                        SyncMode::Exact
                    }
                    Ok(d) => SyncMode::Every(d),
                    Err(e) => {
                        c.err(format!("{p}.sync"), format!("neither \"exact\" nor a duration: {e}"), "use \"exact\" or an interval such as \"100ms\"");
                        SyncMode::Exact
                    }
                },
            };
            let on_error = on_error.or(cluster.map(|s| s.on_error)).unwrap_or(OnError::Local);
            Scope::Cluster { sync, on_error }
        }
        Some(other) => {
            c.err(format!("{p}.scope"), format!("unknown scope `{other}`"), "use \"local\" or \"cluster\"");
            Scope::Local
        }
    }
}

pub struct PolicyNames<'a> {
    pub jwt: &'a [JwtProvider],
    pub api_keys: &'a [ApiKeySet],
    pub mtls: &'a [super::tls::MtlsProvider],
    pub rate_limits: &'a [RateLimitDef],
    /// Every `[[jwt]]` and `[[api_keys]]` name in the file, built or not: a provider whose keys
    /// failed is reported where it is defined, and its routes must not also call it missing.
    pub defined_auth: Vec<&'a str>,
    /// Every `[[rate_limits]]` name in the file, built or not.
    pub defined_limits: Vec<&'a str>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn route_policy(
    c: &mut Checker,
    p: &str,
    auth: &Option<Vec<String>>,
    limits: &Option<Vec<String>>,
    ip_allow: &Option<Vec<String>>,
    ip_deny: &Option<Vec<String>>,
    cors: &Option<RawCors>,
    validate: &Option<RawValidate>,
    names: &PolicyNames,
) -> RoutePolicy {
    let mut out = RoutePolicy::default();
    for (j, a) in auth.iter().flatten().enumerate() {
        let jwt = names.jwt.iter().position(|x| &x.name == a).map(AuthRef::Jwt);
        let key = names.api_keys.iter().position(|x| &x.name == a).map(AuthRef::ApiKey);
        let cert = names.mtls.iter().position(|x| &x.name == a).map(AuthRef::Mtls);
        match jwt.or(key).or(cert) {
            Some(r) => out.auth.push(r),
            None if names.defined_auth.contains(&a.as_str()) => {} // its own error says what is wrong
            None => c.err(
                format!("{p}.auth[{j}]"),
                format!("no [[jwt]], [[api_keys]] or [[mtls]] named `{a}`"),
                suggest::name_fix(a, &names.defined_auth, "providers", "define a [[jwt]], [[api_keys]] or [[mtls]] table with this name"),
            ),
        }
    }
    for (j, l) in limits.iter().flatten().enumerate() {
        match names.rate_limits.iter().position(|x| &x.limit.name == l) {
            Some(k) => out.rate_limits.push(k),
            None if names.defined_limits.contains(&l.as_str()) => {}
            None => c.err(
                format!("{p}.rate_limits[{j}]"),
                format!("no [[rate_limits]] named `{l}`"),
                suggest::name_fix(l, &names.defined_limits, "limits", "define a [[rate_limits]] table with this name"),
            ),
        }
    }
    for a in &out.auth {
        match *a {
            AuthRef::Jwt(k) => out.strip_headers.extend(names.jwt[k].forward_headers.iter().cloned()),
            AuthRef::ApiKey(k) => out.strip_headers.extend(names.api_keys[k].forward_consumer.iter().cloned()),
            AuthRef::Mtls(k) => out.strip_headers.extend(names.mtls[k].forward_subject.iter().cloned()),
        }
    }
    if out.rate_limits.len() > 8 {
        c.err(format!("{p}.rate_limits"), "more than 8 limits on one route", "combine limits; 8 is the most a route applies");
    }
    // Whether the route names any provider, found or not: one that is missing or broken is
    // reported on its own, not as "no auth" as well.
    let has_auth = auth.iter().flatten().next().is_some();
    for &k in &out.rate_limits {
        if names.rate_limits[k].key == LimitKey::Consumer && !has_auth {
            c.err(format!("{p}.rate_limits"), format!("limit `{}` is keyed by consumer but the route has no auth", names.rate_limits[k].limit.name), "add auth = [...] or key the limit by ip");
        }
    }
    out.ip = IpRules { allow: ip_list(c, &format!("{p}.ip_allow"), ip_allow), deny: ip_list(c, &format!("{p}.ip_deny"), ip_deny) };
    if let Some(rc) = cors {
        let max_age = c.seconds(&format!("{p}.cors.max_age"), &rc.max_age, Duration::from_secs(600)).as_secs();
        let v = |x: &Option<Vec<String>>| x.clone().unwrap_or_default();
        let methods = rc.allow_methods.clone().unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()]);
        match Cors::new(&v(&rc.allow_origins), &methods, &v(&rc.allow_headers), &v(&rc.expose_headers), rc.allow_credentials.unwrap_or(false), max_age) {
            Ok(cors) => out.cors = Some(cors),
            Err(e) => c.err(format!("{p}.cors"), e, "see config/gateway.toml for a CORS example"),
        }
    }
    if let Some(rv) = validate {
        out.validate = Validate {
            content_types: rv.content_types.iter().flatten().map(|t| t.trim().to_ascii_lowercase()).collect(),
            json: rv.json.unwrap_or(false),
            max_json: c.size(&format!("{p}.validate.max_json"), &rv.max_json, 64 << 10, 2, 16 << 20),
        };
    }
    out
}

//! `[[caches]]` (per-shard response stores) and a route's `cache` and `[routes.cache_policy]`:
//! which store, what makes the key, and the freshness and staleness used when the origin says
//! nothing (RFC 9111 §4.2.2, RFC 5861).

use std::time::Duration;

use serde::Deserialize;

use super::Checker;

#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    pub name: Option<String>,
    pub max_memory: Option<String>,
    pub max_object: Option<String>,
    pub max_variants: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCachePolicy {
    pub ttl: Option<String>,
    pub key: Option<Vec<String>>,
    pub stale_while_revalidate: Option<String>,
    pub stale_if_error: Option<String>,
    pub lock_timeout: Option<String>,
    pub store_set_cookie: Option<bool>,
}

/// One `[[caches]]` store; each shard holds its own copy of it, up to `max_memory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDef {
    pub name: String,
    /// Bytes one shard's store holds at most, entries' bookkeeping included.
    pub max_memory: u64,
    /// Larger responses stream through uncached.
    pub max_object: u64,
    /// Stored variants (`Vary`) of one URL at most; a new one replaces the oldest.
    pub max_variants: usize,
}

/// One part of a cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// GET and HEAD share their entry (a HEAD is answered from a stored GET).
    Method,
    Host,
    Path,
    Query,
    Header(String),
    Cookie(String),
    Consumer,
}

/// A route's use of a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    /// Index into `Config::caches`.
    pub cache: usize,
    /// Freshness when the origin gives none; zero: only what the origin says (and the
    /// heuristic of RFC 9111 §4.2.2 for responses with `Last-Modified`).
    pub ttl: Duration,
    pub key: Vec<KeyPart>,
    /// RFC 5861 defaults when the response carries none.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// How long a request waits for another request's fill of the same key before going to
    /// the upstream itself.
    pub lock_timeout: Duration,
    /// Responses with `Set-Cookie` are stored (and the cookie replayed to every client), as
    /// RFC 9111 allows; false keeps them out of the cache.
    pub store_set_cookie: bool,
}

impl CachePolicy {
    pub fn uses(&self, part: &KeyPart) -> bool {
        self.key.contains(part)
    }
}

/// Defaults of `[[caches]]` and `[routes.cache_policy]`.
pub const DEFAULT_MAX_MEMORY: u64 = 256 << 20;
pub const DEFAULT_MAX_OBJECT: u64 = 8 << 20;
pub const DEFAULT_MAX_VARIANTS: i64 = 16;
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn caches(c: &mut Checker, raw: &[RawCache]) -> Vec<CacheDef> {
    let mut out: Vec<CacheDef> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let p = format!("caches[{i}]");
        let Some(name) = r.name.clone().filter(|n| !n.is_empty()) else {
            c.err(format!("{p}.name"), "missing", "add name = \"edge\" and name it in a route's cache");
            continue;
        };
        if out.iter().any(|d| d.name == name) {
            c.err(format!("{p}.name"), format!("cache `{name}` is defined twice"), "give each cache a unique name");
        }
        let max_memory = c.size(&format!("{p}.max_memory"), &r.max_memory, DEFAULT_MAX_MEMORY, 64 << 10, 1 << 40);
        let max_object = c.size(&format!("{p}.max_object"), &r.max_object, DEFAULT_MAX_OBJECT.min(max_memory / 4), 1, 1 << 32);
        if max_object > max_memory / 4 {
            c.err(
                format!("{p}.max_object"),
                format!("{max_object} bytes is more than a quarter of max_memory ({max_memory} bytes)"),
                "lower max_object or raise max_memory: one object may take at most a quarter of a shard's store",
            );
        }
        let max_variants = c.int(&format!("{p}.max_variants"), r.max_variants, DEFAULT_MAX_VARIANTS, 1, 1024) as usize;
        out.push(CacheDef { name, max_memory, max_object, max_variants });
    }
    out
}

pub(crate) fn route_cache(
    c: &mut Checker,
    p: &str,
    name: Option<&str>,
    raw: Option<&RawCachePolicy>,
    caches: &[CacheDef],
    defined: &[&str],
) -> Option<CachePolicy> {
    let Some(name) = name else {
        if raw.is_some() {
            c.err(format!("{p}.cache_policy"), "set without a cache", "name the store with cache = \"edge\" (a [[caches]] entry)");
        }
        return None;
    };
    let Some(cache) = caches.iter().position(|d| d.name == name) else {
        // A cache defined with problems of its own is reported there.
        if !defined.contains(&name) {
            let known: Vec<&str> = caches.iter().map(|d| d.name.as_str()).collect();
            let fix = super::suggest::name_fix(name, &known, "caches", &format!("add a [[caches]] table with name = \"{name}\""));
            c.err(format!("{p}.cache"), format!("no cache named `{name}`"), fix);
        }
        return None;
    };
    let empty = RawCachePolicy::default();
    let r = raw.unwrap_or(&empty);
    let pp = format!("{p}.cache_policy");
    let mut key = Vec::new();
    let default_key = ["method", "host", "path", "query"].map(String::from);
    for (j, part) in r.key.as_deref().unwrap_or(&default_key).iter().enumerate() {
        let k = match part.as_str() {
            "method" => KeyPart::Method,
            "host" => KeyPart::Host,
            "path" => KeyPart::Path,
            "query" => KeyPart::Query,
            "consumer" => KeyPart::Consumer,
            other => match other.split_once(':') {
                Some(("header", h)) if valid_token(h) => KeyPart::Header(h.to_ascii_lowercase()),
                Some(("cookie", n)) if valid_token(n) => KeyPart::Cookie(n.to_string()),
                _ => {
                    c.err(
                        format!("{pp}.key[{j}]"),
                        format!("`{part}` is not a key part"),
                        "use method, host, path, query, consumer, \"header:NAME\" or \"cookie:NAME\"",
                    );
                    continue;
                }
            },
        };
        if !key.contains(&k) {
            key.push(k);
        }
    }
    if !key.contains(&KeyPart::Path) {
        c.err(format!("{pp}.key"), "does not include path", "add \"path\": without it every URL of the route would share one entry");
    }
    Some(CachePolicy {
        cache,
        ttl: c.duration0(&format!("{pp}.ttl"), &r.ttl, Duration::ZERO),
        key,
        stale_while_revalidate: c.duration0(&format!("{pp}.stale_while_revalidate"), &r.stale_while_revalidate, Duration::ZERO),
        stale_if_error: c.duration0(&format!("{pp}.stale_if_error"), &r.stale_if_error, Duration::ZERO),
        lock_timeout: c.duration(&format!("{pp}.lock_timeout"), &r.lock_timeout, DEFAULT_LOCK_TIMEOUT),
        store_set_cookie: r.store_set_cookie.unwrap_or(true),
    })
}

fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

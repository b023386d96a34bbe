//! `[cluster]`: the Redis that rate limits with `scope = "cluster"` share with the other gateway
//! hosts, and how a limit decides when Redis cannot.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::Checker;

/// A limit decision waits at most this long on Redis unless `[cluster] timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5);
pub const DEFAULT_KEY_PREFIX: &str = "ringgate:";

#[derive(Debug, Default, Deserialize)]
pub struct RawCluster {
    pub redis: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub on_error: Option<String>,
    pub key_prefix: Option<String>,
}

/// What a cluster limit decides when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The host's own limiter decides (the limit then holds per host, not across hosts).
    Local,
    Allow,
    /// 503 `limit_store_unavailable`.
    Deny,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Local => "local",
            OnError::Allow => "allow",
            OnError::Deny => "deny",
        }
    }
}

/// Where a limit's counts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In this host's memory, exact across its shards.
    Local,
    Cluster { sync: SyncMode, on_error: OnError },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every decision is one atomic step in Redis.
    Exact,
    /// Decided locally; counts are pushed and the cluster's totals pulled every interval.
    Every(Duration),
}

/// One Redis node as configured: `redis://[[user]:password@]host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAddr {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl RedisAddr {
    pub fn parse(s: &str) -> Result<RedisAddr, String> {
        let rest = s.strip_prefix("redis://").ok_or_else(|| "must start with redis://".to_string())?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some(("", p)) => (None, Some(p.to_string())),
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => return Err("credentials must be `:password@` or `user:password@`".into()),
            },
        };
        if password.as_deref() == Some("") {
            return Err("the password is empty".into());
        }
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| "needs host:port".to_string())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(format!("`{host}` is not a host name or address"));
        }
        let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(|| format!("`{port}` is not a port"))?;
        Ok(RedisAddr { host: host.to_string(), port, user, password })
    }

    /// `host:port`, for connecting and for `MOVED` replies.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Shown with the password redacted: this is what logs and `/config` print.
impl fmt::Display for RedisAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:(redacted)@")?,
            (None, Some(_)) => f.write_str(":(redacted)@")?,
            _ => {}
        }
        f.write_str(&self.host_port())
    }
}

impl fmt::Debug for RedisAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// One address: a single Redis. Several: seed nodes of a Redis Cluster.
    pub redis: Vec<RedisAddr>,
    pub timeout: Duration,
    pub on_error: OnError,
    pub key_prefix: String,
}

pub(crate) fn on_error(c: &mut Checker, path: &str, v: Option<&str>) -> Option<OnError> {
    match v? {
        "local" => Some(OnError::Local),
        "allow" => Some(OnError::Allow),
        "deny" => Some(OnError::Deny),
        other => {
            c.err(path, format!("unknown decision `{other}`"), "use \"local\", \"allow\" or \"deny\"");
            None
        }
    }
}

pub(crate) fn settings(c: &mut Checker, raw: Option<&RawCluster>) -> Option<ClusterSettings> {
    let raw = raw?;
    let mut redis = Vec::new();
    match &raw.redis {
        None => c.err("cluster.redis", "missing", "add redis = [\"redis://127.0.0.1:6379\"]"),
        Some(list) if list.is_empty() => c.err("cluster.redis", "no address", "add redis = [\"redis://127.0.0.1:6379\"]"),
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                match RedisAddr::parse(s) {
                    Ok(a) => redis.push(a),
                    // The text may hold a password: it is not repeated in the error.
                    Err(e) => c.err(format!("cluster.redis[{i}]"), format!("not a Redis URL: {e}"), "write redis://host:port, redis://:password@host:port or redis://user:password@host:port"),
                }
            }
        }
    }
    let timeout = c.duration("cluster.timeout", &raw.timeout, DEFAULT_TIMEOUT);
    if timeout > Duration::from_secs(1) {
        c.err("cluster.timeout", "longer than 1s", "a limit decision should never wait long on Redis: use e.g. \"5ms\"");
    }
    let on_error = on_error(c, "cluster.on_error", raw.on_error.as_deref()).unwrap_or(OnError::Local);
    let key_prefix = raw.key_prefix.clone().unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
    if key_prefix.len() > 64 || key_prefix.bytes().any(|b| !(0x21..0x7f).contains(&b) || b == b'{' || b == b'}') {
        c.err(
            "cluster.key_prefix",
            "must be at most 64 printable characters without spaces or braces (braces would change the hash slots of the keys)",
            "use e.g. \"ringgate:\"",
        );
    }
    Some(ClusterSettings { redis, timeout, on_error, key_prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// host, port, user, password
    type Parsed<'a> = (&'a str, u16, Option<&'a str>, Option<&'a str>);

    #[test]
    fn redis_urls() {
        let cases: &[(&str, Result<Parsed, ()>)] = &[
            ("redis://127.0.0.1:6379", Ok(("127.0.0.1", 6379, None, None))),
            ("redis://:s3cret@db:6380/", Ok(("db", 6380, None, Some("s3cret")))),
            ("redis://app:p@ss@db:1", Ok(("db", 1, Some("app"), Some("p@ss")))),
            ("redis://[::1]:6379", Ok(("::1", 6379, None, None))),
            ("http://db:6379", Err(())),
            ("redis://db", Err(())),
            ("redis://db:0", Err(())),
            ("redis://db:99999", Err(())),
            ("redis://user@db:6379", Err(())),
            ("redis://:@db:6379", Err(())),
        ];
        for (text, want) in cases {
            let got = RedisAddr::parse(text);
            match (want, got) {
                (Ok((h, p, u, pw)), Ok(a)) => {
                    assert_eq!((a.host.as_str(), a.port, a.user.as_deref(), a.password.as_deref()), (*h, *p, *u, *pw), "{text}")
                }
                (Err(()), Err(_)) => {}
                (w, g) => panic!("{text}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn passwords_never_shown() {
        let a = RedisAddr::parse("redis://app:hunter2@db:6379").unwrap();
        assert_eq!(a.to_string(), "redis://app:(redacted)@db:6379");
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}

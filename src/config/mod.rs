//! Configuration: TOML → raw structs (`raw`) → a validated `Config`. Validation collects every
//! problem, each with its key path and a fix, so `ringgate check` can list them all at once.

pub mod cache;
pub mod cluster;
mod locate;
pub mod policy;
mod raw;
mod suggest;
pub mod tls;
pub mod transform;
pub mod units;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use policy::{JwtProvider, PolicyNames, RateLimitDef, RoutePolicy, Security};
use raw::{RawConfig, RawRoute, RawService};
use crate::policy::apikey::ApiKeySet;
use units::{parse_duration, parse_size};

/// Which io driver shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, epoll otherwise.
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub upstream: UpstreamDefaults,
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub security: Security,
    pub jwt: Vec<JwtProvider>,
    pub api_keys: Vec<ApiKeySet>,
    pub rate_limits: Vec<RateLimitDef>,
    pub admin: Admin,
    pub log: Log,
    /// The Redis that `scope = "cluster"` limits share; absent when no `[cluster]` table.
    pub cluster: Option<cluster::ClusterSettings>,
    /// TLS listeners and their certificates; absent when no `[tls]` table.
    pub tls: Option<tls::Tls>,
    /// Auth providers that admit requests by client certificate.
    pub mtls: Vec<tls::MtlsProvider>,
    /// Response stores (`[[caches]]`), one copy per shard.
    pub caches: Vec<cache::CacheDef>,
    /// Problems that do not stop the config from loading (a certificate expiring soon).
    pub warnings: Vec<String>,
}

/// The admin listener (metrics, health, config, reload); off when `listen` is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: Option<SocketAddr>,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub access: AccessLogTarget,
    /// Log the query string with the path (off by default: queries may carry tokens).
    pub access_query: bool,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    /// Resolved shard count (never 0).
    pub workers: usize,
    pub pin_cores: bool,
    pub driver: DriverChoice,
    pub uring_entries: u32,
    pub read_buffer: usize,
    pub backlog: i32,
    pub pooled_buffers: usize,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line plus header section; larger is 431.
    pub max_head: usize,
    /// Request-target length; longer is 414.
    pub max_target: usize,
    /// Header field count; more is 431.
    pub max_headers: usize,
    /// Default request body limit for routes that set none; larger is 413.
    pub max_body: u64,
    /// Client connections across all shards; at the limit, accepting pauses.
    pub max_connections: usize,
    /// Chunked trailer section size.
    pub max_trailer: usize,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    /// From the first byte of a request (or from accept) to its complete head.
    pub header: Duration,
    /// A keep-alive connection with no request in progress.
    pub idle: Duration,
    /// Longest wait for any one read or write of a body, either side.
    pub body: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain: Duration,
    /// On shutdown, how long an idle keep-alive connection is still read from: a request that
    /// arrives within it is answered (with `Connection: close`) instead of lost to the close.
    pub drain_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamDefaults {
    /// How often upstream host names are resolved again (a changed address set is applied as a
    /// reload of the running config).
    pub resolve_every: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub upstreams: Vec<SocketAddr>,
    /// One per upstream, in the same order (1 unless set).
    pub weights: Vec<u32>,
    /// The `upstreams` entries as written (host:port, weight): names are resolved again every
    /// `upstream.resolve_every`.
    pub entries: Vec<(String, u32)>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// In-flight requests to this service from the whole host; 0 = no bound. Over it: 503 at once.
    pub max_concurrent: usize,
    pub breaker: Option<BreakerConfig>,
    pub health: Option<HealthConfig>,
    pub outlier: Option<OutlierConfig>,
    pub retry: RetryConfig,
    /// TLS to the upstreams, when set.
    pub tls: Option<tls::UpstreamTls>,
}

/// `[services.health]`: active checks, one prober per endpoint for the whole host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
    /// Statuses that count as healthy.
    pub expect: Vec<u16>,
}

/// `[services.outlier]`: passive checks; an endpoint that keeps failing leaves the set for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one of the same endpoint doubles it (up to 8×).
    pub eject_for: Duration,
    pub max_ejected_percent: u32,
}

/// `[services.retry]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Extra attempts a request may make after its first (each on another endpoint where one
    /// exists); connect failures walk every endpoint once whatever this says.
    pub attempts: u32,
    /// Retries at most this percent of the service's requests (over the last seconds), so an
    /// outage is not multiplied by retries. 100 (the default) sets no budget: with one resend
    /// allowed, a service with one endpoint closing connections loses no request.
    pub budget_percent: u32,
    /// Connect failures (refused, reset or timed out while connecting) move on to the next
    /// endpoint.
    pub on_connect: bool,
    /// A request whose connection closed or reset before any response byte is sent again.
    pub on_reset: bool,
    /// The first resend waits this long (jittered, doubling after); zero for none.
    pub backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { attempts: 1, budget_percent: 100, on_connect: true, on_reset: true, backoff: Duration::ZERO }
    }
}

impl Service {
    /// The endpoints `entries` give now, by `resolve` (which maps "host:port" to its addresses);
    /// `None` when that is what the service already has, or when a name resolves to nothing (a
    /// failed lookup keeps the last known addresses rather than emptying the service).
    pub fn re_resolved(&self, resolve: impl Fn(&str) -> Vec<SocketAddr>) -> Option<(Vec<SocketAddr>, Vec<u32>)> {
        let (mut addrs, mut weights) = (Vec::new(), Vec::new());
        for (entry, w) in &self.entries {
            let found = resolve(entry);
            if found.is_empty() {
                return None;
            }
            for a in found {
                if !addrs.contains(&a) {
                    addrs.push(a);
                    weights.push(*w);
                }
            }
        }
        (addrs != self.upstreams || weights != self.weights).then_some((addrs, weights))
    }
}

/// How a service's endpoints share its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// In turn, by weight; one position shared by all shards.
    RoundRobin,
    /// The less loaded of two distinct random endpoints (in-flight / weight).
    LeastRequest,
    /// A ring of virtual nodes keyed by a request property: one key, one endpoint.
    ConsistentHash(HashOn),
}

/// What `consistent_hash` keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    Header(String),
    Cookie(String),
    Path,
    Consumer,
}

/// `[services.breaker]`: fail fast while a service's failure rate is high.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// The rolling window failures are counted over.
    pub window: Duration,
    /// No decision below this many requests in the window.
    pub min_requests: u32,
    /// Percent of failures (5xx from the upstream, connect failures, timeouts) that opens it.
    pub error_rate: u32,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// Probes let through while half-open; all must succeed to close it.
    pub half_open_requests: u32,
    /// What clients get while it is open; a 503 JSON error when absent.
    pub fallback: Option<Fallback>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Matches the path and everything below it at a segment boundary.
    Prefix(String),
    /// Matches only this path (written `=/path` in the config).
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host name, no port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any name ending with it.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub paths: Vec<PathMatch>,
    pub hosts: Vec<HostMatch>,
    /// Upper-case method names; empty means any method.
    pub methods: Vec<String>,
    /// Index into `Config::services`.
    pub service: usize,
    pub strip_prefix: bool,
    pub max_body: u64,
    /// `Allow: ...\r\n` line sent with 405 answers.
    pub allow_header: String,
    pub policy: RoutePolicy,
    /// Total time for the upstream exchange up to the response head, retries included (-> 504);
    /// overrides the service's connect + response timeouts.
    pub timeout: Option<Duration>,
    /// Header, path and query edits of requests and responses.
    pub transform: transform::Transform,
    /// The route answers with several services' responses in one JSON object.
    pub aggregate: Option<transform::Aggregate>,
    /// The route's responses are stored in a cache (`cache = "name"`).
    pub cache: Option<cache::CachePolicy>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `routes[2].service`; empty for the file as a whole.
    pub path: String,
    pub problem: String,
    pub fix: String,
    /// 1-based line of the key (or, for a missing key, of its table) in the config text.
    pub line: Option<usize>,
}

impl ConfigError {
    /// Writes the error, its place given as `file:line` when the file is known, else `line N`.
    fn write(&self, f: &mut fmt::Formatter<'_>, file: Option<&str>) -> fmt::Result {
        let place = match (file, self.line) {
            (Some(file), Some(line)) => Some(format!("{file}:{line}")),
            (None, Some(line)) => Some(format!("line {line}")),
            (_, None) => None,
        };
        match (self.path.as_str(), place) {
            ("", None) => write!(f, "{}", self.problem)?,
            ("", Some(place)) => write!(f, "{place}: {}", self.problem)?,
            (path, None) => write!(f, "{path}: {}", self.problem)?,
            (path, Some(place)) => write!(f, "{path} ({place}): {}", self.problem)?,
        }
        write!(f, "\n    fix: {}", self.fix)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, None)
    }
}

/// Every problem found in one config file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
    /// The file the text came from, when it came from one (`Config::load`).
    pub file: Option<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        let s = if n == 1 { "" } else { "s" };
        match &self.file {
            Some(file) => writeln!(f, "{n} error{s} in {file}:")?,
            None => writeln!(f, "{n} error{s} in config:")?,
        }
        for e in &self.errors {
            f.write_str("  ")?;
            e.write(f, self.file.as_deref())?;
            writeln!(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const KNOWN_METHODS: &[&str] =
    &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"];

impl Config {
    /// Every address to listen on, and whether it speaks TLS: `server.listen`, then `tls.listen`.
    pub fn listeners(&self) -> Vec<(SocketAddr, bool)> {
        let tls = self.tls.iter().flat_map(|t| t.listen.iter().map(|a| (*a, true)));
        self.server.listen.iter().map(|a| (*a, false)).chain(tls).collect()
    }

    /// Reads, parses and validates a config file; errors name the file and their lines in it.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = Some(path.display().to_string());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            errors: vec![ConfigError {
                path: String::new(),
                problem: format!("cannot read {}: {e}", path.display()),
                fix: "pass an existing file with --config".into(),
                line: None,
            }],
            file: file.clone(),
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Config::parse_in(&text, base).map_err(|e| ConfigErrors { file, ..e })
    }

    /// Parses and validates config text, reporting every problem found.
    /// Parses config text; key files named in it are relative to the current directory.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_in(text, Path::new("."))
    }

    /// Parses config text whose key files are relative to `base` (the config file's folder).
    pub fn parse_in(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // With a place to point at, the line goes where every error's line goes and the
            // message stays on one line; without one, toml's own report (with its excerpt) is kept.
            let (problem, line) = match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or_default();
                    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
                    let message = e.message().lines().map(str::trim).collect::<Vec<_>>().join("; ");
                    (format!("invalid TOML at column {column}: {message}"), Some(locate::line_at(text, span.start)))
                }
                None => (format!("invalid TOML: {}", e.to_string().trim()), None),
            };
            let fix = "see config/gateway.toml for the expected shape of each key".into();
            ConfigErrors { errors: vec![ConfigError { path: String::new(), problem, fix, line }], file: None }
        })?;
        let mut errors = Vec::new();
        let raw = raw::read(doc, &mut errors);
        let mut checks = Vec::new();
        let cfg = validate(raw, base, &mut checks);
        // A value of the wrong type was left out as if unset; don't also call it missing.
        checks.retain(|e| !errors.iter().any(|shape| is_under(&e.path, &shape.path)));
        errors.append(&mut checks);
        if errors.is_empty() {
            if let Some(cfg) = cfg {
                return Ok(cfg);
            }
        }
        locate::add_lines(text, &mut errors);
        // In the order of the file, as it is read; errors with no line (a missing section) last.
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Err(ConfigErrors { errors, file: None })
    }
}

/// `path` is `key` itself or a key below it (`routes[1]` covers `routes[1].service`).
fn is_under(path: &str, key: &str) -> bool {
    path.strip_prefix(key).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// A name as written, if it is one (absent and empty names are reported where they are defined).
fn named(name: &Option<String>) -> Option<&str> {
    name.as_deref().filter(|n| !n.is_empty())
}

/// Collects problems into `errors` while reading one field.
pub(crate) struct Checker<'e> {
    errors: &'e mut Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, path: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.errors.push(ConfigError { path: path.into(), problem: problem.into(), fix: fix.into(), line: None });
    }

    fn size(&mut self, path: &str, v: &Option<String>, default: u64, min: u64, max: u64) -> u64 {
        let Some(s) = v else { return default };
        match parse_size(s) {
            Ok(n) if n < min || n > max => {
                self.err(path, format!("{s} is out of range"), format!("use a size between {min} and {max} bytes"));
                default
            }
            Ok(n) => n,
            Err(e) => {
                self.err(path, e, "write sizes like \"16KiB\"");
                default
            }
        }
    }

    fn duration(&mut self, path: &str, v: &Option<String>, default: Duration) -> Duration {
        match self.parsed_duration(path, v) {
            Some(d) if d.is_zero() => {
                self.err(path, "must be longer than zero", "use a positive duration such as \"30s\"");
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// A duration that may be zero (`"0s"`: off).
    pub(crate) fn duration0(&mut self, path: &str, v: &Option<String>, default: Duration) -> Duration {
        self.parsed_duration(path, v).unwrap_or(default)
    }

    /// The duration written, if any; one that does not parse is reported.
    fn parsed_duration(&mut self, path: &str, v: &Option<String>) -> Option<Duration> {
        let s = v.as_ref()?;
        parse_duration(s).map_err(|e| self.err(path, e, "write durations like \"30s\", \"1.5s\" or \"1500ms\"")).ok()
    }

    /// A duration the gateway counts in whole seconds (a header value, a leeway on claim times):
    /// a fraction would be cut off unseen, so it is refused.
    fn seconds(&mut self, path: &str, v: &Option<String>, default: Duration) -> Duration {
        let d = self.duration(path, v, default);
        if d.subsec_nanos() != 0 {
            let s = v.as_deref().unwrap_or_default();
            self.err(path, format!("`{s}` is not a whole number of seconds"), "this one is counted in whole seconds; write e.g. \"2s\"");
            return default;
        }
        d
    }

    fn int(&mut self, path: &str, v: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        match v {
            None => default,
            Some(n) if n < min || n > max => {
                self.err(path, format!("{n} is out of range"), format!("use a number from {min} to {max}"));
                default
            }
            Some(n) => n,
        }
    }
}

fn validate(raw: RawConfig, base: &Path, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let mut c = Checker { errors };
    let s = &raw.server;

    let mut listen = Vec::new();
    match &s.listen {
        None => listen.push(SocketAddr::from(([127, 0, 0, 1], 8080))),
        Some(list) if list.is_empty() => c.err(
            "server.listen",
            "no listen address",
            "give at least one, e.g. listen = [\"0.0.0.0:8080\"]",
        ),
        Some(list) => {
            for (i, a) in list.iter().enumerate() {
                match a.parse::<SocketAddr>() {
                    Ok(addr) if listen.contains(&addr) => {
                        c.err(format!("server.listen[{i}]"), format!("{a} is listed twice"), "remove the duplicate")
                    }
                    Ok(addr) => listen.push(addr),
                    Err(_) => c.err(
                        format!("server.listen[{i}]"),
                        format!("`{a}` is not an IP:port address"),
                        "write it like \"0.0.0.0:8080\" or \"[::]:8080\"",
                    ),
                }
            }
        }
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = match c.int("server.workers", s.workers, 0, 0, 1024) {
        0 => cores,
        n => n as usize,
    };
    let driver = match s.driver.as_deref() {
        None | Some("auto") => DriverChoice::Auto,
        Some("io_uring") => DriverChoice::IoUring,
        Some("epoll") => DriverChoice::Epoll,
        Some(other) => {
            c.err("server.driver", format!("unknown driver `{other}`"), "use \"auto\", \"io_uring\" or \"epoll\"");
            DriverChoice::Auto
        }
    };
    let uring_entries = c.int("server.uring_entries", s.uring_entries, 1024, 64, 32768) as u32;
    let read_buffer = c.size("server.read_buffer", &s.read_buffer, 16 << 10, 1 << 10, 16 << 20) as usize;
    let backlog = c.int("server.backlog", s.backlog, 1024, 1, 65535) as i32;
    let pooled_buffers = c.int("server.pooled_buffers", s.pooled_buffers, 256, 0, 1 << 20) as usize;

    let l = &raw.limits;
    let max_head = c.size("limits.max_head", &l.max_head, 16 << 10, 256, 1 << 20) as usize;
    let max_target = c.size("limits.max_target", &l.max_target, 8 << 10, 16, 1 << 20) as usize;
    let max_headers = c.int("limits.max_headers", l.max_headers, 100, 1, MAX_HEADERS_CAP as i64) as usize;
    let max_body = c.size("limits.max_body", &l.max_body, 1 << 30, 0, u64::MAX);
    let max_connections = c.int("limits.max_connections", l.max_connections, 100_000, 1, 10_000_000) as usize;
    let max_trailer = c.size("limits.max_trailer", &l.max_trailer, 8 << 10, 0, 1 << 20) as usize;
    if max_target > max_head {
        c.err("limits.max_target", "is larger than limits.max_head", "keep max_target at or below max_head");
    }

    let t = &raw.timeouts;
    let timeouts = Timeouts {
        header: c.duration("timeouts.header", &t.header, Duration::from_secs(10)),
        idle: c.duration("timeouts.idle", &t.idle, Duration::from_secs(60)),
        body: c.duration("timeouts.body", &t.body, Duration::from_secs(30)),
        drain: c.duration("timeouts.drain", &t.drain, Duration::from_secs(30)),
        drain_grace: c.duration("timeouts.drain_grace", &t.drain_grace, Duration::from_secs(1)),
    };
    if timeouts.drain_grace > timeouts.drain {
        c.err("timeouts.drain_grace", "is longer than timeouts.drain", "keep drain_grace at or below drain");
    }

    let u = &raw.upstream;
    let upstream = UpstreamDefaults {
        resolve_every: c.duration("upstream.resolve_every", &u.resolve_every, Duration::from_secs(30)),
        connect_timeout: c.duration("upstream.connect_timeout", &u.connect_timeout, Duration::from_secs(3)),
        response_timeout: c.duration("upstream.response_timeout", &u.response_timeout, Duration::from_secs(60)),
        idle_timeout: c.duration("upstream.idle_timeout", &u.idle_timeout, Duration::from_secs(30)),
        max_idle_per_endpoint: c.int("upstream.max_idle_per_endpoint", u.max_idle_per_endpoint, 128, 0, 100_000)
            as usize,
    };

    let services: Vec<Service> =
        raw.services.iter().enumerate().filter_map(|(i, rs)| service(&mut c, i, rs, &upstream, base)).collect();
    // Checked over the raw list: a service without a name is left out of `services`, which
    // would shift the indices reported here.
    for (i, s) in raw.services.iter().enumerate() {
        let Some(name) = s.name.as_deref().filter(|n| !n.is_empty()) else { continue };
        if raw.services[..i].iter().any(|o| o.name.as_deref() == Some(name)) {
            c.err(format!("services[{i}].name"), format!("service `{name}` is defined twice"), "give each service a unique name");
        }
    }
    let admin = Admin {
        listen: raw.admin.listen.as_deref().and_then(|a| match a.parse::<SocketAddr>() {
            Ok(addr) if listen.contains(&addr) && addr.port() != 0 => {
                c.err("admin.listen", format!("{a} is also a public listener"), "give the admin listener its own address, e.g. \"127.0.0.1:9901\"");
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                c.err("admin.listen", format!("`{a}` is not an IP:port address"), "write it like \"127.0.0.1:9901\"");
                None
            }
        }),
    };
    let log = Log {
        access: match raw.log.access.as_deref() {
            None | Some("off") => AccessLogTarget::Off,
            Some("stdout") => AccessLogTarget::Stdout,
            Some("") => {
                c.err("log.access", "empty", "use \"off\", \"stdout\" or a file path");
                AccessLogTarget::Off
            }
            Some(path) => AccessLogTarget::File(base.join(path)),
        },
        access_query: raw.log.access_query.unwrap_or(false),
    };
    let security = policy::security(&mut c, &raw.security);
    let template_claims = transform::template_claims(&raw.routes);
    let jwt: Vec<JwtProvider> =
        raw.jwt.iter().enumerate().filter_map(|(i, r)| policy::jwt(&mut c, i, r, base, &template_claims)).collect();
    let api_keys: Vec<ApiKeySet> = raw.api_keys.iter().enumerate().filter_map(|(i, r)| policy::api_keys(&mut c, i, r)).collect();
    let cluster = cluster::settings(&mut c, raw.cluster.as_ref());
    let mut warnings = Vec::new();
    let tls = tls::settings(&mut c, raw.tls.as_ref(), base, &mut warnings, &listen);
    let has_client_auth = raw.tls.as_ref().is_some_and(|t| t.client_auth.is_some());
    let mtls: Vec<tls::MtlsProvider> = raw.mtls.iter().enumerate().filter_map(|(i, r)| tls::mtls(&mut c, i, r, has_client_auth)).collect();
    let rate_limits: Vec<RateLimitDef> = raw
        .rate_limits
        .iter()
        .enumerate()
        .filter_map(|(i, r)| policy::rate_limit(&mut c, i, r, cluster.as_ref(), raw.cluster.is_some()))
        .collect();
    let mut names: Vec<&str> = Vec::new();
    let providers = jwt
        .iter()
        .map(|j| ("jwt", j.name.as_str()))
        .chain(api_keys.iter().map(|a| ("api_keys", a.name.as_str())))
        .chain(mtls.iter().map(|m| ("mtls", m.name.as_str())));
    for (kind, n) in providers {
        if names.contains(&n) {
            c.err(kind, format!("`{n}` names more than one [[jwt]], [[api_keys]] or [[mtls]] entry"), "give each provider a unique name");
        }
        names.push(n);
    }
    let policy_names = PolicyNames {
        jwt: &jwt,
        api_keys: &api_keys,
        mtls: &mtls,
        rate_limits: &rate_limits,
        defined_auth: raw
            .jwt
            .iter()
            .map(|j| named(&j.name))
            .chain(raw.api_keys.iter().map(|a| named(&a.name)))
            .chain(raw.mtls.iter().map(|m| named(&m.name)))
            .flatten()
            .collect(),
        defined_limits: raw.rate_limits.iter().filter_map(|l| named(&l.name)).collect(),
    };
    let caches = cache::caches(&mut c, &raw.caches);
    let cache_names: Vec<&str> = raw.caches.iter().filter_map(|x| named(&x.name)).collect();
    let routes: Vec<Route> = raw
        .routes
        .iter()
        .enumerate()
        .map(|(i, rr)| route(&mut c, i, rr, &services, max_body, &policy_names, &caches, &cache_names))
        .collect();
    if raw.routes.is_empty() {
        c.err("routes", "no routes", "add at least one [[routes]] table naming a service");
    }
    for (i, r) in routes.iter().enumerate() {
        if routes[..i].iter().any(|o| o.name == r.name) {
            c.err(format!("routes[{i}].name"), format!("route `{}` is defined twice", r.name), "give each route a unique name");
        }
    }
    // A route host no certificate covers would be served over TLS with another name's
    // certificate (or refused): a missing certificate.
    if let Some(t) = &tls {
        let covered = |h: &str| {
            t.certs.iter().flat_map(|c| &c.hosts).any(|n| n == h || n.strip_prefix("*.").is_some_and(|s| h.split_once('.').is_some_and(|(_, rest)| rest == s)))
        };
        for (i, r) in routes.iter().enumerate() {
            for h in &r.hosts {
                let name = match h {
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Suffix(s) => format!("*{s}"),
                };
                if !covered(&name) {
                    c.err(
                        format!("routes[{i}].hosts"),
                        format!("no [[tls.certs]] entry covers `{name}`"),
                        "add the name to a certificate's hosts (and the certificate), or remove it from the route",
                    );
                }
            }
        }
    }
    for conflict in crate::router::Router::conflicts(&routes) {
        c.err(conflict.path, conflict.problem, conflict.fix);
    }

    Some(Config {
        server: Server { listen, workers, pin_cores: s.pin_cores.unwrap_or(true), driver, uring_entries, read_buffer, backlog, pooled_buffers },
        limits: Limits { max_head, max_target, max_headers, max_body, max_connections, max_trailer },
        timeouts,
        upstream,
        services,
        routes,
        security,
        jwt,
        api_keys,
        rate_limits,
        admin,
        log,
        cluster,
        tls,
        mtls,
        caches,
        warnings,
    })
}

/// Upper bound for `limits.max_headers`: the parser's header array lives on the stack.
pub const MAX_HEADERS_CAP: usize = 256;

fn service(c: &mut Checker, i: usize, rs: &RawService, d: &UpstreamDefaults, base: &Path) -> Option<Service> {
    let p = format!("services[{i}]");
    let name = match &rs.name {
        Some(n) if !n.is_empty() => n.clone(),
        _ => {
            c.err(format!("{p}.name"), "missing name", "add name = \"users\" (routes refer to services by name)");
            return None;
        }
    };
    let mut upstreams = Vec::new();
    let mut weights = Vec::new();
    let mut entries = Vec::new();
    match &rs.upstreams {
        None => c.err(format!("{p}.upstreams"), "missing", "list at least one host:port, e.g. upstreams = [\"127.0.0.1:3001\"]"),
        Some(list) if list.is_empty() => {
            c.err(format!("{p}.upstreams"), "empty", "list at least one host:port, e.g. upstreams = [\"127.0.0.1:3001\"]")
        }
        Some(list) => {
            for (j, entry) in list.iter().enumerate() {
                let at = format!("{p}.upstreams[{j}]");
                let (a, weight) = match entry {
                    raw::RawEndpoint::Addr(a) => (a.clone(), 1),
                    raw::RawEndpoint::Table { addr, weight, unknown } => {
                        for k in unknown {
                            c.err(format!("{at}.{k}"), "unknown key", "an upstream table takes addr and weight");
                        }
                        let w = c.int(&format!("{at}.weight"), *weight, 1, 1, 1000) as u32;
                        match addr {
                            Some(a) => (a.clone(), w),
                            None => {
                                c.err(format!("{at}.addr"), "missing", "write it like { addr = \"127.0.0.1:3001\", weight = 2 }");
                                continue;
                            }
                        }
                    }
                };
                // A name that resolves to several addresses gives an endpoint for each.
                match a.to_socket_addrs().map(|it| it.collect::<Vec<_>>()) {
                    Ok(addrs) if !addrs.is_empty() => {
                        for addr in addrs {
                            if !upstreams.contains(&addr) {
                                upstreams.push(addr);
                                weights.push(weight);
                            }
                        }
                        entries.push((a.clone(), weight));
                    }
                    _ => c.err(at, format!("`{a}` is not a reachable host:port"), "write it like \"127.0.0.1:3001\" or \"users.internal:80\""),
                }
            }
        }
    }
    let balance = match rs.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_request") => Balance::LeastRequest,
        Some("consistent_hash") => {
            let on = rs.hash_on.as_deref().unwrap_or("ip");
            let key = match on {
                "ip" => Some(HashOn::ClientIp),
                "path" => Some(HashOn::Path),
                "consumer" => Some(HashOn::Consumer),
                _ => match on.split_once(':') {
                    Some(("header", h)) if !h.is_empty() && h.bytes().all(crate::http::parse::is_tchar) => Some(HashOn::Header(h.to_string())),
                    Some(("cookie", k)) if !k.is_empty() => Some(HashOn::Cookie(k.to_string())),
                    _ => None,
                },
            };
            match key {
                Some(k) => Balance::ConsistentHash(k),
                None => {
                    c.err(format!("{p}.hash_on"), format!("unknown key `{on}`"), "use \"ip\", \"path\", \"consumer\", \"header:X-Name\" or \"cookie:NAME\"");
                    Balance::RoundRobin
                }
            }
        }
        Some(other) => {
            c.err(format!("{p}.balance"), format!("unknown balancing `{other}`"), "use \"round_robin\", \"least_request\" or \"consistent_hash\"");
            Balance::RoundRobin
        }
    };
    if rs.hash_on.is_some() && !matches!(balance, Balance::ConsistentHash(_)) {
        c.err(format!("{p}.hash_on"), "only consistent_hash uses it", "set balance = \"consistent_hash\" or remove hash_on");
    }
    let max_concurrent = c.int(&format!("{p}.max_concurrent"), rs.max_concurrent, 0, 0, 10_000_000) as usize;
    let breaker = rs.breaker.as_ref().map(|b| breaker(c, &format!("{p}.breaker"), b));
    let health = rs.health.as_ref().map(|h| {
        let hp = format!("{p}.health");
        let path = h.path.clone().unwrap_or_else(|| "/healthz".into());
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            c.err(format!("{hp}.path"), format!("`{path}` is not an origin-form path"), "write it like \"/healthz\"");
        }
        let expect: Vec<u16> = match &h.expect {
            None => vec![200],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(j, &code)| match u16::try_from(code) {
                    Ok(code @ 100..=599) => Some(code),
                    _ => {
                        c.err(format!("{hp}.expect[{j}]"), format!("{code} is not a status code"), "list codes like [200, 204]");
                        None
                    }
                })
                .collect(),
        };
        let interval = c.duration(&format!("{hp}.interval"), &h.interval, Duration::from_secs(2));
        let timeout = c.duration(&format!("{hp}.timeout"), &h.timeout, Duration::from_secs(1));
        if timeout > interval {
            c.err(format!("{hp}.timeout"), "is longer than interval", "keep a check's timeout at or below its interval");
        }
        HealthConfig {
            path,
            interval,
            timeout,
            healthy_after: c.int(&format!("{hp}.healthy_after"), h.healthy_after, 2, 1, 100) as u32,
            unhealthy_after: c.int(&format!("{hp}.unhealthy_after"), h.unhealthy_after, 3, 1, 100) as u32,
            expect,
        }
    });
    let outlier = rs.outlier.as_ref().map(|o| OutlierConfig {
        consecutive_failures: c.int(&format!("{p}.outlier.consecutive_failures"), o.consecutive_failures, 5, 1, 1000) as u32,
        eject_for: c.duration(&format!("{p}.outlier.eject_for"), &o.eject_for, Duration::from_secs(30)),
        max_ejected_percent: c.int(&format!("{p}.outlier.max_ejected_percent"), o.max_ejected_percent, 50, 0, 100) as u32,
    });
    let d_retry = RetryConfig::default();
    let retry = match &rs.retry {
        None => d_retry,
        Some(r) => {
            let (mut on_connect, mut on_reset) = (d_retry.on_connect, d_retry.on_reset);
            if let Some(on) = &r.on {
                (on_connect, on_reset) = (false, false);
                for (j, cond) in on.iter().enumerate() {
                    match cond.as_str() {
                        "connect" => on_connect = true,
                        "reset" => on_reset = true,
                        "502" | "503" | "504" => c.err(
                            format!("{p}.retry.on[{j}]"),
                            format!("`{cond}` is a response: the request reached the application, which may have acted on it"),
                            "retry on \"connect\" and \"reset\" (no response byte arrived); answer 5xx fast with [services.breaker] instead",
                        ),
                        other => c.err(format!("{p}.retry.on[{j}]"), format!("unknown condition `{other}`"), "use \"connect\" or \"reset\""),
                    }
                }
            }
            RetryConfig {
                attempts: c.int(&format!("{p}.retry.attempts"), r.attempts, d_retry.attempts.into(), 0, 10) as u32,
                budget_percent: c.int(&format!("{p}.retry.budget"), r.budget, d_retry.budget_percent.into(), 0, 100) as u32,
                on_connect,
                on_reset,
                backoff: match &r.backoff {
                    None => d_retry.backoff,
                    Some(_) => c.duration(&format!("{p}.retry.backoff"), &r.backoff, d_retry.backoff),
                },
            }
        }
    };
    Some(Service {
        name,
        upstreams,
        weights,
        entries,
        balance,
        connect_timeout: c.duration(&format!("{p}.connect_timeout"), &rs.connect_timeout, d.connect_timeout),
        response_timeout: c.duration(&format!("{p}.response_timeout"), &rs.response_timeout, d.response_timeout),
        max_concurrent,
        breaker,
        health,
        outlier,
        retry,
        tls: rs.tls.as_ref().and_then(|t| tls::upstream(c, &p, t, base)),
    })
}

fn breaker(c: &mut Checker, p: &str, b: &raw::RawBreaker) -> BreakerConfig {
    let fallback = b.fallback.as_ref().map(|f| {
        let status = c.int(&format!("{p}.fallback.status"), f.status, 503, 200, 599) as u16;
        let content_type = f.content_type.clone().unwrap_or_else(|| "application/json".into());
        if content_type.is_empty() || content_type.bytes().any(|b| b < 0x20 || b == 0x7f) {
            c.err(format!("{p}.fallback.content_type"), "not a header value", "write a media type such as \"application/json\"");
        }
        Fallback { status, content_type, body: f.body.clone().unwrap_or_default() }
    });
    let window = c.duration(&format!("{p}.window"), &b.window, Duration::from_secs(10));
    if window < Duration::from_millis(100) {
        c.err(format!("{p}.window"), "shorter than 100ms", "use a window of at least \"1s\" so the rate means something");
    }
    BreakerConfig {
        window,
        min_requests: c.int(&format!("{p}.min_requests"), b.min_requests, 20, 1, 1_000_000) as u32,
        error_rate: c.int(&format!("{p}.error_rate"), b.error_rate, 50, 1, 100) as u32,
        open_for: c.duration(&format!("{p}.open_for"), &b.open_for, Duration::from_secs(30)),
        half_open_requests: c.int(&format!("{p}.half_open_requests"), b.half_open_requests, 3, 1, 1000) as u32,
        fallback,
    }
}

/// Characters that read as wildcards, globs or parameters in other routers; this one matches
/// path segments literally (none of them but `*` may even appear unescaped in a request path).
const PATTERN_CHARS: &[char] = &['*', '{', '}', '[', ']', '<', '>'];

/// For a path written as a pattern (`/api/users/*`, `/users/{id}`, `/users/:id`), how to say it
/// with the matches the router has: a prefix at a segment boundary, or `=` for one exact path.
fn pattern_fix(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let first = segments.iter().position(|seg| seg.contains(PATTERN_CHARS) || seg.starts_with(':'))?;
    let base = if first <= 1 { "/".to_string() } else { segments[..first].join("/") };
    let below = if base == "/" { "/".to_string() } else { format!("{base}/") };
    let trailing_star = first == segments.len() - 1 && matches!(segments[first], "*" | "**");
    Some(if trailing_star {
        format!(
            "write \"{base}\": a path already matches everything below it at a segment boundary \
             (\"{base}\" matches {base} and {below}anything); write \"={base}\" to match {base} alone"
        )
    } else {
        format!(
            "the router has no wildcards or path parameters: a path matches itself and everything below \
             it at a segment boundary (\"{base}\" matches {base} and {below}anything), and \"=/path\" \
             matches one path exactly; route by the literal part, e.g. \"{base}\""
        )
    })
}

#[allow(clippy::too_many_arguments)] // the route's slice of every other section it refers to
/// Always returns a route, even one with problems, so that later checks (names, conflicts) see
/// every route at its own index. A route whose service is unknown gets service 0; the error
/// already recorded means such a config is never returned.
fn route(
    c: &mut Checker,
    i: usize,
    rr: &RawRoute,
    services: &[Service],
    default_body: u64,
    names: &PolicyNames,
    caches: &[cache::CacheDef],
    cache_names: &[&str],
) -> Route {
    let p = format!("routes[{i}]");
    let name = rr.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| format!("route{i}"));
    let service = match &rr.service {
        // An aggregating route sends to its parts' services; it counts under the first one's.
        None if rr.aggregate.is_some() => rr
            .aggregate
            .as_ref()
            .and_then(|a| a.parts.as_ref())
            .and_then(|parts| parts.first())
            .and_then(|part| part.service.as_ref())
            .and_then(|name| services.iter().position(|x| &x.name == name)),
        None => {
            c.err(format!("{p}.service"), "missing", "name the service this route sends to, e.g. service = \"users\"");
            None
        }
        Some(s) => {
            let found = services.iter().position(|x| &x.name == s);
            if found.is_none() {
                let known: Vec<&str> = services.iter().map(|x| x.name.as_str()).collect();
                let fix = suggest::name_fix(s, &known, "services", &format!("add a [[services]] table with name = \"{s}\""));
                c.err(format!("{p}.service"), format!("no service named `{s}`"), fix);
            }
            found
        }
    };
    let mut paths = Vec::new();
    match &rr.paths {
        None => c.err(format!("{p}.paths"), "missing", "add paths = [\"/api/users\"] (prefix) or [\"=/health\"] (exact)"),
        Some(list) if list.is_empty() => c.err(format!("{p}.paths"), "empty", "add at least one path"),
        Some(list) => {
            for (j, raw) in list.iter().enumerate() {
                let (exact, path) = match raw.strip_prefix('=') {
                    Some(rest) => (true, rest),
                    None => (false, raw.as_str()),
                };
                if !path.starts_with('/') || path.contains(['?', '#', ' ']) || path.contains("//") {
                    c.err(
                        format!("{p}.paths[{j}]"),
                        format!("`{raw}` is not a path"),
                        "start with '/', no query, no '//' (e.g. \"/api/users\" or \"=/health\")",
                    );
                    continue;
                }
                if let Some(fix) = pattern_fix(path) {
                    c.err(format!("{p}.paths[{j}]"), format!("`{raw}` looks like a pattern, but paths are matched literally"), fix);
                    continue;
                }
                // The router matches whole segments, so a trailing slash adds nothing: "/api/" and
                // "/api" (or "=/x/" and "=/x") match the same requests and must conflict as such.
                let norm = if path.len() > 1 { path.trim_end_matches('/') } else { path };
                paths.push(if exact { PathMatch::Exact(norm.to_string()) } else { PathMatch::Prefix(norm.to_string()) });
            }
        }
    }
    let mut hosts = Vec::new();
    for (j, h) in rr.hosts.iter().flatten().enumerate() {
        let lower = h.to_ascii_lowercase();
        let (suffix, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && !name.starts_with('.');
        if !valid {
            c.err(
                format!("{p}.hosts[{j}]"),
                format!("`{h}` is not a host name"),
                "write a name like \"api.example.com\" or \"*.example.com\" (no port, no scheme)",
            );
            continue;
        }
        hosts.push(if suffix { HostMatch::Suffix(format!(".{name}")) } else { HostMatch::Exact(name.to_string()) });
    }
    let mut methods = Vec::new();
    for (j, m) in rr.methods.iter().flatten().enumerate() {
        let up = m.to_ascii_uppercase();
        if !KNOWN_METHODS.contains(&up.as_str()) {
            c.err(format!("{p}.methods[{j}]"), format!("unknown method `{m}`"), format!("use any of {}", KNOWN_METHODS.join(", ")));
        } else if !methods.contains(&up) {
            methods.push(up);
        }
    }
    let max_body = c.size(&format!("{p}.max_body"), &rr.max_body, default_body, 0, u64::MAX);
    let allow_header = if methods.is_empty() {
        format!("Allow: {}\r\n", KNOWN_METHODS.join(", "))
    } else {
        format!("Allow: {}\r\n", methods.join(", "))
    };
    let policy = policy::route_policy(c, &p, &rr.auth, &rr.rate_limits, &rr.ip_allow, &rr.ip_deny, &rr.cors, &rr.validate, names);
    let transform = rr.transform.as_ref().map(|t| transform::transform(c, &p, t)).unwrap_or_default();
    Route {
        name,
        paths,
        hosts,
        methods,
        service: service.unwrap_or(0),
        strip_prefix: rr.strip_prefix.unwrap_or(false),
        max_body,
        allow_header,
        policy,
        timeout: rr.timeout.as_ref().map(|_| c.duration(&format!("{p}.timeout"), &rr.timeout, Duration::ZERO)),
        cache: route_cache(c, &p, rr, caches, cache_names, &transform),
        transform,
        aggregate: rr.aggregate.as_ref().and_then(|a| transform::aggregate(c, &p, a, services)),
    }
}

/// The route's cache, and the combinations the cache does not serve.
fn route_cache(
    c: &mut Checker,
    p: &str,
    rr: &RawRoute,
    caches: &[cache::CacheDef],
    cache_names: &[&str],
    t: &transform::Transform,
) -> Option<cache::CachePolicy> {
    let policy = cache::route_cache(c, p, rr.cache.as_deref(), rr.cache_policy.as_ref(), caches, cache_names)?;
    // What the forwarded request is made of must be in the key, or one client's response would
    // answer another's request: a template naming the consumer, a claim, a header or a query
    // parameter makes the upstream's answer depend on it.
    if let Some(req) = &t.request {
        let templates = req
            .headers
            .set
            .iter()
            .map(|(_, t)| t)
            .chain(req.query_set.iter().map(|(_, t)| t))
            .chain(req.rewrite.iter().map(|r| &r.to))
            .chain(req.json.iter().flat_map(|j| j.set.iter().map(|(_, t)| t)));
        let mut missing: Vec<String> = Vec::new();
        for part in templates.flatten() {
            let need = match part {
                transform::Part::Consumer | transform::Part::ClaimSub | transform::Part::Claim(_) => cache::KeyPart::Consumer,
                transform::Part::Header(h) => cache::KeyPart::Header(h.clone()),
                transform::Part::Query(_) => cache::KeyPart::Query,
                _ => continue,
            };
            if !policy.uses(&need) {
                let name = match need {
                    cache::KeyPart::Consumer => "\"consumer\"".to_string(),
                    cache::KeyPart::Header(h) => format!("\"header:{h}\""),
                    _ => "\"query\"".to_string(),
                };
                if !missing.contains(&name) {
                    missing.push(name);
                }
            }
        }
        if !missing.is_empty() {
            c.err(
                format!("{p}.cache_policy.key"),
                format!("the request transform's templates depend on {} but the cache key does not", missing.join(", ")),
                format!("add {} to cache_policy.key", missing.join(", ")),
            );
        }
    }
    if rr.aggregate.is_some() {
        c.err(format!("{p}.cache"), "an aggregating route is not cached", "cache the parts' own routes instead, or remove cache");
    }
    if rr.transform.as_ref().and_then(|t| t.response.as_ref()).is_some_and(|r| r.json.is_some()) {
        c.err(
            format!("{p}.cache"),
            "a route with a JSON response transform is not cached",
            "remove cache, or the [routes.transform.response] json edits",
        );
    }
    Some(policy)
}

#[cfg(test)]
mod tests;

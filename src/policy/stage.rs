//! A route's policy stages, built once per config generation from the route's slice of the
//! config, each holding its own state (a JWT provider's token cache, a limit's shared buckets,
//! its metrics series), dispatched by enum. The order is fixed: IP rules → CORS →
//! authentication → rate limits → content type → JSON body. Every stage answers with an explicit
//! `Flow`; head stages run over the parsed head, and a body stage (JSON validation) over the
//! request body, buffered up to its bound. A head stage may wait for an answer from elsewhere
//! (a cluster rate limit asks Redis): it returns `Flow::Wait` with what it needs, owned; the
//! caller awaits it and runs the head stages again over the same head, resuming at that stage.
//! Adding a stage is one variant, one struct, and its place in `Generation::build`.
//! Nothing here allocates on the steady-state path (verified tokens come from the cache; header
//! lines go into inline buffers), except a stage that waits: its `Wait` and the calls in it.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::apikey::{query_param, ApiKeySet, KeyLocation};
use super::cors::{Cors, CorsOutcome};
use super::ip::{self, IpRules};
use super::jwt::{Claims, TokenCache};
use super::ratelimit::{self, Decision, Limiter};
use crate::cluster::{synced, ExactLimit, SyncedRt};
use crate::config::cluster::OnError;
use crate::config::tls::{ConsumerFrom, MtlsProvider};
use crate::tls::TlsInfo;
use super::HeaderBuf;
use crate::config::policy::{JwtProvider, LimitKey, RateLimitDef, Security};
use crate::error::ProxyError;
use crate::http::parse::{self, Framing, RequestHead};
use crate::http::write::{ip_text, Inline};
use crate::observe::metrics::{AuthMetrics, LimitMetrics};

/// A consumer name as the stages pass it on (config load keeps names within this bound).
pub type Consumer = Inline<128>;

/// What a stage decided. Returned once per stage and matched at once; boxing the answer would
/// cost an allocation per refused request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Flow {
    Continue,
    Respond(Local),
    /// A stage needs an answer from elsewhere (a cluster rate limit asks Redis). The caller
    /// awaits [`Wait::run`] and runs the head stages again with it: the stages before it are
    /// skipped, the waiting stage finishes with the answers, the ones after it run.
    Wait(Box<Wait>),
}

/// A limit's decision within one request.
#[derive(Clone, Copy)]
enum Slot {
    Open,
    Decided(Decision),
    /// Admitted with nothing to report (a cluster limit whose store failed, `on_error = "allow"`).
    Silent,
}

/// One cluster limit's call to Redis, owned so it can be awaited.
struct Pending {
    slot: usize,
    limit: Rc<ExactLimit>,
    local: Arc<Limiter>,
    metrics: Rc<LimitMetrics>,
    key: Vec<u8>,
    redis_key: Vec<u8>,
}

/// A rate-limit stage waiting for Redis.
pub struct Wait {
    stage: usize,
    slots: [Slot; MAX_LIMITS_PER_ROUTE],
    pending: Vec<Pending>,
    /// A limit's store failed with `on_error = "deny"`.
    store_deny: bool,
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait").field("stage", &self.stage).field("pending", &self.pending.len()).finish()
    }
}

impl Wait {
    /// Asks Redis for every pending decision at once (they share the shard's pipeline), each
    /// within the cluster timeout; a failed one gets its limit's `on_error` decision.
    pub async fn run(mut self: Box<Self>) -> Box<Self> {
        let pending = std::mem::take(&mut self.pending);
        let calls = pending.iter().map(|p| {
            let deadline = std::time::Instant::now() + p.limit.client.settings().timeout;
            p.limit.decide(&p.key, &p.redis_key, deadline)
        });
        let results = futures_util::future::join_all(calls).await;
        for (p, r) in pending.iter().zip(results) {
            self.slots[p.slot] = match r {
                Ok(d) => counted(&p.metrics, d),
                Err(_) => self.on_error(p.limit.on_error, &p.local, &p.metrics, &p.key),
            };
        }
        self
    }

    fn on_error(&mut self, on_error: OnError, local: &Limiter, metrics: &LimitMetrics, key: &[u8]) -> Slot {
        let i = match on_error {
            OnError::Local => 0,
            OnError::Allow => 1,
            OnError::Deny => 2,
        };
        metrics.on_error[i].set(metrics.on_error[i].get() + 1);
        match on_error {
            OnError::Local => counted(metrics, local.check(key, Limiter::now())),
            OnError::Allow => Slot::Silent,
            OnError::Deny => {
                self.store_deny = true;
                Slot::Silent
            }
        }
    }
}

fn counted(metrics: &LimitMetrics, d: Decision) -> Slot {
    let m = if d.allowed { &metrics.allowed } else { &metrics.rejected };
    m.set(m.get() + 1);
    Slot::Decided(d)
}

/// An answer made at the gateway.
#[derive(Debug)]
pub enum Local {
    /// An error: status, code and JSON body come from the one map in `error`; plus header lines.
    Error(ProxyError, HeaderBuf),
    /// A bodiless answer (a CORS preflight).
    Reply(u16, HeaderBuf),
}

/// What the stages collect for a request they let through.
#[derive(Default)]
pub struct Admitted {
    /// CORS and RateLimit lines for the response (errors included).
    pub response_headers: HeaderBuf,
    /// Verified identity lines for the upstream (claims, consumer).
    pub forward_headers: HeaderBuf,
    pub consumer: Option<Consumer>,
    /// The client address the policies judged (the peer, or a trusted proxy's header).
    pub client: Option<IpAddr>,
    /// The verified token's claims that route templates use (`{claim.NAME}`).
    pub claims: Option<std::rc::Rc<Vec<(String, String)>>>,
}

/// A JWT provider with its shard-local token cache, shared by the routes that name it.
pub struct JwtAuth {
    pub provider: JwtProvider,
    pub cache: RefCell<TokenCache>,
    pub metrics: Rc<AuthMetrics>,
}

pub struct ApiKeyAuth {
    pub set: Arc<ApiKeySet>,
    /// The `WWW-Authenticate` value for a refusal, made once.
    pub challenge: String,
    pub metrics: Rc<AuthMetrics>,
}

impl ApiKeyAuth {
    pub fn new(set: Arc<ApiKeySet>, metrics: Rc<AuthMetrics>) -> ApiKeyAuth {
        // No registered scheme for API keys; name where the key goes, as Kong and AWS do.
        let (kind, name) = match &set.location {
            KeyLocation::Header(n) => ("header", n.as_str()),
            KeyLocation::Query(n) => ("query", n.as_str()),
        };
        let challenge = format!("ApiKey realm=\"{}\", {kind}=\"{name}\"", set.name);
        ApiKeyAuth { set, challenge, metrics }
    }
}

/// A client-certificate provider: the connection's verified certificate names the consumer.
pub struct MtlsAuth {
    pub provider: MtlsProvider,
    /// The `WWW-Authenticate` value for a refusal, made once.
    pub challenge: String,
    pub metrics: Rc<AuthMetrics>,
}

impl MtlsAuth {
    pub fn new(provider: MtlsProvider, metrics: Rc<AuthMetrics>) -> MtlsAuth {
        // No registered scheme for client certificates; name what is expected, as for API keys.
        let challenge = format!("ClientCertificate realm=\"{}\"", provider.name);
        MtlsAuth { provider, challenge, metrics }
    }
}

pub enum Provider {
    Jwt(Rc<JwtAuth>),
    ApiKey(Rc<ApiKeyAuth>),
    Mtls(Rc<MtlsAuth>),
}

/// One limit of a route: its definition, the buckets every shard shares, its metrics.
pub struct RouteLimit {
    pub def: Arc<RateLimitDef>,
    /// The host's buckets: the limit itself when local; a cluster limit's `on_error = "local"`.
    pub limiter: Arc<Limiter>,
    pub metrics: Rc<LimitMetrics>,
    pub shared: Shared,
}

/// Where a limit's counts are kept.
pub enum Shared {
    Local,
    /// In Redis, one call per decision.
    Exact(Rc<ExactLimit>),
    /// On this host, synced with Redis every interval.
    Synced(Rc<SyncedRt>),
}

pub struct RateLimits {
    /// The route's name, for limits keyed by route.
    pub route: String,
    pub limits: Vec<RouteLimit>,
}

pub enum Stage {
    Ip { server: Arc<Security>, route: IpRules },
    Cors(Cors),
    Auth(Vec<Provider>),
    RateLimit(RateLimits),
    ContentType(Vec<String>),
    /// The body must be well-formed JSON of at most this many bytes.
    Json(u64),
}

/// At most this many limits apply to one route (checked at config load).
pub const MAX_LIMITS_PER_ROUTE: usize = 8;

/// A route's stages in their fixed order.
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl Pipeline {
    pub fn new(stages: Vec<Stage>) -> Pipeline {
        Pipeline { stages }
    }

    /// Runs the head stages. `scratch` is an empty pooled buffer the caller reuses afterwards.
    /// `resumed`: the answered `Wait` of an earlier run over the same head, with the same
    /// `admitted`.
    /// `tls`: what the connection's TLS handshake settled, on a TLS connection.
    pub fn on_head(&self, req: &RequestHead, peer: IpAddr, tls: Option<&TlsInfo>, admitted: &mut Admitted, scratch: &mut Vec<u8>, resumed: Option<Box<Wait>>) -> Flow {
        let mut client = admitted.client.unwrap_or(peer);
        let skip = resumed.as_ref().map_or(0, |w| w.stage);
        let mut resumed = resumed;
        for (i, stage) in self.stages.iter().enumerate().skip(skip) {
            let flow = match stage {

                Stage::Ip { server, route } => {
                    let forwarded =
                        if server.trusted_proxies.is_empty() { None } else { header(req, &server.client_ip_header) };
                    client = ip::client_ip(peer, &server.trusted_proxies, forwarded);
                    admitted.client = Some(client);
                    if server.ip.admits(client) && route.admits(client) {
                        Flow::Continue
                    } else {
                        Flow::Respond(Local::Error(ProxyError::Forbidden, HeaderBuf::default()))
                    }
                }
                Stage::Cors(cors) => cors_stage(cors, req, admitted),
                Stage::Auth(providers) => authenticate(providers, req, tls, admitted),
                Stage::RateLimit(limits) => match resumed.take() {
                    Some(w) => finish_limits(limits, &w.slots, w.store_deny, admitted, scratch),
                    None => rate_limit(limits, i, req, client, admitted, scratch),
                },
                Stage::ContentType(types) => content_type(types, req, admitted),
                Stage::Json(max) => json_head(*max, req, admitted),
            };
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        Flow::Continue
    }

    /// The bound up to which a body stage wants the request body buffered, if any stage does.
    pub fn body_bound(&self, req_framing: Framing) -> Option<u64> {
        if req_framing == Framing::None {
            return None;
        }
        self.stages.iter().find_map(|s| match s {
            Stage::Json(max) => Some(*max),
            _ => None,
        })
    }

    /// Runs the body stages over the whole (buffered) body.
    pub fn on_body(&self, body: &[u8], admitted: &Admitted) -> Flow {
        for stage in &self.stages {
            if let Stage::Json(_) = stage {
                if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                    return Flow::Respond(Local::Error(ProxyError::InvalidJson, admitted.response_headers.clone()));
                }
            }
        }
        Flow::Continue
    }
}

pub(crate) fn header<'b>(req: &RequestHead<'b, '_>, name: &str) -> Option<&'b [u8]> {
    req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

pub(crate) fn cookie<'b>(req: &RequestHead<'b, '_>, name: &str) -> Option<&'b [u8]> {
    req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("cookie")).find_map(|h| {
        h.value.split(|&b| b == b';').find_map(|pair| {
            let pair = parse::trim(pair);
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
    })
}

fn bearer<'b>(req: &RequestHead<'b, '_>) -> Option<&'b [u8]> {
    let v = parse::trim(header(req, "authorization")?);
    if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
        Some(parse::trim(&v[7..]))
    } else {
        None
    }
}

/// A consumer name within `Consumer`'s bound. A longer one (a JWT subject can be any length) is
/// not cut, which could make two consumers share a rate-limit bucket: it keeps its first 111
/// bytes and gains `#` and 16 hex digits of its SHA-256, so distinct names stay distinct.
pub fn consumer_name(v: &[u8]) -> Consumer {
    const CAP: usize = 128;
    if v.len() <= CAP {
        return Inline::new(v);
    }
    let d = ring::digest::digest(&ring::digest::SHA256, v);
    let mut b = [0u8; CAP];
    b[..111].copy_from_slice(&v[..111]);
    b[111] = b'#';
    for (i, x) in d.as_ref()[..8].iter().enumerate() {
        b[112 + 2 * i] = b"0123456789abcdef"[(x >> 4) as usize];
        b[113 + 2 * i] = b"0123456789abcdef"[(x & 15) as usize];
    }
    Inline::new(&b)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A CORS preflight is answered here; allowed origins get their headers on the response.
fn cors_stage(cors: &Cors, req: &RequestHead, admitted: &mut Admitted) -> Flow {
    let outcome = cors.apply(
        req.method,
        header(req, "origin"),
        header(req, "access-control-request-method"),
        header(req, "access-control-request-headers"),
        &mut admitted.response_headers,
    );
    match outcome {
        CorsOutcome::Preflight => Flow::Respond(Local::Reply(204, std::mem::take(&mut admitted.response_headers))),
        CorsOutcome::PreflightDenied => Flow::Respond(Local::Error(ProxyError::CorsRejected, HeaderBuf::default())),
        CorsOutcome::Actual | CorsOutcome::None => Flow::Continue,
    }
}

/// Any one of the route's providers admits the request. A refusal carries a challenge for each
/// kind of provider the route accepts (RFC 9110 §11.6.1, §15.5.2: a 401 MUST send one).
fn authenticate(providers: &[Provider], req: &RequestHead, tls: Option<&TlsInfo>, admitted: &mut Admitted) -> Flow {
    let mut failure: (&'static str, bool) = ("missing credentials", false);
    let now = unix_now();
    for p in providers {
        match p {
            Provider::Jwt(auth) => {
                let pr = &auth.provider;
                let token = bearer(req)
                    .or_else(|| pr.token_cookie.as_deref().and_then(|c| cookie(req, c)))
                    .or_else(|| pr.token_query.as_deref().and_then(|q| query_param(req.query, q.as_bytes())));
                let Some(token) = token else {
                    auth.metrics.failure("missing credentials");
                    continue;
                };
                let forward = &mut admitted.forward_headers;
                let mut admit = |claims: &Claims| {
                    for ((_, header), value) in pr.verifier.0.forward_claims().iter().zip(&claims.forwarded) {
                        if let Some(v) = value {
                            forward.line(header.as_bytes(), v.as_bytes());
                        }
                    }
                    claims.sub.as_deref().map(|s| consumer_name(s.as_bytes()))
                };
                let mut cache = auth.cache.borrow_mut();
                if let Some(claims) = cache.get(token, now) {
                    auth.metrics.cache_hits.set(auth.metrics.cache_hits.get() + 1);
                    admitted.consumer = admit(claims);
                    admitted.claims = claims.templated.clone();
                    return Flow::Continue;
                }
                auth.metrics.cache_misses.set(auth.metrics.cache_misses.get() + 1);
                match pr.verifier.0.verify(token, now) {
                    Ok(claims) => {
                        admitted.consumer = admit(&claims);
                        admitted.claims = claims.templated.clone();
                        cache.insert(token, claims, now);
                        return Flow::Continue;
                    }
                    Err(e) => {
                        auth.metrics.failure(e.message());
                        failure = (e.message(), true);
                    }
                }
            }
            Provider::ApiKey(auth) => {
                let set = &auth.set;
                let presented = match &set.location {
                    KeyLocation::Header(h) => header(req, h),
                    KeyLocation::Query(q) => query_param(req.query, q.as_bytes()),
                };
                let Some(presented) = presented else {
                    auth.metrics.failure("missing credentials");
                    continue;
                };
                match set.consumer(presented) {
                    Some(consumer) => {
                        if let Some(h) = &set.forward_consumer {
                            admitted.forward_headers.line(h.as_bytes(), consumer.as_bytes());
                        }
                        admitted.consumer = Some(consumer_name(consumer.as_bytes()));
                        return Flow::Continue;
                    }
                    None => {
                        auth.metrics.failure("invalid API key");
                        failure = ("invalid API key", true);
                    }
                }
            }
            Provider::Mtls(auth) => {
                // rustls verified the chain during the handshake; here it only names the consumer.
                let Some(cert) = tls.and_then(|t| t.client.as_deref()) else {
                    auth.metrics.failure("no client certificate");
                    if failure.0 == "missing credentials" {
                        failure = ("no client certificate", false);
                    }
                    continue;
                };
                let name = match auth.provider.consumer_from {
                    ConsumerFrom::SanDns => cert.san_dns.first(),
                    ConsumerFrom::SubjectCn => cert.common_name.as_ref(),
                    ConsumerFrom::SanUri => cert.san_uri.first(),
                };
                let Some(name) = name else {
                    auth.metrics.failure("certificate names no consumer");
                    failure = ("the client certificate names no consumer", true);
                    continue;
                };
                if let Some(h) = &auth.provider.forward_subject {
                    admitted.forward_headers.line(h.as_bytes(), cert.subject.as_bytes());
                }
                admitted.consumer = Some(consumer_name(name.as_bytes()));
                return Flow::Continue;
            }
        }
    }
    let (why, presented) = failure;
    let mut h = HeaderBuf::default();
    if providers.iter().any(|p| matches!(p, Provider::Jwt(_))) {
        // RFC 6750 §3: no error code when no credentials were sent.
        let challenge: &[u8] = if presented { b"Bearer error=\"invalid_token\"" } else { b"Bearer" };
        h.line(b"WWW-Authenticate", challenge);
    }
    for p in providers {
        match p {
            Provider::ApiKey(auth) => h.line(b"WWW-Authenticate", auth.challenge.as_bytes()),
            Provider::Mtls(auth) => h.line(b"WWW-Authenticate", auth.challenge.as_bytes()),
            Provider::Jwt(_) => {}
        }
    }
    Flow::Respond(Local::Error(ProxyError::Unauthorized(why), h))
}

/// Every limit is charged; the headers go on every response of the route. A cluster limit that
/// must ask Redis makes the stage wait (the others are decided already).
fn rate_limit(rl: &RateLimits, stage: usize, req: &RequestHead, client: IpAddr, admitted: &mut Admitted, scratch: &mut Vec<u8>) -> Flow {
    let now = Limiter::now();
    let mut slots = [Slot::Open; MAX_LIMITS_PER_ROUTE];
    let mut pending: Vec<Pending> = Vec::new();
    let client_text = ip_text(client);
    let client_key = client_text.as_bytes();
    let mut wait = Wait { stage, slots, pending: Vec::new(), store_deny: false };
    for (i, l) in rl.limits.iter().enumerate() {
        let key: &[u8] = match &l.def.key {
            LimitKey::ClientIp => client_key,
            LimitKey::Consumer => admitted.consumer.as_ref().map_or(client_key, |c| c.as_bytes()),
            LimitKey::Route => rl.route.as_bytes(),
            LimitKey::Header(h) => header(req, h).unwrap_or(client_key),
        };
        slots[i] = match &l.shared {
            Shared::Local => counted(&l.metrics, l.limiter.check(key, now)),
            Shared::Exact(x) => match x.cached_refusal(key, std::time::Instant::now()) {
                Some(d) => {
                    l.metrics.deny_cache_hits.set(l.metrics.deny_cache_hits.get() + 1);
                    counted(&l.metrics, d)
                }
                None => {
                    let redis_key = x.redis_key(key);
                    pending.push(Pending { slot: i, limit: x.clone(), local: l.limiter.clone(), metrics: l.metrics.clone(), key: key.to_vec(), redis_key });
                    Slot::Open
                }
            },
            Shared::Synced(s) => match s.check(key, now) {
                synced::Check::Decided(d) => counted(&l.metrics, d),
                synced::Check::Degraded => wait.on_error(s.on_error, &l.limiter, &l.metrics, key),
            },
        };
    }
    if !pending.is_empty() {
        wait.slots = slots;
        wait.pending = pending;
        return Flow::Wait(Box::new(wait));
    }
    finish_limits(rl, &slots, wait.store_deny, admitted, scratch)
}

/// Writes the headers of the decided limits and refuses the request if one refused it (or its
/// store failed with `on_error = "deny"`).
fn finish_limits(rl: &RateLimits, slots: &[Slot; MAX_LIMITS_PER_ROUTE], store_deny: bool, admitted: &mut Admitted, scratch: &mut Vec<u8>) -> Flow {
    let mut list: [Option<(&ratelimit::LimitConfig, Decision)>; MAX_LIMITS_PER_ROUTE] = [None; MAX_LIMITS_PER_ROUTE];
    let mut n = 0;
    let mut rejected = false;
    for (l, slot) in rl.limits.iter().zip(slots) {
        if let Slot::Decided(d) = slot {
            list[n] = Some((&l.def.limit, *d));
            n += 1;
            rejected |= !d.allowed;
        }
    }
    if let Some(first) = list[0] {
        let mut applied = [first; MAX_LIMITS_PER_ROUTE];
        for (a, l) in applied.iter_mut().zip(list.iter().flatten()) {
            *a = *l;
        }
        scratch.clear();
        ratelimit::write_headers(scratch, &applied[..n]);
        admitted.response_headers.raw(scratch);
        scratch.clear();
    }
    if rejected {
        return Flow::Respond(Local::Error(ProxyError::RateLimited, std::mem::take(&mut admitted.response_headers)));
    }
    if store_deny {
        return Flow::Respond(Local::Error(ProxyError::LimitStoreUnavailable, std::mem::take(&mut admitted.response_headers)));
    }
    Flow::Continue
}

fn content_type(types: &[String], req: &RequestHead, admitted: &Admitted) -> Flow {
    if req.framing == Framing::None {
        return Flow::Continue;
    }
    let media = parse::media_type(header(req, "content-type").unwrap_or_default());
    if types.iter().any(|t| t.as_bytes().eq_ignore_ascii_case(media)) {
        Flow::Continue
    } else {
        Flow::Respond(Local::Error(ProxyError::UnsupportedMediaType, admitted.response_headers.clone()))
    }
}

/// The head half of JSON validation: the body must declare its length (RFC 9110 §15.5.12: 411
/// otherwise), and a length over the bound is refused before the body is read.
fn json_head(max: u64, req: &RequestHead, admitted: &Admitted) -> Flow {
    match req.framing {
        Framing::None => Flow::Continue,
        Framing::Length(n) if n > max => Flow::Respond(Local::Error(ProxyError::BodyTooLarge, admitted.response_headers.clone())),
        Framing::Length(_) => Flow::Continue,
        Framing::Chunked | Framing::UntilClose => {
            Flow::Respond(Local::Error(ProxyError::LengthRequired, admitted.response_headers.clone()))
        }
    }
}

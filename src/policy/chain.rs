//! The policy phase of the request path, in a fixed order: IP rules → CORS → authentication →
//! rate limits → request validation. Runs synchronously over the parsed head; the outcome is an
//! explicit verdict. Nothing here allocates on the steady-state path (verified tokens come from
//! the shard's cache; header lines go into inline buffers).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::apikey::{query_param, KeyLocation};
use super::cors::CorsOutcome;
use super::ip;
use super::jwt::Claims;
use super::ratelimit::{self, Decision, Limiter};
use super::HeaderBuf;
use crate::config::policy::{AuthRef, LimitKey};
use crate::config::Route;
use crate::error::ProxyError;
use crate::http::parse::{self, Framing, RequestHead};
use crate::http::write::{ip_text, Inline};
use crate::runtime::shard::Shard;

/// A request the policies let through, with what they add.
#[derive(Default)]
pub struct Admitted {
    /// CORS and RateLimit lines for the response.
    pub response_headers: HeaderBuf,
    /// Verified identity lines for the upstream (claims, consumer).
    pub forward_headers: HeaderBuf,
    /// The body must be read whole and checked as JSON before it is forwarded.
    pub json_check: bool,
}

// Returned once per request and moved straight into the plan; boxing the large variant would
// cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    Continue(Admitted),
    /// Answered by the gateway without an upstream (a CORS preflight): status and headers.
    Reply(u16, HeaderBuf),
    Reject(ProxyError, HeaderBuf),
}

const MAX_LIMITS_PER_ROUTE: usize = 8;

/// Filler for unused slots of the fixed-size decision list.
const NO_DECISION: Decision = Decision { allowed: true, limit: 0, remaining: 0, reset_secs: 0, retry_after_secs: 0 };

fn header<'b>(req: &RequestHead<'b, '_>, name: &str) -> Option<&'b [u8]> {
    req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

fn cookie<'b>(req: &RequestHead<'b, '_>, name: &str) -> Option<&'b [u8]> {
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

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs the route's policies. `scratch` is an empty pooled buffer the caller reuses afterwards.
pub fn run(shard: &Shard, route: &Route, req: &RequestHead, peer: IpAddr, scratch: &mut Vec<u8>) -> Verdict {
    let cfg = &shard.cfg;
    let rp = &route.policy;
    let mut admitted = Admitted::default();

    // 1. Client address and IP rules (server-wide, then the route's).
    let forwarded = if cfg.security.trusted_proxies.is_empty() { None } else { header(req, &cfg.security.client_ip_header) };
    let client = ip::client_ip(peer, &cfg.security.trusted_proxies, forwarded);
    if !cfg.security.ip.admits(client) || !rp.ip.admits(client) {
        return Verdict::Reject(ProxyError::Forbidden, HeaderBuf::default());
    }

    // 2. CORS: preflights are answered here; allowed origins get their headers on the response.
    if let Some(cors) = &rp.cors {
        let outcome = cors.apply(
            req.method,
            header(req, "origin"),
            header(req, "access-control-request-method"),
            header(req, "access-control-request-headers"),
            &mut admitted.response_headers,
        );
        match outcome {
            CorsOutcome::Preflight => return Verdict::Reply(204, admitted.response_headers),
            CorsOutcome::PreflightDenied => return Verdict::Reject(ProxyError::CorsRejected, HeaderBuf::default()),
            CorsOutcome::Actual | CorsOutcome::None => {}
        }
    }

    // 3. Authentication: any one of the route's providers is enough.
    let mut consumer: Option<Inline<128>> = None;
    if !rp.auth.is_empty() {
        match authenticate(shard, &rp.auth, req, &mut admitted.forward_headers) {
            Ok(c) => consumer = c,
            Err((why, bearer_error)) => {
                let mut h = HeaderBuf::default();
                if rp.auth.iter().any(|a| matches!(a, AuthRef::Jwt(_))) {
                    // RFC 6750 §3: no error code when no credentials were sent.
                    let challenge: &[u8] = if bearer_error { b"Bearer error=\"invalid_token\"" } else { b"Bearer" };
                    h.line(b"WWW-Authenticate", challenge);
                }
                return Verdict::Reject(ProxyError::Unauthorized(why), h);
            }
        }
    }

    // 4. Rate limits: every limit is charged; headers go on every response of the route.
    if !rp.rate_limits.is_empty() {
        let now = Limiter::now();
        let mut applied: [Option<(&ratelimit::LimitConfig, Decision)>; MAX_LIMITS_PER_ROUTE] = [None; MAX_LIMITS_PER_ROUTE];
        let client_text = ip_text(client);
        let client_key = client_text.as_bytes();
        let mut rejected = false;
        for (slot, &k) in applied.iter_mut().zip(&rp.rate_limits) {
            let def = &cfg.rate_limits[k];
            let key: &[u8] = match &def.key {
                LimitKey::ClientIp => client_key,
                LimitKey::Consumer => consumer.as_ref().map_or(client_key, |c| c.as_bytes()),
                LimitKey::Route => route.name.as_bytes(),
                LimitKey::Header(h) => header(req, h).unwrap_or(client_key),
            };
            let d = shard.global.limiters[k].check(key, now);
            rejected |= !d.allowed;
            *slot = Some((&def.limit, d));
        }
        let first = applied[0].unwrap_or((&cfg.rate_limits[rp.rate_limits[0]].limit, NO_DECISION));
        let mut list = [first; MAX_LIMITS_PER_ROUTE];
        let mut n = 0;
        for a in applied.iter().flatten() {
            list[n] = *a;
            n += 1;
        }
        scratch.clear();
        ratelimit::write_headers(scratch, &list[..n]);
        admitted.response_headers.raw(scratch);
        scratch.clear();
        if rejected {
            return Verdict::Reject(ProxyError::RateLimited, admitted.response_headers);
        }
    }

    // 5. Request validation: content type, then (for JSON routes) a whole, bounded body.
    let v = &rp.validate;
    if req.framing != Framing::None {
        if !v.content_types.is_empty() {
            let ct = header(req, "content-type").unwrap_or_default();
            let media = parse::trim(ct.split(|&b| b == b';').next().unwrap_or_default());
            if !v.content_types.iter().any(|t| t.as_bytes().eq_ignore_ascii_case(media)) {
                return Verdict::Reject(ProxyError::UnsupportedMediaType, admitted.response_headers);
            }
        }
        if v.json {
            match req.framing {
                Framing::Length(n) if n > v.max_json => return Verdict::Reject(ProxyError::BodyTooLarge, admitted.response_headers),
                Framing::Length(_) => admitted.json_check = true,
                _ => return Verdict::Reject(ProxyError::LengthRequired, admitted.response_headers),
            }
        }
    }
    Verdict::Continue(admitted)
}

/// Tries the route's providers in order. Ok(consumer) on the first success; Err((why, whether a
/// credential was presented and refused)) when none succeeds.
fn authenticate(
    shard: &Shard,
    auth: &[AuthRef],
    req: &RequestHead,
    forward: &mut HeaderBuf,
) -> Result<Option<Inline<128>>, (&'static str, bool)> {
    let cfg = &shard.cfg;
    let mut failure: (&'static str, bool) = ("missing credentials", false);
    let now = unix_now();
    for a in auth {
        match *a {
            AuthRef::Jwt(i) => {
                let p = &cfg.jwt[i];
                let token = bearer(req)
                    .or_else(|| p.token_cookie.as_deref().and_then(|c| cookie(req, c)))
                    .or_else(|| p.token_query.as_deref().and_then(|q| query_param(req.query, q.as_bytes())));
                let Some(token) = token else { continue };
                // Forwards the claims and names the consumer for an accepted token.
                let mut admit = |claims: &Claims| {
                    for ((_, header), value) in p.verifier.0.forward_claims().iter().zip(&claims.forwarded) {
                        if let Some(v) = value {
                            forward.line(header.as_bytes(), v.as_bytes());
                        }
                    }
                    claims.sub.as_deref().map(|s| Inline::new(s.as_bytes()))
                };
                let mut cache = shard.token_caches[i].borrow_mut();
                if let Some(claims) = cache.get(token, now) {
                    return Ok(admit(claims));
                }
                match p.verifier.0.verify(token, now) {
                    Ok(claims) => {
                        let consumer = admit(&claims);
                        cache.insert(token, claims, now);
                        return Ok(consumer);
                    }
                    Err(e) => failure = (e.message(), true),
                }
            }
            AuthRef::ApiKey(i) => {
                let set = &cfg.api_keys[i];
                let presented = match &set.location {
                    KeyLocation::Header(h) => header(req, h),
                    KeyLocation::Query(q) => query_param(req.query, q.as_bytes()),
                };
                let Some(presented) = presented else { continue };
                match set.consumer(presented) {
                    Some(consumer) => {
                        if let Some(h) = &set.forward_consumer {
                            forward.line(h.as_bytes(), consumer.as_bytes());
                        }
                        return Ok(Some(Inline::new(consumer.as_bytes())));
                    }
                    None => failure = ("invalid API key", true),
                }
            }
        }
    }
    Err(failure)
}

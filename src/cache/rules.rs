//! The rules of RFC 9111 for a shared cache, as pure functions over header values: the
//! `Cache-Control` directives of requests and responses, what may be stored (§3), freshness
//! (§4.2.1–4.2.2), age (§4.2.3), when a stored response may be served stale (§4.2.4, RFC 5861),
//! and the client's own conditional requests (RFC 9110 §13).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::parse::{list_items, trim};

/// Seconds given to a directive beyond this are this (RFC 9111 §1.2.2).
const MAX_DELTA: u64 = 2_147_483_648;

/// A response's `Cache-Control`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseCc {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl ResponseCc {
    /// Whether the response forbids serving it stale at all (RFC 9111 §5.2.2.2, §5.2.2.8; an
    /// explicit RFC 5861 directive of the origin still counts where `s-maxage` alone would not).
    pub fn no_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.no_cache
    }
}

/// A request's `Cache-Control` (and `Pragma: no-cache` when it has none, RFC 9111 §5.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCc {
    pub no_store: bool,
    pub no_cache: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u64>,
    /// `max-stale` without a value accepts any staleness.
    pub max_stale: Option<u64>,
    pub min_fresh: Option<u64>,
}

/// Calls `f(name, argument)` for each directive of the field values, names lower-cased by the
/// caller's comparison (`eq_ignore_ascii_case`); an argument in quotes comes without them.
fn directives<'a>(values: impl Iterator<Item = &'a [u8]>, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    for v in values {
        let mut rest = v;
        while !rest.is_empty() {
            let mut i = 0;
            while i < rest.len() && rest[i] != b',' && rest[i] != b'=' {
                i += 1;
            }
            let name = trim(&rest[..i]);
            let mut arg = None;
            if i < rest.len() && rest[i] == b'=' {
                let after = trim_start(&rest[i + 1..]);
                if after.first() == Some(&b'"') {
                    // A quoted string; `\` escapes the next byte.
                    let mut j = 1;
                    while j < after.len() && after[j] != b'"' {
                        j += if after[j] == b'\\' { 2 } else { 1 };
                    }
                    arg = Some(&after[1..j.min(after.len())]);
                    let tail = after.get(j + 1..).unwrap_or_default();
                    let comma = tail.iter().position(|&b| b == b',').map_or(tail.len(), |c| c + 1);
                    rest = &tail[comma..];
                } else {
                    let end = after.iter().position(|&b| b == b',').unwrap_or(after.len());
                    arg = Some(trim(&after[..end]));
                    rest = after.get(end + 1..).unwrap_or_default();
                }
            } else {
                rest = rest.get(i + 1..).unwrap_or_default();
            }
            if !name.is_empty() {
                f(name, arg);
            }
        }
    }
}

/// A delta-seconds argument. A present but invalid one is 0 (the response is stale, RFC 9111
/// §4.2.1 and §1.2.2); the first of repeated directives counts.
fn delta(arg: Option<&[u8]>) -> u64 {
    let Some(a) = arg.filter(|a| !a.is_empty() && a.iter().all(u8::is_ascii_digit)) else { return 0 };
    let mut n: u64 = 0;
    for &d in a {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
        if n >= MAX_DELTA {
            return MAX_DELTA;
        }
    }
    n
}

fn first(slot: &mut Option<u64>, arg: Option<&[u8]>) {
    if slot.is_none() {
        *slot = Some(delta(arg));
    }
}

pub fn response_cc<'a>(values: impl Iterator<Item = &'a [u8]>) -> ResponseCc {
    let mut cc = ResponseCc::default();
    directives(values, |name, arg| {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("no-store") {
            cc.no_store = true;
        } else if is("no-cache") {
            // The qualified form (`no-cache="Set-Cookie"`) is taken as unqualified, which RFC 9111
            // §5.2.2.4 allows: the whole response is revalidated.
            cc.no_cache = true;
        } else if is("private") {
            // Qualified or not, a shared cache does not store it (§5.2.2.7 allows that).
            cc.private = true;
        } else if is("public") {
            cc.public = true;
        } else if is("must-revalidate") {
            cc.must_revalidate = true;
        } else if is("proxy-revalidate") {
            cc.proxy_revalidate = true;
        } else if is("must-understand") {
            cc.must_understand = true;
        } else if is("max-age") {
            first(&mut cc.max_age, arg);
        } else if is("s-maxage") {
            first(&mut cc.s_maxage, arg);
        } else if is("stale-while-revalidate") {
            first(&mut cc.stale_while_revalidate, arg);
        } else if is("stale-if-error") {
            first(&mut cc.stale_if_error, arg);
        }
    });
    cc
}

/// `cache_control` and `pragma` are the request's field values.
pub fn request_cc<'a>(cache_control: impl Iterator<Item = &'a [u8]> + Clone, pragma: impl Iterator<Item = &'a [u8]>) -> RequestCc {
    let mut cc = RequestCc::default();
    let mut any = false;
    directives(cache_control, |name, arg| {
        any = true;
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("no-store") {
            cc.no_store = true;
        } else if is("no-cache") {
            cc.no_cache = true;
        } else if is("only-if-cached") {
            cc.only_if_cached = true;
        } else if is("max-age") {
            first(&mut cc.max_age, arg);
        } else if is("max-stale") {
            if cc.max_stale.is_none() {
                cc.max_stale = Some(if arg.is_none() { MAX_DELTA } else { delta(arg) });
            }
        } else if is("min-fresh") {
            first(&mut cc.min_fresh, arg);
        }
    });
    if !any {
        directives(pragma, |name, _| cc.no_cache |= name.eq_ignore_ascii_case(b"no-cache"));
    }
    cc
}

fn trim_start(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    &v[s..]
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// An HTTP-date (IMF-fixdate, RFC 850 or asctime form) as seconds since the epoch.
pub fn http_date(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(trim(v)).ok()?;
    let t = httpdate::parse_http_date(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64))
}

/// Statuses a cache may give heuristic freshness to (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Statuses this cache stores at all: final ones, less 206 (it has no range support) and 304
/// (which only ever refreshes a stored response).
pub fn storable_status(status: u16) -> bool {
    (200..600).contains(&status) && !matches!(status, 206 | 304)
}

/// Statuses whose semantics this cache knows (those RFC 9110 defines), for `must-understand`.
pub fn understood(status: u16) -> bool {
    matches!(status, 200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505) && storable_status(status)
}

/// What of a response decides whether a shared cache may store it (RFC 9111 §3, §3.5).
pub struct StoreFacts {
    pub status: u16,
    pub cc: ResponseCc,
    pub has_expires: bool,
    pub vary_star: bool,
    pub set_cookie: bool,
    /// The request carried `Authorization`.
    pub authorization: bool,
    pub request_no_store: bool,
    /// The route does not store responses that set cookies (`store_set_cookie = false`).
    pub skip_set_cookie: bool,
}

/// Why a response is not stored, or None when it may be.
pub fn not_storable(f: &StoreFacts) -> Option<&'static str> {
    let cc = &f.cc;
    if !storable_status(f.status) || (cc.must_understand && !understood(f.status)) {
        return Some("status");
    }
    // §5.2.2.3: `must-understand` with `no-store` means "store it if you know this status";
    // the no-store is for caches that do not.
    let understood_override = cc.must_understand && understood(f.status);
    if (cc.no_store && !understood_override) || f.request_no_store {
        return Some("no-store");
    }
    if cc.private {
        return Some("private");
    }
    // §3.5: with Authorization, only what the origin marked as shareable.
    if f.authorization && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Some("authorization");
    }
    if f.vary_star {
        return Some("vary-star");
    }
    // RFC 9111 lets a shared cache store (and replay) Set-Cookie; a route may refuse to.
    if f.set_cookie && f.skip_set_cookie {
        return Some("set-cookie");
    }
    let explicit = cc.public || cc.max_age.is_some() || cc.s_maxage.is_some() || f.has_expires;
    if explicit || heuristically_cacheable(f.status) || cc.no_cache {
        return None;
    }
    Some("status")
}

/// The times a stored response's age is computed from (RFC 9111 §4.2.3), in epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub request_time: i64,
    pub response_time: i64,
    pub date_value: i64,
    pub age_value: i64,
}

impl Times {
    /// `corrected_initial_age`, the age the response had when it was received.
    pub fn initial_age(&self) -> i64 {
        let apparent_age = (self.response_time - self.date_value).max(0);
        let response_delay = self.response_time - self.request_time;
        let corrected_age_value = self.age_value + response_delay;
        apparent_age.max(corrected_age_value)
    }

    pub fn current_age(&self, now: i64) -> i64 {
        self.initial_age() + (now - self.response_time).max(0)
    }
}

/// The freshness lifetime of a response in seconds (RFC 9111 §4.2.1): `s-maxage`, `max-age`,
/// `Expires` − `Date`, then the route's `ttl`, then 10 % of the time since `Last-Modified`
/// (§4.2.2, at most a day) for statuses that allow a heuristic.
pub fn lifetime(status: u16, cc: &ResponseCc, expires: Option<Option<i64>>, date: i64, last_modified: Option<i64>, ttl: Duration) -> i64 {
    if let Some(s) = cc.s_maxage {
        return s as i64;
    }
    if let Some(m) = cc.max_age {
        return m as i64;
    }
    match expires {
        // An invalid Expires (e.g. "0") means already expired (§5.3).
        Some(None) => return 0,
        Some(Some(e)) => return (e - date).max(0),
        None => {}
    }
    if !ttl.is_zero() && (heuristically_cacheable(status) || cc.public) {
        return ttl.as_secs() as i64;
    }
    match last_modified {
        Some(lm) if heuristically_cacheable(status) || cc.public => ((date - lm).max(0) / 10).min(86_400),
        _ => 0,
    }
}

/// How a stored response may be used for a request, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Fresh (within what the request accepts): served as it is.
    Fresh,
    /// Stale but within `stale-while-revalidate`: served, and refreshed in the background.
    StaleRevalidate,
    /// Must be validated with the origin first (stale, or `no-cache`); may be served stale
    /// if the origin fails, within `stale-if-error`.
    Validate,
}

/// What a stored response's freshness allows for a request (§4.2.4, §5.2.1, RFC 5861).
pub struct Freshness {
    pub lifetime: i64,
    pub age: i64,
    pub cc: ResponseCc,
    /// Effective RFC 5861 windows (the response's, or the route's defaults), seconds.
    pub swr: i64,
}

pub fn usable(f: &Freshness, req: &RequestCc) -> Use {
    if f.cc.no_cache || req.no_cache {
        return Use::Validate;
    }
    let left = f.lifetime - f.age;
    if req.max_age.is_some_and(|m| f.age > m as i64) {
        return Use::Validate;
    }
    if let Some(min) = req.min_fresh {
        if left < min as i64 {
            return Use::Validate;
        }
    }
    if left > 0 {
        return Use::Fresh;
    }
    if f.cc.must_revalidate || f.cc.proxy_revalidate {
        return Use::Validate;
    }
    // The client accepts this much staleness (§5.2.1.2).
    if f.cc.s_maxage.is_none() && req.max_stale.is_some_and(|s| -left <= s as i64) {
        return Use::Fresh;
    }
    if -left < f.swr {
        return Use::StaleRevalidate;
    }
    Use::Validate
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2): equal opaque tags, `W/` ignored.
pub fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    fn opaque(t: &[u8]) -> &[u8] {
        let t = trim(t);
        t.strip_prefix(b"W/").unwrap_or(t)
    }
    opaque(a) == opaque(b)
}

/// Whether an `If-None-Match` list names `etag` (or is `*`).
pub fn none_match<'a>(values: impl Iterator<Item = &'a [u8]>, etag: Option<&[u8]>) -> bool {
    values.flat_map(list_items).any(|tag| tag == b"*" || etag.is_some_and(|e| weak_eq(tag, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcc(v: &str) -> ResponseCc {
        response_cc(std::iter::once(v.as_bytes()))
    }

    #[test]
    fn response_directives() {
        let table: &[(&str, ResponseCc)] = &[
            ("max-age=60", ResponseCc { max_age: Some(60), ..Default::default() }),
            ("public, max-age=\"30\"", ResponseCc { public: true, max_age: Some(30), ..Default::default() }),
            ("MAX-AGE=10, max-age=99", ResponseCc { max_age: Some(10), ..Default::default() }),
            ("max-age=abc", ResponseCc { max_age: Some(0), ..Default::default() }),
            ("max-age=99999999999999", ResponseCc { max_age: Some(MAX_DELTA), ..Default::default() }),
            ("no-cache=\"Set-Cookie, X\", s-maxage=5", ResponseCc { no_cache: true, s_maxage: Some(5), ..Default::default() }),
            ("private=\"x\"", ResponseCc { private: true, ..Default::default() }),
            (
                "max-age=1, stale-while-revalidate=30, stale-if-error=60",
                ResponseCc { max_age: Some(1), stale_while_revalidate: Some(30), stale_if_error: Some(60), ..Default::default() },
            ),
            ("no-store,must-revalidate", ResponseCc { no_store: true, must_revalidate: true, ..Default::default() }),
            (" , ,", ResponseCc::default()),
        ];
        for (text, want) in table {
            assert_eq!(rcc(text), *want, "{text}");
        }
    }

    #[test]
    fn request_directives_and_pragma() {
        let cc = request_cc(std::iter::once(&b"max-stale, min-fresh=5"[..]), std::iter::empty());
        assert_eq!(cc.max_stale, Some(MAX_DELTA));
        assert_eq!(cc.min_fresh, Some(5));
        let cc = request_cc(std::iter::empty(), std::iter::once(&b"no-cache"[..]));
        assert!(cc.no_cache);
        // Pragma is ignored when Cache-Control is present.
        let cc = request_cc(std::iter::once(&b"max-age=5"[..]), std::iter::once(&b"no-cache"[..]));
        assert!(!cc.no_cache);
    }

    #[test]
    fn storability() {
        let base = StoreFacts {
            status: 200,
            cc: ResponseCc::default(),
            has_expires: false,
            vary_star: false,
            set_cookie: false,
            authorization: false,
            request_no_store: false,
            skip_set_cookie: false,
        };
        assert_eq!(not_storable(&base), None);
        assert_eq!(not_storable(&StoreFacts { status: 206, ..base }), Some("status"));
        assert_eq!(not_storable(&StoreFacts { status: 500, ..base }), Some("status"));
        assert_eq!(not_storable(&StoreFacts { status: 500, cc: rcc("max-age=5"), ..base }), None);
        assert_eq!(not_storable(&StoreFacts { cc: rcc("private, max-age=5"), ..base }), Some("private"));
        assert_eq!(not_storable(&StoreFacts { cc: rcc("no-store"), ..base }), Some("no-store"));
        assert_eq!(not_storable(&StoreFacts { request_no_store: true, ..base }), Some("no-store"));
        assert_eq!(not_storable(&StoreFacts { authorization: true, cc: rcc("max-age=5"), ..base }), Some("authorization"));
        assert_eq!(not_storable(&StoreFacts { authorization: true, cc: rcc("s-maxage=5"), ..base }), None);
        assert_eq!(not_storable(&StoreFacts { authorization: true, cc: rcc("public"), ..base }), None);
        assert_eq!(not_storable(&StoreFacts { authorization: true, cc: rcc("must-revalidate"), ..base }), None);
        assert_eq!(not_storable(&StoreFacts { vary_star: true, ..base }), Some("vary-star"));
        assert_eq!(not_storable(&StoreFacts { set_cookie: true, cc: rcc("max-age=5"), ..base }), None);
        assert_eq!(not_storable(&StoreFacts { set_cookie: true, skip_set_cookie: true, cc: rcc("public, max-age=5"), ..base }), Some("set-cookie"));
        assert_eq!(not_storable(&StoreFacts { status: 599, cc: rcc("max-age=5"), ..base }), None);
        assert_eq!(not_storable(&StoreFacts { status: 599, cc: rcc("max-age=5, must-understand"), ..base }), Some("status"));
        assert_eq!(not_storable(&StoreFacts { cc: rcc("max-age=5, must-understand, no-store"), ..base }), None);
        assert_eq!(not_storable(&StoreFacts { status: 599, cc: rcc("max-age=5, must-understand, no-store"), ..base }), Some("status"));
    }

    #[test]
    fn freshness_and_age() {
        let t = Times { request_time: 100, response_time: 102, date_value: 90, age_value: 5 };
        // apparent 12, corrected age value 5 + 2 = 7: the larger.
        assert_eq!(t.initial_age(), 12);
        assert_eq!(t.current_age(110), 20);
        let d = Duration::ZERO;
        assert_eq!(lifetime(200, &rcc("s-maxage=7, max-age=3"), None, 0, None, d), 7);
        assert_eq!(lifetime(200, &rcc(""), Some(Some(160)), 100, None, d), 60);
        assert_eq!(lifetime(200, &rcc(""), Some(None), 100, None, d), 0);
        assert_eq!(lifetime(200, &rcc(""), None, 1000, Some(0), d), 100);
        assert_eq!(lifetime(200, &rcc(""), None, 1000, None, Duration::from_secs(300)), 300);
        assert_eq!(lifetime(500, &rcc(""), None, 1000, Some(0), Duration::from_secs(300)), 0);
    }

    #[test]
    fn usability() {
        let f = |lifetime, age, cc: &str, swr| Freshness { lifetime, age, cc: rcc(cc), swr };
        let none = RequestCc::default();
        assert_eq!(usable(&f(10, 5, "", 0), &none), Use::Fresh);
        assert_eq!(usable(&f(10, 15, "", 0), &none), Use::Validate);
        assert_eq!(usable(&f(10, 15, "", 30), &none), Use::StaleRevalidate);
        assert_eq!(usable(&f(10, 15, "must-revalidate", 30), &none), Use::Validate);
        assert_eq!(usable(&f(10, 5, "no-cache", 0), &none), Use::Validate);
        assert_eq!(usable(&f(10, 5, "", 0), &RequestCc { no_cache: true, ..none }), Use::Validate);
        assert_eq!(usable(&f(10, 5, "", 0), &RequestCc { max_age: Some(3), ..none }), Use::Validate);
        assert_eq!(usable(&f(10, 5, "", 0), &RequestCc { min_fresh: Some(8), ..none }), Use::Validate);
        assert_eq!(usable(&f(10, 15, "", 0), &RequestCc { max_stale: Some(10), ..none }), Use::Fresh);
    }

    #[test]
    fn conditionals() {
        assert!(none_match(std::iter::once(&b"\"a\", W/\"b\""[..]), Some(b"\"b\"")));
        assert!(none_match(std::iter::once(&b"*"[..]), None));
        assert!(!none_match(std::iter::once(&b"\"a\""[..]), Some(b"\"c\"")));
        assert_eq!(http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date(b"0"), None);
    }
}

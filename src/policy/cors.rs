//! CORS per route (Fetch standard): preflights answered at the gateway, `Access-Control-*`
//! headers added to responses for allowed origins. Origins match exactly or as a wildcard
//! subdomain (`https://*.example.com` matches `https://a.example.com`, not `https://example.com`).

use super::HeaderBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginMatch {
    Any,
    /// Lower-case `scheme://host[:port]`.
    Exact(String),
    /// `https://*.example.com` kept as (`https://`, `.example.com`).
    Subdomain(String, String),
}

#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<OriginMatch>,
    /// Upper-case method names.
    methods: Vec<String>,
    methods_line: String,
    /// Lower-case header names.
    headers: Vec<String>,
    headers_line: String,
    expose_line: String,
    credentials: bool,
    max_age: u64,
}

/// What a request asks of CORS.
#[derive(Debug, PartialEq, Eq)]
pub enum CorsOutcome {
    /// Not a CORS request, or an origin that is not allowed: nothing to add.
    None,
    /// A preflight for an allowed origin/method/headers: answer 204 with these headers.
    Preflight,
    /// A preflight that is not allowed: answer 403.
    PreflightDenied,
    /// An actual request from an allowed origin: add the headers to the response.
    Actual,
}

impl Cors {
    pub fn new(
        origins: &[String],
        methods: &[String],
        headers: &[String],
        expose: &[String],
        credentials: bool,
        max_age: u64,
    ) -> Result<Cors, String> {
        let mut list = Vec::new();
        for o in origins {
            let lower = o.trim().to_ascii_lowercase();
            if lower == "*" {
                if credentials {
                    return Err("origin \"*\" cannot be combined with allow_credentials (Fetch standard)".into());
                }
                list.push(OriginMatch::Any);
                continue;
            }
            let Some((scheme, host)) = lower.split_once("://") else {
                return Err(format!("origin `{o}` needs a scheme, like \"https://app.example.com\""));
            };
            if host.is_empty() || host.contains('/') {
                return Err(format!("origin `{o}` must be scheme://host[:port] with no path"));
            }
            match host.strip_prefix("*.") {
                Some(rest) if !rest.is_empty() && !rest.contains('*') => {
                    list.push(OriginMatch::Subdomain(format!("{scheme}://"), format!(".{rest}")))
                }
                Some(_) => return Err(format!("origin `{o}` has an invalid wildcard")),
                None if host.contains('*') => return Err(format!("origin `{o}`: '*' is only allowed as the first label")),
                None => list.push(OriginMatch::Exact(lower.clone())),
            }
        }
        let methods: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        let headers: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        Ok(Cors {
            origins: list,
            methods_line: methods.join(", "),
            methods,
            headers_line: headers.join(", "),
            headers,
            expose_line: expose.join(", "),
            credentials,
            max_age,
        })
    }

    pub fn origin_allowed(&self, origin: &[u8]) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else { return false };
        self.origins.iter().any(|m| match m {
            OriginMatch::Any => true,
            OriginMatch::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginMatch::Subdomain(scheme, suffix) => {
                // Byte-wise and case-insensitive, without a lower-cased copy (no allocation).
                let o = origin.as_bytes();
                let (scheme, suffix) = (scheme.as_bytes(), suffix.as_bytes());
                o.len() > scheme.len() + suffix.len()
                    && o[..scheme.len()].eq_ignore_ascii_case(scheme)
                    && o[o.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !o[scheme.len()..o.len() - suffix.len()].iter().any(|&b| b == b'/' || b == b':')
            }
        })
    }

    /// Decides what to do for a request with these `Origin`, method and preflight headers, and
    /// writes the response headers into `out` when the answer carries any.
    pub fn apply(
        &self,
        method: &str,
        origin: Option<&[u8]>,
        request_method: Option<&[u8]>,
        request_headers: Option<&[u8]>,
        out: &mut HeaderBuf,
    ) -> CorsOutcome {
        let preflight = is_preflight(method, origin, request_method);
        let Some(origin) = origin else { return CorsOutcome::None };
        if !self.origin_allowed(origin) {
            return if preflight { CorsOutcome::PreflightDenied } else { CorsOutcome::None };
        }
        if preflight {
            let m = request_method.unwrap_or_default();
            let simple_method = matches!(m, b"GET" | b"HEAD" | b"POST");
            if !simple_method && !self.methods.iter().any(|x| x.as_bytes() == m) {
                return CorsOutcome::PreflightDenied;
            }
            for h in request_headers.unwrap_or_default().split(|&b| b == b',') {
                let h = crate::http::parse::trim(h);
                if !h.is_empty() && !self.headers.iter().any(|x| x.as_bytes().eq_ignore_ascii_case(h)) {
                    return CorsOutcome::PreflightDenied;
                }
            }
            self.allow_origin(origin, out);
            if !self.methods_line.is_empty() {
                out.line(b"Access-Control-Allow-Methods", self.methods_line.as_bytes());
            }
            if !self.headers_line.is_empty() {
                out.line(b"Access-Control-Allow-Headers", self.headers_line.as_bytes());
            }
            if self.max_age > 0 {
                out.line(b"Access-Control-Max-Age", itoa::Buffer::new().format(self.max_age).as_bytes());
            }
            return CorsOutcome::Preflight;
        }
        self.allow_origin(origin, out);
        if !self.expose_line.is_empty() {
            out.line(b"Access-Control-Expose-Headers", self.expose_line.as_bytes());
        }
        CorsOutcome::Actual
    }

    fn allow_origin(&self, origin: &[u8], out: &mut HeaderBuf) {
        if self.origins.contains(&OriginMatch::Any) && !self.credentials {
            out.line(b"Access-Control-Allow-Origin", b"*");
        } else {
            out.line(b"Access-Control-Allow-Origin", origin);
            out.line(b"Vary", b"Origin");
        }
        if self.credentials {
            out.line(b"Access-Control-Allow-Credentials", b"true");
        }
    }
}

/// A CORS preflight (Fetch standard §3.2.2): `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. The one definition the request path and the CORS stage share.
pub fn is_preflight(method: &str, origin: Option<&[u8]>, request_method: Option<&[u8]>) -> bool {
    method == "OPTIONS" && origin.is_some() && request_method.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Cors::new(
            &s(&["https://app.example.com", "https://*.example.org"]),
            &s(&["GET", "POST", "DELETE"]),
            &s(&["Content-Type", "Authorization"]),
            &s(&["X-Request-Id"]),
            true,
            600,
        )
        .unwrap()
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let c = cors();
        let cases: &[(&str, bool)] = &[
            ("https://app.example.com", true),
            ("HTTPS://APP.EXAMPLE.COM", true),
            ("http://app.example.com", false),
            ("https://app.example.com.evil.com", false),
            ("https://a.example.org", true),
            ("https://a.b.example.org", true),
            ("https://example.org", false),
            ("https://evilexample.org", false),
            ("https://a.example.org:8443", false),
            ("null", false),
        ];
        for &(o, want) in cases {
            assert_eq!(c.origin_allowed(o.as_bytes()), want, "{o}");
        }
    }

    #[test]
    fn preflight_and_actual_requests() {
        let c = cors();
        let mut out = HeaderBuf::default();
        let o = Some(&b"https://app.example.com"[..]);
        assert_eq!(c.apply("OPTIONS", o, Some(b"DELETE"), Some(b"content-type, authorization"), &mut out), CorsOutcome::Preflight);
        let text = String::from_utf8(out.as_bytes().to_vec()).unwrap();
        assert_eq!(
            text,
            "Access-Control-Allow-Origin: https://app.example.com\r\nVary: Origin\r\nAccess-Control-Allow-Credentials: true\r\n\
             Access-Control-Allow-Methods: GET, POST, DELETE\r\nAccess-Control-Allow-Headers: content-type, authorization\r\n\
             Access-Control-Max-Age: 600\r\n"
        );
        let mut out = HeaderBuf::default();
        assert_eq!(c.apply("OPTIONS", o, Some(b"PUT"), None, &mut out), CorsOutcome::PreflightDenied);
        assert_eq!(c.apply("OPTIONS", o, Some(b"GET"), Some(b"x-other"), &mut out), CorsOutcome::PreflightDenied);
        assert_eq!(c.apply("OPTIONS", Some(b"https://evil.com"), Some(b"GET"), None, &mut out), CorsOutcome::PreflightDenied);
        assert_eq!(c.apply("GET", Some(b"https://evil.com"), None, None, &mut out), CorsOutcome::None);
        assert_eq!(c.apply("GET", None, None, None, &mut out), CorsOutcome::None);
        let mut out = HeaderBuf::default();
        assert_eq!(c.apply("GET", o, None, None, &mut out), CorsOutcome::Actual);
        assert!(String::from_utf8(out.as_bytes().to_vec()).unwrap().contains("Access-Control-Expose-Headers: X-Request-Id\r\n"));
    }

    #[test]
    fn wildcard_origin_cannot_carry_credentials() {
        assert!(Cors::new(&["*".into()], &[], &[], &[], true, 0).is_err());
        let any = Cors::new(&["*".into()], &[], &[], &[], false, 0).unwrap();
        let mut out = HeaderBuf::default();
        assert_eq!(any.apply("GET", Some(b"https://x.y"), None, None, &mut out), CorsOutcome::Actual);
        assert_eq!(out.as_bytes(), b"Access-Control-Allow-Origin: *\r\n");
    }
}

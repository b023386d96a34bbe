//! The typed context of one request: who sent it, where it went, what came of it, how long each
//! part took. Filled in along the request path and recorded in one place when the request ends
//! (`record`: metrics and the access log). Inline buffers only: no allocation per request.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::http::parse::Version;
use crate::http::write::{Inline, RequestId};
use crate::observe::log::Line;
use crate::observe::metrics::method_label;
use crate::policy::stage::Consumer;
use crate::runtime::generation::Generation;
use crate::runtime::shard::Shard;

/// Path bytes kept for the access log; a longer path is logged cut, and says so.
pub const LOGGED_PATH: usize = 255;

pub struct Ctx {
    pub started: Instant,
    pub request_id: Option<RequestId>,
    pub client_ip: IpAddr,
    pub method: &'static str,
    pub version: Version,
    pub path: Inline<LOGGED_PATH>,
    pub path_truncated: bool,
    /// Index into the generation's routes.
    pub route: Option<usize>,
    pub service: Option<usize>,
    pub upstream: Option<SocketAddr>,
    pub consumer: Option<Consumer>,
    /// The status sent to the client (0: nothing was sent).
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream_started: Option<Instant>,
    pub upstream_done: Option<Instant>,
    /// The error code of a failed request.
    pub error: Option<&'static str>,
    /// The OS error behind an upstream failure (errno), for the error log.
    pub os_error: Option<i32>,
    pub traceparent: Inline<55>,
}

impl Ctx {
    pub fn new(client_ip: IpAddr) -> Ctx {
        Ctx {
            started: Instant::now(),
            request_id: None,
            client_ip,
            method: "",
            version: Version::Http11,
            path: Inline::new(b""),
            path_truncated: false,
            route: None,
            service: None,
            upstream: None,
            consumer: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            upstream_started: None,
            upstream_done: None,
            error: None,
            os_error: None,
            traceparent: Inline::new(b""),
        }
    }

    /// Takes what the log needs from a parsed head (it lives only until the next await).
    pub fn set_head(&mut self, method: &str, path: &[u8], query: &[u8], with_query: bool, version: Version) {
        self.method = method_label(method);
        self.version = version;
        let mut b = [0u8; LOGGED_PATH];
        let mut n = 0;
        let mut put = |part: &[u8]| {
            let take = part.len().min(LOGGED_PATH - n);
            b[n..n + take].copy_from_slice(&part[..take]);
            n += take;
            take == part.len()
        };
        let mut whole = put(path);
        if with_query && !query.is_empty() {
            whole &= put(b"?") && put(query);
        }
        self.path_truncated = !whole;
        self.path = Inline::new(&b[..n]);
    }

    /// Records the finished request: metrics, then the access log. Requests that sent nothing
    /// and read no head (a client that connected and left) are not requests and are skipped.
    pub fn record(&self, shard: &Shard, gen: &Generation) {
        if self.status == 0 && self.request_id.is_none() {
            return;
        }
        let duration_us = self.started.elapsed().as_micros() as u64;
        let upstream_us = match (self.upstream_started, self.upstream_done) {
            (Some(a), Some(b)) => Some(b.duration_since(a).as_micros() as u64),
            _ => None,
        };
        let route = self.route.and_then(|i| gen.routes.get(i));
        let metrics = route.map_or(&gen.unmatched, |r| &r.metrics);
        let method = if self.method.is_empty() { "OTHER" } else { self.method };
        metrics.record(method, self.status, duration_us, self.bytes_in, self.bytes_out);
        if let (Some(s), Some(us)) = (self.service, upstream_us) {
            gen.upstreams.metrics(s).record_duration(us);
        }
        if gen.cfg.log.access == crate::config::AccessLogTarget::Off {
            return;
        }
        let line = Line {
            request_id: self.request_id.as_ref().map_or(&b""[..], |r| r.as_bytes()),
            client_ip: self.client_ip,
            method,
            path: self.path.as_bytes(),
            path_truncated: self.path_truncated,
            status: self.status,
            route: route.map_or("", |r| r.name.as_str()),
            service: self.service.map_or("", |s| gen.cfg.services[s].name.as_str()),
            upstream: self.upstream,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_us,
            upstream_us,
            consumer: self.consumer.as_ref().map(|c| c.as_bytes()),
            error: self.error,
            traceparent: self.traceparent.as_bytes(),
        };
        shard.log.write(&line, &shard.metrics);
    }
}

//! The one error type of the request path: what happened, which side caused it, and the one
//! place that maps it to a status code and a JSON error code.

use crate::http::body::ChunkError;
use crate::http::parse::HeadError;

/// Who is responsible for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("{}", .0.message())]
    BadHead(HeadError),
    #[error("{}", .0.message())]
    BadRequestBody(ChunkError),
    #[error("request body too large")]
    BodyTooLarge,
    #[error("no route matches this request")]
    NoRoute,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request head not received in time")]
    HeaderTimeout,
    #[error("client closed the connection or stopped sending")]
    ClientGone,
    #[error("upstream refused the connection")]
    ConnectFailed,
    #[error("upstream did not accept the connection in time")]
    ConnectTimeout,
    #[error("upstream did not respond in time")]
    UpstreamTimeout,
    #[error("upstream closed the connection before responding")]
    UpstreamClosed,
    #[error("upstream sent an invalid response: {0}")]
    BadResponse(&'static str),
    #[error("client address not allowed")]
    Forbidden,
    #[error("CORS preflight rejected")]
    CorsRejected,
    #[error("authentication required or failed: {0}")]
    Unauthorized(&'static str),
    #[error("rate limit exceeded")]
    RateLimited,
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("request body is not valid JSON")]
    InvalidJson,
    #[error("request body length required")]
    LengthRequired,
    #[error("identity headers for the upstream exceed the gateway's buffer")]
    ForwardHeadersTooLarge,
    #[error("the service's circuit breaker is open")]
    CircuitOpen,
    /// `Cache-Control: only-if-cached` and nothing stored answers it (RFC 9111 §5.2.1.7).
    #[error("only-if-cached and nothing stored answers the request")]
    NotCached,
    #[error("the service has max_concurrent requests in flight")]
    Overloaded,
    #[error("no endpoint of the service is available")]
    NoHealthyUpstream,
    #[error("the shared rate-limit store did not answer")]
    LimitStoreUnavailable,
    #[error("the Host does not match the TLS server name")]
    MisdirectedRequest,
    #[error("the TLS handshake with the upstream failed")]
    UpstreamTls,
    #[error("a transformed header or target would hold a forbidden value")]
    TransformRefused,
    /// A request body the route's JSON transform cannot apply to.
    #[error("the request body could not be transformed")]
    TransformFailed,
    /// An upstream response body the route's JSON transform cannot apply to.
    #[error("the upstream response could not be transformed")]
    ResponseTransformFailed,
    #[error("internal error")]
    Internal,
}

impl ProxyError {
    pub fn side(self) -> Side {
        match self {
            ProxyError::BadHead(_)
            | ProxyError::BadRequestBody(_)
            | ProxyError::BodyTooLarge
            | ProxyError::NoRoute
            | ProxyError::MethodNotAllowed
            | ProxyError::HeaderTimeout
            | ProxyError::ClientGone
            | ProxyError::Forbidden
            | ProxyError::CorsRejected
            | ProxyError::Unauthorized(_)
            | ProxyError::RateLimited
            | ProxyError::UnsupportedMediaType
            | ProxyError::InvalidJson
            | ProxyError::LengthRequired
            | ProxyError::ForwardHeadersTooLarge
            | ProxyError::MisdirectedRequest
            | ProxyError::TransformRefused
            | ProxyError::TransformFailed
            | ProxyError::NotCached => Side::Client,
            ProxyError::ConnectFailed
            | ProxyError::ConnectTimeout
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamClosed
            | ProxyError::BadResponse(_)
            | ProxyError::UpstreamTls
            | ProxyError::ResponseTransformFailed => Side::Upstream,
            ProxyError::Internal
            | ProxyError::CircuitOpen
            | ProxyError::Overloaded
            | ProxyError::NoHealthyUpstream
            | ProxyError::LimitStoreUnavailable => Side::Gateway,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ProxyError::BadHead(h) => h.status(),
            ProxyError::BadRequestBody(_) => 400,
            ProxyError::BodyTooLarge => 413,
            ProxyError::NoRoute => 404,
            ProxyError::MethodNotAllowed => 405,
            ProxyError::HeaderTimeout => 408,
            ProxyError::ClientGone => 400,
            ProxyError::ConnectFailed | ProxyError::UpstreamClosed | ProxyError::BadResponse(_) | ProxyError::UpstreamTls => 502,
            ProxyError::ConnectTimeout | ProxyError::UpstreamTimeout | ProxyError::NotCached => 504,
            ProxyError::Forbidden | ProxyError::CorsRejected => 403,
            ProxyError::Unauthorized(_) => 401,
            ProxyError::RateLimited => 429,
            ProxyError::UnsupportedMediaType => 415,
            ProxyError::InvalidJson => 400,
            ProxyError::LengthRequired => 411,
            ProxyError::ForwardHeadersTooLarge => 431,
            ProxyError::MisdirectedRequest => 421,
            ProxyError::TransformRefused | ProxyError::TransformFailed => 400,
            ProxyError::ResponseTransformFailed => 502,
            ProxyError::CircuitOpen | ProxyError::Overloaded | ProxyError::NoHealthyUpstream | ProxyError::LimitStoreUnavailable => 503,
            ProxyError::Internal => 500,
        }
    }

    /// Stable machine-readable code for the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            ProxyError::BadHead(HeadError::HeadTooLarge) => "header_too_large",
            ProxyError::BadHead(HeadError::TargetTooLong) => "target_too_long",
            ProxyError::BadHead(HeadError::VersionNotSupported) => "version_not_supported",
            ProxyError::BadHead(HeadError::UnsupportedCoding) => "unsupported_transfer_coding",
            ProxyError::BadHead(HeadError::UnsupportedExpectation) => "expectation_failed",
            ProxyError::BadHead(HeadError::NotImplemented) => "not_implemented",
            ProxyError::BadHead(HeadError::Malformed(_)) => "bad_request",
            ProxyError::BadRequestBody(_) => "bad_request_body",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::HeaderTimeout => "request_timeout",
            ProxyError::ClientGone => "client_gone",
            ProxyError::ConnectFailed => "upstream_connect_failed",
            ProxyError::ConnectTimeout => "upstream_connect_timeout",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamClosed => "upstream_closed",
            ProxyError::BadResponse(_) => "upstream_bad_response",
            ProxyError::Forbidden => "forbidden",
            ProxyError::CorsRejected => "cors_rejected",
            ProxyError::Unauthorized(_) => "unauthorized",
            ProxyError::RateLimited => "rate_limited",
            ProxyError::UnsupportedMediaType => "unsupported_media_type",
            ProxyError::InvalidJson => "invalid_json",
            ProxyError::LengthRequired => "length_required",
            ProxyError::ForwardHeadersTooLarge => "forwarded_headers_too_large",
            ProxyError::CircuitOpen => "circuit_open",
            ProxyError::NotCached => "not_cached",
            ProxyError::Overloaded => "service_overloaded",
            ProxyError::NoHealthyUpstream => "no_healthy_upstream",
            ProxyError::LimitStoreUnavailable => "limit_store_unavailable",
            ProxyError::MisdirectedRequest => "misdirected_request",
            ProxyError::UpstreamTls => "upstream_tls_failed",
            ProxyError::TransformRefused => "transform_value_refused",
            ProxyError::TransformFailed => "transform_failed",
            ProxyError::ResponseTransformFailed => "upstream_transform_failed",
            ProxyError::Internal => "internal_error",
        }
    }

    /// Human text for the JSON body: general terms, never echoing request data.
    pub fn message(self) -> &'static str {
        match self {
            ProxyError::BadHead(h) => h.message(),
            ProxyError::BadRequestBody(c) => c.message(),
            ProxyError::BodyTooLarge => "request body too large",
            ProxyError::NoRoute => "no route matches this request",
            ProxyError::MethodNotAllowed => "method not allowed on this route",
            ProxyError::HeaderTimeout => "request head not received in time",
            ProxyError::ClientGone => "client stopped sending",
            ProxyError::ConnectFailed => "could not connect to the upstream service",
            ProxyError::ConnectTimeout => "timed out connecting to the upstream service",
            ProxyError::UpstreamTimeout => "the upstream service did not respond in time",
            ProxyError::UpstreamClosed => "the upstream service closed the connection",
            ProxyError::BadResponse(why) => why,
            ProxyError::Forbidden => "client address not allowed",
            ProxyError::CorsRejected => "CORS preflight rejected for this origin, method or headers",
            ProxyError::Unauthorized(why) => why,
            ProxyError::RateLimited => "rate limit exceeded",
            ProxyError::UnsupportedMediaType => "unsupported content type for this route",
            ProxyError::InvalidJson => "request body is not valid JSON",
            ProxyError::LengthRequired => "this route needs a Content-Length request body",
            ProxyError::ForwardHeadersTooLarge => "the identity claims of this request are too large to forward",
            ProxyError::CircuitOpen => "the service is failing; requests are refused until it recovers",
            ProxyError::NotCached => "only-if-cached was asked and no stored response answers the request",
            ProxyError::Overloaded => "the service has too many requests in flight",
            ProxyError::NoHealthyUpstream => "no endpoint of the service is healthy",
            ProxyError::LimitStoreUnavailable => "the rate-limit store is unavailable; try again later",
            ProxyError::MisdirectedRequest => "this connection's TLS server name does not serve the requested host",
            ProxyError::UpstreamTls => "the TLS handshake with the upstream service failed (its certificate was not accepted)",
            ProxyError::TransformRefused => "a value this route writes into a header holds control characters",
            ProxyError::TransformFailed => "the request body could not be transformed",
            ProxyError::ResponseTransformFailed => "the upstream response could not be transformed",
            ProxyError::Internal => "internal error",
        }
    }
}

//! ringgate: a thread-per-core HTTP/1.1 API gateway on monoio (io_uring, epoll fallback).
//! `proxy` is the request path; `runtime` runs shards; `http` is the codec; `config` reads TOML;
//! `observe` is metrics, the access log and the admin listener. Modules are public only where
//! the binary, benches, fuzz targets or integration tests use them.

mod cluster;
pub mod config;
mod cache;
mod ctx;
mod error;
pub mod http;
mod observe;
pub mod policy;
mod proxy;
pub mod router;
pub mod runtime;
pub mod stub;
mod tls;
mod upstream;

//! ringgate: a thread-per-core HTTP/1.1 API gateway on monoio (io_uring, epoll fallback).
//! `proxy` is the request path; `runtime` runs shards; `http` is the codec; `config` reads TOML.

pub mod config;
mod ctx;
pub mod error;
pub mod http;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod router;
pub mod runtime;
pub mod stub;
pub mod upstream;

//! Raw TOML shapes, exactly as written by users. Unknown keys are collected by
//! `serde_ignored` in `load` so that every one of them is reported, not just the first.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<Vec<String>>,
    pub workers: Option<i64>,
    pub pin_cores: Option<bool>,
    /// "auto", "io_uring" or "epoll".
    pub driver: Option<String>,
    pub uring_entries: Option<i64>,
    pub read_buffer: Option<String>,
    pub backlog: Option<i64>,
    /// Buffers each shard keeps for reuse; more are allocated under load and freed after.
    pub pooled_buffers: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_head: Option<String>,
    pub max_target: Option<String>,
    pub max_headers: Option<i64>,
    pub max_body: Option<String>,
    pub max_connections: Option<i64>,
    pub max_trailer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTimeouts {
    pub header: Option<String>,
    pub idle: Option<String>,
    pub body: Option<String>,
    pub drain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawUpstream {
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_idle_per_endpoint: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawService {
    pub name: Option<String>,
    pub upstreams: Option<Vec<String>>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRoute {
    pub name: Option<String>,
    pub paths: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub service: Option<String>,
    pub strip_prefix: Option<bool>,
    pub max_body: Option<String>,
}

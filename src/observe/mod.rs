//! Seeing a running gateway: shard-local metrics merged on scrape (`metrics`, `expose`), the
//! access log written off the shards (`log`), and the admin listener (`admin`).

pub mod admin;
pub mod expose;
pub mod log;
pub mod metrics;

//! Active health checks: one prober thread per endpoint of a service with `[services.health]`,
//! for the whole host (not one per shard). Each interval it sends `GET path` on a new connection
//! and reads the status line; `unhealthy_after` failures in a row take the endpoint out of the
//! balancing set, `healthy_after` successes bring it back. A prober ends when its service's
//! shared state is dropped (a reload replaced it and no generation uses it any more).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use rustls_pki_types::ServerName;

use super::shared::ServiceShared;
use crate::config::tls::UpstreamTls;
use crate::config::HealthConfig;

/// Starts the probers of `service`, if it has active checks.
pub fn start(service: &Arc<ServiceShared>) {
    let Some(h) = service.health.clone() else { return };
    for ep in 0..service.endpoints.len() {
        let weak = Arc::downgrade(service);
        let h = h.clone();
        let spawned = std::thread::Builder::new().name("ringgate-health".into()).spawn(move || loop {
            let Some(s) = weak.upgrade() else { return };
            let ok = probe(s.endpoints[ep].addr, &h, s.tls.as_ref());
            record(&s, ep, ok, &h);
            drop(s);
            std::thread::sleep(h.interval);
        });
        if let Err(e) = spawned {
            tracing::error!(service = %service.name, error = %e, "cannot start a health prober; the endpoint counts as healthy");
        }
    }
}

/// One check: connect (with TLS when the service speaks it), ask, and read the status line,
/// each step within `timeout`.
fn probe(addr: SocketAddr, h: &HealthConfig, tls: Option<&UpstreamTls>) -> bool {
    let Ok(s) = TcpStream::connect_timeout(&addr, h.timeout) else { return false };
    let _ = s.set_read_timeout(Some(h.timeout));
    let _ = s.set_write_timeout(Some(h.timeout));
    match tls {
        None => ask(s, addr, h),
        Some(t) => {
            let name = match &t.sni {
                Some(n) => match ServerName::try_from(n.clone()) {
                    Ok(n) => n,
                    Err(_) => return false,
                },
                None => ServerName::IpAddress(addr.ip().into()),
            };
            let Ok(conn) = rustls::ClientConnection::new(t.config.clone(), name) else { return false };
            ask(rustls::StreamOwned::new(conn, s), addr, h)
        }
    }
}

fn ask(mut s: impl Read + Write, addr: SocketAddr, h: &HealthConfig) -> bool {
    let req = format!("GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringgate-health\r\nConnection: close\r\n\r\n", h.path);
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => len += n,
        }
    }
    let line = &buf[..len];
    let code = line.get(9..12).and_then(|c| std::str::from_utf8(c).ok()).and_then(|c| c.parse::<u16>().ok());
    line.starts_with(b"HTTP/1.") && code.is_some_and(|c| h.expect.contains(&c))
}

fn record(s: &ServiceShared, ep: usize, ok: bool, h: &HealthConfig) {
    let e = &s.endpoints[ep];
    if ok == e.healthy.load(Acquire) {
        e.check_streak.store(0, Release);
        return;
    }
    let streak = e.check_streak.fetch_add(1, AcqRel) + 1;
    let needed = if ok { h.healthy_after } else { h.unhealthy_after };
    if streak >= needed {
        e.healthy.store(ok, Release);
        e.check_streak.store(0, Release);
        if ok {
            tracing::info!(service = %s.name, upstream = %e.addr, "endpoint healthy again; back in the balancing set");
        } else {
            tracing::warn!(service = %s.name, upstream = %e.addr, after = needed, "endpoint failed its health checks; out of the balancing set");
        }
    }
}

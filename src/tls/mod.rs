//! TLS termination with rustls (ring provider): certificate selection by SNI, ALPN, TLS 1.2/1.3,
//! session resumption shared by every shard of the host (one `ServerConfig`, so one ticket key
//! set rotated by rustls and one session cache, carried over reloads), optional or required
//! client certificates. No 0-RTT. The handshake runs on the connection's shard; what it learnt
//! (SNI name, version, the client certificate's identity) rides with the connection in
//! [`TlsInfo`].

mod stream;

use std::sync::Arc;

use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

pub use stream::TlsConn;

use crate::config::tls::{MinVersion, Tls, UnknownSni};

/// What a connection's handshake settled.
#[derive(Debug, Default, Clone)]
pub struct TlsInfo {
    /// The SNI name the client sent (lower-case), if any.
    pub sni: Option<Box<str>>,
    pub version: &'static str,
    pub resumed: bool,
    /// The verified client certificate, when the client sent one.
    pub client: Option<Box<ClientIdentity>>,
}

/// Names from a verified client certificate.
#[derive(Debug, Default, Clone)]
pub struct ClientIdentity {
    /// The subject, RFC 4514 text.
    pub subject: String,
    pub common_name: Option<String>,
    pub san_dns: Vec<String>,
    pub san_uri: Vec<String>,
}

impl ClientIdentity {
    /// From the leaf certificate's DER (already verified by rustls).
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = x.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
        let mut id = ClientIdentity { subject: x.subject().to_string(), common_name, ..ClientIdentity::default() };
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => id.san_dns.push(d.to_string()),
                    x509_parser::extensions::GeneralName::URI(u) => id.san_uri.push(u.to_string()),
                    _ => {}
                }
            }
        }
        Some(id)
    }
}

/// Picks the certificate for a ClientHello: the exact SNI name, then a wildcard one label up,
/// then (unless `unknown_sni = "refuse"`) the first certificate. A client that sends no name
/// (one that connects by address) gets the first certificate.
#[derive(Debug)]
struct SniResolver {
    /// (host, certificate), exact names and `*.suffix` wildcards, in config order.
    hosts: Vec<(String, Arc<CertifiedKey>)>,
    first: Option<Arc<CertifiedKey>>,
    /// For names no certificate covers: the first certificate, or none (refuse).
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else { return self.first.clone() };
        let name = name.to_ascii_lowercase();
        if let Some((_, k)) = self.hosts.iter().find(|(h, _)| *h == name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            let wildcard = format!("*.{parent}");
            if let Some((_, k)) = self.hosts.iter().find(|(h, _)| *h == wildcard) {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// What survives a reload: resumption keys and the session cache.
#[derive(Clone)]
pub struct Resumption {
    pub ticketer: Arc<dyn ProducesTickets>,
    pub cache: Arc<dyn StoresServerSessions + Send + Sync>,
    pub cache_size: usize,
}

impl Resumption {
    pub fn new(cache_size: usize) -> Result<Resumption, String> {
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("cannot make session ticket keys: {e}"))?;
        let cache: Arc<dyn StoresServerSessions + Send + Sync> = if cache_size == 0 {
            Arc::new(rustls::server::NoServerSessionStorage {})
        } else {
            rustls::server::ServerSessionMemoryCache::new(cache_size)
        };
        Ok(Resumption { ticketer, cache, cache_size })
    }
}

/// The host's rustls config for `tls`, resuming sessions with `resumption`.
pub fn server_config(tls: &Tls, resumption: &Resumption) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions).map_err(|e| e.to_string())?;
    let builder = match &tls.client_auth {
        Some(ca) => {
            let v = WebPkiClientVerifier::builder_with_provider(ca.roots.clone(), provider);
            let v = if ca.required { v } else { v.allow_unauthenticated() };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut hosts = Vec::new();
    for c in &tls.certs {
        for h in &c.hosts {
            hosts.push((h.clone(), c.key.clone()));
        }
    }
    let default = match tls.unknown_sni {
        UnknownSni::Default => tls.certs.first().map(|c| c.key.clone()),
        UnknownSni::Refuse => None,
    };
    let first = tls.certs.first().map(|c| c.key.clone());
    let mut cfg = builder.with_cert_resolver(Arc::new(SniResolver { hosts, first, default }));
    cfg.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    cfg.session_storage = resumption.cache.clone();
    cfg.ticketer = resumption.ticketer.clone();
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let key = |n: &str| {
            let ck = rcgen::generate_simple_self_signed(vec![n.to_string()]).unwrap();
            let der = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
            let signing = rustls::crypto::ring::default_provider().key_provider.load_private_key(der).unwrap();
            Arc::new(CertifiedKey::new(vec![ck.cert.der().clone()], signing))
        };
        let (api, wild, first) = (key("api.example.com"), key("*.example.com"), key("default.test"));
        let r = SniResolver {
            hosts: vec![("default.test".into(), first.clone()), ("api.example.com".into(), api.clone()), ("*.example.com".into(), wild.clone())],
            first: Some(first.clone()),
            default: Some(first.clone()),
        };
        let same = |a: Option<Arc<CertifiedKey>>, b: &Arc<CertifiedKey>| a.is_some_and(|a| Arc::ptr_eq(&a, b));
        assert!(same(r.pick(Some("api.example.com")), &api));
        assert!(same(r.pick(Some("API.Example.COM")), &api));
        assert!(same(r.pick(Some("shop.example.com")), &wild));
        assert!(same(r.pick(Some("a.b.example.com")), &first), "a wildcard covers one label");
        assert!(same(r.pick(Some("example.com")), &first));
        assert!(same(r.pick(None), &first));
        let strict = SniResolver { default: None, ..r };
        assert!(strict.pick(Some("other.test")).is_none());
        assert!(same(strict.pick(None), &first), "no name at all: the first certificate");
    }
}

//! `[tls]`: TLS termination. Every certificate and key is read, parsed and checked here, once,
//! at config load: a key that does not match its certificate, a certificate outside its
//! validity, a chain whose certificates do not follow one another, an unreadable file or a
//! certificate with no hosts are errors with their key path; one expiring within 14 days is a
//! warning.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::Checker;

/// Sessions each host keeps for resumption by session id (TLS 1.2) unless configured otherwise.
pub const DEFAULT_SESSION_CACHE: usize = 20_000;
/// Certificates expiring within this many days are reported by `check`.
const EXPIRY_WARNING_DAYS: i64 = 14;

#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub listen: Option<Vec<String>>,
    pub min_version: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub unknown_sni: Option<String>,
    pub strict_sni_host: Option<bool>,
    pub session_cache: Option<i64>,
    pub certs: Option<Vec<RawCert>>,
    pub client_auth: Option<RawClientAuth>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCert {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawClientAuth {
    pub ca_file: Option<String>,
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

/// A name no certificate covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// Served with the first certificate.
    Default,
    /// The handshake is refused.
    Refuse,
}

/// One certificate chain with its key, and the names it serves.
#[derive(Debug, Clone)]
pub struct TlsCert {
    /// Lower-case; `*.example.com` covers one label under example.com.
    pub hosts: Vec<String>,
    pub key: Arc<CertifiedKey>,
    pub cert_file: PathBuf,
    /// The leaf's notAfter, unix seconds.
    pub not_after: i64,
}

#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub roots: Arc<rustls::RootCertStore>,
    pub required: bool,
    pub ca_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: Vec<SocketAddr>,
    pub min_version: MinVersion,
    pub alpn: Vec<String>,
    pub unknown_sni: UnknownSni,
    pub strict_sni_host: bool,
    pub session_cache: usize,
    pub certs: Vec<TlsCert>,
    pub client_auth: Option<ClientAuth>,
}


fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The certificates of a PEM file, reported at `key` when it cannot be read or holds none
/// (`what` says what it should hold).
fn read_certs(c: &mut Checker, key: &str, path: &Path, what: &str) -> Option<Vec<CertificateDer<'static>>> {
    match CertificateDer::pem_file_iter(path).map(|i| i.collect::<Result<Vec<_>, _>>()) {
        Ok(Ok(v)) if !v.is_empty() => Some(v),
        Ok(Ok(_)) => {
            c.err(key, format!("{} holds no certificate", path.display()), format!("give a PEM file with {what}"));
            None
        }
        Ok(Err(e)) | Err(e) => {
            c.err(key, format!("cannot read {}: {e}", path.display()), format!("give a readable PEM file with {what}"));
            None
        }
    }
}

/// A root store of the CA certificates in `path`, reported at `key`.
fn read_roots(c: &mut Checker, key: &str, path: &Path, what: &str) -> Option<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(c, key, path, what)? {
        if let Err(e) = roots.add(cert) {
            c.err(key, format!("unusable CA certificate in {}: {e}", path.display()), "give CA certificates");
            return None;
        }
    }
    Some(roots)
}

pub(crate) fn settings(c: &mut Checker, raw: Option<&RawTls>, base: &Path, warnings: &mut Vec<String>, public: &[SocketAddr]) -> Option<Tls> {
    let raw = raw?;
    let mut listen = Vec::new();
    match &raw.listen {
        None => c.err("tls.listen", "missing", "add listen = [\"0.0.0.0:8443\"]"),
        Some(list) if list.is_empty() => c.err("tls.listen", "no address", "add listen = [\"0.0.0.0:8443\"]"),
        Some(list) => {
            for (i, a) in list.iter().enumerate() {
                match a.parse::<SocketAddr>() {
                    Ok(addr) if public.contains(&addr) && addr.port() != 0 => c.err(
                        format!("tls.listen[{i}]"),
                        format!("{a} is also a plain HTTP listener (server.listen)"),
                        "give TLS its own address, e.g. \"0.0.0.0:8443\"",
                    ),
                    Ok(addr) => listen.push(addr),
                    Err(_) => c.err(format!("tls.listen[{i}]"), format!("`{a}` is not an IP:port address"), "write it like \"0.0.0.0:8443\""),
                }
            }
        }
    }
    let min_version = match raw.min_version.as_deref() {
        None | Some("1.2") => MinVersion::Tls12,
        Some("1.3") => MinVersion::Tls13,
        Some(v) => {
            c.err("tls.min_version", format!("unknown version `{v}`"), "use \"1.2\" or \"1.3\" (older versions are not offered)");
            MinVersion::Tls12
        }
    };
    let alpn = raw.alpn.clone().unwrap_or_else(|| vec!["http/1.1".to_string()]);
    for (i, p) in alpn.iter().enumerate() {
        if p != "http/1.1" {
            c.err(format!("tls.alpn[{i}]"), format!("`{p}` is not served"), "use [\"http/1.1\"] (h2 comes with HTTP/2)");
        }
    }
    let unknown_sni = match raw.unknown_sni.as_deref() {
        None | Some("default") => UnknownSni::Default,
        Some("refuse") => UnknownSni::Refuse,
        Some(v) => {
            c.err("tls.unknown_sni", format!("unknown value `{v}`"), "use \"default\" or \"refuse\"");
            UnknownSni::Default
        }
    };
    let session_cache = c.int("tls.session_cache", raw.session_cache, DEFAULT_SESSION_CACHE as i64, 0, 10_000_000) as usize;
    let mut certs = Vec::new();
    match &raw.certs {
        None => c.err("tls.certs", "no certificate", "add a [[tls.certs]] table with cert_file, key_file and hosts"),
        Some(list) if list.is_empty() => c.err("tls.certs", "no certificate", "add a [[tls.certs]] table with cert_file, key_file and hosts"),
        Some(list) => {
            for (i, rc) in list.iter().enumerate() {
                if let Some(cert) = cert(c, i, rc, base, warnings) {
                    certs.push(cert);
                }
            }
        }
    }
    for (i, cert) in certs.iter().enumerate() {
        for h in &cert.hosts {
            if certs[..i].iter().any(|o| o.hosts.contains(h)) {
                c.err(format!("tls.certs[{i}].hosts"), format!("`{h}` is served by an earlier certificate too"), "give each host to one certificate");
            }
        }
    }
    let client_auth = raw.client_auth.as_ref().and_then(|ca| client_auth(c, ca, base));
    Some(Tls { listen, min_version, alpn, unknown_sni, strict_sni_host: raw.strict_sni_host.unwrap_or(false), session_cache, certs, client_auth })
}

fn cert(c: &mut Checker, i: usize, rc: &RawCert, base: &Path, warnings: &mut Vec<String>) -> Option<TlsCert> {
    let p = format!("tls.certs[{i}]");
    let hosts: Vec<String> = rc.hosts.clone().unwrap_or_default().iter().map(|h| h.to_ascii_lowercase()).collect();
    if hosts.is_empty() {
        c.err(format!("{p}.hosts"), "no host", "list the names it serves, e.g. hosts = [\"api.example.com\", \"*.example.com\"]");
    }
    for (j, h) in hosts.iter().enumerate() {
        let name = h.strip_prefix("*.").unwrap_or(h);
        if name.is_empty() || name.contains('*') || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            c.err(format!("{p}.hosts[{j}]"), format!("`{h}` is not a host name"), "use a name like \"api.example.com\" or one wildcard label, \"*.example.com\"");
        }
    }
    let (Some(cert_file), Some(key_file)) = (&rc.cert_file, &rc.key_file) else {
        c.err(p, "needs cert_file and key_file", "add cert_file = \"certs/api.pem\" and key_file = \"certs/api.key\"");
        return None;
    };
    let (cert_path, key_path) = (base.join(cert_file), base.join(key_file));
    let chain = read_certs(c, &format!("{p}.cert_file"), &cert_path, "the chain, leaf first")?;
    let key = match PrivateKeyDer::from_pem_file(&key_path) {
        Ok(k) => k,
        Err(e) => {
            c.err(format!("{p}.key_file"), format!("cannot read a private key from {}: {e}", key_path.display()), "give a PEM key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC)");
            return None;
        }
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing = match provider.key_provider.load_private_key(key) {
        Ok(k) => k,
        Err(e) => {
            c.err(format!("{p}.key_file"), format!("unusable key in {}: {e}", key_path.display()), "use an RSA (2048+), ECDSA P-256/P-384 or Ed25519 key");
            return None;
        }
    };
    let certified = CertifiedKey::new(chain.clone(), signing);
    if let Err(e) = certified.keys_match() {
        c.err(format!("{p}.key_file"), format!("{} is not the key of the certificate in {}: {e}", key_path.display(), cert_path.display()), "pair each certificate with its own key");
        return None;
    }
    // Validity of every certificate in the chain, and that each is issued by the next.
    let now = unix_now();
    let mut not_after = i64::MAX;
    let mut parsed = Vec::new();
    for (k, der) in chain.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, x)) => parsed.push(x),
            Err(e) => {
                c.err(format!("{p}.cert_file"), format!("certificate {k} in {} does not parse: {e}", cert_path.display()), "give PEM certificates");
                return None;
            }
        }
    }
    for (k, x) in parsed.iter().enumerate() {
        let (nb, na) = (x.validity().not_before.timestamp(), x.validity().not_after.timestamp());
        let which = if k == 0 { "the certificate".to_string() } else { format!("chain certificate {k}") };
        if now < nb {
            c.err(format!("{p}.cert_file"), format!("{which} in {} is not valid before {}", cert_path.display(), x.validity().not_before), "use a certificate valid now");
        }
        if now > na {
            c.err(format!("{p}.cert_file"), format!("{which} in {} expired on {}", cert_path.display(), x.validity().not_after), "renew it");
        } else if na - now < EXPIRY_WARNING_DAYS * 86_400 {
            warnings.push(format!("{p}.cert_file: {which} in {} expires on {} (within {EXPIRY_WARNING_DAYS} days)", cert_path.display(), x.validity().not_after));
        }
        not_after = not_after.min(na);
        if let Some(next) = parsed.get(k + 1) {
            let linked = x.issuer() == next.subject() && x.verify_signature(Some(next.public_key())).is_ok();
            if !linked {
                c.err(
                    format!("{p}.cert_file"),
                    format!("certificate {k} in {} is not issued by certificate {} after it", cert_path.display(), k + 1),
                    "put the chain in order: leaf first, then each issuer",
                );
            }
        }
    }
    Some(TlsCert { hosts, key: Arc::new(certified), cert_file: cert_path, not_after })
}

fn client_auth(c: &mut Checker, raw: &RawClientAuth, base: &Path) -> Option<ClientAuth> {
    let required = match raw.mode.as_deref() {
        None | Some("optional") => false,
        Some("required") => true,
        Some(m) => {
            c.err("tls.client_auth.mode", format!("unknown mode `{m}`"), "use \"optional\" or \"required\"");
            false
        }
    };
    let Some(ca) = &raw.ca_file else {
        c.err("tls.client_auth.ca_file", "missing", "add ca_file = \"certs/clients-ca.pem\" (the CA that issues client certificates)");
        return None;
    };
    let path = base.join(ca);
    let roots = read_roots(c, "tls.client_auth.ca_file", &path, "the certificate of the client CA")?;
    Some(ClientAuth { roots: Arc::new(roots), required, ca_file: path })
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMtls {
    pub name: Option<String>,
    pub consumer_from: Option<String>,
    pub forward_subject: Option<String>,
}

/// Which name of a client certificate becomes the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerFrom {
    /// The first DNS name in the subject alternative names.
    SanDns,
    SubjectCn,
    /// The first URI in the subject alternative names (e.g. a SPIFFE ID).
    SanUri,
}

/// An auth provider that admits a request by its connection's verified client certificate.
#[derive(Debug, Clone)]
pub struct MtlsProvider {
    pub name: String,
    pub consumer_from: ConsumerFrom,
    /// A header that carries the certificate's subject to the upstream (client copies removed).
    pub forward_subject: Option<String>,
}

pub(crate) fn mtls(c: &mut Checker, i: usize, raw: &RawMtls, has_client_auth: bool) -> Option<MtlsProvider> {
    let p = format!("mtls[{i}]");
    let Some(name) = raw.name.clone().filter(|n| !n.is_empty()) else {
        c.err(format!("{p}.name"), "missing", "add name = \"partners-mtls\" (routes name it in auth)");
        return None;
    };
    if !has_client_auth {
        c.err(p.clone(), "client certificates are not asked for", "add [tls.client_auth] with the ca_file of the client CA");
    }
    let consumer_from = match raw.consumer_from.as_deref() {
        None | Some("san_dns") => ConsumerFrom::SanDns,
        Some("subject_cn") => ConsumerFrom::SubjectCn,
        Some("san_uri") => ConsumerFrom::SanUri,
        Some(v) => {
            c.err(format!("{p}.consumer_from"), format!("unknown source `{v}`"), "use \"san_dns\", \"subject_cn\" or \"san_uri\"");
            ConsumerFrom::SanDns
        }
    };
    if let Some(h) = &raw.forward_subject {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            c.err(format!("{p}.forward_subject"), format!("`{h}` is not a header name"), "use e.g. \"X-Client-Subject\"");
        }
    }
    Some(MtlsProvider { name, consumer_from, forward_subject: raw.forward_subject.clone() })
}

#[derive(Debug, Default, Deserialize)]
pub struct RawUpstreamTls {
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    pub verify: Option<bool>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// TLS to a service's upstreams: verified against `ca_file` (or the Mozilla roots) by default.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified; None: each endpoint's address.
    pub sni: Option<String>,
    pub config: Arc<rustls::ClientConfig>,
    pub verify: bool,
    pub ca_file: Option<PathBuf>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, o: &Self) -> bool {
        self.sni == o.sni && self.verify == o.verify && self.ca_file == o.ca_file && Arc::ptr_eq(&self.config, &o.config)
    }
}

/// Accepts any certificate: `verify = false`, for upstreams with self-made certificates on a
/// trusted network. Signatures are still checked, so the session keys are the server's.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) fn upstream(c: &mut Checker, p: &str, raw: &RawUpstreamTls, base: &Path) -> Option<UpstreamTls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verify = raw.verify.unwrap_or(true);
    let ca_file = raw.ca_file.as_ref().map(|f| base.join(f));
    let roots = match &ca_file {
        Some(path) => read_roots(c, &format!("{p}.tls.ca_file"), path, "the certificate of the upstreams' CA").unwrap_or_else(rustls::RootCertStore::empty),
        None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let builder = match rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions() {
        Ok(b) => b,
        Err(e) => {
            c.err(format!("{p}.tls"), e.to_string(), "report this");
            return None;
        }
    };
    let builder = if verify {
        builder.with_root_certificates(roots)
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    let config = match (&raw.cert_file, &raw.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cf), Some(kf)) => {
            let chain = read_certs(c, &format!("{p}.tls.cert_file"), &base.join(cf), "the client certificate's chain, leaf first")?;
            let key = match PrivateKeyDer::from_pem_file(base.join(kf)) {
                Ok(k) => k,
                Err(e) => {
                    c.err(format!("{p}.tls.key_file"), format!("cannot read a private key from {}: {e}", base.join(kf).display()), "give a PEM key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC)");
                    return None;
                }
            };
            match builder.with_client_auth_cert(chain, key) {
                Ok(cfg) => cfg,
                Err(e) => {
                    c.err(format!("{p}.tls.key_file"), format!("unusable client certificate or key: {e}"), "pair the certificate with its own key");
                    return None;
                }
            }
        }
        _ => {
            c.err(format!("{p}.tls"), "cert_file and key_file go together", "give both, or neither");
            return None;
        }
    };
    if let Some(sni) = &raw.sni {
        if rustls_pki_types::ServerName::try_from(sni.as_str()).is_err() {
            c.err(format!("{p}.tls.sni"), format!("`{sni}` is not a server name"), "use the name the upstream's certificate carries, e.g. \"billing.internal\"");
        }
    }
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(UpstreamTls { sni: raw.sni.clone(), config: Arc::new(config), verify, ca_file })
}

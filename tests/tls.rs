//! TLS termination with a real rustls client over loopback: SNI selection (exact, wildcard,
//! default, refused), ALPN, TLS 1.2 and 1.3, resumption across shards, plain HTTP on the TLS
//! port, X-Forwarded-Proto, strict SNI/Host, client certificates, certificate reload, and the
//! config checks of certificates. Certificates are made by the tests (rcgen), never stored.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedKey, IsCa, KeyPair};
use ringgate::config::Config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use common::{Gw, Upstream};

/// A CA and leaf certificates it signs, written as PEM files in a directory of the test's own.
struct Pki {
    dir: PathBuf,
    ca: CertifiedKey,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ringgate-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("ringgate test CA {tag}"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pki = Pki { dir, ca: CertifiedKey { cert, key_pair: key } };
        std::fs::write(pki.path("ca.pem"), pki.ca.cert.pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A leaf for `names`, signed by the CA; `edit` may change its params. Returns its DER.
    fn leaf(&self, file: &str, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names.first().copied().unwrap_or("client"));
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca.cert, &self.ca.key_pair).unwrap();
        std::fs::write(self.path(&format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{file}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    fn client_identity(&self, file: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        use rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_file_iter(self.path(&format!("{file}.pem"))).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(self.path(&format!("{file}.key"))).unwrap();
        (chain, key)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accepts any server certificate and records it: the tests check which one was presented.
#[derive(Debug, Default)]
struct Recorder(Mutex<Option<CertificateDer<'static>>>);

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(&self, end: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

struct ClientOpts {
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    alpn: Vec<Vec<u8>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts { versions: vec![&rustls::version::TLS13, &rustls::version::TLS12], alpn: vec![b"http/1.1".to_vec()], identity: None }
    }
}

fn client_config(opts: ClientOpts, recorder: Arc<Recorder>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider).with_protocol_versions(&opts.versions).unwrap().dangerous().with_custom_certificate_verifier(recorder);
    let mut cfg = match opts.identity {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = opts.alpn;
    Arc::new(cfg)
}

/// What one HTTPS request saw.
struct Seen {
    status: u16,
    head: String,
    body: String,
    cert: Option<CertificateDer<'static>>,
    version: Option<rustls::ProtocolVersion>,
    alpn: Option<Vec<u8>>,
    resumed: bool,
}

/// One request over a new TLS connection; `Err` with the handshake or I/O error.
fn https(addr: SocketAddr, sni: &str, host: &str, cfg: &Arc<ClientConfig>, recorder: &Recorder) -> Result<Seen, String> {
    https_with(addr, sni, host, "", cfg, recorder)
}

/// `https` with extra request header lines (each ending in CRLF).
fn https_with(addr: SocketAddr, sni: &str, host: &str, extra: &str, cfg: &Arc<ClientConfig>, recorder: &Recorder) -> Result<Seen, String> {
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("GET /api/x HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Proto: gopher\r\n{extra}Connection: close\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no response: {text:?}"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Seen {
        status,
        head: head.to_string(),
        body: body.to_string(),
        cert: recorder.0.lock().unwrap().take(),
        version: tls.conn.protocol_version(),
        alpn: tls.conn.alpn_protocol().map(<[u8]>::to_vec),
        resumed: tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    })
}

fn config(up: SocketAddr, workers: usize, tls: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = {workers}\npin_cores = false\n\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{up}\"]\n\n\
         [[routes]]\nname = \"api\"\npaths = [\"/api\"]\nservice = \"svc\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{tls}"
    )
}

fn certs_toml(pki: &Pki) -> String {
    let p = |f: &str| pki.path(f).display().to_string();
    format!(
        "[[tls.certs]]\ncert_file = \"{}\"\nkey_file = \"{}\"\nhosts = [\"default.test\"]\n\n\
         [[tls.certs]]\ncert_file = \"{}\"\nkey_file = \"{}\"\nhosts = [\"api.example.test\"]\n\n\
         [[tls.certs]]\ncert_file = \"{}\"\nkey_file = \"{}\"\nhosts = [\"*.example.test\"]\n",
        p("default.pem"), p("default.key"), p("api.pem"), p("api.key"), p("wild.pem"), p("wild.key")
    )
}

fn start(pki: &Pki, workers: usize, extra_tls: &str) -> (Gw, Upstream, SocketAddr) {
    let up = Upstream::ok(b"hello");
    let toml = config(up.addr, workers, &format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{extra_tls}\n{}", certs_toml(pki)));
    let cfg = Config::parse(&toml).unwrap_or_else(|e| panic!("{e}"));
    let gw = Gw::start_config(cfg);
    let addr = gw.gateway().tls_addrs[0];
    (gw, up, addr)
}

fn metrics(gw: &Gw) -> String {
    common::get(gw.gateway().admin_addr.expect("admin listener"), "/metrics").body_str()
}

fn three_leaves(pki: &Pki) -> [CertificateDer<'static>; 3] {
    [
        pki.leaf("default", &["default.test"], |_| {}),
        pki.leaf("api", &["api.example.test"], |_| {}),
        pki.leaf("wild", &["*.example.test"], |_| {}),
    ]
}

#[test]
fn sni_selects_exact_then_wildcard_then_default_and_alpn_and_versions() {
    let pki = Pki::new("sni");
    let [default, api, wild] = three_leaves(&pki);
    let (gw, up, addr) = start(&pki, 1, "");
    let rec = Arc::new(Recorder::default());
    let cfg = client_config(ClientOpts { alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()], ..ClientOpts::default() }, rec.clone());
    for (sni, want) in [("api.example.test", &api), ("shop.example.test", &wild), ("other.test", &default), ("deep.shop.example.test", &default)] {
        let seen = https(addr, sni, sni, &cfg, &rec).unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(seen.status, 200, "{sni}: {}", seen.head);
        assert_eq!(seen.body, "hello");
        assert_eq!(seen.cert.as_ref(), Some(want), "{sni} got the wrong certificate");
        assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN picks http/1.1 over h2");
    }
    // The upstream saw https, the client's own X-Forwarded-Proto replaced.
    let got = up.requests();
    assert!(got.iter().all(|r| r.headers("x-forwarded-proto") == ["https"]), "{:?}", got.iter().map(|r| r.headers("x-forwarded-proto")).collect::<Vec<_>>());
    for (version, want) in [(&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2), (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3)] {
        let cfg = client_config(ClientOpts { versions: vec![version], ..ClientOpts::default() }, rec.clone());
        let seen = https(addr, "api.example.test", "api.example.test", &cfg, &rec).unwrap();
        assert_eq!((seen.status, seen.version), (200, Some(want)));
    }
    let metrics = metrics(&gw);
    assert!(metrics.contains("ringgate_tls_handshakes_total{result=\"full\",version=\"1.3\"}"), "{metrics}");
    assert!(metrics.contains("ringgate_tls_handshakes_total{result=\"full\",version=\"1.2\"} 1"), "{metrics}");
    assert!(metrics.contains("ringgate_tls_certificate_expiry_timestamp_seconds{cert="), "{metrics}");
}

#[test]
fn tls_1_3_only_refuses_a_1_2_client_and_unknown_sni_can_be_refused() {
    let pki = Pki::new("strict");
    three_leaves(&pki);
    let (_gw, _up, addr) = start(&pki, 1, "min_version = \"1.3\"\nunknown_sni = \"refuse\"\nstrict_sni_host = true\n");
    let rec = Arc::new(Recorder::default());
    let tls12 = client_config(ClientOpts { versions: vec![&rustls::version::TLS12], ..ClientOpts::default() }, rec.clone());
    assert!(https(addr, "api.example.test", "api.example.test", &tls12, &rec).is_err());
    let cfg = client_config(ClientOpts::default(), rec.clone());
    assert!(https(addr, "nobody.test", "nobody.test", &cfg, &rec).is_err(), "a name no certificate covers is refused");
    assert_eq!(https(addr, "api.example.test", "api.example.test", &cfg, &rec).unwrap().status, 200);
    // strict_sni_host: a Host the SNI name does not name is misdirected.
    let seen = https(addr, "api.example.test", "shop.example.test", &cfg, &rec).unwrap();
    assert_eq!(seen.status, 421, "{}", seen.head);
    assert!(seen.body.contains("\"code\":\"misdirected_request\""), "{}", seen.body);
    assert_eq!(https(addr, "api.example.test", "api.example.test:443", &cfg, &rec).unwrap().status, 200, "a port in Host is fine");
}

#[test]
fn sessions_resume_across_shards() {
    let pki = Pki::new("resume");
    three_leaves(&pki);
    let (gw, _up, addr) = start(&pki, 2, "");
    let rec = Arc::new(Recorder::default());
    for versions in [vec![&rustls::version::TLS13], vec![&rustls::version::TLS12]] {
        // One client config: its session store carries tickets (1.3) or session ids (1.2).
        let cfg = client_config(ClientOpts { versions, ..ClientOpts::default() }, rec.clone());
        let first = https(addr, "api.example.test", "api.example.test", &cfg, &rec).unwrap();
        assert!(!first.resumed);
        // New connections land on either shard (SO_REUSEPORT); every one resumes.
        for i in 0..8 {
            let seen = https(addr, "api.example.test", "api.example.test", &cfg, &rec).unwrap();
            assert!(seen.resumed, "connection {i} did a full handshake ({:?})", seen.version);
            assert_eq!(seen.status, 200);
        }
    }
    let metrics = metrics(&gw);
    assert!(metrics.contains("result=\"resumed\""), "{metrics}");
}

#[test]
fn plain_http_on_the_tls_port_gets_a_clear_400() {
    let pki = Pki::new("plain");
    three_leaves(&pki);
    let (_gw, _up, addr) = start(&pki, 1, "");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(out.contains("\"code\":\"plain_http_on_tls_port\""), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
}

#[test]
fn client_certificates_optional_and_required() {
    let pki = Pki::new("mtls");
    three_leaves(&pki);
    pki.leaf("client", &["partner.example"], |_| {});
    let other = Pki::new("mtls-other");
    other.leaf("stranger", &["stranger.example"], |_| {});
    let ca = pki.path("ca.pem").display().to_string();
    let rec = Arc::new(Recorder::default());
    let with = |p: &Pki, f: &str| client_config(ClientOpts { identity: Some(p.client_identity(f)), ..ClientOpts::default() }, rec.clone());
    let without = client_config(ClientOpts::default(), rec.clone());

    let (_gw, _up, addr) = start(&pki, 1, &format!("[tls.client_auth]\nca_file = \"{ca}\"\nmode = \"required\"\n"));
    assert!(https(addr, "api.example.test", "api.example.test", &without, &rec).is_err(), "required: no certificate, no connection");
    assert!(https(addr, "api.example.test", "api.example.test", &with(&other, "stranger"), &rec).is_err(), "another CA's certificate is refused");
    assert_eq!(https(addr, "api.example.test", "api.example.test", &with(&pki, "client"), &rec).unwrap().status, 200);

    let (_gw2, _up2, addr2) = start(&pki, 1, &format!("[tls.client_auth]\nca_file = \"{ca}\"\nmode = \"optional\"\n"));
    assert_eq!(https(addr2, "api.example.test", "api.example.test", &without, &rec).unwrap().status, 200, "optional: none is fine");
    assert_eq!(https(addr2, "api.example.test", "api.example.test", &with(&pki, "client"), &rec).unwrap().status, 200);
    assert!(https(addr2, "api.example.test", "api.example.test", &with(&other, "stranger"), &rec).is_err(), "optional, but a bad one is still refused");
}

#[test]
fn a_client_certificate_names_the_consumer_for_limits_and_the_upstream() {
    let pki = Pki::new("consumer");
    three_leaves(&pki);
    pki.leaf("alice", &["alice.partners.test"], |_| {});
    pki.leaf("bob", &["bob.partners.test"], |_| {});
    pki.leaf("nameless", &[], |p| p.distinguished_name.push(rcgen::DnType::CommonName, "nameless"));
    let ca = pki.path("ca.pem").display().to_string();
    let up = Upstream::ok(b"hello");
    let extra = format!(
        "[[mtls]]\nname = \"partners\"\nconsumer_from = \"san_dns\"\nforward_subject = \"X-Client-Subject\"\n\n\
         [[rate_limits]]\nname = \"per-partner\"\nrequests = 2\nwindow = \"1h\"\nkey = \"consumer\"\n\n\
         [[routes]]\nname = \"partners\"\npaths = [\"/api/x\"]\nservice = \"svc\"\nauth = [\"partners\"]\nrate_limits = [\"per-partner\"]\n\n\
         [tls]\nlisten = [\"127.0.0.1:0\"]\n{}\n[tls.client_auth]\nca_file = \"{ca}\"\nmode = \"optional\"\n",
        certs_toml(&pki)
    );
    let gw = Gw::start_config(Config::parse(&config(up.addr, 2, &extra)).unwrap_or_else(|e| panic!("{e}")));
    let addr = gw.gateway().tls_addrs[0];
    let rec = Arc::new(Recorder::default());
    let as_ = |who: &str| client_config(ClientOpts { identity: Some(pki.client_identity(who)), ..ClientOpts::default() }, rec.clone());
    let (alice, bob) = (as_("alice"), as_("bob"));
    let forged = "X-Client-Subject: CN=admin\r\n";
    let statuses: Vec<u16> =
        (0..3).map(|_| https_with(addr, "api.example.test", "api.example.test", forged, &alice, &rec).unwrap().status).collect();
    assert_eq!(statuses, [200, 200, 429], "alice's certificate is her consumer, limited to 2");
    assert_eq!(https(addr, "api.example.test", "api.example.test", &bob, &rec).unwrap().status, 200, "bob has his own bucket");
    let seen = https(addr, "api.example.test", "api.example.test", &client_config(ClientOpts::default(), rec.clone()), &rec).unwrap();
    assert_eq!(seen.status, 401, "no certificate: {}", seen.head);
    assert!(seen.head.contains("WWW-Authenticate: ClientCertificate realm=\"partners\""), "{}", seen.head);
    assert_eq!(https(addr, "api.example.test", "api.example.test", &as_("nameless"), &rec).unwrap().status, 401, "no DNS name to name a consumer");
    let subjects: Vec<Vec<String>> = up.requests().iter().map(|r| r.headers("x-client-subject")).collect();
    assert_eq!(subjects.len(), 3);
    assert!(subjects.iter().all(|s| s.len() == 1 && s[0].contains("CN=") && !s[0].contains("admin")), "{subjects:?}");
    assert!(subjects[0][0].contains("alice.partners.test") && subjects[2][0].contains("bob.partners.test"), "{subjects:?}");
}

#[test]
fn a_reload_swaps_the_certificate_for_new_handshakes_and_keeps_connections() {
    let pki = Pki::new("reload");
    let [_, api, _] = three_leaves(&pki);
    let up = Upstream::ok(b"hello");
    let toml = config(up.addr, 1, &format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{}", certs_toml(&pki)));
    let gw = Gw::start_config(Config::parse(&toml).unwrap());
    let addr = gw.gateway().tls_addrs[0];
    let rec = Arc::new(Recorder::default());
    let cfg = client_config(ClientOpts::default(), rec.clone());
    // A kept-alive connection opened before the reload.
    let name = ServerName::try_from("api.example.test").unwrap();
    let mut kept = rustls::StreamOwned::new(rustls::ClientConnection::new(cfg.clone(), name).unwrap(), TcpStream::connect(addr).unwrap());
    kept.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // One whole response (head and Content-Length body), however the records arrive.
    let ask = |s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        s.write_all(b"GET /api/k HTTP/1.1\r\nHost: api.example.test\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
                if body.len() >= len.unwrap_or(0) {
                    return text;
                }
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return text,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let answer = ask(&mut kept);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(https(addr, "api.example.test", "api.example.test", &cfg, &rec).unwrap().cert.as_ref(), Some(&api));

    // New files for api.example.test, then a reload of the same text, while two clients keep
    // making new connections: none of their requests fails.
    let renewed = pki.leaf("api", &["api.example.test"], |_| {});
    assert_ne!(renewed, api);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..2)
        .map(|_| {
            let (stop, rec) = (stop.clone(), Arc::new(Recorder::default()));
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let fresh = client_config(ClientOpts::default(), rec.clone());
                    match https(addr, "api.example.test", "api.example.test", &fresh, &rec) {
                        Ok(s) if s.status == 200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    gw.gateway().reload_with(Config::parse(&toml).unwrap()).expect("reload");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in traffic {
        let (ok, failed) = t.join().unwrap();
        assert!(ok > 5 && failed == 0, "{ok} requests answered, {failed} failed across the reload");
    }
    // (A new client each time: a resumed session would present no certificate at all.)
    assert!(common::wait_until(Duration::from_secs(5), || {
        let fresh = client_config(ClientOpts::default(), rec.clone());
        https(addr, "api.example.test", "api.example.test", &fresh, &rec).ok().and_then(|s| s.cert) == Some(renewed.clone())
    }));
    // Sessions made before the reload still resume after it (the ticket keys carry over).
    assert!(https(addr, "api.example.test", "api.example.test", &cfg, &rec).unwrap().resumed);
    let answer = ask(&mut kept);
    assert!(answer.starts_with("HTTP/1.1 200"), "the connection made before the reload still serves: {answer:?}");
}

fn parse_err(toml: &str, base: &Path) -> String {
    match Config::parse_in(toml, base) {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn check_reports_every_certificate_problem_with_its_key() {
    let pki = Pki::new("check");
    pki.leaf("good", &["good.test"], |_| {});
    pki.leaf("expired", &["old.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    });
    pki.leaf("future", &["new.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2090, 1, 1);
        p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    });
    pki.leaf("other", &["other.test"], |_| {});
    // The chain out of order: the CA first, then the leaf.
    let good = std::fs::read_to_string(pki.path("good.pem")).unwrap();
    std::fs::write(pki.path("reversed.pem"), format!("{}{good}", pki.ca.cert.pem())).unwrap();
    let up = "127.0.0.1:9";
    let cert = |c: &str, k: &str, hosts: &str| format!("[[tls.certs]]\ncert_file = \"{c}\"\nkey_file = \"{k}\"\nhosts = {hosts}\n");
    let base = pki.dir.clone();
    let cases = [
        (cert("good.pem", "other.key", "[\"a.test\"]"), "tls.certs[0].key_file", "is not the key of the certificate"),
        (cert("expired.pem", "expired.key", "[\"a.test\"]"), "tls.certs[0].cert_file", "expired on"),
        (cert("future.pem", "future.key", "[\"a.test\"]"), "tls.certs[0].cert_file", "is not valid before"),
        (cert("missing.pem", "good.key", "[\"a.test\"]"), "tls.certs[0].cert_file", "cannot read"),
        (cert("good.pem", "missing.key", "[\"a.test\"]"), "tls.certs[0].key_file", "cannot read"),
        (cert("good.pem", "good.key", "[]"), "tls.certs[0].hosts", "no host"),
        (cert("reversed.pem", "good.key", "[\"a.test\"]"), "tls.certs[0]", ""),
    ];
    // A route host no certificate covers.
    let hosted = config(up.parse().unwrap(), 1, &format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{}", cert("good.pem", "good.key", "[\"good.test\"]")))
        .replace("service = \"svc\"\n\n[admin]", "service = \"svc\"\nhosts = [\"shop.test\"]\n\n[admin]");
    let err = parse_err(&hosted, &base);
    assert!(err.contains("routes[0].hosts") && err.contains("no [[tls.certs]] entry covers `shop.test`"), "{err}");
    for (certs, path, problem) in cases {
        let toml = config(up.parse().unwrap(), 1, &format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{certs}"));
        let err = parse_err(&toml, &base);
        assert!(err.contains(path) && err.contains(problem), "want `{path}` and `{problem}` in:\n{err}");
    }
    // A good one passes; one expiring within 14 days is a warning, not an error.
    let toml = config(up.parse().unwrap(), 1, &format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{}", cert("good.pem", "good.key", "[\"good.test\"]")));
    assert!(Config::parse_in(&toml, &base).unwrap().warnings.is_empty());
    pki.leaf("soon", &["soon.test"], |p| p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(7));
    let toml = config(up.parse().unwrap(), 1, &format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{}", cert("soon.pem", "soon.key", "[\"soon.test\"]")));
    let cfg = Config::parse_in(&toml, &base).unwrap();
    assert!(cfg.warnings.iter().any(|w| w.contains("tls.certs[0].cert_file") && w.contains("within 14 days")), "{:?}", cfg.warnings);
}

/// A TLS upstream on a std thread per connection: answers every request with 200 and `body`,
/// keep-alive; records the SNI names it was asked for and the connections it accepted.
struct TlsUpstream {
    addr: SocketAddr,
    snis: Arc<Mutex<Vec<Option<String>>>>,
    conns: Arc<std::sync::atomic::AtomicUsize>,
}

fn tls_upstream(pki: &Pki, file: &str, body: &'static str) -> TlsUpstream {
    let (chain, key) = pki.client_identity(file);
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let snis = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen, accepted) = (snis.clone(), conns.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (cfg, seen) = (cfg.clone(), seen.clone());
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), tcp);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    seen.lock().unwrap().push(tls.conn.server_name().map(str::to_string));
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if tls.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    TlsUpstream { addr, snis, conns }
}

#[test]
fn upstream_tls_is_verified_with_sni_and_pooled() {
    let pki = Pki::new("up");
    pki.leaf("billing", &["billing.internal"], |_| {});
    let other = Pki::new("up-other");
    other.leaf("rogue", &["billing.internal"], |_| {});
    let good = tls_upstream(&pki, "billing", "billed");
    let rogue = tls_upstream(&other, "rogue", "rogue");
    let ca = pki.path("ca.pem").display().to_string();
    let conf = |up: SocketAddr, tls: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\n\
             [[services]]\nname = \"billing\"\nupstreams = [\"{up}\"]\ntls = {tls}\n\n\
             [[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"billing\"\n"
        )
    };
    let verified = format!("{{ sni = \"billing.internal\", ca_file = \"{ca}\" }}");
    let gw = Gw::start(&conf(good.addr, &verified));
    let mut c = common::Client::connect(gw.addr);
    for _ in 0..3 {
        let r = c.request(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.status, r.body_str().as_str()), (200, "billed"));
    }
    let snis = good.snis.lock().unwrap().clone();
    assert_eq!(snis, vec![Some("billing.internal".to_string()); 3], "SNI sent; three requests");
    assert_eq!(good.conns.load(std::sync::atomic::Ordering::SeqCst), 1, "one pooled TLS connection served all three");
    drop(gw);

    // Active health checks speak TLS to a TLS upstream (plain probes would take it out).
    let checked = conf(good.addr, &verified) + "";
    let checked = checked.replace(
        "\n\n[[routes]]",
        "\n[services.health]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nunhealthy_after = 2\n\n[[routes]]",
    );
    let gw = Gw::start(&checked);
    std::thread::sleep(Duration::from_millis(1000));
    let probes = good.snis.lock().unwrap().len() - 3;
    assert!(probes >= 3, "{probes} TLS health probes");
    assert_eq!(common::get(gw.addr, "/x").status, 200, "still in the balancing set");
    drop(gw);

    // Another CA's certificate for the same name: refused, 502 with its own code.
    let gw = Gw::start(&conf(rogue.addr, &verified));
    let r = common::get(gw.addr, "/x");
    assert_eq!((r.status, r.error_code().as_str()), (502, "upstream_tls_failed"));
    drop(gw);
    // verify = false takes it (signatures still checked).
    let gw = Gw::start(&conf(rogue.addr, "{ sni = \"billing.internal\", verify = false }"));
    assert_eq!(common::get(gw.addr, "/x").body_str(), "rogue");
}

//! Test harness: the real gateway in-process on port 0, real upstream servers on port 0 (plain
//! std threads, so they share nothing with the code under test), and a raw-bytes client.
#![allow(dead_code)]

pub mod redis;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringgate::config::Config;
use ringgate::runtime::Gateway;

/// A running gateway; stopped and joined on drop.
pub struct Gw {
    pub addr: SocketAddr,
    gateway: Option<Gateway>,
}

impl Gw {
    /// Starts a gateway from config text. `{listen}` defaults to 127.0.0.1:0 and one worker.
    pub fn start(toml: &str) -> Gw {
        let cfg = Config::parse(toml).unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
        Gw::start_config(cfg)
    }

    /// Starts a gateway from a parsed config.
    pub fn start_config(cfg: Config) -> Gw {
        let gateway = Gateway::start(cfg).expect("gateway starts");
        Gw { addr: gateway.addrs[0], gateway: Some(gateway) }
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    /// One sample from the admin listener's `/metrics` (the config must set `[admin] listen`).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, _, text) = admin(self.gateway().admin_addr.expect("admin listener"), "GET", "/metrics", "");
        sample(&text, series).unwrap_or_else(|| panic!("no {series} in /metrics"))
    }

    /// Starts draining and waits for the shards to stop.
    pub fn shutdown_and_join(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown();
            g.join();
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown();
            g.join();
        }
    }
}

/// One admin request; returns (status, content-type, body).
pub fn admin(addr: SocketAddr, method: &str, path: &str, accept: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = if accept.is_empty() { String::new() } else { format!("Accept: {accept}\r\n") };
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n{accept}\r\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let ct = header_values(head, "content-type").into_iter().next().unwrap_or_default();
    (status, ct, body.to_string())
}

/// The value of one sample line (`name{labels} value`) in Prometheus text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A minimal config: one service with the given upstreams, one route for `/`, plus `extra`
/// TOML appended (more services/routes, or whole tables such as `[timeouts]`).
pub fn config(upstreams: &[SocketAddr], server_extra: &str, extra: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n{server_extra}\n\n\
         [[services]]\nname = \"svc\"\nupstreams = [{}]\n\n\
         [[routes]]\nname = \"all\"\npaths = [\"/\"]\nservice = \"svc\"\n\n{extra}\n",
        ups.join(", ")
    )
}

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request line and headers, as sent, including the final CRLF CRLF.
    pub head: String,
    /// Body bytes exactly as they came on the wire (chunked framing included).
    pub raw_body: Vec<u8>,
    /// Body with chunked framing removed.
    pub body: Vec<u8>,
}

impl Received {
    pub fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }

    /// Values of a header (case-insensitive name).
    pub fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// The request target's path, without the query.
    pub fn path(&self) -> &str {
        let target = self.request_line().split(' ').nth(1).unwrap_or("");
        target.split('?').next().unwrap_or("")
    }

    pub fn path_is(&self, p: &str) -> bool {
        self.path() == p
    }
}

pub fn header_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A connection accepted by a test upstream.
pub struct UpConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    log: Arc<Mutex<Vec<Received>>>,
}

impl UpConn {
    /// Reads one request (head and body); `None` when the peer closed first.
    pub fn read_request(&mut self) -> Option<Received> {
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let (raw_body, body) = if let Some(cl) = header_values(&head, "content-length").first() {
            let n: usize = cl.parse().ok()?;
            while self.buf.len() < n {
                if !self.fill() {
                    return None;
                }
            }
            let b: Vec<u8> = self.buf.drain(..n).collect();
            (b.clone(), b)
        } else if header_values(&head, "transfer-encoding").iter().any(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked()?
        } else {
            (Vec::new(), Vec::new())
        };
        let r = Received { head, raw_body, body };
        self.log.lock().unwrap().push(r.clone());
        Some(r)
    }

    fn read_chunked(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut raw = Vec::new();
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = find(&self.buf, b"\r\n") {
                    break p;
                }
                if !self.fill() {
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            raw.extend(self.buf.drain(..line_end + 2));
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let e = loop {
                        if let Some(p) = find(&self.buf, b"\r\n") {
                            break p;
                        }
                        if !self.fill() {
                            return None;
                        }
                    };
                    raw.extend(self.buf.drain(..e + 2));
                    if e == 0 {
                        return Some((raw, body));
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill() {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            raw.extend(self.buf.drain(..size + 2));
        }
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match read_some(&mut self.stream, &mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Writes a 200 response with this body and Content-Length.
    pub fn respond(&mut self, body: &[u8]) -> bool {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len());
        self.write(head.as_bytes()) && self.write(body)
    }
}

/// `read`, retried when a signal interrupts it (blocking reads with a timeout are not restarted
/// by the kernel and return EINTR instead).
pub fn read_some(s: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A test upstream: each accepted connection runs `handler` on its own thread.
pub struct Upstream {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Received>>>,
    pub accepted: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start<F>(handler: F) -> Upstream
    where
        F: Fn(&mut UpConn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        {
            let log = log.clone();
            let accepted = accepted.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let handler = handler.clone();
                    let log = log.clone();
                    thread::spawn(move || {
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                        let mut c = UpConn { stream, buf: Vec::new(), log };
                        handler(&mut c);
                    });
                }
            });
        }
        Upstream { addr, log, accepted }
    }

    /// Answers every request with 200 and `body`, keep-alive.
    pub fn ok(body: &'static [u8]) -> Upstream {
        Upstream::start(move |c| {
            while c.read_request().is_some() {
                if !c.respond(body) {
                    return;
                }
            }
        })
    }

    /// Answers every request on a connection with the same raw response bytes.
    pub fn raw(response: &'static [u8]) -> Upstream {
        Upstream::start(move |c| {
            while c.read_request().is_some() {
                if !c.write(response) {
                    return;
                }
            }
        })
    }

    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        header_values(&self.head, name).into_iter().next()
    }

    pub fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the JSON error shape and returns the `code` field.
    pub fn error_code(&self) -> String {
        assert_eq!(self.header("content-type").as_deref(), Some("application/json"), "{}", self.head);
        let b = self.body_str();
        assert!(b.starts_with("{\"error\":{\"status\":"), "not a JSON error: {b}");
        assert!(b.contains(&format!("\"status\":{}", self.status)), "{b}");
        let rid = self.header("x-request-id").expect("error carries X-Request-Id");
        assert!(b.contains(&format!("\"request_id\":\"{rid}\"")), "{b}");
        let code = b.split("\"code\":\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
        code.to_string()
    }
}

/// A raw client connection to the gateway.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).expect("connect to gateway")
    }

    /// A connection, or `None` when the gateway refuses it.
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Client { stream, buf: Vec::new() })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to gateway");
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 65536];
        let n = read_some(&mut self.stream, &mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads one response. `head_request`: the response to a HEAD has no body.
    pub fn read_response_for(&mut self, head_request: bool) -> Option<Response> {
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            match self.fill() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let no_body = head_request || status < 200 || status == 204 || status == 304;
        let body = if no_body {
            Vec::new()
        } else if let Some(cl) = header_values(&head, "content-length").first() {
            let n: usize = cl.parse().ok()?;
            while self.buf.len() < n {
                match self.fill() {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let n = n.min(self.buf.len());
            self.buf.drain(..n).collect()
        } else if header_values(&head, "transfer-encoding").iter().any(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut up = UpConn {
                stream: self.stream.try_clone().unwrap(),
                buf: std::mem::take(&mut self.buf),
                log: Arc::new(Mutex::new(Vec::new())),
            };
            let decoded = up.read_chunked().map(|(_, b)| b);
            self.buf = std::mem::take(&mut up.buf);
            decoded?
        } else {
            // Close-delimited.
            while let Ok(n) = self.fill() {
                if n == 0 {
                    break;
                }
            }
            std::mem::take(&mut self.buf)
        };
        Some(Response { status, head, body })
    }

    pub fn read_response(&mut self) -> Option<Response> {
        self.read_response_for(false)
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        self.read_response().expect("a response")
    }

    /// True when the gateway closed the connection (EOF with nothing left unread).
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        matches!(read_some(&mut self.stream, &mut b), Ok(0) | Err(_))
    }

    /// Bytes left over after the responses read so far plus anything until EOF.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while let Ok(n) = self.fill() {
            if n == 0 {
                break;
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Like `read_to_end`, but stops after `max` bytes or `dur`, so a gateway that never stops
    /// answering cannot hang the test.
    pub fn read_bounded(&mut self, max: usize, dur: Duration) -> Vec<u8> {
        let end = Instant::now() + dur;
        while self.buf.len() < max && Instant::now() < end {
            match self.fill() {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        std::mem::take(&mut self.buf)
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// One request on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Client::connect(addr).request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
}

/// Waits up to `limit` for `cond`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A port that refuses connections: bound (so nothing else can take it) but not listening.
pub struct DeadPort {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

pub fn dead_port() -> DeadPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    DeadPort { addr, _socket: socket }
}

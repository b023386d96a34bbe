//! The stand-in upstream (`ringgate stub`): a small HTTP/1.1 server on the same runtime, for the
//! demo, the load tests and smoke-testing a deployment. Keep-alive, reads and discards request
//! bodies (Content-Length or chunked), answers a JSON body of a configurable size after an
//! optional delay.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::{TcpListener, TcpStream};

use crate::config::MAX_HEADERS_CAP;
use crate::http::body::ChunkedDecoder;
use crate::http::io::ReadBuf;
use crate::http::parse::{self, Framing, HeadLimits};

#[derive(Debug, Clone)]
pub struct StubOptions {
    pub listen: SocketAddr,
    /// Service name echoed in the body.
    pub name: String,
    /// Approximate JSON body size in bytes.
    pub body_size: usize,
    pub delay: Duration,
    pub workers: usize,
}

/// Runs the stub until the process ends. Returns the bound address through `on_bound`.
pub fn run(opts: StubOptions, on_bound: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let mut addr = opts.listen;
    let mut listeners = Vec::new();
    for _ in 0..opts.workers.max(1) {
        let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr()?;
        listeners.push(l);
    }
    on_bound(addr);
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let opts = opts.clone();
            std::thread::spawn(move || {
                let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build();
                match rt {
                    Ok(mut rt) => rt.block_on(accept(l, Rc::new(opts))),
                    Err(e) => eprintln!("stub: cannot start runtime: {e}"),
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

async fn accept(l: std::net::TcpListener, opts: Rc<StubOptions>) {
    let Ok(listener) = TcpListener::from_std(l) else { return };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(serve(stream, opts.clone()));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

struct Req {
    head_len: usize,
    framing: Framing,
    keep_alive: bool,
    head: bool,
}

async fn serve(mut stream: TcpStream, opts: Rc<StubOptions>) {
    let _ = stream.set_nodelay(true);
    let mut rbuf = ReadBuf::new(Vec::with_capacity(64 << 10));
    let mut out: Vec<u8> = Vec::with_capacity(opts.body_size + 512);
    let limits = HeadLimits { max_head: 64 << 10, max_target: 32 << 10, max_headers: MAX_HEADERS_CAP };
    loop {
        let req = loop {
            match head(&rbuf, &limits, &opts, &mut out) {
                Ok(Some(r)) => break r,
                Ok(None) => match rbuf.fill(&mut stream).await {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                Err(()) => {
                    let (_, _) = stream.write_all(&b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..]).await;
                    return;
                }
            }
        };
        rbuf.consume(req.head_len);
        if !skip_body(&mut stream, &mut rbuf, req.framing).await {
            return;
        }
        if !opts.delay.is_zero() {
            monoio::time::sleep(opts.delay).await;
        }
        if req.head {
            // Same head, no body (RFC 9110 §9.3.2).
            let body_start = out.windows(4).position(|w| w == b"\r\n\r\n").map_or(out.len(), |p| p + 4);
            out.truncate(body_start);
        }
        let (res, back) = stream.write_all(std::mem::take(&mut out)).await;
        out = back;
        if res.is_err() || !req.keep_alive {
            return;
        }
    }
}

/// Parses a request head and prepares the whole response in `out`.
fn head(rbuf: &ReadBuf, limits: &HeadLimits, opts: &StubOptions, out: &mut Vec<u8>) -> Result<Option<Req>, ()> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let req = match parse::parse_request(rbuf.pending(), &mut headers, limits) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(_) => return Err(()),
    };
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map_or(&b""[..], |h| h.value);
    let rid = header("x-request-id");
    let consumer = header("x-consumer-id");
    let mut body = Vec::with_capacity(opts.body_size + 128);
    body.extend_from_slice(b"{\"service\":\"");
    json_escape(&mut body, opts.name.as_bytes());
    body.extend_from_slice(b"\",\"method\":\"");
    json_escape(&mut body, req.method.as_bytes());
    body.extend_from_slice(b"\",\"path\":\"");
    json_escape(&mut body, req.target);
    body.extend_from_slice(b"\",\"request_id\":\"");
    json_escape(&mut body, rid);
    if !consumer.is_empty() {
        body.extend_from_slice(b"\",\"consumer\":\"");
        json_escape(&mut body, consumer);
    }
    body.extend_from_slice(b"\",\"pad\":\"");
    let pad = opts.body_size.saturating_sub(body.len() + 3);
    body.resize(body.len() + pad, b'x');
    body.extend_from_slice(b"\"}\n");
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !req.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Ok(Some(Req { head_len: req.head_len, framing: req.framing, keep_alive: req.keep_alive, head: req.method == "HEAD" }))
}

async fn skip_body(stream: &mut TcpStream, rbuf: &mut ReadBuf, framing: Framing) -> bool {
    match framing {
        Framing::None | Framing::UntilClose => true,
        Framing::Length(mut n) => loop {
            let take = (rbuf.pending_len() as u64).min(n) as usize;
            rbuf.consume(take);
            n -= take as u64;
            if n == 0 {
                return true;
            }
            if !matches!(rbuf.fill(stream).await, Ok(k) if k > 0) {
                return false;
            }
        },
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(64 << 10);
            loop {
                match dec.scan(rbuf.pending()) {
                    Ok((n, done)) => {
                        rbuf.consume(n);
                        if done {
                            return true;
                        }
                    }
                    Err(_) => return false,
                }
                if !matches!(rbuf.fill(stream).await, Ok(k) if k > 0) {
                    return false;
                }
            }
        }
    }
}

fn json_escape(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f..=0xff => {
                out.extend_from_slice(b"\\u00");
                out.push(b"0123456789abcdef"[(b >> 4) as usize]);
                out.push(b"0123456789abcdef"[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
}

//! The access log: one JSON line per request, formatted on the shard into a bounded per-shard
//! buffer and handed, whole buffers at a time, to one writer thread. A shard never waits for the
//! disk: when the writer falls behind and the shard's buffer is full, lines are dropped and
//! counted (`ringgate_access_log_dropped_total`). SIGUSR1 (or a reload that changes the target)
//! makes the writer reopen its file, for logrotate.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::AccessLogTarget;
use crate::observe::metrics::ShardMetrics;

/// A shard hands its buffer over once it holds this much (or on its next tick).
const FLUSH_AT: usize = 32 << 10;
/// A shard's buffer never grows past this; further lines are dropped while the writer is behind.
const MAX_BUFFERED: usize = 256 << 10;
/// Buffers in flight to the writer, per shard.
const QUEUE_PER_SHARD: usize = 8;

/// Where the writer writes; shared with the reload path and the SIGUSR1 handler.
pub struct Sink {
    target: Mutex<AccessLogTarget>,
    reopen: AtomicBool,
}

impl Sink {
    /// Points the writer at `target` (reopening it) if it differs from the current one.
    pub fn set_target(&self, target: &AccessLogTarget) {
        let mut t = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if *t != *target {
            *t = target.clone();
            self.reopen.store(true, Ordering::Release);
        }
    }

    /// Asks the writer to reopen its file (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

/// Starts the writer thread; returns the shared sink and the sender shards log through.
pub fn start_writer(target: &AccessLogTarget, shards: usize) -> std::io::Result<(Arc<Sink>, SyncSender<Vec<u8>>)> {
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_PER_SHARD * shards.max(1));
    let sink = Arc::new(Sink { target: Mutex::new(target.clone()), reopen: AtomicBool::new(false) });
    // Open once up front so a path that cannot be written fails the start, loudly.
    let file = open(target)?;
    let s = sink.clone();
    std::thread::Builder::new().name("ringgate-log".into()).spawn(move || write_loop(&s, rx, file))?;
    Ok((sink, tx))
}

fn open(target: &AccessLogTarget) -> std::io::Result<Option<File>> {
    match target {
        AccessLogTarget::File(path) => OpenOptions::new().create(true).append(true).open(path).map(Some),
        _ => Ok(None),
    }
}

fn write_loop(sink: &Sink, rx: Receiver<Vec<u8>>, mut file: Option<File>) {
    loop {
        let buf = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(b) => Some(b),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if sink.reopen.swap(false, Ordering::AcqRel) {
            let target = sink.target.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match open(&target) {
                Ok(f) => file = f,
                Err(e) => tracing::error!(error = %e, ?target, "cannot reopen the access log; lines go nowhere until it can"),
            }
        }
        let Some(buf) = buf else { continue };
        let target = sink.target.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let res = match (&target, file.as_mut()) {
            (AccessLogTarget::Stdout, _) => std::io::stdout().lock().write_all(&buf),
            (AccessLogTarget::File(_), Some(f)) => f.write_all(&buf),
            _ => Ok(()),
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "access log write failed");
        }
    }
}

/// A shard's end of the access log.
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    clock: RefCell<Clock>,
}

/// The formatted date and time of the current second, so a line formats only its milliseconds.
#[derive(Default)]
pub struct Clock {
    second: u64,
    text: Vec<u8>,
}

impl Clock {
    /// Appends `2026-11-30T22:40:13.123Z` for `t`.
    fn put(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.text.is_empty() || self.second != d.as_secs() {
            self.second = d.as_secs();
            self.text.clear();
            date_time(&mut self.text, self.second);
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        let milli = d.subsec_millis();
        out.push(b'0' + (milli / 100) as u8);
        out.push(b'0' + (milli / 10 % 10) as u8);
        out.push(b'0' + (milli % 10) as u8);
        out.push(b'Z');
    }
}

/// One request as the access log records it.
pub struct Line<'a> {
    pub request_id: &'a [u8],
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub path: &'a [u8],
    pub path_truncated: bool,
    pub status: u16,
    pub route: &'a str,
    pub service: &'a str,
    pub upstream: Option<std::net::SocketAddr>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_us: u64,
    pub upstream_us: Option<u64>,
    pub consumer: Option<&'a [u8]>,
    pub error: Option<&'a str>,
    pub traceparent: &'a [u8],
}

impl AccessLog {
    pub fn new(tx: SyncSender<Vec<u8>>) -> AccessLog {
        AccessLog { tx, buf: RefCell::new(Vec::with_capacity(FLUSH_AT * 2)), lines: Cell::new(0), clock: RefCell::default() }
    }

    /// Formats one line into the shard's buffer (or drops and counts it when the buffer is full).
    pub fn write(&self, l: &Line, metrics: &ShardMetrics) {
        let mut buf = self.buf.borrow_mut();
        if buf.len() >= MAX_BUFFERED {
            metrics.log_dropped.set(metrics.log_dropped.get() + 1);
            return;
        }
        format_line(&mut buf, l, SystemTime::now(), &mut self.clock.borrow_mut());
        self.lines.set(self.lines.get() + 1);
        let full = buf.len() >= FLUSH_AT;
        drop(buf);
        if full {
            self.flush(metrics);
        }
    }

    /// Hands the buffered lines to the writer, if it has room; never blocks.
    pub fn flush(&self, metrics: &ShardMetrics) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let out = std::mem::replace(&mut *buf, Vec::with_capacity(FLUSH_AT * 2));
        match self.tx.try_send(out) {
            Ok(()) => self.lines.set(0),
            // The writer is behind: keep accumulating up to MAX_BUFFERED.
            Err(TrySendError::Full(back)) => *buf = back,
            Err(TrySendError::Disconnected(_)) => {
                metrics.log_dropped.set(metrics.log_dropped.get() + self.lines.get());
                self.lines.set(0);
            }
        }
    }
}

/// Appends `v` as the inside of a JSON string.
/// Bytes a JSON string can carry as they are: printable ASCII but `"` and `\\`.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    let mut rest = v;
    loop {
        // Copy the longest plain run whole, then escape one byte.
        let run = rest.iter().position(|&b| !PLAIN[b as usize]).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        let Some(&b) = rest.get(run) else { return };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => {
                // Control and non-ASCII bytes as \u00XX: the line stays valid JSON whatever the
                // client sent (paths are bytes, not necessarily UTF-8).
                out.extend_from_slice(b"\\u00");
                out.push(b"0123456789abcdef"[(b >> 4) as usize]);
                out.push(b"0123456789abcdef"[(b & 15) as usize]);
            }
        }
        rest = &rest[run + 1..];
    }
}

/// A JSON string, or `null`.
fn opt_str(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            out.push(b'"');
            json_str(out, v);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals from microseconds.
fn ms(out: &mut Vec<u8>, us: u64) {
    num(out, us / 1000);
    out.push(b'.');
    let frac = us % 1000;
    out.push(b'0' + (frac / 100) as u8);
    out.push(b'0' + (frac / 10 % 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// `2026-11-30T22:40:13` for a unix time in seconds.
fn date_time(out: &mut Vec<u8>, secs: u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let two = |out: &mut Vec<u8>, n: u64| {
        out.push(b'0' + (n / 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    };
    num(out, year.max(0) as u64);
    out.push(b'-');
    two(out, month as u64);
    out.push(b'-');
    two(out, day as u64);
    out.push(b'T');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem / 60 % 60);
    out.push(b':');
    two(out, rem % 60);
}

/// An address as text without the formatting machinery for the common IPv4 case.
fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                num(out, u64::from(*o));
            }
        }
        IpAddr::V6(_) => out.extend_from_slice(crate::http::write::ip_text(ip).as_bytes()),
    }
}

fn put_socket_addr(out: &mut Vec<u8>, a: std::net::SocketAddr) {
    if a.is_ipv6() {
        out.push(b'[');
        put_ip(out, a.ip());
        out.push(b']');
    } else {
        put_ip(out, a.ip());
    }
    out.push(b':');
    num(out, u64::from(a.port()));
}

pub fn format_line(out: &mut Vec<u8>, l: &Line, now: SystemTime, clock: &mut Clock) {
    out.extend_from_slice(b"{\"time\":\"");
    clock.put(out, now);
    out.extend_from_slice(b"\",\"request_id\":\"");
    json_str(out, l.request_id);
    out.extend_from_slice(b"\",\"client_ip\":\"");
    put_ip(out, l.client_ip);
    out.extend_from_slice(b"\",\"method\":\"");
    json_str(out, l.method.as_bytes());
    out.extend_from_slice(b"\",\"path\":\"");
    json_str(out, l.path);
    out.extend_from_slice(b"\"");
    if l.path_truncated {
        out.extend_from_slice(b",\"path_truncated\":true");
    }
    out.extend_from_slice(b",\"status\":");
    num(out, l.status as u64);
    out.extend_from_slice(b",\"route\":\"");
    json_str(out, l.route.as_bytes());
    out.extend_from_slice(b"\",\"service\":\"");
    json_str(out, l.service.as_bytes());
    out.extend_from_slice(b"\",\"upstream\":");
    match l.upstream {
        Some(a) => {
            out.push(b'"');
            put_socket_addr(out, a);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"bytes_in\":");
    num(out, l.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    num(out, l.bytes_out);
    out.extend_from_slice(b",\"duration_ms\":");
    ms(out, l.duration_us);
    out.extend_from_slice(b",\"upstream_ms\":");
    match l.upstream_us {
        Some(us) => ms(out, us),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"consumer\":");
    opt_str(out, l.consumer);
    out.extend_from_slice(b",\"error\":");
    opt_str(out, l.error.map(str::as_bytes));
    out.extend_from_slice(b",\"traceparent\":");
    opt_str(out, (!l.traceparent.is_empty()).then_some(l.traceparent));
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_every_field() {
        let l = Line {
            request_id: b"abc",
            client_ip: "192.0.2.1".parse().unwrap(),
            method: "GET",
            path: b"/a\"b\x01\xff",
            path_truncated: false,
            status: 200,
            route: "r",
            service: "s",
            upstream: Some("127.0.0.1:3001".parse().unwrap()),
            bytes_in: 10,
            bytes_out: 20,
            duration_us: 1234,
            upstream_us: Some(1000),
            consumer: Some(b"alice"),
            error: None,
            traceparent: b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        };
        let mut out = Vec::new();
        format_line(&mut out, &l, UNIX_EPOCH + Duration::from_millis(1_764_542_413_123), &mut Clock::default());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2025-11-30T22:40:13.123Z");
        assert_eq!(v["path"], "/a\"b\u{1}\u{ff}");
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["upstream"], "127.0.0.1:3001");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["status"], 200);
    }

    #[test]
    fn civil_dates_are_right_across_leap_years() {
        let mut clock = Clock::default();
        for (secs, want) in [(0u64, "1970-01-01T00:00:00.000Z"), (951_782_400, "2000-02-29T00:00:00.000Z"), (4_107_542_399, "2100-02-28T23:59:59.000Z")] {
            let mut out = Vec::new();
            clock.put(&mut out, UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        // Within one second only the milliseconds change.
        let mut out = Vec::new();
        clock.put(&mut out, UNIX_EPOCH + Duration::from_millis(4_107_542_399_042));
        assert_eq!(String::from_utf8(out).unwrap(), "2100-02-28T23:59:59.042Z");
    }

    #[test]
    fn addresses_are_written_like_their_display() {
        for a in ["192.0.2.1:80", "10.20.30.40:65535", "[2001:db8::1]:443", "[::ffff:192.0.2.1]:8080"] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            put_socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }
}

//! Owned-buffer I/O for io_uring: a read buffer with a pending window, and a per-shard pool of
//! buffers so that an idle connection holds none (a read posted to io_uring pins its buffer for
//! as long as the connection is idle, so connections wait for readability first and only then
//! take a buffer).

use std::cell::RefCell;
use std::io;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// A client connection's byte stream: plain TCP or TLS. The connection loop waits for
/// readability on the socket underneath, so an idle connection holds no buffer.
pub trait ClientStream: AsyncReadRent + AsyncWriteRent {
    /// The TCP socket underneath (readiness, peeks).
    fn socket(&self) -> &TcpStream;

    /// Whether the stream holds bytes already read off the socket but not yet returned (a TLS
    /// record buffer); the idle wait must not sleep on those.
    fn has_buffered(&self) -> bool {
        false
    }

    /// What the TLS handshake settled, on a TLS connection.
    fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        None
    }

    /// Reads go through records (TLS): a readable socket may hold only part of one, so the
    /// first read of a request is bounded in time like the rest of its head.
    const RECORDS: bool = false;

    /// An idle connection may leave its task for the shard's parking lot, as a bare socket
    /// (plain TCP; a TLS session's state lives in its task).
    const PARKS: bool = false;
}

impl ClientStream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }

    const PARKS: bool = true;
}

/// Bytes read from a connection; `data[start..]` is not yet consumed.
#[derive(Default)]
pub struct ReadBuf {
    pub data: Vec<u8>,
    pub start: usize,
    /// Bytes consumed since this buffer was made: the connection loop's proof of progress.
    pub consumed: u64,
}

impl ReadBuf {
    pub fn new(data: Vec<u8>) -> Self {
        ReadBuf { data, start: 0, consumed: 0 }
    }

    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub fn pending_len(&self) -> usize {
        self.data.len() - self.start
    }

    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.data.len() - self.start);
        self.consumed += n as u64;
        self.start += n;
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    /// Moves pending bytes to the front so the whole capacity is free for reading.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.data.copy_within(self.start.., 0);
            self.data.truncate(self.data.len() - self.start);
            self.start = 0;
        }
    }

    /// Whether a read could add bytes without compacting.
    pub fn is_full(&self) -> bool {
        self.data.len() == self.data.capacity()
    }

    /// Reads more bytes after the pending ones. `Ok(0)` is end of stream. With no room left
    /// (pending bytes fill the buffer) returns `Ok(0)` too; callers check `is_full` first.
    pub async fn fill<S: AsyncReadRent>(&mut self, s: &mut S) -> io::Result<usize> {
        if self.is_full() {
            self.compact();
            if self.is_full() {
                return Ok(0);
            }
        }
        let buf = std::mem::take(&mut self.data);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = s.read(buf.slice_mut(len..cap)).await;
        self.data = slice.into_inner();
        res
    }
}

/// Why a timed write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFail {
    /// The peer closed or reset the connection (the OS error, if any); `data` is intact.
    Io(Option<i32>),
    /// Timed out: the buffer was lost with the cancelled write and `data` is left empty, so the
    /// caller can only close the connection (and must not resend).
    TimedOut,
}

/// Writes `data[from..to]` within `dur`, keeping the buffer in `data` unless it timed out.
pub async fn timed_write<W: AsyncWriteRentExt>(s: &mut W, data: &mut Vec<u8>, from: usize, to: usize, dur: std::time::Duration) -> Result<(), WriteFail> {
    let buf = std::mem::take(data);
    match monoio::time::timeout(dur, write_range(s, buf, from, to)).await {
        Ok((res, buf)) => {
            *data = buf;
            res.map_err(|e| WriteFail::Io(e.raw_os_error()))
        }
        Err(_) => Err(WriteFail::TimedOut),
    }
}

/// What a non-blocking one-byte peek at a socket finds, leaving it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Bytes are waiting.
    Bytes,
    /// Nothing to read: the socket is open and quiet.
    Quiet,
    /// End of stream, a reset, or another error.
    Closed,
}

pub fn peek(stream: &impl std::os::fd::AsRawFd) -> Peek {
    match peek_byte(stream) {
        Ok(_) => Peek::Bytes,
        Err(Some(libc::EAGAIN)) => Peek::Quiet,
        Err(_) => Peek::Closed,
    }
}

/// The first byte waiting on the socket, left in place; else the OS error (`None`: the peer
/// closed).
pub fn peek_byte(stream: &impl std::os::fd::AsRawFd) -> Result<u8, Option<i32>> {
    let mut b = [0u8; 1];
    // SAFETY: `b` is a valid writable buffer of length 1 for the duration of the call, and the
    // fd is owned by `stream`, which outlives the call. MSG_PEEK leaves the socket unchanged.
    let n = unsafe { libc::recv(stream.as_raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        1.. => Ok(b[0]),
        0 => Err(None),
        _ => Err(io::Error::last_os_error().raw_os_error()),
    }
}

/// Writes `buf[from..to]` completely and hands the buffer back.
pub async fn write_range<S: AsyncWriteRentExt>(
    s: &mut S,
    buf: Vec<u8>,
    from: usize,
    to: usize,
) -> (io::Result<()>, Vec<u8>) {
    if from >= to {
        return (Ok(()), buf);
    }
    let (res, slice) = s.write_all(buf.slice(from..to)).await;
    (res.map(|_| ()), slice.into_inner())
}

/// Buffers of one size, reused within a shard. Never shared across threads.
pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
    /// Buffers freed because the pool was full: how a burst of requests shows.
    released: std::cell::Cell<u64>,
}

impl BufPool {
    pub fn new(size: usize, keep: usize) -> Self {
        BufPool { free: RefCell::new(Vec::with_capacity(keep)), size, keep, released: std::cell::Cell::new(0) }
    }

    pub fn get(&self) -> Vec<u8> {
        self.free.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    pub fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() != self.size {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep {
            buf.clear();
            free.push(buf);
        } else {
            self.released.set(self.released.get() + 1);
        }
    }

    /// Buffers freed so far because the pool already held `keep`.
    pub fn released(&self) -> u64 {
        self.released.get()
    }
}

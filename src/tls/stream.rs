//! A TLS connection over a monoio `TcpStream`, driving a rustls connection (the server side of a
//! client's connection, or the client side of an upstream's) by hand: TLS records are read into a buffer that exists only while it holds bytes (an idle
//! connection keeps none of its own), handed to rustls, and plaintext is copied straight into
//! the caller's buffer; outgoing records are written as rustls produces them.

use std::io::{self, Read, Write};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::Connection;

use super::TlsInfo;
use crate::http::io::ClientStream;

/// Bytes read off the socket at once: a whole TLS record (16 KiB plus its overhead).
const READ_CHUNK: usize = 16 * 1024 + 512;

pub struct TlsConn {
    tcp: TcpStream,
    tls: Connection,
    /// TLS bytes read off the socket and not yet taken by rustls (`incoming[start..]`); the
    /// buffer is released once it is drained.
    incoming: Vec<u8>,
    start: usize,
    outgoing: Vec<u8>,
    /// The socket reached its end.
    eof: bool,
    /// rustls holds decrypted bytes not yet read.
    plaintext: bool,
    pub info: TlsInfo,
}

impl TlsConn {
    /// A server side (a client connection) or a client side (to an upstream).
    pub fn new(tcp: TcpStream, tls: impl Into<Connection>) -> TlsConn {
        let tls = tls.into();
        TlsConn { tcp, tls, incoming: Vec::new(), start: 0, outgoing: Vec::new(), eof: false, plaintext: false, info: TlsInfo::default() }
    }

    pub fn session(&self) -> &Connection {
        &self.tls
    }

    pub fn socket(&self) -> &TcpStream {
        &self.tcp
    }

    /// Runs the handshake to its end (the caller bounds it in time). On a refused handshake the
    /// alert rustls prepared is sent before the error returns.
    pub async fn handshake(&mut self) -> io::Result<()> {
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                self.flush_tls().await?;
                continue;
            }
            if self.eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Err(e) = self.receive().await {
                let _ = self.flush_tls().await;
                return Err(e);
            }
        }
        // The last flight, and TLS 1.3 session tickets.
        self.flush_tls().await
    }

    /// Reads more TLS bytes from the socket and feeds them to rustls.
    async fn receive(&mut self) -> io::Result<()> {
        if self.start >= self.incoming.len() {
            let buf = Vec::with_capacity(READ_CHUNK);
            let (res, buf) = self.tcp.read(buf).await;
            self.incoming = buf;
            self.start = 0;
            if res? == 0 {
                self.eof = true;
                self.incoming = Vec::new();
                // rustls learns of the end (a close without close_notify is an unexpected EOF).
                let _ = self.tls.read_tls(&mut io::empty());
                return Ok(());
            }
        }
        while self.start < self.incoming.len() {
            let n = self.tls.read_tls(&mut &self.incoming[self.start..])?;
            self.start += n;
            let state = self.tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.plaintext = state.plaintext_bytes_to_read() > 0;
            if n == 0 {
                break;
            }
        }
        if self.start >= self.incoming.len() {
            self.incoming = Vec::new();
            self.start = 0;
        }
        Ok(())
    }

    /// Writes everything rustls has to send.
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.outgoing.clear();
            self.tls.write_tls(&mut self.outgoing)?;
            let buf = std::mem::take(&mut self.outgoing);
            let (res, buf) = self.tcp.write_all(buf).await;
            self.outgoing = buf;
            res?;
        }
        if self.outgoing.capacity() > READ_CHUNK {
            self.outgoing = Vec::new();
        }
        Ok(())
    }

    async fn read_plain(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(dst) {
                Ok(n) => {
                    self.plaintext = n == dst.len() && n > 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.plaintext = false,
                // The peer closed without close_notify: an end of stream like TCP's.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.tls.wants_write() {
                self.flush_tls().await?;
            }
            if self.eof {
                return Ok(0);
            }
            self.receive().await?;
        }
    }

    async fn write_plain(&mut self, src: &[u8]) -> io::Result<usize> {
        let n = self.tls.writer().write(src)?;
        self.flush_tls().await?;
        Ok(n)
    }
}

impl AsyncReadRent for TlsConn {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: a read fills the buffer from its write pointer, up to its total (as a socket
        // read does); `set_init` then marks what was written.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) };
        let res = self.read_plain(dst).await;
        if let Ok(n) = res {
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        (Err(io::Error::new(io::ErrorKind::Unsupported, "readv on a TLS stream")), buf)
    }
}

impl AsyncWriteRent for TlsConn {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: the initialised part of the buffer, which it owns until returned.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let res = self.write_plain(src).await;
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let mut n = 0;
        // SAFETY: the iovecs describe the buffer's initialised parts while it is held here.
        let iovs = unsafe { std::slice::from_raw_parts(buf.read_iovec_ptr(), buf.read_iovec_len()) };
        for iov in iovs {
            let part = unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) };
            match self.tls.writer().write(part) {
                Ok(k) => n += k,
                Err(e) => return (Err(e), buf),
            }
        }
        let res = self.flush_tls().await.map(|()| n);
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.flush_tls().await?;
        self.tcp.shutdown().await
    }
}

impl ClientStream for TlsConn {
    fn socket(&self) -> &TcpStream {
        &self.tcp
    }

    fn has_buffered(&self) -> bool {
        self.plaintext || self.start < self.incoming.len()
    }

    fn tls(&self) -> Option<&TlsInfo> {
        Some(&self.info)
    }

    const RECORDS: bool = true;
}

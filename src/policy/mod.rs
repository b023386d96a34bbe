//! Edge policies, each built once from its slice of the config and run on the request path
//! without locks held across requests or per-request allocation in steady state:
//! authentication (`jwt`, `apikey`), rate limiting (`ratelimit`), IP rules (`ip`), CORS (`cors`),
//! and the stages that run them in order (`stage`).

pub(crate) mod apikey;
pub(crate) mod cors;
pub(crate) mod ip;
pub mod jwt;
pub mod ratelimit;
pub(crate) mod stage;
pub mod transform;

/// Response or forwarded header lines built while planning a request, kept inline so a request
/// needs no allocation for them. A line that does not fit is not added and marks the buffer
/// `overflowed`, which the request path turns into an error answer: a header is never dropped
/// silently (a missing identity header could read as "anonymous" upstream).
#[derive(Clone, Copy)]
pub struct HeaderBuf {
    bytes: [u8; 1024],
    len: usize,
    overflowed: bool,
}

impl Default for HeaderBuf {
    fn default() -> Self {
        HeaderBuf { bytes: [0; 1024], len: 0, overflowed: false }
    }
}

impl HeaderBuf {
    /// Whether a line did not fit.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Appends `name: value\r\n`.
    pub fn line(&mut self, name: &[u8], value: &[u8]) {
        let n = name.len() + 2 + value.len() + 2;
        if self.len + n > self.bytes.len() {
            self.overflowed = true;
            return;
        }
        for part in [name, b": ", value, b"\r\n"] {
            self.bytes[self.len..self.len + part.len()].copy_from_slice(part);
            self.len += part.len();
        }
    }

    /// Appends complete lines (each ending with CRLF) written elsewhere.
    pub fn raw(&mut self, lines: &[u8]) {
        if self.len + lines.len() <= self.bytes.len() {
            self.bytes[self.len..self.len + lines.len()].copy_from_slice(lines);
            self.len += lines.len();
        } else {
            self.overflowed = true;
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for HeaderBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

//! Edge policies, each built once from its slice of the config and run on the request path
//! without locks held across requests or per-request allocation in steady state:
//! authentication (`jwt`, `apikey`), rate limiting (`ratelimit`), IP rules (`ip`), CORS (`cors`).

pub mod apikey;
pub mod chain;
pub mod cors;
pub mod ip;
pub mod jwt;
pub mod ratelimit;

/// Response or forwarded header lines built while planning a request, kept inline so a request
/// needs no allocation for them. Lines that would not fit are dropped whole, never cut.
#[derive(Clone, Copy)]
pub struct HeaderBuf {
    bytes: [u8; 1024],
    len: usize,
}

impl Default for HeaderBuf {
    fn default() -> Self {
        HeaderBuf { bytes: [0; 1024], len: 0 }
    }
}

impl HeaderBuf {
    /// Appends `name: value\r\n`.
    pub fn line(&mut self, name: &[u8], value: &[u8]) {
        let n = name.len() + 2 + value.len() + 2;
        if self.len + n > self.bytes.len() {
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

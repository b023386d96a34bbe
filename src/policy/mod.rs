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

/// Response or forwarded header lines built while planning a request. A line that does not fit
/// in `HEADER_BUF_CAP` bytes is not added and marks the buffer `overflowed`, which the request
/// path turns into an error answer: a header is never dropped silently (a missing identity
/// header could read as "anonymous" upstream).
///
/// The value is a handle (32 bytes) so that the request state that carries it stays small: the
/// request future is moved whole into its box, and a kilobyte inline in every plan, failure
/// and hit made each request copy several. The bytes live in a per-thread (per-shard) pool of
/// `HEADER_BUF_CAP`-byte buffers: an empty buffer holds none, the first line takes one, and a
/// dropped buffer goes back, so the steady state allocates nothing.
#[derive(Default)]
pub struct HeaderBuf {
    bytes: Vec<u8>,
    overflowed: bool,
}

/// The most header bytes one buffer holds.
pub const HEADER_BUF_CAP: usize = 1024;

/// Spare buffers kept per thread: enough for every request in flight on a busy shard to hold
/// two (its plan's and an error's); beyond that a dropped buffer is freed.
const SPARE_BUFS: usize = 256;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl HeaderBuf {
    /// Whether a line did not fit.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Room for `n` more bytes: takes a pooled buffer on first use.
    fn room(&mut self, n: usize) -> bool {
        if self.bytes.len() + n > HEADER_BUF_CAP {
            self.overflowed = true;
            return false;
        }
        if self.bytes.capacity() == 0 {
            self.bytes = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_else(|| Vec::with_capacity(HEADER_BUF_CAP));
        }
        true
    }

    /// Appends `name: value\r\n`.
    pub fn line(&mut self, name: &[u8], value: &[u8]) {
        if self.room(name.len() + 2 + value.len() + 2) {
            for part in [name, b": ", value, b"\r\n"] {
                self.bytes.extend_from_slice(part);
            }
        }
    }

    /// Appends complete lines (each ending with CRLF) written elsewhere.
    pub fn raw(&mut self, lines: &[u8]) {
        if self.room(lines.len()) {
            self.bytes.extend_from_slice(lines);
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Clone for HeaderBuf {
    fn clone(&self) -> Self {
        let mut c = HeaderBuf { bytes: Vec::new(), overflowed: self.overflowed };
        if !self.bytes.is_empty() {
            c.raw(&self.bytes);
        }
        c
    }
}

impl Drop for HeaderBuf {
    fn drop(&mut self) {
        if self.bytes.capacity() == HEADER_BUF_CAP {
            let mut bytes = std::mem::take(&mut self.bytes);
            bytes.clear();
            // During thread teardown the pool may be gone; the buffer is then simply freed.
            let _ = SPARE.try_with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < SPARE_BUFS {
                    s.push(bytes);
                }
            });
        }
    }
}

impl std::fmt::Debug for HeaderBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_buf_holds_up_to_its_capacity_and_marks_what_does_not_fit() {
        let mut h = HeaderBuf::default();
        assert!(h.is_empty() && !h.overflowed());
        h.line(b"A", b"1");
        assert_eq!(h.as_bytes(), b"A: 1\r\n");
        let filler = vec![b'x'; HEADER_BUF_CAP - h.as_bytes().len() - 2];
        h.raw(&[&filler[..], b"\r\n"].concat());
        assert_eq!(h.as_bytes().len(), HEADER_BUF_CAP);
        assert!(!h.overflowed());
        h.line(b"B", b"2");
        assert!(h.overflowed(), "a line past the capacity is refused and marked");
        assert_eq!(h.as_bytes().len(), HEADER_BUF_CAP, "nothing partial was added");
        let c = h.clone();
        assert_eq!((c.as_bytes(), c.overflowed()), (h.as_bytes(), true));
    }

    #[test]
    fn a_dropped_header_buf_is_reused_by_the_next() {
        let mut a = HeaderBuf::default();
        a.line(b"A", b"1");
        let ptr = a.as_bytes().as_ptr();
        drop(a);
        let mut b = HeaderBuf::default();
        b.line(b"B", b"2");
        assert_eq!(b.as_bytes().as_ptr(), ptr, "the spare buffer was taken again");
        assert_eq!(b.as_bytes(), b"B: 2\r\n", "and it starts empty");
    }
}

//! Chunked transfer coding (RFC 9112 §7.1) as a byte-at-a-time state machine that never buffers:
//! the caller feeds whatever bytes it has and learns which are framing and which are data, so a
//! body of any size passes through in one fixed buffer. Framing is strict: hex sizes without
//! overflow, extensions bounded and checked against their grammar, CRLF (never a bare LF) after
//! sizes and data, bounded trailers.

use super::parse::is_tchar;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    SizeOverflow,
    BadExtension,
    ExtensionTooLong,
    /// Something other than CRLF where CRLF is required.
    MissingCrlf,
    BadTrailer,
    TrailerTooLarge,
}

impl ChunkError {
    pub fn message(self) -> &'static str {
        match self {
            ChunkError::BadSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size too large",
            ChunkError::BadExtension => "invalid chunk extension",
            ChunkError::ExtensionTooLong => "chunk extension too long",
            ChunkError::MissingCrlf => "missing CRLF in chunked framing",
            ChunkError::BadTrailer => "invalid trailer field",
            ChunkError::TrailerTooLarge => "trailer section too large",
        }
    }
}

/// One step of decoding, measured from the start of the input given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// These many bytes are chunk framing (sizes, extensions, CRLFs, trailers).
    Framing(usize),
    /// These many bytes are body data.
    Data(usize),
    /// The body ended after these many framing bytes; what follows belongs to the next message.
    Done(usize),
}

/// Where inside a chunk extension the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// After `;`: BWS, then a name.
    NameStart,
    Name,
    /// BWS after a name: `=` or `;` must follow.
    NameWs,
    /// After `=`: BWS, then a token or a quoted-string.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash inside a quoted-string.
    QuotedPair,
    /// After a closing quote: `;`, CR, or BWS before `;`.
    QuoteEnd,
    /// BWS after a value: `;` must follow.
    ValueWs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first hex digit of a size line.
    SizeStart,
    Size,
    /// Whitespace after the size; only a `;` may follow (BWS in RFC 9112 §7.1.1).
    SizeWs,
    /// Chunk extensions, RFC 9112 §7.1.1:
    /// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
    Ext(Ext),
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

const MAX_SIZE_DIGITS: u32 = 15;
const MAX_EXTENSION: usize = 1024;

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u32,
    ext_len: usize,
    remaining: u64,
    trailer_len: usize,
    max_trailer: usize,
    last_chunk: bool,
    data_len: u64,
}


impl ChunkedDecoder {
    pub fn new(max_trailer: usize) -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            digits: 0,
            ext_len: 0,
            remaining: 0,
            trailer_len: 0,
            max_trailer,
            last_chunk: false,
            data_len: 0,
        }
    }

    /// Body data bytes seen so far (framing excluded), for body size limits.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`. Returns `Framing(0)` only when `input` is empty.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        if self.state == State::Data {
            if input.is_empty() {
                return Ok(Step::Framing(0));
            }
            let n = (input.len() as u64).min(self.remaining) as usize;
            self.remaining -= n as u64;
            self.data_len += n as u64;
            if self.remaining == 0 {
                self.state = State::DataCr;
            }
            return Ok(Step::Data(n));
        }
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            i += 1;
            match self.state {
                State::SizeStart | State::Size => match hex(b) {
                    Some(d) => {
                        // Leading zeros do not count toward the digit bound.
                        if self.size > 0 || d > 0 {
                            self.digits += 1;
                        }
                        if self.digits > MAX_SIZE_DIGITS {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = self.size * 16 + u64::from(d);
                        self.state = State::Size;
                    }
                    None if self.state == State::SizeStart => return Err(ChunkError::BadSize),
                    None => match b {
                        b'\r' => self.state = State::SizeLf,
                        b';' => {
                            self.state = State::Ext(Ext::NameStart);
                            self.ext_len = 0;
                        }
                        b' ' | b'\t' => self.state = State::SizeWs,
                        _ => return Err(ChunkError::BadSize),
                    },
                },
                // RFC 9112 §7.1.1: whitespace after the size is BWS before an extension; a size
                // line that ends in whitespace is not in the grammar.
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => {
                        self.state = State::Ext(Ext::NameStart);
                        self.ext_len = 0;
                    }
                    _ => return Err(ChunkError::BadSize),
                },
                State::Ext(at) => {
                    self.state = match ext_step(at, b)? {
                        Some(next) => State::Ext(next),
                        None => State::SizeLf,
                    };
                    self.ext_len += 1;
                    if self.ext_len > MAX_EXTENSION {
                        return Err(ChunkError::ExtensionTooLong);
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    if self.size == 0 {
                        self.last_chunk = true;
                        self.state = State::TrailerStart;
                    } else {
                        self.remaining = self.size;
                        self.state = State::Data;
                        self.size = 0;
                        self.digits = 0;
                        return Ok(Step::Framing(i));
                    }
                }
                State::Data => unreachable!("handled above"),
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::SizeStart;
                }
                State::TrailerStart => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::FinalLf,
                        b if is_tchar(b) => self.state = State::TrailerName,
                        _ => return Err(ChunkError::BadTrailer),
                    }
                }
                State::TrailerName => {
                    self.count_trailer()?;
                    match b {
                        b':' => self.state = State::TrailerValue,
                        b if is_tchar(b) => {}
                        _ => return Err(ChunkError::BadTrailer),
                    }
                }
                State::TrailerValue => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                        _ => return Err(ChunkError::BadTrailer),
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::Done;
                    return Ok(Step::Done(i));
                }
                State::Done => return Ok(Step::Done(i - 1)),
            }
        }
        Ok(Step::Framing(i))
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > self.max_trailer + 2 {
            return Err(ChunkError::TrailerTooLarge);
        }
        Ok(())
    }

    /// Walks `input` and returns how many of its bytes belong to the body (all of them unless
    /// the body ends inside), and whether it ended. Used to pass chunked bodies through unchanged.
    pub fn scan(&mut self, input: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut at = 0;
        while at < input.len() {
            match self.step(&input[at..])? {
                Step::Framing(n) | Step::Data(n) => at += n,
                Step::Done(n) => return Ok((at + n, true)),
            }
        }
        Ok((at, self.is_done()))
    }

    /// Removes the framing from `buf` in place, leaving only data at its front. Returns
    /// (data bytes kept, input bytes consumed, done). Bytes after the body are left untouched
    /// at `buf[consumed..]`.
    pub fn decode_in_place(&mut self, buf: &mut [u8]) -> Result<(usize, usize, bool), ChunkError> {
        let mut read = 0;
        let mut write = 0;
        while read < buf.len() {
            match self.step(&buf[read..])? {
                Step::Framing(n) => read += n,
                Step::Data(n) => {
                    buf.copy_within(read..read + n, write);
                    write += n;
                    read += n;
                }
                Step::Done(n) => return Ok((write, read + n, true)),
            }
        }
        Ok((write, read, self.is_done()))
    }
}

/// One byte of a chunk extension; `None` when the CR ending the size line arrives.
fn ext_step(at: Ext, b: u8) -> Result<Option<Ext>, ChunkError> {
    let bws = b == b' ' || b == b'\t';
    let next = match at {
        Ext::NameStart if bws => Ext::NameStart,
        Ext::NameStart | Ext::Name if is_tchar(b) => Ext::Name,
        Ext::Name | Ext::NameWs if bws => Ext::NameWs,
        Ext::Name | Ext::NameWs if b == b'=' => Ext::ValueStart,
        Ext::ValueStart if bws => Ext::ValueStart,
        Ext::ValueStart if b == b'"' => Ext::Quoted,
        Ext::ValueStart | Ext::Token if is_tchar(b) => Ext::Token,
        Ext::Token | Ext::QuoteEnd | Ext::ValueWs if bws => Ext::ValueWs,
        Ext::Quoted if b == b'"' => Ext::QuoteEnd,
        Ext::Quoted if b == b'\\' => Ext::QuotedPair,
        // qdtext: HTAB / SP / VCHAR except `"` and `\` / obs-text (RFC 9110 §5.6.4).
        Ext::Quoted if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 => Ext::Quoted,
        Ext::QuotedPair if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 => Ext::Quoted,
        Ext::Name | Ext::NameWs | Ext::Token | Ext::QuoteEnd | Ext::ValueWs if b == b';' => Ext::NameStart,
        Ext::Name | Ext::Token | Ext::QuoteEnd if b == b'\r' => return Ok(None),
        _ => return Err(ChunkError::BadExtension),
    };
    Ok(Some(next))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

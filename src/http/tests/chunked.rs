//! Chunked bodies: fed whole, byte by byte and split at every offset, through every decoder entry.

use super::*;


const MAX_TRAILER: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Body {
    /// The body ended; `rest` (the next message) follows it untouched.
    Done { data: Vec<u8>, rest: Vec<u8> },
    /// The input ended inside the body.
    Partial { data: Vec<u8> },
    Err(ChunkError),
}

fn done(data: &[u8]) -> Body {
    Body::Done { data: data.to_vec(), rest: Vec::new() }
}

fn done_then(data: &[u8], rest: &[u8]) -> Body {
    Body::Done { data: data.to_vec(), rest: rest.to_vec() }
}

fn partial(data: &[u8]) -> Body {
    Body::Partial { data: data.to_vec() }
}

/// Feeds `input` to `step` in the pieces that `cuts` (ascending offsets) delimit.
pub(super) fn decode_by_step(input: &[u8], cuts: &[usize]) -> Body {
    let mut dec = ChunkedDecoder::new(MAX_TRAILER);
    let mut data = Vec::new();
    let bounds = cuts.iter().copied().chain([input.len()]);
    let mut start = 0;
    for end in bounds {
        let piece = &input[start..end];
        let mut at = 0;
        while at < piece.len() {
            match dec.step(&piece[at..]) {
                Ok(Step::Framing(n)) => at += n,
                Ok(Step::Data(n)) => {
                    data.extend_from_slice(&piece[at..at + n]);
                    at += n;
                }
                Ok(Step::Done(n)) => {
                    assert_eq!(dec.data_len(), data.len() as u64);
                    return Body::Done { data, rest: input[start + at + n..].to_vec() };
                }
                Err(e) => return Body::Err(e),
            }
        }
        start = end;
    }
    Body::Partial { data }
}

/// The same through `decode_in_place`, each piece decoded in its own place; the bytes after the
/// body must be left as they were.
pub(super) fn decode_by_place(input: &[u8], cuts: &[usize]) -> Body {
    let mut dec = ChunkedDecoder::new(MAX_TRAILER);
    let mut buf = input.to_vec();
    let mut data = Vec::new();
    let bounds = cuts.iter().copied().chain([input.len()]);
    let mut start = 0;
    for end in bounds {
        match dec.decode_in_place(&mut buf[start..end]) {
            Ok((kept, used, finished)) => {
                data.extend_from_slice(&buf[start..start + kept]);
                if finished {
                    let tail = start + used;
                    assert_eq!(buf[tail..], input[tail..], "decode_in_place touched bytes after the body");
                    return Body::Done { data, rest: input[tail..].to_vec() };
                }
                assert_eq!(used, end - start);
            }
            Err(e) => return Body::Err(e),
        }
        start = end;
    }
    Body::Partial { data }
}

/// `scan` (pass-through) must agree on where the body ends.
fn scan_end(input: &[u8]) -> Result<(usize, bool), ChunkError> {
    ChunkedDecoder::new(MAX_TRAILER).scan(input)
}

fn check_chunked(name: &str, input: &[u8], want: &Body) {
    let whole = decode_by_step(input, &[]);
    assert_eq!(&whole, want, "row `{name}` (step, whole): {}", show(input));
    assert_eq!(&decode_by_place(input, &[]), want, "row `{name}` (decode_in_place, whole)");
    let bytewise: Vec<usize> = (1..input.len()).collect();
    assert_eq!(&decode_by_step(input, &bytewise), want, "row `{name}` (step, byte by byte)");
    assert_eq!(&decode_by_place(input, &bytewise), want, "row `{name}` (decode_in_place, byte by byte)");
    for k in 0..=input.len() {
        assert_eq!(&decode_by_step(input, &[k]), want, "row `{name}` (step, cut at {k})");
        assert_eq!(&decode_by_place(input, &[k]), want, "row `{name}` (decode_in_place, cut at {k})");
    }
    let scanned = scan_end(input);
    match want {
        Body::Done { rest, .. } => assert_eq!(scanned, Ok((input.len() - rest.len(), true)), "row `{name}` (scan)"),
        Body::Partial { .. } => assert_eq!(scanned, Ok((input.len(), false)), "row `{name}` (scan)"),
        Body::Err(e) => assert_eq!(scanned, Err(*e), "row `{name}` (scan)"),
    }
}

#[test]
fn chunked_bodies() {
    let long_ext = |n: usize| format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(n));
    // The extension bound counts the bytes after `;` up to and including the CR.
    let ext_at_limit = long_ext(1023);
    let ext_over_limit = long_ext(1024);
    let big_trailer = format!("0\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_TRAILER));
    let zeros = format!("{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(40));
    let alphabet = "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";

    let rows: &[(&str, &[u8], Body)] = &[
        ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("two chunks", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", done(b"hello world")),
        ("only the last chunk", b"0\r\n\r\n", done(b"")),
        ("lowercase hex", b"a\r\n0123456789\r\n0\r\n\r\n", done(b"0123456789")),
        ("uppercase hex", alphabet.as_bytes(), done(b"abcdefghijklmnopqrstuvwxyz")),
        ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", done(b"hello")),
        ("leading zeros do not count toward the digit bound", zeros.as_bytes(), done(b"hello")),
        ("CRLF inside the data is data", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", done(b"\r\n\r\n")),
        ("the next message is left untouched", b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", done_then(b"abc", b"GET / HTTP/1.1\r\n")),
        // Extensions (RFC 9112 §7.1.1).
        ("extension name", b"5;a\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("extension with a token value", b"5;a=b\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("extension with a quoted value", b"5;a=\"x \\\"y\\\"; z\"\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("several extensions with BWS", b"5 ; a = b ;c;d=\"\"\t;e\r\nhello\r\n0\r\n\r\n", done(b"hello")),
        ("extension on the last chunk", b"0;end=1\r\n\r\n", done(b"")),
        ("extension of the maximum length", ext_at_limit.as_bytes(), done(b"hello")),
        // Trailers (RFC 9112 §7.1.2).
        ("trailer fields", b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-B:two words\r\n\r\n", done(b"hello")),
        ("trailer with an empty value", b"0\r\nX-A:\r\n\r\nnext", done_then(b"", b"next")),
        // Unfinished bodies.
        ("nothing yet", b"", partial(b"")),
        ("inside the size", b"5", partial(b"")),
        ("inside the data", b"5\r\nhel", partial(b"hel")),
        ("before the CRLF after the data", b"5\r\nhello", partial(b"hello")),
        ("before the final CRLF", b"5\r\nhello\r\n0\r\n", partial(b"hello")),
        ("inside a trailer", b"5\r\nhello\r\n0\r\nX-A: 1", partial(b"hello")),
        ("15 hex digits is the largest size", b"fffffffffffffff\r\nabc", partial(b"abc")),
        // Sizes.
        ("non-hex size", b"g\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("non-hex byte after the digits", b"5g\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("empty size", b"\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("negative size", b"-5\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("whitespace before the size", b" 5\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("whitespace after the size without an extension", b"5 \r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("16 significant hex digits", b"1000000000000000\r\n", Body::Err(ChunkError::SizeOverflow)),
        ("17 hex digits", b"fffffffffffffffff\r\n", Body::Err(ChunkError::SizeOverflow)),
        // Line endings.
        ("bare LF after the size", b"5\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadSize)),
        ("CR without LF after the size", b"5\rhello\r\n0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("bare LF after the data", b"5\r\nhello\n0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("no CRLF after the data", b"5\r\nhello0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("CR without LF after the data", b"5\r\nhello\r0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("more data than the size", b"3\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::MissingCrlf)),
        ("bare LF ending the body", b"0\r\n\n", Body::Err(ChunkError::BadTrailer)),
        ("CR without LF ending the body", b"0\r\n\rX", Body::Err(ChunkError::MissingCrlf)),
        // Bad extensions.
        ("empty extension", b"5;\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension with an empty value", b"5;a=\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension with a control byte", b"5;a\x01\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension with a NUL in a quoted value", b"5;a=\"\0\"\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension ended by a bare LF", b"5;a\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("unterminated quoted value", b"5;a=\"b\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("text after a quoted value", b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("whitespace before the CRLF after an extension", b"5;a \r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("two names without a separator", b"5;a b\r\nhello\r\n0\r\n\r\n", Body::Err(ChunkError::BadExtension)),
        ("extension over the maximum length", ext_over_limit.as_bytes(), Body::Err(ChunkError::ExtensionTooLong)),
        // Bad trailers.
        ("trailer section over the limit", big_trailer.as_bytes(), Body::Err(ChunkError::TrailerTooLarge)),
        ("space in a trailer name", b"0\r\nX A: 1\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("space before a trailer colon", b"0\r\nX-A : 1\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("trailer without a colon", b"0\r\nX-A\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("empty trailer name", b"0\r\n: 1\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("obs-fold in the trailers", b"0\r\nX-A: 1\r\n 2\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("NUL in a trailer value", b"0\r\nX-A: \0\r\n\r\n", Body::Err(ChunkError::BadTrailer)),
        ("bare LF after a trailer", b"0\r\nX-A: 1\n\r\n", Body::Err(ChunkError::BadTrailer)),
    ];
    for (name, input, want) in rows {
        check_chunked(name, input, want);
    }
}


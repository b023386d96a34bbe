//! The chunked decoder on arbitrary bytes fed in two pieces split at a fuzzer-chosen point:
//! `step` over the pieces, `scan` and `decode_in_place` over the whole must agree on the data
//! bytes, where the body ends, and the error, if any.
//!
//! Input layout: two bytes of split point (little-endian), then the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::http::body::{ChunkError, ChunkedDecoder, Step};

const MAX_TRAILER: usize = 64;

/// Steps through `pieces` in order; returns (data, bytes consumed, done).
fn step_pieces(dec: &mut ChunkedDecoder, pieces: [&[u8]; 2]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut data = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let mut at = 0;
        while at < piece.len() {
            match dec.step(&piece[at..])? {
                Step::Framing(n) => {
                    assert!(n > 0, "Framing(0) on non-empty input");
                    at += n;
                }
                Step::Data(n) => {
                    assert!(n > 0, "Data(0) on non-empty input");
                    data.extend_from_slice(&piece[at..at + n]);
                    at += n;
                }
                Step::Done(n) => {
                    assert!(dec.is_done());
                    return Ok((data, consumed + at + n, true));
                }
            }
            assert!(at <= piece.len(), "step claimed more bytes than it was given");
        }
        consumed += piece.len();
    }
    Ok((data, consumed, dec.is_done()))
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let body = &input[2..];
    let split = usize::from(u16::from_le_bytes([input[0], input[1]])) % (body.len() + 1);

    let mut stepper = ChunkedDecoder::new(MAX_TRAILER);
    let stepped = step_pieces(&mut stepper, [&body[..split], &body[split..]]);

    let mut buf = body.to_vec();
    let mut in_place = ChunkedDecoder::new(MAX_TRAILER);
    let decoded = in_place.decode_in_place(&mut buf);

    let mut scanner = ChunkedDecoder::new(MAX_TRAILER);
    let scanned = scanner.scan(body);

    match (&stepped, &decoded, &scanned) {
        (Ok((data, consumed, done)), Ok((kept, used, done2)), Ok((scan_len, done3))) => {
            assert_eq!(&buf[..*kept], &data[..], "data bytes differ");
            assert_eq!((consumed, done), (used, done2));
            assert_eq!((consumed, done), (scan_len, done3));
            assert_eq!(stepper.data_len(), data.len() as u64);
            assert_eq!(in_place.data_len(), data.len() as u64);
            // What follows the body is left as it was.
            assert_eq!(&buf[*used..], &body[*used..]);
        }
        (Err(a), Err(b), Err(c)) => assert!(a == b && b == c, "errors differ: {a:?} {b:?} {c:?}"),
        _ => panic!("outcomes differ: step {stepped:?}, decode_in_place {decoded:?}, scan {scanned:?}"),
    }
});

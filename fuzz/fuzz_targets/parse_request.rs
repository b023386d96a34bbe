//! `parse_request` on arbitrary bytes: never panics, and an accepted head borrows from the
//! input, stays within the limits, and is accepted the same way when it arrives in pieces.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::http::parse::{parse_request, Framing, HeadLimits};

const LIMITS: HeadLimits = HeadLimits { max_head: 8 << 10, max_target: 2 << 10, max_headers: 32 };

/// `part` lies inside `whole` (an empty slice may sit at its very end).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; 32];
    let Ok(Some(head)) = parse_request(data, &mut headers, &LIMITS) else { return };

    assert!(head.head_len <= data.len() && head.head_len <= LIMITS.max_head);
    assert!(head.target.len() <= LIMITS.max_target);
    assert!(within(data, head.target));
    assert!(within(data, head.method.as_bytes()));
    // An absolute-form target without a path gets a static "/" (and an empty query with it).
    assert!(within(data, head.path) || head.path == b"/");
    assert!(within(data, head.query) || head.query.is_empty());
    assert!(head.path.first() == Some(&b'/') || head.path == b"*");
    assert!(!head.path.contains(&b'?'));
    assert!(head.query.is_empty() || head.query[0] == b'?');
    assert!(within(data, head.host) || head.host.is_empty());
    assert_ne!(head.framing, Framing::UntilClose, "requests are never framed by close");
    assert_ne!(head.framing, Framing::Length(0), "an empty body is Framing::None");
    for h in head.headers {
        assert!(within(data, h.name.as_bytes()) && within(data, h.value));
    }

    // The head alone parses the same, and any strict prefix of it asks for more bytes:
    // how reads split a head must not change the answer.
    let (method, path, framing, head_len) = (head.method, head.path, head.framing, head.head_len);
    let mut again = [const { std::mem::MaybeUninit::uninit() }; 32];
    let whole = parse_request(&data[..head_len], &mut again, &LIMITS).unwrap().unwrap();
    assert_eq!((whole.method, whole.path, whole.framing, whole.head_len), (method, path, framing, head_len));
    // Cut points: just short of the end, inside the request line, and at each line's end.
    let line_ends = data[..head_len].iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i);
    for cut in [head_len - 1, head_len / 2, head_len / 3].into_iter().chain(line_ends.take(4)) {
        let mut part = [const { std::mem::MaybeUninit::uninit() }; 32];
        let got = parse_request(&data[..cut], &mut part, &LIMITS);
        assert!(matches!(got, Ok(None)), "prefix of {cut} of {head_len} bytes: {got:?}");
    }
});

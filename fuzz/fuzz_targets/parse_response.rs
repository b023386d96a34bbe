//! `parse_response` on arbitrary bytes, as a reply to GET and to HEAD: never panics, and an
//! accepted head borrows from the input and frames its body as RFC 9112 §6.3 says.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::http::parse::{parse_response, Framing};

const MAX_HEAD: usize = 8 << 10;

fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fuzz_target!(|data: &[u8]| {
    for head_request in [false, true] {
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; 64];
        let Ok(Some(res)) = parse_response(data, &mut headers, head_request, MAX_HEAD) else { continue };
        assert!(res.head_len <= data.len() && res.head_len <= MAX_HEAD);
        assert!((100..=599).contains(&res.code));
        assert!(within(data, res.reason) || res.reason.is_empty());
        for h in res.headers {
            assert!(within(data, h.name.as_bytes()) && within(data, h.value));
        }
        if head_request || res.code < 200 || res.code == 204 || res.code == 304 {
            assert_eq!(res.framing, Framing::None);
        }
        if let Framing::Length(n) = res.framing {
            assert_eq!(res.content_length, Some(n));
        }
        if res.framing == Framing::UntilClose {
            assert!(!res.keep_alive, "a body ended by close cannot leave the connection open");
        }
        // The head alone parses to the same length.
        let mut again = [const { std::mem::MaybeUninit::uninit() }; 64];
        let whole = parse_response(&data[..res.head_len], &mut again, head_request, MAX_HEAD).unwrap().unwrap();
        assert_eq!((whole.code, whole.head_len, whole.framing), (res.code, res.head_len, res.framing));
    }
});

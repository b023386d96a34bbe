//! Parse a request, write the head forwarded upstream, and parse that again: the gateway must
//! never send a head its own parser (or an upstream's) would refuse, and the method, target and
//! body framing must survive the rewrite.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::http::parse::{parse_request, HeadLimits, Version};
use ringgate::http::write::{request_head, ForwardInfo, Ids};

const LIMITS: HeadLimits = HeadLimits { max_head: 8 << 10, max_target: 2 << 10, max_headers: 32 };
/// The written head adds a handful of fields and may grow past the client's limits.
const WRITTEN: HeadLimits = HeadLimits { max_head: 64 << 10, max_target: 64 << 10, max_headers: 64 };

fuzz_target!(|data: &[u8]| {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; 32];
    let Ok(Some(req)) = parse_request(data, &mut headers, &LIMITS) else { return };

    let ids = Ids::new(0);
    let info = ForwardInfo { client_ip: b"192.0.2.1", proto: b"http", request_id: b"fuzz-1", path: req.path, strip: &[], extra: b"", default_host: b"svc" };
    let mut out = Vec::new();
    request_head(&mut out, data, &req, &info, &ids);

    let mut again = [const { std::mem::MaybeUninit::uninit() }; 64];
    let fwd = match parse_request(&out, &mut again, &WRITTEN) {
        Ok(Some(fwd)) => fwd,
        other => panic!(
            "forwarded head refused: {other:?}\n--- in ---\n{}\n--- out ---\n{}",
            String::from_utf8_lossy(&data[..req.head_len]),
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(fwd.head_len, out.len(), "the written head is exactly one head");
    assert_eq!(fwd.method, req.method);
    assert_eq!(fwd.framing, req.framing);
    assert_eq!(fwd.version, Version::Http11);
    assert_eq!(fwd.path, req.path);
    assert_eq!(fwd.query, req.query);
    assert_eq!(fwd.host, req.host);
    assert!(!fwd.expect_continue, "the gateway answers 100-continue itself");
    assert!(fwd.keep_alive);
});

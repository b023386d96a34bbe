//! The rate-limit response headers: the IETF draft's `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers) and the widely used `RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset` trio, plus `Retry-After` (RFC 9110 §10.2.3) on
//! refusal. Appends to the caller's buffer; never allocates beyond growing it.

use std::cmp::Ordering;
use std::time::Duration;

use super::{Decision, LimitConfig};

/// Appends the headers for the limits applied to one request, each line ending in CRLF:
///
/// ```text
/// RateLimit-Policy: "per-ip";q=100;w=60, "per-consumer";q=1000;w=3600
/// RateLimit: "per-ip";r=42;t=17
/// RateLimit-Limit: 100
/// RateLimit-Remaining: 42
/// RateLimit-Reset: 17
/// Retry-After: 3                      (only when refused)
/// ```
///
/// The policy line lists every limit; the other lines describe the most restrictive one: a
/// refusing limit over an admitting one, then the longest wait (refused) or the fewest requests
/// left (admitted), then the longest reset; the first listed wins a tie. `w` is the window in
/// whole seconds, rounded up. Writes nothing when `applied` is empty.
pub fn write_headers(out: &mut Vec<u8>, applied: &[(&LimitConfig, Decision)]) {
    let Some((cfg, d)) = applied.iter().copied().reduce(|a, b| match tighter(&b.1, &a.1) {
        Ordering::Greater => b,
        _ => a,
    }) else {
        return;
    };

    out.extend_from_slice(b"RateLimit-Policy: ");
    for (i, (policy, _)) in applied.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        push_name(out, &policy.name);
        out.extend_from_slice(b";q=");
        push_u64(out, policy.requests);
        out.extend_from_slice(b";w=");
        push_u64(out, window_secs(policy.window));
    }

    out.extend_from_slice(b"\r\nRateLimit: ");
    push_name(out, &cfg.name);
    out.extend_from_slice(b";r=");
    push_u64(out, d.remaining);
    out.extend_from_slice(b";t=");
    push_u64(out, d.reset_secs);

    out.extend_from_slice(b"\r\nRateLimit-Limit: ");
    push_u64(out, d.limit);
    out.extend_from_slice(b"\r\nRateLimit-Remaining: ");
    push_u64(out, d.remaining);
    out.extend_from_slice(b"\r\nRateLimit-Reset: ");
    push_u64(out, d.reset_secs);
    out.extend_from_slice(b"\r\n");

    if !d.allowed {
        // "Retry-After: 0" would invite an immediate retry that is bound to fail.
        out.extend_from_slice(b"Retry-After: ");
        push_u64(out, d.retry_after_secs.max(1));
        out.extend_from_slice(b"\r\n");
    }
}

/// `Greater` when `a` restricts the client more than `b`.
fn tighter(a: &Decision, b: &Decision) -> Ordering {
    match (a.allowed, b.allowed) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => a.retry_after_secs.cmp(&b.retry_after_secs).then(a.reset_secs.cmp(&b.reset_secs)),
        (true, true) => b.remaining.cmp(&a.remaining).then(a.reset_secs.cmp(&b.reset_secs)),
    }
}

/// An RFC 8941 sf-string. Config validation already limits names to printable ASCII without
/// `"` or `\`; escaping here keeps the header well-formed whatever the name.
fn push_name(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    for b in name.bytes() {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => out.push(b),
            _ => out.push(b'?'),
        }
    }
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn window_secs(window: Duration) -> u64 {
    let secs = window.as_secs();
    if window.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

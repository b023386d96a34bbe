//! The keep-alive invariant: on one connection, every request gets exactly one response, in
//! order, whatever its outcome; where the gateway must close (framing in doubt, a body it will
//! not read) it sends exactly one response and then closes; and the upstream receives exactly the
//! admitted requests. Checked over a table (each outcome followed by a good request) and over
//! generated sequences, sent one at a time and pipelined.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};

/// A key the test's `429` case uses; exhausted once at start-up.
const SPENT_KEY: &str = "spent";

/// What the gateway does with a request, as the client must see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Proxied: the upstream sees it and its 200 comes back.
    Proxied,
    /// Answered by the gateway, the connection stays open.
    Answered(u16),
    /// Answered by the gateway; the connection may close after it (a refused body that is not
    /// read unless it is already wholly buffered).
    AnsweredMayClose(u16),
    /// Answered by the gateway, then the connection closes.
    AnsweredThenClose(u16),
}

/// One kind of request of the table, by the outcome it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Head,
    PostLength,
    PostChunked,
    ExpectContinue,
    Http10KeepAlive,
    Http10NotFound,
    NotFound,
    MethodNotAllowed,
    Unauthorized,
    Forbidden,
    RateLimited,
    TooLarge,
    BadJson,
    UnsupportedType,
    UnsupportedTypeChunked,
    HeadersTooLarge,
    BadFraming,
    Preflight,
    NotFoundHead,
}

const KINDS: [Kind; 20] = [
    Kind::Get,
    Kind::Head,
    Kind::PostLength,
    Kind::PostChunked,
    Kind::ExpectContinue,
    Kind::Http10KeepAlive,
    Kind::Http10NotFound,
    Kind::NotFound,
    Kind::MethodNotAllowed,
    Kind::Unauthorized,
    Kind::Forbidden,
    Kind::RateLimited,
    Kind::TooLarge,
    Kind::BadJson,
    Kind::UnsupportedType,
    Kind::UnsupportedTypeChunked,
    Kind::HeadersTooLarge,
    Kind::BadFraming,
    Kind::Preflight,
    Kind::NotFoundHead,
];

impl Kind {
    fn outcome(self) -> Outcome {
        use Outcome::*;
        match self {
            Kind::Get | Kind::Head | Kind::PostLength | Kind::PostChunked | Kind::ExpectContinue | Kind::Http10KeepAlive => {
                Proxied
            }
            Kind::Http10NotFound | Kind::NotFound | Kind::NotFoundHead => Answered(404),
            Kind::MethodNotAllowed => Answered(405),
            Kind::Unauthorized => Answered(401),
            Kind::Forbidden => Answered(403),
            Kind::RateLimited => Answered(429),
            Kind::Preflight => Answered(204),
            Kind::BadJson => AnsweredMayClose(400),
            Kind::UnsupportedType => AnsweredMayClose(415),
            Kind::UnsupportedTypeChunked => AnsweredMayClose(415),
            Kind::TooLarge => AnsweredThenClose(413),
            Kind::HeadersTooLarge => AnsweredThenClose(431),
            Kind::BadFraming => AnsweredThenClose(400),
        }
    }

    fn is_head(self) -> bool {
        matches!(self, Kind::Head | Kind::NotFoundHead)
    }

    /// The request's bytes; `id` goes in X-Request-Id, which the gateway keeps and echoes on
    /// every response it can parse the head of, and the upstream echoes in its body.
    fn bytes(self, id: &str) -> Vec<u8> {
        let rid = format!("X-Request-Id: {id}\r\n");
        match self {
            Kind::Get => format!("GET /ok HTTP/1.1\r\nHost: h\r\n{rid}\r\n").into_bytes(),
            Kind::Head => format!("HEAD /ok HTTP/1.1\r\nHost: h\r\n{rid}\r\n").into_bytes(),
            Kind::PostLength => format!("POST /ok HTTP/1.1\r\nHost: h\r\n{rid}Content-Length: 5\r\n\r\nhello").into_bytes(),
            Kind::PostChunked => format!(
                "POST /ok HTTP/1.1\r\nHost: h\r\n{rid}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            .into_bytes(),
            Kind::ExpectContinue => format!(
                "PUT /ok HTTP/1.1\r\nHost: h\r\n{rid}Expect: 100-continue\r\nContent-Length: 4\r\n\r\nbody"
            )
            .into_bytes(),
            Kind::Http10KeepAlive => format!("GET /ok HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n{rid}\r\n").into_bytes(),
            Kind::Http10NotFound => {
                format!("GET /nope HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n{rid}\r\n").into_bytes()
            }
            Kind::NotFound => format!("GET /nope HTTP/1.1\r\nHost: h\r\n{rid}\r\n").into_bytes(),
            Kind::NotFoundHead => format!("HEAD /nope HTTP/1.1\r\nHost: h\r\n{rid}\r\n").into_bytes(),
            Kind::MethodNotAllowed => format!("DELETE /ok HTTP/1.1\r\nHost: h\r\n{rid}\r\n").into_bytes(),
            Kind::Unauthorized => format!("GET /key HTTP/1.1\r\nHost: h\r\n{rid}\r\n").into_bytes(),
            Kind::Forbidden => format!("GET /deny HTTP/1.1\r\nHost: h\r\n{rid}\r\n").into_bytes(),
            Kind::RateLimited => format!("GET /limited HTTP/1.1\r\nHost: h\r\nX-Limit-Key: {SPENT_KEY}\r\n{rid}\r\n").into_bytes(),
            Kind::TooLarge => format!("POST /ok HTTP/1.1\r\nHost: h\r\n{rid}Content-Length: 100\r\n\r\n{}", "x".repeat(100)).into_bytes(),
            Kind::BadJson => format!(
                "POST /json HTTP/1.1\r\nHost: h\r\n{rid}Content-Type: application/json\r\nContent-Length: 6\r\n\r\n{{\"a\":}}"
            )
            .into_bytes(),
            Kind::UnsupportedType => format!(
                "POST /json HTTP/1.1\r\nHost: h\r\n{rid}Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
            )
            .into_bytes(),
            Kind::UnsupportedTypeChunked => format!(
                "POST /json HTTP/1.1\r\nHost: h\r\n{rid}Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            .into_bytes(),
            Kind::HeadersTooLarge => {
                format!("GET /ok HTTP/1.1\r\nHost: h\r\n{rid}X-Big: {}\r\n\r\n", "b".repeat(5000)).into_bytes()
            }
            Kind::BadFraming => format!(
                "POST /ok HTTP/1.1\r\nHost: h\r\n{rid}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )
            .into_bytes(),
            Kind::Preflight => format!(
                "OPTIONS /ok HTTP/1.1\r\nHost: h\r\n{rid}Origin: https://app.test\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
            )
            .into_bytes(),
        }
    }

    /// Whether the gateway can read the head far enough to echo the request id.
    fn echoes_id(self) -> bool {
        !matches!(self, Kind::HeadersTooLarge | Kind::BadFraming)
    }
}

/// The gateway under test: every outcome reachable on one listener, one worker.
struct Rig {
    gw: Gw,
    up: Upstream,
}

fn rig() -> Rig {
    // Echoes the request id in the body, so each 200 names the request it answers.
    let up = Upstream::start(|c| {
        while let Some(r) = c.read_request() {
            let id = r.header("x-request-id").unwrap_or_default();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", id.len());
            // RFC 9110 §9.3.2: the answer to HEAD has no body.
            let body = if r.request_line().starts_with("HEAD ") { "" } else { id.as_str() };
            if !c.write(format!("{head}{body}").as_bytes()) {
                return;
            }
        }
    });
    let key_digest: String =
        ring::digest::digest(&ring::digest::SHA256, b"k").as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\
         [limits]\nmax_head = \"4KiB\"\nmax_target = \"2KiB\"\n\
         [[api_keys]]\nname = \"keys\"\nheader = \"X-Api-Key\"\nkeys = [{{ consumer = \"c\", sha256 = \"{key_digest}\" }}]\n\
         [[rate_limits]]\nname = \"tight\"\nrequests = 1\nwindow = \"1h\"\nkey = \"header:X-Limit-Key\"\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{up}\"]\n\
         [[routes]]\nname = \"ok\"\npaths = [\"/ok\"]\nmethods = [\"GET\", \"HEAD\", \"POST\", \"PUT\"]\nservice = \"svc\"\nmax_body = \"64B\"\n\
         [routes.cors]\nallow_origins = [\"https://app.test\"]\nallow_methods = [\"GET\", \"PUT\"]\n\
         [[routes]]\nname = \"key\"\npaths = [\"/key\"]\nservice = \"svc\"\nauth = [\"keys\"]\n\
         [[routes]]\nname = \"deny\"\npaths = [\"/deny\"]\nservice = \"svc\"\nip_deny = [\"127.0.0.0/8\"]\n\
         [[routes]]\nname = \"limited\"\npaths = [\"/limited\"]\nservice = \"svc\"\nrate_limits = [\"tight\"]\n\
         [[routes]]\nname = \"json\"\npaths = [\"/json\"]\nservice = \"svc\"\n\
         [routes.validate]\ncontent_types = [\"application/json\"]\njson = true\nmax_json = \"1KiB\"\n",
        up = up.addr
    );
    let gw = Gw::start(&toml);
    // Spend the 429 case's key.
    let r = Client::connect(gw.addr).request(format!("GET /limited HTTP/1.1\r\nHost: h\r\nX-Limit-Key: {SPENT_KEY}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200, "the first request on the spent key is admitted");
    let r = Client::connect(gw.addr).request(format!("GET /limited HTTP/1.1\r\nHost: h\r\nX-Limit-Key: {SPENT_KEY}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 429, "the key is spent");
    Rig { gw, up }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Reads the next final response (skipping 1xx) or `None` at EOF.
fn next_final(c: &mut Client, head: bool) -> Option<Response> {
    loop {
        let r = c.read_response_for(head)?;
        if r.status >= 200 {
            return Some(r);
        }
    }
}

/// Runs one sequence on one connection and checks the invariant; `Err` says what broke.
fn check_sequence(rig: &Rig, kinds: &[Kind], pipelined: bool) -> Result<(), String> {
    let tag = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let ids: Vec<String> = (0..kinds.len()).map(|i| format!("seq{tag}-{i}")).collect();
    let mut c = Client::connect(rig.gw.addr);
    c.stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    if pipelined {
        let all: Vec<u8> = kinds.iter().zip(&ids).flat_map(|(k, id)| k.bytes(id)).collect();
        c.send(&all);
    }
    let mut admitted = Vec::new();
    let mut closed_after = None;
    for (i, (&kind, id)) in kinds.iter().zip(&ids).enumerate() {
        if !pipelined {
            c.send(&kind.bytes(id));
        }
        let ctx = || format!("request {i} ({kind:?}) of {kinds:?}, pipelined={pipelined}");
        let r = next_final(&mut c, kind.is_head()).ok_or_else(|| format!("no response to {}", ctx()))?;
        let want = match kind.outcome() {
            Outcome::Proxied => 200,
            Outcome::Answered(s) | Outcome::AnsweredMayClose(s) | Outcome::AnsweredThenClose(s) => s,
        };
        if r.status != want {
            return Err(format!("{}: status {} instead of {want}\n{}", ctx(), r.status, r.head));
        }
        if kind.echoes_id() && r.header("x-request-id").as_deref() != Some(id.as_str()) {
            return Err(format!("{}: answered with request id {:?}, out of order", ctx(), r.header("x-request-id")));
        }
        if kind.outcome() == Outcome::Proxied {
            if !kind.is_head() && r.body_str() != *id {
                return Err(format!("{}: upstream answer for {:?}", ctx(), r.body_str()));
            }
            admitted.push(id.clone());
        }
        let says_close = r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match kind.outcome() {
            Outcome::AnsweredThenClose(_) => {
                if !says_close || !c.is_closed() {
                    return Err(format!("{}: connection not closed after the response", ctx()));
                }
                closed_after = Some(i);
                break;
            }
            Outcome::AnsweredMayClose(_) if says_close => {
                if !c.is_closed() {
                    return Err(format!("{}: said close but stayed open", ctx()));
                }
                closed_after = Some(i);
                break;
            }
            _ if says_close => return Err(format!("{}: closed a connection that should stay open", ctx())),
            _ => {}
        }
    }
    if closed_after.is_none() {
        // Nothing more may come: a last request must get its own answer next, and only one.
        let probe = format!("probe{tag}");
        c.send(format!("GET /ok HTTP/1.1\r\nHost: h\r\nX-Request-Id: {probe}\r\nConnection: close\r\n\r\n").as_bytes());
        let r = next_final(&mut c, false).ok_or("no response to the closing probe")?;
        if r.header("x-request-id").as_deref() != Some(probe.as_str()) || r.status != 200 {
            return Err(format!("after {kinds:?} (pipelined={pipelined}) the probe got {} for {:?}", r.status, r.header("x-request-id")));
        }
        admitted.push(probe);
        let rest = c.read_bounded(64 << 10, Duration::from_secs(5));
        if !rest.is_empty() {
            return Err(format!("{} bytes after the last response: {:?}", rest.len(), String::from_utf8_lossy(&rest[..rest.len().min(200)])));
        }
    }
    // The upstream saw exactly the admitted requests of this sequence, in order.
    let prefix = format!("seq{tag}-");
    let probe = format!("probe{tag}");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let seen: Vec<String> = rig
            .up
            .requests()
            .iter()
            .filter_map(|r| r.header("x-request-id"))
            .filter(|id| id.starts_with(&prefix) || *id == probe)
            .collect();
        if seen == admitted {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("upstream saw {seen:?}, admitted were {admitted:?} ({kinds:?}, pipelined={pipelined})"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_outcome_followed_by_a_good_request_gets_one_answer_each() {
    let rig = rig();
    for &kind in &KINDS {
        for pipelined in [false, true] {
            if let Err(e) = check_sequence(&rig, &[kind, Kind::Get], pipelined) {
                panic!("{e}");
            }
        }
    }
}

#[test]
fn gateway_answers_on_a_kept_alive_connection_are_not_repeated() {
    // The case that escaped: one bodiless request the gateway answers itself, then silence.
    let rig = rig();
    for req in [
        &b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"HEAD /nope HTTP/1.1\r\nHost: a\r\n\r\n",
        b"DELETE /ok HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /key HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let mut c = Client::connect(rig.gw.addr);
        c.send(req);
        c.shutdown_write();
        let all = c.read_bounded(64 << 10, Duration::from_secs(5));
        let answers = all.windows(9).filter(|w| w.starts_with(b"HTTP/1.")).count();
        assert_eq!(answers, 1, "{}: {} answers", String::from_utf8_lossy(req), answers);
    }
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    proptest::sample::select(KINDS.to_vec())
}

#[test]
fn generated_sequences_get_exactly_one_answer_per_request() {
    let rig = rig();
    let cases = std::env::var("KEEPALIVE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let mut runner = TestRunner::new(PropConfig { cases, failure_persistence: None, ..PropConfig::default() });
    let strategy = (proptest::collection::vec(kind_strategy(), 1..16), any::<bool>());
    let started = Instant::now();
    let result = runner.run(&strategy, |(kinds, pipelined)| {
        check_sequence(&rig, &kinds, pipelined).map_err(proptest::test_runner::TestCaseError::fail)
    });
    eprintln!("{cases} generated sequences in {:.2?}", started.elapsed());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Responses the gateway sends for arbitrary bytes on one connection never outnumber the
/// requests in them: at most one per complete head, plus one error for bytes that never made a
/// head. The same check as the `conn_loop` fuzz target, on random and mutated inputs.
#[test]
fn arbitrary_bytes_never_get_more_answers_than_requests() {
    let rig = rig();
    let mut seeds: Vec<Vec<u8>> = KINDS.iter().map(|k| k.bytes("x")).collect();
    seeds.push(KINDS.iter().flat_map(|k| k.bytes("y")).collect());
    let mut runner = TestRunner::new(PropConfig { cases: 150, failure_persistence: None, ..PropConfig::default() });
    let strategy = (
        proptest::sample::select(seeds),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    let result = runner.run(&strategy, |(mut input, edits, tail)| {
        for (at, byte) in edits {
            let i = at.index(input.len().max(1));
            if i < input.len() {
                input[i] = byte;
            }
        }
        input.extend_from_slice(&tail);
        let (responses, bound) = answers_for(rig.gw.addr, &input);
        prop_assert!(responses <= bound, "{responses} answers for at most {bound} requests: {:?}", String::from_utf8_lossy(&input));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Sends `input` and half-closes; returns the final responses counted and the most allowed.
fn answers_for(addr: std::net::SocketAddr, input: &[u8]) -> (usize, usize) {
    let heads = input.windows(2).filter(|w| *w == b"\n\n").count() + input.windows(3).filter(|w| *w == b"\n\r\n").count();
    let mut c = Client::connect(addr);
    c.stream.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    c.send(input);
    c.shutdown_write();
    let all = c.read_bounded(256 << 10, Duration::from_secs(15));
    let finals = all
        .windows(12)
        .filter(|w| w.starts_with(b"HTTP/1.") && w[8] == b' ' && w[9] != b'1')
        .count();
    (finals, heads + 1)
}

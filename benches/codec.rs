//! Hot-path micro-benchmarks: request and response head parsing, the route trie against the
//! naive linear scan it replaces, the forwarded-head rewrite, and chunked body scanning.
//!
//! Run: `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringgate::config::{HostMatch, PathMatch, Route};
use ringgate::http::body::ChunkedDecoder;
use ringgate::http::parse::{parse_request, HeadLimits};
use ringgate::http::write::{request_head, ForwardInfo, Ids};
use ringgate::router::{RouteMatch, Router};

/// What a desktop browser sends for a page: about 400 bytes, a dozen fields.
const BROWSER_GET: &[u8] = b"GET /api/users/42/orders?page=2&sort=desc HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/api/users/42\r\n\
Connection: keep-alive\r\n\
Cookie: session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Priority: u=0, i\r\n\r\n";

/// A small JSON API call with a body announced by Content-Length.
const API_POST: &[u8] = b"POST /api/orders HTTP/1.1\r\n\
Host: api.example.com\r\n\
Content-Type: application/json\r\n\
Content-Length: 42\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig\r\n\r\n";

const LIMITS: HeadLimits = HeadLimits { max_head: 16 << 10, max_target: 8 << 10, max_headers: 100 };

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_request");
    for (name, head) in [("browser_get", BROWSER_GET), ("api_post", API_POST)] {
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(name, |b| {
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; 100];
            b.iter(|| {
                let req = parse_request(black_box(head), &mut headers, &LIMITS).unwrap().unwrap();
                black_box((req.head_len, req.framing));
            })
        });
    }
    g.finish();
}

/// 200 routes as a mid-sized gateway might have: 40 services of 5 resources each under
/// `/api/v1`, some with method sets, a few bound to hosts, plus exact health paths.
fn many_routes() -> Vec<Route> {
    let mut routes = Vec::new();
    let mk = |name: String, path: PathMatch, hosts: Vec<HostMatch>, methods: &[&str]| Route {
        name,
        paths: vec![path],
        hosts,
        methods: methods.iter().map(|m| m.to_string()).collect(),
        service: 0,
        strip_prefix: false,
        max_body: 0,
        allow_header: String::new(),
        policy: Default::default(),
        timeout: None,
        transform: Default::default(),
        aggregate: None,
        cache: None,
    };
    for s in 0..40 {
        for (r, res) in ["users", "orders", "items", "events", "reports"].iter().enumerate() {
            let path = if r == 4 {
                PathMatch::Exact(format!("/api/v1/svc{s}/{res}"))
            } else {
                PathMatch::Prefix(format!("/api/v1/svc{s}/{res}"))
            };
            let hosts = if s % 10 == 0 { vec![HostMatch::Suffix(format!(".svc{s}.example.com"))] } else { Vec::new() };
            let methods: &[&str] = if r == 1 { &["GET", "POST"] } else { &[] };
            routes.push(mk(format!("svc{s}-{res}"), path, hosts, methods));
        }
    }
    assert_eq!(routes.len(), 200);
    routes
}

/// (host, path, method) looked up once each per iteration: hits at several depths, a host
/// route, a method miss and a path miss.
const LOOKUPS: &[(&str, &str, &str)] = &[
    ("api.example.com", "/api/v1/svc7/users/42", "GET"),
    ("api.example.com", "/api/v1/svc33/orders", "POST"),
    ("api.example.com", "/api/v1/svc21/reports", "GET"),
    ("eu.svc20.example.com", "/api/v1/svc20/items/9/parts", "GET"),
    ("api.example.com", "/api/v1/svc39/events/2024/05/01", "GET"),
    ("api.example.com", "/api/v1/svc12/orders/7", "DELETE"),
    ("api.example.com", "/api/v1/svc99/users", "GET"),
    ("api.example.com", "/static/app.js", "GET"),
];

/// The design the trie replaces: try every route, keep the longest path that matches.
fn linear_lookup(routes: &[Route], host: &[u8], path: &[u8], method: &str) -> RouteMatch {
    let mut best: Option<(usize, usize, usize)> = None; // (route, matched length, segments)
    let mut path_matched = None;
    for (i, r) in routes.iter().enumerate() {
        let host_ok = r.hosts.is_empty()
            || r.hosts.iter().any(|h| match h {
                HostMatch::Exact(name) => host.eq_ignore_ascii_case(name.as_bytes()),
                HostMatch::Suffix(sfx) => {
                    host.len() > sfx.len() && host[host.len() - sfx.len()..].eq_ignore_ascii_case(sfx.as_bytes())
                }
            });
        if !host_ok {
            continue;
        }
        for pm in &r.paths {
            let (len, ok) = match pm {
                PathMatch::Exact(p) => (p.len(), path == p.as_bytes()),
                PathMatch::Prefix(p) => {
                    let p = p.as_bytes();
                    let at_boundary = p == b"/" || path.len() == p.len() || path.get(p.len()) == Some(&b'/');
                    (p.len(), path.starts_with(p) && at_boundary)
                }
            };
            if !ok {
                continue;
            }
            let segs = match pm {
                PathMatch::Exact(p) | PathMatch::Prefix(p) => p.split('/').filter(|s| !s.is_empty()).count(),
            };
            path_matched = Some((i, segs));
            if !r.methods.is_empty() && !r.methods.iter().any(|m| m == method) {
                continue;
            }
            if best.is_none_or(|(_, l, _)| len > l) {
                best = Some((i, len, segs));
            }
        }
    }
    match (best, path_matched) {
        (Some((route, _, segments)), _) => RouteMatch::Found { route, segments },
        (None, Some((route, segments))) => RouteMatch::MethodNotAllowed { route, segments },
        (None, None) => RouteMatch::NotFound,
    }
}

fn bench_router(c: &mut Criterion) {
    let routes = many_routes();
    let router = Router::new(&routes);
    // Both must agree, or the comparison means nothing.
    for (h, p, m) in LOOKUPS {
        let trie = router.lookup(h.as_bytes(), p.as_bytes(), m);
        let linear = linear_lookup(&routes, h.as_bytes(), p.as_bytes(), m);
        assert_eq!(trie, linear, "{m} {h}{p}");
    }
    let mut g = c.benchmark_group("router_200_routes_8_lookups");
    g.bench_function("trie", |b| {
        b.iter(|| {
            for (h, p, m) in LOOKUPS {
                black_box(router.lookup(black_box(h.as_bytes()), black_box(p.as_bytes()), m));
            }
        })
    });
    g.bench_function("linear_scan", |b| {
        b.iter(|| {
            for (h, p, m) in LOOKUPS {
                black_box(linear_lookup(&routes, black_box(h.as_bytes()), black_box(p.as_bytes()), m));
            }
        })
    });
    g.finish();
}

fn bench_write(c: &mut Criterion) {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; 100];
    let req = parse_request(BROWSER_GET, &mut headers, &LIMITS).unwrap().unwrap();
    let ids = Ids::new(0);
    let info = ForwardInfo {
        client_ip: b"203.0.113.7",
        proto: b"http",
        request_id: b"0123456789abcdef0123456789abcdef",
        path: req.path,
        query: req.query,
        edits: None,
        framing: req.framing,
        strip: &[],
        extra: b"",
        default_host: b"svc",
        strip_conditionals: false,
    };
    let mut out = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("write");
    g.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    g.bench_function("request_head_browser_get", |b| {
        b.iter(|| {
            out.clear();
            request_head(&mut out, BROWSER_GET, black_box(&req), &info, &ids);
            black_box(out.len());
        })
    });
    g.finish();
}

/// A 64 KiB body in chunks of `chunk` bytes, each with its size line and CRLF, then the end.
fn chunked_body(chunk: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut left = 64 << 10;
    while left > 0 {
        let n = chunk.min(left);
        body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'x', n));
        body.extend_from_slice(b"\r\n");
        left -= n;
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

fn bench_chunked(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunked_scan_64KiB");
    for chunk in [4096, 128] {
        let body = chunked_body(chunk);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("chunks_of_{chunk}"), |b| {
            b.iter_batched_ref(
                || ChunkedDecoder::new(8 << 10),
                |dec| {
                    let (n, done) = dec.scan(black_box(&body)).unwrap();
                    assert!(done && n == body.len());
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench_parse, bench_router, bench_write, bench_chunked);
criterion_main!(benches);

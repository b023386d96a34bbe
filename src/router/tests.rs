//! Router lookups over small route tables: segment-boundary prefixes, exact paths, host
//! matching and precedence, method filtering, and the path left after `strip_prefix`.

use super::*;
use crate::config::Config;

/// A route as the config would build it: `=/x` is exact, `*.x` a wildcard host.
fn route(name: &str, paths: &[&str], hosts: &[&str], methods: &[&str]) -> Route {
    Route {
        name: name.into(),
        paths: paths
            .iter()
            .map(|p| match p.strip_prefix('=') {
                Some(e) => PathMatch::Exact(e.into()),
                None => PathMatch::Prefix(p.to_string()),
            })
            .collect(),
        hosts: hosts
            .iter()
            .map(|h| match h.strip_prefix('*') {
                Some(sfx) => HostMatch::Suffix(sfx.into()),
                None => HostMatch::Exact(h.to_string()),
            })
            .collect(),
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
    }
}

fn found(route: usize, segments: usize) -> RouteMatch {
    RouteMatch::Found { route, segments }
}

/// A 405 match; its segment count is checked where a test names it (see `check`).
fn not_allowed(route: usize) -> RouteMatch {
    RouteMatch::MethodNotAllowed { route, segments: usize::MAX }
}

/// Each case is (host, path, method, expected match).
fn check(routes: &[Route], cases: &[(&str, &str, &str, RouteMatch)]) {
    let router = Router::new(routes);
    for (host, path, method, want) in cases {
        let mut got = router.lookup(host.as_bytes(), path.as_bytes(), method);
        if let (RouteMatch::MethodNotAllowed { segments, .. }, RouteMatch::MethodNotAllowed { segments: usize::MAX, .. }) = (&mut got, want) {
            *segments = usize::MAX;
        }
        assert_eq!(&got, want, "{method} {host}{path}");
    }
}

#[test]
fn prefixes_match_at_segment_boundaries() {
    let routes = [
        route("users", &["/api/users"], &[], &[]),
        route("api", &["/api"], &[], &[]),
        route("css", &["/static/css"], &[], &[]),
    ];
    check(
        &routes,
        &[
            ("", "/api/users", "GET", found(0, 2)),
            ("", "/api/users/", "GET", found(0, 2)),
            ("", "/api/users/7", "GET", found(0, 2)),
            ("", "/api/users/7/orders", "GET", found(0, 2)),
            // Longest prefix wins; a partial segment is not a match.
            ("", "/api/usersX", "GET", found(1, 1)),
            ("", "/api/user", "GET", found(1, 1)),
            ("", "/api", "GET", found(1, 1)),
            ("", "/api/", "GET", found(1, 1)),
            ("", "/apix", "GET", RouteMatch::NotFound),
            ("", "/ap", "GET", RouteMatch::NotFound),
            ("", "/static", "GET", RouteMatch::NotFound),
            ("", "/static/css/site.css", "GET", found(2, 2)),
            ("", "/static/cssx", "GET", RouteMatch::NotFound),
            ("", "/", "GET", RouteMatch::NotFound),
            ("", "", "GET", RouteMatch::NotFound),
            // Empty segments do not count: `//` matches like `/`.
            ("", "//api//users//7", "GET", found(0, 2)),
            // Segments compare as bytes: no case folding, no percent-decoding.
            ("", "/API/users", "GET", RouteMatch::NotFound),
            ("", "/api/%75sers", "GET", found(1, 1)),
        ],
    );
}

#[test]
fn root_prefix_catches_everything() {
    let routes = [route("root", &["/"], &[], &[]), route("api", &["/api"], &[], &[])];
    check(
        &routes,
        &[
            ("", "/", "GET", found(0, 0)),
            ("", "", "GET", found(0, 0)),
            ("", "/anything/at/all", "GET", found(0, 0)),
            ("", "/apix", "GET", found(0, 0)),
            ("", "/api/x", "GET", found(1, 1)),
            ("any.host", "/x", "DELETE", found(0, 0)),
        ],
    );
}

#[test]
fn exact_paths_match_only_themselves() {
    let routes = [
        route("users", &["/api/users"], &[], &[]),
        route("users-exact", &["=/api/users"], &[], &[]),
        route("health", &["=/healthz"], &[], &[]),
        route("root-exact", &["=/"], &[], &[]),
        route("deep", &["/healthz/deep/er"], &[], &[]),
    ];
    check(
        &routes,
        &[
            // Exact beats a prefix ending at the same path, whatever the route order.
            ("", "/api/users", "GET", found(1, 2)),
            ("", "/api/users/7", "GET", found(0, 2)),
            ("", "/healthz", "GET", found(2, 1)),
            // A trailing slash or repeated slashes add no segment.
            ("", "/healthz/", "GET", found(2, 1)),
            ("", "//healthz", "GET", found(2, 1)),
            // Nothing below an exact path matches it, even where the trie goes on.
            ("", "/healthz/x", "GET", RouteMatch::NotFound),
            ("", "/healthz/deep", "GET", RouteMatch::NotFound),
            ("", "/healthz/deep/er/x", "GET", found(4, 3)),
            ("", "/healthzx", "GET", RouteMatch::NotFound),
            ("", "/", "GET", found(3, 0)),
            ("", "/nothing", "GET", RouteMatch::NotFound),
        ],
    );
}

#[test]
fn hosts_exact_then_wildcard_then_none() {
    let routes = [
        route("api", &["/"], &["api.example.com"], &[]),
        route("wild", &["/"], &["*.example.com"], &[]),
        route("wild-b", &["/"], &["*.b.example.com"], &[]),
        route("fallback", &["/"], &[], &[]),
        route("shop", &["/shop"], &["shop.example.com"], &[]),
        route("two-hosts", &["/multi"], &["one.test", "two.test"], &[]),
    ];
    let long_host = "a".repeat(300) + ".example.com";
    check(
        &routes,
        &[
            ("api.example.com", "/x", "GET", found(0, 0)),
            // Host names compare without case.
            ("API.Example.COM", "/x", "GET", found(0, 0)),
            ("a.example.com", "/x", "GET", found(1, 0)),
            ("A.EXAMPLE.com", "/x", "GET", found(1, 0)),
            // The most specific wildcard wins; a wildcard needs at least one more label.
            ("a.b.example.com", "/x", "GET", found(2, 0)),
            ("x.y.b.example.com", "/x", "GET", found(2, 0)),
            ("b.example.com", "/x", "GET", found(1, 0)),
            ("x.y.example.com", "/x", "GET", found(1, 0)),
            ("example.com", "/x", "GET", found(3, 0)),
            ("notexample.com", "/x", "GET", found(3, 0)),
            ("example.com.evil", "/x", "GET", found(3, 0)),
            ("", "/x", "GET", found(3, 0)),
            // A host's own routes come first, then wildcards, then host-less routes.
            ("shop.example.com", "/shop/cart", "GET", found(4, 1)),
            ("shop.example.com", "/other", "GET", found(1, 0)),
            ("one.test", "/multi/x", "GET", found(5, 1)),
            ("TWO.test", "/multi", "GET", found(5, 1)),
            ("two.test", "/single", "GET", found(3, 0)),
            // Over-long names are not looked up by host at all.
            (long_host.as_str(), "/x", "GET", found(3, 0)),
        ],
    );
}

#[test]
fn host_routes_fall_back_to_host_less_ones() {
    let routes = [route("h", &["/a"], &["h.test"], &[]), route("wild", &["/b"], &["*.test"], &[])];
    check(
        &routes,
        &[
            ("h.test", "/a", "GET", found(0, 1)),
            ("h.test", "/b", "GET", found(1, 1)),
            ("h.test", "/c", "GET", RouteMatch::NotFound),
            ("other", "/a", "GET", RouteMatch::NotFound),
        ],
    );
}

#[test]
fn methods_filter_routes() {
    let routes = [
        route("api-read", &["/api"], &[], &["GET"]),
        route("users-write", &["/api/users"], &[], &["POST"]),
        route("me", &["=/api/users/me"], &[], &["GET"]),
        route("admin-delete", &["/admin"], &[], &["DELETE"]),
        route("admin-put", &["/admin"], &[], &["PUT", "PATCH"]),
        route("host-only", &["/h"], &["a.test"], &["GET"]),
        route("any", &["/open"], &[], &[]),
    ];
    check(
        &routes,
        &[
            ("", "/api/users/7", "POST", found(1, 2)),
            // A longer prefix that refuses the method gives way to a shorter one that allows it.
            ("", "/api/users", "GET", found(0, 1)),
            ("", "/api/users/7", "GET", found(0, 1)),
            // The path matches but no method does: 405, naming a route that matched the path.
            ("", "/api/users", "PUT", not_allowed(1)),
            ("", "/api", "PUT", not_allowed(0)),
            ("", "/api/orders", "POST", not_allowed(0)),
            ("", "/api/users/me", "GET", found(2, 3)),
            ("", "/api/users/me", "POST", found(1, 2)),
            ("", "/api/users/me", "PUT", not_allowed(2)),
            // Two routes on one path split by method.
            ("", "/admin/x", "DELETE", found(3, 1)),
            ("", "/admin", "PUT", found(4, 1)),
            ("", "/admin", "PATCH", found(4, 1)),
            ("", "/admin", "GET", not_allowed(3)),
            // Methods are case-sensitive (RFC 9110 §9.1).
            ("", "/api", "get", not_allowed(0)),
            ("", "/open/x", "OPTIONS", found(6, 1)),
            ("", "/nowhere", "PUT", RouteMatch::NotFound),
            // A host route that refuses the method still makes it a 405 when nothing else matches.
            ("a.test", "/h", "POST", not_allowed(5)),
            ("a.test", "/h", "GET", found(5, 1)),
            ("a.test", "/api", "GET", found(0, 1)),
        ],
    );
}

#[test]
fn host_less_route_allowing_the_method_beats_a_host_route_refusing_it() {
    let routes = [route("host-get", &["/x"], &["a.test"], &["GET"]), route("any-post", &["/x"], &[], &["POST"])];
    check(
        &routes,
        &[
            ("a.test", "/x", "GET", found(0, 1)),
            ("a.test", "/x", "POST", found(1, 1)),
            ("b.test", "/x", "PUT", not_allowed(1)),
        ],
    );
    // Both routes matched the path and neither allows PUT: a 405 naming either one.
    let got = Router::new(&routes).lookup(b"a.test", b"/x", "PUT");
    assert!(matches!(got, RouteMatch::MethodNotAllowed { route: 0 | 1, .. }), "{got:?}");
}

#[test]
fn routes_with_several_paths() {
    let routes = [route("multi", &["/a", "/b/c", "=/d"], &[], &[]), route("other", &["/b"], &[], &[])];
    check(
        &routes,
        &[
            ("", "/a/1", "GET", found(0, 1)),
            ("", "/b/c/1", "GET", found(0, 2)),
            ("", "/b/x", "GET", found(1, 1)),
            ("", "/d", "GET", found(0, 1)),
            ("", "/d/e", "GET", RouteMatch::NotFound),
        ],
    );
}

#[test]
fn strip_segments_leaves_the_rest_of_the_path() {
    let cases: &[(&str, usize, &str)] = &[
        ("/api/users/7", 2, "/7"),
        ("/api/users/7/orders", 2, "/7/orders"),
        ("/api/users", 2, "/"),
        ("/api/users/", 2, "/"),
        ("/api/users/7/", 2, "/7/"),
        ("/api/users", 1, "/users"),
        ("/api/users", 0, "/api/users"),
        ("/api/users", 5, "/"),
        ("/", 0, "/"),
        ("/", 1, "/"),
        ("", 0, "/"),
        // `//` counts as one boundary, as it does in the trie.
        ("/api//users/7", 2, "/7"),
        ("//api/users/7", 2, "/7"),
        ("/api/users//7", 2, "//7"),
        ("//", 1, "/"),
    ];
    for (path, n, want) in cases {
        let got = strip_segments(path.as_bytes(), *n);
        assert_eq!(got, want.as_bytes(), "strip {n} from {path}: got {}", String::from_utf8_lossy(got));
    }
}

#[test]
fn lookup_segments_feed_strip_segments() {
    let routes = [route("products", &["/api/products"], &[], &[])];
    let router = Router::new(&routes);
    for (path, upstream) in [("/api/products/9", "/9"), ("/api//products/9/", "/9/"), ("/api/products", "/")] {
        let RouteMatch::Found { segments, .. } = router.lookup(b"", path.as_bytes(), "GET") else {
            panic!("{path} not found");
        };
        assert_eq!(strip_segments(path.as_bytes(), segments), upstream.as_bytes(), "{path}");
    }
}

#[test]
fn shipped_config_routes() {
    let cfg = Config::parse(include_str!("../../config/gateway.toml")).unwrap();
    let index = |name: &str| cfg.routes.iter().position(|r| r.name == name).unwrap();
    let (users, orders, products, health) = (index("users"), index("orders"), index("products"), index("health"));
    check(
        &cfg.routes,
        &[
            ("localhost", "/api/users/7", "DELETE", found(users, 2)),
            ("localhost", "/api/users", "PATCH", not_allowed(users)),
            ("localhost", "/api/usersX", "GET", RouteMatch::NotFound),
            ("127.0.0.1", "/api/orders/1", "PATCH", found(orders, 2)),
            ("localhost", "/api/products/9", "GET", found(products, 2)),
            ("shop.example.com", "/api/products", "GET", found(products, 2)),
            ("example.com", "/api/products", "GET", RouteMatch::NotFound),
            ("localhost", "/healthz", "GET", found(health, 1)),
            ("localhost", "/healthz/x", "GET", RouteMatch::NotFound),
        ],
    );
}

#[test]
fn conflicts_name_both_routes() {
    let routes = [
        route("a", &["/x"], &["h.test"], &["GET"]),
        route("b", &["/y", "/x"], &["h.test", "i.test"], &["GET", "POST"]),
        route("c", &["/x"], &[], &["GET"]),
        route("d", &["=/x"], &["h.test"], &["GET"]),
    ];
    let found: Vec<(String, bool)> =
        Router::conflicts(&routes).into_iter().map(|c| (c.path, c.problem.contains("`a` (routes[0])"))).collect();
    assert_eq!(found, [("routes[1].paths[1]".to_string(), true)]);
}

#[test]
fn method_not_allowed_reports_how_many_segments_the_route_covers() {
    let routes = [route("users", &["/api/users"], &[], &["GET"])];
    let router = Router::new(&routes);
    assert_eq!(router.lookup(b"h", b"/api/users/7", "OPTIONS"), RouteMatch::MethodNotAllowed { route: 0, segments: 2 });
}

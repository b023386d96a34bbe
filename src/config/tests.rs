//! `Config::parse` over whole TOML documents: the shipped file, and configs with known problems
//! whose every error must come back at once, each at its key path.

use std::time::Duration;

use super::*;

/// Two services and nothing else; cases append `[[routes]]` and other tables.
const SERVICES: &str = r#"
[[services]]
name = "users"
upstreams = ["127.0.0.1:3001"]

[[services]]
name = "orders"
upstreams = ["127.0.0.1:3002"]
"#;

const ONE_ROUTE: &str = r#"
[[routes]]
name = "users"
paths = ["/api/users"]
service = "users"
"#;

fn with_services(rest: &str) -> String {
    format!("{SERVICES}{rest}")
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    match Config::parse(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors,
    }
}

/// The key paths of every error, sorted, so cases can list them in any order.
fn paths_of(text: &str) -> Vec<String> {
    let mut p: Vec<String> = errors_of(text).into_iter().map(|e| e.path).collect();
    p.sort();
    p
}

fn parse_ok(text: &str) -> Config {
    Config::parse(text).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}\n{text}"))
}

/// Each case is a config and exactly the key paths it must be refused at (empty: accepted).
fn check_paths(cases: &[(&str, String, &[&str])]) {
    for (name, text, want) in cases {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let got = paths_of(text);
        assert_eq!(got, want, "case `{name}`:\n{}", Config::parse(text).err().map(|e| e.to_string()).unwrap_or_default());
    }
}

#[test]
fn shipped_config_parses() {
    let cfg = parse_ok(include_str!("../../config/gateway.toml"));
    assert_eq!(cfg.server.listen, vec![SocketAddr::from(([127, 0, 0, 1], 8080))]);
    assert_eq!(cfg.server.driver, DriverChoice::Auto);
    assert_eq!(cfg.server.read_buffer, 16 << 10);
    assert_eq!(cfg.limits.max_body, 1 << 30);
    assert_eq!(cfg.timeouts.header, Duration::from_secs(10));
    let names: Vec<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["users", "orders", "products"]);
    assert_eq!(cfg.services[0].upstreams.len(), 2);
    assert_eq!(cfg.services[1].response_timeout, Duration::from_secs(10));
    assert_eq!(cfg.services[2].response_timeout, Duration::from_secs(60), "service inherits [upstream]");

    let route = |name: &str| cfg.routes.iter().find(|r| r.name == name).unwrap();
    assert_eq!(route("users").methods, ["GET", "POST", "PUT", "DELETE"]);
    assert_eq!(route("users").allow_header, "Allow: GET, POST, PUT, DELETE\r\n");
    // The demo's policies: a rate limit and CORS on users, a JWT on orders, an API key on products.
    assert_eq!(route("users").policy.rate_limits, [0]);
    assert!(route("users").policy.cors.is_some());
    assert_eq!(route("orders").policy.auth, [super::policy::AuthRef::Jwt(0)]);
    assert!(route("orders").policy.validate.json);
    assert_eq!(route("products").policy.auth, [super::policy::AuthRef::ApiKey(0)]);
    assert_eq!(route("orders").policy.strip_headers, ["X-Consumer-Id"]);
    assert_eq!(route("orders").max_body, 1 << 20);
    assert_eq!(route("orders").service, 1);
    let products = route("products");
    assert!(products.strip_prefix);
    assert_eq!(products.hosts, [HostMatch::Exact("localhost".into()), HostMatch::Suffix(".example.com".into())]);
    assert_eq!(route("health").paths, [PathMatch::Exact("/healthz".into())]);
    assert_eq!(route("health").service, 2);
}

#[test]
fn every_error_is_reported_at_once() {
    let text = with_services(&format!(
        r#"
[server]
workers = -1

[limits]
max_head = "lots"
{ONE_ROUTE}
[[routes]]
name = "orders"
paths = ["/api/orders"]
service = "nope"
"#
    ));
    check_paths(&[("three problems", text, &["limits.max_head", "routes[1].service", "server.workers"])]);
}

#[test]
fn unknown_keys_are_reported_at_every_level() {
    let text = r#"
color = "blue"

[server]
lisen = ["127.0.0.1:8080"]

[limitz]
max_head = "16KiB"

[[services]]
name = "users"
upstreams = ["127.0.0.1:3001"]
upstream = "typo"

[[routes]]
name = "users"
pathz = ["/api"]
paths = ["/api/users"]
service = "users"
"#
    .to_string();
    check_paths(&[(
        "unknown keys",
        text,
        &["color", "limitz", "routes[0].pathz", "server.lisen", "services[0].upstream"],
    )]);
    let errs = errors_of("[server]\nlisen = []\n");
    let e = errs.iter().find(|e| e.path == "server.lisen").unwrap();
    assert_eq!(e.problem, "unknown key");
}

#[test]
fn wrong_types_are_reported_with_their_key_paths() {
    let cases: &[(&str, String, &[&str])] = &[
        ("string for integer", with_services(&format!("[server]\nworkers = \"four\"\n{ONE_ROUTE}")), &["server.workers"]),
        ("string for bool", with_services(&format!("[server]\npin_cores = \"yes\"\n{ONE_ROUTE}")), &["server.pin_cores"]),
        ("integer for size", with_services(&format!("[limits]\nmax_head = 16384\n{ONE_ROUTE}")), &["limits.max_head"]),
        ("string for list", with_services(&format!("[server]\nlisten = \"127.0.0.1:80\"\n{ONE_ROUTE}")), &["server.listen"]),
        // Bare keys must come before the first table header to be top-level keys.
        ("section not a table", format!("timeouts = 5\n{SERVICES}{ONE_ROUTE}"), &["timeouts"]),
        ("routes not an array", format!("routes = \"users\"\n{SERVICES}"), &["routes"]),
        ("routes not tables", format!("routes = [\"users\", 1]\n{SERVICES}"), &["routes[0]", "routes[1]"]),
        // The bad value is left out, but is not reported a second time as missing.
        (
            "route fields",
            with_services("[[routes]]\npaths = \"/api\"\nservice = 7\nmethods = [1]\n"),
            &["routes[0].methods", "routes[0].paths", "routes[0].service"],
        ),
        (
            "two sections, several keys",
            with_services(&format!(
                "[server]\nworkers = 1.5\nbacklog = true\n[timeouts]\nidle = 60\n{ONE_ROUTE}\n[[routes]]\nname = 5\npaths = [\"/b\"]\nservice = \"orders\"\n"
            )),
            &["routes[1].name", "server.backlog", "server.workers", "timeouts.idle"],
        ),
    ];
    check_paths(cases);

    let errs = errors_of(&with_services(&format!("[server]\nworkers = \"four\"\n{ONE_ROUTE}")));
    assert!(errs[0].problem.contains("invalid type"), "{:?}", errs[0]);
}

#[test]
fn invalid_toml_is_one_error_without_a_path() {
    let errs = errors_of("[server\nworkers = 1\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "");
    assert!(errs[0].problem.starts_with("invalid TOML"), "{}", errs[0].problem);
}

#[test]
fn sizes_and_durations_are_checked() {
    let case = |toml: &str| with_services(&format!("{toml}\n{ONE_ROUTE}"));
    let cases: &[(&str, String, &[&str])] = &[
        ("unknown size unit", case("[server]\nread_buffer = \"16XB\""), &["server.read_buffer"]),
        ("negative size", case("[limits]\nmax_body = \"-1\""), &["limits.max_body"]),
        ("size below minimum", case("[limits]\nmax_head = \"100\""), &["limits.max_head"]),
        ("size above maximum", case("[server]\nread_buffer = \"1GiB\""), &["server.read_buffer"]),
        ("size overflow", case("[limits]\nmax_body = \"99999999999GiB\""), &["limits.max_body"]),
        ("target above head", case("[limits]\nmax_head = \"1KiB\"\nmax_target = \"2KiB\""), &["limits.max_target"]),
        ("duration without unit", case("[timeouts]\nidle = \"30\""), &["timeouts.idle"]),
        ("zero duration", case("[timeouts]\nheader = \"0s\""), &["timeouts.header"]),
        ("unknown duration unit", case("[upstream]\nconnect_timeout = \"3d\""), &["upstream.connect_timeout"]),
        (
            "per-service duration",
            format!(
                "[[services]]\nname = \"users\"\nupstreams = [\"127.0.0.1:1\"]\nresponse_timeout = \"soon\"\n{ONE_ROUTE}"
            ),
            &["services[0].response_timeout"],
        ),
        ("route body size", case("[[routes]]\npaths = [\"/b\"]\nservice = \"orders\"\nmax_body = \"1 parsec\""), &["routes[0].max_body"]),
        ("integer out of range", case("[server]\nuring_entries = 8"), &["server.uring_entries"]),
        ("unknown driver", case("[server]\ndriver = \"kqueue\""), &["server.driver"]),
        ("human units accepted", case("[server]\nread_buffer = \"64KiB\"\n[timeouts]\nidle = \"1500ms\"\ndrain = \"2m\""), &[]),
    ];
    check_paths(cases);

    let cfg = parse_ok(&case("[server]\nread_buffer = \"64KiB\"\n[timeouts]\nidle = \"1500ms\"\ndrain = \"2m\""));
    assert_eq!(cfg.server.read_buffer, 64 << 10);
    assert_eq!(cfg.timeouts.idle, Duration::from_millis(1500));
    assert_eq!(cfg.timeouts.drain, Duration::from_secs(120));
}

#[test]
fn listen_addresses_are_checked() {
    let case = |toml: &str| with_services(&format!("{toml}\n{ONE_ROUTE}"));
    check_paths(&[
        ("empty listen", case("[server]\nlisten = []"), &["server.listen"]),
        ("not ip:port", case("[server]\nlisten = [\"localhost:80\", \"0.0.0.0\"]"), &["server.listen[0]", "server.listen[1]"]),
        ("duplicate", case("[server]\nlisten = [\"0.0.0.0:80\", \"[::]:80\", \"0.0.0.0:80\"]"), &["server.listen[2]"]),
    ]);
}

#[test]
fn services_are_checked() {
    let route = "[[routes]]\npaths = [\"/\"]\nservice = \"users\"\n";
    check_paths(&[
        ("missing name", format!("[[services]]\nupstreams = [\"127.0.0.1:1\"]\n{route}"), &["routes[0].service", "services[0].name"]),
        ("missing upstreams", format!("[[services]]\nname = \"users\"\n{route}"), &["services[0].upstreams"]),
        ("empty upstreams", format!("[[services]]\nname = \"users\"\nupstreams = []\n{route}"), &["services[0].upstreams"]),
        ("bad upstream", format!("[[services]]\nname = \"users\"\nupstreams = [\"127.0.0.1:1\", \"nowhere\"]\n{route}"), &["services[0].upstreams[1]"]),
    ]);
}

#[test]
fn route_naming_a_missing_service_lists_the_known_ones() {
    let text = with_services("[[routes]]\npaths = [\"/a\"]\nservice = \"user\"\n");
    let errs = errors_of(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "routes[0].service");
    assert!(errs[0].problem.contains("`user`"), "{}", errs[0].problem);
    assert_eq!(errs[0].fix, "did you mean `users`? (services: users, orders)");
    let errs = errors_of(&with_services("[[routes]]\npaths = [\"/a\"]\nservice = \"billing\"\n"));
    assert_eq!(errs[0].fix, "use one of: users, orders", "nothing close: the whole list");

    check_paths(&[
        ("service missing", with_services("[[routes]]\npaths = [\"/a\"]\n"), &["routes[0].service"]),
        ("paths missing", with_services("[[routes]]\nservice = \"users\"\n"), &["routes[0].paths"]),
        ("paths empty", with_services("[[routes]]\npaths = []\nservice = \"users\"\n"), &["routes[0].paths"]),
        ("no routes at all", SERVICES.to_string(), &["routes"]),
    ]);
}

#[test]
fn duplicate_names_are_errors() {
    let dup_service = format!("{SERVICES}\n[[services]]\nname = \"users\"\nupstreams = [\"127.0.0.1:3003\"]\n{ONE_ROUTE}");
    let dup_route = with_services(&format!("{ONE_ROUTE}\n[[routes]]\nname = \"users\"\npaths = [\"/other\"]\nservice = \"orders\"\n"));
    check_paths(&[
        ("duplicate service", dup_service, &["services[2].name"]),
        ("duplicate route", dup_route, &["routes[1].name"]),
        // An unnamed route is called `route{i}`; two unnamed routes never clash.
        ("unnamed routes", with_services("[[routes]]\npaths = [\"/a\"]\nservice = \"users\"\n[[routes]]\npaths = [\"/b\"]\nservice = \"users\"\n"), &[]),
    ]);
    let cfg = parse_ok(&with_services("[[routes]]\npaths = [\"/a\"]\nservice = \"users\"\n"));
    assert_eq!(cfg.routes[0].name, "route0");
}

/// Regression: a service or route dropped for another problem used to shift the indices of
/// the errors reported after it.
#[test]
fn errors_after_a_broken_entry_keep_their_indices() {
    let services = "[[services]]\nupstreams = [\"127.0.0.1:1\"]\n[[services]]\nname = \"a\"\nupstreams = [\"127.0.0.1:2\"]\n[[services]]\nname = \"a\"\nupstreams = [\"127.0.0.1:3\"]\n";
    let routes = "[[routes]]\nname = \"r\"\npaths = [\"/x\"]\nservice = \"gone\"\n[[routes]]\nname = \"s\"\npaths = [\"/y\"]\nservice = \"a\"\n[[routes]]\nname = \"s\"\npaths = [\"/y\"]\nservice = \"a\"\n";
    check_paths(&[(
        "shifted",
        format!("{services}{routes}"),
        &["routes[0].service", "routes[2].name", "routes[2].paths[0]", "services[0].name", "services[2].name"],
    )]);
}

#[test]
fn conflicting_routes_are_errors() {
    let route = |name: &str, paths: &str, hosts: &str, methods: &str| {
        let mut s = format!("\n[[routes]]\nname = \"{name}\"\npaths = {paths}\nservice = \"users\"\n");
        if !hosts.is_empty() {
            s += &format!("hosts = {hosts}\n");
        }
        if !methods.is_empty() {
            s += &format!("methods = {methods}\n");
        }
        s
    };
    let two = |a: String, b: String| with_services(&(a + &b));
    let cases: &[(&str, String, &[&str])] = &[
        ("same path, any method", two(route("a", r#"["/api"]"#, "", ""), route("b", r#"["/api"]"#, "", "")), &["routes[1].paths[0]"]),
        (
            "same path, overlapping methods",
            two(route("a", r#"["/api"]"#, "", r#"["GET", "POST"]"#), route("b", r#"["/x", "/api"]"#, "", r#"["POST"]"#)),
            &["routes[1].paths[1]"],
        ),
        (
            "same path, one route any method",
            two(route("a", r#"["/api"]"#, "", r#"["GET"]"#), route("b", r#"["/api"]"#, "", "")),
            &["routes[1].paths[0]"],
        ),
        (
            "trailing slash is the same prefix",
            two(route("a", r#"["/api/"]"#, "", ""), route("b", r#"["/api"]"#, "", "")),
            &["routes[1].paths[0]"],
        ),
        (
            "trailing slash is the same exact path",
            two(route("a", r#"["=/h/"]"#, "", ""), route("b", r#"["=/h"]"#, "", "")),
            &["routes[1].paths[0]"],
        ),
        (
            "same exact path and host",
            two(route("a", r#"["=/h"]"#, r#"["a.com"]"#, ""), route("b", r#"["=/h"]"#, r#"["A.com", "b.com"]"#, "")),
            &["routes[1].paths[0]"],
        ),
        (
            "same wildcard host",
            two(route("a", r#"["/"]"#, r#"["*.ex.com"]"#, ""), route("b", r#"["/"]"#, r#"["*.ex.com"]"#, "")),
            &["routes[1].paths[0]"],
        ),
        ("disjoint methods", two(route("a", r#"["/api"]"#, "", r#"["GET"]"#), route("b", r#"["/api"]"#, "", r#"["POST"]"#)), &[]),
        ("different hosts", two(route("a", r#"["/api"]"#, r#"["a.com"]"#, ""), route("b", r#"["/api"]"#, r#"["b.com"]"#, "")), &[]),
        ("host and no host", two(route("a", r#"["/api"]"#, r#"["a.com"]"#, ""), route("b", r#"["/api"]"#, "", "")), &[]),
        ("exact and wildcard host", two(route("a", r#"["/"]"#, r#"["a.ex.com"]"#, ""), route("b", r#"["/"]"#, r#"["*.ex.com"]"#, "")), &[]),
        ("exact and prefix", two(route("a", r#"["=/api"]"#, "", ""), route("b", r#"["/api"]"#, "", "")), &[]),
        ("nested prefixes", two(route("a", r#"["/api"]"#, "", ""), route("b", r#"["/api/users"]"#, "", "")), &[]),
        (
            "three routes, two conflicts",
            with_services(&(route("a", r#"["/a"]"#, "", "") + &route("b", r#"["/a", "/b"]"#, "", "") + &route("c", r#"["/c", "/b"]"#, "", ""))),
            &["routes[1].paths[0]", "routes[2].paths[1]"],
        ),
    ];
    check_paths(cases);

    let errs = errors_of(&two(route("a", r#"["=/h"]"#, "", ""), route("b", r#"["=/h"]"#, "", "")));
    assert!(errs[0].problem.contains("`=/h`") && errs[0].problem.contains("routes[0]"), "{}", errs[0].problem);
}

#[test]
fn route_paths_are_checked() {
    let with_paths = |paths: &str| with_services(&format!("[[routes]]\npaths = {paths}\nservice = \"users\"\n"));
    let cases: &[(&str, String, &[&str])] = &[
        ("no leading slash", with_paths(r#"["api"]"#), &["routes[0].paths[0]"]),
        ("query", with_paths(r#"["/ok", "/api?x=1"]"#), &["routes[0].paths[1]"]),
        ("fragment", with_paths(r##"["/api#top"]"##), &["routes[0].paths[0]"]),
        ("double slash", with_paths(r#"["/api//users"]"#), &["routes[0].paths[0]"]),
        ("space", with_paths(r#"["/a b"]"#), &["routes[0].paths[0]"]),
        ("empty", with_paths(r#"[""]"#), &["routes[0].paths[0]"]),
        ("exact without slash", with_paths(r#"["=api"]"#), &["routes[0].paths[0]"]),
        ("bare =", with_paths(r#"["="]"#), &["routes[0].paths[0]"]),
        ("all at once", with_paths(r#"["x", "/y?", "//z"]"#), &["routes[0].paths[0]", "routes[0].paths[1]", "routes[0].paths[2]"]),
        ("good ones", with_paths(r#"["/", "/api/", "=/x", "=/", "/a/b-c_d.e~f"]"#), &[]),
    ];
    check_paths(cases);

    let cfg = parse_ok(&with_paths(r#"["/", "/api/", "=/x", "=/y/", "/a/b"]"#));
    assert_eq!(
        cfg.routes[0].paths,
        [
            PathMatch::Prefix("/".into()),
            PathMatch::Prefix("/api".into()),
            PathMatch::Exact("/x".into()),
            PathMatch::Exact("/y".into()),
            PathMatch::Prefix("/a/b".into()),
        ]
    );
}

#[test]
fn route_hosts_are_checked() {
    let with_hosts = |hosts: &str| with_services(&format!("[[routes]]\npaths = [\"/\"]\nhosts = {hosts}\nservice = \"users\"\n"));
    let cases: &[(&str, String, &[&str])] = &[
        ("scheme", with_hosts(r#"["http://a.com"]"#), &["routes[0].hosts[0]"]),
        ("port", with_hosts(r#"["a.com:8080"]"#), &["routes[0].hosts[0]"]),
        ("empty", with_hosts(r#"[""]"#), &["routes[0].hosts[0]"]),
        ("bare wildcard", with_hosts(r#"["*."]"#), &["routes[0].hosts[0]"]),
        ("star alone", with_hosts(r#"["*"]"#), &["routes[0].hosts[0]"]),
        ("inner wildcard", with_hosts(r#"["a.*.com"]"#), &["routes[0].hosts[0]"]),
        ("leading dot", with_hosts(r#"[".a.com"]"#), &["routes[0].hosts[0]"]),
        ("space", with_hosts(r#"["a b.com"]"#), &["routes[0].hosts[0]"]),
        ("several", with_hosts(r#"["ok.com", "bad/", "*.ok.com", "x:1"]"#), &["routes[0].hosts[1]", "routes[0].hosts[3]"]),
        ("good ones", with_hosts(r#"["a.com", "*.a.com", "localhost", "my_host-1"]"#), &[]),
    ];
    check_paths(cases);

    let cfg = parse_ok(&with_hosts(r#"["API.Example.com", "*.Example.COM"]"#));
    assert_eq!(
        cfg.routes[0].hosts,
        [HostMatch::Exact("api.example.com".into()), HostMatch::Suffix(".example.com".into())]
    );
}

#[test]
fn route_methods_are_checked() {
    let with_methods = |m: &str| with_services(&format!("[[routes]]\npaths = [\"/\"]\nmethods = {m}\nservice = \"users\"\n"));
    check_paths(&[
        ("unknown", with_methods(r#"["GET", "FETCH"]"#), &["routes[0].methods[1]"]),
        ("connect is not routable", with_methods(r#"["CONNECT"]"#), &["routes[0].methods[0]"]),
    ]);
    let cfg = parse_ok(&with_methods(r#"["get", "Post", "GET"]"#));
    assert_eq!(cfg.routes[0].methods, ["GET", "POST"]);
    assert_eq!(cfg.routes[0].allow_header, "Allow: GET, POST\r\n");
    let cfg = parse_ok(&with_services(ONE_ROUTE));
    assert!(cfg.routes[0].methods.is_empty());
    assert_eq!(cfg.routes[0].allow_header, format!("Allow: {}\r\n", KNOWN_METHODS.join(", ")));
}

#[test]
fn defaults_fill_what_is_left_out() {
    let cfg = parse_ok(&with_services(ONE_ROUTE));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    assert_eq!(cfg.server.workers, cores);
    assert_eq!(cfg.server.listen, vec![SocketAddr::from(([127, 0, 0, 1], 8080))]);
    assert!(cfg.server.pin_cores);
    assert_eq!(cfg.limits.max_head, 16 << 10);
    assert_eq!(cfg.upstream.connect_timeout, Duration::from_secs(3));
    assert_eq!(cfg.routes[0].max_body, cfg.limits.max_body);
    assert!(!cfg.routes[0].strip_prefix);
}

#[test]
fn workers_zero_means_one_per_core() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = |n: &str| parse_ok(&with_services(&format!("[server]\nworkers = {n}\n{ONE_ROUTE}"))).server.workers;
    assert_eq!(workers("0"), cores);
    assert_eq!(workers("3"), 3);
    check_paths(&[
        ("negative", with_services(&format!("[server]\nworkers = -1\n{ONE_ROUTE}")), &["server.workers"]),
        ("too many", with_services(&format!("[server]\nworkers = 5000\n{ONE_ROUTE}")), &["server.workers"]),
    ]);
}

#[test]
fn errors_print_path_problem_and_fix() {
    let err = Config::parse(&with_services("[[routes]]\npaths = [\"/a\"]\nservice = \"user\"\n")).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("1 error in config:\n"), "{text}");
    assert!(
        text.contains("routes[0].service (line 11): no service named `user`\n    fix: did you mean `users`? (services: users, orders)"),
        "{text}"
    );
}

#[test]
fn policy_errors_are_reported_with_their_key_paths() {
    let route = |extra: &str| with_services(&format!("[[routes]]\npaths = [\"/\"]\nservice = \"users\"\n{extra}\n"));
    let jwt_hs = "[[jwt]]\nname = \"main\"\n[[jwt.keys]]\nalg = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    check_paths(&[
        ("unknown auth provider", route("auth = [\"nope\"]"), &["routes[0].auth[0]"]),
        ("unknown rate limit", route("rate_limits = [\"nope\"]"), &["routes[0].rate_limits[0]"]),
        ("bad route CIDR", route("ip_allow = [\"10.0.0.1/8\"]"), &["routes[0].ip_allow[0]"]),
        ("bad server CIDR", format!("[security]\nip_deny = [\"x\"]\n{}", route("")), &["security.ip_deny[0]"]),
        (
            "consumer limit needs auth",
            format!("[[rate_limits]]\nname = \"c\"\nrequests = 1\nkey = \"consumer\"\n{}", route("rate_limits = [\"c\"]")),
            &["routes[0].rate_limits"],
        ),
        ("limit without requests", format!("[[rate_limits]]\nname = \"c\"\n{}", route("")), &["rate_limits[0].requests"]),
        ("bad limit key", format!("[[rate_limits]]\nname = \"c\"\nrequests = 1\nkey = \"cookie\"\n{}", route("")), &["rate_limits[0].key"]),
        ("jwt key without alg", format!("[[jwt]]\nname = \"j\"\n[[jwt.keys]]\nsecret = \"s\"\n{}", route("")), &["jwt[0].keys[0].alg"]),
        ("jwt without keys", format!("[[jwt]]\nname = \"j\"\n{}", route("")), &["jwt[0].keys"]),
        ("short HS256 secret", format!("[[jwt]]\nname = \"j\"\n[[jwt.keys]]\nalg = \"HS256\"\nsecret = \"short\"\n{}", route("")), &["jwt[0]"]),
        ("missing PEM file", format!("[[jwt]]\nname = \"j\"\n[[jwt.keys]]\nalg = \"RS256\"\npem_file = \"/nonexistent.pem\"\n{}", route("")), &["jwt[0]"]),
        ("bad api key digest", format!("[[api_keys]]\nname = \"k\"\nkeys = [{{ consumer = \"a\", sha256 = \"xyz\" }}]\n{}", route("")), &["api_keys[0].keys"]),
        ("wildcard CORS with credentials", route("[routes.cors]\nallow_origins = [\"*\"]\nallow_credentials = true"), &["routes[0].cors"]),
        // JSON bodies are buffered up to max_json whatever the read buffer: not tied to it.
        ("max_json over the read buffer", route("[routes.validate]\njson = true\nmax_json = \"1MiB\""), &[]),
        ("json alone takes the defaults", route("[routes.validate]\njson = true"), &[]),
        ("unknown key in cors", route("[routes.cors]\nallow_origin = [\"*\"]"), &["routes[0].cors.allow_origin"]),
        ("unknown key in a jwt key", format!("{jwt_hs}kind = \"x\"\n{}", route("")), &["jwt[0].keys[0].kind"]),
    ]);
    let ok = parse_ok(&format!("{jwt_hs}{}", route("auth = [\"main\"]")));
    assert_eq!(ok.routes[0].policy.auth, [super::policy::AuthRef::Jwt(0)]);
}

/// Regression: "1.5s" was refused as "unknown unit `.5s`". Fractions are read digit by digit, so
/// they are exact; finer than a nanosecond is refused rather than rounded.
#[test]
fn fractional_durations_are_read_or_refused_clearly() {
    let ms = Duration::from_millis;
    let cases: &[(&str, Result<Duration, &str>)] = &[
        ("1.5s", Ok(ms(1500))),
        ("0.25s", Ok(ms(250))),
        ("2.5m", Ok(ms(150_000))),
        ("1.25h", Ok(Duration::from_secs(4500))),
        ("0.5ms", Ok(Duration::from_micros(500))),
        ("1.1s", Ok(ms(1100))),
        ("0.000000001s", Ok(Duration::from_nanos(1))),
        ("1.50000000000000000000s", Ok(ms(1500))),
        ("1.5 s", Ok(ms(1500))),
        ("1500ms", Ok(ms(1500))),
        ("0.0000000001s", Err("more precise than a nanosecond")),
        ("1.0000001ms", Err("more precise than a nanosecond")),
        (".5s", Err("digits on both sides of the decimal point")),
        ("1.s", Err("digits on both sides of the decimal point")),
        ("1.5.2s", Err("more than one decimal point")),
        ("1,5s", Err("decimal comma")),
        ("-1s", Err("negative")),
        ("1.5", Err("needs a unit")),
        ("1.5d", Err("unknown unit `d`")),
        ("soon", Err("is not a duration")),
        ("99999999999999999999999h", Err("too large")),
    ];
    for (input, want) in cases {
        match (parse_duration(input), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{input}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    let cfg = parse_ok(&with_services(&format!("[timeouts]\nidle = \"2.5m\"\nheader = \"0.25s\"\n{ONE_ROUTE}")));
    assert_eq!(cfg.timeouts.idle, Duration::from_secs(150));
    assert_eq!(cfg.timeouts.header, ms(250));
    let errs = errors_of(&with_services(&format!("[timeouts]\nidle = \"1.5.2s\"\n{ONE_ROUTE}")));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "timeouts.idle");
    assert!(!errs[0].problem.contains("unknown unit"), "{}", errs[0].problem);
}

/// Sizes stay whole numbers of a unit; "1.5KiB" says so, and what it would be in a smaller unit.
#[test]
fn fractional_sizes_are_refused_as_whole_numbers_of_a_unit() {
    let cases: &[(&str, &str)] = &[
        ("1.5KiB", "`1.5KiB` is not a whole number of KiB; sizes are whole numbers of a unit: write \"1536B\""),
        ("1.5MiB", "write \"1536KiB\""),
        ("0.5GB", "write \"500MB\""),
        ("2.0KiB", "write \"2KiB\""),
        ("1.3KiB", "not a whole number of bytes either"),
        ("1.5", "`1.5` is not a whole number of bytes"),
        ("1.5XB", "sizes are whole numbers of B, KiB"),
    ];
    for (input, want) in cases {
        let got = parse_size(input).unwrap_err();
        assert!(got.contains(want), "{input}: {got}");
    }
    check_paths(&[("fractional size", with_services(&format!("[server]\nread_buffer = \"1.5KiB\"\n{ONE_ROUTE}")), &["server.read_buffer"])]);
}

/// Keys counted in whole seconds (Access-Control-Max-Age, the JWT leeway) refuse a fraction instead
/// of cutting it off.
#[test]
fn whole_second_durations_refuse_fractions() {
    let route = |extra: &str| with_services(&format!("[[routes]]\npaths = [\"/\"]\nservice = \"users\"\n{extra}\n"));
    let jwt = |leeway: &str| format!("[[jwt]]\nname = \"j\"\nleeway = \"{leeway}\"\n[[jwt.keys]]\nalg = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n{}", route(""));
    check_paths(&[
        ("cors max_age", route("[routes.cors]\nallow_origins = [\"*\"]\nmax_age = \"1.5s\""), &["routes[0].cors.max_age"]),
        ("jwt leeway", jwt("1500ms"), &["jwt[0].leeway"]),
        ("whole seconds", jwt("2000ms"), &[]),
    ]);
}

/// Regression: `paths = ["/api/users/*"]` passed and matched only a literal `*` segment.
#[test]
fn pattern_paths_are_refused_with_prefix_advice() {
    let with_paths = |paths: &str| with_services(&format!("[[routes]]\npaths = {paths}\nservice = \"users\"\n"));
    let cases: &[(&str, String, &[&str])] = &[
        ("trailing star", with_paths(r#"["/api/users/*"]"#), &["routes[0].paths[0]"]),
        ("double star", with_paths(r#"["/api/**"]"#), &["routes[0].paths[0]"]),
        ("star in a segment", with_paths(r#"["/api/users*"]"#), &["routes[0].paths[0]"]),
        ("inner star", with_paths(r#"["/api/*/users"]"#), &["routes[0].paths[0]"]),
        ("exact with star", with_paths(r#"["=/api/*"]"#), &["routes[0].paths[0]"]),
        ("braces", with_paths(r#"["/users/{id}"]"#), &["routes[0].paths[0]"]),
        ("colon parameter", with_paths(r#"["/users/:id"]"#), &["routes[0].paths[0]"]),
        ("character class", with_paths(r#"["/v[12]/users"]"#), &["routes[0].paths[0]"]),
        ("angle brackets", with_paths(r#"["/users/<id>"]"#), &["routes[0].paths[0]"]),
        ("root star", with_paths(r#"["/*"]"#), &["routes[0].paths[0]"]),
        ("colon inside a segment is literal", with_paths(r#"["/v1/jobs/a:run", "/x/y:z"]"#), &[]),
    ];
    check_paths(cases);

    let errs = errors_of(&with_paths(r#"["/api/users/*"]"#));
    assert!(errs[0].problem.contains("`/api/users/*`"), "{}", errs[0].problem);
    let fix = &errs[0].fix;
    assert!(fix.starts_with("write \"/api/users\""), "{fix}");
    assert!(fix.contains("matches /api/users and /api/users/anything"), "{fix}");
    assert!(fix.contains("\"=/api/users\""), "{fix}");
    let errs = errors_of(&with_paths(r#"["/users/:id"]"#));
    assert!(errs[0].fix.contains("no wildcards or path parameters") && errs[0].fix.contains("\"/users\""), "{}", errs[0].fix);
}

/// Regression: a provider whose keys failed to build also made every route using it report "no
/// provider named ...". The provider is defined; only its own error is reported.
#[test]
fn a_broken_provider_is_reported_once_not_as_missing() {
    let route = |extra: &str| with_services(&format!("[[routes]]\npaths = [\"/\"]\nservice = \"users\"\n{extra}\n"));
    let short = "[[jwt]]\nname = \"j\"\n[[jwt.keys]]\nalg = \"HS256\"\nsecret = \"short\"\n";
    let no_pem = "[[jwt]]\nname = \"j\"\n[[jwt.keys]]\nalg = \"RS256\"\npem_file = \"/nonexistent.pem\"\n";
    let bad_digest = "[[api_keys]]\nname = \"k\"\nkeys = [{ consumer = \"a\", sha256 = \"xyz\" }]\n";
    let no_requests = "[[rate_limits]]\nname = \"l\"\n";
    let consumer_limit = "[[rate_limits]]\nname = \"c\"\nrequests = 1\nkey = \"consumer\"\n";
    check_paths(&[
        ("short HS256 secret", format!("{short}{}", route("auth = [\"j\"]")), &["jwt[0]"]),
        ("unreadable pem_file", format!("{no_pem}{}", route("auth = [\"j\"]")), &["jwt[0]"]),
        ("bad api key digest", format!("{bad_digest}{}", route("auth = [\"k\"]")), &["api_keys[0].keys"]),
        ("both kinds broken", format!("{short}{bad_digest}{}", route("auth = [\"j\", \"k\"]")), &["api_keys[0].keys", "jwt[0]"]),
        ("limit without requests", format!("{no_requests}{}", route("rate_limits = [\"l\"]")), &["rate_limits[0].requests"]),
        // The route has auth; its provider is broken, which is not the same as having none.
        ("consumer limit, broken provider", format!("{short}{consumer_limit}{}", route("auth = [\"j\"]\nrate_limits = [\"c\"]")), &["jwt[0]"]),
        // A name that nothing defines is still an error.
        ("missing beside broken", format!("{short}{}", route("auth = [\"j\", \"other\"]")), &["jwt[0]", "routes[0].auth[1]"]),
    ]);
}

/// A misspelt key or name is answered with the close one it was probably meant to be.
#[test]
fn unknown_keys_and_names_suggest_the_closest() {
    let route = |extra: &str| with_services(&format!("[[routes]]\npaths = [\"/\"]\nservice = \"users\"\n{extra}\n"));
    let jwt = "[[jwt]]\nname = \"main\"\n[[jwt.keys]]\nalg = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    let limit = "[[rate_limits]]\nname = \"per-ip\"\nrequests = 10\n";
    let cases: &[(&str, String, &str, &str)] = &[
        ("server key", with_services(&format!("[server]\nlistn = [\"0.0.0.0:80\"]\n{ONE_ROUTE}")), "server.listn", "did you mean `listen`?"),
        ("route key", with_services("[[routes]]\npaths = [\"/\"]\nservce = \"users\"\nservice = \"users\"\n"), "routes[0].servce", "did you mean `service`?"),
        ("section", with_services(&format!("[limitz]\nmax_head = \"16KiB\"\n{ONE_ROUTE}")), "limitz", "did you mean `limits`?"),
        ("swapped letters", with_services(&format!("[timeouts]\nidel = \"5s\"\n{ONE_ROUTE}")), "timeouts.idel", "did you mean `idle`?"),
        ("nested table", route("[routes.cors]\nallow_origin = [\"*\"]"), "routes[0].cors.allow_origin", "did you mean `allow_origins`?"),
        ("table in a list", format!("{jwt}kidd = \"x\"\n{}", route("")), "jwt[0].keys[0].kidd", "did you mean `kid`?"),
        (
            "inline table in a list",
            format!("[[api_keys]]\nname = \"k\"\nkeys = [{{ consumer = \"a\", consumr = \"b\", sha256 = \"{}\" }}]\n{}", "ab".repeat(32), route("")),
            "api_keys[0].keys[0].consumr",
            "did you mean `consumer`?",
        ),
        ("far from any key", with_services(&format!("[server]\ncolor = 1\n{ONE_ROUTE}")), "server.color", "remove it or correct its spelling"),
        ("service name", with_services("[[routes]]\npaths = [\"/\"]\nservice = \"order\"\n"), "routes[0].service", "did you mean `orders`?"),
        ("provider name", format!("{jwt}{}", route("auth = [\"mian\"]")), "routes[0].auth[0]", "did you mean `main`? (providers: main)"),
        ("provider name, nothing close", format!("{jwt}{}", route("auth = [\"partners\"]")), "routes[0].auth[0]", "use one of: main"),
        ("no providers at all", route("auth = [\"main\"]"), "routes[0].auth[0]", "define a [[jwt]], [[api_keys]] or [[mtls]] table"),
        ("limit name", format!("{limit}{}", route("rate_limits = [\"per_ip\"]")), "routes[0].rate_limits[0]", "did you mean `per-ip`?"),
        ("limit name, other case", format!("{limit}{}", route("rate_limits = [\"Per-IP\"]")), "routes[0].rate_limits[0]", "did you mean `per-ip`?"),
    ];
    for (name, text, path, fix) in cases {
        let errs = errors_of(text);
        let e = errs.iter().find(|e| e.path == *path).unwrap_or_else(|| panic!("case `{name}`: no error at {path}: {errs:?}"));
        assert!(e.fix.contains(fix), "case `{name}`: {}", e.fix);
        assert_eq!(errs.len(), 1, "case `{name}`: {errs:?}");
    }
}

/// Every error names the line of its key (or, for a missing key, of its table), as nginx does.
#[test]
fn errors_carry_the_line_of_their_key() {
    let text = "\
[server]
listen = [
  \"127.0.0.1:8080\",
  \"nowhere\",
]
listn = 1

[[services]]
name = \"users\"
upstreams = [\"127.0.0.1:3001\"]
connect_timeout = { secs = 3 }

[[routes]]
paths = [\"/a\"]
service = \"users\"

[[routes]]
paths = [\"/b\"]

[[routes]]
paths = [\"/c\", \"/d/*\"]
service = \"user\"
[routes.cors]
allow_origin = [\"*\"]

[[api_keys]]
name = \"k\"
keys = [
  { consumer = \"a\", sha256 = \"aa\" },
  { consumer = \"b\" },
]
";
    let want: &[(&str, Option<usize>)] = &[
        ("server.listen[1]", Some(4)),
        ("server.listn", Some(6)),
        ("services[0].connect_timeout", Some(11)),
        // A missing key is placed at its table.
        ("routes[1].service", Some(17)),
        ("routes[2].paths[1]", Some(21)),
        ("routes[2].service", Some(22)),
        ("routes[2].cors.allow_origin", Some(24)),
        ("api_keys[0].keys[1]", Some(30)),
        ("api_keys[0].keys", Some(28)),
    ];
    let errs = errors_of(text);
    let mut got: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.path.as_str(), e.line)).collect();
    got.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(got, want, "{}", ConfigErrors { errors: errs.clone(), file: None });

    let shown = ConfigErrors { errors: errs, file: None }.to_string();
    assert!(shown.contains("\n  routes[2].service (line 22): no service named `user`\n"), "{shown}");

    // Paths that are nowhere in the text keep no line.
    let errs = errors_of(SERVICES);
    assert_eq!((errs[0].path.as_str(), errs[0].line), ("routes", None));
    assert!(!errs[0].to_string().contains("line"), "{}", errs[0]);
    let errs = errors_of("[server]\nworkers = 1\nworkers = 2\n");
    assert_eq!((errs[0].path.as_str(), errs[0].line), ("", Some(3)), "invalid TOML: {}", errs[0]);
    assert_eq!(errs[0].problem, "invalid TOML at column 1: duplicate key `workers` in table `server`");
    assert!(errs[0].to_string().starts_with("line 3: invalid TOML at column 1: "), "{}", errs[0]);

    // Listed in the order of the file.
    let shown = errors_of(text).iter().map(|e| e.line).collect::<Vec<_>>();
    assert!(shown.windows(2).all(|w| w[0] <= w[1]), "{shown:?}");

    // A loaded file is named with each line, `file:line` as editors and terminals link them.
    let dir = std::env::temp_dir().join(format!("ringgate-config-lines-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, text).unwrap();
    let shown = Config::load(&file).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    let name = file.display().to_string();
    assert!(shown.starts_with(&format!("9 errors in {name}:\n")), "{shown}");
    assert!(shown.contains(&format!("\n  routes[2].service ({name}:22): no service named `user`\n")), "{shown}");
}

/// config/gateway.toml claims to show every key, each at its default unless its comment says
/// "default: ...". Guard both claims: every key the raw structs accept is written there (set or
/// commented out), and the server-wide sections it sets come out exactly as the defaults.
#[test]
fn shipped_config_shows_every_key_and_the_defaults() {
    use super::policy::{RawApiKeys, RawCors, RawJwt, RawRateLimit, RawSecurity, RawValidate};
    use super::raw::{RawAdmin, RawLimits, RawLog, RawRoute, RawServer, RawService, RawTimeouts, RawUpstream};
    use super::suggest::known_keys;
    let text = include_str!("../../config/gateway.toml");
    let sections = [
        ("server", known_keys::<RawServer>()),
        ("limits", known_keys::<RawLimits>()),
        ("timeouts", known_keys::<RawTimeouts>()),
        ("upstream", known_keys::<RawUpstream>()),
        ("security", known_keys::<RawSecurity>()),
        ("jwt", known_keys::<RawJwt>()),
        ("api_keys", known_keys::<RawApiKeys>()),
        ("rate_limits", known_keys::<RawRateLimit>()),
        ("services", known_keys::<RawService>()),
        ("routes", known_keys::<RawRoute>()),
        ("routes.cors", known_keys::<RawCors>()),
        ("routes.validate", known_keys::<RawValidate>()),
        ("admin", known_keys::<RawAdmin>()),
        ("log", known_keys::<RawLog>()),
        ("cluster", known_keys::<super::cluster::RawCluster>()),
        ("tls", known_keys::<super::tls::RawTls>()),
        ("mtls", known_keys::<super::tls::RawMtls>()),
        ("caches", known_keys::<super::cache::RawCache>()),
        ("routes.cache_policy", known_keys::<super::cache::RawCachePolicy>()),
    ];
    for (section, keys) in &sections {
        for key in keys.iter().flat_map(|(_, keys)| keys.iter()) {
            // `key =` as a whole word, set or in a comment, on its own line or in an inline table; or
            // a table header `[section.key]` / `[[section.key]]`.
            let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
            let shown = text.match_indices(key).any(|(at, _)| {
                let before = text.as_bytes()[..at].last().copied();
                !before.is_some_and(is_word) && text[at + key.len()..].trim_start_matches(' ').starts_with('=')
            }) || text.contains(&format!("[{section}.{key}]"));
            assert!(shown, "[{section}] {key} is not in config/gateway.toml");
        }
    }

    let shipped = parse_ok(text);
    let defaults = parse_ok(&with_services(ONE_ROUTE));
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    assert!(same(&shipped.server, &defaults.server), "[server]: {:?}", shipped.server);
    assert!(same(&shipped.limits, &defaults.limits), "[limits]: {:?}", shipped.limits);
    assert!(same(&shipped.timeouts, &defaults.timeouts), "[timeouts]: {:?}", shipped.timeouts);
    assert!(same(&shipped.upstream, &defaults.upstream), "[upstream]: {:?}", shipped.upstream);
    assert!(same(&shipped.security, &defaults.security), "[security]: {:?}", shipped.security);
    assert_eq!(shipped.jwt[0].cache_size, 10_000);
    let limit = &shipped.rate_limits[0];
    assert_eq!((limit.limit.burst, limit.limit.max_keys, &limit.key), (limit.limit.requests, 100_000, &super::policy::LimitKey::ClientIp));
    // The comments that own up to a demo value: each names the default it differs from.
    for (line_start, default) in [
        ("window = ", "default: 1s"),
        ("max_json = ", "default: 64KiB"),
        ("strip_prefix = ", "default: false"),
        ("allow_methods = ", "default: [\"GET\", \"HEAD\", \"POST\"]"),
        ("max_body = \"1MiB\"", "default: limits.max_body"),
        ("listen = \"127.0.0.1:9901\"", "default: off"),
        ("max_memory = ", "default: 256MiB"),
        ("ttl = ", "default: 0s"),
    ] {
        let line = text.lines().find(|l| l.starts_with(line_start)).unwrap();
        assert!(line.contains(default), "{line}");
    }
    assert!(text.contains("SHA-256 digests"));
}

#[test]
fn cache_errors_name_their_keys() {
    let route = |extra: &str| with_services(&format!("[[caches]]\nname = \"edge\"\n[[routes]]\npaths = [\"/\"]\nservice = \"users\"\n{extra}\n"));
    check_paths(&[
        ("unknown cache", route("cache = \"edje\""), &["routes[0].cache"]),
        ("policy without a cache", route("[routes.cache_policy]\nttl = \"5s\""), &["routes[0].cache_policy"]),
        ("bad key part", route("cache = \"edge\"\n[routes.cache_policy]\nkey = [\"path\", \"hdr:x\"]"), &["routes[0].cache_policy.key[1]"]),
        ("key without path", route("cache = \"edge\"\n[routes.cache_policy]\nkey = [\"host\"]"), &["routes[0].cache_policy.key"]),
        ("bad ttl", route("cache = \"edge\"\n[routes.cache_policy]\nttl = \"soon\""), &["routes[0].cache_policy.ttl"]),
        ("unknown policy key", route("cache = \"edge\"\n[routes.cache_policy]\nttl_max = \"1s\""), &["routes[0].cache_policy.ttl_max"]),
        (
            "object over a quarter of memory",
            format!("[[caches]]\nname = \"big\"\nmax_memory = \"1MiB\"\nmax_object = \"512KiB\"\n{}", route("")),
            &["caches[0].max_object"],
        ),
        ("cache without a name", format!("[[caches]]\nmax_memory = \"1MiB\"\n{}", route("")), &["caches[0].name"]),
        (
            "templates outside the key",
            route("cache = \"edge\"\n[routes.transform.request]\nset_headers = { \"X-User\" = \"{consumer}\", \"X-T\" = \"{header.X-Tenant}\" }"),
            &["routes[0].cache_policy.key"],
        ),
    ]);
    let ok = route(
        "cache = \"edge\"\n[routes.cache_policy]\nkey = [\"method\", \"path\", \"header:X-Tenant\", \"consumer\"]\nstale_if_error = \"0s\"\n\
         [routes.transform.request]\nset_headers = { \"X-User\" = \"{consumer}\", \"X-T\" = \"{header.X-Tenant}\" }",
    );
    assert!(errors_of(&ok).is_empty(), "{:?}", errors_of(&ok));
}

#[test]
fn cluster_limit_errors_name_their_keys() {
    let route = |extra: &str| with_services(&format!("[[routes]]\npaths = [\"/\"]\nservice = \"users\"\n{extra}\n"));
    let limit = |extra: &str| format!("[[rate_limits]]\nname = \"c\"\nrequests = 10\nwindow = \"1m\"\n{extra}\n");
    let cluster = "[cluster]\nredis = [\"redis://127.0.0.1:6379\"]\n";
    check_paths(&[
        ("cluster scope without [cluster]", format!("{}{}", limit("scope = \"cluster\""), route("")), &["rate_limits[0].scope"]),
        ("unknown scope", format!("{}{}", limit("scope = \"global\""), route("")), &["rate_limits[0].scope"]),
        ("sync on a local limit", format!("{}{}", limit("sync = \"100ms\""), route("")), &["rate_limits[0].sync"]),
        ("sync neither exact nor a duration", format!("{cluster}{}{}", limit("scope = \"cluster\"\nsync = \"often\""), route("")), &["rate_limits[0].sync"]),
        ("sync not shorter than the window", format!("{cluster}{}{}", limit("scope = \"cluster\"\nsync = \"1m\""), route("")), &["rate_limits[0].sync"]),
        ("unknown on_error", format!("{cluster}{}{}", limit("scope = \"cluster\"\non_error = \"maybe\""), route("")), &["rate_limits[0].on_error"]),
        ("unparsable Redis URL", format!("[cluster]\nredis = [\"redis://:hunter2@db\"]\n{}", route("")), &["cluster.redis[0]"]),
        ("no Redis address", format!("[cluster]\nredis = []\n{}", route("")), &["cluster.redis"]),
        ("unknown key in [cluster]", format!("{cluster}timout = \"5ms\"\n{}", route("")), &["cluster.timout"]),
        ("long timeout", format!("{cluster}timeout = \"2s\"\n{}", route("")), &["cluster.timeout"]),
        ("exact cluster limit", format!("{cluster}{}{}", limit("scope = \"cluster\""), route("rate_limits = [\"c\"]")), &[]),
        ("synced cluster limit", format!("{cluster}{}{}", limit("scope = \"cluster\"\nsync = \"100ms\"\non_error = \"deny\""), route("rate_limits = [\"c\"]")), &[]),
    ]);
    // A bad URL's password is not repeated in the error.
    let text = Config::parse(&format!("[cluster]\nredis = [\"redis://:hunter2@db\"]\n{}", route(""))).unwrap_err().to_string();
    assert!(!text.contains("hunter2"), "{text}");
    let cfg = parse_ok(&format!("{cluster}on_error = \"deny\"\n{}{}", limit("scope = \"cluster\"\nsync = \"250ms\""), route("rate_limits = [\"c\"]")));
    use super::cluster::{OnError, Scope, SyncMode};
    assert_eq!(cfg.rate_limits[0].scope, Scope::Cluster { sync: SyncMode::Every(std::time::Duration::from_millis(250)), on_error: OnError::Deny });
    let c = cfg.cluster.expect("[cluster]");
    assert_eq!((c.timeout, c.key_prefix.as_str()), (std::time::Duration::from_millis(5), "ringgate:"));
}

//! Header, path and query transforms of requests and responses, end to end: what the upstream
//! received and what the client got; template values that try to escape their place.

mod common;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use common::{Client, Gw, Upstream};
use ringgate::config::Config;

const SECRET: &str = "transform-test-secret-0123456789abcdef";

fn token(sub: &str) -> String {
    let claims = serde_json::json!({ "sub": sub, "exp": 4_102_444_800u64 });
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn gateway(up: &Upstream) -> Gw {
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\npin_cores = false\n\n\
         [[jwt]]\nname = \"main\"\n[[jwt.keys]]\nalg = \"HS256\"\nsecret = \"{SECRET}\"\n\n\
         [[services]]\nname = \"svc\"\nupstreams = [\"{}\"]\n\n\
         [[routes]]\nname = \"orders\"\npaths = [\"/api/v1\"]\nservice = \"svc\"\nauth = [\"main\"]\n\
         [routes.transform.request]\n\
         set_headers = {{ \"X-Api-Version\" = \"2\", \"X-User\" = \"{{claim.sub}}\", \"X-Tenant-Copy\" = \"t={{header.X-Tenant}}\" }}\n\
         remove_headers = [\"X-Debug\"]\n\
         rename_headers = {{ \"X-Old\" = \"X-New\" }}\n\
         rewrite = {{ from = \"^/api/v1/(.*)$\", to = \"/v2/$1\" }}\n\
         query = {{ set = {{ \"src\" = \"gateway\", \"who\" = \"{{claim.sub}}\" }}, remove = [\"debug\"] }}\n\
         [routes.transform.response]\n\
         set_headers = {{ \"X-Served-By\" = \"ringgate\", \"X-Trace\" = \"{{request_id}}\" }}\n\
         remove_headers = [\"Server\", \"X-Powered-By\"]\n\
         rename_headers = {{ \"X-Upstream-Id\" = \"X-Origin-Id\" }}\n",
        up.addr
    );
    Gw::start(&toml)
}

fn upstream() -> Upstream {
    Upstream::raw(b"HTTP/1.1 200 OK\r\nServer: app/1.0\r\nX-Powered-By: php\r\nX-Upstream-Id: u-7\r\nContent-Length: 2\r\n\r\nok")
}

#[test]
fn request_headers_path_and_query_are_transformed() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = Client::connect(gw.addr);
    let r = c.request(
        format!(
            "GET /api/v1/orders/7?debug=1&page=2&src=client HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\
             X-Debug: yes\r\nX-Old: kept-value\r\nX-Api-Version: 1\r\nX-Tenant: acme\r\n\r\n",
            token("alice")
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let got = &up.requests()[0];
    assert_eq!(got.request_line(), "GET /v2/orders/7?page=2&src=gateway&who=alice HTTP/1.1");
    assert_eq!(got.headers("x-api-version"), ["2"], "set replaces the client's value");
    assert_eq!(got.headers("x-user"), ["alice"]);
    assert_eq!(got.headers("x-tenant-copy"), ["t=acme"]);
    assert!(got.headers("x-debug").is_empty());
    assert!(got.headers("x-old").is_empty());
    assert_eq!(got.headers("x-new"), ["kept-value"]);
    // The response as the client got it.
    assert_eq!(r.header("x-served-by").as_deref(), Some("ringgate"));
    assert_eq!(r.header("x-trace"), r.header("x-request-id"));
    assert!(r.header("server").is_none() && r.header("x-powered-by").is_none(), "{}", r.head);
    assert_eq!(r.header("x-origin-id").as_deref(), Some("u-7"));
    assert!(r.header("x-upstream-id").is_none());
}

#[test]
fn template_values_cannot_escape_their_place() {
    let up = upstream();
    let gw = gateway(&up);
    // A subject that tries to leave the query value and the path.
    let r = Client::connect(gw.addr)
        .request(format!("GET /api/v1/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n", token("../admin?x=1&y=2#z")).as_bytes());
    assert_eq!(r.status, 200, "{}", r.head);
    let got = &up.requests()[0];
    assert_eq!(got.request_line(), "GET /v2/x?src=gateway&who=..%2Fadmin%3Fx%3D1%26y%3D2%23z HTTP/1.1");
    // In a header, a subject with CR LF is refused, never written.
    let r = Client::connect(gw.addr)
        .request(format!("GET /api/v1/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n", token("bob\r\nX-Admin: 1")).as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (400, "transform_value_refused"));
    assert_eq!(up.requests().len(), 1, "the refused request never reached the upstream");
}

#[test]
fn transform_config_errors_name_their_keys() {
    let base = "[[services]]\nname = \"svc\"\nupstreams = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"svc\"\n";
    let cases = [
        ("[routes.transform.request]\nrewrite = { from = \"^/(unclosed\", to = \"/x\" }", "routes[0].transform.request.rewrite.from"),
        ("[routes.transform.request]\nrewrite = { from = \"^/a\", to = \"relative\" }", "routes[0].transform.request.rewrite.to"),
        ("[routes.transform.request]\nset_headers = { \"X-A\" = \"{nope}\" }", "routes[0].transform.request.set_headers.X-A"),
        ("[routes.transform.request]\nset_headers = { \"Content-Length\" = \"1\" }", "routes[0].transform.request.set_headers.Content-Length"),
        ("[routes.transform.request]\nremove_headers = [\"bad name\"]", "routes[0].transform.request.remove_headers[0]"),
        ("[routes.transform.response]\nset_headers = { \"X-A\" = \"{consumer}\" }", "routes[0].transform.response.set_headers.X-A"),
        ("[routes.transform.request]\nquery = { set = { \"a&b\" = \"1\" } }", "routes[0].transform.request.query.set.a&b"),
        ("[routes.transform.request]\njson = { remove = [\"x\"] }", "routes[0].transform.request.json"),
    ];
    for (extra, path) in cases {
        let err = Config::parse(&format!("{base}{extra}\n")).expect_err(extra).to_string();
        assert!(err.contains(path), "want `{path}` in:\n{err}");
    }
}

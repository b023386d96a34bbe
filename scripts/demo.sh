#!/usr/bin/env bash
# The ringgate demo: builds the gateway, starts stand-in `users` (two instances), `orders` and
# `products` services and the gateway on (a copy of) config/gateway.toml, shows requests being
# routed, the admin listener's metrics, and a hot reload that adds a route.
#   scripts/demo.sh          run the showcase, then stop everything
#   scripts/demo.sh --keep   leave the gateway and services running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[[ "${1:-}" == "--keep" ]] && keep=true

for tool in cargo curl python3; do
  command -v "$tool" >/dev/null || { echo "demo: '$tool' is required" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release --quiet
bin=target/release/ringgate

pids=()
work=$(mktemp -d)
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 8443 9901 3001 3011 3002 3003; do
  port_free "$port" || { echo "demo: port $port is in use (config/gateway.toml and the demo need it)" >&2; exit 1; }
done

"$bin" check --config config/gateway.toml >/dev/null

start_stub() { # port name
  "$bin" stub --listen "127.0.0.1:$1" --name "$2" --body-size 160 >/dev/null &
  pids+=($!)
}
start_stub 3001 users-a
start_stub 3011 users-b
start_stub 3002 orders
orders_pid=$!
start_stub 3003 products

# The gateway serves a copy, so the reload below can change it without touching the repository.
cfg="$work/gateway.toml"
cp config/gateway.toml "$cfg"
# HTTPS on 8443 with a self-signed certificate made for the demo (when openssl is at hand).
tls=0
if command -v openssl >/dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 -subj /CN=localhost \
    -addext 'subjectAltName=DNS:localhost,DNS:*.example.com' -keyout "$work/demo.key" -out "$work/demo.pem" 2>/dev/null && tls=1
fi
if ((tls)); then
  cat >>"$cfg" <<TOML

[tls]
listen = ["127.0.0.1:8443"]
[[tls.certs]]
cert_file = "$work/demo.pem"
key_file = "$work/demo.key"
hosts = ["localhost", "*.example.com"]
TOML
fi
# Its log (stderr) goes to a file; the demo shows lines from it where they matter.
"$bin" serve --config "$cfg" 2>"$work/gateway.log" &
pids+=($!)

for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:8080/healthz" && break
  sleep 0.1
done

show() { # description, curl args...
  local what=$1; shift
  echo
  echo "== $what"
  echo "\$ curl $*"
  curl -s -i "$@" | tr -d '\r' | sed -e 's/"pad":"x*"/"pad":"…"/'
  echo
}

show "users, round robin over two instances, rate-limited to 5 per 10 s per client (1/2)" http://127.0.0.1:8080/api/users/7
show "users, round robin over two instances (2/2); the route's response transform renames \"service\" to \"servedBy\", drops \"pad\" and adds X-Served-By" http://127.0.0.1:8080/api/users/8
show "a dashboard: the users and orders services asked at once, answered as one JSON object" "http://127.0.0.1:8080/api/dashboard?user=7"
if ((tls)); then
  echo
  echo "== the same over HTTPS (TLS 1.3, a self-signed certificate for localhost made for the demo)"
  echo "\$ curl -sk https://localhost:8443/api/products/3 -H 'X-Api-Key: demo-products-key'"
  curl -sk -o /dev/null -w 'HTTP %{http_code} over %{scheme}, TLS verified: no (-k), ' https://localhost:8443/api/products/3 -H 'X-Api-Key: demo-products-key'
  curl -sk -v https://localhost:8443/api/products/3 -H 'X-Api-Key: demo-products-key' 2>&1 | grep -m1 -oE 'SSL connection using [^ ]+ / [^ ]+' || echo
else
  echo
  echo "== (HTTPS skipped: openssl is not installed to make a demo certificate)"
fi
echo
echo "== users: four more requests; the limit of 5 per 10 s runs out"
for i in 1 2 3 4; do
  curl -s -o /dev/null -D - http://127.0.0.1:8080/api/users/9 | tr -d '\r' | grep -iE '^(HTTP|ratelimit-remaining|retry-after)' | paste -sd ' '
done
show "users: CORS preflight answered by the gateway" -X OPTIONS -H 'Origin: https://app.example.com' -H 'Access-Control-Request-Method: PUT' http://127.0.0.1:8080/api/users/7
show "orders needs a JWT: without one, 401" -X POST -H 'Content-Type: application/json' -d '{"item":42}' http://127.0.0.1:8080/api/orders
token=$(python3 scripts/mint-token.py --secret ringgate-demo-secret-change-me-please --kid demo-1 \
  --sub alice --iss https://issuer.demo --aud orders --ttl 600)
echo
echo "== minted a demo token: scripts/mint-token.py --secret ... --sub alice --iss https://issuer.demo --aud orders"
show "orders with the token: the upstream sees X-Consumer-Id: alice" -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"item":42}' http://127.0.0.1:8080/api/orders
show "orders validates JSON bodies: 400" -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"item":' http://127.0.0.1:8080/api/orders
show "products needs an API key: without one, 401" -H 'Host: shop.example.com' http://127.0.0.1:8080/api/products/9
show "products with X-Api-Key; host-matched, prefix stripped (/api/products/9 arrives as /9)" -H 'Host: shop.example.com' -H 'X-Api-Key: demo-products-key' http://127.0.0.1:8080/api/products/9
echo
echo "== products is cached (cache = \"edge\", ttl 30s): Cache-Status goes from a miss to hits"
echo "   (three requests on one kept-alive connection: each shard has its own store)"
echo "\$ curl -s -o /dev/null -D - -H 'Host: shop.example.com' -H 'X-Api-Key: demo-products-key' http://127.0.0.1:8080/api/products/5 (x3)"
u=http://127.0.0.1:8080/api/products/5
curl -s -o /dev/null -D - -H 'Host: shop.example.com' -H 'X-Api-Key: demo-products-key' "$u" "$u" "$u" \
  | tr -d '\r' | grep -iE '^(HTTP|age|cache-status)' | paste -d ' ' - - -
echo "\$ curl -s -X DELETE 'http://127.0.0.1:9901/cache?prefix=/api/products'   # purge, on every shard"
curl -s -X DELETE 'http://127.0.0.1:9901/cache?prefix=/api/products'
curl -s -o /dev/null -D - -H 'Host: shop.example.com' -H 'X-Api-Key: demo-products-key' "$u" \
  | tr -d '\r' | grep -iE '^(HTTP|cache-status)' | paste -sd ' '
show "exact route" http://127.0.0.1:8080/healthz
show "no route: 404 with a JSON error" http://127.0.0.1:8080/api/unknown
show "method not on the route: 405 with Allow" -X PATCH http://127.0.0.1:8080/api/users/7
show "body over the route limit (orders: 1MiB): 413 before reading it" -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -H 'Content-Length: 2000000' --data-binary @/dev/null http://127.0.0.1:8080/api/orders
echo
echo "== a malformed request (Content-Length and Transfer-Encoding): 400, connection closed"
printf 'POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' \
  | timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080; cat >&3; cat <&3' | tr -d '\r'
echo

echo "== metrics on the admin listener (127.0.0.1:9901, never the public port)"
echo "\$ curl -s http://127.0.0.1:9901/metrics | grep -E '^ringgate_(requests_total|config_generation)'"
curl -s http://127.0.0.1:9901/metrics | grep -E '^ringgate_(requests_total|config_generation)' | head -12
echo
echo "== hot reload: add a route to the config file, then POST /reload (SIGHUP does the same)"
cat >> "$cfg" <<'TOML'

[[routes]]
name = "catalog"
paths = ["/api/catalog"]
service = "products"
strip_prefix = true
TOML
echo "\$ curl -s -X POST http://127.0.0.1:9901/reload"
curl -s -X POST http://127.0.0.1:9901/reload
sleep 0.2   # every shard switches on its next tick (50 ms); requests in flight finish on the old config
show "the new route answers, on the same running gateway" http://127.0.0.1:8080/api/catalog/1
echo "== a broken config is refused; the running one keeps serving"
echo 'oops = true' >> "$cfg"
echo "\$ curl -s -X POST http://127.0.0.1:9901/reload"
curl -s -X POST http://127.0.0.1:9901/reload
echo
grep -m1 'reload: ' "$work/gateway.log" | sed 's/^/  log: /'
curl -s -o /dev/null -w 'GET /api/catalog/1 -> %{http_code}\n' http://127.0.0.1:8080/api/catalog/1

echo
echo "== orders goes down: its circuit breaker (20 requests, 50 % failures) opens and serves the fallback"
kill "$orders_pid" 2>/dev/null || true
wait "$orders_pid" 2>/dev/null || true
for i in $(seq 24); do
  curl -s -o /dev/null -w '%{http_code}\n' -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"item":42}' http://127.0.0.1:8080/api/orders
done | sort | uniq -c | sed 's/^ */  /; s/ 502$/ x 502 (upstream_connect_failed)/; s/ 503$/ x 503 (breaker open: fallback, upstream not tried)/'
show "orders while the breaker is open: the fallback, at once" -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"item":42}' http://127.0.0.1:8080/api/orders
curl -s http://127.0.0.1:9901/metrics | grep -E '^ringgate_breaker_(state|fallbacks_total)\{service="orders"'
echo "the gateway's log names the route, upstream, request id and OS error of each failure:"
grep -m1 'request failed' "$work/gateway.log" | sed 's/^/  /'
grep -m1 'circuit open' "$work/gateway.log" | sed 's/^/  /'
echo

if $keep; then
  echo
  echo "gateway on http://127.0.0.1:8080 — Ctrl-C to stop"
  wait
else
  echo
  echo "demo done; run 'scripts/demo.sh --keep' to leave it running"
fi

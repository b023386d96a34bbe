#!/usr/bin/env bash
# HTTP cache conformance: runs mnot's cache test suite (npm package `http-cache-tests`, the suite
# behind cache-tests.fyi) against a shared cache that sits in front of the suite's own origin server.
#
#   scripts/cache-conformance.sh --server-port 8701 --base http://127.0.0.1:8080
#       start the suite's origin server on 127.0.0.1:8701 and run the suite through the cache that
#       is already listening at --base and forwards every path there (ringgate: one route "/" to a
#       service with the endpoint 127.0.0.1:8701)
#   scripts/cache-conformance.sh --nginx
#       start nginx (proxy_cache, proxy_cache_revalidate, proxy_cache_lock) in front of the server
#       itself, as a reference
#   scripts/cache-conformance.sh --ringgate target/release/ringgate --min-required 158
#       start ringgate (one worker, one route "/" cached with the defaults) in front of the server,
#       and fail unless at least that many required tests pass
#   scripts/cache-conformance.sh --serve-only --server-port 8701
#       only run the origin server (until Ctrl-C), e.g. to poke at the cache by hand
#
# Options:
#   --server-port N   (alias --upstream-port) port of the suite's origin server on 127.0.0.1;
#                     default: a free port (with --base you will want to give it, so the cache agrees)
#   --base URL        the cache to test, e.g. http://127.0.0.1:8080 (no trailing slash needed)
#   --nginx           start nginx as the cache; --nginx-port N picks its port (default: a free one)
#   --no-server       do not start the origin server (one is already running on --server-port)
#   --serve-only      start only the origin server and wait
#   --id TEST_ID      run one test and show its requests/responses as seen by client and server
#   --json FILE       keep the raw results (JSON: test id -> true | [error kind, message])
#   --failed          list the required and optimal tests that did not pass, with their kind
#   --timeout SECS    give up on the suite run after this long (default 600)
#   --ringgate BIN    start ringgate from BIN as the cache (its config is written to the work dir)
#   --min-required N  exit 1 when fewer than N required tests pass
# Environment: CACHE_TESTS_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/ringgate/cache-tests), where
# the npm package is installed on first use; CACHE_TESTS_VERSION (default 0.4.5); NGINX (binary).
#
# Counting: every test has a kind: required (a spec conformance failure if it fails), optimal (a
# missed chance to use the cache) or check (only records behaviour; not counted). A test counts as
# passed, as on cache-tests.fyi, when it returned true and every test in its depends_on passed.
# "overall" is required + optimal. Browser-only tests are not run by the command-line client; the
# Surrogate-Control tests are. The run takes about 15 s: tests run 100 at a time and many of
# them wait out freshness lifetimes (3 s pauses, some several in a row).
set -euo pipefail

die() { echo "cache-conformance: $*" >&2; exit 2; }

server_port="" base="" use_nginx=false nginx_port="" start_server=true serve_only=false
test_id="" json_out="" show_failed=false run_timeout=600 ringgate_bin="" min_required=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server-port|--upstream-port) server_port="${2:?}"; shift 2 ;;
    --base) base="${2:?}"; shift 2 ;;
    --nginx) use_nginx=true; shift ;;
    --nginx-port) nginx_port="${2:?}"; shift 2 ;;
    --no-server) start_server=false; shift ;;
    --serve-only) serve_only=true; shift ;;
    --id) test_id="${2:?}"; shift 2 ;;
    --json) json_out="${2:?}"; shift 2 ;;
    --failed) show_failed=true; shift ;;
    --timeout) run_timeout="${2:?}"; shift 2 ;;
    --ringgate) ringgate_bin="${2:?}"; shift 2 ;;
    --min-required) min_required="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if ! $serve_only; then
  $use_nginx && [[ -n "$base" ]] && die "give either --base or --nginx, not both"
  [[ -n "$ringgate_bin" ]] && { $use_nginx || [[ -n "$base" ]]; } && die "give one of --base, --nginx, --ringgate"
  $use_nginx || [[ -n "$base" || -n "$ringgate_bin" ]] || die "give --base URL (a cache in front of the suite's server), --nginx or --ringgate BIN"
fi
$start_server || [[ -n "$server_port" ]] || die "--no-server needs --server-port"

command -v node >/dev/null || die "node is required (apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm is required (apt-get install nodejs npm)"

# --- the suite, installed once into a cache dir -------------------------------------------------
dir="${CACHE_TESTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ringgate/cache-tests}"
version="${CACHE_TESTS_VERSION:-0.4.5}"
pkg="$dir/node_modules/http-cache-tests"
if [[ ! -f "$pkg/package.json" ]] || ! grep -q "\"version\": \"$version\"" "$pkg/package.json"; then
  echo "== installing http-cache-tests@$version into $dir" >&2
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "http-cache-tests@$version" >&2 || die "npm install http-cache-tests@$version failed"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cache-conformance.XXXXXX")
chmod 755 "$work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port pid what
  local i
  for i in $(seq 100); do
    port_open "$1" && return 0
    kill -0 "$2" 2>/dev/null || die "$3 exited before listening on port $1"
    sleep 0.1
  done
  die "$3 did not listen on port $1 within 10 s"
}

# --- the suite's origin server ------------------------------------------------------------------
[[ -n "$server_port" ]] || server_port=$(free_port)
if $start_server; then
  port_open "$server_port" && die "port $server_port is already in use"
  # server.mjs listens on every interface; this preload keeps it on loopback.
  cat > "$work/loopback.cjs" <<'EOF'
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === 'number' || (typeof port === 'string' && /^\d+$/.test(port))) {
    if (rest.length === 0 || typeof rest[0] === 'function') return listen.call(this, Number(port), '127.0.0.1', ...rest)
  }
  return listen.call(this, port, ...rest)
}
EOF
  # server.mjs reads its settings from npm's environment variables (as `npm run server` sets them).
  (cd "$pkg" && exec env npm_config_protocol=http npm_config_port="$server_port" \
     npm_config_pidfile="$work/server.pid" node --require "$work/loopback.cjs" server/server.mjs) \
     > "$work/server.log" 2>&1 &
  pids+=($!)
  wait_port "$server_port" "$!" "the suite's server"
  echo "== suite origin server on http://127.0.0.1:$server_port (pid ${pids[-1]}, log $work/server.log)" >&2
fi

if $serve_only; then
  echo "== serving; point the cache at 127.0.0.1:$server_port (Ctrl-C stops)" >&2
  wait "${pids[0]}"
  exit 0
fi

# --- nginx as the reference cache ---------------------------------------------------------------
if $use_nginx; then
  nginx="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
  [[ -x "$nginx" ]] || die "nginx not found (apt-get install nginx-light, or set NGINX=)"
  [[ -n "$nginx_port" ]] || nginx_port=$(free_port)
  port_open "$nginx_port" && die "port $nginx_port is already in use"
  ng="$work/nginx"
  mkdir -p "$ng/tmp" "$ng/cache"
  cat > "$ng/nginx.conf" <<EOF
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log warn;
events { worker_connections 2048; }
http {
    log_format cache '\$remote_addr "\$request" \$status cache=\$upstream_cache_status';
    access_log $ng/access.log cache;
    client_body_temp_path $ng/tmp/body;
    proxy_temp_path $ng/tmp/proxy;
    fastcgi_temp_path $ng/tmp/fastcgi;
    uwsgi_temp_path $ng/tmp/uwsgi;
    scgi_temp_path $ng/tmp/scgi;
    proxy_cache_path $ng/cache levels=1:2 keys_zone=cachetests:8m max_size=100m inactive=60m;
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://127.0.0.1:$server_port;
            proxy_cache cachetests;
            proxy_cache_revalidate on;
            proxy_cache_lock on;
        }
    }
}
EOF
  run_as=()
  if [[ $EUID -eq 0 ]]; then # never run the cache as root: drop to nobody for master and workers
    chown -R nobody:nogroup "$ng"
    run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  fi
  "${run_as[@]}" "$nginx" -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log" -g 'daemon off;' \
    > "$ng/stdout.log" 2>&1 &
  pids+=($!)
  wait_port "$nginx_port" "$!" "nginx ($ng/error.log: $(cat "$ng/error.log" 2>/dev/null))"
  base="http://127.0.0.1:$nginx_port"
  echo "== $("$nginx" -v 2>&1) on $base (pid ${pids[-1]})" >&2
fi

# --- ringgate as the cache -----------------------------------------------------------------------
if [[ -n "$ringgate_bin" ]]; then
  [[ -x "$ringgate_bin" ]] || die "no ringgate binary at $ringgate_bin"
  rg_port=$(free_port)
  cat > "$work/ringgate.toml" <<EOF
[server]
listen = ["127.0.0.1:$rg_port"]
workers = 1
pin_cores = false
[[caches]]
name = "edge"
[[services]]
name = "origin"
upstreams = ["127.0.0.1:$server_port"]
[[routes]]
name = "all"
paths = ["/"]
service = "origin"
cache = "edge"
EOF
  "$ringgate_bin" serve --config "$work/ringgate.toml" > "$work/ringgate.log" 2>&1 &
  pids+=($!)
  wait_port "$rg_port" "$!" "ringgate ($work/ringgate.log: $(tail -3 "$work/ringgate.log" 2>/dev/null))"
  base="http://127.0.0.1:$rg_port"
  echo "== ringgate on $base (pid ${pids[-1]})" >&2
fi

# --- the run --------------------------------------------------------------------------------------
base="${base%/}" # the client appends /test/<uuid>, /config/<uuid>, /state/<uuid>
if [[ -n "$test_id" ]]; then
  (cd "$pkg" && npm_config_base="$base" npm_config_id="$test_id" timeout "$run_timeout" node --no-warnings cli.mjs)
  if $start_server; then echo "== server side:" >&2; cat "$work/server.log" >&2; fi
  exit 0
fi

echo "== running the suite against $base" >&2
start=$SECONDS
(cd "$pkg" && npm_config_base="$base" npm_config_id="" npm_package_config_id="" timeout "$run_timeout" node --no-warnings cli.mjs) \
  > "$work/results.json" 2> "$work/cli.err" || die "the suite's client failed: $(cat "$work/cli.err")"
node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$work/results.json" 2>/dev/null \
  || die "the suite's client printed no JSON results: $(head -c 2000 "$work/results.json") $(cat "$work/cli.err")"
echo "== suite finished in $((SECONDS - start)) s" >&2
[[ -n "$json_out" ]] && cp "$work/results.json" "$json_out"

cat > "$work/summarize.mjs" <<'EOF'
// node summarize.mjs PKGDIR RESULTS.json [--failed]
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'
const [pkg, file, ...flags] = process.argv.slice(2)
const imp = p => import(pathToFileURL(path.join(pkg, p)).href)
const tests = (await imp('tests/index.mjs')).default
const surrogate = (await imp('tests/surrogate-control.mjs')).default
const suites = tests.includes(surrogate) ? tests : [...tests, surrogate] // cli.mjs adds it
const results = JSON.parse(fs.readFileSync(file, 'utf8'))
const byId = new Map()
for (const s of suites) for (const t of s.tests) if (!t.browser_only) byId.set(t.id, t)
const passed = (id, seen = new Set()) => { // true, and every depends_on passed (as cache-tests.fyi shows it)
  if (results[id] !== true) return false
  if (seen.has(id)) return true
  seen.add(id)
  return (byId.get(id).depends_on || []).every(d => passed(d, seen))
}
const c = { required: [0, 0, 0], optimal: [0, 0, 0], check: [0, 0, 0] } // passed, total, raw true
const failed = []
for (const [id, t] of byId) {
  const kind = t.kind || 'required'
  c[kind][1]++
  if (results[id] === true) c[kind][2]++
  if (passed(id)) { c[kind][0]++; continue }
  if (kind === 'check') continue
  const r = results[id]
  const why = r === undefined ? 'not run'
    : r === true ? 'depends on failed ' + t.depends_on.filter(d => !passed(d)).join(', ')
      : `${r[0] === 'Setup' ? (r[1] === 'retry' ? 'retry' : 'setup failure') : 'fail'}: ${r[1]}`
  failed.push(`${kind}\t${id}\t${why}`)
}
if (flags.includes('--failed')) for (const f of failed.sort()) console.log(f)
const [r, o] = [c.required, c.optimal]
console.log(`(ignoring depends_on: required ${r[2]}/${r[1]}, overall ${r[2] + o[2]}/${r[1] + o[1]}; check tests answering yes: ${c.check[2]}/${c.check[1]})`)
console.log(`required: ${r[0]}/${r[1]} passed, overall: ${r[0] + o[0]}/${r[1] + o[1]} passed`)
EOF
flags=()
$show_failed && flags+=(--failed)
node "$work/summarize.mjs" "$pkg" "$work/results.json" "${flags[@]}" | tee "$work/summary.txt"
if (( min_required > 0 )); then
  got=$(sed -n 's/^required: \([0-9]*\)\/.*/\1/p' "$work/summary.txt")
  (( got >= min_required )) || { echo "cache-conformance: $got required tests passed, fewer than $min_required" >&2; exit 1; }
fi

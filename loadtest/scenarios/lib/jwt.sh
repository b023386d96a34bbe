# shellcheck shell=bash disable=SC2034  # sourced by the jwt-* scenarios, which run.sh sources
# Shared by the JWT scenarios (scenarios/jwt-*.sh): the rate limit, the route,
# the nginx side and the pre-flight check. Lives in lib/ so that run.sh does
# not list it as a scenario.

SCENARIO_PATH="/api/bench"

JWT_ISSUER="https://issuer.loadtest"
JWT_AUDIENCE="bench"
JWT_TTL=$((10 * 365 * 24 * 3600))  # exp far beyond any run
# Verified tokens ringgate caches per shard (until their exp). Override with
# JWT_CACHE_SIZE=N in the environment.
JWT_CACHE_SIZE=${JWT_CACHE_SIZE:-10000}
# The limit is checked on every request but never reached: 100 million
# requests per second per consumer, thousands of times what one machine's
# loopback run can send.
JWT_LIMIT_REQUESTS=100000000
JWT_LIMIT_WINDOW="1s"

MINT=("$ROOT/scripts/mint-token.py")

# jwt_gateway_tables JWT_KEY_TOML : prints the [[jwt]] (with the given
# [[jwt.keys]] body), the [[rate_limits]] and the route for run.sh.
jwt_gateway_tables() {
    cat <<TOML
[[jwt]]
name = "bench"
issuer = "$JWT_ISSUER"
audiences = ["$JWT_AUDIENCE"]
forward_claims = { sub = "X-Consumer-Id" }
cache_size = $JWT_CACHE_SIZE

[[jwt.keys]]
$1

[[rate_limits]]
name = "per-consumer"
requests = $JWT_LIMIT_REQUESTS
window = "$JWT_LIMIT_WINDOW"
key = "consumer"

[[routes]]
name = "bench"
paths = ["/"]
service = "bench"
auth = ["bench"]
rate_limits = ["per-consumer"]
TOML
}

# nginx stays a plain reverse proxy: open-source nginx cannot check JWTs.
scenario_nginx_locations() {
    cat <<'NGINX'
        location / {
            proxy_pass http://backend;
        }
NGINX
}

# jwt_status PORT [TOKEN] : the status code ringgate answers with (and TOKEN
# as a bearer token when given).
jwt_status() {
    local args=(-s -o /dev/null -w '%{http_code}' --max-time 5)
    [[ -z ${2-} ]] || args+=(-H "Authorization: Bearer $2")
    curl "${args[@]}" "http://127.0.0.1:$1$SCENARIO_PATH" || true
}

# jwt_check PORT GOOD_TOKEN FORGED_TOKEN : before measuring, make sure the
# route really enforces the JWT (else the numbers would be those of a plain
# route): the good token gets 200, no token and a token with a signature that
# does not match get 401 (403 accepted too). Also reports whether the response
# carries RateLimit headers, the sign that the limit is applied.
jwt_check() {
    local port=$1 good=$2 forged=$3 code headers
    code=$(jwt_status "$port" "$good")
    [[ $code == 200 ]] || die "ringgate answered $code to a valid token, expected 200 (see $WORK/ringgate.log)"
    code=$(jwt_status "$port")
    [[ $code == 401 || $code == 403 ]] ||
        die "ringgate answered $code to a request without a token, expected 401: JWT auth is not in force"
    code=$(jwt_status "$port" "$forged")
    [[ $code == 401 || $code == 403 ]] ||
        die "ringgate answered $code to a token with a wrong signature, expected 401"
    headers=$(curl -s -D - -o /dev/null --max-time 5 -H "Authorization: Bearer $good" \
        "http://127.0.0.1:$port$SCENARIO_PATH" | tr -d '\r')
    if grep -qi '^ratelimit' <<<"$headers"; then
        log "check: valid token 200, no token and forged token rejected; $(grep -i '^ratelimit:' <<<"$headers" | head -n 1)"
    else
        log "check: valid token 200, no token and forged token rejected (no RateLimit header in the response)"
    fi
}

# jwt_forge A B : A's header and claims with B's signature (valid encoding, wrong signature).
jwt_forge() { echo "${1%.*}.${2##*.}"; }

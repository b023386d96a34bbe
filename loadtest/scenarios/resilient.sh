# shellcheck shell=bash disable=SC2034  # sourced by run.sh, which uses the variables
# Scenario "resilient": plain (same catch-all route, same nginx location, same
# requests) but the service has two stub upstreams and ringgate's upstream
# resilience features switched on, to measure what they cost on the happy path
# (both upstreams healthy, nothing fails):
#   balance = "least_request"  (the less loaded of two random endpoints; an
#                               in-flight count per endpoint shared by all shards)
#   [services.breaker]         every outcome recorded in the shared window
#   [services.outlier]         every outcome recorded per endpoint
#   [services.health]          one prober thread per endpoint, GET /healthz every 2 s
#   [services.retry]           connect/reset retries with a budget and backoff
# nginx gets the same two upstreams in its upstream block, with least_conn
# (its counterpart of least_request); its passive checks (max_fails=1
# fail_timeout=10s) are nginx's defaults and always on.
#
# RESILIENT=off in the environment keeps the two upstreams but leaves every
# feature out (ringgate: default round robin, no tables; nginx: round robin):
# the control that separates "two upstreams" from "the features".
#
# Compare with a `plain` run of the same binary. Besides the variables and
# functions described in scenarios/plain.sh, this scenario sets SCENARIO_STUBS
# (run.sh starts that many stubs, "stub" and "stub2") and
# SCENARIO_NGINX_UPSTREAM, and defines scenario_gateway_service (the service's
# keys and tables after `upstreams`).

# shellcheck source-path=SCRIPTDIR source=plain.sh
source "$HERE/scenarios/plain.sh" # SCENARIO_PATH, SCENARIO_HEADERS, routes, nginx location

RESILIENT=${RESILIENT:-on}
[[ $RESILIENT == on || $RESILIENT == off ]] || die "RESILIENT must be 'on' or 'off', got '$RESILIENT'"

SCENARIO_STUBS=2
if [[ $RESILIENT == on ]]; then
    SCENARIO_NGINX_UPSTREAM="least_conn;"
    SCENARIO_NOTES=(
        "ringgate: 2 stub upstreams, balance = least_request, [services.breaker] (with fallback), [services.outlier], [services.health] (GET /healthz every 2s), [services.retry]"
        "nginx:    the same 2 upstreams, least_conn; (passive max_fails/fail_timeout: nginx's defaults)"
        "compare with a 'plain' run (1 upstream, no features) for the cost; RESILIENT=off is the 2-upstream control without features"
    )
else
    SCENARIO_NGINX_UPSTREAM=""
    SCENARIO_NOTES=(
        "RESILIENT=off: ringgate with 2 stub upstreams, default round robin, no breaker/outlier/health/retry tables"
        "nginx:    the same 2 upstreams, round robin"
    )
fi

scenario_gateway_service() {
    [[ $RESILIENT == on ]] || return 0
    cat "$HERE/scenarios/lib/resilience.toml"
}

# Before any load: 40 requests answered 200, by both stubs (each echoes its
# name in the body), so the second upstream is really in the service.
scenario_check() {
    local port=$1 i body seen1=0 seen2=0
    for ((i = 0; i < 40; i++)); do
        body=$(curl -s -f --max-time 5 "http://127.0.0.1:$port$SCENARIO_PATH") ||
            die "resilient: ringgate did not answer $SCENARIO_PATH with 200 (see $WORK/ringgate.log)"
        case $body in
            *'"service":"stub2"'*) seen2=$((seen2 + 1)) ;;
            *'"service":"stub"'*)  seen1=$((seen1 + 1)) ;;
        esac
    done
    ((seen1 > 0 && seen2 > 0)) ||
        die "resilient: of 40 requests, stub answered $seen1 and stub2 $seen2; expected both"
    log "resilient ($RESILIENT): 40 requests, 200 from stub x$seen1 and stub2 x$seen2"
}

# shellcheck shell=bash disable=SC2034  # sourced by run.sh, which uses the variables
# Scenario "aggregate": ringgate's route answers each request from three
# parts (three GETs to the stub, at once) merged into one JSON object; nginx
# proxies each request once (it has no aggregation). The ratios compare one
# aggregated answer against one proxied request: ringgate does three upstream
# exchanges and a JSON merge per request, so expect it well below nginx's
# rate; the number to watch is the CPU per request, i.e. per three exchanges.

# shellcheck source-path=SCRIPTDIR source=plain.sh
source "$HERE/scenarios/plain.sh" # scenario_nginx_locations: nginx proxies plainly

SCENARIO_PATH="/api/dashboard"
SCENARIO_HEADERS=()
SCENARIO_NOTES=(
    "ringgate: one request = three parts to the stub at once, JSON merged"
    "nginx:    one request = one proxied request (no aggregation in nginx)"
)

scenario_gateway_routes() {
    cat <<'TOML'
[[routes]]
name = "bench"
paths = ["/"]
service = "bench"
[routes.aggregate]
[[routes.aggregate.parts]]
key = "user"
service = "bench"
path = "/api/users/7"
[[routes.aggregate.parts]]
key = "orders"
service = "bench"
path = "/api/orders?user=7"
[[routes.aggregate.parts]]
key = "notifications"
service = "bench"
path = "/api/notifications"
TOML
}

# shellcheck shell=bash disable=SC2034  # sourced by run.sh, which uses the variables
# Scenario "plain": one catch-all route, no request headers beyond the
# defaults, every request is proxied unchanged.
#
# A scenario file is sourced by run.sh and must define:
#   SCENARIO_PATH             request path sent by wrk, oha and idle_conns.py
#   SCENARIO_HEADERS          bash array of extra request headers ("Name: value")
#   scenario_gateway_routes   prints the ringgate [[routes]] (and any other
#                             route-level TOML) appended after [[services]];
#                             the service to route to is called "bench"
#   scenario_nginx_locations  prints the nginx location blocks; the upstream
#                             block is called "backend"
# A new scenario (e.g. a JWT-protected route) is a new file next to this one.

SCENARIO_PATH="/api/bench"
SCENARIO_HEADERS=()

scenario_gateway_routes() {
    cat <<'TOML'
[[routes]]
name = "bench"
paths = ["/"]
service = "bench"
TOML
}

scenario_nginx_locations() {
    cat <<'NGINX'
        location / {
            proxy_pass http://backend;
        }
NGINX
}

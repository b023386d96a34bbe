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
# and may define (see jwt-rs256.sh for all of them):
#   scenario_setup DIR        run once before any server starts, with a fresh
#                             directory in the run's temporary directory
#                             (e.g. to make keys and tokens, and set
#                             SCENARIO_HEADERS from them)
#   scenario_check PORT       run once ringgate answers on PORT, before any
#                             load; call `die` if it does not behave as the
#                             scenario needs
#   SCENARIO_NOTES            bash array of lines printed under the table's
#                             title (what exactly is compared)
#   SCENARIO_WRK_LUA          a wrk script with request() (and init(args)),
#                             used in front of wrk_report.lua for wrk's warm-up
#                             and measured runs; oha still sends SCENARIO_HEADERS
#   SCENARIO_WRK_ARGS         bash array of arguments for that script's init()
#   SCENARIO_NGINX_ACCESS_LOG nginx http-level directives for its access log
#                             (default "access_log off;"); set it in
#                             scenario_setup to log to a file in the run
#                             directory (see observe.sh)
#   scenario_wrk_check TARGET OUT CONNECTIONS
#                             run after each measured wrk run with wrk's
#                             output file; prints a one-line verdict, and
#                             returns non-zero to stop the run with an error
#                             (see mixed.sh, which checks responses against
#                             requests)
#   SCENARIO_STUBS            how many stub upstreams run.sh starts (default
#                             1; named stub, stub2, ... in their JSON bodies);
#                             all of them are the endpoints of ringgate's
#                             service and the servers of nginx's upstream
#                             block (see resilient.sh)
#   scenario_gateway_service  prints the service's further keys and tables
#                             (balance, [services.breaker], ...), put right
#                             after its `upstreams` line (see resilient.sh)
#   SCENARIO_NGINX_UPSTREAM   extra directives in nginx's upstream block,
#                             e.g. "least_conn;" (default none)
# The functions may use run.sh's own functions and variables (log, die, HERE,
# ROOT, WORK). A new scenario is a new file next to this one; helpers shared
# by several scenarios go in lib/, which is not listed as a scenario.

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

# shellcheck shell=bash disable=SC2034  # sourced by run.sh, which uses the variables
# Scenario "transform": every request is a POST of a ~1 KiB JSON order
# (wrk_post_json.lua); ringgate's route renames and converts fields of the
# request body (user_id -> userId, items[*].sku_id -> items[*].skuId, total
# and items[*].price to numbers, internal removed) and renames a field of the
# stub's JSON response and adds a header. nginx proxies both bodies plainly
# (it has no JSON transforms): the ratios are ringgate transforming vs nginx
# not. Run with --body-size 1024 for a ~1 KiB response, and compare with a
# plain run of the same binary for the cost of the transforms.

# shellcheck source-path=SCRIPTDIR source=plain.sh
source "$HERE/scenarios/plain.sh" # scenario_nginx_locations: nginx proxies plainly

SCENARIO_PATH="/api/orders"
SCENARIO_HEADERS=()
SCENARIO_WRK_LUA="$HERE/wrk_post_json.lua"
SCENARIO_NOTES=(
    "ringgate: request JSON rename + convert + remove, response JSON rename + a header, on every request"
    "nginx:    plain proxying of the same requests and responses (no JSON transforms in nginx)"
)

scenario_gateway_routes() {
    cat <<'TOML'
[[routes]]
name = "bench"
paths = ["/"]
service = "bench"
[routes.transform.request]
json = { rename = { "user_id" = "userId", "items[*].sku_id" = "items[*].skuId" }, convert = { "total" = "number", "items[*].price" = "number" }, remove = ["internal"] }
[routes.transform.response]
set_headers = { "X-Served-By" = "ringgate" }
json = { rename = { "service" = "servedBy" } }
TOML
}

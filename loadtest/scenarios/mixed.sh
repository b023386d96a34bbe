# shellcheck shell=bash disable=SC2034  # sourced by run.sh, which uses the variables
# Scenario "mixed": on the same kept-alive connections, 4 of every 5 requests
# are proxied (/api/bench -> 200 from the stub) and 1 of 5 is answered by the
# proxy itself with an error (/nope: no route, 404 from ringgate; nginx has a
# location that returns the 404 itself). wrk sends the mix deterministically
# (wrk_mixed.lua) and counts requests sent and responses received.
#
# Why: a proxy must answer each request on a kept-alive connection exactly
# once, also the ones it rejects before any upstream is involved. wrk's own
# summary counts responses only, so a proxy that answered a rejected request
# over and over would just look fast. After every measured wrk run,
# scenario_wrk_check compares the two counts and the run fails (non-zero exit,
# message naming the target) unless
#     0 <= requests - responses <= connections
# wrk sends one request at a time per connection, so when it stops each
# connection has at most one request without its response (cut off at the
# end); more unanswered requests means requests were lost, more responses
# than requests means some were answered twice or more.
#
# Besides the variables and functions described in scenarios/plain.sh, this
# scenario defines scenario_wrk_check, which run.sh calls after each measured
# wrk run.

MIXED_OK_PATH="/api/bench"
MIXED_ERROR_PATH="/nope"
# 1 in MIXED_PERIOD requests goes to MIXED_ERROR_PATH. MIXED_PERIOD=0 in the
# environment sends none there: the same Lua work per request, all proxied,
# i.e. the baseline that shows what the rejected requests cost.
MIXED_PERIOD=${MIXED_PERIOD:-5}
[[ $MIXED_PERIOD =~ ^[0-9]+$ ]] || die "MIXED_PERIOD must be an integer >= 0, got '$MIXED_PERIOD'"

SCENARIO_PATH="$MIXED_OK_PATH" # oha and --idle-conns: the proxied path only
SCENARIO_HEADERS=()
SCENARIO_WRK_LUA="$HERE/wrk_mixed.lua"
SCENARIO_WRK_ARGS=("$MIXED_OK_PATH" "$MIXED_ERROR_PATH" "$MIXED_PERIOD")
if ((MIXED_PERIOD == 0)); then MIXED_SHARE="no"; else MIXED_SHARE="1 in $MIXED_PERIOD"; fi
SCENARIO_NOTES=(
    "wrk: $MIXED_SHARE requests on the same kept-alive connections go to $MIXED_ERROR_PATH, answered 404 by the proxy itself (ringgate: no route; nginx: a location returning 404); the rest to $MIXED_OK_PATH, proxied"
    "errors include those expected 404s (status); wrk runs a Lua request()/response() per request here, so rps is not comparable with 'plain' one to one"
    "oha sends $MIXED_OK_PATH only (it cannot vary the path per request)"
)

scenario_gateway_routes() {
    # Only /api (and below) is routed; anything else has no route -> 404.
    cat <<'TOML'
[[routes]]
name = "bench"
paths = ["/api"]
service = "bench"
TOML
}

scenario_nginx_locations() {
    # The same split as ringgate's: /api and below proxied, the rest answered
    # 404 by nginx itself, with a JSON body of about ringgate's size. nginx
    # keeps the connection alive after a 404.
    cat <<'NGINX'
        location = /api {
            proxy_pass http://backend;
        }
        location /api/ {
            proxy_pass http://backend;
        }
        location / {
            default_type application/json;
            return 404 '{"error":{"status":404,"code":"no_route","message":"no route matches this request","request_id":"00000000000000000000000000000000"}}';
        }
NGINX
}

# Before any load: the proxied path answers 200 and the error path 404.
scenario_check() {
    local port=$1 code path want
    for path in "$MIXED_OK_PATH" "$MIXED_ERROR_PATH"; do
        if [[ $path == "$MIXED_OK_PATH" ]]; then want=200; else want=404; fi
        code=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "http://127.0.0.1:$port$path" || true)
        [[ $code == "$want" ]] || die "mixed: ringgate answered $path with '$code', expected $want"
    done
    log "mixed: ringgate answers $MIXED_OK_PATH 200 and $MIXED_ERROR_PATH 404"
}

# scenario_wrk_check TARGET WRK_OUTPUT CONNECTIONS : print one line with the
# counts; return non-zero (with the reason) if responses and requests do not
# match within the tolerance above.
scenario_wrk_check() {
    python3 - "$@" <<'EOF'
import json, sys

target, path, connections = sys.argv[1], sys.argv[2], int(sys.argv[3])
counts = report = None
for line in open(path, errors="replace"):
    if line.startswith("WRK_COUNTS "):
        counts = json.loads(line[len("WRK_COUNTS "):])
    elif line.startswith("WRK_JSON "):
        report = json.loads(line[len("WRK_JSON "):])
if counts is None:
    sys.exit(f"{target}: no WRK_COUNTS line in {path} (did wrk run wrk_mixed.lua?)")

req, resp = counts["requests"], counts["responses"]
statuses = counts["statuses"]
unanswered = req - resp
seconds = report["duration_us"] / 1e6 if report else None
rps = f", {resp / seconds:.0f} responses/s" if seconds else ""
balance = (f"{unanswered} unanswered" if unanswered >= 0
           else f"{-unanswered} responses MORE than requests")
line = (f"{resp} responses to {req} requests ({counts['error_path_requests']} to the error path), "
        f"{balance} (allowed: 0..{connections} unanswered), "
        f"statuses {', '.join(f'{k}: {v}' for k, v in statuses.items()) or 'none'}{rps}")
if report:
    errs = {k: v for k, v in report["errors"].items() if k != "status" and v}
    if errs:
        # Not a failure by itself (the counts decide), but worth seeing.
        line += f"; socket errors {errs}"

problems = []
if resp != counts["wrk_responses"]:
    problems.append(f"the script saw {resp} responses but wrk counted {counts['wrk_responses']} "
                    "(is another script's response() in the way?)")
if resp > req:
    problems.append(f"{resp - req} more responses than requests: requests answered more than once")
elif unanswered > connections:
    problems.append(f"{unanswered} requests without a response, more than the {connections} "
                    "connections can have in flight when wrk stops: requests were lost")
other = {k: v for k, v in statuses.items() if k not in ("200", "404")}
if other:
    problems.append(f"unexpected statuses {other} (only 200 and 404 are expected)")
if req == 0:
    problems.append("no requests were sent")
print(line)
if problems:
    print(f"FAIL {target} (mixed): " + "; ".join(problems))
    sys.exit(1)
EOF
}

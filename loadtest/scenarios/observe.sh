# shellcheck shell=bash disable=SC2034  # sourced by run.sh, which uses the variables
# Scenario "observe": plain (same route, same nginx location, same requests)
# with observability switched on in both proxies, to measure what it costs:
#   ringgate: [admin] listen on a free port (GET /metrics; not scraped during
#             the measured runs; shard-local metrics are always on anyway) and
#             [log] access = a file in the run directory (one JSON line per
#             request, buffered per shard, written by ringgate's log thread);
#   nginx:    access_log to a file in the run directory, JSON lines with about
#             the same fields (log_format below), buffered the same way
#             (32 KiB buffer; flushed at least every second).
# Compare with a `plain` run of the same binary for the cost of the log.
#
# After each measured wrk run, scenario_wrk_check counts the target's access
# log lines (after waiting for the buffers to be flushed) and fails the run if
# the log is empty, or if the lines stamped within the measured run differ
# from the requests wrk reported by more than 5 %. For ringgate it also checks
# that all lines + ringgate_access_log_dropped_total = ringgate_requests_total
# from /metrics (every request logged or counted as dropped). The log files
# are deleted with the run directory after a successful run.

# shellcheck source-path=SCRIPTDIR source=plain.sh
source "$HERE/scenarios/plain.sh" # SCENARIO_PATH, SCENARIO_HEADERS, scenario_nginx_locations

OBSERVE_TOLERANCE_PCT=5 # measured-window log lines vs wrk's requests

SCENARIO_NOTES=(
    "ringgate: metrics + [admin] listener (not scraped during the runs) + [log] access log to a file (JSON lines)"
    "nginx:    access_log to a file, JSON lines with similar fields, buffer=32k flush=1s"
    "compare with a 'plain' run for the cost of the access log; the log line counts are checked after each wrk run"
)

scenario_setup() {
    local dir=$1
    OBSERVE_ADMIN_PORT=$(free_ports 1)
    OBSERVE_GATEWAY_LOG="$dir/ringgate-access.log"
    OBSERVE_NGINX_LOG="$dir/nginx-access.log"
    # nginx's equivalent of ringgate's line (time, request id, client, method,
    # path, status, upstream, bytes in/out, durations, traceparent); nginx
    # opens the file in its master process, before switching user.
    SCENARIO_NGINX_ACCESS_LOG="log_format observe escape=json '{\"time\":\"\$time_iso8601\",\"msec\":\$msec,\"request_id\":\"\$request_id\",\"client_ip\":\"\$remote_addr\",\"method\":\"\$request_method\",\"path\":\"\$request_uri\",\"status\":\$status,\"upstream\":\"\$upstream_addr\",\"bytes_in\":\$request_length,\"bytes_out\":\$bytes_sent,\"duration_s\":\$request_time,\"upstream_s\":\"\$upstream_response_time\",\"traceparent\":\"\$http_traceparent\"}';
    access_log $OBSERVE_NGINX_LOG observe buffer=32k flush=1s;"
}

scenario_gateway_routes() {
    cat <<TOML
[[routes]]
name = "bench"
paths = ["/"]
service = "bench"

[admin]
listen = "127.0.0.1:$OBSERVE_ADMIN_PORT"

[log]
access = "$OBSERVE_GATEWAY_LOG"
TOML
}

# Before any load: /metrics answers and the readiness probes were logged.
scenario_check() {
    local code i
    code=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "http://127.0.0.1:$OBSERVE_ADMIN_PORT/metrics" || true)
    [[ $code == 200 ]] || die "observe: GET /metrics on the admin listener 127.0.0.1:$OBSERVE_ADMIN_PORT gave '$code', expected 200"
    for ((i = 0; i < 30; i++)); do # shards hand lines to the writer on their next tick
        [[ -s $OBSERVE_GATEWAY_LOG ]] && break
        sleep 0.1
    done
    [[ -s $OBSERVE_GATEWAY_LOG ]] || die "observe: ringgate's access log $OBSERVE_GATEWAY_LOG is empty after the readiness probes"
    log "observe: admin listener on 127.0.0.1:$OBSERVE_ADMIN_PORT answers /metrics; access log $OBSERVE_GATEWAY_LOG written"
}

# scenario_wrk_check TARGET WRK_OUTPUT CONNECTIONS : one line with the log
# counts; non-zero (with the reason) if the log is empty or does not match.
scenario_wrk_check() {
    local target=$1 out=$2 logfile metrics_port=""
    case $target in
        ringgate) logfile=$OBSERVE_GATEWAY_LOG; metrics_port=$OBSERVE_ADMIN_PORT ;;
        nginx)    logfile=$OBSERVE_NGINX_LOG ;;
        *)        echo "no access log for $target"; return 0 ;;
    esac
    # ringgate: shards hand their buffers over on their next 50 ms tick;
    # nginx: flush=1s. Wait for both before counting.
    sleep 1.5
    python3 - "$target" "$out" "$logfile" "$OBSERVE_TOLERANCE_PCT" "$metrics_port" <<'EOF'
import calendar, json, os, re, sys, time, urllib.request

target, out, logfile, tol, metrics_port = sys.argv[1:6]
tol = float(tol)
report = None
for line in open(out, errors="replace"):
    if line.startswith("WRK_JSON "):
        report = json.loads(line[len("WRK_JSON "):])
if report is None:
    sys.exit(f"FAIL {target} (observe): no WRK_JSON line in {out}")
wrk_requests = report["requests"]
# The measured run ended when wrk wrote its report (the output file's mtime)
# and lasted duration_us; lines stamped in that window belong to it, the rest
# to the warm-up and the readiness probes.
end = os.path.getmtime(out)
start = end - report["duration_us"] / 1e6

def stamp(line):
    if target == "nginx":  # "msec":1764542413.123
        m = re.search(rb'"msec":([0-9.]+)', line)
        return float(m.group(1)) if m else None
    # ringgate: {"time":"2026-11-30T22:40:13.123Z",...
    t = line[9:33].decode("ascii", "replace")
    try:
        return calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) + int(t[20:23]) / 1000
    except ValueError:
        return None

total = in_window = unstamped = 0
with open(logfile, "rb") as f:
    for line in f:
        total += 1
        # Window edges at ms resolution, plus 1 ms for the stamp's truncation.
        t = stamp(line)
        if t is None:
            unstamped += 1
        elif start - 0.001 <= t <= end + 0.001:
            in_window += 1
size = os.path.getsize(logfile)
problems = []
msg = (f"access log {total} lines ({size / 2**20:.1f} MiB), {in_window} of them during the measured run; "
       f"wrk reported {wrk_requests} requests")
if wrk_requests:
    diff = (in_window - wrk_requests) / wrk_requests * 100
    msg += f" ({diff:+.2f} %)"
    if abs(diff) > tol:
        problems.append(f"lines during the run differ from wrk's requests by {diff:+.2f} % (allowed ±{tol:g} %)")
if unstamped:
    problems.append(f"{unstamped} lines without a readable timestamp")
if total == 0:
    problems.append(f"the access log {logfile} is EMPTY")
if metrics_port:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    def total_of(name):
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                   if l.startswith(name + "{") or l.startswith(name + " "))
    requests, dropped = int(total_of("ringgate_requests_total")), int(total_of("ringgate_access_log_dropped_total"))
    msg += f"; /metrics: {requests} requests, {dropped} lines dropped"
    if total + dropped != requests:
        problems.append(f"lines + dropped = {total + dropped}, but ringgate_requests_total = {requests}")
print(msg)
if problems:
    print(f"FAIL {target} (observe): " + "; ".join(problems))
    sys.exit(1)
EOF
}

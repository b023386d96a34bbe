#!/usr/bin/env bash
# Load test: ringgate against nginx (and optionally the upstream alone), all on
# 127.0.0.1, proxying to the built-in stub upstream (`ringgate stub`).
#
# For every target it measures
#   - closed loop (wrk): max throughput and latency at a fixed connection count,
#   - open loop (oha):   latency at a fixed request rate, with coordinated
#                        omission correction,
#   - CPU time per request and resident memory of the target process(es),
#   - optionally (--idle-conns N) memory per idle keep-alive connection,
# then prints one table plus ringgate/nginx ratios and writes the same data to
# loadtest/results/last.json. See loadtest/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN="$ROOT/target/release/ringgate"

DURATION=10      # seconds per measured run
CONNECTIONS=64   # concurrent connections (wrk and oha)
RATE=""          # open-loop req/s; empty = 70% of the closed-loop rps of nginx (else ringgate)
BODY_SIZE=256    # stub response body size in bytes
SCENARIO=plain   # loadtest/scenarios/$SCENARIO.sh
IDLE_CONNS=0     # 0 = skip the idle-connection memory test
IDLE_WINDOW=256  # idle connections being opened (connect, request, response) at once
WITH_NGINX=1
WITH_DIRECT=0
WITH_L4=0        # 1 = also HAProxy in mode tcp (one thread): the byte-relay floor
WORKERS=1        # shards of ringgate, worker processes of nginx, threads of HAProxy
WITH_OHA=1       # 0 = skip the open-loop (oha) runs
BUILD=1
WARMUP=2         # seconds of unmeasured load before the measured runs
READY_TIMEOUT=10 # seconds a server may take to start answering

scenario_names() {
    local f
    for f in "$HERE"/scenarios/*.sh; do f=${f##*/}; printf '%s ' "${f%.sh}"; done
}

usage() {
    cat <<EOF
Usage: loadtest/run.sh [options]

  --duration S        seconds per measured run (default $DURATION)
  --connections C     concurrent connections for wrk and oha (default $CONNECTIONS)
  --rate R            open-loop request rate for oha in req/s
                      (default: 70% of the rps wrk measured for nginx,
                      or for ringgate with --no-nginx)
  --body-size B       stub response body size in bytes (default $BODY_SIZE)
  --scenario NAME     one of: $(scenario_names)
  --idle-conns N      also measure memory per idle keep-alive connection with
                      N connections (e.g. 10000)
  --idle-window W     open at most W of them at a time (default $IDLE_WINDOW)
  --direct            also load the stub upstream directly, as a baseline
  --workers N         N shards / nginx workers / HAProxy threads (default 1);
                      with N > 1 the servers may use every CPU (wrk and the
                      stub stay pinned away from CPU 0)
  --l4                also HAProxy in mode tcp (one thread, pinned as the
                      gateway is) in front of the same stub: a relay that
                      parses nothing, the floor of CPU per request
  --no-nginx          do not run the nginx comparison
  --no-oha            skip the open-loop runs (oha is then not needed)
  --bin PATH          the ringgate binary to test (also runs its stub);
                      default target/release/ringgate; implies --no-build
  --no-build          do not run cargo build --release first
  -h, --help          this help
EOF
}

log() { printf '[loadtest] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_uint() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 needs a non-negative integer, got '$2'"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration)    need_uint "$1" "${2-}"; DURATION=$2; shift 2 ;;
        --connections) need_uint "$1" "${2-}"; CONNECTIONS=$2; shift 2 ;;
        --rate)        need_uint "$1" "${2-}"; RATE=$2; shift 2 ;;
        --body-size)   need_uint "$1" "${2-}"; BODY_SIZE=$2; shift 2 ;;
        --idle-conns)  need_uint "$1" "${2-}"; IDLE_CONNS=$2; shift 2 ;;
        --idle-window) need_uint "$1" "${2-}"; IDLE_WINDOW=$2; shift 2 ;;
        --scenario)    SCENARIO=${2-}; shift 2 ;;
        --direct)      WITH_DIRECT=1; shift ;;
        --l4)          WITH_L4=1; shift ;;
        --workers)     need_uint "$1" "${2-}"; WORKERS=$2; shift 2 ;;
        --no-nginx)    WITH_NGINX=0; shift ;;
        --no-oha)      WITH_OHA=0; shift ;;
        --bin)         [[ -n ${2-} ]] || die "--bin needs a path"
                       BIN=$(realpath -m -- "$2"); BUILD=0; shift 2 ;;
        --no-build)    BUILD=0; shift ;;
        -h|--help)     usage; exit 0 ;;
        *)             usage >&2; die "unknown option '$1'" ;;
    esac
done
((DURATION > 0 && CONNECTIONS > 0)) || die "--duration and --connections must be > 0"
[[ -z $RATE ]] || ((RATE > 0)) || die "--rate must be > 0"
[[ -f "$HERE/scenarios/$SCENARIO.sh" ]] || die "no scenario '$SCENARIO' in $HERE/scenarios"
# Optional scenario settings (see scenarios/plain.sh), empty unless the scenario sets them.
SCENARIO_NOTES=()
SCENARIO_WRK_LUA=""
SCENARIO_WRK_ARGS=()
SCENARIO_NGINX_ACCESS_LOG="access_log off;"  # http-level nginx directives for its access log
SCENARIO_STUBS=1          # stub upstreams to start; all are the service's endpoints (ringgate) and
                          # the upstream block's servers (nginx)
SCENARIO_NGINX_UPSTREAM="" # extra directives in nginx's upstream block (e.g. least_conn;)
# shellcheck source=scenarios/plain.sh
source "$HERE/scenarios/$SCENARIO.sh"

# ---------------------------------------------------------------- tools ----

ensure_tools() {
    local apt_pkgs=()
    command -v wrk >/dev/null || apt_pkgs+=(wrk)
    if ((WITH_NGINX)) && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
        apt_pkgs+=(nginx-light)
    fi
    if ((WITH_L4)) && ! command -v haproxy >/dev/null && [[ ! -x /usr/sbin/haproxy ]]; then
        apt_pkgs+=(haproxy)
    fi
    if ((${#apt_pkgs[@]})); then
        if ((EUID == 0)); then
            log "installing ${apt_pkgs[*]}"
            apt-get update && apt-get install -y "${apt_pkgs[@]}"
        else
            log "missing ${apt_pkgs[*]}; install with: sudo apt-get install -y ${apt_pkgs[*]}"
        fi
    fi
    command -v wrk >/dev/null || die "wrk is required"
    if ((WITH_NGINX)); then
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
        [[ -x $NGINX ]] || { log "nginx not available, skipping the nginx comparison"; WITH_NGINX=0; }
    fi
    if ((WITH_L4)); then
        HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
        [[ -x $HAPROXY ]] || die "haproxy is required for --l4 (apt-get install haproxy)"
    fi

    ((WITH_OHA)) || return 0
    if ! command -v oha >/dev/null; then
        PATH="$PATH:$HOME/.cargo/bin"  # where a non-root cargo install puts it
    fi
    if ! command -v oha >/dev/null; then
        log "installing oha (cargo install oha --locked), this takes a while (--no-oha skips the open-loop runs)"
        cargo install oha --locked
    fi
    command -v oha >/dev/null || die "oha is required (or pass --no-oha)"
    # oha >= 1.5 has --output-format json; older releases only -j/--json.
    # (Help texts are captured, not piped to grep -q, which with pipefail
    # could fail on the writer's broken pipe.)
    local help
    help=$(oha --help)
    if [[ $help == *--output-format* ]]; then
        OHA_JSON=(--output-format json)
    else
        OHA_JSON=(--json)
    fi
}

# ------------------------------------------------------------ processes ----

WORK=""
PIDS=()  # every background process started here; killed (by PID) on exit

cleanup() {
    local rc=$? pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $WORK ]]; then
        if ((rc == 0)); then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME CMD... : run CMD in the background with output in $WORK/NAME.log;
# its PID is left in STARTED_PID.
start_bg() {
    local name=$1; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

# forget_pid PID : drop an exited process from PIDS.
forget_pid() {
    local p rest=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || rest+=("$p"); done
    PIDS=("${rest[@]}")
}

# stop_bg PID : stop one process started by start_bg and forget it.
stop_bg() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# free_ports N : print N distinct free TCP ports on 127.0.0.1.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
}

# render TEMPLATE KEY=VALUE... : print TEMPLATE with every @KEY@ replaced.
render() {
    python3 - "$@" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
for kv in sys.argv[2:]:
    key, value = kv.split("=", 1)
    text = text.replace("@" + key + "@", value)
left = re.findall(r"@[A-Z_]+@", text)
if left:
    sys.exit(f"{sys.argv[1]}: unreplaced {sorted(set(left))}")
sys.stdout.write(text)
EOF
}

# wait_http NAME PID PORT : wait until PORT answers HTTP, or fail.
wait_http() {
    local name=$1 pid=$2 port=$3 i
    for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$WORK/$name.log" >&2; die "$name exited during startup"; }
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && return 0
        sleep 0.1
    done
    tail -n 20 "$WORK/$name.log" >&2
    die "$name did not answer on 127.0.0.1:$port within ${READY_TIMEOUT}s"
}

# pids_of TARGET : the processes whose CPU and memory count for TARGET.
pids_of() {
    case "$1" in
        ringgate) echo "$GATEWAY_PID" ;;
        direct)   echo "$STUB_PID" ;;
        haproxy-l4) echo "$HAPROXY_PID" ;;
        # master + workers (children of the master, read when asked)
        nginx)    echo "$NGINX_PID $(cat /proc/"$NGINX_PID"/task/*/children 2>/dev/null)" ;;
    esac
}

# cpu_ticks PID... : utime + stime (fields 14 and 15 of /proc/PID/stat,
# in clock ticks, all threads included) summed over the PIDs.
cpu_ticks() {
    local pid stat fields total=0
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        read -ra fields <<<"${stat##*) }"  # skip "pid (comm) "; fields[0] is field 3
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# rss_kib PID... : VmRSS summed over the PIDs, in KiB.
rss_kib() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}

# cpus_of PID... : the distinct CPU affinity lists of all threads of the PIDs.
cpus_of() {
    local pid
    for pid in "$@"; do
        awk '/^Cpus_allowed_list:/ {print $2}' /proc/"$pid"/task/*/status
    done | sort -u | paste -sd' '
}

# ------------------------------------------------------------------ setup ----

ensure_tools

if ((BUILD)); then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
fi
[[ -x $BIN ]] || die "$BIN not found or not executable (build it, drop --no-build, or pass --bin PATH)"
log "binary $BIN"

if ((IDLE_CONNS)); then
    # Aim for room for both ends of every idle connection plus upstream
    # sockets. The limit is per process though: the client and the server each
    # hold one end, so N + 1024 is enough where the hard limit cannot be raised
    # (e.g. in containers without CAP_SYS_RESOURCE).
    nofile=$((2 * IDLE_CONNS + 1024))
    if (($(ulimit -n) < nofile)) && ! ulimit -n "$nofile" 2>/dev/null; then
        hard=$(ulimit -Hn)
        [[ $hard == unlimited ]] || ((hard >= IDLE_CONNS + 1024)) ||
            die "open files hard limit is $hard, need $((IDLE_CONNS + 1024)); run as root or lower --idle-conns"
        ulimit -n "$hard"
        log "open files limit raised to the hard limit $hard only (wanted $nofile)"
    fi
fi

# With 2+ CPUs the proxy under test gets CPU 0 to itself; the load generators
# and the stub upstream share the others, so the two compete as little as
# possible. ringgate (pin_cores = true) pins its worker inside the affinity
# mask it is started with; nginx pins its worker with worker_cpu_affinity.
NCPU=$(nproc)
if ((NCPU >= 2 && WORKERS > 1)); then
    # Several workers: each server spreads over every CPU (ringgate pins one shard per core);
    # the load generators still keep off CPU 0 as far as the machine allows.
    GATEWAY_PIN=()
    LOADGEN_PIN=(taskset -c "1-$((NCPU - 1))")
    NGINX_AFFINITY="worker_cpu_affinity auto;"
elif ((NCPU >= 2)); then
    GATEWAY_PIN=(taskset -c 0)
    LOADGEN_PIN=(taskset -c "1-$((NCPU - 1))")
    NGINX_AFFINITY="worker_cpu_affinity 1;"
else
    GATEWAY_PIN=()
    LOADGEN_PIN=()
    NGINX_AFFINITY=""
fi

# loadgen SECONDS OUT ERR CMD... : run a load generator pinned off the
# gateway CPU with stdout/stderr to OUT/ERR, killed if it overruns SECONDS by
# more than 30 s. It runs in the background and is waited for, so that an
# interrupt stops it (via cleanup) right away.
loadgen() {
    local secs=$1 out=$2 err=$3 pid rc=0; shift 3
    timeout --kill-after=5 $((secs + 30)) "${LOADGEN_PIN[@]}" "$@" >"$out" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

WORK=$(mktemp -d /tmp/ringgate-loadtest.XXXXXX)
chmod 755 "$WORK"  # nginx workers may run as an unprivileged user
RUNS="$WORK/runs"
mkdir "$RUNS"

# Scenario setup (e.g. keys and tokens), in a directory of its own.
if declare -F scenario_setup >/dev/null; then
    mkdir "$WORK/scenario"
    scenario_setup "$WORK/scenario"
fi

# Request headers from the scenario, as arguments for wrk and oha (same syntax).
HEADER_ARGS=()
for h in "${SCENARIO_HEADERS[@]}"; do HEADER_ARGS+=(-H "$h"); done

# wrk takes one script: the scenario's request script, if any, goes in front of
# wrk_report.lua, and the warm-up uses it too so it sends the same requests.
WRK_REPORT=(-s "$HERE/wrk_report.lua")
WRK_WARMUP=()
WRK_TAIL=()
if [[ -n $SCENARIO_WRK_LUA ]]; then
    cat "$SCENARIO_WRK_LUA" "$HERE/wrk_report.lua" >"$WORK/wrk.lua"
    WRK_REPORT=(-s "$WORK/wrk.lua")
    WRK_WARMUP=(-s "$WORK/wrk.lua")
    WRK_TAIL=(-- "${SCENARIO_WRK_ARGS[@]}")
fi

[[ $SCENARIO_STUBS =~ ^[1-9][0-9]*$ ]] || die "scenario $SCENARIO: SCENARIO_STUBS must be >= 1, got '$SCENARIO_STUBS'"
read -r GATEWAY_PORT NGINX_PORT < <(free_ports 2)
read -ra STUB_PORTS <<<"$(free_ports "$SCENARIO_STUBS")"
STUB_PORT=${STUB_PORTS[0]}  # the first stub: the one --direct loads

# The stub upstreams (SCENARIO_STUBS of them, 1 unless the scenario says
# otherwise); --workers only if this build's stub has the option. The first
# is named "stub" (the default), the others stub2, stub3, ... (echoed in the
# JSON body, so a scenario can tell which one answered).
stub_help=$("$BIN" stub --help 2>&1 || true)
STUB_PIDS=()
UPSTREAMS_TOML=""
UPSTREAM_SERVERS=""
for ((i = 0; i < SCENARIO_STUBS; i++)); do
    port=${STUB_PORTS[i]}
    name=stub
    ((i == 0)) || name="stub$((i + 1))"
    stub_args=(stub --listen "127.0.0.1:$port" --body-size "$BODY_SIZE")
    ((i == 0)) || stub_args+=(--name "$name")
    if [[ $stub_help == *--workers* ]]; then stub_args+=(--workers 1); fi
    start_bg "$name" "${LOADGEN_PIN[@]}" "$BIN" "${stub_args[@]}"
    STUB_PIDS+=("$STARTED_PID")
    wait_http "$name" "$STARTED_PID" "$port"
    log "stub upstream $name on 127.0.0.1:$port (pid $STARTED_PID, CPUs $(cpus_of "$STARTED_PID"))"
    UPSTREAMS_TOML+="${UPSTREAMS_TOML:+, }\"127.0.0.1:$port\""
    UPSTREAM_SERVERS+="${UPSTREAM_SERVERS:+$'\n'        }server 127.0.0.1:$port;"
done
STUB_PID=${STUB_PIDS[0]}

# The service's further keys and tables (balance, [services.breaker], ...),
# from the scenario if it defines scenario_gateway_service; none by default.
SERVICE_TOML=""
if declare -F scenario_gateway_service >/dev/null; then SERVICE_TOML=$(scenario_gateway_service); fi
render "$HERE/gateway.toml.tmpl" \
    PORT="$GATEWAY_PORT" UPSTREAMS="$UPSTREAMS_TOML" SERVICE="$SERVICE_TOML" WORKERS="$WORKERS" \
    ROUTES="$(scenario_gateway_routes)" \
    >"$WORK/gateway.toml"
start_bg ringgate "${GATEWAY_PIN[@]}" "$BIN" serve --config "$WORK/gateway.toml"
GATEWAY_PID=$STARTED_PID
wait_http ringgate "$GATEWAY_PID" "$GATEWAY_PORT"
log "ringgate on 127.0.0.1:$GATEWAY_PORT (pid $GATEWAY_PID, CPUs $(cpus_of "$GATEWAY_PID"))"
if declare -F scenario_check >/dev/null; then scenario_check "$GATEWAY_PORT"; fi

declare -A PORT_OF=([ringgate]=$GATEWAY_PORT [direct]=$STUB_PORT)
TARGETS=(ringgate)

if ((WITH_NGINX)); then
    prefix="$WORK/nginx"
    mkdir "$prefix"
    # nginx closes idle keep-alive connections once fewer than 1/16 of its
    # worker_connections are free, so leave ample headroom for --idle-conns.
    if ((IDLE_CONNS)); then worker_conns=$((IDLE_CONNS * 9 / 8 + 1024)); else worker_conns=4096; fi
    # As root nginx switches its worker to `user`; name a group that exists.
    user_directive=""
    if ((EUID == 0)); then user_directive="user nobody $(id -gn nobody);"; fi
    render "$HERE/nginx.conf.tmpl" \
        PREFIX="$prefix" PORT="$NGINX_PORT" UPSTREAM_SERVERS="$UPSTREAM_SERVERS" WORKERS="$WORKERS" \
        UPSTREAM_EXTRA="$SCENARIO_NGINX_UPSTREAM" \
        USER_DIRECTIVE="$user_directive" CPU_AFFINITY="$NGINX_AFFINITY" \
        WORKER_CONNECTIONS="$worker_conns" RLIMIT_NOFILE="$(ulimit -n)" \
        LOCATIONS="$(scenario_nginx_locations)" ACCESS_LOG="$SCENARIO_NGINX_ACCESS_LOG" \
        >"$prefix/nginx.conf"
    "$NGINX" -t -q -e "$prefix/error.log" -p "$prefix" -c "$prefix/nginx.conf" ||
        die "nginx rejected $prefix/nginx.conf"
    start_bg nginx "$NGINX" -e "$prefix/error.log" -p "$prefix" -c "$prefix/nginx.conf"
    NGINX_PID=$STARTED_PID
    wait_http nginx "$NGINX_PID" "$NGINX_PORT"
    # Also remember the workers, so they are killed even if the master dies first.
    read -ra nginx_workers <<<"$(cat /proc/"$NGINX_PID"/task/*/children)"
    PIDS+=("${nginx_workers[@]}")
    log "nginx on 127.0.0.1:$NGINX_PORT (master $NGINX_PID, workers ${nginx_workers[*]}, CPUs $(cpus_of "${nginx_workers[@]}"))"
    PORT_OF[nginx]=$NGINX_PORT
    TARGETS+=(nginx)
fi
if ((WITH_L4)); then
    read -r L4_PORT < <(free_ports 1)
    # One thread, TCP only: accepts, connects to the stub, copies bytes both ways.
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 9000
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend l4
    bind 127.0.0.1:$L4_PORT backlog 4096
    default_backend stub
backend stub
    server stub 127.0.0.1:$STUB_PORT
EOF
    start_bg haproxy "${GATEWAY_PIN[@]}" "$HAPROXY" -db -f "$WORK/haproxy.cfg"
    HAPROXY_PID=$STARTED_PID
    wait_http haproxy "$HAPROXY_PID" "$L4_PORT"
    log "haproxy (mode tcp) on 127.0.0.1:$L4_PORT (pid $HAPROXY_PID, CPUs $(cpus_of "$HAPROXY_PID"))"
    PORT_OF[haproxy-l4]=$L4_PORT
    TARGETS+=(haproxy-l4)
fi
if ((WITH_DIRECT)); then TARGETS+=(direct); fi

# ----------------------------------------------------------- measurements ----

# measure TARGET MODE CMD... : run CMD (a load generator) against TARGET with
# output in $RUNS/TARGET.MODE.out, and record the CPU ticks the target used
# and its RSS afterwards in $RUNS/TARGET.MODE.env.
measure() {
    local target=$1 mode=$2; shift 2
    local -a pids
    read -ra pids <<<"$(pids_of "$target")"
    local before after stub_before stub_after segs_before segs_after
    before=$(cpu_ticks "${pids[@]}")
    stub_before=$(cpu_ticks "${STUB_PIDS[@]}")
    segs_before=$(tcp_out_segs)
    loadgen "$DURATION" "$RUNS/$target.$mode.out" "$RUNS/$target.$mode.err" "$@" ||
        log "warning: $mode against $target failed (exit $?), see $RUNS/$target.$mode.err"
    after=$(cpu_ticks "${pids[@]}")
    stub_after=$(cpu_ticks "${STUB_PIDS[@]}")
    segs_after=$(tcp_out_segs)
    # Besides the target's own CPU: the stub's (on the load generator's core, so what it spends
    # there delays the clients too) and the TCP segments sent on the machine, both per request.
    printf 'cpu_ticks=%s\nrss_kib=%s\nstub_cpu_ticks=%s\ntcp_out_segs=%s\n' $((after - before)) \
        "$(rss_kib "${pids[@]}")" $((stub_after - stub_before)) $((segs_after - segs_before)) \
        >"$RUNS/$target.$mode.env"
}

# TCP segments sent by this host so far (all sockets; the runs are the only traffic that matters).
tcp_out_segs() {
    awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "OutSegs") c = i; h = 1 } else print $c }' /proc/net/snmp
}

url_of() { echo "http://127.0.0.1:${PORT_OF[$1]}$SCENARIO_PATH"; }

# Closed loop: as fast as CONNECTIONS connections allow.
for target in "${TARGETS[@]}"; do
    log "$target: warm-up ${WARMUP}s, then wrk ${DURATION}s with $CONNECTIONS connections"
    loadgen "$WARMUP" /dev/null /dev/null \
        wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${WRK_WARMUP[@]}" "${HEADER_ARGS[@]}" \
        "$(url_of "$target")" "${WRK_TAIL[@]}"
    measure "$target" wrk wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        "${WRK_REPORT[@]}" "${HEADER_ARGS[@]}" "$(url_of "$target")" "${WRK_TAIL[@]}"
    # The scenario's own verdict on the run (e.g. mixed: responses vs
    # requests). Checked right away, before the next target: a target that
    # fails it may still be misbehaving (spinning on CPU 0, which the next
    # target shares), so the run stops here, loudly, instead of measuring on.
    if declare -F scenario_wrk_check >/dev/null; then
        scenario_wrk_check "$target" "$RUNS/$target.wrk.out" "$CONNECTIONS" \
            >"$RUNS/$target.wrk.check" 2>&1 || {
            cat "$RUNS/$target.wrk.check" >&2
            die "$target failed the $SCENARIO scenario's check (above); wrk output: $RUNS/$target.wrk.out"
        }
        log "$target: $(cat "$RUNS/$target.wrk.check")"
    fi
done

if ((WITH_OHA)) && [[ -z $RATE ]]; then
    if ((WITH_NGINX)); then base=nginx; else base=ringgate; fi
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$RUNS/$base.wrk.out")
    [[ -n $rps ]] || die "no wrk result for $base to derive the open-loop rate from; pass --rate"
    RATE=$(awk -v r="$rps" 'BEGIN {printf "%d", r * 0.7}')
    ((RATE > 0)) || die "derived open-loop rate is 0; pass --rate"
fi

# Open loop: a fixed request rate, latency measured from the intended send time.
((WITH_OHA)) || log "skipping the open-loop (oha) runs (--no-oha)"
for target in "${TARGETS[@]}"; do
    ((WITH_OHA)) || break
    log "$target: oha ${DURATION}s at $RATE req/s with $CONNECTIONS connections"
    measure "$target" oha oha -z "${DURATION}s" -c "$CONNECTIONS" -q "$RATE" --latency-correction \
        --no-tui "${OHA_JSON[@]}" "${HEADER_ARGS[@]}" "$(url_of "$target")"
done

# Idle keep-alive connections: RSS before, with N/2 and then N idle connections open. Opening
# connections is a burst of requests (up to 256 at a time), and the memory that burst touched
# stays with the process: (after - before) / N includes it, while the second half, opened once the
# first has settled, shows what each further connection costs.
open_idle() {  # target part count -> waits until the connections are open; sets STARTED_PID
    local target=$1 part=$2 count=$3 ready="$RUNS/$1.idle$2.json" i
    start_bg "idle$part-$target" "${LOADGEN_PIN[@]}" python3 "$HERE/idle_conns.py" \
        --port "${PORT_OF[$target]}" --count "$count" --path "$SCENARIO_PATH" \
        "${header_flags[@]}" --ready-file "$ready" --timeout 60 --hold 120 --window "$IDLE_WINDOW"
    for ((i = 0; i < 700; i++)); do  # idle_conns.py gives up after 60 s
        [[ -f $ready ]] && break
        kill -0 "$STARTED_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -f $ready ]] || { cat "$WORK/idle$part-$target.log" >&2; die "idle_conns.py failed against $target"; }
    sleep 1  # let the server settle
}
if ((IDLE_CONNS)); then
    header_flags=()
    for h in "${SCENARIO_HEADERS[@]}"; do header_flags+=(--header "$h"); done
    for target in "${TARGETS[@]}"; do
        log "$target: $IDLE_CONNS idle keep-alive connections, in two halves"
        read -ra pids <<<"$(pids_of "$target")"
        before=$(rss_kib "${pids[@]}")
        open_idle "$target" "" $((IDLE_CONNS / 2))
        first_pid=$STARTED_PID
        mid=$(rss_kib "${pids[@]}")
        open_idle "$target" 2 $((IDLE_CONNS - IDLE_CONNS / 2))
        after=$(rss_kib "${pids[@]}")
        stop_bg "$STARTED_PID"
        stop_bg "$first_pid"
        printf 'rss_before_kib=%s\nrss_mid_kib=%s\nrss_after_kib=%s\n' "$before" "$mid" "$after" >"$RUNS/$target.idle.env"
    done
fi

# ----------------------------------------------------------------- report ----

{
    echo "scenario=$SCENARIO"
    echo "targets=${TARGETS[*]}"
    echo "duration_s=$DURATION"
    echo "connections=$CONNECTIONS"
    echo "rate=$RATE"
    echo "body_size=$BODY_SIZE"
    echo "workers=$WORKERS"
    echo "idle_conns=$IDLE_CONNS"
    echo "idle_window=$IDLE_WINDOW"
    echo "clk_tck=$(getconf CLK_TCK)"
    echo "cpus=$NCPU"
    echo "wrk_version=$( (wrk -v 2>&1 || true) | head -n 1)"
    if ((WITH_OHA)); then echo "oha_version=$(oha --version)"; fi
    if ((WITH_NGINX)); then echo "nginx_version=$("$NGINX" -v 2>&1)"; fi
    if ((WITH_L4)); then echo "haproxy_version=$("$HAPROXY" -v 2>&1 | head -n 1)"; fi
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$RUNS/params.env"
# What the scenario compares, printed under the table's title.
if ((${#SCENARIO_NOTES[@]})); then printf '%s\n' "${SCENARIO_NOTES[@]}" >"$RUNS/notes.txt"; fi

mkdir -p "$HERE/results"
python3 "$HERE/report.py" "$RUNS" "$HERE/results/last.json"

# The scenario checks' verdicts again, under the table (all passed, or the
# run would have stopped at the first failure).
for target in "${TARGETS[@]}"; do
    [[ -f $RUNS/$target.wrk.check ]] && printf 'check %s: %s\n' "$target" "$(cat "$RUNS/$target.wrk.check")"
done
exit 0

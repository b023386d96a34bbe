#!/usr/bin/env python3
"""Failing upstream: client errors and latency when one of a service's two
endpoints answers every request with 500 (or closes every connection) for
the whole run, with the gateway's resilience features configured ("on") and
without them ("off").

Per measurement it starts, on 127.0.0.1 and ports picked free at run time:
  - endpoint 1: a healthy stub (`BIN stub`, HTTP 200);
  - endpoint 2: a small failing upstream written in Python in this file
    (`failing.py --serve-failing MODE`, its own process, standard library,
    one thread per connection), because the stub can only answer 200:
      --mode 500    reads each request and answers `500 Internal Server Error`
                    (a short JSON body, keep-alive), /healthz included;
      --mode close  reads each request head and closes the connection without
                    a response byte (FIN), /healthz included;
  - the gateway (`BIN serve`, one worker) with one service of those two
    endpoints routed at /api, and an [admin] listener (read once at the end
    for the counters that explain the result: retries, ejections, breaker);
then N client threads (--clients, 16), one kept-alive connection each, send
GET /api/... back to back for D seconds (--duration, 10), starting as soon
as the gateway answers: the failing endpoint is there from the first request,
so the figures include how fast the gateway reacts to it.

Variants (the same two endpoints):
  off  no resilience tables: default round robin; only the retry defaults
       every service has (attempts 1 on connect failures and on connections
       closed before a response byte, budget 20 %)
  on   balance = "least_request", [services.breaker] (window 10s,
       min_requests 20, error_rate 50, open_for 30s, fallback 503 JSON),
       [services.outlier] (5 consecutive failures, eject 30s, max 50 %),
       [services.health] (GET /healthz every 2s, timeout 1s, out after 3
       failures), [services.retry] (attempts 1, on connect and reset,
       budget 20, backoff 25ms); the same tables as scenarios/resilient.sh

Counted per run: requests written; errors = non-2xx responses + requests
without a response (closed, reset, or none within --timeout); breaker
fallbacks (responses with X-Ringgate-Circuit: open) among the errors; latency
of every request (from just before its write, a reconnect included, to the
last byte of its response) p50/p99/p99.9/max; when the errors happened.

CPUs as in run.sh: with 2 or more CPUs the gateway (its health probers too)
runs on CPU 0, the clients, the stub and the failing upstream on the others.
Other load: as scrape.py, each measurement waits (up to --quiet-wait s) until
processes not started by this script use less than --max-other of a CPU, and
one during which they used more is printed DISCARDED and repeated (up to
--retries times). Variants alternate (on/off, then off/on, ...), --runs of
each per mode.

  loadtest/failing.py --bin target/release/ringgate
  loadtest/failing.py --bin /tmp/ringgate --mode both --runs 3 --json /tmp/failing.json
  loadtest/failing.py --bin /tmp/new --off-bin /tmp/old   # "off" on an older build
"""

import argparse
import collections
import json
import math
import os
import signal
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (next to this file)
from harness import HOST, HttpConn, HttpError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The "on" variant's service tables, shared with scenarios/resilient.sh.
with open(os.path.join(HERE, "scenarios", "lib", "resilience.toml")) as _f:
    RESILIENCE_TOML = _f.read()


# ------------------------------------------------- the failing upstream ----


def serve_failing(mode):
    """The failing endpoint (run as its own process): every request is read,
    then answered 500 (mode "500") or its connection closed without a byte
    (mode "close"). Prints its port, and its counts when it gets SIGTERM."""
    counts = collections.Counter()
    lock = threading.Lock()
    body = b'{"error":"injected failure"}'

    def count(key):
        with lock:
            counts[key] += 1

    def on_term(signum, frame):
        with lock:
            print("counts " + json.dumps(dict(counts)), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)

    def handle(conn):
        buf = b""
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else ""
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip().lower()
                if "chunked" in headers.get("transfer-encoding", ""):
                    return  # not needed here: the clients send GETs only
                length = int(headers.get("content-length", "0") or 0)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                kind = "probe" if path.startswith("/healthz") else "request"
                if mode == "close":
                    count(kind + "s closed")
                    return
                close = "close" in headers.get("connection", "")
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                             + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body)
                count(kind + "s answered 500")
                if close:
                    return
        except OSError:
            pass
        finally:
            conn.close()

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, 0))
    srv.listen(1024)
    print(f"failing upstream ({mode}) listening on {HOST}:{srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        count("connections")
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def start_failing(procs, mode, prefix=(), timeout=10.0):
    """Start this script's failing upstream; return (proc, port)."""
    import re
    proc = procs.start("failing-" + mode, [*prefix, sys.executable, os.path.abspath(__file__),
                                           "--serve-failing", mode])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(proc.log_path, errors="replace") as f:
            m = re.search(r"listening on [0-9.]+:(\d+)", f.read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            harness.die(f"the failing upstream exited at startup:\n{procs.log_tail(proc)}")
        time.sleep(0.02)
    harness.die(f"the failing upstream printed no port within {timeout:.0f} s:\n{procs.log_tail(proc)}")


def failing_counts(procs, proc):
    """Stop the failing upstream and return the counts it printed."""
    procs.stop(proc)
    with open(proc.log_path, errors="replace") as f:
        for line in f:
            if line.startswith("counts "):
                return json.loads(line[len("counts "):])
    return {}


# --------------------------------------------------------------- clients ----


def client(port, stop_at, timeout, stats, latencies, failure_times, index, start):
    """One kept-alive client: requests back to back until stop_at."""
    conn = HttpConn(port, timeout=timeout)
    n = 0
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        if conn.sock is None:
            try:
                conn.connect()
            except HttpError as e:
                stats["gateway connect " + e.kind] += 1
                time.sleep(0.01)
                continue
        n += 1
        stats["requests"] += 1  # written from here on: answered, or failed
        try:
            response = conn.get(f"/api/c{index}/{n}")
        except HttpError as e:
            latencies.append(time.perf_counter() - t0)
            stats["no response (" + e.kind + ")"] += 1
            stats["errors"] += 1
            failure_times.append(time.monotonic() - start)
            continue
        latencies.append(time.perf_counter() - t0)
        stats[f"status {response.status}"] += 1
        if 200 <= response.status < 300:
            stats["2xx"] += 1
        else:
            stats["errors"] += 1
            if response.headers.get("x-ringgate-circuit", "").lower() == "open":
                stats["fallback"] += 1
            failure_times.append(time.monotonic() - start)
    stats["connects"] += conn.connects
    conn.close()


def run_load(port, clients, duration, timeout):
    per_thread = [collections.Counter() for _ in range(clients)]
    lats = [[] for _ in range(clients)]
    failures = [[] for _ in range(clients)]
    start = time.monotonic()
    stop_at = start + duration
    threads = [threading.Thread(target=client, daemon=True,
                                args=(port, stop_at, timeout, per_thread[i], lats[i], failures[i], i, start))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at + timeout + 2 - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    elapsed = time.monotonic() - start
    stats = collections.Counter()
    for s in per_thread:
        stats.update(s)
    if stuck:
        stats["clients still stuck at the end"] = stuck
    return stats, [x for l in lats for x in l], sorted(t for f in failures for t in f), elapsed


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


METRICS = {
    "ringgate_upstream_retries_total": "retries",
    "ringgate_upstream_retry_budget_exhausted_total": "retry budget exhausted",
    "ringgate_upstream_ejections_total": "ejections",
    "ringgate_breaker_opened_total": "breaker opened",
    "ringgate_breaker_fallbacks_total": "breaker fallbacks",
    "ringgate_upstream_no_healthy_total": "no healthy endpoint",
    "ringgate_upstream_connect_failures_total": "connect failures",
}


def gateway_counters(admin_port, failing_port):
    """The service's resilience counters from /metrics (those this build
    has), and whether the failing endpoint was available (healthy and not
    ejected) and healthy (active checks) at the end."""
    try:
        with socket.create_connection((HOST, admin_port), timeout=5) as s:
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return {"error": str(e)}
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return {"error": f"/metrics answered {head[:40]!r}"}
    out = {}
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("#") or " " not in line:
            continue  # comments, and chunk-size lines should the body be chunked
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        try:
            v = int(float(value))
        except ValueError:
            continue
        if name in METRICS:
            out[METRICS[name]] = out.get(METRICS[name], 0) + v
        elif name == "ringgate_upstream_endpoint_available" and f':{failing_port}"' in name_labels:
            out["failing endpoint available at end"] = v
        elif name == "ringgate_upstream_endpoint_healthy" and f':{failing_port}"' in name_labels:
            out["failing endpoint healthy at end"] = v
    return out


# ----------------------------------------------------------- measurement ----


def measure(args, procs, load, mode, variant, gw_prefix, side_prefix):
    binary = args.bin if variant == "on" else args.off_bin
    stub, stub_port = harness.start_stub(procs, binary, "good", args.body_size, prefix=side_prefix)
    failing, failing_port = start_failing(procs, mode, prefix=side_prefix)
    admin = {}

    def extra(port):
        admin["port"] = harness.free_port()
        while admin["port"] == port:
            admin["port"] = harness.free_port()
        return f'[admin]\nlisten = "{HOST}:{admin["port"]}"\n'

    counters = {}
    try:
        gateway, port, _ = harness.start_gateway(procs, binary, [stub_port, failing_port], extra=extra,
                                                 prefix=gw_prefix,
                                                 service=RESILIENCE_TOML if variant == "on" else "")
        a = load.snapshot()
        stats, lats, times, elapsed = run_load(port, args.clients, args.duration, args.timeout)
        other, top = load.other(a, load.snapshot())
        time.sleep(0.2)  # shards copy their counters for /metrics on a 50 ms tick
        counters = gateway_counters(admin["port"], failing_port)
        alive = gateway.poll() is None
        procs.stop(gateway)
    finally:
        if stub in procs.procs:
            procs.stop(stub)
        upstream = failing_counts(procs, failing) if failing in procs.procs else {}
    requests = stats["requests"]
    res = {
        "mode": mode, "variant": variant, "bin": binary, "requests": requests,
        "rps": requests / elapsed, "errors": stats["errors"],
        "error_pct": 100.0 * stats["errors"] / requests if requests else 0.0,
        "fallback": stats["fallback"], "seconds": elapsed, "gateway_alive": alive,
        "stats": dict(stats), "gateway": counters, "failing_upstream": upstream,
        "other_cpu_s": other, "other_top": top,
    }
    if lats:
        ms = [x * 1000 for x in lats]
        res.update(p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99), p99_9_ms=percentile(ms, 99.9),
                   max_ms=max(ms))
    if times:
        res["errors_first_1s"] = sum(t < 1.0 for t in times)
        res["last_error_s"] = times[-1]
    else:
        res["errors_first_1s"], res["last_error_s"] = 0, None
    return res



def fmt_row(i, r):
    last = f"{r['last_error_s']:.2f}" if r["last_error_s"] is not None else "-"
    row = (f"{i:>3}  {r['mode']:<5}  {r['variant']:<3}  {r['requests']:>8}  {r['rps']:>6.0f}  {r['errors']:>7}  "
           f"{r['error_pct']:>7.2f}  {r['fallback']:>6}  {r['errors_first_1s']:>6}  {last:>6}  "
           f"{r.get('p50_ms', float('nan')):>7.2f}  {r.get('p99_ms', float('nan')):>7.2f}  "
           f"{r.get('p99_9_ms', float('nan')):>8.2f}  {r.get('max_ms', float('nan')):>8.1f}  {r['other_cpu_s']:>5.2f}")
    if not r["gateway_alive"]:
        row += "  GATEWAY EXITED"
    if r.get("discarded"):
        row += f"  DISCARDED: other load {r['other_cpu_s']:.2f} CPU-s ({', '.join(f'{c} {s:.2f}s' for c, s in r['other_top'])})"
    return row


def spread(values, fmt=".2f"):
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-failing":
        serve_failing(sys.argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringgate"),
                   help="the gateway binary (also runs the stub); default target/release/ringgate")
    p.add_argument("--off-bin", help="binary for the 'off' variant (default: --bin), e.g. a build "
                                     "from before the resilience features")
    p.add_argument("--mode", choices=("500", "close", "both"), default="500",
                   help="how endpoint 2 fails: answers 500, or closes each connection (default 500)")
    p.add_argument("--variants", default="on,off", help="comma-separated: on, off (default on,off)")
    p.add_argument("--runs", type=int, default=3, help="measurements per variant and mode (default 3)")
    p.add_argument("--clients", type=int, default=16, help="client threads, one kept-alive connection each (default 16)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement (default 10)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds a request may wait for its response before it counts as failed (default 5)")
    p.add_argument("--body-size", type=int, default=256, help="stub response body size (default 256)")
    p.add_argument("--max-other", type=float, default=0.02,
                   help="other processes' CPU use (in CPUs, averaged over a measurement) above which it is "
                        "discarded and repeated (default 0.02)")
    p.add_argument("--retries", type=int, default=3, help="repeats of a disturbed measurement (default 3)")
    p.add_argument("--quiet-wait", type=float, default=300, help="max seconds to wait for other load to end first (default 300)")
    p.add_argument("--json", help="write every measurement to this file")
    args = p.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in ("on", "off") for v in variants):
        p.error("--variants takes on and/or off")
    if args.clients < 1 or args.duration <= 0 or args.timeout <= 0 or args.runs < 1:
        p.error("--clients, --duration, --timeout and --runs must be positive")
    args.bin = harness.check_bin(args.bin)
    args.off_bin = harness.check_bin(args.off_bin) if args.off_bin else args.bin

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        gw_prefix = ["taskset", "-c", str(cpus[0])]
        side_prefix = ["taskset", "-c", ",".join(map(str, cpus[1:]))]
        os.sched_setaffinity(0, cpus[1:])  # this script's client threads
        print(f"gateway on CPU {cpus[0]}; clients, stub and failing upstream on CPUs {','.join(map(str, cpus[1:]))}")
    else:
        gw_prefix, side_prefix = [], []
    modes = ["500", "close"] if args.mode == "both" else [args.mode]
    print(f"on: {args.bin}; off: {args.off_bin}; {args.runs} runs per variant and mode, {args.clients} kept-alive "
          f"clients, {args.duration:g} s each, response timeout {args.timeout:g} s")

    order = []
    for mode in modes:
        for i in range(args.runs):
            vs = variants if i % 2 == 0 else variants[::-1]
            order += [(mode, v) for v in vs]
    header = (f"{'#':>3}  {'mode':<5}  {'var':<3}  {'requests':>8}  {'req/s':>6}  {'errors':>7}  {'err %':>7}  "
              f"{'fallbk':>6}  {'in 1st':>6}  {'last':>6}  {'p50 ms':>7}  {'p99 ms':>7}  {'p99.9 ms':>8}  "
              f"{'max ms':>8}  {'other':>5}")
    results = []
    try:
        with harness.Processes() as procs, harness.OtherLoad() as load:
            if not load.available:
                print("note: /proc not available, other load is not watched")
            print(header)
            for mode, variant in order:
                for attempt in range(args.retries + 1):
                    waited = harness.wait_quiet(load, args.max_other, args.quiet_wait) if load.available else 0
                    if waited is None:
                        print(f"  other load did not end within {args.quiet_wait:.0f} s; measuring anyway", file=sys.stderr)
                    r = measure(args, procs, load, mode, variant, gw_prefix, side_prefix)
                    r["discarded"] = r["other_cpu_s"] / r["seconds"] >= args.max_other
                    results.append(r)
                    print(fmt_row(len(results), r), flush=True)
                    g = ", ".join(f"{k} {v}" for k, v in r["gateway"].items())
                    u = ", ".join(f"{k} {v}" for k, v in r["failing_upstream"].items())
                    s = ", ".join(f"{k}: {v}" for k, v in sorted(r["stats"].items())
                                  if k not in ("requests", "errors", "2xx", "fallback"))
                    print(f"       gateway: {g or '-'}; failing upstream saw: {u or '-'}; {s}", flush=True)
                    if not r["discarded"]:
                        break
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130

    kept = [r for r in results if not r["discarded"]]
    print(f"\n{len(results)} measurements, {len(results) - len(kept)} discarded (other load >= {args.max_other} CPUs)")
    print("columns: errors = non-2xx + no response; fallbk = breaker fallbacks among them; in 1st = errors in "
          "the first second; last = time of the last error (s); latency per request incl. any reconnect; "
          "other = CPU-s used by other processes")
    summary = {}
    for mode in modes:
        for variant in variants:
            rs = [r for r in kept if r["mode"] == mode and r["variant"] == variant]
            if not rs:
                print(f"mode {mode}, {variant}: no kept runs")
                continue
            summary[f"{mode}/{variant}"] = {k: statistics.median(r[k] for r in rs)
                                            for k in ("errors", "error_pct", "p99_ms", "rps") if all(k in r for r in rs)}
            print(f"mode {mode:<5} {variant:<3} ({len(rs)} runs), median [min-max]: errors "
                  f"{spread([r['errors'] for r in rs], '.0f')} ({spread([r['error_pct'] for r in rs], '.3f')} %), "
                  f"p99 {spread([r['p99_ms'] for r in rs])} ms, p50 {spread([r['p50_ms'] for r in rs])} ms, "
                  f"req/s {spread([r['rps'] for r in rs], '.0f')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summary,
                       "params": {k: v for k, v in vars(args).items()}}, f, indent=1)
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Cache hits side by side: ringgate's response cache against nginx, same run.

Starts, on 127.0.0.1 and ports picked free at run time, a stub upstream
(`BIN stub`, --body-size bytes of JSON), ringgate (one worker) with two routes
to it, and nginx (one worker) with two servers to it:

  ringgate-hit    /api: `cache = "edge"` (ttl 1h): every measured request a hit
  ringgate-plain  /plain: the same stub, proxied without a cache
  nginx-cache     proxy_cache (proxy_cache_valid 200 1h, proxy_cache_lock on,
                  proxy_cache_revalidate on): every measured request a hit
  nginx-plain     plain proxying with upstream keep-alive

Each is warmed up (the cached ones store the response), then measured with
wrk -t1 -cC -dDs --latency on the same URL: requests/s, p99 and the server's
CPU per request (utime+stime of its processes). The targets alternate within
each of --runs rounds; the servers run on CPU 0 and wrk on CPU 1 where the
machine has two. Medians are printed with the range over the runs.

--scan N sends N requests to N distinct URLs (a scan) to a ringgate whose cache
has max_memory = --scan-memory, and reports its RSS before and after against
that bound (the store evicts; bookkeeping is counted in the bound).

Standard library only; needs wrk and nginx.

  loadtest/cache_hit.py --bin target/release/ringgate --runs 3
  loadtest/cache_hit.py --scan 1000000 --runs 0
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST  # noqa: E402
from harness import process_ticks as ticks, rss_kib  # noqa: E402
from scrape import wrk_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def start_ringgate(procs, args, stub_port, prefix, max_memory="256MiB"):
    routes = f"""
[[caches]]
name = "edge"
max_memory = "{max_memory}"
max_object = "1MiB"

[[routes]]
name = "hit"
paths = ["/api"]
service = "svc"
cache = "edge"
[routes.cache_policy]
ttl = "1h"

[[routes]]
name = "plain"
paths = ["/plain"]
service = "svc"
"""
    # The harness's route "all" serves /api; ours replace it (written after, same name is not allowed).
    proc, port, config = harness.start_gateway(procs, args.bin, [stub_port], extra="", prefix=prefix, service="")
    procs.stop(proc)
    with open(config) as f:
        text = f.read()
    text = text[: text.index("[[routes]]")] + routes
    with open(config, "w") as f:
        f.write(text)
    proc = procs.start(f"gateway-cache-{port}", [*prefix, args.bin, "serve", "--config", config])
    harness.wait_listening(port)
    return proc, port


def start_nginx(procs, stub_port, prefix):
    cache_port, plain_port = harness.free_port(), harness.free_port()
    wd = procs.workdir
    conf = os.path.join(wd, "nginx-cache.conf")
    user = f"user nobody {subprocess.run(['id', '-gn', 'nobody'], capture_output=True, text=True).stdout.strip()};" if os.geteuid() == 0 else ""
    os.makedirs(os.path.join(wd, "nginx-cache"), exist_ok=True)
    os.chmod(wd, 0o755)
    os.chmod(os.path.join(wd, "nginx-cache"), 0o777)
    with open(conf, "w") as f:
        f.write(f"""{user}
worker_processes 1;
daemon off;
master_process on;
pid {wd}/nginx-cache.pid;
error_log {wd}/nginx-cache.err warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {wd}/nginx-cache/body;
    proxy_temp_path {wd}/nginx-cache/proxy;
    fastcgi_temp_path {wd}/nginx-cache/fastcgi;
    uwsgi_temp_path {wd}/nginx-cache/uwsgi;
    scgi_temp_path {wd}/nginx-cache/scgi;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    proxy_cache_path {wd}/nginx-cache/store levels=1:2 keys_zone=edge:64m max_size=1g inactive=1h use_temp_path=off;
    upstream backend {{ server {HOST}:{stub_port}; keepalive 128; keepalive_requests 1000000; }}
    server {{
        listen {HOST}:{cache_port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_cache_revalidate on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
    server {{
        listen {HOST}:{plain_port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = procs.start("nginx-cache", [*prefix, nginx, "-c", conf, "-e", f"{wd}/nginx-cache.err"])
    harness.wait_listening(cache_port)
    harness.wait_listening(plain_port)
    time.sleep(0.2)
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        workers = [int(p) for p in f.read().split()]
    return proc, cache_port, plain_port, [proc.pid, *workers]


def wrk(args, url, pids, wrk_prefix):
    subprocess.run([*wrk_prefix, "wrk", "-t1", f"-c{args.connections}", "-d2s", url], capture_output=True, timeout=60)
    t0 = ticks(pids)
    out = subprocess.run([*wrk_prefix, "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                          "-s", os.path.join(HERE, "wrk_report.lua"), url],
                         capture_output=True, text=True, timeout=args.duration + 60).stdout
    t1 = ticks(pids)
    r = wrk_report(out)
    if r is None:
        harness.die(f"no WRK_JSON from wrk:\n{out}")
    n = max(1, r["requests"])
    bad = sum(r["errors"].values()) + r.get("non2xx", 0)
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p99_ms": r["latency_us"]["p99"] / 1000,
            "errors": bad, "cpu_us": (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / n}


def header(port, path, name):
    conn = harness.HttpConn(port, timeout=5)
    try:
        r = conn.get(path)
        return r.headers.get(name.lower(), "")
    finally:
        conn.close()


SCAN_LUA = """
local n, limit = 0, 0
function init(args) limit = tonumber(args[1]) end
function request()
  n = n + 1
  if n == limit then wrk.thread:stop() end
  return wrk.format(nil, "/api/scan/" .. n .. "?" .. math.random(1000000000))
end
"""


def scan(args, procs, stub_port, prefix, wrk_prefix):
    proc, port = start_ringgate(procs, args, stub_port, prefix, max_memory=args.scan_memory)
    pids = [proc.pid]
    before = rss_kib(pids)
    lua = os.path.join(procs.workdir, "scan.lua")
    with open(lua, "w") as f:
        f.write(SCAN_LUA)
    t0 = time.monotonic()
    out = subprocess.run([*wrk_prefix, "wrk", "-t1", f"-c{args.connections}", f"-d{args.scan_seconds}s", "-s", lua,
                          f"http://{HOST}:{port}/", "--", str(args.scan)], capture_output=True, text=True,
                         timeout=args.scan_seconds + 60).stdout
    took = time.monotonic() - t0
    after = rss_kib(pids)
    sent = 0
    for line in out.splitlines():
        if "requests in" in line:
            sent = int(line.split()[0])
    bound = parse_size(args.scan_memory)
    print(f"\nscan: {sent} requests to distinct URLs in {took:.0f} s; ringgate RSS {before / 1024:.1f} MiB -> "
          f"{after / 1024:.1f} MiB (growth {(after - before) / 1024:.1f} MiB; max_memory {bound / 2**20:.0f} MiB)")
    procs.stop(proc)
    return {"requests": sent, "rss_before_kib": before, "rss_after_kib": after, "max_memory": bound}


def parse_size(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if s.endswith(u):
            return int(s[: -len(u)]) * m
    return int(s)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringgate"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--body-size", type=int, default=1024)
    p.add_argument("--scan", type=int, default=0, help="requests to distinct URLs (0: no scan)")
    p.add_argument("--scan-memory", default="64MiB")
    p.add_argument("--scan-seconds", type=int, default=120)
    p.add_argument("--json")
    args = p.parse_args()
    args.bin = harness.check_bin(args.bin)
    harness.require("wrk", "nginx", hint=" (apt-get install wrk nginx-light)")
    cpus = sorted(os.sched_getaffinity(0))
    prefix, wrk_prefix = ([], [])
    if len(cpus) >= 2:
        prefix, wrk_prefix = ["taskset", "-c", str(cpus[0])], ["taskset", "-c", str(cpus[1])]
    with harness.Processes() as procs:
        _, stub_port = harness.start_stub(procs, args.bin, "cache", args.body_size)
        results = {}
        if args.runs > 0:
            gw, gw_port = start_ringgate(procs, args, stub_port, prefix)
            ng, cache_port, plain_port, ng_pids = start_nginx(procs, stub_port, prefix)
            targets = {
                "ringgate-hit": (f"http://{HOST}:{gw_port}/api/item", [gw.pid]),
                "ringgate-plain": (f"http://{HOST}:{gw_port}/plain/item", [gw.pid]),
                "nginx-cache": (f"http://{HOST}:{cache_port}/api/item", ng_pids),
                "nginx-plain": (f"http://{HOST}:{plain_port}/api/item", ng_pids),
            }
            # Store the responses, and check that the cached targets answer from their caches.
            for name, (url, _) in targets.items():
                subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=False)
            rg_status = header(gw_port, "/api/item", "cache-status")
            ng_status = header(cache_port, "/api/item", "x-cache-status")
            print(f"ringgate Cache-Status: {rg_status!r}; nginx X-Cache-Status: {ng_status!r}")
            if "hit" not in rg_status or ng_status != "HIT":
                harness.die("a cached target is not answering from its cache")
            rows = {name: [] for name in targets}
            for run in range(args.runs):
                for name, (url, pids) in targets.items():
                    r = wrk(args, url, pids, wrk_prefix)
                    rows[name].append(r)
                    print(f"run {run + 1} {name:15} {r['rps']:9.0f} rps  p99 {r['p99_ms']:6.2f} ms  cpu {r['cpu_us']:6.2f} us/req  errors {r['errors']}")

            def med(name, key):
                vals = [r[key] for r in rows[name]]
                return statistics.median(vals), min(vals), max(vals)

            print(f"\nmedians of {args.runs} runs, body {args.body_size} B, wrk -c{args.connections} -d{args.duration}s")
            print("| target | rps [range] | CPU µs/req [range] | p99 ms |")
            print("|---|---|---|---|")
            for name in targets:
                rps, cpu, p99 = med(name, "rps"), med(name, "cpu_us"), med(name, "p99_ms")
                print(f"| {name} | {rps[0]:,.0f} [{rps[1]:,.0f}-{rps[2]:,.0f}] | {cpu[0]:.2f} [{cpu[1]:.2f}-{cpu[2]:.2f}] | {p99[0]:.2f} |")
            hit = med("ringgate-hit", "rps")[0]
            print(f"\nringgate hit / nginx plain proxy: {hit / med('nginx-plain', 'rps')[0]:.2f}x rps (goal >= 1.8)")
            print(f"ringgate hit / nginx proxy_cache hit: {hit / med('nginx-cache', 'rps')[0]:.2f}x rps (goal >= 1.2)")
            print(f"CPU per hit, ringgate / nginx proxy_cache: {med('ringgate-hit', 'cpu_us')[0] / med('nginx-cache', 'cpu_us')[0]:.2f}x")
            results["runs"] = rows
            procs.stop(gw)
            procs.stop(ng)
        if args.scan:
            results["scan"] = scan(args, procs, stub_port, prefix, wrk_prefix)
        if args.json:
            harness.write_json(args.json, **results)


if __name__ == "__main__":
    harness.run_main(main)

#!/usr/bin/env python3
"""The cluster-limit scenario: what a rate limit shared through Redis costs.

Starts, on 127.0.0.1 and ports picked free at run time, a real redis-server
(no persistence), a stub upstream (`BIN stub`) and, per measurement, a fresh
gateway (`BIN serve`, one worker) with one route /api/limited carrying one
limit keyed by client IP (every wrk request has the same key), in one of
these variants:

  none       no limit on the route
  local      requests = 1e9 per hour, scope = "local"
  exact      the same limit, scope = "cluster", sync = "exact" (every
             decision one EVALSHA in Redis, pipelined per shard)
  synced     the same limit, scope = "cluster", sync = "100ms"

and, with the limit keyed by an X-Key header that wrk draws round robin from
--keys distinct values (wrk_keys.lua), so concurrent requests rarely share a
key (and so a Redis call):

  local-keys, exact-keys, synced-keys

The limit never refuses here: this measures what a decision costs. Variants
alternate (rotated each run), --runs of each, each measured with

    wrk -t1 -cC -dDs --latency -s loadtest/wrk_report.lua URL

after 2 s of unmeasured warm-up; per run: rps, p50/p99, the gateway's CPU per
request and Redis' CPU per request (Redis shares the two cores: it runs with
wrk and the stub, the gateway on its own CPU), and Redis calls per request
(INFO commandstats: evalsha + eval).

Then the one-key flood: requests = 10 per hour, exact, so all but 10
requests are refused: Redis calls per request (goal: far below 1, thanks to
the deny cache), rps and p99; and the same with Redis stopped (on_error =
"local": the host's own limiter decides).

CPUs as in scrape.py. Runs disturbed by other load (harness.OtherLoad) are
discarded and repeated. Standard library only; needs wrk and redis-server.

  loadtest/cluster_limit.py --bin target/release/ringgate
  loadtest/cluster_limit.py --runs 5 --duration 10 --json /tmp/cluster.json
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HOST, HttpConn  # noqa: E402
from scrape import cpu_ticks, wrk_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATH = "/api/limited"
VARIANTS = ["none", "local", "exact", "synced", "local-keys", "exact-keys", "synced-keys"]


class Redis:
    def __init__(self, procs, prefix):
        self.procs, self.prefix = procs, prefix
        self.port = harness.free_port()
        self.proc = None

    def start(self):
        self.proc = self.procs.start(f"redis-{self.port}", [*self.prefix, "redis-server", "--port", str(self.port),
                                                           "--bind", HOST, "--save", "", "--appendonly", "no",
                                                           "--dir", self.procs.workdir])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        harness.die(f"redis-server did not answer PING:\n{self.procs.log_tail(self.proc)}")

    def stop(self):
        if self.proc:
            self.procs.stop(self.proc)
            self.proc = None

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-h", HOST, "-p", str(self.port), *args], capture_output=True, text=True)
        return r.stdout

    def script_calls(self):
        n = 0
        for line in self.cli("INFO", "commandstats").splitlines():
            for cmd in ("cmdstat_evalsha:", "cmdstat_eval:"):
                if line.startswith(cmd):
                    n += int(line.split("calls=")[1].split(",")[0])
        return n


def limit_toml(variant, requests=1_000_000_000):
    if variant == "none":
        return ""
    mode, _, keys = variant.partition("-")
    scope = {"local": "", "exact": 'scope = "cluster"\n', "synced": 'scope = "cluster"\nsync = "100ms"\n'}[mode]
    key = "header:X-Key" if keys else "ip"
    return f'[[rate_limits]]\nname = "bench"\nrequests = {requests}\nwindow = "1h"\nkey = "{key}"\nmax_keys = 1000000\n{scope}'


def gateway_extra(variant, redis_port, requests=1_000_000_000, on_error="local"):
    limit = limit_toml(variant, requests)
    uses = 'rate_limits = ["bench"]\n' if limit else ""
    return (f'[cluster]\nredis = ["redis://{HOST}:{redis_port}"]\ntimeout = "5ms"\non_error = "{on_error}"\n\n'
            f'{limit}\n[[routes]]\nname = "limited"\npaths = ["{PATH}"]\nservice = "svc"\n{uses}')


def wrk_script(args, keyed, workdir):
    """wrk_report.lua, behind wrk_keys.lua for the keyed variants; with its arguments."""
    if not keyed:
        return os.path.join(HERE, "wrk_report.lua"), []
    path = os.path.join(workdir, "wrk_keys_report.lua")
    with open(path, "w") as f:
        for part in ("wrk_keys.lua", "wrk_report.lua"):
            with open(os.path.join(HERE, part)) as src:
                f.write(src.read() + "\n")
    return path, ["--", str(args.keys)]


def warm_up(args, port, script):
    url = f"http://{HOST}:{port}{PATH}"
    subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.warmup}s", "-s", script[0], url, *script[1]],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.warmup + 30)


def run_wrk(args, port, duration, script):
    url = f"http://{HOST}:{port}{PATH}"
    out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--latency",
                          "-s", script[0], url, *script[1]],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    report = wrk_report(out)
    if report is None:
        harness.die(f"no WRK_JSON line in wrk's output:\n{out}")
    return report


def measure(args, procs, load, redis, stub_port, gw_prefix, variant, requests=1_000_000_000, redis_up=True):
    gateway, port, _ = harness.start_gateway(procs, args.bin, [stub_port], prefix=gw_prefix,
                                             extra=gateway_extra(variant, redis.port, requests))
    try:
        conn = HttpConn(port, timeout=5)
        r = conn.get(PATH)
        conn.close()
        if r.status not in (200, 429):
            harness.die(f"{variant}: GET {PATH} answered {r.status}")
        if not redis_up:
            redis.stop()
        script = wrk_script(args, variant.endswith("-keys"), procs.workdir)
        warm_up(args, port, script)
        calls0 = redis.script_calls() if redis_up else 0
        a = load.snapshot()
        g0 = cpu_ticks(gateway.pid)
        r0 = cpu_ticks(redis.proc.pid) if redis_up else 0
        report = run_wrk(args, port, args.duration, script)
        g1 = cpu_ticks(gateway.pid)
        r1 = cpu_ticks(redis.proc.pid) if redis_up else 0
        calls1 = redis.script_calls() if redis_up else 0
        other, top = load.other(a, load.snapshot())
    finally:
        procs.stop(gateway)
        if not redis_up:
            redis.start()
    tick = os.sysconf("SC_CLK_TCK")
    n = max(1, report["requests"])
    secs = report["duration_us"] / 1e6
    lat = report["latency_us"]
    return {
        "variant": variant + ("" if redis_up else " (Redis stopped)"),
        "requests": report["requests"], "rps": report["requests"] / secs,
        "errors": sum(report["errors"].values()),
        "error_kinds": report["errors"],
        "p50_ms": lat["p50"] / 1000, "p99_ms": lat["p99"] / 1000,
        "gateway_cpu_us": (g1 - g0) / tick * 1e6 / n,
        "redis_cpu_us": (r1 - r0) / tick * 1e6 / n,
        "redis_calls_per_req": (calls1 - calls0) / n,
        "other_cpu_s": other, "other_top": top, "seconds": secs,
    }


def fmt(i, r):
    row = (f"{i:>3}  {r['variant']:<24} {r['rps']:>8.0f}  {r['p50_ms']:>7.3f}  {r['p99_ms']:>7.3f}  "
           f"{r['gateway_cpu_us']:>8.2f}  {r['redis_cpu_us']:>8.2f}  {r['redis_calls_per_req']:>8.4f}  {r['errors']:>6}  {r['other_cpu_s']:>6.2f}")
    if r.get("discarded"):
        row += "  DISCARDED (other load)"
    return row


def spread(values, f=".2f"):
    return f"{statistics.median(values):{f}} [{min(values):{f}}-{max(values):{f}}]"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringgate"))
    p.add_argument("--runs", type=int, default=3, help="measurements per variant (default 3)")
    p.add_argument("--duration", type=int, default=8, help="seconds per measured wrk run (default 8)")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--keys", type=int, default=10000, help="distinct X-Key values in the *-keys variants (default 10000)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-other", type=float, default=0.03)
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    args.bin = harness.check_bin(args.bin)
    harness.require("wrk", "redis-server", "redis-cli", hint=" (apt-get install wrk redis-server)")
    cpus = sorted(os.sched_getaffinity(0))
    gw_prefix, other_prefix = [], []
    if len(cpus) >= 2:
        gw_prefix = ["taskset", "-c", str(cpus[0])]
        os.sched_setaffinity(0, cpus[1:])
        print(f"gateway on CPU {cpus[0]}; wrk, stub and redis-server on CPUs {','.join(map(str, cpus[1:]))}")
    print(f"binary {args.bin}; {args.runs} runs per variant, wrk -t1 -c{args.connections} -d{args.duration}s")
    print(f"{'#':>3}  {'variant':<24} {'rps':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'gw µs/req':>8}  {'redis µs':>8}  "
          f"{'calls/req':>8}  {'errors':>6}  {'other':>6}")
    results = []
    with harness.Processes() as procs, harness.OtherLoad() as load:
        redis = Redis(procs, other_prefix)
        redis.start()
        stub, stub_port = harness.start_stub(procs, args.bin, "cluster", 256)

        def one(variant, **kw):
            for _ in range(args.retries + 1):
                if load.available:
                    harness.wait_quiet(load, args.max_other, 120)
                r = measure(args, procs, load, redis, stub_port, gw_prefix, variant, **kw)
                r["discarded"] = r["other_cpu_s"] / r["seconds"] >= args.max_other
                results.append(r)
                print(fmt(len(results), r), flush=True)
                if not r["discarded"]:
                    return

        for i in range(args.runs):
            order = VARIANTS[i % len(VARIANTS):] + VARIANTS[:i % len(VARIANTS)]
            for v in order:
                one(v)
        # The one-key flood: all but 10 requests refused.
        one("exact", requests=10)
        results[-1]["variant"] = "exact, one-key flood"
        one("exact", requests=10, redis_up=False)
        results[-1]["variant"] = "exact, flood, Redis stopped"

    kept = [r for r in results if not r["discarded"]]
    print()
    summary = {}
    for v in VARIANTS:
        rs = [r for r in kept if r["variant"] == v]
        if not rs:
            continue
        summary[v] = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p99_ms", "gateway_cpu_us", "redis_cpu_us", "redis_calls_per_req")}
        print(f"{v:<8} ({len(rs)} runs) median [min-max]: rps {spread([r['rps'] for r in rs], '.0f')}, "
              f"p99 {spread([r['p99_ms'] for r in rs], '.3f')} ms, gateway cpu/req {spread([r['gateway_cpu_us'] for r in rs])} µs, "
              f"redis cpu/req {spread([r['redis_cpu_us'] for r in rs])} µs, redis calls/req {spread([r['redis_calls_per_req'] for r in rs], '.3f')}")
    for v, local in [("none", "local"), ("exact", "local"), ("synced", "local"), ("exact-keys", "local-keys"), ("synced-keys", "local-keys")]:
        if v in summary and local in summary:
            base, s = summary[local], summary[v]
            print(f"ratios {v} / {local} (medians): rps {s['rps'] / base['rps']:.3f}, p99 {s['p99_ms'] / base['p99_ms']:.3f}, "
                  f"gateway cpu/req {s['gateway_cpu_us'] / base['gateway_cpu_us']:.3f}, "
                  f"gateway+redis cpu/req {(s['gateway_cpu_us'] + s['redis_cpu_us']) / (base['gateway_cpu_us'] + base['redis_cpu_us']):.3f}")
    for r in kept:
        if "flood" in r["variant"]:
            print(f"{r['variant']}: {r['requests']} requests ({r['error_kinds']['status']} refused), redis calls/req {r['redis_calls_per_req']:.5f}, "
                  f"rps {r['rps']:.0f}, p99 {r['p99_ms']:.3f} ms, gateway cpu/req {r['gateway_cpu_us']:.2f} µs")
    if args.json:
        harness.write_json(args.json, args=vars(args), results=results, summary=summary)


if __name__ == "__main__":
    harness.run_main(main)

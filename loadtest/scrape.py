#!/usr/bin/env python3
"""Scrape latency under load: how long GET /metrics takes while the gateway
is busy proxying, and whether scraping changes the proxied latency.

Per measurement it starts, on 127.0.0.1 and ports picked free at run time,
a stub upstream (`BIN stub`) and the gateway (`BIN serve`, one worker, route
/api, `[admin] listen` on a free port), runs 2 s of unmeasured wrk warm-up,
then the measured run

    wrk -t1 -cC -dDs --latency -s loadtest/wrk_report.lua http://127.0.0.1:PORT/api/bench

and, in the "scrape" variant, meanwhile GETs /metrics on the admin listener
every --interval seconds (a new connection each time, as Prometheus does
when the admin listener closes it), recording each scrape's latency (connect
to the last byte of the body) and size. The "no scrape" variant is the same
run without scraping. Both variants alternate (scrape first in odd pairs,
second in even ones), --runs of each, each with a fresh gateway and stub.

With --log, the variants are instead "log" ([log] access = a file in the
run's work directory, JSON lines) and "no log" (no access log), neither
scraped: the cost of the access log in gateway CPU per request and rps. The
"log" variant also checks the file has one line per request (wrk's requests
plus the warm-up's, within 5 %).

CPUs as in run.sh: with 2 or more CPUs the gateway runs on CPU 0 (its admin
thread too: it shares the worker's CPU), wrk, the stub and this script on
the others. Shards answer a scrape on their next housekeeping tick (50 ms),
so scrape latency is expected around 25 ms median, up to 50 ms plus the
rendering.

Other load: during each measurement the CPU time of processes not started
by this script (e.g. a build) is sampled from /proc (harness.OtherLoad).
Before each measurement the script waits (up to --quiet-wait s) until other
processes use less than --max-other of a CPU; a measurement during which
they used more is reported, discarded and repeated (up to --retries times).

Prints per-run rows, then medians and min-max over the kept runs; --json
writes everything. Standard library only; needs wrk.

  loadtest/scrape.py --bin target/release/ringgate
  loadtest/scrape.py --bin /tmp/ringgate --runs 5 --json /tmp/scrape.json
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (next to this file)
from harness import HOST, HttpConn, HttpError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATH = "/api/bench"


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


def cpu_ticks(pid):
    """utime + stime of a process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


class Scraper:
    """GETs /metrics every `interval` s on its own thread until stopped."""

    def __init__(self, port, interval, timeout=5.0):
        self.port, self.interval, self.timeout = port, interval, timeout
        self.samples = []  # (seconds since start, latency s, body bytes, status)
        self.failures = []  # (seconds since start, error)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.t0 = time.monotonic()
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def _run(self):
        k = 0
        while True:
            due = self.t0 + k * self.interval
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            at = time.monotonic() - self.t0
            conn = HttpConn(self.port, timeout=self.timeout)
            start = time.perf_counter()
            try:
                r = conn.get("/metrics")
                latency = time.perf_counter() - start
                self.samples.append((at, latency, int(r.headers.get("content-length", -1)), r.status))
            except HttpError as e:
                self.failures.append((at, str(e)))
            finally:
                conn.close()
            # Next due time after now: a slow scrape delays, never bunches, the next ones.
            k = max(k + 1, int((time.monotonic() - self.t0) / self.interval) + 1)


def wrk_report(text):
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON "):])
    return None



def measure(args, procs, load, on, gw_prefix):
    """One measurement with a fresh stub and gateway; returns a result dict.
    `on`: scrape during the run (or, with --log, write the access log)."""
    scrape, logging = on and not args.log, on and args.log
    stub, stub_port = harness.start_stub(procs, args.bin, "scrape", args.body_size)
    admin = {}
    log_path = os.path.join(procs.workdir, f"access-{time.monotonic_ns()}.log")

    def extra(port):
        admin["port"] = harness.free_port()
        while admin["port"] == port:
            admin["port"] = harness.free_port()
        text = f'[admin]\nlisten = "{HOST}:{admin["port"]}"\n'
        if logging:
            text += f'\n[log]\naccess = "{log_path}"\n'
        return text

    gateway, port, _ = harness.start_gateway(procs, args.bin, [stub_port], extra=extra, prefix=gw_prefix)
    try:
        conn = HttpConn(admin["port"], timeout=5)
        r = conn.get("/metrics")
        conn.close()
        if r.status != 200:
            harness.die(f"GET /metrics on the admin listener answered {r.status}")
        url = f"http://{HOST}:{port}{PATH}"
        subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.warmup}s", url],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.warmup + 30)
        scraper = Scraper(admin["port"], args.interval) if scrape else None
        a = load.snapshot()
        ticks0 = cpu_ticks(gateway.pid)
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                                "-s", os.path.join(HERE, "wrk_report.lua"), url],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if scraper:
            scraper.start()
        try:
            out, _ = wrk.communicate(timeout=args.duration + 30)
        except subprocess.TimeoutExpired:
            wrk.kill()
            out, _ = wrk.communicate()
        finally:
            if scraper:
                scraper.stop()
        ticks1 = cpu_ticks(gateway.pid)
        other, top = load.other(a, load.snapshot())
    finally:
        procs.stop(gateway)
        procs.stop(stub)
    lines = 0
    if logging:
        with open(log_path, "rb") as f:
            lines = sum(1 for _ in f)
        os.unlink(log_path)
    report = wrk_report(out)
    if report is None:
        harness.die(f"no WRK_JSON line in wrk's output:\n{out}")
    secs = report["duration_us"] / 1e6
    lat = report["latency_us"]
    if logging and not 0.95 * report["requests"] <= lines:
        harness.die(f"the access log has {lines} lines for {report['requests']} measured requests")
    res = {
        "variant": ("log" if on else "no log") if args.log else ("scrape" if on else "no scrape"),
        "log_lines": lines,
        "requests": report["requests"],
        "rps": report["requests"] / secs,
        "errors": sum(report["errors"].values()),
        "wrk_p50_ms": lat["p50"] / 1000, "wrk_p99_ms": lat["p99"] / 1000,
        "wrk_p99_9_ms": lat["p99.9"] / 1000, "wrk_max_ms": lat["max"] / 1000,
        "gateway_cpu_us_per_req": (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, report["requests"]),
        "other_cpu_s": other, "other_top": top, "seconds": secs,
    }
    if scraper:
        lats = [s[1] * 1000 for s in scraper.samples]
        res["scrapes"] = len(scraper.samples)
        res["scrape_failures"] = scraper.failures
        res["scrape_non200"] = sum(1 for s in scraper.samples if s[3] != 200)
        res["scrape_ms"] = lats
        res["scrape_bytes"] = [s[2] for s in scraper.samples]
        if lats:
            res.update(scrape_p50_ms=percentile(lats, 50), scrape_p99_ms=percentile(lats, 99), scrape_max_ms=max(lats))
    return res


def fmt_row(i, r):
    row = (f"{i:>3}  {r['variant']:<9}  {r['rps']:>8.0f}  {r['wrk_p50_ms']:>7.3f}  {r['wrk_p99_ms']:>7.3f}  "
           f"{r['wrk_p99_9_ms']:>8.3f}  {r['errors']:>6}  {r['gateway_cpu_us_per_req']:>7.2f}  {r['other_cpu_s']:>6.2f}")
    if "scrapes" in r:
        sizes = r["scrape_bytes"]
        row += (f"  {r['scrapes']:>4}/{len(r['scrape_failures']) + r['scrape_non200']:<2}"
                f"  {r.get('scrape_p50_ms', float('nan')):>6.1f}  {r.get('scrape_p99_ms', float('nan')):>6.1f}"
                f"  {r.get('scrape_max_ms', float('nan')):>6.1f}  {min(sizes) if sizes else 0}-{max(sizes) if sizes else 0}")
    if r.get("discarded"):
        row += f"  DISCARDED: other load {r['other_cpu_s']:.2f} CPU-s ({', '.join(f'{c} {s:.2f}s' for c, s in r['other_top'])})"
    return row


def spread(values, fmt=".3f"):
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringgate"), help="the gateway binary (also runs the stub)")
    p.add_argument("--runs", type=int, default=3, help="measurements per variant (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run (default 10)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured wrk before each run (default 2)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between scrapes (default 0.25)")
    p.add_argument("--body-size", type=int, default=256, help="stub response body size (default 256)")
    p.add_argument("--max-other", type=float, default=0.02,
                   help="other processes' CPU use (in CPUs, averaged over a measurement) above which it is "
                        "discarded and repeated (default 0.02, i.e. 2%% of one CPU)")
    p.add_argument("--retries", type=int, default=3, help="repeats of a disturbed measurement (default 3)")
    p.add_argument("--quiet-wait", type=float, default=300, help="max seconds to wait for other load to end first (default 300)")
    p.add_argument("--log", action="store_true",
                   help="compare access log on / off (no scraping) instead of scrape / no scrape")
    p.add_argument("--json", help="write all results (every scrape's latency too) to this file")
    args = p.parse_args()
    args.bin = harness.check_bin(args.bin)
    if not shutil.which("wrk"):
        harness.die("wrk is required (apt-get install wrk)")

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        gw_prefix = ["taskset", "-c", str(cpus[0])]
        os.sched_setaffinity(0, cpus[1:])  # this script, the scraper thread, wrk and the stub
        print(f"gateway on CPU {cpus[0]}; wrk, stub and scraper on CPUs {','.join(map(str, cpus[1:]))}")
    else:
        gw_prefix = []
    what = "access log on / off" if args.log else f"scrape every {args.interval} s"
    print(f"binary {args.bin}; {args.runs} runs per variant, wrk -t1 -c{args.connections} -d{args.duration}s, {what}")
    on, off = ("log", "no log") if args.log else ("scrape", "no scrape")

    order = []
    for i in range(args.runs):
        order += [True, False] if i % 2 == 0 else [False, True]
    results = []
    header = (f"{'#':>3}  {'variant':<9}  {'rps':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'p99.9 ms':>8}  {'errors':>6}  "
              f"{'cpu µs/req':>7}  {'other':>6}  {'scr/fail':>7}  {'s p50':>6}  {'s p99':>6}  {'s max':>6}  bytes")
    with harness.Processes() as procs, harness.OtherLoad() as load:
        if not load.available:
            print("note: /proc not available, other load is not watched")
        print(header)
        for scrape in order:
            for attempt in range(args.retries + 1):
                waited = harness.wait_quiet(load, args.max_other, args.quiet_wait) if load.available else 0
                if waited is None:
                    print(f"  other load did not end within {args.quiet_wait:.0f} s; measuring anyway", file=sys.stderr)
                r = measure(args, procs, load, scrape, gw_prefix)
                r["discarded"] = r["other_cpu_s"] / r["seconds"] >= args.max_other
                results.append(r)
                print(fmt_row(len(results), r), flush=True)
                if not r["discarded"]:
                    break

    kept = [r for r in results if not r["discarded"]]
    print(f"\n{len(results)} measurements, {len(results) - len(kept)} discarded (other load >= {args.max_other} CPUs)")
    print("columns: other = CPU-s used by other processes during the run; scr/fail = scrapes / failed or non-200; "
          "s p50/p99/max = scrape latency ms; bytes = /metrics body size")
    summary = {}
    for variant in (on, off):
        rs = [r for r in kept if r["variant"] == variant]
        if not rs:
            print(f"{variant}: no kept runs")
            continue
        s = summary[variant] = {k: statistics.median(r[k] for r in rs)
                                for k in ("rps", "wrk_p50_ms", "wrk_p99_ms", "wrk_p99_9_ms", "gateway_cpu_us_per_req")}
        s["runs"] = len(rs)
        print(f"{variant:<9} ({len(rs)} runs), median [min-max]: rps {spread([r['rps'] for r in rs], '.0f')}, "
              f"wrk p50 {spread([r['wrk_p50_ms'] for r in rs])} ms, p99 {spread([r['wrk_p99_ms'] for r in rs])} ms, "
              f"p99.9 {spread([r['wrk_p99_9_ms'] for r in rs])} ms, "
              f"cpu/req {spread([r['gateway_cpu_us_per_req'] for r in rs], '.2f')} µs")
        if variant == "scrape":
            pooled = [x for r in rs for x in r["scrape_ms"]]
            if pooled:
                s.update(scrape_p50_ms=percentile(pooled, 50), scrape_p99_ms=percentile(pooled, 99),
                         scrape_max_ms=max(pooled), scrapes=len(pooled),
                         scrape_bytes=[min(x for r in rs for x in r["scrape_bytes"]),
                                       max(x for r in rs for x in r["scrape_bytes"])])
                fails = sum(len(r["scrape_failures"]) + r["scrape_non200"] for r in rs)
                print(f"  scrapes: {len(pooled)} ({fails} failed), pooled latency p50 {s['scrape_p50_ms']:.1f} ms, "
                      f"p99 {s['scrape_p99_ms']:.1f} ms, max {s['scrape_max_ms']:.1f} ms; per-run p50 "
                      f"{spread([r['scrape_p50_ms'] for r in rs], '.1f')} ms; body {s['scrape_bytes'][0]}-{s['scrape_bytes'][1]} bytes")
    if on in summary and off in summary:
        a, b = summary[on], summary[off]
        print(f"ratios {on} / {off} (medians): wrk p99 {a['wrk_p99_ms'] / b['wrk_p99_ms']:.3f}, "
              f"p50 {a['wrk_p50_ms'] / b['wrk_p50_ms']:.3f}, rps {a['rps'] / b['rps']:.3f}, "
              f"cpu/req {a['gateway_cpu_us_per_req'] / b['gateway_cpu_us_per_req']:.3f}")
    if args.json:
        harness.write_json(args.json, args=vars(args), results=results, summary=summary)


if __name__ == "__main__":
    harness.run_main(main)

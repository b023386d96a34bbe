#!/usr/bin/env python3
"""Failover check: how many requests fail when one of a service's two
endpoints is down, or goes down under load.

Starts the gateway (--bin, `serve`) and its own stub upstreams (the same
binary's `stub`), all on 127.0.0.1 and on ports picked free at run time, with
one service "svc" of two endpoints (round robin) routed at /api. For each
case a fresh gateway and fresh stubs are started, then N client threads, each
with one kept-alive connection, send GET /api/... back to back for D seconds:

  (a) refusing: endpoint 2 is a port that is bound but not listening, so every
      connect to it is refused at once. A gateway that retries a failed
      connect on the other endpoint answers every request 200; a 502 means the
      retry went back to the refusing endpoint (or there was none).
  (b) killed:   both endpoints are healthy stubs; after D/3 stub 2 is killed
      with SIGKILL (its pooled connections are reset, new connects refused).
      Counted: every request that did not get a 2xx, i.e. non-2xx responses
      plus requests written that got no response (connection closed or reset,
      or no response within --timeout).

Clients reconnect after a closed connection (and after `Connection: close`);
a request is counted once it has been written, so a request sent without a
response is always a failure, never silently dropped. Standard library only.

  loadtest/failover.py --bin target/release/ringgate
  loadtest/failover.py --bin /tmp/ringgate-before --clients 32 --duration 5
"""

import argparse
import collections
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (next to this file)
from harness import HttpConn, HttpError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def client(port, stop_at, timeout, stats, failure_times, index):
    """One kept-alive client: requests back to back until stop_at."""
    conn = HttpConn(port, timeout=timeout)
    n = 0
    while time.monotonic() < stop_at:
        if conn.sock is None:
            try:
                conn.connect()
            except HttpError as e:
                # The gateway itself refusing connections is not what is
                # measured, but must not go unnoticed.
                stats["gateway connect " + e.kind] += 1
                time.sleep(0.01)
                continue
        n += 1
        stats["requests"] += 1  # written from here on: answered, or failed
        try:
            response = conn.get(f"/api/c{index}/{n}")
        except HttpError as e:
            stats["no response (" + e.kind + ")"] += 1
            stats["failed"] += 1
            failure_times.append(time.monotonic())
            continue
        stats[f"status {response.status}"] += 1
        if 200 <= response.status < 300:
            stats["2xx"] += 1
        else:
            stats["non-2xx"] += 1
            stats["failed"] += 1
            failure_times.append(time.monotonic())
    stats["connects"] += conn.connects
    conn.close()


def run_load(port, clients, duration, timeout, during=None):
    """N client threads for `duration` s; `during(start)` runs in this thread
    meanwhile (e.g. to kill a stub on time). Returns (stats, failure times
    relative to start, seconds)."""
    per_thread = [collections.Counter() for _ in range(clients)]
    failures = [[] for _ in range(clients)]
    start = time.monotonic()
    stop_at = start + duration
    threads = [threading.Thread(target=client, daemon=True,
                                args=(port, stop_at, timeout, per_thread[i], failures[i], i))
               for i in range(clients)]
    for t in threads:
        t.start()
    if during:
        during(start)
    # Bounded: a request started just before stop_at ends within `timeout`.
    for t in threads:
        t.join(max(0.0, stop_at + timeout + 2 - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    elapsed = time.monotonic() - start
    stats = collections.Counter()
    for s in per_thread:
        stats.update(s)
    if stuck:
        stats["clients still stuck at the end"] = stuck
    times = sorted(t - start for f in failures for t in f)
    return stats, times, elapsed


def case_refusing(procs, args):
    stub, stub_port = harness.start_stub(procs, args.bin, "one", args.body_size)
    holder, dead_port = harness.refusing_port()
    try:
        gateway, port, _ = harness.start_gateway(procs, args.bin, [stub_port, dead_port])
        stats, times, elapsed = run_load(port, args.clients, args.duration, args.timeout)
        alive = gateway.poll() is None
        procs.stop(gateway)
        procs.stop(stub)
    finally:
        holder.close()
    return {
        "name": "(a) endpoint 2 refuses connections",
        "stats": stats, "times": times, "seconds": elapsed, "gateway_alive": alive,
        "detail": f"endpoints 127.0.0.1:{stub_port} (stub), 127.0.0.1:{dead_port} (bound, not listening)",
    }


def case_killed(procs, args):
    stub1, port1 = harness.start_stub(procs, args.bin, "one", args.body_size)
    stub2, port2 = harness.start_stub(procs, args.bin, "two", args.body_size)
    gateway, port, _ = harness.start_gateway(procs, args.bin, [port1, port2])
    kill_after = args.duration / 3
    killed = {}

    def kill_stub2(start):
        time.sleep(max(0.0, start + kill_after - time.monotonic()))
        killed["at"] = time.monotonic() - start
        stub2.send_signal(signal.SIGKILL)  # by PID: the stub this script started
        stub2.wait()

    stats, times, elapsed = run_load(port, args.clients, args.duration, args.timeout, kill_stub2)
    alive = gateway.poll() is None
    procs.stop(gateway)
    procs.stop(stub1)
    procs.stop(stub2)
    at = killed.get("at", kill_after)
    before = sum(t < at for t in times)
    timing = ""
    if len(times) > before:
        after = [t - at for t in times if t >= at]
        timing = f"; failures after the kill from +{after[0] * 1000:.1f} to +{after[-1] * 1000:.1f} ms"
    return {
        "name": f"(b) endpoint 2 SIGKILLed at {at:.2f} s",
        "stats": stats, "times": times, "seconds": elapsed, "gateway_alive": alive,
        "detail": f"endpoints 127.0.0.1:{port1}, 127.0.0.1:{port2} (stubs); "
                  f"{before} failures before the kill{timing}",
    }


def print_table(binary, args, results):
    print(f"\nfailover: {binary}, {args.clients} kept-alive clients, {args.duration:g} s per case, "
          f"response timeout {args.timeout:g} s")
    header = ("case", "requests", "2xx", "non-2xx", "no response", "failed", "failed %", "req/s")
    widths = (38, 9, 9, 8, 12, 7, 9, 8)
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for r in results:
        s = r["stats"]
        requests = s["requests"]
        no_response = sum(v for k, v in s.items() if k.startswith("no response"))
        pct = 100.0 * s["failed"] / requests if requests else 0.0
        cells = (r["name"], str(requests), str(s["2xx"]), str(s["non-2xx"]), str(no_response),
                 str(s["failed"]), f"{pct:.2f} %", f"{requests / r['seconds']:.0f}")
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    for r in results:
        s = r["stats"]
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(s.items())
                           if k not in ("requests", "2xx", "non-2xx", "failed"))
        print(f"  {r['name'][:3]} {r['detail']}")
        print(f"      {detail}")
        if not r["gateway_alive"]:
            print("      the gateway had EXITED by the end of the case")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "ringgate"),
                        help="the ringgate binary: runs the gateway and the stubs "
                             "(default: target/release/ringgate)")
    parser.add_argument("--clients", type=int, default=16, help="client threads, one kept-alive connection each (default 16)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of load per case (default 2)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds a request may wait for its response before it counts as failed (default 5)")
    parser.add_argument("--body-size", type=int, default=256, help="stub response body size in bytes (default 256)")
    parser.add_argument("--case", choices=("refusing", "killed", "both"), default="both", help="which case(s) to run (default both)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any request failed")
    args = parser.parse_args()
    if args.clients < 1 or args.duration <= 0 or args.timeout <= 0:
        parser.error("--clients, --duration and --timeout must be positive")
    args.bin = harness.check_bin(args.bin)

    results = []
    try:
        with harness.Processes() as procs:
            if args.case in ("refusing", "both"):
                results.append(case_refusing(procs, args))
            if args.case in ("killed", "both"):
                results.append(case_killed(procs, args))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    print_table(args.bin, args, results)
    failed = sum(r["stats"]["failed"] for r in results)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())

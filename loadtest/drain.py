#!/usr/bin/env python3
"""Graceful-drain check: does the gateway lose requests when it is stopped
with SIGTERM under keep-alive load, and how long does it take to exit?

Starts the gateway (--bin, `serve`, with `[timeouts] drain = "5s"`) in front
of one stub upstream (the same binary's `stub`), all on 127.0.0.1 and on
ports picked free at run time. N client threads, each on one kept-alive
connection, send GET /api/... back to back and read each response. After
--term-after seconds the gateway gets SIGTERM. From then on a client
  - reconnects when the gateway closes its connection or answers with
    `Connection: close`,
  - stops at its first refused connect (the gateway no longer listens).
Counted, per run:
  answered   requests that got a complete response (by status; and how many
             after the SIGTERM, and how many carried `Connection: close`)
  lost       requests written on a connection that was then closed or reset
             without their response (or got none within --timeout); a
             graceful drain loses none
  refused    connects refused (each client ends with one, so normally = N)
  exit       seconds from SIGTERM until the gateway process exited, and its
             exit status; it must be within timeouts.drain (5 s here). A
             gateway still running after drain + 5 s is killed (SIGKILL) and
             reported so.
drain_grace is left at its default so the same config serves builds that do
not know the key. Standard library only.

  loadtest/drain.py --bin target/release/ringgate
  loadtest/drain.py --bin /tmp/ringgate-before --runs 3
"""

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (next to this file)
from harness import HttpConn, HttpError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRAIN_S = 5  # [timeouts] drain in the gateway's config


def client(port, index, term, hard_stop, timeout, stats, lost_times):
    """One kept-alive client; `term` is a one-item list: the monotonic time
    of the SIGTERM once sent (None before)."""
    conn = HttpConn(port, timeout=timeout)
    n = 0
    while time.monotonic() < hard_stop:
        if conn.sock is None:
            try:
                conn.connect()
            except HttpError as e:
                if e.kind == "refused":
                    stats["refused"] += 1
                    break  # the gateway no longer listens: this client is done
                stats["connect errors"] += 1
                time.sleep(0.01)
                continue
        n += 1
        stats["requests"] += 1  # written from here on: answered or lost
        try:
            response = conn.get(f"/api/c{index}/{n}")
        except HttpError as e:
            stats["lost"] += 1
            stats["lost (" + e.kind + ")"] += 1
            lost_times.append(time.monotonic())
            continue
        stats["answered"] += 1
        stats[f"status {response.status}"] += 1
        if term[0] is not None:
            stats["answered after SIGTERM"] += 1
        if response.close:
            stats["Connection: close"] += 1
    else:
        stats["clients stopped by the time limit"] += 1
    conn.close()


def one_run(args, number):
    with harness.Processes() as procs:
        stub, stub_port = harness.start_stub(procs, args.bin, "drain", args.body_size, args.stub_delay_ms)
        gateway, port, _ = harness.start_gateway(procs, args.bin, [stub_port], drain=f"{DRAIN_S}s")
        term = [None]
        start = time.monotonic()
        # Clients give up at the latest when the gateway must be gone (drain +
        # the 5 s grace this script gives it) plus one response timeout.
        hard_stop = start + args.term_after + DRAIN_S + 5 + args.timeout
        per_thread = [collections.Counter() for _ in range(args.clients)]
        lost = [[] for _ in range(args.clients)]
        threads = [threading.Thread(target=client, daemon=True,
                                    args=(port, i, term, hard_stop, args.timeout, per_thread[i], lost[i]))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.term_after)
        alive_before = gateway.poll() is None
        term[0] = time.monotonic()
        gateway.send_signal(signal.SIGTERM)  # by PID: the gateway this script started
        try:
            code = gateway.wait(DRAIN_S + 5)
            exit_s = time.monotonic() - term[0]
            killed = False
        except subprocess.TimeoutExpired:
            gateway.kill()
            code = gateway.wait()
            exit_s = time.monotonic() - term[0]
            killed = True
        for t in threads:
            t.join(max(0.0, hard_stop + 1 - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
        stats = collections.Counter()
        for s in per_thread:
            stats.update(s)
        if stuck:
            stats["clients still running at the end"] = stuck
        lost_rel = sorted(t - term[0] for f in lost for t in f)
        return {
            "run": number, "stats": stats, "exit_s": exit_s, "exit_code": code, "killed": killed,
            "alive_before": alive_before, "lost_rel": lost_rel,
        }


def print_results(args, results):
    print(f"\ndrain: {args.bin}, {args.clients} kept-alive clients, SIGTERM after {args.term_after:g} s, "
          f"timeouts.drain = {DRAIN_S} s, response timeout {args.timeout:g} s")
    header = ("run", "requests", "answered", "after TERM", "conn:close", "lost", "refused", "exit s", "exit code")
    widths = (4, 9, 9, 10, 10, 6, 8, 7, 9)
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for r in results:
        s = r["stats"]
        code = "killed" if r["killed"] else str(r["exit_code"])
        cells = (str(r["run"]), str(s["requests"]), str(s["answered"]), str(s["answered after SIGTERM"]),
                 str(s["Connection: close"]), str(s["lost"]), str(s["refused"]), f"{r['exit_s']:.3f}", code)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    for r in results:
        s = r["stats"]
        notes = []
        statuses = ", ".join(f"{k[7:]}: {v}" for k, v in sorted(s.items()) if k.startswith("status "))
        notes.append(f"statuses {statuses or 'none'}")
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(s.items()) if k.startswith("lost ("))
        if kinds:
            notes.append(kinds)
        if r["lost_rel"]:
            notes.append(f"lost at +{r['lost_rel'][0] * 1000:.1f} .. +{r['lost_rel'][-1] * 1000:.1f} ms "
                         f"after SIGTERM")
        for key in ("connect errors", "clients stopped by the time limit", "clients still running at the end"):
            if s[key]:
                notes.append(f"{key}: {s[key]}")
        if not r["alive_before"]:
            notes.append("the gateway had EXITED before the SIGTERM")
        if r["killed"]:
            notes.append(f"the gateway did NOT exit within {DRAIN_S + 5} s of SIGTERM and was killed")
        elif r["exit_s"] > DRAIN_S:
            notes.append(f"exit took longer than timeouts.drain ({DRAIN_S} s)")
        print(f"  run {r['run']}: " + "; ".join(notes))
    if len(results) > 1:
        total = collections.Counter()
        for r in results:
            total.update(r["stats"])
        exits = [r["exit_s"] for r in results]
        print(f"  total: {total['requests']} requests, {total['answered']} answered, {total['lost']} lost, "
              f"{total['refused']} refused; exit {min(exits):.3f} .. {max(exits):.3f} s")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "ringgate"),
                        help="the ringgate binary: runs the gateway and the stub (default: target/release/ringgate)")
    parser.add_argument("--clients", type=int, default=32, help="client threads, one kept-alive connection each (default 32)")
    parser.add_argument("--term-after", type=float, default=1.0, help="seconds of load before SIGTERM (default 1)")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole run, each with a fresh gateway (default 1)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds a request may wait for its response before it counts as lost (default 5)")
    parser.add_argument("--body-size", type=int, default=256, help="stub response body size in bytes (default 256)")
    parser.add_argument("--stub-delay-ms", type=int, default=0,
                        help="stub delay per response, to have more requests in flight at the SIGTERM (default 0)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 if a request was lost or the gateway did not exit within timeouts.drain")
    args = parser.parse_args()
    if args.clients < 1 or args.runs < 1 or args.term_after <= 0 or args.timeout <= 0:
        parser.error("--clients, --runs, --term-after and --timeout must be positive")
    args.bin = harness.check_bin(args.bin)

    results = []
    try:
        for number in range(1, args.runs + 1):
            results.append(one_run(args, number))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        if results:
            print_results(args, results)
        return 130
    print_results(args, results)
    bad = any(r["stats"]["lost"] or r["killed"] or r["exit_s"] > DRAIN_S for r in results)
    return 1 if args.strict and bad else 0


if __name__ == "__main__":
    sys.exit(main())

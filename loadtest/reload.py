#!/usr/bin/env python3
"""Hot reload under load: wrk drives the gateway while its config file is
rewritten and reloaded (POST /reload on the admin listener) N times, changing
routes, a rate limit and the upstreams each time. Passes when wrk saw no
socket error and no non-2xx answer, every reload was accepted, and the
gateway ended on the expected generation.

  loadtest/reload.py --bin target/release/ringgate [--reloads 20] [--duration 10]

Everything runs on 127.0.0.1 with ports picked at run time; processes started
here are stopped by PID when the script ends (harness.py).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (next to this file)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(port, admin, upstreams, i):
    """Generation i's config: the upstream set, an extra route and the limit
    change with i, so every reload changes routes, limits and upstreams."""
    ups = ", ".join(f'"127.0.0.1:{p}"' for p in upstreams)
    return f"""[server]
listen = ["127.0.0.1:{port}"]
workers = 0
pin_cores = false

[admin]
listen = "127.0.0.1:{admin}"

[[rate_limits]]
name = "generous"
requests = {100_000_000 + i}
window = "1s"

[[services]]
name = "svc"
upstreams = [{ups}]

[[routes]]
name = "api"
paths = ["/api", "/r{i}"]
service = "svc"
rate_limits = ["generous"]
"""


def post(url):
    req = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringgate"))
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--duration", type=int, default=10, help="seconds of wrk load")
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    harness.check_bin(args.bin)
    if not shutil.which("wrk"):
        harness.die("wrk is required (apt-get install wrk)")
    with harness.Processes() as procs:
        stubs = [harness.start_stub(procs, args.bin, f"up{i}")[1] for i in range(3)]
        port, admin = harness.free_port(), harness.free_port()
        path = os.path.join(procs.workdir, "gateway.toml")
        with open(path, "w") as f:
            f.write(config(port, admin, stubs[:2], 0))
        gw = procs.start("gateway", [args.bin, "serve", "--config", path])
        deadline = time.monotonic() + 10
        while True:
            try:
                if harness.HttpConn(port, timeout=1.0).get("/api").status == 200:
                    break
            except (OSError, harness.HttpError):
                pass
            if time.monotonic() > deadline or gw.poll() is not None:
                harness.die(f"gateway did not start:\n{procs.log_tail(gw)}")
            time.sleep(0.05)
        wrk = subprocess.Popen(
            ["wrk", "-t2", f"-c{args.connections}", f"-d{args.duration}s", f"http://127.0.0.1:{port}/api"],
            stdout=subprocess.PIPE, text=True)
        # Reloads spread over the middle of the run.
        time.sleep(min(1.0, args.duration / 5))
        gap = (args.duration * 0.6) / max(args.reloads, 1)
        accepted = 0
        for i in range(1, args.reloads + 1):
            ups = [stubs[i % 3], stubs[(i + 1) % 3]]
            with open(path, "w") as f:
                f.write(config(port, admin, ups, i))
            status, body = post(f"http://127.0.0.1:{admin}/reload")
            if status == 200 and body.get("reloaded"):
                accepted += 1
            else:
                print(f"reload {i} refused: {status} {body}", file=sys.stderr)
            time.sleep(gap)
        out, _ = wrk.communicate(timeout=args.duration + 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    print(out)
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in socket_errors.groups()) if socket_errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    gen = re.search(r"^ringgate_config_generation (\d+)", metrics, re.M)
    generation = int(gen.group(1)) if gen else 0
    print(f"reloads accepted: {accepted}/{args.reloads}; generation {generation}; "
          f"wrk: {requests} requests, {errors} socket errors, {bad} non-2xx")
    ok = accepted == args.reloads and errors == 0 and bad == 0 and requests > 0 and generation == args.reloads + 1
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""HTTPS side by side: ringgate and nginx terminating TLS with the same certificate.

Starts, on 127.0.0.1 and ports picked free at run time, a stub upstream
(`BIN stub`), and per certificate type (ECDSA P-256, RSA-2048: self-signed,
made with openssl in the work directory) ringgate (`[tls]`, one worker) and
nginx (one worker, `ssl_session_cache shared`, `ssl_session_tickets on`,
HTTP/1.1 keep-alive to the same stub), both on CPU 0, and measures each:

  keep-alive   wrk -t1 -c64 -dDs --latency https://127.0.0.1:PORT/api/x
               (TLS 1.3, one handshake per connection): rps, p99, and the
               server's CPU per request (utime+stime of its process(es))
  full         openssl s_time -new -time T: a full handshake per connection
               (TLS 1.3 with the certificate's signature), connections/s and
               server CPU per handshake
  resumed      openssl s_time -reuse -time T: resumed sessions (TLS 1.2
               session ids: s_time resumes with them), connections/s and
               server CPU per handshake
  idle         --idle-conns N TLS connections that each made one request and
               then sit idle: the server's RSS growth per connection

The targets alternate within each of --runs rounds. wrk and openssl run on
CPU 1 (the client side of a handshake costs about what the server's does, so
handshakes/s are bounded by the client too; the server CPU per handshake is
the comparison that holds). Standard library only; needs wrk, nginx, openssl.

  loadtest/tls.py --bin target/release/ringgate --runs 3
"""

import argparse
import os
import re
import shutil
import socket
import ssl
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


def make_cert(workdir, kind):
    key, crt = os.path.join(workdir, f"{kind}.key"), os.path.join(workdir, f"{kind}.pem")
    if kind == "ecdsa":
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    else:
        newkey = ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-days", "30", "-subj", "/CN=bench.test",
                    "-addext", "subjectAltName=DNS:bench.test", "-keyout", key, "-out", crt],
                   check=True, capture_output=True)
    return crt, key


def start_ringgate(procs, args, stub_port, crt, key, prefix):
    tls = f'[tls]\nlisten = ["{HOST}:{{tls_port}}"]\n[[tls.certs]]\ncert_file = "{crt}"\nkey_file = "{key}"\nhosts = ["bench.test"]\n'
    ports = {}

    def extra(port):
        ports["tls"] = harness.free_port()
        return tls.replace("{tls_port}", str(ports["tls"]))

    proc, _, _ = harness.start_gateway(procs, args.bin, [stub_port], extra=extra, prefix=prefix)
    return proc, ports["tls"], [proc.pid]


def start_nginx(procs, stub_port, crt, key, prefix):
    port = harness.free_port()
    conf = os.path.join(procs.workdir, f"nginx-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
master_process on;
pid {procs.workdir}/nginx-{port}.pid;
error_log {procs.workdir}/nginx-{port}.err warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    upstream backend {{ server {HOST}:{stub_port}; keepalive 128; }}
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    server {{
        listen {HOST}:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    proc = procs.start(f"nginx-{port}", [*prefix, shutil.which("nginx") or "/usr/sbin/nginx", "-c", conf, "-e", f"{procs.workdir}/nginx-{port}.err"])
    harness.wait_listening(port)
    time.sleep(0.2)
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        workers = [int(p) for p in f.read().split()]
    return proc, port, [proc.pid, *workers]


def keepalive(args, port, pids):
    url = f"https://{HOST}:{port}/api/x"
    subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d2s", url], capture_output=True, timeout=60)
    t0 = ticks(pids)
    out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                          "-s", os.path.join(HERE, "wrk_report.lua"), url], capture_output=True, text=True, timeout=args.duration + 60).stdout
    t1 = ticks(pids)
    r = wrk_report(out)
    if r is None:
        harness.die(f"no WRK_JSON from wrk:\n{out}")
    n = max(1, r["requests"])
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p99_ms": r["latency_us"]["p99"] / 1000,
            "errors": sum(r["errors"].values()), "cpu_us": (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / n}


def s_time(args, port, pids, mode):
    t0 = ticks(pids)
    cmd = ["openssl", "s_time", "-connect", f"{HOST}:{port}", mode, "-time", str(args.handshake_time)]
    if mode == "-reuse":
        cmd += ["-tls1_2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.handshake_time + 60).stdout
    t1 = ticks(pids)
    m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
    if not m:
        m = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if not m:
        harness.die(f"openssl s_time gave no count:\n{out}")
    conns, secs = int(m.group(1)), float(m.group(2))
    return {"per_s": conns / max(secs, 1e-9), "conns": conns,
            "cpu_us": (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, conns)}


def idle(args, port, pids):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    before = rss_kib(pids)
    socks = []
    try:
        for _ in range(args.idle_conns):
            s = ctx.wrap_socket(socket.create_connection((HOST, port), timeout=10), server_hostname="bench.test")
            s.sendall(b"GET /api/x HTTP/1.1\r\nHost: bench.test\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            while len(body) < length:
                body += s.recv(65536)
            socks.append(s)
        time.sleep(1)
        after = rss_kib(pids)
    finally:
        for s in socks:
            s.close()
    return {"conns": len(socks), "bytes_per_conn": (after - before) * 1024 / max(1, len(socks))}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringgate"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--handshake-time", type=int, default=5)
    p.add_argument("--idle-conns", type=int, default=2000)
    p.add_argument("--json")
    args = p.parse_args()
    args.bin = harness.check_bin(args.bin)
    harness.require("wrk", "openssl", "nginx", hint=" (apt-get install wrk openssl nginx-light)")
    cpus = sorted(os.sched_getaffinity(0))
    prefix = []
    if len(cpus) >= 2:
        prefix = ["taskset", "-c", str(cpus[0])]
        os.sched_setaffinity(0, cpus[1:])
    results = []
    with harness.Processes() as procs:
        stub, stub_port = harness.start_stub(procs, args.bin, "tls", 256)
        for kind in ("ecdsa", "rsa"):
            crt, key = make_cert(procs.workdir, kind)
            for r in range(args.runs):
                order = ["ringgate", "nginx"] if r % 2 == 0 else ["nginx", "ringgate"]
                for target in order:
                    if target == "ringgate":
                        proc, port, pids = start_ringgate(procs, args, stub_port, crt, key, prefix)
                    else:
                        proc, port, pids = start_nginx(procs, stub_port, crt, key, prefix)
                    try:
                        row = {"cert": kind, "target": target, "run": r}
                        if kind == "ecdsa":
                            row["keepalive"] = keepalive(args, port, pids)
                        row["full"] = s_time(args, port, pids, "-new")
                        row["resumed"] = s_time(args, port, pids, "-reuse")
                        if kind == "ecdsa" and r == 0:
                            row["idle"] = idle(args, port, pids)
                    finally:
                        procs.stop(proc)
                    results.append(row)
                    ka = row.get("keepalive")
                    print(f"{kind:<5} {target:<8} run {r}: "
                          + (f"keep-alive {ka['rps']:.0f} rps, p99 {ka['p99_ms']:.2f} ms, {ka['cpu_us']:.1f} µs/req, errors {ka['errors']}; " if ka else "")
                          + f"full {row['full']['per_s']:.0f}/s ({row['full']['cpu_us']:.0f} µs/hs); "
                          + f"resumed {row['resumed']['per_s']:.0f}/s ({row['resumed']['cpu_us']:.0f} µs/hs)"
                          + (f"; idle {row['idle']['bytes_per_conn']:.0f} B/conn over {row['idle']['conns']}" if "idle" in row else ""), flush=True)
    print()
    for kind in ("ecdsa", "rsa"):
        for target in ("ringgate", "nginx"):
            rs = [r for r in results if r["cert"] == kind and r["target"] == target]
            if not rs:
                continue
            med = lambda k, f: statistics.median(r[k][f] for r in rs if k in r)  # noqa: E731
            line = f"{kind:<5} {target:<8} medians: "
            if kind == "ecdsa":
                line += f"keep-alive {med('keepalive', 'rps'):.0f} rps, {med('keepalive', 'cpu_us'):.1f} µs/req, p99 {med('keepalive', 'p99_ms'):.2f} ms; "
            line += (f"full {med('full', 'per_s'):.0f}/s, {med('full', 'cpu_us'):.0f} µs/hs; "
                     f"resumed {med('resumed', 'per_s'):.0f}/s, {med('resumed', 'cpu_us'):.0f} µs/hs")
            print(line)
    if args.json:
        harness.write_json(args.json, args=vars(args), results=results)


if __name__ == "__main__":
    harness.run_main(main)

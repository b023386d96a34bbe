#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind: repeatable
whatever else the machine is doing, unlike CPU time. The gateway runs under
`valgrind --tool=callgrind` (epoll driver, one worker) in front of a stub; one
keep-alive client sends N1 and then, in a second run, N2 requests; the
difference of the two totals over N2 - N1 cancels start-up and shutdown.
Kernel work (most of a proxy's cost) is not counted.

  loadtest/instructions.py --bin target/release/ringgate [--access-log] [--n1 1000 --n2 3000]

Needs valgrind (apt-get install valgrind). Traffic goes to 127.0.0.1 only.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def total_instructions(binary, n, access_log, work):
    stub = subprocess.Popen([binary, "stub", "--listen", "127.0.0.1:0", "--name", "s", "--body-size", "256"],
                            stdout=subprocess.PIPE, text=True)
    try:
        stub_port = int(re.search(r":(\d+)", stub.stdout.readline()).group(1))
        port = free_port()
        log = f'[log]\naccess = "{os.path.join(work, "access.log")}"\n' if access_log else ""
        config = os.path.join(work, "gateway.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\nworkers = 1\npin_cores = false\ndriver = "epoll"\n{log}'
                    f'[[services]]\nname = "s"\nupstreams = ["127.0.0.1:{stub_port}"]\n'
                    f'[[routes]]\nname = "r"\npaths = ["/"]\nservice = "s"\n')
        out = os.path.join(work, f"callgrind.{n}")
        gw = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve",
                               "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    conn = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("the gateway did not start under valgrind within 60 s")
                    time.sleep(0.1)
            buf = b""
            for _ in range(n):
                conn.sendall(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n")
                while True:
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end >= 0:
                        m = re.search(rb"content-length: (\d+)", buf[:head_end].lower())
                        end = head_end + 4 + (int(m.group(1)) if m else 0)
                        if len(buf) >= end:
                            buf = buf[end:]
                            break
                    data = conn.recv(65536)
                    if not data:
                        sys.exit("the gateway closed the connection")
                    buf += data
            conn.close()
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(timeout=120)
        with open(out) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
        sys.exit(f"no totals in {out}")
    finally:
        stub.terminate()
        stub.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/ringgate")
    ap.add_argument("--access-log", action="store_true", help="write the access log to a file")
    ap.add_argument("--n1", type=int, default=1000)
    ap.add_argument("--n2", type=int, default=3000)
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is required (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="ringgate-instr.") as work:
        a = total_instructions(args.bin, args.n1, args.access_log, work)
        b = total_instructions(args.bin, args.n2, args.access_log, work)
    per = (b - a) / (args.n2 - args.n1)
    print(f"{args.bin} access_log={'on' if args.access_log else 'off'}: {per:.0f} instructions per request "
          f"(totals {a} for {args.n1}, {b} for {args.n2})")


if __name__ == "__main__":
    main()

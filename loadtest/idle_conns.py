#!/usr/bin/env python3
"""Open N idle HTTP/1.1 keep-alive connections to 127.0.0.1:PORT and hold them.

Each connection sends one complete GET with `Connection: keep-alive`, reads the
whole response (Content-Length or chunked), and is then left open and idle.
At most --window connections are in the connect/request phase at a time so
the listen backlog never overflows.

When every connection is either established or failed (or --timeout expired),
a JSON summary is written atomically to --ready-file; the caller then measures
the server's memory. The connections are held until SIGTERM/SIGINT or --hold
seconds, whichever comes first. On exit the summary is rewritten with
`still_open`: how many connections the server had not closed by then.

Standard library only.
"""

import argparse
import errno
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time


class Conn:
    """One client connection and its progress through connect/send/read."""

    def __init__(self, sock, request):
        self.sock = sock
        self.out = request
        self.buf = b""
        self.state = "connect"  # connect -> send -> read -> idle


def chunked_complete(body):
    """True once `body` holds a full chunked message (last chunk + trailers)."""
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return False
        size = int(body[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            rest = body[pos:]
            return rest.startswith(b"\r\n") or b"\r\n\r\n" in rest
        pos += size + 2
        if pos > len(body):
            return False


def response_state(buf):
    """Return (done, error) for the bytes received so far on a connection."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False, None
    lines = buf[:head_end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return True, "bad status line"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    body = buf[head_end + 4:]
    if "content-length" in headers:
        done = len(body) >= int(headers["content-length"])
    elif "chunked" in headers.get("transfer-encoding", ""):
        done = chunked_complete(body)
    else:
        return True, "response without length"
    if not done:
        return False, None
    if not parts[1].startswith("2"):
        return True, "status " + parts[1]
    if headers.get("connection") == "close":
        return True, "server sent Connection: close"
    return True, None


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"idle_conns: need {needed} file descriptors, hard limit is {hard} "
                 f"(raise it with `ulimit -n {needed}`)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def open_connections(args, request):
    """Establish the connections; return (idle conns, errors by reason)."""
    sel = selectors.DefaultSelector()
    idle, errors = [], {}
    started = 0
    deadline = time.monotonic() + args.timeout

    def fail(conn, reason):
        errors[reason] = errors.get(reason, 0) + 1
        sel.unregister(conn.sock)
        conn.sock.close()

    while len(idle) + sum(errors.values()) < args.count:
        while started < args.count and len(sel.get_map()) < args.window:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            rc = sock.connect_ex(("127.0.0.1", args.port))
            started += 1
            conn = Conn(sock, request)
            sel.register(sock, selectors.EVENT_WRITE, conn)
            if rc not in (0, errno.EINPROGRESS):
                fail(conn, "connect: " + os.strerror(rc))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            for key in list(sel.get_map().values()):
                fail(key.data, "timeout")
            errors["timeout"] = errors.get("timeout", 0) + args.count - started
            break
        for key, _ in sel.select(timeout=min(remaining, 0.5)):
            conn = key.data
            try:
                if conn.state == "connect":
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(conn, "connect: " + os.strerror(err))
                        continue
                    conn.state = "send"
                if conn.state == "send":
                    conn.out = conn.out[conn.sock.send(conn.out):]
                    if not conn.out:
                        conn.state = "read"
                        sel.modify(conn.sock, selectors.EVENT_READ, conn)
                    continue
                data = conn.sock.recv(65536)
                if not data:
                    fail(conn, "closed before response complete")
                    continue
                conn.buf += data
                done, error = response_state(conn.buf)
                if error:
                    fail(conn, error)
                elif done:
                    sel.unregister(conn.sock)
                    conn.state, conn.buf = "idle", b""
                    idle.append(conn)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                fail(conn, type(e).__name__)
    sel.close()
    return idle, errors


def count_still_open(conns):
    """Connections the server has not closed (no EOF/error pending)."""
    still_open = 0
    for conn in conns:
        try:
            still_open += conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    return still_open


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True, help="connections to open")
    ap.add_argument("--path", default="/")
    ap.add_argument("--header", action="append", default=[], help='"Name: value", repeatable')
    ap.add_argument("--ready-file", required=True, help="JSON summary written when ready")
    ap.add_argument("--window", type=int, default=256, help="max connections being set up at once")
    ap.add_argument("--timeout", type=float, default=60, help="seconds allowed to open all connections")
    ap.add_argument("--hold", type=float, default=120, help="max seconds to hold them open")
    args = ap.parse_args()

    raise_nofile(args.count + 64)
    extra = "".join(h + "\r\n" for h in args.header)
    request = (f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               f"Connection: keep-alive\r\n{extra}\r\n").encode()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    t0 = time.monotonic()
    idle, errors = open_connections(args, request)
    summary = {
        "requested": args.count,
        "open": len(idle),
        "failed": sum(errors.values()),
        "errors": errors,
        "setup_seconds": round(time.monotonic() - t0, 3),
    }
    write_json(args.ready_file, summary)
    print(f"idle_conns: {len(idle)}/{args.count} open, {summary['failed']} failed "
          f"{errors or ''} in {summary['setup_seconds']} s", file=sys.stderr)

    hold_until = time.monotonic() + args.hold
    while not stop and time.monotonic() < hold_until:
        time.sleep(0.1)

    summary["still_open"] = count_still_open(idle)
    write_json(args.ready_file, summary)
    for conn in idle:
        conn.sock.close()


if __name__ == "__main__":
    main()

"""Shared pieces of failover.py and drain.py (standard library only).

- Processes: starts the gateway and its stub upstreams, and stops every one of
  them (by PID) when the script ends, also on Ctrl-C or SIGTERM; on Linux the
  children are also told to die with the script (PR_SET_PDEATHSIG), so even a
  SIGKILLed script leaves nothing behind.
- start_stub / start_gateway: `BIN stub --listen 127.0.0.1:0` (the stub picks
  its own free port and prints it, so there is no race for it) and
  `BIN serve --config FILE` on a port picked free just before (retried on
  another port if something else took it in between).
- HttpConn: one HTTP/1.1 keep-alive client connection, written directly on a
  socket so that each request is known to be written or not, and the way a
  connection ends (refused, closed or reset before the response, timed out)
  is told apart exactly. http.client would hide part of that.
- OtherLoad: samples /proc while a measurement runs and tells how much CPU
  processes *not* started by this script used meanwhile (e.g. a build), so
  runs disturbed by other load can be recognised and discarded.

All traffic goes to 127.0.0.1 only.
"""

import ctypes
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"


def die(message):
    sys.exit(f"error: {message}")


# ------------------------------------------------------------ processes ----


def _die_with_parent():
    """preexec_fn: ask Linux to SIGKILL the child when this script dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # not Linux, or no prctl: the normal cleanup still runs
        pass


class Processes:
    """Every process started here, stopped on exit. Use as a context manager.

    Children get a session of their own, so a Ctrl-C in the terminal reaches
    only this script (which then stops them in order) and does not, say, start
    the gateway's own drain behind the script's back.
    """

    def __init__(self, keep_dir_on_error=True):
        self.procs = []
        self.workdir = tempfile.mkdtemp(prefix="ringgate-harness.")
        self.keep_dir_on_error = keep_dir_on_error
        self._old = {}

    def __enter__(self):
        # SIGTERM (e.g. from `timeout`) takes the same path as Ctrl-C.
        def on_term(signum, frame):
            raise KeyboardInterrupt
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, on_term)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop_all()
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        if exc_type is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.keep_dir_on_error:
            print(f"logs kept in {self.workdir}", file=sys.stderr)
        return False

    def start(self, name, argv):
        """Start argv with stdout and stderr to WORKDIR/NAME.log."""
        log_path = os.path.join(self.workdir, name + ".log")
        log = open(log_path, "wb")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        proc.name = name
        proc.log_path = log_path
        self.procs.append(proc)
        return proc

    def log_tail(self, proc, lines=15):
        try:
            with open(proc.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, proc, timeout=5.0):
        """SIGTERM, then SIGKILL after `timeout` seconds; by PID only."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        # Interrupts during cleanup are ignored: half-stopped is the worst case.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in list(self.procs):
                if proc.poll() is None:
                    try:
                        proc.send_signal(signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 5
            for proc in list(self.procs):
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.procs.clear()
        finally:
            signal.signal(signal.SIGINT, old)


# ---------------------------------------------------------------- ports ----


def process_ticks(pids):
    """utime + stime (clock ticks, all threads) summed over the processes still alive (nginx's
    cache loader, for one, exits a minute after start)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total


def rss_kib(pids):
    """Resident memory of the processes, in KiB."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def wait_listening(port, timeout=10.0):
    """Waits until something accepts connections on HOST:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    die(f"nothing listens on {HOST}:{port} after {timeout:.0f} s")


def free_port():
    """A port nothing listens on right now (something may take it before use)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def refusing_port():
    """(socket, port): a port bound but not listening, so connects to it are
    refused (RST) for as long as the socket is kept open, and no one else can
    take the port meanwhile."""
    s = socket.socket()
    s.bind((HOST, 0))
    return s, s.getsockname()[1]


def wait_port_closed(port, timeout=2.0):
    """True once connecting to port is refused."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


# -------------------------------------------------------------- servers ----


def check_bin(path):
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        die(f"{path}: no such executable (build it, or pass --bin PATH)")
    return os.path.abspath(path)


def start_stub(procs, binary, name, body_size=256, delay_ms=0, timeout=10.0, prefix=()):
    """Start `BIN stub` on a port it picks itself; return (proc, port).
    `prefix` goes in front of the command (e.g. ["taskset", "-c", "1"])."""
    argv = [binary, "stub", "--listen", f"{HOST}:0", "--name", name, "--body-size", str(body_size)]
    if delay_ms:
        argv += ["--delay-ms", str(delay_ms)]
    proc = procs.start("stub-" + name, [*prefix, *argv])
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"listening on [0-9.]+:(\d+)")
    while time.monotonic() < deadline:
        with open(proc.log_path, errors="replace") as f:
            m = pattern.search(f.read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            die(f"stub {name} exited at startup:\n{procs.log_tail(proc)}")
        time.sleep(0.02)
    die(f"stub {name} printed no port within {timeout:.0f} s:\n{procs.log_tail(proc)}")


def gateway_config(port, upstream_ports, drain=None, extra="", service=""):
    """The gateway's TOML: one shard, one service "svc" with the given
    endpoints (round robin unless `service` says otherwise) routed at /api;
    any other path gets the gateway's own 404. `drain` sets [timeouts] drain
    (e.g. "5s"); `service` goes right after the service's `upstreams` (its
    further keys and tables, e.g. balance and [services.breaker]); `extra` is
    appended (further tables such as [admin] or [log])."""
    upstreams = ", ".join(f'"{HOST}:{p}"' for p in upstream_ports)
    timeouts = f'\n[timeouts]\ndrain = "{drain}"\n' if drain else ""
    service = f"{service.rstrip()}\n" if service else ""
    return f"""[server]
listen = ["{HOST}:{port}"]
workers = 1
pin_cores = false
{timeouts}
[[services]]
name = "svc"
upstreams = [{upstreams}]
{service}
[[routes]]
name = "all"
paths = ["/api"]
service = "svc"
""" + (f"\n{extra}" if extra else "")


def start_gateway(procs, binary, upstream_ports, drain=None, attempts=3, timeout=10.0, extra="", prefix=(),
                  service=""):
    """Write a config, validate it with `BIN check`, start `BIN serve` and
    wait until it answers HTTP; return (proc, port, config_path). A port taken
    by someone else between picking and binding is retried on a new one.
    `extra` is TOML appended to the config, or a function of the port that
    returns it (called per attempt); `service` is the service's further keys
    and tables (see gateway_config); `prefix` goes in front of the command."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        config = os.path.join(procs.workdir, f"gateway-{port}.toml")
        with open(config, "w") as f:
            f.write(gateway_config(port, upstream_ports, drain, extra(port) if callable(extra) else extra, service))
        check = subprocess.run([binary, "check", "--config", config], capture_output=True, text=True)
        if check.returncode != 0:
            die(f"`{binary} check` rejected {config}:\n{check.stdout}{check.stderr}")
        proc = procs.start(f"gateway-{port}", [*prefix, binary, "serve", "--config", config])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            conn = HttpConn(port, timeout=1.0)
            try:
                # A path with no route: the gateway itself answers 404, which
                # also proves it is the gateway listening on this port.
                if conn.get("/__ready").status == 404:
                    return proc, port, config
            except (OSError, HttpError):
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        tail = procs.log_tail(proc)
        procs.stop(proc)
        if "in use" in tail and attempt < attempts:
            continue  # lost the race for the port: try another
        die(f"gateway did not answer on {HOST}:{port} within {timeout:.0f} s:\n{tail}")


# ----------------------------------------------------------- other load ----


class OtherLoad:
    """CPU used by processes that are not this script or its descendants.

    A thread reads /proc/*/stat every `interval` seconds and keeps, for every
    process it has seen (dead ones too), its last user + system time, and
    whether it descends from this script (then it is "ours") or is a kernel
    thread (kept apart: ksoftirqd and kworkers mostly do our own network
    work). `snapshot()` returns that state; `other(a, b)` the CPU seconds other
    user-space processes used between two snapshots and the top ones by name.
    A process that starts and ends between two samples is missed; builds and
    the like run long enough to be seen. Linux only; elsewhere it reports
    nothing (available is False).
    """

    PF_KTHREAD = 0x00200000

    def __init__(self, interval=0.2):
        import threading
        self.interval = interval
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.root = os.getpid()
        self.available = os.path.isdir("/proc/self")
        self.seen = {}  # (pid, starttime) -> [comm, ticks, kind]; kind: ours, kthread, other
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.available:
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return False

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self):
        procs = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read().decode("latin-1")
            except OSError:
                continue  # gone meanwhile
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
            procs[int(name)] = (comm, int(fields[1]), int(fields[6]), int(fields[11]) + int(fields[12]),
                                int(fields[19]))  # comm, ppid, flags, utime + stime, starttime
        def ours(pid, depth=0):
            while pid in procs and depth < 64:
                if pid == self.root:
                    return True
                pid, depth = procs[pid][1], depth + 1
            return False
        with self.lock:
            for pid, (comm, ppid, flags, ticks, start) in procs.items():
                key = (pid, start)
                entry = self.seen.get(key)
                if entry is None:
                    kind = "kthread" if flags & self.PF_KTHREAD else ("ours" if ours(pid) else "other")
                    self.seen[key] = [comm, ticks, kind]
                else:
                    entry[0], entry[1] = comm, ticks
                    if entry[2] == "other" and ours(pid):
                        entry[2] = "ours"

    def snapshot(self):
        """The state now (after a fresh sample)."""
        if not self.available:
            return {}
        self._sample()
        with self.lock:
            return {k: tuple(v) for k, v in self.seen.items()}

    def other(self, a, b, kind="other", top=3):
        """(CPU seconds, [(comm, seconds), ...] largest first) used by processes
        of `kind` between snapshots a and b. A process first seen after a is
        counted from its start, unless it was ours then: it may have become
        ours only later (it is counted as other while it was not)."""
        by_comm = {}
        for key, (comm, ticks, k) in b.items():
            if k != kind:
                continue
            before = a.get(key)
            if before is not None and before[2] != kind:
                continue
            used = ticks - (before[1] if before else 0)
            if used > 0:
                by_comm[comm] = by_comm.get(comm, 0) + used / self.tick
        total = sum(by_comm.values())
        return total, sorted(by_comm.items(), key=lambda kv: -kv[1])[:top]


# ----------------------------------------------------------------- HTTP ----


class HttpError(Exception):
    """A request got no (complete) response. `kind` says how."""

    def __init__(self, kind, detail=""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Response:
    __slots__ = ("status", "headers", "close")

    def __init__(self, status, headers, close):
        self.status, self.headers, self.close = status, headers, close


class HttpConn:
    """One keep-alive connection to 127.0.0.1:port, opened on first use.

    get() raises HttpError with kind
      "refused"      connect refused (nothing listening),
      "connect"      any other connect failure,
      "no-response"  the request was (at least partly) written, then the
                     connection was closed or reset before a complete response,
      "timeout"      no complete response within `timeout` seconds.
    After any HttpError the connection is closed; the next get() reconnects.
    After a response with `Connection: close` it is closed too.
    """

    def __init__(self, port, timeout=5.0):
        self.port, self.timeout = port, timeout
        self.sock = None
        self.buf = b""
        self.connects = 0

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf = b""

    def connect(self):
        try:
            self.sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
        except ConnectionRefusedError:
            raise HttpError("refused") from None
        except OSError as e:
            raise HttpError("connect", e.strerror or str(e)) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1

    def get(self, path):
        if self.sock is None:
            self.connect()
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode()
        try:
            self.sock.sendall(request)
            response = self._read_response()
        except HttpError:
            self.close()
            raise
        except socket.timeout:
            self.close()
            raise HttpError("timeout") from None
        except OSError as e:  # EPIPE, ECONNRESET, ...
            self.close()
            raise HttpError("no-response", errno.errorcode.get(e.errno, str(e))) from None
        if response.close:
            self.close()
        return response

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise HttpError("no-response", "closed")
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2:]
                return line
            self._recv()

    def _read_response(self):
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._recv()
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError("no-response", f"bad status line {lines[0]!r}")
        version, status = parts[0], int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        if status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers, up to the empty line
                        pass
                    break
                self._take(size + 2)
        elif "content-length" in headers:
            self._take(int(headers["content-length"]))
        else:  # body until the server closes
            try:
                while True:
                    self._recv()
            except HttpError:
                pass
            self.buf = b""
            close = True
        return Response(status, headers, close)


def wait_quiet(load, max_other, limit):
    """Wait until other processes used < max_other CPUs over 2 s; return the
    seconds waited (None: gave up after `limit` s)."""
    start = time.monotonic()
    while True:
        a = load.snapshot()
        time.sleep(2)
        used, top = load.other(a, load.snapshot())
        if used / 2 < max_other:
            return time.monotonic() - start
        waited = time.monotonic() - start
        if waited >= limit:
            return None
        print(f"  waiting for other load to end: {used / 2:.2f} CPUs ({', '.join(f'{c} {s:.2f}s' for c, s in top)})",
              file=sys.stderr)


def write_json(path, **parts):
    """Writes `parts` (e.g. args=vars(args), results=..., summary=...) as one JSON file."""
    import json
    with open(path, "w") as f:
        json.dump(parts, f, indent=1)
    print(f"written to {path}")


def run_main(main):
    """Runs a script's main; Ctrl-C (or SIGTERM, see Processes) exits with 130."""
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)


def require(*tools, hint=""):
    """Dies unless every tool is on PATH (or in /usr/sbin, where Debian puts nginx)."""
    for tool in tools:
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            die(f"{tool} is required{hint}")

#!/usr/bin/env python3
"""Summarise one load-test run directory written by run.sh.

usage: report.py RUN_DIR JSON_OUT

RUN_DIR holds
  params.env               run parameters (key=value)
  TARGET.wrk.out           wrk stdout, with the WRK_JSON line from wrk_report.lua
  TARGET.oha.out           oha JSON output
  TARGET.{wrk,oha}.env     cpu_ticks (used by the target during the run), rss_kib, stub_cpu_ticks, tcp_out_segs
  TARGET.idle.json         idle_conns.py summary of the first half (only with --idle-conns)
  TARGET.idle2.json        idle_conns.py summary of the second half
  TARGET.idle.env          rss_before_kib, rss_mid_kib, rss_after_kib (only with --idle-conns)
  notes.txt                what the scenario compares, one line each (optional)

Prints the results table and the ringgate/nginx ratios, and writes the same
data as JSON to JSON_OUT. Standard library only.
"""

import json
import sys
from pathlib import Path

MIB = 1024 * 1024


def read_env(path):
    """key=value lines -> dict; numbers become int/float."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        out[key] = value
    return out


def parse_wrk(text):
    """The WRK_JSON line -> requests, duration (s), errors, latencies (ms)."""
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line[len("WRK_JSON "):])
            lat = data["latency_us"]
            return {
                "requests": data["requests"],
                "seconds": data["duration_us"] / 1e6,
                "errors": sum(data["errors"].values()),
                "error_detail": {k: v for k, v in data["errors"].items() if v},
                "p50_ms": lat["p50"] / 1000,
                "p99_ms": lat["p99"] / 1000,
                "p99_9_ms": lat["p99.9"] / 1000,
            }
    return None


def parse_oha(text):
    """oha JSON -> requests, duration (s), errors, latencies (ms).

    Requests still in flight when the -z deadline hits are aborted by oha and
    reported as an error kind mentioning "deadline"; they are not failures of
    the target, so they are left out of the error count.
    """
    try:
        data = json.loads(text)
    except ValueError:
        return None
    statuses = {int(code): n for code, n in data.get("statusCodeDistribution", {}).items()}
    errors = {kind: n for kind, n in data.get("errorDistribution", {}).items()
              if "deadline" not in kind}
    non_2xx = sum(n for code, n in statuses.items() if not 200 <= code < 300)
    if non_2xx:
        errors["non-2xx"] = non_2xx
    lat = data["latencyPercentiles"]

    def ms(key):
        return lat[key] * 1000 if lat.get(key) is not None else None

    return {
        "requests": sum(statuses.values()),
        "seconds": data["summary"]["total"],
        "errors": sum(errors.values()),
        "error_detail": errors,
        "p50_ms": ms("p50"),
        "p99_ms": ms("p99"),
        "p99_9_ms": ms("p99.9"),
    }


def load_runs(run_dir, params):
    runs = []
    for target in params["targets"].split():
        for mode, parse in (("wrk", parse_wrk), ("oha", parse_oha)):
            out = run_dir / f"{target}.{mode}.out"
            env_path = run_dir / f"{target}.{mode}.env"
            if not out.exists() or not env_path.exists():
                continue
            env = read_env(env_path)
            row = {"target": target, "mode": mode}
            result = parse(out.read_text())
            if result is None:
                row["failed"] = True
                runs.append(row)
                continue
            row.update(result)
            row["rps"] = result["requests"] / result["seconds"] if result["seconds"] else None
            cpu_us = env["cpu_ticks"] / params["clk_tck"] * 1e6
            row["cpu_us_per_req"] = cpu_us / result["requests"] if result["requests"] else None
            row["rss_mib"] = env["rss_kib"] / 1024
            n = result["requests"]
            if "stub_cpu_ticks" in env and n:
                row["stub_cpu_us_per_req"] = env["stub_cpu_ticks"] / params["clk_tck"] * 1e6 / n
                row["tcp_segs_per_req"] = env["tcp_out_segs"] / n
            runs.append(row)
    return runs


def load_idle(run_dir, params):
    idle = []
    for target in params["targets"].split():
        summary_path = run_dir / f"{target}.idle.json"
        env_path = run_dir / f"{target}.idle.env"
        if not summary_path.exists() or not env_path.exists():
            continue
        first = json.loads(summary_path.read_text())
        second_path = run_dir / f"{target}.idle2.json"
        second = json.loads(second_path.read_text()) if second_path.exists() else None
        parts = [first] + ([second] if second else [])
        env = read_env(env_path)
        opened = sum(p["open"] for p in parts)
        delta = (env["rss_after_kib"] - env["rss_before_kib"]) * 1024
        errors = {}
        for p in parts:
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        still = [p.get("still_open") for p in parts]
        # The second half, opened after the first settled: the cost of one more connection,
        # without the memory the burst of opening the first half touched.
        marginal = None
        if second and second["open"] and "rss_mid_kib" in env:
            marginal = (env["rss_after_kib"] - env["rss_mid_kib"]) * 1024 / second["open"]
        idle.append({
            "target": target,
            "requested": sum(p["requested"] for p in parts),
            "open": opened,
            "failed": sum(p["failed"] for p in parts),
            "errors": errors,
            "still_open": None if None in still else sum(still),
            "rss_before_mib": env["rss_before_kib"] / 1024,
            "rss_after_mib": env["rss_after_kib"] / 1024,
            "bytes_per_conn": delta / opened if opened else None,
            "second_half_bytes_per_conn": marginal,
        })
    return idle


def ratio(a, b):
    return a / b if a is not None and b else None


def compute_ratios(params, runs, idle):
    """ringgate / nginx for the headline numbers (None when either is missing)."""
    if "nginx" not in params["targets"].split():
        return {}

    def get(target, mode, key):
        for row in runs:
            if row["target"] == target and row["mode"] == mode:
                return row.get(key)
        return None

    ratios = {}
    for label, mode, key in (("rps (wrk)", "wrk", "rps"),
                             ("cpu/req (wrk)", "wrk", "cpu_us_per_req"),
                             ("cpu/req (oha)", "oha", "cpu_us_per_req"),
                             ("p99 (wrk)", "wrk", "p99_ms"),
                             ("p99 (oha)", "oha", "p99_ms")):
        ratios[label] = ratio(get("ringgate", mode, key), get("nginx", mode, key))
    if idle:
        per_conn = {row["target"]: row["bytes_per_conn"] for row in idle}
        ratios["idle bytes/conn"] = ratio(per_conn.get("ringgate"), per_conn.get("nginx"))
        marginal = {row["target"]: row["second_half_bytes_per_conn"] for row in idle}
        ratios["idle bytes/conn, 2nd half"] = ratio(marginal.get("ringgate"), marginal.get("nginx"))
    # The L4 floor (--l4): CPU per request against a relay that parses nothing.
    if "haproxy-l4" in params["targets"].split():
        for label, mode in (("cpu/req vs L4 (wrk)", "wrk"), ("cpu/req vs L4 (oha)", "oha")):
            ratios[label] = ratio(get("ringgate", mode, "cpu_us_per_req"), get("haproxy-l4", mode, "cpu_us_per_req"))
    return ratios


def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def print_report(params, runs, idle, ratios):
    print()
    # run.sh --no-oha leaves the rate empty: there were no open-loop runs.
    open_loop = (f"open loop at {params['rate']} req/s" if params.get("rate") != ""
                 else "no open-loop runs")
    print(f"scenario {params['scenario']}: {params['duration_s']} s per run, "
          f"{params['connections']} connections, {open_loop}, "
          f"{params['body_size']} B bodies, {params['cpus']} CPUs")
    for note in params.get("notes", []):
        print(f"  {note}")
    header = ("target", "mode", "rps", "p50 ms", "p99 ms", "p99.9 ms",
              "errors", "cpu µs/req", "RSS MiB", "stub µs/req", "segs/req")
    widths = (9, 4, 10, 8, 8, 9, 7, 11, 8, 12, 9)
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                     for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for row in runs:
        if row.get("failed"):
            cells = [row["target"], row["mode"], "run failed (no parsable output)"]
            print("  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]), cells[2]]))
            continue
        cells = (row["target"], row["mode"], fmt(row["rps"], ".0f"),
                 fmt(row["p50_ms"], ".3f"), fmt(row["p99_ms"], ".3f"), fmt(row["p99_9_ms"], ".3f"),
                 str(row["errors"]), fmt(row["cpu_us_per_req"], ".2f"), fmt(row["rss_mib"], ".1f"),
                 fmt(row.get("stub_cpu_us_per_req"), ".2f"), fmt(row.get("tcp_segs_per_req"), ".2f"))
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths))))
    for row in runs:
        if row.get("error_detail"):
            print(f"  errors {row['target']}/{row['mode']}: {row['error_detail']}")
        if row["mode"] == "oha" and row.get("rps") and row["rps"] < 0.95 * params["rate"]:
            print(f"  {row['target']}/oha fell behind: {row['rps']:.0f} of {params['rate']} req/s "
                  f"completed, latencies include the backlog")

    if idle:
        print()
        window = params.get("idle_window", "256")
        print(f"idle keep-alive connections ({params['idle_conns']} requested, opened {window} at a time, in two halves)")
        header = ("target", "open", "failed", "RSS before MiB", "RSS after MiB",
                  "bytes/conn", "2nd half", "still open")
        widths = (9, 7, 7, 15, 14, 11, 9, 11)
        line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                         for i, (h, w) in enumerate(zip(header, widths)))
        print(line)
        print("-" * len(line))
        for row in idle:
            cells = (row["target"], str(row["open"]), str(row["failed"]),
                     fmt(row["rss_before_mib"], ".1f"), fmt(row["rss_after_mib"], ".1f"),
                     fmt(row["bytes_per_conn"], ".0f"), fmt(row["second_half_bytes_per_conn"], ".0f"),
                     fmt(row["still_open"], "d"))
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(cells, widths))))
            if row["errors"]:
                print(f"  errors {row['target']}: {row['errors']}")

    print()
    if not ratios:
        print("no nginx run, so no ratios ringgate/nginx")
        return
    print("ratios ringgate/nginx (rps: higher is better; the rest: lower is better)")
    for label, value in ratios.items():
        print(f"  {label:<16} {fmt(value, '.3f')}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    run_dir, json_out = Path(sys.argv[1]), Path(sys.argv[2])
    params = read_env(run_dir / "params.env")
    notes = run_dir / "notes.txt"
    if notes.exists():
        params["notes"] = notes.read_text().splitlines()
    runs = load_runs(run_dir, params)
    idle = load_idle(run_dir, params)
    ratios = compute_ratios(params, runs, idle)
    print_report(params, runs, idle, ratios)
    json_out.write_text(json.dumps(
        {"params": params, "runs": runs, "idle": idle, "ratios": ratios}, indent=2) + "\n")
    print(f"\nwritten to {json_out}")


if __name__ == "__main__":
    main()

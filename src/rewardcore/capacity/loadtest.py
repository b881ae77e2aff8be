"""Run the Double-Eleven load test end to end and write a capacity report.

    rewardcore loadtest [--duration 300] [--peak-users 40] [--out loadtest-report]
    python -m rewardcore.capacity.loadtest ...      (the same)

Starts a throwaway redis-server (rewardcore.redis_servers) and `rewardcore serve` (HTTP on a
free loopback port, consuming the Redis stream too), runs Locust headless with the
locustfile beside this module and its DoubleElevenShape, waits for the stream to drain, stops
the daemon with SIGTERM and reads back:
  - Locust's CSV stats (OUT/locust_stats.csv, _stats_history.csv, _failures.csv);
  - the exact per-second latencies the locustfile records (OUT/timeline.*.json);
  - the CPU seconds the daemon and redis-server used (from /proc), so a rate can be put
    per core of the daemon.
The report (OUT/report.json and OUT/report.md; `--report-only` writes it again from a
finished run's files, e.g. with other targets) gives the highest orders/s held for
--hold seconds with every request kind's p99 under its target and errors under
--max-error, where it broke (the first second that was not), the error rate, and whether
the load generator itself ran out of CPU (then the figures are Locust's limit, not the
daemon's). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from .commands import add_loadtest_arguments

LOCUSTFILE = Path(__file__).with_name("locustfile.py")  # shipped beside this module
_ORDERS_IN_NAME = re.compile(r"\[(\d+) orders?\]")
_CLK = os.sysconf("SC_CLK_TCK")


# -- processes ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK


def start_daemon(args: argparse.Namespace, out: Path, backend: str, stream_url: str | None,
                 token: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`rewardcore serve` on a free loopback port; returns (process, port, its log)."""
    log = out / "daemon.log"
    cmd = [sys.executable, "-m", "rewardcore", "serve", "--campaign", str(args.campaign),
           "--backend", backend, "--http", "127.0.0.1:0",
           "--dead-letters", str(out / "dead-letters.jsonl")]
    if stream_url:
        cmd += ["--source", stream_url]
    env = dict(os.environ, REWARDCORE_TOKEN=token)
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "port" in rec:
                port = int(rec["port"])
                _wait_healthy(port)
                return proc, port, log
        if proc.poll() is not None:
            raise SystemExit(f"loadtest: the daemon exited ({proc.returncode}) before it "
                             f"started:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"loadtest: the daemon did not report its port within 60 s; see {log}")


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"loadtest: the daemon on port {port} is not healthy") from None
        time.sleep(0.1)


def stop_daemon(proc: subprocess.Popen[bytes], grace: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def run_locust(args: argparse.Namespace, out: Path, port: int, token: str,
               redis_url: str) -> tuple[int, str]:
    env = dict(os.environ,
               RC_CAMPAIGN=str(args.campaign), RC_TOKEN=token,
               RC_DURATION=str(args.duration), RC_PEAK_USERS=str(args.peak_users),
               RC_ORDER_RATE=str(args.order_rate), RC_BATCH_RATE=str(args.batch_rate),
               RC_BATCH_SIZE=str(args.batch_size), RC_STREAM_URL=redis_url,
               RC_STREAM=args.stream, RC_STREAM_RATE=str(args.stream_rate),
               RC_STREAM_BATCH=str(args.stream_batch), RC_TIMELINE=str(out / "timeline"))
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "--host", f"http://127.0.0.1:{port}", "--csv", str(out / "locust"),
           "--csv-full-history", "--only-summary", "--stop-timeout", "5",
           "--run-time", f"{int(args.duration) + 10}s", "--exit-code-on-error", "0",
           *args.users]
    if args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    print("loadtest: " + " ".join(cmd[2:]), file=sys.stderr)
    from ..console import progress

    log_path = out / "locust.log"
    limit = args.duration + 120
    with open(log_path, "w") as log, progress(int(args.duration) + 10, desc="loadtest",
                                                unit="s", scale=False,
                                                quiet=getattr(args, "quiet", False)) as bar:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        start, shown = time.monotonic(), 0
        while True:
            try:
                proc.wait(1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed > limit:
                    proc.kill()
                    proc.wait()
                    raise
                bar.update(int(elapsed) - shown)  # a bar over the night's seconds
                shown = int(elapsed)
    text = log_path.read_text()
    return proc.returncode, text


def drain_stream(redis_url: str, stream: str, group: str, timeout: float) -> dict[str, Any]:
    """Wait until the daemon's group has read and acknowledged every entry."""
    import redis

    client = redis.Redis.from_url(redis_url)
    start = time.monotonic()
    info: dict[str, Any] = {}
    try:
        if not client.exists(stream):
            return {"entries": 0, "decisions": 0, "drain_s": 0.0, "drained": True}
        while True:
            groups = {g["name"].decode(): g for g in client.xinfo_groups(stream)}
            g = groups.get(group, {})
            lag, pending = g.get("lag"), g.get("pending", 0)
            drained = lag == 0 and pending == 0
            if drained or time.monotonic() - start > timeout:
                break
            time.sleep(0.2)
        info = {"entries": client.xlen(stream), "decisions": client.xlen(f"{stream}:decisions"),
                "dead": client.xlen(f"{stream}:dead") if client.exists(f"{stream}:dead") else 0,
                "lag": lag, "pending": pending, "drained": drained,
                "drain_s": round(time.monotonic() - start, 2)}
    finally:
        client.close()
    return info


# -- analysis -------------------------------------------------------------------------------

def orders_of(name: str) -> int:
    got = _ORDERS_IN_NAME.search(name)
    return int(got.group(1)) if got else 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))]


def load_timeline(out: Path) -> dict[int, dict[str, dict[str, Any]]]:
    """second -> request name -> {"ms": [...], "failures": n}, merged over processes."""
    merged: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for f in sorted(out.glob("timeline.*.json")):
        for row in json.loads(f.read_bytes()):
            cell = merged[row["second"]].setdefault(row["name"], {"ms": [], "failures": 0})
            cell["ms"].extend(row["ms"])
            cell["failures"] += row["failures"]
    return dict(merged)


def load_users(out: Path) -> dict[int, int]:
    """second -> users running, from Locust's history CSV."""
    import csv

    users: dict[int, int] = {}
    path = out / "locust_stats_history.csv"
    if path.exists():
        with path.open() as fh:
            for row in csv.DictReader(fh):
                if row.get("Name") == "Aggregated":
                    users[int(row["Timestamp"])] = int(row["User Count"])
    return users


def load_stats(out: Path) -> list[dict[str, Any]]:
    import csv

    path = out / "locust_stats.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        return [{"name": r["Name"], "type": r["Type"], "requests": int(r["Request Count"]),
                 "failures": int(r["Failure Count"]), "p50_ms": _num(r["50%"]),
                 "p99_ms": _num(r["99%"]), "max_ms": _num(r["Max Response Time"]),
                 "rps": _num(r["Requests/s"])}
                for r in csv.DictReader(fh)]


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def seconds_table(timeline: dict[int, dict[str, dict[str, Any]]], users: dict[int, int],
                  targets: dict[str, float]) -> list[dict[str, Any]]:
    """One row per second: orders/s answered, p99 per request kind, errors, users, and
    whether that second met the targets."""
    if not timeline:
        return []
    first, last = min(timeline), max(timeline)
    rows = []
    known_users = 0
    for s in range(first, last + 1):
        cells = timeline.get(s, {})
        known_users = users.get(s, known_users)
        ok = sum(len(c["ms"]) for c in cells.values())
        failed = sum(c["failures"] for c in cells.values())
        orders = sum(len(c["ms"]) * orders_of(n) for n, c in cells.items())
        p99 = {n: percentile(c["ms"], 0.99) for n, c in cells.items() if c["ms"]}
        over = [n for n, v in p99.items() if v > target_for(n, targets)]
        rows.append({"t": s - first, "users": known_users, "orders_per_s": orders,
                     "requests": ok, "failures": failed, "p99_ms": p99, "over_target": over})
    return rows


def target_for(name: str, targets: dict[str, float]) -> float:
    return targets["batch"] if orders_of(name) > 1 else targets["single"]


def analyse(rows: list[dict[str, Any]], hold: int, max_error: float,
            break_after: int = 3) -> dict[str, Any]:
    """The best `hold`-second window with every second within the targets; where it broke:
    the start of the first `break_after` seconds in a row that were not (one bad second on
    a shared machine is a hiccup, not a limit); and the first bad second. The first and
    last seconds are partial and left out."""
    def good(r: dict[str, Any]) -> bool:
        total = r["requests"] + r["failures"]
        return not r["over_target"] and (not total or r["failures"] / total <= max_error)

    body = rows[1:-1] if len(rows) > 2 else rows  # the edges are partial seconds
    held = 0.0
    held_at: int | None = None
    for i in range(0, max(0, len(body) - hold + 1)):
        window = body[i:i + hold]
        if all(good(r) for r in window):
            rate = sum(r["orders_per_s"] for r in window) / hold
            if rate > held:
                held, held_at = rate, window[0]["t"]
    bad = [not good(r) for r in body]
    first_miss = next((r for r, b in zip(body, bad, strict=True) if b), None)
    broke = next((body[i] for i in range(len(body) - break_after + 1)
                  if all(bad[i:i + break_after])), None)
    peak = max(body, key=lambda r: r["orders_per_s"]) if body else None

    def describe(r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        total = r["requests"] + r["failures"]
        why = []
        if r["over_target"]:
            why.append("p99 over target: " + ", ".join(
                f"{n} {r['p99_ms'][n]:.0f} ms" for n in r["over_target"]))
        if total and r["failures"] / total > max_error:
            why.append(f"errors {r['failures']}/{total}")
        return {"t": r["t"], "users": r["users"], "orders_per_s": r["orders_per_s"],
                "why": "; ".join(why)}
    return {
        "held_orders_per_s": round(held, 1), "held_from_t": held_at, "hold_s": hold,
        "peak_second_orders_per_s": peak["orders_per_s"] if peak else 0,
        "seconds_over_target": sum(bad), "seconds": len(body), "break_after_s": break_after,
        "broke": describe(broke), "first_miss": describe(first_miss),
    }


def write_markdown(report: dict[str, Any], path: Path) -> None:
    a, s = report["analysis"], report["settings"]
    lines = [
        "# rewardcore load test: capacity report", "",
        f"Command: `{report['command']}`  ",
        f"Code: {report.get('source') or 'not a git checkout'}  ",
        f"Machine: {report['machine']['cpus']} CPUs, load average before "
        f"{report['machine']['load_before']}, after {report['machine']['load_after']}  ",
        f"Daemon: `{report['daemon']['backend']}`, exit {report['daemon']['exit']}; "
        f"Locust users {', '.join(s['users'])}, {s['processes']} process(es)", "",
        "## Result", "",
        f"- highest rate held for {a['hold_s']} s with p99 <= {s['p99_ms']:.0f} ms (single) / "
        f"{s['batch_p99_ms']:.0f} ms (batches) and errors <= {s['max_error']:.1%}: "
        f"**{a['held_orders_per_s']:,.0f} orders/s**",
        f"- busiest second: {a['peak_second_orders_per_s']:,} orders answered",
    ]
    if a["broke"]:
        b = a["broke"]
        lines.append(f"- broke at t = {b['t']} s, the first of {a['break_after_s']} seconds in "
                     f"a row over target ({b['users']} users, {b['orders_per_s']:,} orders/s "
                     f"that second): {b['why']}")
    else:
        lines.append(f"- did not break at this load (never {a['break_after_s']} seconds in a "
                     "row over target): raise --peak-users to find the limit")
    if a["first_miss"]:
        f = a["first_miss"]
        lines.append(f"- seconds over target: {a['seconds_over_target']} of {a['seconds']}; "
                     f"the first at t = {f['t']} s ({f['users']} users): {f['why']}")
    lines += [f"- requests {report['totals']['requests']:,}, failed "
              f"{report['totals']['failures']:,} (error rate {report['totals']['error_rate']:.3%})",
              f"- daemon CPU: {report['daemon']['cpu_s']:.1f} s over {report['locust_s']:.1f} s "
              f"({report['daemon']['cores']:.2f} cores); "
              f"{report['daemon']['orders_per_cpu_s']:,.0f} orders per daemon CPU-second; "
              f"redis-server {report['redis']['cpu_s']:.1f} CPU s; Locust "
              f"{report['locust_cpu_s']:.1f} CPU s"]
    if report["stream"]:
        st = report["stream"]
        lines.append(f"- stream: {st['entries']:,} entries, {st['decisions']:,} decisions, "
                     f"drained {st['drained']} in {st['drain_s']} s after the load stopped")
    if report["generator_saturated"]:
        lines.append("- **the load generator ran out of CPU** (Locust warned): the figures "
                     "are partly Locust's limit, not only the daemon's")
    lines += ["", "## Per request kind (Locust's stats)", "",
              "| name | requests | failures | p50 ms | p99 ms | max ms |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["locust_stats"]:
        lines.append(f"| {r['name']} | {r['requests']:,} | {r['failures']:,} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} |")
    lines += ["", "## Timeline (per second)", "",
              "| t s | users | orders/s | requests | failures | p99 ms by kind |",
              "| ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in report["seconds"]:
        p99 = ", ".join(f"{n.split('[')[-1].rstrip(']')}: {v:.0f}"
                        for n, v in sorted(r["p99_ms"].items()))
        mark = " **over**" if r["over_target"] else ""
        lines.append(f"| {r['t']} | {r['users']} | {r['orders_per_s']:,} | {r['requests']:,} "
                     f"| {r['failures']} | {p99}{mark} |")
    path.write_text("\n".join(lines) + "\n")


# -- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_loadtest_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from ..redis_servers import RedisServer
    from . import source_version

    if args.duration <= 0 or args.peak_users < 1:
        raise SystemExit("loadtest: --duration and --peak-users must be positive")
    cpus = os.cpu_count() or 1
    if not args.processes:
        args.processes = 1 if cpus <= 4 else min(4, cpus - 3)
    out: Path = args.out
    if args.report_only:
        if not (out / "run.json").exists():
            raise SystemExit(f"loadtest: --report-only: {out / 'run.json'} is missing; "
                             "run the load test into --out first")
        return report(args, out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("timeline.*.json"):
        old.unlink()
    token = os.urandom(12).hex()
    load_before = [round(x, 2) for x in os.getloadavg()]

    server = RedisServer().start()
    daemon = None
    try:
        backend = server.url if args.backend == "redis" else args.backend
        stream_url = None
        if "StreamUser" in args.users:
            stream_url = (f"redis-stream://127.0.0.1:{server.port}/{args.stream}"
                          f"?group=rewardcore&batch=1000&block=200")
        daemon, port, log = start_daemon(args, out, backend, stream_url, token)
        cpu0, rcpu0 = cpu_seconds(daemon.pid), cpu_seconds(server.proc.pid)  # type: ignore[union-attr]
        t0, c0 = time.monotonic(), os.times()
        code, text = run_locust(args, out, port, token, server.url)
        locust_s = time.monotonic() - t0
        c1 = os.times()  # Locust's CPU: the children waited for since c0
        gen_cpu = (c1.children_user - c0.children_user) + (c1.children_system
                                                            - c0.children_system)
        stream = drain_stream(server.url, args.stream, "rewardcore", 60) if stream_url else {}
        cpu = cpu_seconds(daemon.pid) - cpu0
        rcpu = cpu_seconds(server.proc.pid) - rcpu0  # type: ignore[union-attr]
        exit_code = stop_daemon(daemon)
        daemon = None
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        server.close()

    if code != 0:
        raise SystemExit(f"loadtest: locust exited {code}:\n{text[-3000:]}")
    measured = {
        "command": " ".join(["rewardcore", *sys.argv[1:]]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "func"},
        "machine": {"cpus": cpus, "load_before": load_before,
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "source": source_version(),
        "daemon": {"backend": args.backend, "exit": exit_code, "cpu_s": round(cpu, 2)},
        "redis": {"cpu_s": round(rcpu, 2)},
        "locust_cpu_s": round(gen_cpu, 2),
        "locust_s": round(locust_s, 2),
        "generator_saturated": "CPU usage above" in text or "CPU usage was too high" in text,
        "stream": stream,
    }
    (out / "run.json").write_text(json.dumps(measured, indent=2) + "\n")
    return report(args, out)


def report(args: argparse.Namespace, out: Path) -> int:
    """Write OUT/report.json and OUT/report.md from a finished run's files, with the
    targets of `args` (so --report-only can judge a run again against other targets)."""
    measured = json.loads((out / "run.json").read_text())
    hold = args.hold or max(2, int(measured["settings"]["duration"] / 10))
    targets = {"single": args.p99_ms, "batch": args.batch_p99_ms}
    timeline = load_timeline(out)
    rows = seconds_table(timeline, load_users(out), targets)
    stats = load_stats(out)
    agg = next((r for r in stats if r["name"] == "Aggregated"), None)
    requests = agg["requests"] if agg else 0
    failures = agg["failures"] if agg else 0
    orders_done = sum(len(c["ms"]) * orders_of(n) for cells in timeline.values()
                      for n, c in cells.items())
    cpu, wall = measured["daemon"]["cpu_s"], measured["locust_s"]
    result = measured | {
        "settings": measured["settings"] | {
            "hold": hold, "p99_ms": args.p99_ms, "batch_p99_ms": args.batch_p99_ms,
            "max_error": args.max_error, "break_after": args.break_after},
        "daemon": measured["daemon"] | {
            "cores": round(cpu / wall, 2) if wall else 0.0,
            "orders_per_cpu_s": round(orders_done / cpu, 1) if cpu else 0.0},
        "orders_answered": orders_done,
        "totals": {"requests": requests, "failures": failures,
                   "error_rate": failures / requests if requests else 0.0},
        "analysis": analyse(rows, hold, args.max_error, args.break_after),
        "locust_stats": stats,
        "seconds": rows,
    }
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out / "report.md")
    a = result["analysis"]
    broke = (f"broke at t={a['broke']['t']} s: {a['broke']['why']}" if a["broke"]
             else "did not break")
    print(f"loadtest: held {a['held_orders_per_s']:,.0f} orders/s for {hold} s; {broke}; "
          f"requests {requests:,}, failed {failures:,}; report {out / 'report.md'}")
    return 0 if measured["daemon"]["exit"] == 0 and requests else 1


if __name__ == "__main__":
    raise SystemExit(main())

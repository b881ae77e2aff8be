"""Benchmark the ingest daemon over real HTTP (not collected by pytest).

Starts `rewardcore serve` (memory:// unless --backend says otherwise) on a free port, then:
  1. single-order POST /v1/events: N keep-alive connections, each sending one order per
     request and waiting for the answer; reports requests/s and latency percentiles;
  2. 1,000-order batches (JSON lines): reports orders/s and the batch latency.
The client is asyncio on uvloop writing raw HTTP/1.1, so that it costs the shared CPU as
little as possible; requests are built before the clock starts.

    python bench/bench_daemon.py                         # defaults below
    python bench/bench_daemon.py --connections 32 --seconds 10 --batch-connections 2
    python bench/bench_daemon.py --backend redis          # a throwaway redis-server
    python bench/bench_daemon.py --daemon-arg=--max-batch=1   # no merging, to compare

Besides rates and latencies, each phase reports the daemon's own CPU time per request: on a
shared machine that figure stays comparable when the wall-clock rates do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rewardcore import load_campaign  # noqa: E402
from rewardcore.examples import example_path  # noqa: E402
from rewardcore.redis_servers import RedisServer  # noqa: E402

TOKEN = "bench-token"


def start_daemon(campaign: str, backend: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, REWARDCORE_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewardcore", "serve", "--campaign", campaign, "--backend",
         backend, "--http", "127.0.0.1:0", "--dead-letters", os.devnull, *extra],
        stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    try:
        start = json.loads(line)
    except ValueError:
        proc.kill()
        raise SystemExit(f"the daemon did not start: {line!r}") from None
    return proc, int(start["port"])


def orders_jsonl(campaign_path: str, n: int, seed: int, prefix: str) -> list[bytes]:
    """n placed events, one JSON line each, spread over the campaign's regions (Zipf)."""
    c = load_campaign(campaign_path)
    rng = random.Random(seed)
    codes = [int(x) for x in c.region_codes]
    weights = [1.0 / (i + 1) ** 1.1 for i in range(len(codes))]
    regions = rng.choices(codes, weights, k=n)
    span = c.ends_ms - c.starts_ms
    return [
        (f'{{"type":"placed","order_id":"{prefix}{i}","merchant_id":"m{i % 5000}",'
         f'"agent_id":"a{i % 25000}","region":{regions[i]},"paid_cents":{5000 + i % 997},'
         f'"ts":{c.starts_ms + rng.randrange(span)}}}\n').encode()
        for i in range(n)
    ]


def request(port: int, body: bytes) -> bytes:
    return (f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/x-ndjson\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _client(port: int, reqs: list[bytes], deadline: float, lat: list[float],
                  status: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for req in reqs:
            if time.perf_counter() >= deadline:
                break
            t = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            code = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t)
            status[code] = status.get(code, 0) + 1
    finally:
        writer.close()


async def run_load(port: int, per_conn: list[list[bytes]], seconds: float,
                   ) -> tuple[float, np.ndarray, dict[int, int]]:
    lat: list[float] = []
    status: dict[int, int] = {}
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, reqs, start + seconds, lat, status)
                           for reqs in per_conn))
    return time.perf_counter() - start, np.array(lat), status


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(pid: int, port: int, per_conn: list[list[bytes]], seconds: float,
          ) -> tuple[float, np.ndarray, dict[int, int], float]:
    cpu0 = cpu_seconds(pid)
    elapsed, lat, status = uvloop.run(run_load(port, per_conn, seconds))
    return elapsed, lat, status, cpu_seconds(pid) - cpu0


def report(name: str, elapsed: float, lat: np.ndarray, status: dict[int, int], cpu: float,
           per_request: int) -> dict[str, Any]:
    n = len(lat)
    out = {
        "requests": n, "seconds": round(elapsed, 3),
        "requests_per_s": round(n / elapsed, 1),
        "orders_per_s": round(n * per_request / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 3),
        "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 3),
        "max_ms": round(float(lat.max()) * 1000, 3),
        # the daemon's own CPU per request: comparable even when the machine is busy
        "daemon_cpu_us_per_request": round(cpu / max(n, 1) * 1e6, 1),
        "daemon_cpu_share": round(cpu / elapsed, 2),
        "status": {str(k): v for k, v in sorted(status.items())},
    }
    print(f"{name}: {json.dumps(out)}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", default=str(example_path("d11-2026")))
    ap.add_argument("--backend", default="memory://",
                    help="engine URL, or 'redis' for a throwaway local redis-server")
    ap.add_argument("--phases", default="single,seq,batch",
                    help="which phases to run (default single,seq,batch)")
    ap.add_argument("--connections", type=int, default=16, help="single-order clients")
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--batch-connections", type=int, default=2)
    ap.add_argument("--daemon-arg", action="append", default=[],
                    help="extra argument for rewardcore serve (repeatable)")
    args = ap.parse_args()

    server = None
    backend = args.backend
    if backend == "redis":
        server = RedisServer().start()
        backend = server.url
    phases = set(args.phases.split(","))
    print(f"load average before: {os.getloadavg()}", flush=True)
    proc, port = start_daemon(args.campaign, backend, args.daemon_arg)
    results = {}
    try:
        print(f"daemon pid {proc.pid} on port {port}, backend {backend}, "
              f"args {args.daemon_arg}", flush=True)
        # single orders: more than the phase can send, so no connection runs dry
        n1 = args.connections * 6000
        lines = orders_jsonl(args.campaign, n1, 1, "s")
        reqs = [request(port, b) for b in lines]
        per_conn = [reqs[i::args.connections] for i in range(args.connections)]
        warm = [[r] for r in orders_and_requests_warmup(port)]
        uvloop.run(run_load(port, warm, 2.0))
        if "single" in phases:
            results["single"] = report(f"single-order x{args.connections} connections",
                                       *phase(proc.pid, port, per_conn, args.seconds), 1)
        if "seq" in phases:
            results["seq"] = report(
                "single-order x1 connection (latency)",
                *phase(proc.pid, port, [reqs[n1 // 2:]], min(args.seconds, 4.0)), 1)
        if "batch" in phases:
            b = args.batch_size
            nb = args.batch_connections * 1500
            blines = orders_jsonl(args.campaign, nb * b, 2, "b")
            breqs = [request(port, b"".join(blines[i * b:(i + 1) * b])) for i in range(nb)]
            per_conn = [breqs[i::args.batch_connections]
                        for i in range(args.batch_connections)]
            results["batch"] = report(f"{b}-order batches x{args.batch_connections} connections",
                                      *phase(proc.pid, port, per_conn, args.seconds), b)
        print(json.dumps(results), flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        tail = proc.stderr.read().decode().strip().splitlines() if proc.stderr else []
        print(f"daemon exit {rc}: {tail[-1] if tail else ''}", flush=True)
        print(f"load average after: {os.getloadavg()}", flush=True)
        if server is not None:
            server.close()
    return 0


def orders_and_requests_warmup(port: int) -> list[bytes]:
    body = (b'{"type":"placed","order_id":"warm","merchant_id":"m","agent_id":"a",'
            b'"region":-1,"paid_cents":1,"ts":0}\n')
    return [request(port, body)] * 200


if __name__ == "__main__":
    raise SystemExit(main())

"""The `bench` and `loadtest` commands' arguments; each tool is imported only when its command
runs (the parser is built on every `rewardcore` call, and these tools pull in Locust, the
Redis helpers and numpy-heavy code)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..codec import DEFAULT_BATCH
from ..examples import example_path

GROUPS = ("decode", "reference", "memory", "durable", "shm", "redis", "cluster", "aio")
USERS = ("OrderUser", "BatchUser", "StreamUser")


def register(sub: Any) -> None:
    """Add `bench` and `loadtest` (listed in rewardcore.cli._COMMAND_MODULES)."""
    p = sub.add_parser("bench", help="measure throughput against the budgets in docs/design.md")
    add_bench_arguments(p)
    p.set_defaults(func=_run_bench)
    p = sub.add_parser("loadtest", help="Double-Eleven Locust load test of the daemon, with a "
                                        "capacity report")
    add_loadtest_arguments(p)
    p.set_defaults(func=_run_loadtest)


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import run

    return run(args)


def _run_loadtest(args: argparse.Namespace) -> int:
    from .loadtest import run

    return run(args)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def _groups(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in GROUPS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown group {bad[0] if bad else ''!r}; expected some of "
            f"{','.join(GROUPS)}")
    return names


def add_bench_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--campaign", default=str(example_path("d11-2026")),
                    help="campaign TOML file the stream is generated for")
    ap.add_argument("--only", type=_groups, default=list(GROUPS), metavar="GROUPS",
                    help=f"comma-separated row groups (default all): {','.join(GROUPS)}")
    ap.add_argument("--orders", type=int, default=400_000,
                    help="orders in the generated stream (default 400,000)")
    ap.add_argument("--batch", type=int, default=4096,
                    help="events per batch for every row (the memory engine's replay default is "
                         f"{DEFAULT_BATCH}: pass --batch {DEFAULT_BATCH} to measure that)")
    ap.add_argument("--batch-sizes", type=_int_list, default=[64, 512, 16384],
                    metavar="N,N", help="more claim-step batch sizes (default 64,512,16384)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best of each row is kept")
    ap.add_argument("--memory-orders", type=int, default=10_000_000,
                    help="orders for the bytes-per-order row (0 to skip)")
    ap.add_argument("--redis-orders", type=int, default=50_000,
                    help="claims per Redis row, the first new in-region orders of the stream")
    ap.add_argument("--redis-benchmark-requests", type=int, default=2_000_000,
                    help="requests of the redis-benchmark run the Redis rows are compared with")
    ap.add_argument("--masters", type=int, default=3, help="Redis Cluster masters (default 3)")
    ap.add_argument("--durable-dir", default=None,
                    help="where the durable rows write their logs (default: the temp dir)")
    ap.add_argument("--shm-workers", type=_int_list, default=[1, 2], metavar="N,N",
                    help="worker processes of the shared-memory rows")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--no-fail", action="store_true",
                    help="exit 0 even when a budget is MISSED (for smoke runs)")


def add_loadtest_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--campaign", type=Path, default=example_path("d11-2026"),
                    help="campaign TOML file the daemon serves")
    ap.add_argument("--backend", default="memory://",
                    help="daemon engine: memory:// (default), or 'redis' for the started "
                         "redis-server (redis://127.0.0.1:PORT/0)")
    ap.add_argument("--duration", type=float, default=300, help="seconds of the night")
    ap.add_argument("--peak-users", type=int, default=40,
                    help="Locust users at the midnight peak")
    ap.add_argument("--users", nargs="+", default=list(USERS), choices=USERS,
                    help="Locust user classes (default all three)")
    ap.add_argument("--order-rate", type=float, default=20, help="requests/s per OrderUser")
    ap.add_argument("--batch-rate", type=float, default=1, help="requests/s per BatchUser")
    ap.add_argument("--batch-size", type=int, default=1000, help="orders per BatchUser request")
    ap.add_argument("--stream-rate", type=float, default=5, help="XADD requests/s per StreamUser")
    ap.add_argument("--stream-batch", type=int, default=100,
                    help="orders per StreamUser XADD pipeline")
    ap.add_argument("--stream", default="orders", help="Redis stream the daemon consumes")
    ap.add_argument("--p99-ms", type=float, default=100, help="p99 target of single orders")
    ap.add_argument("--batch-p99-ms", type=float, default=1000,
                    help="p99 target of batch requests (HTTP batches and stream XADDs)")
    ap.add_argument("--max-error", type=float, default=0.001, help="error rate allowed")
    ap.add_argument("--hold", type=int, default=0,
                    help="seconds a rate must hold (default: a tenth of --duration, >= 2)")
    ap.add_argument("--break-after", type=int, default=3,
                    help="seconds in a row over target that count as broken (default 3)")
    ap.add_argument("--processes", type=int, default=0,
                    help="Locust processes (default: 1 on <= 4 CPUs, else CPUs - 3, max 4)")
    ap.add_argument("--out", type=Path, default=Path("loadtest-report"),
                    help="directory of the run's files and report")
    ap.add_argument("--quiet", "-q", action="store_true",
                    help="no progress bar (there is none anyway when stderr is not a terminal)")
    ap.add_argument("--report-only", action="store_true",
                    help="judge the run already in --out again (targets, --hold) and rewrite "
                         "its report, without running anything")

"""Throughput harness: every rate on the same generated events, in one run, as ratios.

    rewardcore bench [--orders N] [--json FILE]
    python bench/throughput.py ...      (the same)

Rows are measured alternately and repeated (--repeat), the best of each kept, so a
noisy neighbour on a shared machine hurts every row alike. Each row carries its ratio to
the budget of DESIGN.md it answers to; a missed budget is printed as MISSED, never hidden.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson

from . import load_campaign, open_engine
from .codec import read_jsonl
from .traffic import TrafficShape, generate

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_CAMPAIGN = ROOT / "examples" / "d11-2026.toml"


class Row(msgspec.Struct):
    name: str
    events: int
    seconds: float
    budget: str = ""
    ratio: float | None = None  # measured / what the budget compares against
    goal: float | None = None  # the ratio the budget asks for
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def verdict(self) -> str:
        if self.ratio is None or self.goal is None:
            return ""
        return "ok" if self.ratio >= self.goal else "MISSED"


def best_of(repeat: int, fn: Callable[[], int]) -> tuple[int, float]:
    best = float("inf")
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t)
    return n, best


def decode_only(data: bytes, batch: int) -> int:
    n = 0
    for events, _ in read_jsonl(io.BytesIO(data), batch):
        n += len(events)
    return n


def replay_in_memory(campaign, url: str, data: bytes, batch: int) -> int:
    engine = open_engine(campaign, url)
    n = 0
    for events, _ in read_jsonl(io.BytesIO(data), batch):
        engine.apply(events)
        n += len(events)
    engine.close()
    return n


def claim_step(campaign, url: str, batches: list) -> Callable[[], int]:
    def run() -> int:
        engine = open_engine(campaign, url)
        for b in batches:
            engine.apply(b)
        engine.close()
        return sum(map(len, batches))
    return run


def order_table_bytes(campaign, orders: int) -> Row:
    """Bytes per remembered order id: the order table's size over the orders it holds."""
    from ._engine import MemoryCore
    from .events import Placed

    core = MemoryCore(campaign, 0)
    step = 100_000
    t = time.perf_counter()
    for start in range(0, orders, step):
        # off-region orders: remembered, never awarded, as most peak-day orders are
        core.apply([Placed(order_id=f"order-{i:012d}", merchant_id="m", agent_id="a",
                           region=-1, paid_cents=1, ts=campaign.starts_ms)
                    for i in range(start, min(orders, start + step))])
    seconds = time.perf_counter() - t
    per = core.order_table_bytes / core.orders_remembered
    return Row(f"order-id table at {orders:,} orders", orders, seconds,
               budget="<= 32 bytes per order", ratio=32 / per, goal=1.0,
               note=f"{per:.1f} bytes/order ({core.order_table_bytes / 2**20:.0f} MiB)")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--campaign", default=str(DEFAULT_CAMPAIGN))
    ap.add_argument("--orders", type=int, default=400_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory-orders", type=int, default=10_000_000,
                    help="orders for the bytes-per-order row (0 to skip)")
    ap.add_argument("--json", help="also write the rows as JSON here")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure throughput against the budgets of DESIGN.md")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:

    campaign = load_campaign(args.campaign)
    data = b"".join(generate(campaign, TrafficShape(orders=args.orders, seed=11)))
    batches = [ev for ev, _ in read_jsonl(io.BytesIO(data), args.batch)]
    events = sum(map(len, batches))
    presized = f"memory://?orders={args.orders * 2}"
    print(f"{events:,} events ({len(data) / 2**20:.0f} MiB JSON lines) for {campaign}, "
          f"batch {args.batch}, best of {args.repeat}", file=sys.stderr)

    rows: list[Row] = []
    n, t_decode = best_of(args.repeat, lambda: decode_only(data, args.batch))
    rows.append(Row("msgspec decode alone (JSON lines)", n, t_decode))
    n, t = best_of(args.repeat, lambda: replay_in_memory(campaign, presized, data, args.batch))
    rows.append(Row("memory engine: decode + claims", n, t, budget=">= 0.85 x decode alone",
                    ratio=t_decode / t, goal=0.85))
    n, t = best_of(args.repeat, lambda: replay_in_memory(campaign, "memory://", data, args.batch))
    rows.append(Row("memory engine, table not pre-sized", n, t, budget="(same)",
                    ratio=t_decode / t, goal=0.85))

    n, t_ref = best_of(1, claim_step(campaign, "reference://", batches))
    rows.append(Row("reference engine: claim step", n, t_ref))
    n, t = best_of(args.repeat, claim_step(campaign, presized, batches))
    rows.append(Row("memory engine: claim step (pre-decoded)", n, t,
                    budget=">= 20 x reference", ratio=t_ref / t, goal=20))
    for size in (64, 512, 16384):
        small = [ev for ev, _ in read_jsonl(io.BytesIO(data), size)]
        n, t = best_of(args.repeat, claim_step(campaign, presized, small))
        rows.append(Row(f"memory engine: claim step, batch {size}", n, t,
                        budget=">= 20 x reference", ratio=t_ref / t, goal=20))
    if args.memory_orders:
        rows.append(order_table_bytes(campaign, args.memory_orders))

    print_table(rows)
    if args.json:
        meta = {"python": platform.python_version(), "cpus": os.cpu_count(),
                "events": events, "orders": args.orders, "batch": args.batch}
        Path(args.json).write_bytes(orjson.dumps(
            {"meta": meta, "rows": [msgspec.to_builtins(r) | {"rate": r.rate} for r in rows]},
            option=orjson.OPT_INDENT_2))
    return 0 if all(r.verdict != "MISSED" for r in rows) else 1


def print_table(rows: list[Row]) -> None:
    print(f"{'row':44} {'events/s':>13} {'budget':>24} {'ratio':>7}  verdict  note")
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        print(f"{r.name:44} {r.rate:13,.0f} {r.budget:>24} {ratio:>7}  {r.verdict:7}  {r.note}")


if __name__ == "__main__":
    raise SystemExit(main())

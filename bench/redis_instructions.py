"""Instructions redis-server executes per event for the Redis rows of `rewardcore bench`,
counted by callgrind: unlike seconds, the count is the same run after run on a machine that
other work shares, so two versions of the scripts can be compared one after the other.

Starts `valgrind --tool=callgrind redis-server` on a free loopback port, runs one workload
(the same events and campaign variants as `rewardcore bench --only redis`), zeroes the
counters after the set-up (the fill of the sold-out row) and dumps them after the workload.
Needs valgrind (callgrind_control). Not collected by pytest.

Run: python bench/redis_instructions.py [open|caps|sold_out|replay ...] [--orders 30000]
     [--redis-orders 10000] [--batch 2048] [--scripts DIR] [--keep DIR]
(--scripts DIR runs the scripts found in DIR, e.g. bench/floor, in place of the engine's
after the set-up: a variant's cost, measured the same way;
--keep DIR leaves the callgrind files there, for `callgrind_annotate`: one file per script
call, the calls in order, so a call of either script can be profiled alone.)

Each row prints the instructions per event of the whole workload and of each script
(mark_orders, the bucket step; decide_batch, the core): the counters are dumped before every
script call, so each dump holds one call.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import redis

from rewardcore import open_engine
from rewardcore.backends import redis_nodes
from rewardcore.capacity import bench
from rewardcore.examples import example_path

ROWS = ("open", "caps", "sold_out", "replay")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def swapped_scripts(directory: str) -> Iterator[None]:
    """The engine's scripts replaced by those of `directory` (same names): loaded by the
    clients opened meanwhile, and called by their hashes."""
    saved = dict(redis_nodes._SCRIPTS)
    redis_nodes._SCRIPTS.update(redis_nodes.load_scripts(directory))
    try:
        yield
    finally:
        redis_nodes._SCRIPTS.update(saved)


def count(row: str, b: bench.Bench, out_dir: str,
          variant: str | None = None) -> tuple[dict[str, int], int]:
    """({script: instructions}, events) of one row's workload on a fresh server under
    callgrind."""
    port, out = free_port(), os.path.join(out_dir, f"callgrind.{row}")
    for stale in glob.glob(out + "*"):  # a kept directory's earlier run
        os.remove(stale)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "redis-server",
         "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    swapped = contextlib.ExitStack()
    try:
        for _ in range(600):  # valgrind starts slowly: up to a minute
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        claims = b.claim_batches()
        campaign = {"open": bench.open_variant(b.campaign, sum(map(len, claims))),
                    "sold_out": bench.soldout_variant(b.campaign)}.get(row, b.campaign)
        batches = b.batches if row == "replay" else claims
        engine = open_engine(campaign, f"redis://127.0.0.1:{port}/0")
        for batch in bench.fill_batches(campaign, b.args.batch) if row == "sold_out" else ():
            engine.apply(batch)
        if variant:  # after the set-up, which the engine's own scripts made
            engine.close()
            swapped.enter_context(swapped_scripts(variant))
            engine = open_engine(campaign, f"redis://127.0.0.1:{port}/0")

        def dump() -> None:
            subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True,
                           capture_output=True)

        run = engine.nodes.run

        def run_dumped(calls: Any, what: str, wait: Any) -> Any:
            dump()  # what ran since the last dump: the previous call
            scripts.append(calls[0][0])
            return run(calls, what, wait)

        subprocess.run(["callgrind_control", "--zero", str(server.pid)], check=True,
                       capture_output=True)
        scripts: list[str] = []
        engine.nodes.run = run_dumped
        for batch in batches:
            engine.apply(batch)
        dump()
        engine.close()
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the shutdown's own goodbye
    finally:
        swapped.close()
        client.close()
        server.wait(timeout=120)
    # dump k (k >= 1, in order) holds what ran since dump k-1: dump 1 the zeroed start,
    # dump k + 1 the call scripts[k - 1]; the file without a number is the exit's
    dumps = sorted(glob.glob(out + ".*"), key=lambda path: int(path.rsplit(".", 1)[1]))
    per_script: dict[str, int] = {}
    for name, path in zip(scripts, dumps[1:], strict=True):
        total = next(int(line.split()[1]) for line in open(path)
                     if line.startswith("summary:"))
        per_script[name] = per_script.get(name, 0) + total
    return per_script, sum(map(len, batches))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="*", metavar="ROW", help=f"{', '.join(ROWS)} (default: all)")
    ap.add_argument("--orders", type=int, default=30_000)
    ap.add_argument("--redis-orders", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--scripts", metavar="DIR",
                    help="run the scripts in DIR (e.g. bench/floor) after the set-up")
    ap.add_argument("--keep", metavar="DIR", help="keep the callgrind files in DIR")
    args = ap.parse_args()
    if set(args.rows) - set(ROWS):
        ap.error(f"unknown rows {sorted(set(args.rows) - set(ROWS))}: choose from {ROWS}")
    if not (shutil.which("valgrind") and shutil.which("redis-server")):
        print("needs valgrind and redis-server on PATH", file=sys.stderr)
        return 2
    b = bench.Bench(argparse.Namespace(campaign=str(example_path("d11-2026")),
                                       orders=args.orders, batch=args.batch,
                                       redis_orders=args.redis_orders))
    with tempfile.TemporaryDirectory(prefix="rc-callgrind-") as scratch:
        out_dir = args.keep or scratch
        os.makedirs(out_dir, exist_ok=True)
        for row in args.rows or ROWS:
            per_script, events = count(row, b, out_dir, args.scripts)
            parts = ", ".join(f"{name} {n / events:,.0f}" for name, n in per_script.items())
            print(f"{row:9s} {sum(per_script.values()) / events:10,.0f} server "
                  f"instructions/event ({parts}; {events:,} events)", flush=True)
    b.stack.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

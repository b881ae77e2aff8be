"""Instructions per event for decoding JSON lines alone and for decode + claims on the
memory engine (the rows `msgspec decode alone` and `memory engine: decode + claims` of
`rewardcore bench`), counted by callgrind: unlike seconds, the count is the same run after
run on a machine that other work shares.

Runs itself under `valgrind --tool=callgrind` (with PYTHONHASHSEED=0), does each workload
once to warm up, zeroes the counters, does it again and dumps them. Needs valgrind. Not
collected by pytest.

Run: python bench/memory_instructions.py [--orders 30000] [--batch 4096]
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import tempfile

from rewardcore.capacity import bench
from rewardcore.codec import read_jsonl
from rewardcore.examples import example_path


def workload(mode: str, args: argparse.Namespace) -> None:
    """Inside callgrind: warm up, zero, run, dump."""
    b = bench.Bench(argparse.Namespace(campaign=str(example_path("d11-2026")),
                                       orders=args.orders, batch=args.batch, redis_orders=1))

    def run() -> int:
        if mode == "decode":
            return sum(len(ev) for ev, _ in read_jsonl(io.BytesIO(b.data), args.batch))
        return bench.replay_in_memory(b.campaign, b.presized, b.data, args.batch)

    run()
    control = ["callgrind_control", str(os.getpid())]
    subprocess.run(control[:1] + ["--zero"] + control[1:], check=True, capture_output=True)
    n = run()
    subprocess.run(control[:1] + ["--dump"] + control[1:], check=True, capture_output=True)
    print(n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--inside", choices=("decode", "replay"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        workload(args.inside, args)
        return 0
    if not shutil.which("valgrind"):
        print("needs valgrind on PATH", file=sys.stderr)
        return 2
    counts = {}
    with tempfile.TemporaryDirectory(prefix="rc-callgrind-") as out_dir:
        for mode in ("decode", "replay"):
            out = os.path.join(out_dir, f"callgrind.{mode}")
            run = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                 __file__, "--inside", mode, "--orders", str(args.orders),
                 "--batch", str(args.batch)],
                env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True,
                check=True)
            events = int(run.stdout.split()[-1])
            totals = [int(line.split()[1]) for path in glob.glob(out + ".*")
                      for line in open(path) if line.startswith("summary:")]
            counts[mode] = max(totals) / events
            print(f"{mode:7s} {counts[mode]:8,.0f} instructions/event ({events:,} events, "
                  f"batch {args.batch})", flush=True)
    print(f"decode + claims at {counts['decode'] / counts['replay']:.2f} x decode alone "
          "in instructions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

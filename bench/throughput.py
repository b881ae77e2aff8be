"""The throughput harness; the same as `rewardcore bench` (src/rewardcore/benchmark.py)."""

from rewardcore.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The throughput harness; the same as `rewardcore bench` (src/rewardcore/capacity/bench.py)."""

from rewardcore.capacity.bench import main

if __name__ == "__main__":
    raise SystemExit(main())

"""pytest-benchmark: decoding, and the claim step on pre-decoded batches (Cython vs the
pure-Python reference). Not collected by the normal run; see bench/conftest.py.

    python3 -m pytest bench/test_bench_engine.py --benchmark-only

Compare `test_claim_step[memory]` with `test_claim_step[reference]` (DESIGN.md: >= 20 x) and
`test_decode_and_claims` with `test_decode_jsonl` (>= 0.85 x the rate of decoding alone).
The one-table view of the same ratios is `rewardcore bench`.
"""

from __future__ import annotations

import io

import pytest

from rewardcore import open_engine
from rewardcore.codec import decode_jsonl, read_jsonl


def _apply_all(engine, batches) -> int:
    n = 0
    for batch in batches:
        engine.apply(batch)
        n += len(batch)
    engine.close()
    return n


def test_decode_jsonl(benchmark, stream) -> None:
    """msgspec decoding of the whole stream alone, in --batch sized reads."""
    def decode() -> int:
        return sum(len(ev) for ev, _ in read_jsonl(io.BytesIO(stream), 4096))
    n = benchmark(decode)
    assert n > 0


def test_decode_one_buffer(benchmark, stream) -> None:
    events, dead = benchmark(decode_jsonl, stream)
    assert events and not dead


@pytest.mark.parametrize("url", ["memory", "reference"])
def test_claim_step(benchmark, campaign, batches, url) -> None:
    """The claim step alone on pre-decoded batches of 4,096; a fresh engine per round."""
    full = f"memory://?orders={2 * sum(map(len, batches))}" if url == "memory" else "reference://"
    rounds = 5 if url == "memory" else 2  # the reference takes seconds per round

    def fresh():
        return (open_engine(campaign, full), batches), {}
    n = benchmark.pedantic(_apply_all, setup=fresh, rounds=rounds, iterations=1)
    benchmark.extra_info["events"] = n


@pytest.mark.parametrize("size", [64, 512, 4096, 16384])
def test_claim_step_batch_size(benchmark, campaign, stream, size) -> None:
    """The Cython claim step by batch size: per-batch overhead against table locality."""
    batches = [ev for ev, _ in read_jsonl(io.BytesIO(stream), size)]
    url = f"memory://?orders={2 * sum(map(len, batches))}"

    def fresh():
        return (open_engine(campaign, url), batches), {}
    n = benchmark.pedantic(_apply_all, setup=fresh, rounds=5, iterations=1)
    benchmark.extra_info["events"] = n


def test_decode_and_claims(benchmark, campaign, stream) -> None:
    """A replay in memory: decode + claim, as `rewardcore replay` does it."""
    url = f"memory://?orders={len(stream) // 50}"

    def replay() -> int:
        engine = open_engine(campaign, url)
        n = 0
        for events, _ in read_jsonl(io.BytesIO(stream), 4096):
            engine.apply(events)
            n += len(events)
        engine.close()
        return n
    assert benchmark(replay) > 0

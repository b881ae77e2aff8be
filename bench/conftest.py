"""Fixtures of the pytest-benchmark suites in bench/ (not collected by the normal run:
pyproject's testpaths is ["tests"]). Run them on purpose:

    python3 -m pytest bench/ --benchmark-only
    python3 -m pytest bench/test_bench_engine.py --benchmark-only --benchmark-columns=min,median,ops

Sizes follow REWARDCORE_BENCH_ORDERS (default 100,000 generated orders). Redis suites start
their own redis-server processes on free loopback ports (rewardcore.redis_servers).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator

import pytest

from rewardcore import load_campaign
from rewardcore.campaign import Campaign
from rewardcore.codec import read_jsonl
from rewardcore.events import Event, Placed
from rewardcore.examples import example_path
from rewardcore.traffic import TrafficShape, generate

ORDERS = int(os.environ.get("REWARDCORE_BENCH_ORDERS", "100000"))
BATCH = 4096


@pytest.fixture(scope="session")
def campaign() -> Campaign:
    return load_campaign(example_path("d11-2026"))


@pytest.fixture(scope="session")
def stream(campaign: Campaign) -> bytes:
    """The generated peak-day stream as JSON lines (seed 11, as `rewardcore bench`)."""
    return b"".join(generate(campaign, TrafficShape(orders=ORDERS, seed=11)))


@pytest.fixture(scope="session")
def batches(stream: bytes) -> list[list[Event]]:
    return [ev for ev, _ in read_jsonl(io.BytesIO(stream), BATCH)]


@pytest.fixture(scope="session")
def claims(campaign: Campaign, batches: list[list[Event]]) -> list[Placed]:
    """New in-window orders into reward regions: every one is a claim."""
    seen: set[str] = set()
    out: list[Placed] = []
    for batch in batches:
        for ev in batch:
            if (type(ev) is Placed and ev.order_id not in seen
                    and campaign.starts_ms <= ev.ts < campaign.ends_ms
                    and ev.region in campaign.region_by_code
                    and ev.paid_cents >= campaign.info.min_paid_cents):
                seen.add(ev.order_id)
                out.append(ev)
    return out


@pytest.fixture(scope="session")
def redis_server() -> Iterator[object]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server")
    from rewardcore.redis_servers import RedisServer

    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[object]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server")
    from rewardcore.redis_servers import RedisCluster

    cluster = RedisCluster(3).start()
    yield cluster
    cluster.close()

"""pytest-benchmark: the Redis engine's Lua batch calls on real redis-server processes
(started on free loopback ports). Not collected by the normal run; see bench/conftest.py.

    python3 -m pytest bench/test_bench_redis.py --benchmark-only

One round = one `apply` of a 4,096-claim batch, i.e. the mark_orders EVALSHA calls it
pipelines per order-bucket node, then one decide_batch call on the sequencer. A pipelined INCR batch
of the same size is the floor Redis itself sets on this machine.
"""

from __future__ import annotations

import msgspec
import pytest
import redis

from rewardcore import open_engine
from rewardcore.capacity.bench import fill_batches, open_variant, soldout_variant
from rewardcore.outcomes import Outcome

BATCH = 4096


def _flush(target) -> None:
    if hasattr(target, "flushall"):
        target.flushall()
    else:
        with redis.Redis(host="127.0.0.1", port=target.port) as r:
            r.flushall()


@pytest.fixture(params=["standalone", "cluster"])
def redis_target(request, redis_server, redis_cluster):
    return redis_server if request.param == "standalone" else redis_cluster


def _renamed(batch, tag: str):
    return [msgspec.structs.replace(ev, order_id=f"{tag}{ev.order_id}") for ev in batch]


def test_claims_open_regions(benchmark, campaign, claims, redis_target) -> None:
    batch = claims[:BATCH]
    c = open_variant(campaign, len(batch))
    rounds = iter(range(10**9))

    def fresh():
        _flush(redis_target)
        engine = open_engine(c, redis_target.url)
        return (engine, _renamed(batch, f"r{next(rounds)}-")), {}

    def run(engine, events):
        d = engine.apply(events)
        engine.close()
        return d
    d = benchmark.pedantic(run, setup=fresh, rounds=5, iterations=1)
    assert int((d.outcome == 0).sum()) == len(batch)  # every claim awarded
    benchmark.extra_info["claims"] = len(batch)


def test_claims_sold_out(benchmark, campaign, claims, redis_target) -> None:
    """Every region sold out first (untimed), then one batch of new orders."""
    c = soldout_variant(campaign)
    _flush(redis_target)
    engine = open_engine(c, redis_target.url)
    for fill in fill_batches(c, BATCH):
        engine.apply(fill)
    batch = claims[:BATCH]
    rounds = iter(range(10**9))
    d = benchmark.pedantic(lambda: engine.apply(_renamed(batch, f"s{next(rounds)}-")),
                           rounds=5, iterations=1)
    engine.close()
    assert int((d.outcome == Outcome.SOLD_OUT).sum()) > 0
    benchmark.extra_info["claims"] = len(batch)


def test_incr_pipeline_floor(benchmark, redis_server) -> None:
    """4,096 pipelined INCRs: the round-trip floor redis-py and this Redis set."""
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)

    def incr() -> list:
        pipe = client.pipeline(transaction=False)
        for _ in range(BATCH):
            pipe.incr("floor")
        return pipe.execute()
    assert len(benchmark(incr)) == BATCH
    client.close()

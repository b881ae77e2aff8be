"""rewardcore.aio.AsyncEngine: concurrent callers merged into few engine calls, each getting
exactly its own decisions; engines that wait run off the event loop."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewardcore import Campaign, open_engine
from rewardcore.aio import AsyncEngine, EngineClosed
from rewardcore.engine import Decisions
from rewardcore.errors import EventError
from rewardcore.events import Event, Placed
from rewardcore.outcomes import Outcome

from .campaigns import make_campaign
from .events import closed, completed, placed, redeem
from .servers import RedisServer


def _campaign() -> Campaign:
    regions = [(code, 4, ((2, 5), (4, 10))) for code in range(1, 9)]
    return make_campaign(regions, (("mug", 10, 3),), on_close="release",
                         settle_on="completed", budget_points=150)


def _batches(n_callers: int, seed: int) -> list[list[list[Event]]]:
    """Per caller, a few batches of 1-5 events: orders (some into the same regions as
    other callers'), closes and completions of its own orders, redemptions."""
    rng = random.Random(seed)
    out = []
    for c in range(n_callers):
        mine: list[list[Event]] = []
        for b in range(rng.randint(1, 3)):
            batch: list[Event] = []
            for k in range(rng.randint(1, 5)):
                oid = f"o{c}-{b}-{k}"
                r = rng.random()
                if r < 0.7:
                    batch.append(placed(oid, region=rng.randint(1, 9), agent=f"a{c % 13}"))
                elif r < 0.8:
                    batch.append(closed(f"o{rng.randrange(n_callers)}-0-0"))
                elif r < 0.95:
                    batch.append(completed(f"o{rng.randrange(n_callers)}-0-0"))
                else:
                    batch.append(redeem(f"r{c}-{b}-{k}", f"a{c % 13}"))
            mine.append(batch)
        out.append(mine)
    return out


def _rows(d: Decisions) -> list[tuple[int, ...]]:
    return [tuple(int(getattr(d, column)[i]) for column in Decisions.__slots__)
            for i in range(len(d))]


@pytest.fixture(params=["memory", "shm", "redis"])
def aio_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return {"memory": "memory://", "shm": "shm://?orders=4096"}[request.param]


def test_concurrent_callers_get_exactly_their_own_decisions(aio_url: str) -> None:
    """300 tasks, each applying a few small batches with awaits in between: the calls were
    merged, yet every caller's decisions (every column) and the final state are exactly what
    the same engine gives when fed the same batches one call at a time, in the order the
    calls were made; and the claims decided are the reference engine's."""
    campaign = _campaign()
    plan = _batches(300, seed=7)
    taken: list[list[Event]] = []  # every batch, in the order `apply` queued it
    answers: dict[int, Decisions] = {}

    async def caller(engine: AsyncEngine, batches: list[list[Event]]) -> None:
        for batch in batches:
            taken.append(batch)  # queued in this order: nothing awaits in between
            fut = engine.apply(batch)
            answers[id(batch)] = await fut
            await asyncio.sleep(0)

    async def main() -> tuple[int, dict[str, Any]]:
        engine = await AsyncEngine.open(campaign, aio_url)
        if aio_url.startswith("shm"):
            assert engine.threaded  # a cross-process lock can wait
        async with engine:
            await asyncio.gather(*(caller(engine, b) for b in plan))
            state = await engine.call(engine.engine.export_state)
            return engine.engine_calls, state

    calls, state = asyncio.run(main())
    assert len(taken) == sum(len(b) for b in plan)
    assert calls < len(taken) / 4, "concurrent calls were not merged"
    one_by_one = open_engine(campaign, aio_url)
    if not aio_url.startswith("memory"):
        one_by_one.reset()
    ref = open_engine(campaign, "reference://")
    try:
        for batch in taken:
            got = answers[id(batch)]
            assert _rows(got) == _rows(one_by_one.apply(batch)), batch
            want = ref.apply(batch)
            assert (got.outcome.tolist(), got.slot.tolist(), got.points.tolist()) == (
                want.outcome.tolist(), want.slot.tolist(), want.points.tolist()), batch
        assert state == one_by_one.export_state()
        assert state["balances"] == ref.export_state()["balances"]
        assert state["redemptions"] == ref.export_state()["redemptions"]
    finally:
        one_by_one.close()


def test_a_large_batch_and_a_closed_engine() -> None:
    """Batches merge up to max_batch events; a larger one goes alone; after close no new
    work is taken."""
    campaign = _campaign()

    async def main() -> None:
        engine = AsyncEngine(open_engine(campaign, "memory://"), max_batch=10)
        big = [placed(f"big{k}", region=1 + k % 8) for k in range(25)]
        smalls = [[placed(f"s{k}", region=1 + k % 8)] for k in range(20)]
        got = await asyncio.gather(engine.apply(big), *(engine.apply(s) for s in smalls))
        assert len(got[0]) == 25 and all(len(d) == 1 for d in got[1:])
        assert engine.engine_calls == 1 + 2  # the big one, then 20 singles in tens
        await engine.aclose()
        with pytest.raises(EngineClosed):
            engine.apply(smalls[0])

    asyncio.run(main())


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own: it gets stopped with SIGSTOP."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGCONT)
        server.close()


def test_the_loop_runs_while_a_redis_call_waits(own_redis: RedisServer) -> None:
    """Structural, so the verdict does not depend on machine speed: the server is stopped
    (SIGSTOP), so an `apply` sent to it cannot finish; the event loop must still run a
    ticker task 20 times while that call is provably in flight. The same call on the loop
    itself (threaded=False) lets the ticker run at most twice around a 0.5 s stop."""
    campaign = _campaign()
    assert own_redis.proc is not None
    pid = own_redis.proc.pid

    async def ticks_while_stopped(threaded: bool) -> tuple[int, bool, float]:
        engine = AsyncEngine(open_engine(campaign, own_redis.url), threaded=threaded)
        engine.engine.reset()
        ticks = 0
        gaps: list[float] = []
        loop = asyncio.get_running_loop()

        async def ticker() -> None:
            nonlocal ticks
            last = loop.time()
            while True:
                await asyncio.sleep(0.01)
                now = loop.time()
                gaps.append(now - last)
                last = now
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        os.kill(pid, signal.SIGSTOP)
        if not threaded:  # the loop will be blocked: only another thread can resume it
            threading.Timer(0.5, os.kill, (pid, signal.SIGCONT)).start()
        call = engine.apply([placed("o1", region=1)])
        start_ticks = ticks
        for _ in range(6000):  # hang guard only: 60 s
            if ticks - start_ticks >= 20 or call.done():
                break
            await asyncio.sleep(0.01)
        in_flight_throughout = not call.done()
        during = ticks - start_ticks
        os.kill(pid, signal.SIGCONT)
        decisions = await call
        assert Outcome(int(decisions.outcome[0])) is Outcome.AWARDED  # once the server runs
        tick_task.cancel()
        await engine.aclose()
        return during, in_flight_throughout, max(gaps, default=0.0)

    during, in_flight, longest = asyncio.run(ticks_while_stopped(threaded=True))
    assert in_flight and during >= 20, (during, in_flight, longest)
    print(f"longest gap between ticks while the call waited: {longest * 1e3:.1f} ms")
    during, in_flight, longest = asyncio.run(ticks_while_stopped(threaded=False))
    assert not in_flight and during <= 2, (during, in_flight, longest)


def test_the_bench_rows(tmp_path: Path) -> None:
    """`rewardcore bench --only aio` at a tiny size: four measured rows, the concurrent ones
    with their ratio to one order per synchronous call and a p99."""
    from .test_bench_smoke import _bench, _measured

    report, _ = _bench(tmp_path, "--orders", "3000", "--redis-orders", "600", "--only", "aio")
    rows = [r for r in report["rows"] if r["group"] == "aio"]
    assert len(rows) == 4, [r["name"] for r in rows]
    for row in rows:
        _measured(row)
        assert "p99 per call" in row["note"]
    assert all(r["ratio"] > 0 for r in rows if "concurrent" in r["name"])


def test_an_invalid_event_fails_only_its_own_caller(aio_url: str) -> None:
    """Calls merged with a batch holding an invalid event get their decisions; only that
    batch's caller gets the EventError, with the index in its own batch."""
    campaign = _campaign()
    bad = Placed(order_id="bad", merchant_id="m1", agent_id="a1", region="1",  # type: ignore[arg-type]
                 paid_cents=100, ts=placed("x").ts)

    async def main() -> tuple[Any, dict[str, Any]]:
        engine = await AsyncEngine.open(campaign, aio_url)
        async with engine:
            got = await asyncio.gather(
                engine.apply([placed("o1", region=1)]),
                engine.apply([placed("o2", region=2), bad]),
                engine.apply([placed("o3", region=1)]), return_exceptions=True)
            return got, await engine.call(engine.engine.export_state)

    (first, err, third), state = asyncio.run(main())
    assert isinstance(err, EventError) and err.index == 1, err
    assert [Outcome(int(d.outcome[0])) for d in (first, third)] == [Outcome.AWARDED] * 2
    assert sorted(c["order_id"] for c in state["claims"]) == ["o1", "o3"]

"""An engine for asyncio code (an aiohttp or FastAPI gateway): `AsyncEngine`.

    from rewardcore.aio import AsyncEngine

    async with await AsyncEngine.open("campaign.toml", "redis://10.0.0.5:6379/0") as engine:
        decisions = await engine.apply([order])   # from as many tasks as you like

Engines are not thread-safe, and a batch must never see another's half-applied batch, so
one worker owns the engine. Callers queue their batch and await a future; the worker takes
everything queued, merges consecutive `apply` batches (up to `max_batch` events) into one
engine call, and hands each caller exactly its own slice of the decisions. Under load, a
thousand single-order calls become a few large `apply` calls, which is what the engines are
fast at. Other calls (views, exports) queue in order with the batches (`call`), so they see
the state between two batches.

The plain in-memory engines (memory://, reference://) run on the event loop: a merged call
takes microseconds and a thread hop would cost more. Engines that can wait (redis:// on the
network, memory:///dir on fsync, shm:// on a cross-process lock) run on one dedicated
thread, so the loop keeps serving while they wait, and whatever queues up meanwhile becomes
the next merged call (for memory:///dir with fsync=batch: one fsync per merged call).

The daemon (`rewardcore serve`) feeds every HTTP request and stream batch through one
AsyncEngine; docs/engine.md describes it for library users.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .campaign import Campaign
from .engine import Decisions, Engine
from .errors import EventError, RewardcoreError
from .events import Event

T = TypeVar("T")
_COLUMNS = Decisions.__slots__  # every column of the decisions, each caller gets its slice

__all__ = ["AsyncEngine", "EngineClosed", "waits_on_io"]


def waits_on_io(engine: Engine) -> bool:
    """Whether an engine's calls can wait (network, fsync, a cross-process lock): those run
    on the worker's thread (the engine class declares it, `Engine.may_block`). A durable
    memory:// engine fsyncs its log, and on a thread that fsync covers every batch merged
    meanwhile."""
    return engine.may_block


class EngineClosed(RewardcoreError):
    """The AsyncEngine is closing: it takes no new work."""


class _Apply:
    __slots__ = ("events", "future")

    def __init__(self, events: Sequence[Event], future: asyncio.Future[Decisions]) -> None:
        self.events = events
        self.future = future


class _Call:
    __slots__ = ("fn", "args", "future")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.args = args
        self.future = future


class AsyncEngine:
    """One engine behind a merging worker; every method is called from the event loop.

    `threaded`: None picks by engine (`waits_on_io`); True or False forces it. `on_batch`
    (events, decisions, seconds) is called after every engine `apply`, `on_error` (exception)
    after every engine call that raised: the daemon's metrics hang there.
    """

    def __init__(self, engine: Engine, *, threaded: bool | None = None, max_batch: int = 8192,
                 on_batch: Callable[[Sequence[Event], Decisions, float], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        if max_batch < 1:
            raise RewardcoreError(f"AsyncEngine: max_batch must be at least 1, not {max_batch}")
        self.engine = engine
        self.max_batch = max_batch
        self.threaded = waits_on_io(engine) if threaded is None else threaded
        self.on_batch = on_batch
        self.on_error = on_error
        self._executor = (ThreadPoolExecutor(1, thread_name_prefix="rewardcore-engine")
                          if self.threaded else None)
        self._queue: deque[_Apply | _Call] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._running = False
        #: events applied so far (merged calls count every caller's events)
        self.events_applied = 0
        #: engine `apply` calls made so far (fewer than `apply` calls when they merge)
        self.engine_calls = 0

    @classmethod
    async def open(cls, campaign: Campaign | str | Path, url: str = "memory://",
                   **options: Any) -> AsyncEngine:
        """Open the engine a backend URL names (off the loop: connecting can wait) and wrap
        it; `options` are those of the constructor."""
        from .backends import open_engine
        from .campaign import load_campaign

        def opened() -> Engine:
            c = campaign if isinstance(campaign, Campaign) else load_campaign(campaign)
            return open_engine(c, url)

        engine = await asyncio.get_running_loop().run_in_executor(None, opened)
        return cls(engine, **options)

    # -- the callers' side ------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> asyncio.Future[Decisions]:
        """Queue a batch; await the result for its decisions (or the engine's exception).
        A call cancelled before the worker takes it is not applied."""
        if self._closing:
            raise EngineClosed("the engine is closing: no new batches")
        fut: asyncio.Future[Decisions] = asyncio.get_running_loop().create_future()
        self._queue.append(_Apply(events, fut))
        self._wake.set()
        self._ensure_running()
        return fut

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue any other engine call, e.g. `await engine.call(engine.engine.export_state)`;
        it runs in order with the batches (on the worker's thread when there is one)."""
        if self._closing:
            raise EngineClosed("the engine is closing: no new calls")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(fn, args, fut))
        self._wake.set()
        self._ensure_running()
        return fut

    def _ensure_running(self) -> None:
        if not self._running and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(),
                                                                name="rewardcore-engine")

    # -- the worker's side ------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the queue until `close` is called and the queue is empty. Started on the
        first call; run it as a task of your own to own its lifetime (the daemon does)."""
        self._running = True
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = self._queue.popleft()
                if isinstance(item, _Call):
                    await self._run_call(item)
                else:
                    group = [item]
                    size = len(item.events)
                    while (self._queue and isinstance(self._queue[0], _Apply)
                           and size + len(self._queue[0].events) <= self.max_batch):
                        nxt = self._queue.popleft()
                        assert isinstance(nxt, _Apply)
                        group.append(nxt)
                        size += len(nxt.events)
                    await self._run_apply(group)
                if not self.threaded:
                    # Let the callers whose futures just resolved go on, and new calls
                    # queue up behind them: that is what makes the next batch a merged one.
                    await asyncio.sleep(0)
        finally:
            self._running = False

    async def _in_engine(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _failed(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    async def _run_call(self, item: _Call) -> None:
        if item.future.cancelled():
            return
        try:
            result = await self._in_engine(item.fn, *item.args)
        except Exception as exc:  # the caller decides how to answer; the worker goes on
            self._failed(exc)
            _set_exception(item.future, exc)
        else:
            if not item.future.cancelled():
                item.future.set_result(result)

    async def _run_apply(self, group: list[_Apply]) -> None:
        group = [it for it in group if not it.future.cancelled()]
        if not group:
            return
        if len(group) == 1:
            events: Sequence[Event] = group[0].events
        else:
            merged: list[Event] = []
            for it in group:
                merged.extend(it.events)
            events = merged
        start = time.perf_counter()
        try:
            decisions = await self._in_engine(self.engine.apply, events)
        except Exception as exc:
            if isinstance(exc, EventError) and len(group) > 1:
                # One caller's invalid event must not fail the others merged with it: the
                # engine changed nothing (it checks the whole batch first), so each caller's
                # batch goes again on its own, and only the bad one gets the error (with
                # the index in its own batch).
                for it in group:
                    await self._run_apply([it])
                return
            self._failed(exc)
            for it in group:
                _set_exception(it.future, exc)
            return
        seconds = time.perf_counter() - start
        self.engine_calls += 1
        self.events_applied += len(events)
        if self.on_batch is not None:
            self.on_batch(events, decisions, seconds)
        if len(group) == 1:
            if not group[0].future.cancelled():
                group[0].future.set_result(decisions)
            return
        columns = [getattr(decisions, name) for name in _COLUMNS]
        at = 0
        for it in group:
            n = len(it.events)
            if not it.future.cancelled():
                it.future.set_result(Decisions(*[col[at:at + n] for col in columns]))
            at += n

    # -- stopping ---------------------------------------------------------------------------
    def close(self) -> None:
        """Take no new work; `run` returns once everything queued has run."""
        self._closing = True
        self._wake.set()

    async def run_last(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an engine call after the worker stopped (a final export, close)."""
        return await self._in_engine(fn, *args)

    def shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """Finish everything queued, then close the engine and the worker's thread."""
        self.close()
        if self._task is not None:
            await self._task
        try:
            await self.run_last(self.engine.close)
        finally:
            self.shutdown_executor()

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        # A caller that went away (client disconnected) never reads it; don't warn about it.
        fut.add_done_callback(_consume)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()

"""The one owner of the engine.

Engines are not thread-safe, and an HTTP request or a stream batch must never see another's
half-applied batch, so every engine call goes through one `EngineWorker`. Callers queue
their batch and await a future; the worker takes everything queued, merges consecutive
`apply` batches (up to `max_batch` events) into one engine call, and hands each caller its
slice of the decisions. Under load many small requests become one large `apply`, which is
what the engines are fast at.

The plain in-memory engines (memory://, reference://) run on the event loop: a merged call
takes microseconds and a thread hop would cost more. Engines that can wait (redis:// on the
network, memory:///dir on fsync, shm:// on a lock) run on one dedicated thread, so the loop
keeps serving while they wait, and whatever queues up meanwhile becomes the next merged call.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..engine import Decisions, Engine
from ..events import Event
from .metrics import Metrics

T = TypeVar("T")

def waits_on_io(engine: Engine) -> bool:
    """Whether an engine's calls can wait (network, fsync, a cross-process lock): those run
    on the worker's thread. A durable memory:// engine fsyncs its log, and on a thread that
    fsync covers every batch merged meanwhile."""
    return engine.may_block


class WorkerClosed(RuntimeError):
    """The daemon is stopping: the worker takes no new work."""


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


class EngineWorker:
    """Serialises every engine call; merges concurrent `apply` batches."""

    def __init__(self, engine: Engine, metrics: Metrics, *, threaded: bool | None = None,
                 max_batch: int = 8192) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_batch = max_batch
        if threaded is None:
            threaded = waits_on_io(engine)
        self.threaded = threaded
        self._executor = (ThreadPoolExecutor(1, thread_name_prefix="rewardcore-engine")
                          if threaded else None)
        self._queue: deque[_Apply | _Call] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.events_applied = 0

    # -- the callers' side ------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> asyncio.Future[Decisions]:
        """Queue a batch; the future gets its decisions (or the engine's exception)."""
        if self._closing:
            raise WorkerClosed("the daemon is stopping")
        fut: asyncio.Future[Decisions] = asyncio.get_running_loop().create_future()
        self._queue.append(_Apply(events, fut))
        self._wake.set()
        return fut

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue any other engine call (views, export); runs in order with the batches."""
        if self._closing:
            raise WorkerClosed("the daemon is stopping")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(fn, args, fut))
        self._wake.set()
        return fut

    # -- the worker's side ------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the queue until `close` is called and the queue is empty."""
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
                # Let the handlers whose futures just resolved answer, and new requests
                # queue up behind them: that is what makes the next batch a merged one.
                await asyncio.sleep(0)

    async def _in_engine(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run_call(self, item: _Call) -> None:
        if item.future.cancelled():
            return
        try:
            result = await self._in_engine(item.fn, *item.args)
        except Exception as exc:  # the caller decides how to answer; the worker goes on
            self.metrics.engine_errors.inc()
            _set_exception(item.future, exc)
        else:
            if not item.future.cancelled():
                item.future.set_result(result)

    async def _run_apply(self, group: list[_Apply]) -> None:
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
            self.metrics.engine_errors.inc()
            for it in group:
                _set_exception(it.future, exc)
            return
        self.metrics.record(events, decisions, time.perf_counter() - start)
        self.events_applied += len(events)
        if len(group) == 1:
            if not group[0].future.cancelled():
                group[0].future.set_result(decisions)
            return
        at = 0
        for it in group:
            n = len(it.events)
            if not it.future.cancelled():
                it.future.set_result(_slice(decisions, at, at + n))
            at += n

    def close(self) -> None:
        """Take no new work; `run` returns once everything queued has run."""
        self._closing = True
        self._wake.set()

    def shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def run_last(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an engine call after the worker stopped (close, final export)."""
        return await self._in_engine(fn, *args)


def _slice(d: Decisions, a: int, b: int) -> Decisions:
    return Decisions(d.outcome[a:b], d.slot[a:b], d.points[a:b])


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        # A caller that went away (client disconnected) never reads it; don't warn about it.
        fut.add_done_callback(_consume)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()



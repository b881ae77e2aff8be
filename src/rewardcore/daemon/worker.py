"""The daemon's one owner of the engine: a `rewardcore.aio.AsyncEngine` (the merging worker
of the library) whose batches and errors feed the daemon's metrics."""

from __future__ import annotations

from ..aio import AsyncEngine, EngineClosed
from ..engine import Engine
from .metrics import Metrics

# The daemon's names for the library's worker and its "closing" error.
EngineWorker = AsyncEngine
WorkerClosed = EngineClosed


def engine_worker(engine: Engine, metrics: Metrics, *, threaded: bool | None,
                  max_batch: int) -> AsyncEngine:
    """The daemon's worker: every engine batch is recorded, every failed call counted."""
    return AsyncEngine(engine, threaded=threaded, max_batch=max_batch, on_batch=metrics.record,
                       on_error=lambda exc: metrics.engine_errors.inc())

"""Structured logs: one JSON object per line on stderr, one line per start, stop and
error (never per event); with --log-every a `stats` line every so often, with --access-log
one `access` line per request. uvicorn's own warnings and errors go through the same
formatter."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..outcomes import Outcome

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ..aio import AsyncEngine
    from .metrics import Metrics

log = logging.getLogger("rewardcore.daemon")


class JsonLines(logging.Formatter):
    """One JSON object per log record: ts, level, event, then the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        if record.name == log.name:
            out["event"] = record.getMessage()
        else:  # uvicorn's own warnings and errors
            out["event"] = "server"
            out["logger"] = record.name
            out["message"] = record.getMessage()
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(logging.WARNING)  # its per-start chatter is ours to say, once
        lg.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


def _total(counter: Any) -> float:
    """The sum of a labelled counter's series (read at stats time, not per event)."""
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


async def log_stats(every: float, metrics: Metrics, worker: AsyncEngine) -> None:
    """A `stats` line every `every` seconds, about the interval since the previous one:
    events and events/s, engine calls, outcomes, requests, dead letters, and each source
    stream's lag and pending entries as last seen."""
    t0 = time.monotonic()
    outcomes0 = list(metrics.outcomes)
    events0, calls0 = worker.events_applied, worker.engine_calls
    requests0, dead0 = _total(metrics.requests), _total(metrics.dead_letters)
    while True:
        await asyncio.sleep(every)
        t1 = time.monotonic()
        outcomes1 = list(metrics.outcomes)
        events1, calls1 = worker.events_applied, worker.engine_calls
        requests1, dead1 = _total(metrics.requests), _total(metrics.dead_letters)
        seconds = t1 - t0
        fields: dict[str, Any] = {
            "interval_s": round(seconds, 3), "events": events1 - events0,
            "events_per_s": round((events1 - events0) / seconds, 1) if seconds > 0 else 0.0,
            "engine_calls": calls1 - calls0,
            "outcomes": {o.label: outcomes1[o] - outcomes0[o] for o in Outcome
                         if outcomes1[o] != outcomes0[o]},
            "requests": int(requests1 - requests0), "dead_letters": int(dead1 - dead0),
            "events_total": events1,
        }
        streams: dict[str, dict[str, float]] = {}
        for gauge, key in ((metrics.stream_lag, "lag"), (metrics.stream_pending, "pending")):
            for m in gauge.collect():
                for sample in m.samples:
                    name = f"{sample.labels['stream']}/{sample.labels['group']}"
                    streams.setdefault(name, {})[key] = sample.value
        if streams:
            fields["streams"] = streams
        log.info("stats", extra={"fields": fields})
        t0, outcomes0, events0, calls0 = t1, outcomes1, events1, calls1
        requests0, dead0 = requests1, dead1


class StatusOf:
    """An ASGI `send` that passes every message on and keeps the answer's status code
    (`status` until the answer starts: what a request that never answered counts as)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send, status: int) -> None:
        self.send = send
        self.status = status

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class AccessLog:
    """ASGI middleware: one `access` line per HTTP request, after its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        sent = StatusOf(send, 0)
        try:
            await self.app(scope, receive, sent)
        finally:
            client = scope.get("client") or ("", 0)
            log.info("access", extra={"fields": {
                "method": scope["method"], "path": scope["path"], "status": sent.status,
                "ms": round((time.perf_counter() - start) * 1000, 3), "client": client[0]}})

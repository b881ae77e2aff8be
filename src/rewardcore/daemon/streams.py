"""The Redis Streams source: one consumer of a consumer group.

Entry format (input stream): one event per entry, in the field `e`, as JSON bytes, e.g.
`XADD orders * e '{"type":"placed","order_id":"o1",...}'`. Other fields are ignored.

For each batch the consumer reads (XREADGROUP, or XAUTOCLAIM of entries a dead consumer
left pending), it applies the decoded events through the daemon's one engine worker, then
in one MULTI/EXEC transaction writes a decision per entry to the decisions stream, moves
entries that cannot be applied to the dead-letter stream, and XACKs the batch. The
transaction makes "acknowledged" and "decision written" the same fact: an entry is never
acknowledged without its decision, and never gets a second decision once acknowledged.

Delivery is at least once: if a daemon dies after the engine applied a batch but before the
transaction, another consumer applies those entries again. The engines are idempotent, so
state is as if they came once; that second decision says `duplicate` for a `placed` and
carries `deliveries` (> 1) so a reader can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError

from ..events import Event
from .app import DecisionRow, decision_rows
from .config import StreamSource
from .deadletters import DeadLetterSink
from .metrics import Metrics
from .worker import EngineWorker, WorkerClosed

log = logging.getLogger("rewardcore.daemon")

_event = msgspec.json.Decoder(Event)
_json = msgspec.json.Encoder()
Entry = tuple[bytes, dict[bytes, bytes] | None]


class _Stopped(Exception):
    """Raised inside a batch when the daemon stops before the batch could finish; its
    entries stay pending for this consumer (or another, after claim_idle)."""


class StreamConsumer:
    def __init__(self, src: StreamSource, worker: EngineWorker, metrics: Metrics,
                 dead: DeadLetterSink, *, shared_engine: bool = True) -> None:
        self.src = src
        self.shared_engine = shared_engine
        self.worker = worker
        self.metrics = metrics
        self.dead = dead
        self.redis = aioredis.Redis(host=src.host, port=src.port, db=src.db,
                                    username=src.username, password=src.password,
                                    socket_timeout=max(10.0, src.block_ms / 1000 + 5),
                                    health_check_interval=30,
                                    # few quick retries: the consumer loop has its own, with
                                    # a log line, and a start against no Redis fails fast
                                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.applied = 0
        self.dead_lettered = 0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and make sure the group exists (a new group starts at `start`)."""
        await self.redis.ping()
        await self._ensure_group()
        if not self.shared_engine:
            await self._warn_if_shared()

    async def _warn_if_shared(self) -> None:
        """Several daemons in one group must share one engine (redis://); with an in-process
        engine each would award every region's slots on its own."""
        # Redis 7.0 counts a consumer's idle time from its last delivery, so a live but
        # starved consumer looks idle: any consumer seen in the last minute counts.
        recent = max(self.src.claim_idle_ms, 60_000)
        others = [_s(c.get("name")) for c in
                  await self.redis.xinfo_consumers(self.src.stream, self.src.group)
                  if _s(c.get("name")) != self.src.consumer and int(c.get("idle", 0)) < recent]
        if others:
            log.warning("stream_group_shared", extra={"fields": {
                "stream": self.src.stream, "group": self.src.group, "others": others[:10],
                "problem": "other consumers were active in this group lately, but this daemon's "
                           "engine keeps its claims in this process: each daemon will award "
                           "slots on its own; use a shared backend (redis://) for a group "
                           "of daemons"}})

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.src.stream, self.src.group, id=self.src.start,
                                           mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def stop(self) -> None:
        """Take no new entries; the batch in hand is finished (applied, written, acked)."""
        self._stopping = True
        self._stop_event.set()

    async def close(self) -> None:
        await self.redis.aclose()

    async def run(self) -> None:
        """Consume until stopped: own pending entries first, then new ones, claiming entries
        of dead consumers every claim_every_ms."""
        lag = asyncio.create_task(self._poll_lag())
        try:
            await self._retrying(self._own_pending)
            next_claim = 0.0  # claim at once: a replacement daemon picks up its predecessor's
            cursor = "0-0"
            while not self._stopping:
                now = time.monotonic()
                if now >= next_claim:
                    cursor = await self._retrying(self._claim_page, cursor) or "0-0"
                    if cursor in ("0-0", b"0-0"):
                        next_claim = time.monotonic() + self.src.claim_every_ms / 1000
                    continue
                block = max(1, min(self.src.block_ms, int((next_claim - now) * 1000)))
                await self._retrying(self._read_new, block)
        except _Stopped:
            pass
        finally:
            lag.cancel()

    async def _retrying(self, fn: Any, *args: Any) -> Any:
        """Run one step; on a Redis error log it and try again with backoff until stopped."""
        delay = 0.1
        while True:
            try:
                return await fn(*args)
            except (RedisError, OSError) as exc:
                if self._stopping:
                    raise _Stopped from exc
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    # The group (or the stream) was deleted under us: make it again.
                    log.error("stream_group_missing", extra={"fields": {
                        "stream": self.src.stream, "group": self.src.group}})
                    await self._safe(self._ensure_group)
                else:
                    log.error("stream_error", exc_info=exc, extra={"fields": {
                        "stream": self.src.stream, "retry_in_s": delay}})
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _safe(self, fn: Any) -> None:
        with contextlib.suppress(RedisError, OSError):
            await fn()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    # -- reading ----------------------------------------------------------------------------
    async def _own_pending(self) -> None:
        """Entries this consumer name was given before a restart and never acknowledged."""
        last: bytes | str = "0"
        while not self._stopping:
            resp = await self.redis.xreadgroup(self.src.group, self.src.consumer,
                                               {self.src.stream: last}, count=self.src.batch)
            entries = _entries(resp)
            if not entries:
                return
            await self._handle(entries, await self._deliveries(entries))
            last = entries[-1][0]

    async def _read_new(self, block_ms: int) -> None:
        resp = await self.redis.xreadgroup(self.src.group, self.src.consumer,
                                           {self.src.stream: ">"}, count=self.src.batch,
                                           block=block_ms)
        entries = _entries(resp)
        if entries:
            await self._handle(entries, {})

    async def _claim_page(self, cursor: str) -> str:
        """One XAUTOCLAIM page of entries idle for claim_idle_ms (their consumer is gone)."""
        resp = await self.redis.xautoclaim(self.src.stream, self.src.group, self.src.consumer,
                                           self.src.claim_idle_ms, start_id=cursor,
                                           count=self.src.batch)
        nxt = resp[0]
        entries = [e for e in resp[1] if e[0] is not None]
        deleted = resp[2] if len(resp) > 2 else []
        if deleted:
            # XAUTOCLAIM already dropped these from the pending list; say so where it's kept.
            await self._write_dead([(i, "deleted from the stream before it was processed",
                                     None, 0) for i in deleted])
        if entries:
            log.info("stream_claimed", extra={"fields": {
                "stream": self.src.stream, "group": self.src.group, "entries": len(entries),
                "first": _s(entries[0][0]), "last": _s(entries[-1][0])}})
            await self._handle(entries, await self._deliveries(entries))
        return _s(nxt)

    async def _deliveries(self, entries: list[Entry]) -> dict[bytes, int]:
        """How often each entry was delivered (this delivery included)."""
        rows = await self.redis.xpending_range(self.src.stream, self.src.group,
                                               entries[0][0], entries[-1][0],
                                               count=len(entries) * 2 + 16,
                                               consumername=self.src.consumer)
        return {_b(r["message_id"]): int(r["times_delivered"]) for r in rows}

    # -- one batch --------------------------------------------------------------------------
    async def _handle(self, entries: list[Entry], deliveries: dict[bytes, int]) -> None:
        events: list[Event] = []
        ev_ids: list[tuple[bytes, int]] = []
        dead: list[tuple[bytes, str, bytes | None, int]] = []
        for eid, fields in entries:
            n = deliveries.get(eid, 1)
            raw = fields.get(b"e") if fields else None
            if not fields:
                dead.append((eid, "deleted from the stream before it was processed", None, n))
            elif n > self.src.max_deliveries:
                dead.append((eid, f"delivered {n} times (max_deliveries "
                                  f"{self.src.max_deliveries}): every consumer that took it "
                                  "stopped before finishing it", raw, n))
            elif raw is None:
                names = ", ".join(sorted(_s(k) for k in fields))
                dead.append((eid, f"the entry has no field 'e' (fields: {names})", None, n))
            else:
                try:
                    events.append(_event.decode(raw))
                    ev_ids.append((eid, n))
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    dead.append((eid, f"field 'e': {exc}", raw, n))
        rows = await self._apply(events) if events else []
        await self._retrying(self._write, [e[0] for e in entries], ev_ids, rows, dead)
        self.applied += len(events)
        self.metrics.stream_entries.labels("applied").inc(len(events))
        if dead:
            self.metrics.stream_entries.labels("dead_lettered").inc(len(dead))

    async def _apply(self, events: list[Event]) -> list[DecisionRow]:
        """Apply through the worker; an engine error is retried (the same batch, so delivery
        counts only grow when a consumer dies), and a stop hands the batch back."""
        delay = 0.1
        while True:
            try:
                return decision_rows(events, await self.worker.apply(events))
            except WorkerClosed:
                raise _Stopped from None
            except Exception as exc:
                log.error("engine_error", exc_info=exc, extra={"fields": {
                    "where": "stream", "events": len(events), "retry_in_s": delay}})
                if self._stopping:
                    raise _Stopped from exc
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _write(self, ids: list[bytes], ev_ids: list[tuple[bytes, int]],
                     rows: list[DecisionRow], dead: list[tuple[bytes, str, bytes | None, int]],
                     ) -> None:
        maxlen = self.src.maxlen or None
        pipe = self.redis.pipeline(transaction=True)
        for (eid, n), row in zip(ev_ids, rows, strict=True):
            fields: dict[Any, Any] = {"src": eid, "d": _json.encode(row),
                                      "consumer": self.src.consumer}
            if n > 1:
                fields["deliveries"] = n
            pipe.xadd(self.src.out, fields, maxlen=maxlen, approximate=True)
        self._queue_dead(pipe, dead, maxlen)
        pipe.xack(self.src.stream, self.src.group, *ids)
        await pipe.execute()
        if dead:
            self._record_dead(dead)

    async def _write_dead(self, dead: list[tuple[bytes, str, bytes | None, int]]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self._queue_dead(pipe, dead, self.src.maxlen or None)
        await pipe.execute()
        self._record_dead(dead)

    def _queue_dead(self, pipe: Any, dead: list[tuple[bytes, str, bytes | None, int]],
                    maxlen: int | None) -> None:
        for eid, reason, raw, n in dead:
            fields: dict[Any, Any] = {"src": eid, "reason": reason, "deliveries": n,
                                      "consumer": self.src.consumer}
            if raw is not None:
                fields["e"] = raw
            pipe.xadd(self.src.dead, fields, maxlen=maxlen, approximate=True)

    def _record_dead(self, dead: list[tuple[bytes, str, bytes | None, int]]) -> None:
        self.dead_lettered += len(dead)
        self.dead.add("stream", [
            {"stream": self.src.stream, "id": _s(eid), "reason": reason, "deliveries": n,
             **({"raw": raw.decode("utf-8", "replace")} if raw is not None else {})}
            for eid, reason, raw, n in dead
        ])

    # -- lag --------------------------------------------------------------------------------
    async def _poll_lag(self) -> None:
        labels = (self.src.stream, self.src.group)
        while True:
            try:
                for g in await self.redis.xinfo_groups(self.src.stream):
                    if _s(g.get("name")) == self.src.group:
                        if g.get("lag") is not None:
                            self.metrics.stream_lag.labels(*labels).set(int(g["lag"]))
                        self.metrics.stream_pending.labels(*labels).set(int(g["pending"]))
            except (RedisError, OSError):
                pass  # the consumer loop reports Redis trouble; a gauge just goes stale
            await asyncio.sleep(1.0)


def _entries(resp: Any) -> list[Entry]:
    # RESP2 shape: [[stream, [(id, fields), ...]]]
    return list(resp[0][1]) if resp else []


def _b(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)

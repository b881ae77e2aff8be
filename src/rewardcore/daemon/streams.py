"""The Redis Streams source: one consumer of a consumer group.

Entry format (input stream): one event per entry, in the field `e`, as JSON bytes, e.g.
`XADD orders * e '{"type":"placed","order_id":"o1",...}'`. Other fields are ignored.

For each batch the consumer reads (XREADGROUP, or XAUTOCLAIM of entries a dead consumer
left pending), it applies the decoded events through the daemon's one engine worker, then
in one atomic script (COMMIT_BATCH) writes a decision per entry to the decisions stream,
moves entries that cannot be applied to the dead-letter stream, and XACKs them, for the
entries it still owns. That makes "acknowledged" and "decision written" the same fact: an
entry is never acknowledged without its decision, and never gets a second one, even when a
slow consumer's entries were claimed by another before it finished.

Delivery is at least once: if a daemon dies after the engine applied a batch but before the
commit script, another consumer applies those entries again. The engines are idempotent, so
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

from ..codec import decode_json_event
from ..errors import EventError
from ..events import Event
from .app import DecisionRow, decision_rows
from .config import StreamSource
from .deadletters import DeadLetterSink
from .metrics import Metrics
from .worker import EngineWorker, WorkerClosed

log = logging.getLogger("rewardcore.daemon")

# One consumer's batch, committed atomically for the entries it still owns.
COMMIT_BATCH = """
-- Write a consumer's decisions (and dead letters) and XACK its entries, atomically, but only
-- for entries still pending for this consumer: one that another consumer claimed meanwhile
-- (XAUTOCLAIM after claim_idle) is left to the claimer, so no entry gets two decisions.
-- KEYS[1] source stream, KEYS[2] decisions stream, KEYS[3] dead-letter stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] maxlen (approximate; 0: no trimming),
-- ARGV[4] entries; then per entry: id, 'd' (decision) or 'x' (dead letter), k, k pairs.
-- Returns the ids that were not this consumer's any more.
local group, consumer = ARGV[1], ARGV[2]
local maxlen = tonumber(ARGV[3])
local entries = tonumber(ARGV[4])
local skipped = {}
local at = 5
for _ = 1, entries do
  local id, target, k = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local fields = {}
  for j = 1, 2 * k do fields[j] = ARGV[at + 2 + j] end
  at = at + 3 + 2 * k
  local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if p[1] and p[1][2] == consumer then
    local key = KEYS[3]
    if target == 'd' then key = KEYS[2] end
    if maxlen > 0 then
      redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
    else
      redis.call('XADD', key, '*', unpack(fields))
    end
    redis.call('XACK', KEYS[1], group, id)
  else
    skipped[#skipped + 1] = id
  end
end
return skipped
"""

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
        self._commit_script = self.redis.register_script(COMMIT_BATCH)
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.applied = 0
        self.dead_lettered = 0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and make sure the group exists (a new group starts at `start`)."""
        await self.redis.ping()
        await self._ensure_group()

    async def _warn_if_shared(self) -> None:
        """Several daemons in one group must share one engine (redis://); with an in-process
        engine each would award every region's slots on its own. Checked after this
        consumer's first read (which registers it in the group): of two daemons starting
        together, the one that checks last sees the other."""
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
            if not self.shared_engine:
                with contextlib.suppress(RedisError, OSError):
                    await self._warn_if_shared()
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
                    # every check of the HTTP path; whatever the bytes make it raise is
                    # this entry's dead letter, never the consumer's end
                    events.append(decode_json_event(raw))
                    ev_ids.append((eid, n))
                except EventError as exc:
                    dead.append((eid, f"field 'e': {exc}", raw, n))
        rows = await self._apply(events) if events else []
        skipped = await self._retrying(self._commit, ev_ids, rows, dead)
        applied = len(events) - sum(1 for eid, _ in ev_ids if eid in skipped)
        lettered = len(dead) - sum(1 for d in dead if d[0] in skipped)
        self.applied += applied
        self.metrics.stream_entries.labels("applied").inc(applied)
        if lettered:
            self.metrics.stream_entries.labels("dead_lettered").inc(lettered)
        if skipped:
            # This consumer was slower than claim_idle: another one claimed these entries
            # and decides them; the engine saw them twice, which its idempotence absorbs.
            self.metrics.stream_entries.labels("taken_over").inc(len(skipped))
            log.warning("stream_entries_taken_over", extra={"fields": {
                "stream": self.src.stream, "group": self.src.group, "entries": len(skipped),
                "claim_idle_ms": self.src.claim_idle_ms}})

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

    async def _commit(self, ev_ids: list[tuple[bytes, int]], rows: list[DecisionRow],
                      dead: list[tuple[bytes, str, bytes | None, int]]) -> set[bytes]:
        """Write the decisions and dead letters and acknowledge, atomically, for the entries
        this consumer still owns; returns the ids another consumer claimed meanwhile."""
        args: list[Any] = [self.src.group, self.src.consumer, self.src.maxlen,
                           len(ev_ids) + len(dead)]
        for (eid, n), row in zip(ev_ids, rows, strict=True):
            fields: list[Any] = ["src", eid, "d", _json.encode(row),
                                 "consumer", self.src.consumer]
            if n > 1:
                fields += ["deliveries", n]
            args += [eid, "d", len(fields) // 2, *fields]
        for eid, fields in self._dead_fields(dead):
            args += [eid, "x", len(fields) // 2, *fields]
        skipped = await self._commit_script(
            keys=[self.src.stream, self.src.out, self.src.dead], args=args)
        skipped_ids = {_b(i) for i in skipped}
        mine = [d for d in dead if d[0] not in skipped_ids]
        if mine:
            self._record_dead(mine)
        return skipped_ids

    async def _write_dead(self, dead: list[tuple[bytes, str, bytes | None, int]]) -> None:
        """Dead letters for entries no longer pending (XAUTOCLAIM dropped them)."""
        maxlen = self.src.maxlen or None
        pipe = self.redis.pipeline(transaction=True)
        for _, fields in self._dead_fields(dead):
            pipe.xadd(self.src.dead, dict(zip(fields[::2], fields[1::2], strict=True)),
                      maxlen=maxlen, approximate=True)
        await pipe.execute()
        self._record_dead(dead)

    def _dead_fields(self, dead: list[tuple[bytes, str, bytes | None, int]],
                     ) -> list[tuple[bytes, list[Any]]]:
        out = []
        for eid, reason, raw, n in dead:
            fields: list[Any] = ["src", eid, "reason", reason, "deliveries", n,
                                 "consumer", self.src.consumer]
            if raw is not None:
                fields += ["e", raw]
            out.append((eid, fields))
        return out

    def _record_dead(self, dead: list[tuple[bytes, str, bytes | None, int]]) -> None:
        self.dead_lettered += len(dead)
        self.dead.add("stream", [
            {"stream": self.src.stream, "id": _s(eid), "reason": reason, "deliveries": n,
             **({"raw_bytes": raw} if raw is not None else {})}
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

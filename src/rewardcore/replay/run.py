"""The run loop: one worker's share of the input, block by block, through the engine, with
its outcome counts and dead letters; and the report of a whole replay."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgspec
import numpy as np

from .._files import DeadLetterFile
from ..backends import open_engine
from ..campaign import load_campaign
from ..codec import JsonlBlocks, decode_jsonl
from ..engine import Engine, Resumable
from ..errors import RewardcoreError
from ..outcomes import PLACED_OUTCOMES, Outcome
from .source import (
    BLOCK,
    crc32c,
    decode_selected,
    lines_end,
    mapped_once,
    route,
    slow_partition,
)

N_OUTCOMES = len(Outcome)


class Job(msgspec.Struct):
    """What one worker does: its partitions of the input, from where."""

    campaign: str
    url: str
    events: str  # the input file; "" for the stream handed to run_job
    parts: int
    workers: int
    index: int
    skip: list[int]  # per partition: the offset before which its lines are applied
    start: tuple[int, int, int]  # (offset, line, crc) where this worker's scan begins
    batch: int
    dead_letters: str
    parent: int = 0  # the pid a worker process dies with


class WorkResult(msgspec.Struct):
    index: int
    events: int = 0
    dead: int = 0
    batches: int = 0
    counts: list[int] = msgspec.field(default_factory=lambda: [0] * N_OUTCOMES)
    started: float = 0.0  # time.monotonic(): comparable between processes of one host
    finished: float = 0.0
    cpu: float = 0.0  # CPU seconds this worker spent on its input
    stats: dict[str, Any] = msgspec.field(default_factory=dict)


@dataclass
class ReplayReport:
    """What a replay did: for the summary line, the benchmark and tests."""

    events: int = 0
    dead: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(N_OUTCOMES, np.int64))
    seconds: float = 0.0  # wall time, start to end, worker processes included
    work_seconds: float = 0.0  # from the first worker starting its input to the last finishing
    resumed_from: list[int] = field(default_factory=list)
    workers: list[WorkResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, results: list[WorkResult], seconds: float, resumed_from: list[int],
           notes: list[str]) -> ReplayReport:
        counts = np.zeros(N_OUTCOMES, np.int64)
        for r in results:
            counts += np.asarray(r.counts, np.int64)
        started = [r.started for r in results if r.finished]
        finished = [r.finished for r in results if r.finished]
        return cls(sum(r.events for r in results), sum(r.dead for r in results), counts,
                   seconds, max(finished) - min(started) if started else 0.0, resumed_from,
                   results, notes)

    @property
    def outcomes(self) -> Counter[Outcome]:
        return Counter({o: int(self.counts[o]) for o in Outcome if self.counts[o]})

    @property
    def rate(self) -> float:
        """Events a second of work (start-up left out)."""
        return self.events / self.work_seconds if self.work_seconds else 0.0

    def summary(self) -> str:
        rate = self.events / self.seconds if self.seconds else 0.0
        outcomes = self.outcomes
        placed = sum(outcomes[o] for o in PLACED_OUTCOMES)
        lines = [
            f"events {self.events:,} in {self.seconds:.2f}s ({rate:,.0f} events/s), "
            f"dead letters {self.dead:,}",
            f"placed {placed:,}: " + ", ".join(
                f"{o.label} {outcomes[o]:,}" for o in PLACED_OUTCOMES if outcomes[o]
            ),
        ]
        others = [o for o in Outcome if o not in PLACED_OUTCOMES and outcomes[o]]
        if others:
            lines.append("other: " + ", ".join(f"{o.label} {outcomes[o]:,}" for o in others))
        if len(self.workers) > 1:
            lines[-1] += f" ({len(self.workers)} workers)"
        return "\n".join(lines)


_stop = False  # a worker was asked to stop (SIGTERM): it does so between batches


def request_stop(*_: object) -> None:
    """Stop the run loop between batches. No exception from here: raised at an arbitrary
    point it could cut a segment's close short."""
    global _stop
    _stop = True


def stop_requested() -> bool:
    return _stop


def run_job(job: Job, engine: Engine | None = None, ready: Callable[[], None] | None = None,
            stream: BinaryIO | None = None,
            progress: Callable[[int], object] | None = None) -> WorkResult:
    """Replay one worker's share of the input (the file `job.events`, or `stream`) into the
    backend (opened here unless given); `ready()` is called once everything is open, just
    before the input is read; `progress(n)` as each n bytes are scanned."""
    result = WorkResult(job.index)
    own = engine is None
    if engine is None:
        engine = open_engine(load_campaign(job.campaign), job.url)
    try:
        with DeadLetterFile(job.dead_letters) as dead_out:
            scan = _Scan(job, engine, dead_out, result, progress)
            if stream is not None:
                _timed(result, ready, scan, JsonlBlocks(stream, BLOCK))
            else:
                with mapped_once(job.events) as (view, done):
                    scan.done = done
                    _timed(result, ready, scan, [(view, 0)])
        result.stats = engine.stats()
    finally:
        if own:
            engine.close()
    result.counts = scan.counts.tolist()
    return result


def _timed(result: WorkResult, ready: Callable[[], None] | None, scan: _Scan,
           blocks: Iterable[tuple[memoryview, int]]) -> None:
    if ready is not None:
        ready()
    result.started = time.monotonic()
    cpu0 = time.process_time()
    for data, base in blocks:
        scan.scan(data, base)
    scan.finish()
    result.finished = time.monotonic()
    result.cpu = time.process_time() - cpu0


class _Scan:
    """The loop over one worker's lines: route or cut a block, decode it, apply it (with
    its input position for a resumable engine), count its outcomes."""

    def __init__(self, job: Job, engine: Engine, dead_out: DeadLetterFile,
                 result: WorkResult, progress: Callable[[int], object] | None) -> None:
        self.job = job
        self.progress = progress
        self.engine = engine
        self.dead_out = dead_out
        self.result = result
        # a resumable engine records each batch's input position (and needs its CRC-32C)
        self.apply_at = engine.apply_at if isinstance(engine, Resumable) else None
        self.counts = np.zeros(N_OUTCOMES, np.int64)
        self.pos, self.line, self.crc = job.start
        self.routed = job.parts > 1
        self.mine = [j for j in range(job.parts) if j % job.workers == job.index]
        self.skip = np.asarray(job.skip, np.int64)
        self.slow = slow_partition(job.parts)
        self.block = max(BLOCK, job.batch * 256)
        self.out = bytearray(self.block + 1)
        self.offs = np.zeros(max(job.batch, 1), np.int64)
        self.idxs = np.zeros(max(job.batch, 1), np.int64)
        self.pending: tuple[int, list[int], int, int, int] | None = None
        self.done: Callable[[int], None] | None = None  # the input before this is read

    def scan(self, data: memoryview, base: int) -> None:
        """Scan `data`, whose first byte is byte `base` of the input (a mapped file is one
        block at base 0, from the job's start; a stream comes in blocks of whole lines)."""
        job, result = self.job, self.result
        pos = self.pos - base
        size = len(data)
        while pos < size:
            if _stop:
                raise RewardcoreError(f"stopped by the replay at byte {base + pos:,} of the "
                                      "input")
            limit = min(size, pos + self.block)
            used = n = 0
            if self.routed:
                end, scanned, n, used = route(data, pos, limit, job.parts, job.workers,
                                              job.index, self.skip, self.out, self.offs,
                                              self.idxs, self.slow)
            else:
                end, scanned = lines_end(data, pos, limit, job.batch)
            if end == pos:  # a line longer than the block: look further
                self.block *= 2
                self.out = bytearray(self.block + 1)
                continue
            if self.apply_at is not None:
                self.crc = crc32c(data[pos:end], self.crc)
            if self.routed:
                raw = memoryview(self.out)[:used]
                events, dead = decode_selected(raw, self.offs[:n], self.idxs[:n], self.line)
            else:
                raw = data[pos:end]
                events, dead = decode_jsonl(raw, self.line + 1, base + pos)
            result.dead += self.dead_out.write(d.to_dict() for d in dead)
            self.line += scanned
            at = (job.parts, self.mine, base + end, self.line, self.crc)
            if events:
                decisions = (self.apply_at(events, at, raw) if self.apply_at is not None
                             else self.engine.apply(events))
                self.counts += np.bincount(decisions.outcome, minlength=N_OUTCOMES)
                result.events += len(events)
                result.batches += 1
                self.pending = None
            else:
                self.pending = at
            if self.progress is not None:
                self.progress(end - pos)
            if self.done is not None:
                self.done(base + end)
            pos = end
        self.pos = base + pos

    def finish(self) -> None:
        if self.pending is not None and self.apply_at is not None:
            self.apply_at([], self.pending)  # record that the rest of the input was seen

"""Resuming a replay after a crash.

The resumable engines (shm://, durable memory:///dir) record, atomically with each batch,
how far the replay got: per partition the input offset, line and CRC-32C of the input
before it. A rerun with the same input (its prefix up to those offsets has the same
CRC-32C) skips what was applied and goes on, so it ends in the state, outcome counts
included, that a run without the crash would have reached. A different input (or a damaged
prefix) is applied from the start, which the engines' idempotency makes safe for claims. A
longer input whose beginning is the old one (an appended log) resumes too. Dead letters of
the resumed part may be written a second time (they are written before their batch is
applied): at least once, never lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from .source import crc32c, mapped

Start = tuple[int, int, int]  # (offset, line, crc) where a worker's scan begins


@dataclass
class Plan:
    """How the input is split and where each worker begins."""

    parts: int
    skip: list[int]  # per partition: the offset before which its lines were applied
    starts: list[Start]  # per worker
    notes: list[str]

    @classmethod
    def fresh(cls, workers: int, notes: list[str] | None = None) -> Plan:
        return cls(workers, [0] * workers, [(0, 0, 0)] * workers, notes or [])


def plan(positions: tuple[int, list[Start]], path: str | None, size: int | None,
         workers: int) -> Plan:
    """The plan for replaying the input at `path` (`size` bytes) with `workers` workers into
    a state whose recorded replay `positions` are (parts, [(offset, line, crc)])."""
    parts, pos = positions
    if parts == 0 or not any(off for off, _, _ in pos) or path is None or size is None:
        return Plan.fresh(workers)
    # the input must begin with what was applied: check the CRC-32C at every recorded offset
    wanted = sorted({off for off, _, _ in pos})
    if wanted[-1] > size:
        return Plan.fresh(workers, ["the state was replayed from a longer input; applying "
                                    "this one from the start (outcome counts will include "
                                    "redeliveries)"])
    crc_at = {0: 0}
    crc, at = 0, 0
    with mapped(path) as view:
        for off in wanted:
            crc = crc32c(view[at:off], crc)
            at = off
            crc_at[off] = crc
    if any(crc_at[off] != c for off, _, c in pos):
        return Plan.fresh(workers, ["the input differs from the one replayed into this "
                                    "state; applying it from the start (outcome counts will "
                                    "include redeliveries)"])
    skip = [off for off, _, _ in pos]
    starts = []
    for k in range(workers):
        own = [pos[j] for j in range(parts) if j % workers == k]
        starts.append(min(own) if own else (size, 0, 0))
    notes = []
    if sum(skip):
        first = min(skip)
        notes.append(f"resuming: the first {first:,} bytes of the input were applied before"
                     + (" (more in some partitions)" if max(skip) != first else ""))
    return Plan(parts, skip, starts, notes)

"""Durable embedded mode: a write-ahead log and snapshots in a directory.

    memory:///var/lib/rewardcore/d11?fsync=batch          (the default policy)
    memory:///var/lib/rewardcore/d11?fsync=interval&ms=50
    memory:///var/lib/rewardcore/d11?fsync=none&snapshot_mb=256&orders=20000000

Every batch is appended to the log (length-prefixed, CRC-32C-checked msgpack records of the
events) before its decisions are returned; every `snapshot_mb` of log the whole state is
written to a snapshot file (temp file, fsync, rename, fsync of the directory) and the log
starts a new generation. Opening the directory loads the newest snapshot and replays the
log after it; a torn or corrupt tail is detected by its checksum, cut, and reported in
`engine.recovery`, never applied. What each fsync policy can lose, and the file formats,
are in docs/durable.md.

The files and their formats are rewardcore.storage's; this module is the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._url import BackendURL
from ..campaign import Campaign
from ..engine import Balance, Claim, Decisions, Engine, Position, RegionStatus, Resumable, Summary
from ..errors import BackendError, ConfigError
from ..events import Event
from ..outcomes import Outcome
from ..storage.log import DurableLog, Foreign, RecoveryReport, campaign_fingerprint
from ..storage.options import DURABLE_PARAMS, DurableOptions, durable_options
from ..storage.records import encode_record

log = logging.getLogger("rewardcore.durable")


class DurableEngine(Resumable, Engine):
    """`memory:///path`: the memory engine with a write-ahead log and snapshots."""

    scheme = "memory"
    keeps_state = True
    #: a batch pays a log record and, with fsync=batch, an fsync: larger batches amortise it
    preferred_batch = 4096

    def __init__(self, campaign: Campaign, path: Path, opts: DurableOptions | None = None,
                 expected_orders: int = 0, *, to_reset: bool = False) -> None:
        """`to_reset=True` (only for `reset()`, see open_to_reset) opens a directory that
        holds another campaign's state instead of refusing it; nothing but reset() works
        until it is called."""
        from .memory import MemoryEngine

        super().__init__(campaign)
        self.path = path
        self.opts = opts = opts or DurableOptions()
        self._expected = expected_orders
        self.inner = MemoryEngine(campaign, expected_orders)
        self.log = DurableLog(path, opts, "memory", campaign, campaign_fingerprint(campaign))
        self._positions: tuple[int, list[tuple[int, int, int]]] = (0, [])
        self.foreign: str | None = None
        self.recovery: RecoveryReport | None = None
        try:
            try:
                self.log.check_campaign()
            except Foreign as exc:
                if not to_reset:
                    raise ConfigError(f"{path}: {exc}; to start it afresh for this campaign, "
                                      f"rewardcore reset CAMPAIGN.toml --backend "
                                      f"memory://{path} --yes (deletes the state it holds), "
                                      "or use another directory") from None
                # Only reset() may use a directory of another campaign: it starts it afresh.
                self.foreign = str(exc)
                return
            self.recovery = self.log.recover(self._restore, self._replay)
        except BaseException:
            self.log.close()
            raise

    @classmethod
    def from_url(cls, campaign: Campaign, url: str, *, to_reset: bool = False) -> Engine:
        u = BackendURL(url, known=("orders", *DURABLE_PARAMS))
        if u.netloc:
            raise u.error("durable mode needs an absolute path, memory:///path/to/dir "
                          "(three slashes)")
        return cls(campaign, Path(u.path), durable_options(u), u.int("orders", 0),
                   to_reset=to_reset)

    @classmethod
    def open_to_reset(cls, campaign: Campaign, url: str) -> Engine:
        """Open a directory to reset it, even one holding another campaign's state."""
        return cls.from_url(campaign, url, to_reset=True)

    @property
    def open_note(self) -> str | None:
        rec = self.recovery
        return rec.summary() if rec is not None and (rec.records or rec.cut or rec.snapshot) \
            else None

    # -- recovery hooks ---------------------------------------------------------------------
    def _restore(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        self.inner.core.restore(arrays, scalars["core"])
        parts, pos = scalars["positions"]
        self._positions = (parts, [tuple(p) for p in pos])

    def _replay(self, pos: Position | None, events: list[Event]) -> None:
        if events:
            self.inner.apply(events)
        if pos is not None:
            self._note_position(pos)

    def _note_position(self, pos: Position) -> None:
        parts, which, offset, line, crc = pos
        have_parts, have = self._positions
        rows = list(have) if have_parts == parts else [(0, 0, 0)] * parts
        for j in which:
            if offset >= rows[j][0]:
                rows[j] = (offset, line, crc)
        self._positions = (parts, rows)

    def replay_positions(self) -> tuple[int, list[tuple[int, int, int]]]:
        """(parts, [(offset, line, crc)]) of the last `rewardcore replay` (for resuming)."""
        return self._positions

    def _usable(self) -> None:
        if self.foreign is not None:
            raise ConfigError(f"{self.path}: {self.foreign}; opened only to be reset: "
                              "call reset() first")

    # -- the hot path -----------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> Decisions:
        return self.apply_at(events, None)

    def apply_at(self, events: Sequence[Event], pos: Position | None,
                 jsonl: bytes | memoryview | None = None) -> Decisions:
        """Apply a batch and log it, with the input position of a CLI replay if given, as
        the JSON lines `jsonl` it was decoded from if given (see encode_record)."""
        self._usable()
        batch = events if type(events) is list else list(events)
        self.inner.prepare(batch)  # a batch that does not validate is never logged
        payload = encode_record(batch, pos, jsonl)
        start = self.log.append(payload)
        try:
            self.log.committed()
            out = self.inner.commit()
        except BaseException:
            self.log.take_back(start)  # refused or interrupted: the log must not keep it
            raise
        if pos is not None:
            self._note_position(pos)
        if self.log.wants_snapshot:
            self._try_checkpoint()
        return out

    def _try_checkpoint(self) -> None:
        # The batch is applied and logged; a snapshot that fails (a full disk) must not
        # fail it. The log keeps everything; the snapshot is tried again later.
        try:
            self.checkpoint()
        except BackendError as exc:
            self.log.since_snapshot = 0
            log.error("%s (the log still holds every batch; retrying later)", exc)

    def checkpoint(self) -> None:
        """Snapshot the state now and start a new log generation."""
        self._usable()
        arrays, scalars = self.inner.core.snapshot()
        seq = self.log.seq
        gen = self.log.rotate()
        parts, pos = self._positions
        self.log.save_snapshot(gen, seq, arrays, {"core": scalars,
                                                  "positions": [parts, [list(p) for p in pos]]})

    def reset(self) -> None:
        """Forget everything; the directory starts afresh (even if it held another campaign)."""
        self.inner.reset()
        self._positions = (0, [])
        if self.foreign is not None:
            # start past every generation of the old state; the checkpoint then deletes it
            self.foreign = None
            wals, snaps = self.log._listing()
            self.log.gen, self.log.seq = max(wals + snaps + [0]), 0
        self.checkpoint()

    def close(self) -> None:
        self.log.close()

    # -- views ------------------------------------------------------------------------------
    def claims(self) -> list[Claim]:
        self._usable()
        return self.inner.claims()

    def balances(self) -> dict[str, Balance]:
        self._usable()
        return self.inner.balances()

    def balance(self, beneficiary: str) -> Balance:
        self._usable()
        return self.inner.balance(beneficiary)

    def outcome_counts(self) -> dict[Outcome, int]:
        self._usable()
        return self.inner.outcome_counts()

    def redemptions(self) -> dict[str, Outcome]:
        self._usable()
        return self.inner.redemptions()

    def stock(self) -> dict[str, int]:
        self._usable()
        return self.inner.stock()

    def region_status(self, code: int) -> RegionStatus | None:
        self._usable()
        return self.inner.region_status(code)

    def summary(self) -> Summary:
        self._usable()
        return self.inner.summary()

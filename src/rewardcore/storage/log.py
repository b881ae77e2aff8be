"""The directory log: a durable directory's lock, its log generations and snapshots, the
recovery that loads them, appends with their fsync policy (and the thread that syncs on an
interval), and rotation to a new generation with a snapshot.

Directory layout:
    LOCK                    flock()ed while open: one process (or one shm segment's workers)
    OWNER                   "memory" or "shm:NAME": which engine writes here
    snapshot-GGGGGGGG.rcs   the state before generation G's log
    wal-GGGGGGGG.log        records applied after that snapshot
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from .. import _scan
from ..campaign import Campaign
from ..engine import Position
from ..errors import BackendError, ConfigError
from ..events import Event
from .options import DurableOptions
from .records import (
    _REC,
    _dec_header,
    _enc,
    _parse_at,
    _Parsed,
    _valid_record_after,
    _WalHeader,
    decode_record,
    frame,
    record_header,
)
from .snapshots import _fsync_dir, _os_error, read_snapshot, read_snapshot_meta, write_snapshot

log = logging.getLogger("rewardcore.durable")

_WAL_RE = re.compile(r"^wal-(\d{8})\.log$")
_SNAP_RE = re.compile(r"^snapshot-(\d{8})\.rcs$")


def campaign_fingerprint(campaign: Campaign) -> int:
    """64 bits that change when anything in the campaign file changes: state saved (or
    shared) under one campaign file is never read under another."""
    digest = hashlib.blake2b(msgspec.msgpack.encode(campaign.spec), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass
class RecoveryReport:
    """What opening a durable directory found and did."""

    path: str
    snapshot: str | None = None  # the snapshot file loaded
    records: int = 0  # log records replayed after it
    events: int = 0
    cut_file: str | None = None  # the log whose torn tail was cut
    cut_offset: int = 0
    cut_bytes: int = 0
    cut_reason: str = ""
    seconds: float = 0.0
    removed: list[str] = field(default_factory=list)  # stale files deleted

    @property
    def cut(self) -> bool:
        return self.cut_file is not None

    def summary(self) -> str:
        text = (f"recovered {self.path}: "
                f"{'snapshot ' + self.snapshot if self.snapshot else 'no snapshot'}, "
                f"{self.records:,} log records ({self.events:,} events) replayed "
                f"in {self.seconds:.2f}s")
        if self.cut:
            text += (f"; cut a torn tail of {self.cut_bytes:,} bytes at offset "
                     f"{self.cut_offset:,} of {self.cut_file} ({self.cut_reason})")
        return text


class Foreign(ConfigError):
    """The directory holds the state of another campaign (or engine)."""


class DurableLog:
    """The directory of one durable engine: lock, snapshots, log; see the module docstring.

    `shared=True` (the shm engine) lets the workers attached to one segment use the
    directory together: the first takes the lock exclusively to recover, then everyone
    holds it shared. Appends then happen under the segment's mutex, so the log's order is
    the order the batches were applied in.
    """

    def __init__(self, path: Path, opts: DurableOptions, owner: str, campaign: Campaign,
                 campaign_fp: int, shared: bool = False) -> None:
        self.path = path
        self.opts = opts
        self.owner = owner
        self.campaign = campaign
        self.campaign_fp = campaign_fp
        self.shared = shared
        self.first = True  # holds the lock exclusively (recovery is this process's job)
        self._lock_fd = -1
        self._fd = -1
        self.gen = 0
        self.size = 0  # bytes in the current log file
        self.seq = 0  # last sequence number written
        self.since_snapshot = 0
        self._dirty = False
        self._io = threading.Lock()  # the fd against the interval syncer
        self._syncer: threading.Thread | None = None
        self._stop = threading.Event()
        self.sync_error: BackendError | None = None
        self._take_lock()

    # -- the directory lock ----------------------------------------------------------------
    def _take_lock(self) -> None:
        p = self.path
        try:
            p.mkdir(parents=True, exist_ok=True)
            fd = os.open(p / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _os_error(p, "cannot open the durable directory", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.first = True
        except BlockingIOError:
            if not self.shared or not self._join_shared(fd):
                os.close(fd)
                raise BackendError(f"{p}: the durable directory is in use by another process "
                                   f"({self._owner_text()}); close it first") from None
            self.first = False
        self._lock_fd = fd
        if self.first:
            try:
                (p / "OWNER").write_text(self.owner + "\n")
            except OSError as exc:
                self.close()
                raise _os_error(p, "cannot write OWNER", exc) from None

    def _owner_text(self) -> str:
        try:
            return (self.path / "OWNER").read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _join_shared(self, fd: int) -> bool:
        """Join the workers of the same segment: shared lock, once its recovery is done."""
        deadline = time.monotonic() + 60
        while True:
            if self._owner_text() != self.owner:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)  # the first process is recovering

    def share(self) -> None:
        """After recovery, let the segment's other workers in."""
        if self.shared and self.first:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            self.first = False

    # -- files ------------------------------------------------------------------------------
    def _wal_path(self, gen: int) -> Path:
        return self.path / f"wal-{gen:08d}.log"

    def _snap_path(self, gen: int) -> Path:
        return self.path / f"snapshot-{gen:08d}.rcs"

    def _listing(self) -> tuple[list[int], list[int]]:
        wals, snaps = [], []
        for name in os.listdir(self.path):
            if m := _WAL_RE.match(name):
                wals.append(int(m.group(1)))
            elif m := _SNAP_RE.match(name):
                snaps.append(int(m.group(1)))
        return sorted(wals), sorted(snaps)

    def _header_payload(self, gen: int) -> bytes:
        return _enc.encode(_WalHeader(1, gen, self.owner, self.campaign_fp, self.campaign.id))

    def check_campaign(self) -> None:
        """Raise Foreign when the directory's state belongs to another campaign or engine."""
        wals, snaps = self._listing()
        for gen in reversed(snaps):
            try:
                meta = read_snapshot_meta(self._snap_path(gen))
            except BackendError:
                continue
            self._check_meta(meta.get("owner_kind"), meta.get("campaign_fp"),
                             meta.get("campaign_id"), self._snap_path(gen))
            return
        for gen in wals:
            head = self._read_wal_header(gen)
            if head is not None:
                self._check_meta(head.owner.split(":")[0], head.campaign_fp, head.campaign_id,
                                 self._wal_path(gen))
                return

    def _check_meta(self, kind: Any, fp: Any, cid: Any, where: Path) -> None:
        mine = self.owner.split(":")[0]
        if kind != mine:
            raise Foreign(f"{where} was written by the {kind} engine, not {mine}")
        if fp != self.campaign_fp:
            held = f"{fp:016x}" if isinstance(fp, int) else repr(fp)
            raise Foreign(f"{where} holds the state of campaign {cid!r} as another campaign "
                          f"file defined it (fingerprint {held}; this one is "
                          f"{self.campaign.id!r}, fingerprint {self.campaign_fp:016x})")

    def _read_wal_header(self, gen: int) -> _WalHeader | None:
        try:
            with open(self._wal_path(gen), "rb") as f:
                got = _parse_at(f.read(_REC.size + 4096), 0)
        except OSError:
            return None
        if not isinstance(got, _Parsed):
            return None
        try:
            return _dec_header.decode(got.payload)
        except msgspec.DecodeError:
            return None

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, restore: Callable[[dict[str, np.ndarray], dict[str, Any]], None],
                replay: Callable[[Position | None, list[Event]], None],
                clean: bool = True) -> RecoveryReport:
        """Load the newest snapshot, replay the log after it, cut a torn tail; then the log
        is open for appends. `restore(arrays, scalars)` and `replay(pos, events)` change the
        engine's state. `clean` removes leftover temp files (not while other processes of
        a segment may be writing a snapshot)."""
        t0 = time.perf_counter()
        report = RecoveryReport(str(self.path))
        for name in os.listdir(self.path) if clean else ():
            if name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    (self.path / name).unlink()
                    report.removed.append(name)
        wals, snaps = self._listing()
        base_gen, last_seq = 0, 0
        if snaps:
            base_gen = snaps[-1]
            meta, arrays, scalars = read_snapshot(self._snap_path(base_gen))
            self._check_meta(meta.get("owner_kind"), meta.get("campaign_fp"),
                             meta.get("campaign_id"), self._snap_path(base_gen))
            where = self._snap_path(base_gen)
            if meta.get("hash") != _scan.hash_probe():
                raise BackendError(f"{where}: written by a build whose order-id hash differs; "
                                   "this build cannot read its tables")
            try:
                restore(arrays, scalars)
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                raise BackendError(f"{where}: the snapshot does not fit this build's engine "
                                   f"({type(exc).__name__}: {exc})") from None
            last_seq = int(meta["seq"])
            report.snapshot = self._snap_path(base_gen).name
        # files older than the snapshot are covered by it
        for gen in snaps[:-1]:
            self._snap_path(gen).unlink(missing_ok=True)
            report.removed.append(self._snap_path(gen).name)
        for gen in [g for g in wals if g < base_gen]:
            self._wal_path(gen).unlink(missing_ok=True)
            report.removed.append(self._wal_path(gen).name)
        todo = [g for g in wals if g >= base_gen]
        self.gen, self.size, self.seq = base_gen, 0, last_seq
        self.since_snapshot = 0
        for k, gen in enumerate(todo):
            last = k == len(todo) - 1
            size, last_seq = self._replay_file(gen, last_seq, last, replay, report)
            self.gen, self.size, self.seq = gen, size, last_seq
        self._open_append(create=not todo)
        report.seconds = time.perf_counter() - t0
        if report.cut:
            log.warning(report.summary())
        return report

    def _replay_file(self, gen: int, last_seq: int, last: bool,
                     replay: Callable[[Position | None, list[Event]], None],
                     report: RecoveryReport) -> tuple[int, int]:
        path = self._wal_path(gen)
        try:
            buf = path.read_bytes()
        except OSError as exc:
            raise _os_error(path, "cannot read the log", exc) from None
        at, bad = 0, ""
        head = _parse_at(buf, 0)
        if not isinstance(head, _Parsed):
            bad = f"log header: {head}"
        else:
            try:
                hdr = _dec_header.decode(head.payload)
            except msgspec.DecodeError as exc:
                raise BackendError(f"{path}: log header does not decode: {exc}") from None
            self._check_meta(hdr.owner.split(":")[0], hdr.campaign_fp, hdr.campaign_id, path)
            at = head.end
            while at < len(buf):
                rec = _parse_at(buf, at)
                if not isinstance(rec, _Parsed):
                    bad = rec
                    break
                if rec.seq != last_seq + 1:
                    bad = f"sequence {rec.seq} after {last_seq}"
                    break
                try:
                    pos, events = decode_record(rec.payload)
                except (msgspec.DecodeError, TypeError) as exc:
                    raise BackendError(f"{path}: record {rec.seq} at offset {at} has a valid "
                                       f"checksum but does not decode: {exc}") from None
                replay(pos, events)
                report.records += 1
                report.events += len(events)
                last_seq = rec.seq
                self.since_snapshot += rec.end - at
                at = rec.end
        if bad:
            later = _valid_record_after(buf, at)
            if not last or later is not None:
                raise BackendError(
                    f"{path}: damaged record at offset {at:,} ({bad}) with valid records "
                    f"after it (at {later}); this is not a torn tail, so nothing was cut. "
                    "Restore the directory from a copy, or move this file away to accept "
                    "losing what follows")
            report.cut_file = path.name
            report.cut_offset = at
            report.cut_bytes = len(buf) - at
            report.cut_reason = bad
            try:
                with open(path, "r+b") as f:
                    f.truncate(at)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise _os_error(path, "cannot cut the torn tail of the log", exc) from None
        return at, last_seq

    def _open_append(self, create: bool, gen: int | None = None) -> None:
        """Append to generation `gen`'s log from now on (a new file, with its header, when
        `create` or it is empty). On failure nothing changes: the old log stays in use."""
        gen = self.gen if gen is None else gen
        path = self._wal_path(gen)
        size = 0 if create else self.size
        fd = -1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if size == 0:
                os.ftruncate(fd, 0)
                header = frame(self._header_payload(gen), 0)
                if os.write(fd, header) != len(header):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
                _fsync_dir(self.path)
                size = len(header)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            if create:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise _os_error(path, "cannot open the log", exc) from None
        with self._io:
            old, self._fd = self._fd, fd
        self.gen, self.size = gen, size
        if old >= 0:
            os.close(old)
        self._start_syncer()

    # -- appending --------------------------------------------------------------------------
    def append(self, payload: bytes) -> int:
        """Write one record; returns the file size before it (to take it back). Raises
        BackendError with the file truncated back when the write fails."""
        if self.sync_error is not None:
            raise self.sync_error
        self.seq += 1
        head = record_header(payload, self.seq)
        start = self.size
        path = self._wal_path(self.gen)
        try:
            n = os.writev(self._fd, [head, payload])  # one syscall, no joined copy
            if n < len(head) + len(payload):  # a short write (a disk filling up)
                rest = memoryview(head + payload)[n:]
                while rest:
                    rest = rest[os.write(self._fd, rest):]
        except OSError as exc:
            self.seq -= 1
            self._truncate(start)
            raise _os_error(path, "cannot append to the log", exc) from None
        size = len(head) + len(payload)
        self.size = start + size
        self.since_snapshot += size
        self._dirty = True
        return start

    def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:  # the record stays torn; recovery cuts it
            log.error("%s: cannot truncate a failed record: %s", self._wal_path(self.gen), exc)

    def take_back(self, start: int) -> None:
        """Remove the last record (its batch was refused by the engine)."""
        self._truncate(start)
        self.size = start
        self.seq -= 1

    def sync(self) -> None:
        """Make appended records durable now (fdatasync)."""
        with self._io:
            if self._fd < 0:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise _os_error(self._wal_path(self.gen), "cannot fsync the log", exc) from None
            self._dirty = False

    def committed(self) -> None:
        """After a batch: fsync when the policy is per batch."""
        if self.opts.fsync == "batch":
            self.sync()

    def _start_syncer(self) -> None:
        if self.opts.fsync != "interval" or self._syncer is not None:
            return
        self._syncer = threading.Thread(target=self._sync_loop, name="rewardcore-fsync",
                                        daemon=True)
        self._syncer.start()

    def _sync_loop(self) -> None:
        period = self.opts.interval_ms / 1000
        while not self._stop.wait(period):
            if self._dirty:
                try:
                    self.sync()
                except BackendError as exc:
                    self.sync_error = exc  # the next append raises it

    @property
    def wants_snapshot(self) -> bool:
        return self.since_snapshot >= self.opts.snapshot_bytes

    # -- checkpoints -----------------------------------------------------------------------
    def rotate(self) -> int:
        """Start the next generation's log (the current one is fsynced first, whatever the
        policy, so an older generation is never shorter than what followed it)."""
        self.sync()
        self._open_append(create=True, gen=self.gen + 1)
        self.since_snapshot = 0
        return self.gen

    def snapshot_meta(self, gen: int, seq: int) -> dict[str, Any]:
        return {"format": 1, "gen": gen, "seq": seq, "owner_kind": self.owner.split(":")[0],
                "owner": self.owner, "campaign_fp": self.campaign_fp,
                "campaign_id": self.campaign.id, "hash": _scan.hash_probe(),
                "written": time.time()}

    def save_snapshot(self, gen: int, seq: int, arrays: dict[str, np.ndarray],
                      scalars: dict[str, Any]) -> None:
        """Write snapshot `gen` (the state before wal-`gen`), then drop what it covers."""
        write_snapshot(self._snap_path(gen), self.snapshot_meta(gen, seq), arrays, scalars)
        wals, snaps = self._listing()
        for g in snaps:
            if g < gen:
                self._snap_path(g).unlink(missing_ok=True)
        for g in wals:
            if g < gen:
                self._wal_path(g).unlink(missing_ok=True)

    def follow(self, gen: int, size: int, seq: int) -> None:
        """Another process of the segment moved the log on: append where it left off."""
        if gen != self.gen or self._fd < 0:
            self.size = size
            self._open_append(create=False, gen=gen)
        self.size, self.seq = size, seq

    def matches(self, gen: int, size: int, seq: int) -> bool:
        """True when the log on disk ends exactly where a segment's state says it does."""
        wals, _ = self._listing()
        if not wals or wals[-1] != gen:
            return False
        try:
            return self._wal_path(gen).stat().st_size == size and seq >= 0
        except OSError:
            return False

    def resume_at(self, gen: int, size: int, seq: int) -> None:
        """Append after the log's end without replaying it (the segment already holds it)."""
        self.gen, self.size, self.seq = gen, size, seq
        self.since_snapshot = 0
        self._open_append(create=False)

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None
        if self._fd >= 0:
            try:
                self.sync()
            except BackendError as exc:
                log.error("%s", exc)
            with self._io:
                os.close(self._fd)
                self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

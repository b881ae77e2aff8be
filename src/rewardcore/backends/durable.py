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
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from .. import _shm
from .._url import BackendURL
from ..campaign import Campaign
from ..codec import decode_jsonl
from ..engine import Balance, Claim, Decisions, Engine, Position, RegionStatus, Resumable, Summary
from ..errors import BackendError, ConfigError
from ..events import Closed, Completed, Event, Placed, Redeem
from ..outcomes import Outcome

log = logging.getLogger("rewardcore.durable")

FSYNC_POLICIES = ("batch", "interval", "none")
DEFAULT_SNAPSHOT_MB = 64
DEFAULT_INTERVAL_MS = 50

# -- log records -------------------------------------------------------------------------
# magic, payload length, sequence number, CRC-32C of payload + sequence (little-endian)
_REC = struct.Struct("<4sIQI")
_REC_MAGIC = b"RCW1"
_MAX_PAYLOAD = 1 << 30
_SNAP_MAGIC = b"RCSNAP01"
_U32 = struct.Struct("<I")
_WAL_RE = re.compile(r"^wal-(\d{8})\.log$")
_SNAP_RE = re.compile(r"^snapshot-(\d{8})\.rcs$")


class _Record(msgspec.Struct, array_like=True):
    pos: Position | None
    events: list[Event]
    # A CLI replay logs its batch as the JSON lines it decoded them from (no re-encoding:
    # a third of the cost of a durable replay); `events` is then empty.
    jsonl: bytes | None = None


class _WalHeader(msgspec.Struct):
    format: int
    gen: int
    owner: str
    campaign_fp: int
    campaign_id: str


# The engines accept Structs built in Python, which msgspec does not validate (an empty id,
# say); the log must replay exactly what was applied, so records that fail the strict
# decoder are read with these and turned back into the real events.
class _LPlaced(msgspec.Struct, tag="placed", tag_field="type"):
    order_id: Any
    merchant_id: Any
    agent_id: Any
    region: Any
    paid_cents: Any
    ts: Any


class _LClosed(msgspec.Struct, tag="closed", tag_field="type"):
    order_id: Any
    ts: Any


class _LCompleted(msgspec.Struct, tag="completed", tag_field="type"):
    order_id: Any
    ts: Any


class _LRedeem(msgspec.Struct, tag="redeem", tag_field="type"):
    redemption_id: Any
    beneficiary: Any
    prize: Any
    ts: Any
    qty: Any = 1


class _LRecord(msgspec.Struct, array_like=True):
    pos: Any
    events: list[_LPlaced | _LClosed | _LCompleted | _LRedeem]
    jsonl: Any = None


_LENIENT = {_LPlaced: Placed, _LClosed: Closed, _LCompleted: Completed, _LRedeem: Redeem}
_enc = msgspec.msgpack.Encoder()
_dec_record = msgspec.msgpack.Decoder(_Record)
_dec_lenient = msgspec.msgpack.Decoder(_LRecord)
_dec_header = msgspec.msgpack.Decoder(_WalHeader)


def encode_record(events: Sequence[Event], pos: Position | None,
                  jsonl: bytes | memoryview | None = None) -> bytes:
    """The payload of one log record (raises TypeError for something that is not an event).
    With `jsonl`, the JSON lines `events` were decoded from are logged instead of them."""
    if jsonl is not None:
        return _enc.encode(_Record(pos, [], jsonl))  # type: ignore[arg-type]  # a view is fine
    return _enc.encode(_Record(pos, list(events)))


def decode_record(payload: bytes) -> tuple[Position | None, list[Event]]:
    try:
        rec = _dec_record.decode(payload)
        pos, events, jsonl = rec.pos, rec.events, rec.jsonl
    except msgspec.ValidationError:
        loose = _dec_lenient.decode(payload)
        events = [_LENIENT[type(e)](**msgspec.structs.asdict(e)) for e in loose.events]
        pos = tuple(loose.pos) if loose.pos is not None else None  # type: ignore[assignment]
        jsonl = loose.jsonl
    if jsonl is not None:
        # the same decoder as the replay that logged it: the same events (its dead letters
        # were not applied then and are dropped again)
        events = decode_jsonl(jsonl)[0]
    return pos, events


def _checksum(payload: bytes, seq: int) -> int:
    # CRC-32C (the SSE4.2 instruction, several GB/s) of the payload, then of the sequence
    return _shm.crc32c(seq.to_bytes(8, "little"), _shm.crc32c(payload))


def record_header(payload: bytes, seq: int) -> bytes:
    """The header written before a record's payload."""
    if len(payload) > _MAX_PAYLOAD:
        raise BackendError(f"a batch of {len(payload):,} bytes is too large for one log record")
    return _REC.pack(_REC_MAGIC, len(payload), seq, _checksum(payload, seq))


def frame(payload: bytes, seq: int) -> bytes:
    """A record as written: header then payload."""
    return record_header(payload, seq) + payload


@dataclass
class _Parsed:
    offset: int
    end: int
    seq: int
    payload: bytes


def _parse_at(buf: bytes | memoryview, at: int) -> _Parsed | str:
    """The record at `at`, or why there is none."""
    if at + _REC.size > len(buf):
        return "a record header cut short"
    magic, n, seq, crc = _REC.unpack_from(buf, at)
    if magic != _REC_MAGIC:
        return "bad record magic"
    end = at + _REC.size + n
    if n > _MAX_PAYLOAD or end > len(buf):
        return "a record cut short"
    payload = bytes(buf[at + _REC.size:end])
    if _checksum(payload, seq) != crc:
        return "checksum mismatch"
    return _Parsed(at, end, seq, payload)


def _valid_record_after(buf: bytes, at: int) -> int | None:
    """Offset of a valid record somewhere after `at` (then the damage is not a torn tail)."""
    i = buf.find(_REC_MAGIC, at + 1)
    while i >= 0:
        if isinstance(_parse_at(buf, i), _Parsed):
            return i
        i = buf.find(_REC_MAGIC, i + 1)
    return None


# -- options ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DurableOptions:
    fsync: str = "batch"
    interval_ms: int = DEFAULT_INTERVAL_MS
    snapshot_bytes: int = DEFAULT_SNAPSHOT_MB << 20


#: the URL parameters of durable mode (memory:///dir, and shm://...?dir=)
DURABLE_PARAMS = ("fsync", "ms", "snapshot_mb")


def durable_options(u: BackendURL) -> DurableOptions:
    policy = u.text("fsync", "batch")
    if policy not in FSYNC_POLICIES:
        raise u.error(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {policy!r}")
    return DurableOptions(
        fsync=policy,
        interval_ms=u.int("ms", DEFAULT_INTERVAL_MS, 1),
        snapshot_bytes=u.int("snapshot_mb", DEFAULT_SNAPSHOT_MB, 1) << 20,
    )


def campaign_fingerprint(campaign: Campaign) -> int:
    """64 bits that change when anything in the campaign file changes: state saved (or
    shared) under one campaign file is never read under another."""
    digest = hashlib.blake2b(msgspec.msgpack.encode(campaign.spec), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _os_error(path: Path, what: str, exc: OSError) -> BackendError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason += " (the directory must be writable)"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason += " (no room for the log: free space, or move the directory)"
    return BackendError(f"{path}: {what}: {reason}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- snapshots ----------------------------------------------------------------------------
def write_snapshot(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   scalars: dict[str, Any]) -> int:
    """Write a snapshot atomically (temp file, fsync, rename, fsync dir); returns its size.

    Format: magic, u32 length + msgpack meta (with each array's dtype, shape, size and
    CRC32, and the scalars' length and CRC32) + u32 CRC32 of the meta, the arrays' bytes in
    meta order, then the msgpack scalars.
    """
    body = _enc.encode(scalars)
    order = sorted(arrays)
    specs = []
    for name in order:
        a = np.ascontiguousarray(arrays[name])
        arrays[name] = a
        specs.append([name, a.dtype.str, list(a.shape), a.nbytes, zlib.crc32(a.data)])
    meta = dict(meta, arrays=specs, scalars=[len(body), zlib.crc32(body)])
    head = _enc.encode(meta)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_SNAP_MAGIC + _U32.pack(len(head)) + head + _U32.pack(zlib.crc32(head)))
            for name in order:
                f.write(arrays[name].data)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _os_error(path, "cannot write snapshot", exc) from None
    return size


def read_snapshot_meta(path: Path) -> dict[str, Any]:
    """The meta of a snapshot (what `read_snapshot` returns first), without its arrays."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _SNAP_MAGIC:
                raise BackendError(f"{path}: not a rewardcore snapshot (bad magic)")
            (n,) = _U32.unpack(f.read(4))
            head = f.read(n)
            (crc,) = _U32.unpack(f.read(4) or b"\0\0\0\0")
    except (OSError, struct.error) as exc:
        raise BackendError(f"{path}: cannot read snapshot: {exc}") from None
    if len(head) != n or zlib.crc32(head) != crc:
        raise BackendError(f"{path}: snapshot header is damaged (checksum mismatch)")
    return msgspec.msgpack.decode(head)


def read_snapshot(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(meta, arrays, scalars) of a snapshot; BackendError when it is damaged."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _SNAP_MAGIC:
                raise BackendError(f"{path}: not a rewardcore snapshot (bad magic)")
            (n,) = _U32.unpack(f.read(4))
            head = f.read(n)
            (crc,) = _U32.unpack(f.read(4) or b"\0\0\0\0")
            if len(head) != n or zlib.crc32(head) != crc:
                raise BackendError(f"{path}: snapshot header is damaged (checksum mismatch)")
            meta = msgspec.msgpack.decode(head)
            arrays = {}
            for name, dtype, shape, nbytes, acrc in meta["arrays"]:
                # readinto a fresh array: it stays writable, which the engines need
                a = np.empty(nbytes // max(np.dtype(dtype).itemsize, 1), dtype)
                if f.readinto(a.data.cast("B")) != nbytes or zlib.crc32(a.data) != acrc:
                    raise BackendError(f"{path}: snapshot array {name!r} is damaged")
                arrays[name] = a.reshape(shape)
            blen, bcrc = meta["scalars"]
            body = f.read(blen)
            if len(body) != blen or zlib.crc32(body) != bcrc:
                raise BackendError(f"{path}: snapshot values are damaged (checksum mismatch)")
    except OSError as exc:
        raise _os_error(path, "cannot read snapshot", exc) from None
    return meta, arrays, msgspec.msgpack.decode(body)


# -- recovery -----------------------------------------------------------------------------
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
            raise Foreign(f"{where} holds the state of campaign {cid!r} as another campaign "
                          f"file defined it (this one is {self.campaign.id!r})")

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
            if meta.get("hash") != _shm.hash_probe():
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
                "campaign_id": self.campaign.id, "hash": _shm.hash_probe(),
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


# -- the durable memory engine ------------------------------------------------------------
class DurableEngine(Resumable, Engine):
    """`memory:///path`: the memory engine with a write-ahead log and snapshots."""

    scheme = "memory"
    keeps_state = True
    #: a batch pays a log record and, with fsync=batch, an fsync: larger batches amortise it
    preferred_batch = 4096

    def __init__(self, campaign: Campaign, path: Path, opts: DurableOptions = DurableOptions(),
                 expected_orders: int = 0) -> None:
        from .memory import MemoryEngine

        super().__init__(campaign)
        self.path = path
        self.opts = opts
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
                # Only reset() may use a directory of another campaign: it starts it afresh.
                self.foreign = str(exc)
                return
            self.recovery = self.log.recover(self._restore, self._replay)
        except BaseException:
            self.log.close()
            raise

    @classmethod
    def from_url(cls, campaign: Campaign, url: str) -> Engine:
        u = BackendURL(url, known=("orders", *DURABLE_PARAMS))
        if u.netloc:
            raise u.error("durable mode needs an absolute path, memory:///path/to/dir "
                          "(three slashes)")
        return cls(campaign, Path(u.path), durable_options(u), u.int("orders", 0))

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
            raise ConfigError(f"{self.path}: {self.foreign}; reset it "
                              "(rewardcore reset --backend ... --yes) or use another directory")

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


def iter_records(path: Path) -> Iterator[tuple[int, int, Position | None, list[Event]]]:
    """(offset, seq, position, events) of each valid record of one log file (for tools and
    tests); stops at the first damaged one."""
    buf = path.read_bytes()
    head = _parse_at(buf, 0)
    if not isinstance(head, _Parsed):
        return
    at = head.end
    while True:
        rec = _parse_at(buf, at)
        if not isinstance(rec, _Parsed):
            return
        pos, events = decode_record(rec.payload)
        yield at, rec.seq, pos, events
        at = rec.end

"""`shm://NAME`: the claim state in shared memory, for several worker processes on one host.

    shm://d11?orders=20000000                  create the segment, or attach to it by name
    shm://                                     a private segment with a generated name
    shm://d11?dir=/var/lib/rewardcore/d11      durable: every batch logged to disk first

Each process that opens the URL attaches to the same segment (`multiprocessing.
shared_memory`, a file in /dev/shm named `rewardcore.NAME`) and claims from the same
regions; the compiled core (rewardcore._shm, ext/shm.pyx) keeps every array, counter and
string of the state there and changes it under one process-shared robust mutex, held for
the second pass of a batch.

Parameters (fixed when the segment is created; an attacher may repeat them but not change
them):
    orders=N          order ids remembered (placed and tombstoned), default 1,000,000
    claims=N          claims ever created, default = orders
    beneficiaries=N   distinct beneficiaries, default max(65536, orders / 8)
    redemptions=N     redemption ids, default 65536
    arena=BYTES       bytes of strings (claim order ids, names, redemption ids), default
                      24 per claim and beneficiary plus 64 per redemption
    reserve=1|0       allocate the whole segment up front (default 1): a full /dev/shm is
                      then an error at creation, not a SIGBUS mid-run
    transient=1       remove the segment when the last process closes it (always so for
                      `shm://` without a name); by default a named segment stays until
                      `rewardcore shm-rm NAME`, like a database, so `export` can read it
    dir=/path         durable mode (see rewardcore.backends.durable): the directory holds a
                      write-ahead log and snapshots; fsync=, ms=, snapshot_mb= as there

A batch that could overflow a capacity is refused with BackendError before it changes
anything. A process killed while holding the mutex leaves the segment suspect: the next
one to lock it gets EOWNERDEAD; without `dir=` every process then refuses the segment
(remove it and replay), with `dir=` the state is rebuilt from the log on the spot.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import secrets
import signal
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .. import _shm
from .._url import BackendURL
from ..campaign import Campaign
from ..engine import (
    Balance,
    Claim,
    Decisions,
    Engine,
    Position,
    RegionStatus,
    Resumable,
    Summary,
    claims_from_rows,
)
from ..errors import BackendError, ConfigError
from ..events import Event
from ..outcomes import Outcome
from ..storage.log import DurableLog, RecoveryReport, campaign_fingerprint
from ..storage.options import DURABLE_PARAMS, DurableOptions, durable_options
from ..storage.records import encode_record

SHM_DIR = Path("/dev/shm")
PREFIX = "rewardcore."
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_MADV_POPULATE_WRITE = 23  # Linux 5.14; Python 3.11's mmap module does not name it
_ATTACH_WAIT = 10.0  # seconds an attacher waits for the creator to lay the segment out


def _pow2(n: int) -> int:
    c = 16
    while c < n:
        c <<= 1
    return c


@dataclass(frozen=True)
class ShmConfig:
    url: str  # with the generated name of an anonymous segment
    name: str
    anonymous: bool
    caps: dict[str, int]
    explicit: frozenset[str]  # capacities the URL named
    transient: bool
    reserve: bool
    dir: Path | None
    durable: DurableOptions


_CAPS = ("orders", "claims", "beneficiaries", "redemptions", "arena")


def parse_url(url: str) -> ShmConfig:
    u = BackendURL(url, known=(*_CAPS, "transient", "reserve", "dir", *DURABLE_PARAMS))
    if u.has_path:
        raise u.error("shm://NAME takes no path (a durable directory is given as ?dir=/path)")
    name = u.netloc
    anonymous = not name
    if anonymous:
        name = f"anon-{os.getpid()}-{secrets.token_hex(4)}"
    elif not _NAME.match(name):
        raise u.error(f"segment name {name!r} must be 1-100 of A-Z a-z 0-9 _ . -")
    orders = u.int("orders", 1_000_000, 1)
    claims = u.int("claims", orders, 1)
    bene = u.int("beneficiaries", max(65536, orders // 8), 1)
    red = u.int("redemptions", 65536, 1)
    arena = u.int("arena", 24 * (claims + bene) + 64 * red, 1024)
    caps = {"orders": orders, "claims": claims, "beneficiaries": bene, "redemptions": red,
            "arena": arena}
    directory = u.text("dir")
    if directory is not None and not directory.startswith("/"):
        raise u.error("dir must be an absolute path")
    return ShmConfig(
        url=urlunsplit(("shm", name, "", urlsplit(url).query, "")),
        name=name,
        anonymous=anonymous,
        caps=caps,
        explicit=frozenset(k for k in _CAPS if k in u.query),
        transient=anonymous or u.int("transient", 0) == 1,
        reserve=u.int("reserve", 1) == 1,
        dir=Path(directory) if directory else None,
        durable=durable_options(u),
    )


def table_caps(campaign: Campaign, caps: dict[str, int]) -> dict[str, int]:
    """Array lengths of a segment: the capacities and the hash-table sizes (load <= 3/4)."""
    region_cap = campaign.info.max_claims_per_beneficiary_per_region
    return dict(
        caps,
        otab=_pow2(caps["orders"] * 4 // 3 + 1),
        btab=_pow2(caps["beneficiaries"] * 4 // 3 + 1),
        ptab=_pow2(caps["claims"] * 4 // 3 + 1) if region_cap else 16,
        rtab=_pow2(caps["redemptions"] * 4 // 3 + 1),
    )


def segment_bytes(campaign: Campaign, caps: dict[str, int]) -> int:
    heap = int(campaign.region_slots.sum()) if campaign.releases else 0
    lengths = dict(table_caps(campaign, caps), regions=len(campaign.regions), heap=heap,
                   prizes=len(campaign.prizes))
    return _shm.layout(lengths)[0]


def _untrack(shm: shared_memory.SharedMemory) -> None:
    # Python 3.11 registers every SharedMemory, attached or created, with a resource tracker
    # that unlinks it when the process exits: a segment shared by workers must outlive any
    # one of them, so the segment's lifetime is managed here (pids in the header).
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]


def _unlink(path: Path) -> None:
    # Not SharedMemory.unlink(): it tells the resource tracker, which this module keeps out
    # of the segment's life (see _untrack), and which may be gone when a process exits.
    path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_OPEN: weakref.WeakSet[ShmEngine] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """A normal exit closes what the program left open: its pid leaves the segments, and a
    transient segment it was the last user of goes (no segment leaks on a normal exit)."""
    for engine in list(_OPEN):
        with contextlib.suppress(Exception):
            engine.close()


class ShmEngine(Resumable, Engine):
    """The shared-memory engine; see the module docstring."""

    scheme = "shm"
    shares_state = True
    keeps_state = True
    #: a batch pays the segment's lock: larger batches amortise it
    preferred_batch = 4096

    def __init__(self, campaign: Campaign, config: ShmConfig) -> None:
        super().__init__(campaign)
        self.config = config
        self.name = config.name
        self.fp = campaign_fingerprint(campaign)
        self.recovery: RecoveryReport | None = None
        self.log: DurableLog | None = None
        self._shm: shared_memory.SharedMemory | None = None
        self.core: Any = cast(Any, None)  # the compiled core, once the segment is open
        self.created = False
        try:
            if config.dir is not None:
                self.log = DurableLog(config.dir, config.durable, f"shm:{self.name}", campaign,
                                      self.fp, shared=True)
            self._open_segment()
            if self.log is not None:
                self._open_durable()
            with self._locked():
                for pid in self.core.pids():
                    if not _pid_alive(pid):
                        self.core.remove_pid(pid)
                self.core.add_pid(os.getpid())
        except BaseException:
            self._teardown(unlink=self.created)
            raise
        _OPEN.add(self)

    @classmethod
    def from_url(cls, campaign: Campaign, url: str) -> Engine:
        return cls(campaign, parse_url(url))

    @property
    def url(self) -> str:
        """A URL other processes can open to attach to this segment (the opening URL, with
        the generated name of a `shm://` segment filled in)."""
        return self.config.url

    @property
    def open_note(self) -> str | None:
        rec = self.recovery
        return rec.summary() if rec is not None and (rec.records or rec.cut or rec.snapshot) \
            else None

    @property
    def segment_path(self) -> Path:
        return SHM_DIR / (PREFIX + self.name)

    # -- creation and attachment ------------------------------------------------------------
    def _open_segment(self) -> None:
        cfg = self.config
        seg = PREFIX + self.name
        size = segment_bytes(self.campaign, cfg.caps)
        flags = ((_shm.FLAG_TRANSIENT if cfg.transient else 0)
                 | (_shm.FLAG_DURABLE if cfg.dir is not None else 0)
                 | (0 if cfg.reserve else _shm.FLAG_SPARSE))
        deadline = time.monotonic() + _ATTACH_WAIT
        shm: shared_memory.SharedMemory | None
        while True:
            try:
                shm = shared_memory.SharedMemory(seg, create=True, size=size)
                created = True
            except FileExistsError:
                created = False
                shm = self._attach_when_sized(seg, deadline)
                if shm is None:
                    continue  # removed meanwhile: try to create it again
                if self._alone and not _shm.segment_ready(shm.buf):
                    # Its creator died before laying it out; a durable segment's users all
                    # hold the directory's lock, which this process holds alone: remove it.
                    _untrack(shm)
                    shm.close()
                    with contextlib.suppress(FileNotFoundError):
                        self.segment_path.unlink()
                    continue
            except OSError as exc:
                raise BackendError(f"{self.segment_path}: cannot create the segment "
                                   f"({size:,} bytes): {exc.strerror}") from None
            _untrack(shm)
            self._shm = shm
            self.created = created
            break
        if created:
            if cfg.reserve:
                self._reserve(size)
            self._populate()
            self.core = _shm.ShmCore(self.campaign, shm.buf, True,
                                     table_caps(self.campaign, cfg.caps), self.fp, flags)
            return
        while not _shm.segment_ready(shm.buf):
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{self.segment_path}: the segment was never laid out (its creator died?); "
                    f"remove it with `rewardcore shm-rm {self.name}`")
            time.sleep(0.005)
        self._populate()
        try:
            self.core = _shm.ShmCore(self.campaign, shm.buf, False, None, self.fp)
        except _shm.StateError as exc:
            raise ConfigError(f"{self.segment_path}: {exc}; remove it with "
                              f"`rewardcore shm-rm {self.name}` or use another name") from None
        have = self.core.capacities()
        for key in cfg.explicit:
            if have[key] != cfg.caps[key]:
                raise ConfigError(f"{self.segment_path}: the segment exists with {key}="
                                  f"{have[key]}, the URL asks {key}={cfg.caps[key]}; remove it "
                                  f"(`rewardcore shm-rm {self.name}`) to change capacities")
        durable = bool(self.core.flags & _shm.FLAG_DURABLE)
        if durable != (cfg.dir is not None):
            raise ConfigError(
                f"{self.segment_path}: the segment was created "
                f"{'with' if durable else 'without'} a durable dir=; open it the same way")

    @property
    def _alone(self) -> bool:
        """Durable, and no other process uses the directory (so none uses the segment)."""
        return self.log is not None and self.log.first

    def _attach_when_sized(self, seg: str, deadline: float) -> shared_memory.SharedMemory | None:
        """Attach to an existing segment once its creator has sized it."""
        path = SHM_DIR / seg
        while True:
            try:
                if path.stat().st_size > 0:
                    return shared_memory.SharedMemory(seg)
                if self._alone:
                    path.unlink()  # created but never sized, by a process now dead
                    return None
            except FileNotFoundError:
                return None
            if time.monotonic() > deadline:
                raise BackendError(f"{path}: the segment has no size (its creator died?); "
                                   f"remove it with `rewardcore shm-rm {self.name}`")
            time.sleep(0.005)

    def _reserve(self, size: int) -> None:
        fd = os.open(self.segment_path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise BackendError(f"{self.segment_path}: cannot reserve {size:,} bytes of shared "
                               f"memory: {exc.strerror} (free /dev/shm or lower the "
                               "capacities)") from None
        finally:
            os.close(fd)

    def _populate(self) -> None:
        # Map every page now: a fault per first touch of a 4 KiB tmpfs page costs more than
        # the claim itself (tmpfs gets no huge pages here).
        if not self.config.reserve:
            return
        with contextlib.suppress(OSError, AttributeError, ValueError):
            self._shm._mmap.madvise(_MADV_POPULATE_WRITE)  # type: ignore[union-attr]

    # -- durable mode -----------------------------------------------------------------------
    def _open_durable(self) -> None:
        assert self.log is not None
        log = self.log
        if log.first:
            # Nobody else uses the directory: the segment is trusted only when it is
            # exactly the state the log ends with; otherwise it is rebuilt from disk.
            log.check_campaign()
            with self._locked(recovering=True) as suspect:
                gen, size, seq = self.core.wal_state()
                if self.created or suspect or not log.matches(gen, size, seq):
                    self._rebuild(clean=True)
                else:
                    log.resume_at(gen, size, seq)
                    self.recovery = RecoveryReport(str(log.path))
            log.share()
        else:
            with self._locked():
                gen, size, seq = self.core.wal_state()
                log.follow(gen, size, seq)

    def _rebuild(self, clean: bool = False) -> None:
        """Rebuild the segment from the directory (the lock is held)."""
        assert self.log is not None
        core = self.core
        core.reset_state()

        def replay(pos: Position | None, events: list[Event]) -> None:
            if events:
                core.prepare(events)
                core.commit()
            if pos is not None:
                core.set_positions(pos[0], list(pos[1]), pos[2], pos[3], pos[4])

        self.recovery = self.log.recover(core.restore, replay, clean=clean)
        core.set_wal_state(self.log.gen, self.log.size, self.log.seq)
        core.clear_poison()

    # -- the lock ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, recovering: bool = False) -> Iterator[bool]:
        """Hold the segment's mutex. A suspect state (a holder died mid-batch) is rebuilt or
        refused here, unless `recovering`: then the caller gets the flag and decides."""
        core = self.core
        if core is None:
            raise BackendError(f"{self.segment_path}: the engine is closed")
        suspect = core.lock()
        try:
            if suspect and not recovering:
                self._suspect()
            elif self.log is not None and not recovering:
                gen, size, seq = core.wal_state()
                self.log.follow(gen, size, seq)
            yield bool(suspect)
        finally:
            core.unlock()

    def _suspect(self) -> None:
        if self.log is None:
            raise BackendError(
                f"{self.segment_path}: a process died while changing the segment, so its "
                "state may be half-applied; remove it with "
                f"`rewardcore shm-rm {self.name}` and replay (or use ?dir= to recover)")
        self._rebuild()

    # -- the hot path -----------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> Decisions:
        return self.apply_at(events, None)

    def apply_at(self, events: Sequence[Event], pos: Position | None,
                 jsonl: bytes | memoryview | None = None) -> Decisions:
        """Apply a batch; `pos` records where a CLI replay is in its input (for resuming),
        `jsonl` the lines the batch was decoded from (logged instead of the events)."""
        batch = events if type(events) is list else list(events)
        core = self.core
        if core is None:
            raise BackendError(f"{self.segment_path}: the engine is closed")
        core.prepare(batch)  # pass one, outside the lock
        log = self.log
        payload = encode_record(batch, pos, jsonl) if log is not None else b""
        checkpoint = None
        with self._locked():
            core.check_room()
            if log is not None:
                log.append(payload)  # under the mutex: the log's order is the apply order
            out = core.commit()
            if pos is not None:
                core.set_positions(pos[0], list(pos[1]), pos[2], pos[3], pos[4])
            if log is not None:
                if log.wants_snapshot:
                    checkpoint = self._try(self._begin_checkpoint)
                core.set_wal_state(log.gen, log.size, log.seq)
        if log is not None:
            log.committed()  # fsync outside the mutex: one fsync covers every worker's writes
            if checkpoint is not None:
                self._try(log.save_snapshot, *checkpoint)
        return Decisions(*out)

    def _try(self, step: Any, *args: Any) -> Any:
        """A checkpoint step: the batch is applied and logged, so a snapshot that fails (a
        full disk) must not fail it; the log keeps everything and it is tried again later."""
        assert self.log is not None
        try:
            return step(*args)
        except BackendError as exc:
            self.log.since_snapshot = 0
            logging.getLogger("rewardcore.shm").error("%s (retrying later)", exc)
            return None

    def _begin_checkpoint(self) -> tuple[int, int, dict[str, np.ndarray], dict[str, Any]]:
        """Copy the state and start the next log generation (under the mutex); the copy is
        written to disk after it is released."""
        assert self.log is not None
        arrays, scalars = self.core.snapshot()
        seq = self.log.seq
        gen = self.log.rotate()
        return gen, seq, arrays, scalars

    def checkpoint(self) -> None:
        """Snapshot the state now (durable mode) and start a new log generation."""
        if self.log is None:
            return
        with self._locked():
            job = self._begin_checkpoint()
            self.core.set_wal_state(self.log.gen, self.log.size, self.log.seq)
        self.log.save_snapshot(*job)

    def replay_positions(self) -> tuple[int, list[tuple[int, int, int]]]:
        """(parts, [(offset, line, crc)]) of the last `rewardcore replay` (for resuming)."""
        with self._locked():
            return self.core.positions()

    # -- views ------------------------------------------------------------------------------
    def claims(self) -> list[Claim]:
        with self._locked():
            rows = self.core.claim_rows()
        return claims_from_rows(rows)

    def balances(self) -> dict[str, Balance]:
        with self._locked():
            names, pending, confirmed, redeemed = self.core.balance_rows()
        out = {}
        for name, p, c, r in zip(names, pending.tolist(), confirmed.tolist(), redeemed.tolist(),
                                 strict=True):
            if p or c or r:
                out[name] = Balance(p, c, r)
        return out

    def balance(self, beneficiary: str) -> Balance:
        with self._locked():
            return Balance(*self.core.balance_of(beneficiary))

    def outcome_counts(self) -> dict[Outcome, int]:
        with self._locked():
            counts = self.core.outcome_count_array()
        return {o: int(counts[o]) for o in Outcome if counts[o]}

    def redemptions(self) -> dict[str, Outcome]:
        with self._locked():
            items = self.core.redemption_items()
        return {rid: Outcome(o) for rid, o in items.items()}

    def stock(self) -> dict[str, int]:
        with self._locked():
            left = self.core.stock_array()
        return {p.id: int(left[k]) for k, p in enumerate(self.campaign.prizes)}

    def region_status(self, code: int) -> RegionStatus | None:
        with self._locked():
            counts = self.core.region_counts(code)
        if counts is None:
            return None
        slots, taken, remaining = counts
        tiers = tuple((t.upto, t.points) for t in self.campaign.region_by_code[code].tiers)
        return RegionStatus(code, slots, taken, remaining, tiers)

    def summary(self) -> Summary:
        # Counters and arrays only, under one short hold of the lock; claims by state would
        # mean reading every claim (with its order id) while every worker waits.
        with self._locked():
            core = self.core
            used = int(core.counters()["awarded_points"])
            _, pending, confirmed, redeemed = core.balance_rows()
            stock = core.stock_array()
            left = tuple(core.region_counts(r.code)[2] for r in self.campaign.regions)
        return Summary(
            left, {p.id: int(stock[k]) for k, p in enumerate(self.campaign.prizes)}, used,
            points={"pending": int(pending.sum()), "confirmed": int(confirmed.sum()),
                    "redeemed": int(redeemed.sum())},
            beneficiaries=int(np.count_nonzero((pending != 0) | (confirmed != 0))))

    def stats(self) -> dict[str, Any]:
        """Sizes, capacities and lock statistics of the segment."""
        if self.core is None:
            raise BackendError(f"{self.segment_path}: the engine is closed")
        return self.core.counters()

    # -- lifecycle --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every order, claim and redemption (for every attached process)."""
        job = None
        with self._locked():
            self.core.reset_state()
            if self.log is not None:
                job = self._begin_checkpoint()
                self.core.set_wal_state(self.log.gen, self.log.size, self.log.seq)
        if self.log is not None and job is not None:
            self.log.save_snapshot(*job)

    def close(self) -> None:
        """Detach; a transient segment is removed by the last process to close it."""
        if self.core is None:
            return
        # SIGINT/SIGTERM handlers raise in the main thread: held back until the segment is
        # detached (and removed), so a stop cannot leave it half closed
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self._close()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def _close(self) -> None:
        last = False
        try:
            with self._locked(recovering=True):
                self.core.remove_pid(os.getpid())
                last = not any(_pid_alive(p) for p in self.core.pids())
                transient = bool(self.core.flags & _shm.FLAG_TRANSIENT)
        except BackendError:
            transient = False
        self._teardown(unlink=last and transient)

    def __del__(self) -> None:
        # Dropped without close(): close it now (a transient segment must not outlive its
        # last user), or at least let go of the mapping.
        with contextlib.suppress(Exception):
            self.close()
        with contextlib.suppress(Exception):
            self._teardown(unlink=False)

    def unlink(self) -> None:
        """Close and remove the segment, whoever else is attached (they keep their mapping)."""
        self._teardown(unlink=True)

    def _teardown(self, unlink: bool) -> None:
        try:
            if self.core is not None:
                self.core.release()
                self.core = None
            if self._shm is not None:
                self._shm.close()
                self._shm = None
            if self.log is not None:
                self.log.close()
                self.log = None
        finally:
            if unlink:  # whatever interrupted the rest, the segment must not stay behind
                with contextlib.suppress(FileNotFoundError):
                    _unlink(self.segment_path)


# -- tools: list and remove segments --------------------------------------------------------
def segment_info(name: str) -> dict[str, Any] | None:
    """What the header of segment NAME says (None when it is not a rewardcore segment)."""
    path = SHM_DIR / (PREFIX + name)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    info = _shm.header_info(head)
    if info is not None:
        info["live_pids"] = [p for p in info["pids"] if _pid_alive(p)]
        info["path"] = str(path)
        info["size"] = path.stat().st_size
    return info


def list_segments() -> list[str]:
    """Names of the rewardcore segments in /dev/shm."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted(n[len(PREFIX):] for n in names if n.startswith(PREFIX))


def remove_segment(name: str, force: bool = False) -> None:
    """Remove segment NAME; refuses while a live process is attached unless `force`."""
    if not _NAME.match(name):
        raise ConfigError(f"segment name {name!r} must be 1-100 of A-Z a-z 0-9 _ . -")
    path = SHM_DIR / (PREFIX + name)
    if not path.exists():
        raise BackendError(f"{path}: no such segment")
    try:
        info = segment_info(name)
    except OSError as exc:
        raise BackendError(f"{path}: cannot read the segment: {exc.strerror}") from None
    live = info["live_pids"] if info else []
    if live and not force:
        raise BackendError(f"{path}: processes {', '.join(map(str, live))} are attached; stop "
                           "them first or pass --force")
    try:
        path.unlink()
    except OSError as exc:
        raise BackendError(f"{path}: cannot remove the segment: {exc.strerror}") from None

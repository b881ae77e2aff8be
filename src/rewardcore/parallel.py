"""`rewardcore replay --workers N`, and replays that resume after a crash.

Workers: every worker process maps the whole input and keeps the lines of its partitions:
a line belongs to partition hash(order_id) % P (redemptions and lines without an order id
to partition 0) and partition j to worker j % N, so all events of one order reach one
worker, in input order. Finding the order id needs no decoding (ext/shm_route.h), so the
scan costs little next to the decoding each worker then does on its own lines only. The
workers share the claim state through the backend (shm://, or a server); the per-region
order between workers is whichever batch takes the segment's lock first.

Resuming: the shm and durable engines record, atomically with each batch, how far the
replay got: per partition the input offset, line and CRC-32C of the input before it. A
rerun with the same input (its prefix up to those offsets has the same CRC-32C) skips what
was applied and goes on, so it ends in the state, outcome counts included, that a run
without the crash would have reached. A different input (or a damaged prefix) is applied
from the start, which the engines' idempotency makes safe for claims. A longer input
whose beginning is the old one (an appended log) resumes too. Dead letters of the
resumed part may be written a second time (they are written before their batch is
applied): at least once, never lost.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import numpy as np
import orjson

from .backends import open_engine
from .campaign import load_campaign
from .codec import DeadLetter, decode_jsonl
from .engine import Engine
from .errors import ConfigError, RewardcoreError
from .outcomes import Outcome

_N_OUTCOMES = len(Outcome)
_BLOCK = 1 << 20  # bytes scanned per step at least


def _routing():  # noqa: ANN202 - the compiled module, imported only when used
    from . import _shm

    return _shm


def is_resumable_url(url: str) -> bool:
    """shm:// and durable memory:///dir record replay positions (see the module docstring)."""
    parts = urlsplit(url) if "://" in url else None
    if parts is None:
        return False
    return parts.scheme == "shm" or (parts.scheme == "memory" and not parts.netloc
                                      and parts.path not in ("", "/"))


def maybe_replay(args: argparse.Namespace) -> int | None:
    """The replay command's hook: runs replays with --workers, or into a resumable backend;
    None leaves the replay to the plain path of rewardcore.cli."""
    if args.workers is None and not is_resumable_url(args.backend):
        return None
    return replay_command(args)


# -- jobs and results -----------------------------------------------------------------------
class Job(msgspec.Struct):
    """What one worker does: its partitions of the input, from where."""

    campaign: str
    url: str
    events: str
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
    counts: list[int] = msgspec.field(default_factory=lambda: [0] * _N_OUTCOMES)
    started: float = 0.0  # time.monotonic(): comparable between processes of one host
    finished: float = 0.0
    cpu: float = 0.0  # CPU seconds this worker spent on its input
    stats: dict[str, Any] = msgspec.field(default_factory=dict)


@dataclass
class ReplayResult:
    """What a (parallel) replay did, for the CLI summary and the benchmark."""

    events: int
    dead: int
    counts: np.ndarray
    seconds: float  # wall time, start to end, processes included
    work_seconds: float  # from the first worker starting its input to the last finishing
    resumed_from: list[int]
    workers: list[WorkResult]
    notes: list[str]

    @property
    def rate(self) -> float:
        return self.events / self.work_seconds if self.work_seconds else 0.0


def _slow_partition(parts: int):  # noqa: ANN202
    shm = _routing()

    def slow(line: bytes) -> int:
        try:
            obj = msgspec.json.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return 0
        oid = obj.get("order_id") if isinstance(obj, dict) else None
        if not isinstance(oid, str):
            return 0
        return shm.route_hash(oid.encode("utf-8", "surrogatepass"), parts)

    return slow


class _DeadWriter:
    """Appends dead letters to one file from any worker: one write() per batch, O_APPEND."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def write(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        if self.fd < 0:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self.fd, b"".join(orjson.dumps(d.to_dict()) + b"\n" for d in dead))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _decode_selected(buf: memoryview, offsets: np.ndarray, idxs: np.ndarray,
                     base_line: int) -> tuple[list, list[DeadLetter]]:
    events, dead = decode_jsonl(buf)
    if not dead:
        return events, dead
    # a bad line: decode line by line again, so each dead letter names its real line
    events, dead = [], []
    lines = bytes(buf).split(b"\n")
    for raw, off, idx in zip(lines, offsets.tolist(), idxs.tolist(), strict=False):
        ev, dl = decode_jsonl(raw, base_line + idx + 1, off)
        events += ev
        dead += dl
    return events, dead


def run_job(job: Job, engine: Engine | None = None,
            ready: Callable[[], None] | None = None) -> WorkResult:
    """Replay one worker's share of the input into the backend (opened here unless given);
    `ready()` is called once everything is open, just before the input is read."""
    result = WorkResult(job.index)
    own = engine is None
    if engine is None:
        engine = open_engine(load_campaign(job.campaign), job.url)
    dead_out = _DeadWriter(job.dead_letters)
    apply_at = getattr(engine, "apply_at", None)
    mine = [j for j in range(job.parts) if j % job.workers == job.index]
    counts = np.zeros(_N_OUTCOMES, np.int64)
    try:
        with open(job.events, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos, line, crc = job.start
            if ready is not None:
                ready()
            result.started = time.monotonic()
            cpu0 = time.process_time()
            if size > pos:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    view = memoryview(mm)
                    try:
                        counts, crc = _scan(job, engine, apply_at, mine, view, size, pos, line,
                                            crc, dead_out, result)
                    finally:
                        view.release()
            result.finished = time.monotonic()
            result.cpu = time.process_time() - cpu0
        stats = getattr(engine, "stats", None)
        if callable(stats):
            result.stats = stats()
    finally:
        dead_out.close()
        if own:
            engine.close()
    result.counts = counts.tolist()
    return result


def _scan(job: Job, engine: Engine, apply_at: Any, mine: list[int], mm: memoryview, size: int,
          pos: int, line: int, crc: int, dead_out: _DeadWriter,
          result: WorkResult) -> tuple[np.ndarray, int]:
    shm = _routing()
    counts = np.zeros(_N_OUTCOMES, np.int64)
    routed = job.parts > 1
    skip = np.asarray(job.skip, np.int64)
    slow = _slow_partition(job.parts)
    block = max(_BLOCK, job.batch * 256)
    out = bytearray(block + 1)
    offs = np.zeros(max(job.batch, 1), np.int64)
    idxs = np.zeros(max(job.batch, 1), np.int64)
    pending: tuple[int, list[int], int, int, int] | None = None
    while pos < size:
        if _STOP:
            raise RewardcoreError(f"stopped by the replay at byte {pos:,} of the input")
        limit = min(size, pos + block)
        if routed:
            end, scanned, n, used = shm.route(mm, pos, limit, job.parts, job.workers,
                                              job.index, skip, out, offs, idxs, slow)
        else:
            end, scanned = shm.lines_end(mm, pos, limit, job.batch)
        if end == pos:  # a line longer than the block: look further
            block *= 2
            out = bytearray(block + 1)
            continue
        crc = shm.crc32c(mm[pos:end], crc)
        raw = memoryview(out)[:used] if routed else mm[pos:end]
        if routed:
            events, dead = _decode_selected(raw, offs[:n], idxs[:n], line)
        else:
            events, dead = decode_jsonl(raw, line + 1, pos)
        dead_out.write(dead)
        result.dead += len(dead)
        line += scanned
        at = (job.parts, mine, end, line, crc)
        if events:
            decisions = (apply_at(events, at, raw) if apply_at is not None
                         else engine.apply(events))
            counts += np.bincount(decisions.outcome, minlength=_N_OUTCOMES)
            result.events += len(events)
            result.batches += 1
            pending = None
        else:
            pending = at
        pos = end
    if pending is not None and apply_at is not None:
        apply_at([], pending)  # record that the rest of the input was seen
    return counts, crc


# -- the command ----------------------------------------------------------------------------
def _resume_plan(engine: Engine, path: str, size: int, workers: int,
                 notes: list[str]) -> tuple[int, list[int], list[tuple[int, int, int]]]:
    """(parts, skip per partition, start per worker) for replaying `path` into `engine`."""
    positions = getattr(engine, "replay_positions", None)
    parts, pos = positions() if callable(positions) else (0, [])
    fresh = (workers, [0] * workers, [(0, 0, 0)] * workers)
    if parts == 0 or not any(off for off, _, _ in pos):
        return fresh
    # the input must begin with what was applied: check the CRC-32C at every recorded offset
    wanted = sorted({off for off, _, _ in pos})
    if wanted[-1] > size:
        notes.append("the state was replayed from a longer input; applying this one from "
                     "the start (outcome counts will include redeliveries)")
        return fresh
    crc32c = _routing().crc32c
    crc_at = {0: 0}
    crc, at = 0, 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            for off in wanted:
                crc = crc32c(view[at:off], crc)
                at = off
                crc_at[off] = crc
        finally:
            view.release()
    if any(crc_at[off] != c for off, _, c in pos):
        notes.append("the input differs from the one replayed into this state; applying it "
                     "from the start (outcome counts will include redeliveries)")
        return fresh
    skip = [off for off, _, _ in pos]
    starts = []
    for k in range(workers):
        own = [pos[j] for j in range(parts) if j % workers == k]
        starts.append(min(own) if own else (size, 0, 0))
    done = sum(skip)
    if done:
        first = min(skip)
        notes.append(f"resuming: the first {first:,} bytes of the input were applied before"
                     + (" (more in some partitions)" if max(skip) != first else ""))
    return parts, skip, starts


def _die_with_parent(parent: int) -> None:
    """A worker dies with the replay that started it (a killed replay leaves no workers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:
        os._exit(1)  # the parent died before the line above


def _run_workers(jobs: list[Job]) -> list[WorkResult]:
    """One `python -m rewardcore.parallel` process per job: the job as a JSON line on stdin,
    "ready" back once it has attached and mapped the input, "go" when all are ready (so
    they start on the input together, not staggered by their start-up), then the result as
    JSON on stdout. Plain processes (no multiprocessing queues or semaphores), so a replay
    killed with SIGKILL leaves nothing behind in /dev/shm."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen([sys.executable, "-m", "rewardcore.parallel"], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in jobs]
    failed: list[str] = []

    def stop_all() -> None:
        for other in procs:
            with contextlib.suppress(ProcessLookupError):
                other.terminate()

    for p, job in zip(procs, jobs, strict=True):
        with contextlib.suppress(OSError):
            assert p.stdin is not None
            p.stdin.write(msgspec.json.encode(job) + b"\n")
            p.stdin.flush()
    ready = [p.stdout is not None and p.stdout.readline() == b"ready\n" for p in procs]
    for p in procs:
        with contextlib.suppress(OSError):
            assert p.stdin is not None
            if all(ready):
                p.stdin.write(b"go\n")
            p.stdin.close()  # without "go": the ready ones stop, closing what they opened
        p.stdin = None  # communicate() below must not touch it again

    def talk(k: int) -> WorkResult | None:
        out, err = procs[k].communicate()
        if procs[k].returncode != 0:
            failed.append(f"worker {k} (pid {procs[k].pid}) exited with "
                          f"{procs[k].returncode}: {err.decode(errors='replace').strip()}")
            stop_all()  # one failed: stop the rest
            return None
        return msgspec.json.decode(out, type=WorkResult)

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(talk, range(len(jobs))))
    if failed:
        raise RewardcoreError("; ".join(failed))
    return [r for r in results if r is not None]


_STOP = False  # a worker was asked to stop (SIGTERM): it does so between batches


def _stop_requested(*_: object) -> None:
    # No exception from here: raised at an arbitrary point it could cut a segment's close
    # short; the scan loop looks at the flag between batches instead.
    global _STOP
    _STOP = True


def _worker_main() -> int:
    signal.signal(signal.SIGTERM, _stop_requested)
    job = msgspec.json.decode(sys.stdin.buffer.readline(), type=Job)
    _die_with_parent(job.parent)

    def ready() -> None:
        sys.stdout.buffer.write(b"ready\n")
        sys.stdout.buffer.flush()
        if sys.stdin.buffer.readline() != b"go\n" or _STOP:
            raise RewardcoreError("the replay stopped before this worker started")

    try:
        result = run_job(job, ready=ready)
    except RewardcoreError as exc:
        print(f"rewardcore: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(msgspec.json.encode(result))
    return 0


def replay_file(campaign_path: str, url: str, events_path: str, workers: int = 1,
                batch: int = 4096, dead_letters: str = "dead-letters.jsonl",
                engine: Engine | None = None) -> ReplayResult:
    """Replay a JSON-lines file into the backend with `workers` processes (1: this one),
    resuming where an earlier replay of the same input stopped. The caller's open engine
    may be passed; it keeps a shared segment alive and is used for the resume plan."""
    t0 = time.perf_counter()
    notes: list[str] = []
    own = engine is None
    if engine is None:
        engine = open_engine(load_campaign(campaign_path), url)
    try:
        url = getattr(engine, "url", url)  # a generated shm:// name, for the workers
        size = os.path.getsize(events_path)
        parts, skip, starts = _resume_plan(engine, events_path, size, workers, notes)
        jobs = [Job(campaign_path, url, events_path, parts, workers, k, skip, starts[k], batch,
                    dead_letters, os.getpid()) for k in range(workers)]
        # one worker: this process, on the caller's engine (exactly the reference's order)
        results = [run_job(jobs[0], engine)] if workers == 1 else _run_workers(jobs)
    finally:
        if own:
            engine.close()
    counts = np.zeros(_N_OUTCOMES, np.int64)
    for r in results:
        counts += np.asarray(r.counts, np.int64)
    started = [r.started for r in results if r.finished]
    finished = [r.finished for r in results if r.finished]
    work = max(finished) - min(started) if started else 0.0
    return ReplayResult(
        events=sum(r.events for r in results), dead=sum(r.dead for r in results),
        counts=counts, seconds=time.perf_counter() - t0, work_seconds=work,
        resumed_from=skip, workers=results, notes=notes)


def _presized(url: str, events: str) -> str:
    """memory:///dir sized for the input's orders up front, as rewardcore.cli does for
    memory:// (growing the order table costs as much as filling it)."""
    parts = urlsplit(url)
    if parts.scheme != "memory" or "orders" in parse_qs(parts.query):
        return url
    orders = os.path.getsize(events) // 100  # a placed event is ~150 bytes, others ~60
    return f"{url}{'&' if parts.query else '?'}orders={orders}"


def replay_command(args: argparse.Namespace) -> int:
    """`rewardcore replay` with --workers, or into shm:// or memory:///dir."""
    from .cli import ReplayReport, _write_state

    workers = 1 if args.workers is None else args.workers
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    scheme = urlsplit(args.backend).scheme if "://" in args.backend else ""
    if workers > 1 and (scheme in ("memory", "reference") or not scheme):
        raise ConfigError(f"--workers {workers} needs a backend the worker processes share, "
                          f"such as shm://NAME; {args.backend} lives in one process")
    if workers > _routing().MAX_PARTS:
        raise ConfigError(f"--workers {workers}: at most {_routing().MAX_PARTS}")
    campaign = load_campaign(args.campaign)
    spool = None
    path = args.events
    try:
        if path == "-":
            # workers map the input, and a resume checks its beginning: keep stdin in a file
            with tempfile.NamedTemporaryFile(prefix="rewardcore-stdin-", suffix=".jsonl",
                                             delete=False) as spool:
                shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
            path = spool.name
        elif not os.path.isfile(path):
            raise RewardcoreError(f"{path}: cannot read events: not a file")
        with open_engine(campaign, _presized(args.backend, path)) as engine:
            rec = getattr(engine, "recovery", None)
            if rec is not None and (rec.records or rec.cut or rec.snapshot):
                print(rec.summary(), file=sys.stderr)
            result = replay_file(args.campaign, args.backend, path, workers,
                                 args.batch or engine.preferred_batch,
                                 args.dead_letters, engine)
            if args.state_out:
                _write_state(engine, args.state_out)
    finally:
        if spool is not None:
            os.unlink(spool.name)
    for note in result.notes:
        print(note, file=sys.stderr)
    report = ReplayReport()
    report.events = result.events
    report.dead = result.dead
    report.seconds = result.seconds
    report.outcomes.update({o: int(result.counts[o]) for o in Outcome if result.counts[o]})
    print(report.summary() + (f" ({workers} workers)" if workers > 1 else ""), file=sys.stderr)
    if result.dead:
        print(f"dead letters written to {args.dead_letters}", file=sys.stderr)
    return 0


# -- shm-ls and shm-rm ----------------------------------------------------------------------
def cmd_shm_ls(args: argparse.Namespace) -> int:
    from .backends.shm import list_segments, segment_info

    for name in list_segments():
        try:
            info = segment_info(name)
        except OSError as exc:
            print(f"{name}\tunreadable: {exc.strerror}")
            continue
        if info is None:
            print(f"{name}\tnot a rewardcore segment")
            continue
        state = ("suspect (a process died mid-batch)" if info["poisoned"]
                 else "in use" if info["live_pids"]
                 else "stale (its processes died)" if info["pids"]
                 else "idle")
        print(f"{name}\t{info['size']:,} bytes\t{info['orders']:,} orders\t"
              f"{info['claims']:,} claims\t{state}\tpids {info['live_pids'] or '-'}")
    return 0


def cmd_shm_rm(args: argparse.Namespace) -> int:
    from .backends.shm import remove_segment

    for name in args.names:
        remove_segment(name, force=args.force)
        print(f"removed shared-memory segment {name}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `shm-ls` and `shm-rm` to the rewardcore command."""
    p = sub.add_parser("shm-ls", help="list the shared-memory segments of shm:// backends")
    p.set_defaults(func=cmd_shm_ls)
    p = sub.add_parser("shm-rm", help="remove shared-memory segments (a stale one after a crash)")
    p.add_argument("names", nargs="+", metavar="NAME", help="segment name, as in shm://NAME")
    p.add_argument("--force", action="store_true",
                   help="remove even while processes are attached (they keep their mapping)")
    p.set_defaults(func=cmd_shm_rm)


if __name__ == "__main__":
    sys.exit(_worker_main())

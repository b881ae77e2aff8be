"""Worker processes: one `python -m rewardcore.replay.workers` process per job.

The job goes as a JSON line on stdin, "ready" comes back once the worker has attached and
mapped the input, "go" when all are ready (so they start on the input together, not
staggered by their start-up), then the result as JSON on stdout. Plain processes (no
multiprocessing queues or semaphores), so a replay killed with SIGKILL leaves nothing
behind in /dev/shm. Every worker maps the whole input and keeps the lines of its
partitions (see rewardcore.replay.source); they share the claim state through the backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import msgspec

from ..errors import RewardcoreError
from .run import Job, WorkResult, request_stop, run_job, stop_requested


def run_workers(jobs: list[Job]) -> list[WorkResult]:
    """Run each job in a process of its own; one failing stops the others."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen([sys.executable, "-m", __name__], env=env,
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
            stop_all()
            return None
        return msgspec.json.decode(out, type=WorkResult)

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(talk, range(len(jobs))))
    if failed:
        raise RewardcoreError("; ".join(failed))
    return [r for r in results if r is not None]


def _die_with_parent(parent: int) -> None:
    """A worker dies with the replay that started it (a killed replay leaves no workers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:
        os._exit(1)  # the parent died before the line above


def worker_main() -> int:
    signal.signal(signal.SIGTERM, request_stop)
    job = msgspec.json.decode(sys.stdin.buffer.readline(), type=Job)
    _die_with_parent(job.parent)

    def ready() -> None:
        sys.stdout.buffer.write(b"ready\n")
        sys.stdout.buffer.flush()
        if sys.stdin.buffer.readline() != b"go\n" or stop_requested():
            raise RewardcoreError("the replay stopped before this worker started")

    try:
        result = run_job(job, ready=ready)
    except RewardcoreError as exc:
        print(f"rewardcore: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(msgspec.json.encode(result))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())

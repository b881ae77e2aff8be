"""A whole replay: open the input and the engine, plan (resume), run the workers, report."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from .._files import write_output
from ..backends import engine_class, open_engine
from ..campaign import load_campaign
from ..engine import Engine, Resumable, dump_state
from ..errors import ConfigError
from .resume import Plan, plan
from .run import Job, ReplayReport, run_job
from .source import MAX_PARTS, Input, open_input, presized


def replay_file(campaign_path: str, url: str, events_path: str, workers: int = 1,
                batch: int = 4096, dead_letters: str = "dead-letters.jsonl",
                engine: Engine | None = None) -> ReplayReport:
    """Replay a JSON-lines file into the backend with `workers` processes (1: this one),
    resuming where an earlier replay of the same input stopped. The caller's open engine
    may be passed; it keeps a shared segment alive and is used for the resume plan."""
    own = engine is None
    if engine is None:
        engine = open_engine(load_campaign(campaign_path), url)
    try:
        return _run(campaign_path, engine, Input(events_path), workers, batch, dead_letters)
    finally:
        if own:
            engine.close()


def _run(campaign_path: str, engine: Engine, inp: Input, workers: int, batch: int,
         dead_letters: str, progress: Callable[[int], object] | None = None) -> ReplayReport:
    t0 = time.perf_counter()
    if isinstance(engine, Resumable):
        the_plan = plan(engine.replay_positions(), inp.path, inp.size(), workers)
    else:
        the_plan = Plan.fresh(workers)
    jobs = [Job(campaign_path, engine.url, inp.path or "", the_plan.parts, workers, k,
                the_plan.skip, the_plan.starts[k], batch, dead_letters, os.getpid())
            for k in range(workers)]
    if workers == 1:  # this process, on the caller's engine (exactly the reference's order)
        results = [run_job(jobs[0], engine, stream=inp.stream, progress=progress)]
    else:
        from .workers import run_workers

        results = run_workers(jobs)
    return ReplayReport.of(results, time.perf_counter() - t0, the_plan.skip, the_plan.notes)


def replay(campaign_path: str, events: str, backend: str = "memory://", *,
           workers: int | None = None, batch: int | None = None,
           dead_letters: str = "dead-letters.jsonl", state_out: str | None = None,
           say: Callable[[str], None] | None = None,
           progress: Callable[[int], object] | None = None) -> ReplayReport:
    """`rewardcore replay`: the JSON-lines `events` ("-" for stdin) into `backend`, by
    `workers` processes sharing it, resuming a replay of the same input into a resumable
    backend; the exported state goes to `state_out` ("-" for stdout) if given. `say` gets
    what is worth telling on the way (a recovery, a resume); `progress(n)` the bytes of input
    scanned as they are (one worker)."""
    tell = say or (lambda text: print(text, file=sys.stderr))
    n = 1 if workers is None else workers
    if n < 1:
        raise ConfigError(f"--workers {n}: must be at least 1")
    cls = engine_class(backend)
    if n > 1 and not cls.shares_state:
        raise ConfigError(f"--workers {n} needs a backend the worker processes share, "
                          f"such as shm://NAME; {backend} lives in one process")
    if n > MAX_PARTS:
        raise ConfigError(f"--workers {n}: at most {MAX_PARTS}")
    campaign = load_campaign(campaign_path)
    # workers map the input and a resume checks its beginning: those need it as a file
    with open_input(events, need_file=n > 1 or cls.resumable) as inp, \
            open_engine(campaign, presized(backend, inp)) as engine:
        if engine.open_note:
            tell(engine.open_note)
        report = _run(campaign_path, engine, inp, n, batch or engine.preferred_batch,
                      dead_letters, progress)
        if state_out:
            write_output(state_out, dump_state(engine.export_state()))
    for note in report.notes:
        tell(note)
    return report

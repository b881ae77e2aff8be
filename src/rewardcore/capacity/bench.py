"""Throughput harness: every rate on the same generated events, in one run, as ratios.

    rewardcore bench [--only GROUPS] [--orders N] [--repeat R] [--json FILE] [--no-fail]
    python bench/throughput.py ...      (the same)

Row groups (`--only decode,memory,...`; default all; a group brings the baselines its
ratios need: `memory` brings `decode` and `reference`; `durable` and `shm` bring `decode`
and the memory engine's replay;
`redis` and `cluster` bring their own memory-engine rows on the same claims):

  decode     msgspec decoding of the JSON lines alone
  reference  the pure-Python reference engine's claim step
  memory     the Cython engine: decode + claims, the claim step at several batch sizes,
             bytes per remembered order id (--memory-orders)
  durable    memory:///dir with an fsync per batch and without, against the memory engine
  shm        shm://NAME replayed by 1 and 2 worker processes (2 >= 1.6 x 1)
  redis      one local redis-server: claims into open regions, into sold-out regions
             (against the memory engine on the same events), redis-benchmark INCR -P 64
  cluster    the same on a 3-master Redis Cluster
  aio        rewardcore.aio: 1,000 concurrent single-order callers against one order per
             synchronous call, on memory:// and (with redis-server) redis://; p99 per call

The events are generated once (traffic.generate, seed 11). Timed rows are measured
alternately, round after round (--repeat), and the best of each kept, so a noisy neighbour
on a shared machine hurts every row alike; the spread (slowest/fastest - 1) is printed
with each. Each row carries its ratio to the budget of docs/design.md it answers to; a missed
budget is printed as MISSED, never hidden, and makes the exit code 1 (unless --no-fail); a
row whose measurement fails says ERROR and why, the others go on, and the exit code is 2.
A backend that is not installed or registered gets a "skipped" row that says why.
Redis servers are started on free loopback ports and stopped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson

from .. import load_campaign, open_engine
from ..backends import backend_schemes
from ..campaign import Campaign, RegionSpec, Tier
from ..codec import read_jsonl
from ..events import Event, Placed
from ..outcomes import Outcome
from ..traffic import TrafficShape, generate
from . import source_version
from .commands import GROUPS, add_bench_arguments

#: Groups whose rows are the baselines of another group's ratios.
# durable and shm also bring the memory engine's replay row (their ratios divide by it)
NEEDS = {"memory": ("decode", "reference"), "durable": ("decode",), "shm": ("decode",)}

# x redis-benchmark -P 64 -t incr on the same server, same run (docs/design.md)
REDIS_GOALS = {"open": 0.10, "caps": 0.05, "sold_out": 0.20, "replay": 0.12}
SHM_SCALING_GOAL = 1.6  # 2 workers vs 1


class Row(msgspec.Struct):
    name: str
    events: int
    seconds: float
    budget: str = ""
    ratio: float | None = None  # measured / what the budget compares against
    goal: float | None = None  # the ratio the budget asks for
    note: str = ""
    group: str = ""
    runs: list[float] = []  # seconds of every timed run, in order
    skipped: str = ""  # why the row was not measured
    error: str = ""  # why its measurement failed
    cpu_s: float | None = None  # CPU seconds of this process (+ children) in the least run
    server_cpu_s: float | None = None  # CPU seconds of the servers it used, least run
    cpu_ratio: float | None = None  # the ratio again from CPU-second rates (see print_table)

    @property
    def per_cpu(self) -> float | None:
        """Events per CPU-second of the client: steadier than wall time on a busy box."""
        return self.events / self.cpu_s if self.cpu_s else None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def spread(self) -> float | None:
        """Slowest run over the fastest, minus one: how noisy this row was."""
        if len(self.runs) < 2 or not min(self.runs):
            return None
        return max(self.runs) / min(self.runs) - 1

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.skipped:
            return "skipped"
        if self.ratio is None or self.goal is None:
            return ""
        return "ok" if self.ratio >= self.goal else "MISSED"


@dataclass
class Measure:
    """One timed row. `run` returns the events it processed, or (events, seconds[, cpu
    seconds]) when it times itself (workers reporting their own clocks). `setup` and
    `teardown` are untimed."""

    name: str
    group: str
    run: Callable[[], int | tuple[int, float] | tuple[int, float, float]]
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    budget: str = ""
    goal: float | None = None
    base: str | None = None  # the name of the row whose rate the ratio divides by
    target: float | None = None  # or an absolute rate the ratio divides by
    note: str | Callable[[], str] = ""
    server_cpu: Callable[[], float] | None = None  # CPU seconds the servers used so far
    events: int = 0
    error: str = ""
    runs: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)


class Bench:
    """What the row groups share: the arguments, the events, started servers, the rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.campaign = load_campaign(args.campaign)
        self.data = b"".join(generate(self.campaign, TrafficShape(orders=args.orders, seed=11)))
        self.batches = self.batched(args.batch)
        self.events = sum(map(len, self.batches))
        self.presized = f"memory://?orders={args.orders * 2}"
        self.measures: dict[str, Measure] = {}
        self.rows: list[Row] = []  # rows measured once, or skipped
        self.order: list[str] = []  # every row's name, in the order the groups made them
        self.stack = contextlib.ExitStack()
        self.tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="rc-bench-")))
        self._claims: list[list[Event]] | None = None
        self.shm_runs = 0  # a fresh segment name per run

    def batched(self, size: int) -> list[list[Event]]:
        return [ev for ev, _ in read_jsonl(io.BytesIO(self.data), size)]

    def add(self, m: Measure) -> None:
        if m.name not in self.measures:
            self.measures[m.name] = m
            self.order.append(m.name)

    def add_row(self, row: Row) -> None:
        self.rows.append(row)
        self.order.append(row.name)

    def skip(self, group: str, name: str, why: str) -> None:
        self.add_row(Row(name, 0, 0.0, group=group, skipped=why))

    def events_file(self) -> Path:
        path = self.tmp / "events.jsonl"
        if not path.exists():
            path.write_bytes(self.data)
        return path

    def claim_batches(self) -> list[list[Event]]:
        """The first --redis-orders new orders of the stream that reach a reward region:
        every one of them is a claim (awarded if its region is open)."""
        if self._claims is None:
            c = self.campaign
            seen: set[str] = set()
            picked: list[Event] = []
            for batch in self.batches:
                for ev in batch:
                    if (type(ev) is Placed and ev.order_id not in seen
                            and c.placed_outcome(ev.ts, ev.region, ev.paid_cents) is None):
                        seen.add(ev.order_id)
                        picked.append(ev)
                if len(picked) >= self.args.redis_orders:
                    break
            picked = picked[:self.args.redis_orders]
            b = self.args.batch
            self._claims = [picked[i:i + b] for i in range(0, len(picked), b)]
        return self._claims

    # -- running ------------------------------------------------------------------------------
    def measure_all(self) -> None:
        """Every timed row once per round, rounds repeated: the best of each is kept. A row
        whose run fails is not measured again; its error is reported in its place."""
        ms = list(self.measures.values())
        for rnd in range(self.args.repeat):
            for m in ms:
                if m.error:
                    continue
                try:
                    self._measure_once(m)
                except Exception as exc:  # one backend's failure must not hide the others
                    m.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    print(f"{m.name}: failed: {exc}", file=sys.stderr)
                    with contextlib.suppress(Exception):
                        if m.teardown:
                            m.teardown()
            print(f"round {rnd + 1}/{self.args.repeat} done", file=sys.stderr)

    def _measure_once(self, m: Measure) -> None:
        if m.setup:
            m.setup()
        s0 = m.server_cpu() if m.server_cpu else 0.0
        c0, p0 = os.times(), time.process_time()
        t = time.perf_counter()
        got = m.run()
        dt = time.perf_counter() - t
        p1, c1 = time.process_time(), os.times()
        # this process (every thread, ns resolution) + children it waited for (ticks)
        cpu = (p1 - p0 + c1.children_user - c0.children_user
               + c1.children_system - c0.children_system)
        if isinstance(got, tuple):
            got, dt, *own = got
            cpu = own[0] if own else cpu
        m.events = got
        m.runs.append(dt)
        m.cpu.append(cpu)
        if m.server_cpu:
            m.server.append(m.server_cpu() - s0)
        if m.teardown:
            m.teardown()

    def results(self) -> list[Row]:
        rows: dict[str, Row] = {r.name: r for r in self.rows}
        for m in self.measures.values():
            if m.error:
                rows[m.name] = Row(m.name, m.events, min(m.runs, default=0.0), budget=m.budget,
                                   goal=m.goal, group=m.group, error=m.error,
                                   runs=[round(x, 6) for x in m.runs])
                continue
            rows[m.name] = Row(m.name, m.events, min(m.runs), budget=m.budget, goal=m.goal,
                               note=m.note() if callable(m.note) else m.note, group=m.group,
                               runs=[round(x, 6) for x in m.runs],
                               cpu_s=min(m.cpu) if m.cpu else None,
                               server_cpu_s=min(m.server) if m.server else None)
        for m in self.measures.values():
            row = rows[m.name]
            if m.error:
                continue
            if m.base is not None:
                base = rows[m.base].rate
                row.ratio = row.rate / base if base else None
                base_cpu, own_cpu = rows[m.base].per_cpu, row.per_cpu
                if base_cpu and own_cpu and not m.server_cpu:
                    row.cpu_ratio = own_cpu / base_cpu
            elif m.target is not None:
                row.ratio = row.rate / m.target
        return [rows[name] for name in self.order]


# -- row groups ---------------------------------------------------------------------------------

DECODE = "msgspec decode alone (JSON lines)"
REFERENCE = "reference engine: claim step"
MEMORY_STEP = "memory engine: claim step (pre-decoded)"


def group_decode(b: Bench) -> None:
    def run() -> int:
        n = 0
        for events, _ in read_jsonl(io.BytesIO(b.data), b.args.batch):
            n += len(events)
        return n
    b.add(Measure(DECODE, "decode", run))


def claim_step(campaign: Campaign, url: str, batches: list[list[Event]]) -> Callable[[], int]:
    def run() -> int:
        engine = open_engine(campaign, url)
        for batch in batches:
            engine.apply(batch)
        engine.close()
        return sum(map(len, batches))
    return run


def group_reference(b: Bench) -> None:
    b.add(Measure(REFERENCE, "reference", claim_step(b.campaign, "reference://", b.batches)))


def replay_in_memory(campaign: Campaign, url: str, data: bytes, batch: int) -> int:
    engine = open_engine(campaign, url)
    n = 0
    for events, _ in read_jsonl(io.BytesIO(data), batch):
        engine.apply(events)
        n += len(events)
    engine.close()
    return n


MEMORY_REPLAY = "memory engine: decode + claims"


def add_memory_replay(b: Bench, group: str) -> None:
    b.add(Measure(MEMORY_REPLAY, group,
                  lambda: replay_in_memory(b.campaign, b.presized, b.data, b.args.batch),
                  budget=">= 0.85 x decode alone", goal=0.85, base=DECODE))


def group_memory(b: Bench) -> None:
    a = b.args
    add_memory_replay(b, "memory")
    b.add(Measure("memory engine, table not pre-sized", "memory",
                  lambda: replay_in_memory(b.campaign, "memory://", b.data, a.batch),
                  budget="(same)", goal=0.85, base=DECODE))
    b.add(Measure(MEMORY_STEP, "memory", claim_step(b.campaign, b.presized, b.batches),
                  budget=">= 20 x reference", goal=20, base=REFERENCE,
                  note=f"batch {a.batch}"))
    for size in a.batch_sizes:
        if size == a.batch:
            continue
        b.add(Measure(f"memory engine: claim step, batch {size}", "memory",
                      claim_step(b.campaign, b.presized, b.batched(size)),
                      budget=">= 20 x reference", goal=20, base=REFERENCE))


def order_table_bytes(campaign: Campaign, orders: int) -> Row:
    """Bytes per remembered order id: the order table's size over the orders it holds."""
    from .._engine import MemoryCore

    core = MemoryCore(campaign, 0)
    step = 100_000
    t = time.perf_counter()
    for start in range(0, orders, step):
        # off-region orders: remembered, never awarded, as most peak-day orders are
        core.apply([Placed(order_id=f"order-{i:012d}", merchant_id="m", agent_id="a",
                           region=-1, paid_cents=1, ts=campaign.starts_ms)
                    for i in range(start, min(orders, start + step))])
    seconds = time.perf_counter() - t
    per = core.order_table_bytes / core.orders_remembered
    return Row(f"order-id table at {orders:,} orders", orders, seconds,
               budget="<= 32 bytes per order", ratio=32 / per, goal=1.0, group="memory",
               note=f"{per:.1f} bytes/order ({core.order_table_bytes / 2**20:.0f} MiB)")


def group_durable(b: Bench) -> None:
    """memory:///dir: the replay of 'memory engine: decode + claims', made durable (a
    write-ahead log in a directory), with an fsync per batch and with none. docs/design.md sets
    no budget here: the ratio to the plain memory engine is the cost of durability."""
    name = "durable memory:///dir"
    if not _durable_available(b):
        b.skip("durable", name, "memory:///dir (durable mode) is not installed")
        return
    a = b.args
    add_memory_replay(b, "durable")
    root = Path(tempfile.mkdtemp(prefix="rc-bench-durable-", dir=a.durable_dir))
    b.stack.callback(shutil.rmtree, root, ignore_errors=True)
    fs = _filesystem(root)
    for mode, label in (("batch", "fsync per batch"), ("none", "no fsync")):
        def setup(mode: str = mode) -> None:
            shutil.rmtree(root / mode, ignore_errors=True)
            (root / mode).mkdir()

        def run(mode: str = mode) -> int:
            url = f"memory://{root / mode}?orders={a.orders * 2}&fsync={mode}"
            return replay_in_memory(b.campaign, url, b.data, a.batch)
        b.add(Measure(f"{name}, {label}", "durable", run, setup=setup,
                      budget="(none) vs memory engine", base=MEMORY_REPLAY,
                      note=f"batch {a.batch}, log on {fs}"))


def _filesystem(path: Path) -> str:
    """The type of the file system `path` is on (fsync on tmpfs costs nothing)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


def _durable_available(b: Bench) -> bool:
    from ..errors import ConfigError
    try:
        open_engine(b.campaign, f"memory://{b.tmp / 'probe'}").close()
    except ConfigError:
        return False
    return True


def group_shm(b: Bench) -> None:
    """shm://NAME replayed by 1 and 2 worker processes (rewardcore.replay.replay_file, the
    code behind `rewardcore replay --workers N`), timed by its work clock: from the first
    worker starting on its input to the last finishing, and the CPU the workers spent on
    their input, so process start-up is left out of both. Each run gets a fresh segment."""
    if "shm" not in backend_schemes():
        b.skip("shm", "shm:// engine", "the shm:// backend is not registered")
        return
    from ..replay import replay_file

    add_memory_replay(b, "shm")
    base = None
    for workers in b.args.shm_workers:
        name = f"shm engine, {workers} worker{'s' if workers > 1 else ''}"

        def run(workers: int = workers) -> tuple[int, float, float]:
            b.shm_runs += 1
            url = (f"shm://rc-bench-{os.getpid()}-{b.shm_runs}?orders={b.args.orders * 2}"
                   "&transient=1")
            with open_engine(b.campaign, url) as engine:
                got = replay_file(b.args.campaign, url, str(b.events_file()), workers,
                                  b.args.batch, os.devnull, engine)
            return got.events, got.work_seconds, sum(w.cpu for w in got.workers)
        note = "decode + claims; work clock and the workers' CPU (start-up left out)"
        if base is None:
            b.add(Measure(name, "shm", run, budget="(none) vs memory engine", base=MEMORY_REPLAY,
                          note=note))
            base = name
        else:
            b.add(Measure(name, "shm", run, budget=f">= {SHM_SCALING_GOAL} x 1 worker",
                          goal=SHM_SCALING_GOAL, base=base, note=note))
    most = max(b.args.shm_workers)
    if base is not None and most > 1:
        # The same split into private memory:// engines: nothing shared, no lock. What this
        # machine gives `most` processes at all, so a missed scaling goal can be read.
        def alone() -> tuple[int, float, float]:
            url = f"memory://?orders={b.args.orders * 2}"
            with open_engine(b.campaign, url) as engine:
                got = replay_file(b.args.campaign, url, str(b.events_file()), most,
                                  b.args.batch, os.devnull, engine)
            return got.events, got.work_seconds, sum(w.cpu for w in got.workers)
        b.add(Measure(f"{most} processes, nothing shared (memory://)", "shm", alone,
                      budget="(ceiling) vs 1 worker", base=base,
                      note="each its own state: the machine's ceiling for the row above"))


# -- Redis -----------------------------------------------------------------------------------

def proc_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of live processes, from /proc (Linux; 0 elsewhere)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def open_variant(c: Campaign, slots: int) -> Campaign:
    """Every region open for `slots` claims, no budget, caps or min paid: every claim wins."""
    spec = c.spec
    info = msgspec.structs.replace(spec.campaign, id=f"{c.id}-open", budget_points=0,
                                   max_claims_per_beneficiary=0, on_close="forfeit",
                                   max_claims_per_beneficiary_per_region=0, min_paid_cents=0)
    tiers = (Tier(upto=slots, points=5),)
    regions = tuple(RegionSpec(code=r.code, slots=slots, tiers=tiers) for r in c.regions)
    return Campaign(msgspec.structs.replace(spec, campaign=info, regions=regions),
                    f"{c.source} (open regions)")


def soldout_variant(c: Campaign) -> Campaign:
    """The campaign without its budget, so that filling every slot sells every region out
    (with the budget, the last regions would end budget_exhausted instead)."""
    info = msgspec.structs.replace(c.spec.campaign, id=f"{c.id}-soldout", budget_points=0)
    return Campaign(msgspec.structs.replace(c.spec, campaign=info), f"{c.source} (sold out)")


def fill_batches(c: Campaign, batch: int) -> list[list[Event]]:
    """One order per slot of every region, each by a beneficiary of its own: afterwards
    every region is sold out."""
    fill: list[Event] = [
        Placed(order_id=f"fill-{r.code}-{k}", merchant_id=f"fill-m-{r.code}-{k}",
               agent_id=f"fill-a-{r.code}-{k}", region=r.code, paid_cents=10**6,
               ts=c.starts_ms)
        for r in c.regions for k in range(r.slots)]
    return [fill[i:i + batch] for i in range(0, len(fill), batch)]


class _EngineRun:
    """Open (and pre-fill) an engine untimed, apply the claim batches timed, close untimed;
    the outcomes are tallied afterwards so the note can say what the row measured."""

    def __init__(self, campaign: Campaign, url: str, batches: list[list[Event]],
                 fill: list[list[Event]] | None = None,
                 flush: Callable[[], object] | None = None) -> None:
        self.campaign, self.url, self.batches, self.fill, self.flush = (
            campaign, url, batches, fill, flush)
        self.engine: Any = None
        self.decisions: list[Any] = []
        self.outcomes = np.zeros(len(Outcome), np.int64)

    def setup(self) -> None:
        if self.flush:
            self.flush()
        self.engine = open_engine(self.campaign, self.url)
        for batch in self.fill or ():
            self.engine.apply(batch)

    def run(self) -> int:
        apply, keep = self.engine.apply, self.decisions.append
        for batch in self.batches:
            keep(apply(batch))
        return sum(map(len, self.batches))

    def teardown(self) -> None:
        self.engine.close()
        self.engine = None
        for d in self.decisions:
            self.outcomes += np.bincount(d.outcome, minlength=len(Outcome))
        self.decisions.clear()

    def note(self) -> str:
        total = int(self.outcomes.sum())
        if not total:
            return ""
        top = np.argsort(-self.outcomes)[:2]
        return ", ".join(f"{Outcome(int(o)).label} {self.outcomes[o] / total:.0%}"
                         for o in top if self.outcomes[o])


class _RedisRun(_EngineRun):
    """An engine run that also reads, from each server's INFO, the script calls and the CPU
    the servers spent during the timed part (the note reports them per batch / per event)."""

    def __init__(self, *args: Any, ports: list[int], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ports = ports
        self.calls: list[int] = []
        self.cpu: list[list[float]] = []

    def run(self) -> int:
        import redis

        clients = [redis.Redis(port=p) for p in self.ports]

        def sample() -> tuple[int, list[float]]:
            calls, cpu = 0, []
            for c in clients:
                stats = c.info("commandstats")
                calls += sum(int(v["calls"]) for k, v in stats.items()
                             if k in ("cmdstat_evalsha", "cmdstat_eval"))
                info = c.info("cpu")
                cpu.append(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]))
            return calls, cpu
        calls0, cpu0 = sample()
        n = super().run()
        calls1, cpu1 = sample()
        for c in clients:
            c.close()
        self.calls.append(calls1 - calls0)
        self.cpu.append([y - x for x, y in zip(cpu0, cpu1, strict=True)])
        return n

    def note(self) -> str:
        base = super().note()
        if not self.calls:
            return base
        n = sum(map(len, self.batches))
        calls = min(self.calls) / max(1, len(self.batches))
        per = [min(c[k] for c in self.cpu) / n * 1e6 for k in range(len(self.ports))]
        text = f"{calls:.1f} script calls/batch, {sum(per):.2f} us server CPU/event"
        if len(per) > 1:
            text += (" (per master " + "/".join(f"{x:.2f}" for x in per)
                     + f"; busiest {max(per) / max(sum(per), 1e-9):.0%})")
        return f"{base}; {text}" if base else text


def _redis_claim_rows(b: Bench, group: str, label: str, url: str,
                      flush: Callable[[], object], pids: list[int], ports: list[int],
                      incr: str) -> None:
    """Open claims without caps; the example's caps and budget; sold-out orders; a whole
    replay of the generated traffic. Ratios divide by redis-benchmark INCR on the same
    servers (`incr`, the row's name), the goals of docs/design.md."""
    claims = b.claim_batches()

    def server_cpu() -> float:
        return proc_cpu_seconds(pids)
    n = sum(map(len, claims))
    open_c, sold_c = open_variant(b.campaign, max(1, n)), soldout_variant(b.campaign)
    rows = (
        ("claims, open regions, no caps", open_c, claims, None, REDIS_GOALS["open"]),
        ("claims, example caps and budget", b.campaign, claims, None, REDIS_GOALS["caps"]),
        ("orders into sold-out regions", sold_c, claims, fill_batches(sold_c, b.args.batch),
         REDIS_GOALS["sold_out"]),
        ("replay of generated traffic", b.campaign, b.batches, None, REDIS_GOALS["replay"]),
    )
    for name, camp, batches, fill, goal in rows:
        r = _RedisRun(camp, url, batches, fill, flush=flush, ports=ports)
        b.add(Measure(f"{label}: {name}", group, r.run, setup=r.setup, teardown=r.teardown,
                      budget=f">= {goal} x redis-benchmark INCR", goal=goal, base=incr,
                      note=r.note, server_cpu=server_cpu))


_BENCH_RPS = re.compile(r"INCR: ([\d.]+) requests per second")


def _redis_benchmark(b: Bench, group: str, label: str, port: int, cluster: bool,
                     pids: list[int]) -> str:
    """The ratio base of the engine's rows: redis-benchmark INCR -P 64 on the same servers."""
    exe = shutil.which("redis-benchmark")
    name = f"redis-benchmark -P 64 -t incr, {label}"
    if exe is None:
        b.skip(group, name, "redis-benchmark not found")
        return name
    requests = b.args.redis_benchmark_requests
    cmd = [exe, *(["--cluster"] if cluster else []), "-h", "127.0.0.1", "-p", str(port),
           "-P", "64", "-t", "incr", "-q", "-n", str(requests)]

    def run() -> tuple[int, float]:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        got = _BENCH_RPS.findall(out.stdout)
        if out.returncode != 0 or not got:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): "
                               f"{(out.stdout + out.stderr)[-1000:]}")
        return requests, requests / float(got[-1])

    b.add(Measure(name, group, run, note="the base of the engine rows' ratios",
                  server_cpu=lambda: proc_cpu_seconds(pids)))
    return name


def group_redis(b: Bench) -> None:
    label = "redis engine, 1 redis-server"
    if shutil.which("redis-server") is None or "redis" not in backend_schemes():
        why = ("redis-server not found" if shutil.which("redis-server") is None
               else "the redis:// backend is not registered")
        b.skip("redis", label, why)
        return
    import redis

    from ..redis_servers import RedisServer

    server = RedisServer().start()
    b.stack.callback(server.close)
    client = redis.Redis(host="127.0.0.1", port=server.port)
    b.stack.callback(client.close)
    pids = [server.proc.pid] if server.proc else []
    incr = _redis_benchmark(b, "redis", "1 redis-server", server.port, False, pids)
    _redis_claim_rows(b, "redis", label, server.url, client.flushall, pids, [server.port],
                      incr)


def group_cluster(b: Bench) -> None:
    label = f"redis engine, {b.args.masters}-master cluster"
    if shutil.which("redis-server") is None or "redis+cluster" not in backend_schemes():
        why = ("redis-server not found" if shutil.which("redis-server") is None
               else "the redis+cluster:// backend is not registered")
        b.skip("cluster", label, why)
        return
    from ..redis_servers import RedisCluster

    cluster = RedisCluster(b.args.masters)
    b.stack.callback(cluster.close)
    cluster.start()
    pids = [n.proc.pid for n in cluster.nodes if n.proc]
    incr = _redis_benchmark(b, "cluster", f"{b.args.masters}-master cluster",
                            cluster.nodes[0].port, True, pids)
    _redis_claim_rows(b, "cluster", label, cluster.url, cluster.flushall, pids,
                      [n.port for n in cluster.nodes], incr)


def _aio_rows(b: Bench, label: str, url: str, orders: list[Event], reset: Callable[[], object],
              callers: int = 1000) -> None:
    """One order per call, synchronously, against `callers` asyncio tasks each awaiting one
    order at a time through one AsyncEngine (whose worker merges them)."""
    import asyncio

    from ..aio import AsyncEngine

    p99: dict[str, list[float]] = {}

    def fresh() -> None:  # every run starts from an empty campaign
        reset()

    def sync() -> int:
        engine = open_engine(b.campaign, url)
        lat = []
        for ev in orders:
            t = time.perf_counter()
            engine.apply([ev])
            lat.append(time.perf_counter() - t)
        engine.close()
        p99.setdefault("sync", []).append(float(np.percentile(lat, 99)))
        return len(orders)

    async def concurrent() -> list[float]:
        engine = AsyncEngine(open_engine(b.campaign, url))
        lat: list[float] = []

        async def caller(mine: list[Event]) -> None:
            for ev in mine:
                t = time.perf_counter()
                await engine.apply([ev])
                lat.append(time.perf_counter() - t)

        await asyncio.gather(*(caller(orders[k::callers]) for k in range(callers)))
        await engine.aclose()
        return lat

    def merged() -> int:
        lat = asyncio.run(concurrent())
        p99.setdefault("aio", []).append(float(np.percentile(lat, 99)))
        return len(orders)

    def note(kind: str) -> Callable[[], str]:
        return lambda: (f"p99 per call {np.median(p99.get(kind, [0])) * 1e3:.3f} ms "
                        "(median of rounds)")

    sync_name = f"{label}: 1 order per synchronous apply"
    b.add(Measure(sync_name, "aio", sync, setup=fresh, note=note("sync")))
    b.add(Measure(f"{label}: aio, {callers:,} concurrent 1-order callers", "aio", merged,
                  setup=fresh, base=sync_name, note=note("aio")))


def group_aio(b: Bench) -> None:
    orders = [ev for batch in b.claim_batches() for ev in batch]
    _aio_rows(b, "memory://", b.presized, orders, lambda: None)
    if shutil.which("redis-server") is None:
        b.skip("aio", "redis:// aio rows", "redis-server not found")
        return
    import redis

    from ..redis_servers import RedisServer

    server = RedisServer().start()
    b.stack.callback(server.close)
    client = redis.Redis(host="127.0.0.1", port=server.port)
    b.stack.callback(client.close)
    # one round trip per synchronous order: a tenth of the orders keeps the row short
    _aio_rows(b, "redis://", server.url, orders[:max(1, len(orders) // 10)], client.flushall)


GROUP_FUNCS: dict[str, Callable[[Bench], None]] = {
    "decode": group_decode, "reference": group_reference, "memory": group_memory,
    "durable": group_durable, "shm": group_shm, "redis": group_redis, "cluster": group_cluster,
    "aio": group_aio,
}


def expand_groups(only: Sequence[str]) -> list[str]:
    """The groups asked for plus the baselines their ratios need, in GROUPS order."""
    want: set[str] = set()
    todo = list(only)
    while todo:
        g = todo.pop()
        if g not in want:
            want.add(g)
            todo.extend(NEEDS.get(g, ()))
    return [g for g in GROUPS if g in want]


# -- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_bench_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.orders < 1 or args.batch < 1 or args.repeat < 1 or args.redis_orders < 1:
        raise SystemExit("rewardcore bench: --orders, --batch, --repeat and --redis-orders "
                         "must be at least 1")
    groups = expand_groups(args.only)
    with bench_context(args) as b:
        print(f"{b.events:,} events ({len(b.data) / 2**20:.0f} MiB JSON lines) for "
              f"{b.campaign}, batch {args.batch}, {args.repeat} rounds; groups "
              f"{','.join(groups)}", file=sys.stderr)
        for g in groups:
            GROUP_FUNCS[g](b)
        b.measure_all()
        if "memory" in groups and args.memory_orders:
            b.add_row(order_table_bytes(b.campaign, args.memory_orders))
        rows = b.results()
    print_table(rows)
    if args.json:
        meta = {"python": platform.python_version(), "cpus": os.cpu_count(),
                "load_avg": os.getloadavg(), "events": b.events, "orders": args.orders,
                "batch": args.batch, "repeat": args.repeat, "redis_orders": args.redis_orders,
                "groups": groups, "argv": sys.argv[1:], "source": source_version()}
        Path(args.json).write_bytes(orjson.dumps(
            {"meta": meta, "rows": [msgspec.to_builtins(r) | {
                "rate": r.rate, "verdict": r.verdict, "spread": r.spread,
                "per_cpu": r.per_cpu,
                "server_per_cpu": r.events / r.server_cpu_s if r.server_cpu_s else None}
                for r in rows]},
            option=orjson.OPT_INDENT_2))
    if any(r.error for r in rows):
        return 2  # a row could not be measured: never hidden by --no-fail
    missed = [r.name for r in rows if r.verdict == "MISSED"]
    if missed and not args.no_fail:
        return 1
    return 0


@contextlib.contextmanager
def bench_context(args: argparse.Namespace) -> Iterator[Bench]:
    b = Bench(args)
    with b.stack:
        yield b


def print_table(rows: list[Row]) -> None:
    """The rows. `per s` is the best run's wall-clock rate: the ratio and the verdict use it,
    as the budgets are rates. `per CPU-s` is the rate per CPU-second this process (and its
    children) spent, and `cpu` the ratio again from those: on a busy machine, where wall
    time is mostly waiting for a core, they say what the code does per core. Rows that
    wait on servers (Redis) get no CPU ratio."""
    print(f"{'row':52} {'per s':>11} {'per CPU-s':>11} {'budget':>28} {'ratio':>6} {'cpu':>6}  "
          f"{'verdict':7} {'spread':>6}  note")
    for r in rows:
        if r.skipped or r.error:
            print(f"{r.name:52} {'-':>11} {'':>11} {'':>28} {'':>6} {'':>6}  {r.verdict:7} "
                  f"{'':>6}  {r.skipped or r.error}")
            continue
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        cpu_ratio = f"{r.cpu_ratio:.2f}" if r.cpu_ratio is not None else ""
        spread = f"{r.spread:.0%}" if r.spread is not None else ""
        per_cpu = f"{r.per_cpu:,.0f}" if r.per_cpu else ""
        note = r.note
        if r.server_cpu_s:
            note = (note + "; " if note else "") + (
                f"servers {r.events / r.server_cpu_s:,.0f} per CPU-s")
        print(f"{r.name:52} {r.rate:11,.0f} {per_cpu:>11} {r.budget:>28} {ratio:>6} "
              f"{cpu_ratio:>6}  {r.verdict:7} {spread:>6}  {note}")


if __name__ == "__main__":
    raise SystemExit(main())

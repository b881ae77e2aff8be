"""The `rewardcore` command.

Core commands live here; other features add theirs through modules listed in
`_COMMAND_MODULES`, each with a `register(subparsers)` function, so this file stays small.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import orjson

from . import __version__
from .backends import open_engine
from .campaign import load_campaign
from .codec import DEFAULT_BATCH, DeadLetter, read_jsonl
from .console import (
    CountingReader,
    Parser,
    add_quiet,
    empty_backend,
    holds_nothing,
    no_valid_event,
    progress,
    quiet_broken_pipe,
    warn,
)
from .engine import Engine, dump_state
from .errors import RewardcoreError
from .outcomes import PLACED_OUTCOMES, Outcome
from .traffic import TrafficShape, generate

DEFAULT_BACKEND = "memory://"

#: Modules that add subcommands: each defines `register(subparsers)`.
_COMMAND_MODULES: tuple[str, ...] = (
    "rewardcore.review.commands",
    "rewardcore.daemon.cli",
    "rewardcore.capacity.commands",  # bench, loadtest: their code loads when they run
    "rewardcore.examples",
    "rewardcore.parallel",
)


class DeadLetterSink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class ReplayReport:
    """What a replay did, for the summary line and for tests."""

    def __init__(self) -> None:
        self.events = 0
        self.dead = 0
        self.outcomes: Counter[Outcome] = Counter()
        self.seconds = 0.0

    def summary(self) -> str:
        rate = self.events / self.seconds if self.seconds else 0.0
        placed = sum(self.outcomes[o] for o in PLACED_OUTCOMES)
        lines = [
            f"events {self.events:,} in {self.seconds:.2f}s ({rate:,.0f} events/s), "
            f"dead letters {self.dead:,}",
            f"placed {placed:,}: " + ", ".join(
                f"{o.label} {self.outcomes[o]:,}" for o in PLACED_OUTCOMES if self.outcomes[o]
            ),
        ]
        others = [o for o in Outcome if o not in PLACED_OUTCOMES and self.outcomes[o]]
        if others:
            lines.append("other: " + ", ".join(f"{o.label} {self.outcomes[o]:,}" for o in others))
        return "\n".join(lines)


def replay(engine: Engine, stream: BinaryIO, batch: int = DEFAULT_BATCH,
           dead_letters: DeadLetterSink | None = None) -> ReplayReport:
    """Stream JSON-lines events through the engine; dead letters go to `dead_letters`."""
    report = ReplayReport()
    counts = np.zeros(len(Outcome), np.int64)
    start = time.perf_counter()
    for events, dead in read_jsonl(stream, batch):
        if events:
            counts += np.bincount(engine.apply(events).outcome, minlength=len(Outcome))
            report.events += len(events)
        if dead:
            report.dead += len(dead)
            if dead_letters is not None:
                _write_dead(dead_letters, dead)
    report.outcomes.update({o: int(counts[o]) for o in Outcome if counts[o]})
    report.seconds = time.perf_counter() - start
    return report


def _write_dead(out: DeadLetterSink, dead: list[DeadLetter]) -> None:
    out.write(b"".join(orjson.dumps(d.to_dict()) + b"\n" for d in dead))


def _open_events(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise RewardcoreError(f"{path}: cannot read events: {exc.strerror}") from None


def _write_state(engine: Engine, path: str) -> None:
    data = dump_state(engine.export_state())
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)  # a reader never sees half a state file


def _presized(backend: str, events: str) -> str:
    """memory:// sized for a file's orders up front: growing the order table costs as much
    as filling it (every entry is rehashed into memory that is not in cache)."""
    if backend != "memory://" or events == "-" or not os.path.isfile(events):
        return backend
    return f"memory://?orders={os.path.getsize(events) // _BYTES_PER_EVENT_GUESS}"


_BYTES_PER_EVENT_GUESS = 100  # a placed event is ~150 bytes, closed/completed ~60


def cmd_replay(args: argparse.Namespace) -> int:
    from .parallel import maybe_replay  # --workers, shm:// and memory:///dir (resumable)

    handled = maybe_replay(args)
    if handled is not None:
        return handled
    campaign = load_campaign(args.campaign)
    dead_path = Path(args.dead_letters)
    stream = _open_events(args.events)
    dead_out = None
    size = os.path.getsize(args.events) if args.events != "-" else None
    try:
        with open_engine(campaign, _presized(args.backend, args.events)) as engine, \
                progress(size, desc="replay", unit="B", quiet=args.quiet) as bar:
            dead_out = _LazyFile(dead_path)
            report = replay(engine, CountingReader(stream, bar),  # type: ignore[arg-type]
                            args.batch or engine.preferred_batch, dead_out)
            if args.state_out:
                _write_state(engine, args.state_out)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
        if dead_out is not None:
            dead_out.close()
    print(report.summary(), file=sys.stderr)
    if report.dead:
        print(f"dead letters written to {dead_path}", file=sys.stderr)
    return no_valid_event(args.events, report.dead) if not report.events else 0


class _LazyFile:
    """A file created only when something is written: no empty dead-letter files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: BinaryIO | None = None

    def write(self, data: bytes) -> int:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "ab")  # noqa: SIM115
        return self._f.write(data)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def cmd_generate(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    shape = TrafficShape(orders=args.orders, participants=args.participants, seed=args.seed,
                         close_rate=args.close_rate, complete_rate=args.complete_rate,
                         redeliver_rate=args.redeliver_rate)
    out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
    try:
        with progress(shape.orders, desc="generate", unit="order", quiet=args.quiet) as bar:
            placed = 0
            for chunk in generate(campaign, shape):
                out.write(chunk)
                n = chunk.count(b'"placed"')
                bar.update(min(n, shape.orders - placed))
                placed += n
    except BrokenPipeError:
        return quiet_broken_pipe()
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    with open_engine(campaign, args.backend) as engine:
        if holds_nothing(engine):
            warn(empty_backend(args.backend, campaign.id) + "; nothing exported")
            return 1
        _write_state(engine, args.state_out)
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        raise RewardcoreError("reset deletes every claim of the campaign: pass --yes to confirm")
    campaign = load_campaign(args.campaign)
    with open_engine(campaign, args.backend) as engine:
        engine.reset()
    print(f"reset campaign {campaign.id} on {args.backend}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rewardcore",
        description="Order ingestion and \"first N orders earn points\" claims at peak load.")
    parser.add_argument("--version", action="version", version=f"rewardcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)

    p = sub.add_parser("replay", help="apply a JSON-lines event stream and export the state")
    p.add_argument("campaign", help="campaign TOML file")
    p.add_argument("events", help="JSON-lines events file, or - for stdin")
    p.add_argument("--backend", default=DEFAULT_BACKEND, help="engine URL (default memory://)")
    p.add_argument("--state-out", help="write the exported state (JSON) here, - for stdout")
    p.add_argument("--batch", type=int,
                   help=f"events per batch (default: the engine's preferred size, "
                        f"{DEFAULT_BATCH} for memory://)")
    p.add_argument("--dead-letters", default="dead-letters.jsonl",
                   help="where rejected events go, created only if there are any "
                        "(default dead-letters.jsonl)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes sharing the backend, e.g. shm://NAME (events of "
                        "one order go to one worker)")
    add_quiet(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("generate", help="write a synthetic peak-day event stream (JSON lines)")
    p.add_argument("campaign", help="campaign TOML file: its window, regions and prizes")
    p.add_argument("--orders", type=int, default=100_000, help="orders placed in the day")
    p.add_argument("--participants", type=int, default=0,
                   help="distinct beneficiaries (agents, or merchants when the campaign pays "
                        "merchants; each merchant has 5 agents); 0: one per 20 orders, at "
                        "least 100")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed makes the same stream")
    p.add_argument("--close-rate", type=float, default=0.05,
                   help="share of orders closed later (revoking their claim)")
    p.add_argument("--complete-rate", type=float, default=0.8,
                   help="share of orders completed later (confirming their claim)")
    p.add_argument("--redeliver-rate", type=float, default=0.01,
                   help="share of events delivered twice, as an at-least-once queue would")
    p.add_argument("--out", "-o", default="-", help="output file; - for stdout")
    add_quiet(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="write the exported state of a backend's campaign",
                       description="Write the exported state (docs/design.md) of a backend's "
                                   "campaign. Exits 1, writing nothing, when the backend "
                                   "holds no event of the campaign.")
    p.add_argument("campaign", help="campaign TOML file")
    p.add_argument("--backend", required=True,
                   help="engine URL holding the campaign's state, e.g. redis://host:6379/0")
    p.add_argument("--state-out", required=True, help="where to write the state; - for stdout")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("reset", help="delete a campaign's state from a backend")
    p.add_argument("campaign", help="campaign TOML file")
    p.add_argument("--backend", required=True,
                   help="engine URL whose state of the campaign is deleted")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=cmd_reset)

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `rewardcore winners ... | head`: the reader has what it wanted
        return quiet_broken_pipe()
    except RewardcoreError as exc:
        print(f"rewardcore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

"""The `rewardcore` command.

Core commands live here; other features add theirs through modules listed in
`_COMMAND_MODULES`, each with a `register(subparsers)` function, so this file stays small.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from ._files import write_output
from .backends import open_engine, reset_backend
from .campaign import load_campaign
from .codec import DEFAULT_BATCH
from .console import (
    Parser,
    add_quiet,
    empty_backend,
    holds_nothing,
    no_valid_event,
    progress,
    quiet_broken_pipe,
    warn,
)
from .engine import dump_state
from .errors import RewardcoreError
from .traffic import TrafficShape, generate

DEFAULT_BACKEND = "memory://"

#: Modules that add subcommands: each defines `register(subparsers)`.
_COMMAND_MODULES: tuple[str, ...] = (
    "rewardcore.review.commands",
    "rewardcore.daemon.cli",
    "rewardcore.capacity.commands",  # bench, loadtest: their code loads when they run
    "rewardcore.examples",
    "rewardcore.backends.commands",
)


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay

    size = os.path.getsize(args.events) if os.path.isfile(args.events) else None
    with progress(size, desc="replay", unit="B", quiet=args.quiet) as bar:
        report = replay(args.campaign, args.events, args.backend, workers=args.workers,
                        batch=args.batch, dead_letters=args.dead_letters,
                        state_out=args.state_out, progress=bar.update)
    print(report.summary(), file=sys.stderr)
    if report.dead:
        print(f"dead letters written to {args.dead_letters}", file=sys.stderr)
    if not report.events and not any(report.resumed_from):
        return no_valid_event(args.events, report.dead)
    return 0


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
        write_output(args.state_out, dump_state(engine.export_state()))
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        raise RewardcoreError("reset deletes every claim of the campaign: pass --yes to confirm")
    campaign = load_campaign(args.campaign)
    reset_backend(campaign, args.backend)
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

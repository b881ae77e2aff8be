"""The `rewardcore` command.

Core commands live here; other features add theirs through modules listed in
`_COMMAND_MODULES`, each with a `register(subparsers)` function, so this file stays small.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from ._files import write_output
from .backends import open_engine
from .campaign import load_campaign
from .codec import DEFAULT_BATCH
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

    report = replay(args.campaign, args.events, args.backend, workers=args.workers,
                    batch=args.batch, dead_letters=args.dead_letters, state_out=args.state_out)
    print(report.summary(), file=sys.stderr)
    if report.dead:
        print(f"dead letters written to {args.dead_letters}", file=sys.stderr)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    shape = TrafficShape(orders=args.orders, participants=args.participants, seed=args.seed,
                         close_rate=args.close_rate, complete_rate=args.complete_rate,
                         redeliver_rate=args.redeliver_rate)
    out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
    try:
        for chunk in generate(campaign, shape):
            out.write(chunk)
    except BrokenPipeError:
        return 0
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with open_engine(load_campaign(args.campaign), args.backend) as engine:
        write_output(args.state_out, dump_state(engine.export_state()))
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
    parser = argparse.ArgumentParser(
        prog="rewardcore",
        description="Order ingestion and \"first N orders earn points\" claims at peak load.")
    parser.add_argument("--version", action="version", version=f"rewardcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("generate", help="write a synthetic peak-day event stream (JSON lines)")
    p.add_argument("campaign")
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--participants", type=int, default=0,
                   help="distinct agents (default: one per 20 orders)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--close-rate", type=float, default=0.05)
    p.add_argument("--complete-rate", type=float, default=0.8)
    p.add_argument("--redeliver-rate", type=float, default=0.01)
    p.add_argument("--out", "-o", default="-", help="output file (default stdout)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="write the exported state of a backend's campaign")
    p.add_argument("campaign")
    p.add_argument("--backend", required=True)
    p.add_argument("--state-out", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("reset", help="delete a campaign's state from a backend")
    p.add_argument("campaign")
    p.add_argument("--backend", required=True)
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=cmd_reset)

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RewardcoreError as exc:
        print(f"rewardcore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

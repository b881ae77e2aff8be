"""CLI commands: `lint`, `simulate`, `review` and `winners`."""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

import msgspec
import orjson

from .._files import write_atomic
from ..backends import open_engine
from ..campaign import load_campaign
from ..errors import ConfigError, RewardcoreError
from ..traffic import TrafficShape
from ..winners import winner_rows
from .lint import Finding, LintConfig, format_text, lint
from .report import overview_png, render_report, summary_text
from .stats import collect


def _lint_config(args: argparse.Namespace, participants: int) -> LintConfig:
    return LintConfig(participants=participants, value_spread=args.value_spread,
                      value_spread_error=args.value_spread_error,
                      min_coverage=args.min_coverage, close_rate=args.close_rate)


def _add_lint_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preflight thresholds (docs/campaign-checks.md)")
    g.add_argument("--value-spread", type=float, default=1.5, metavar="X",
                   help="warn when a point's yuan value differs between prizes by more than X "
                        "(default 1.5)")
    g.add_argument("--value-spread-error", type=float, default=3.0, metavar="X",
                   help="... and fail beyond X (default 3)")
    g.add_argument("--min-coverage", type=float, default=0.10, metavar="SHARE",
                   help="warn when fewer than SHARE of the participants can ever win or "
                        "redeem (default 0.10)")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise RewardcoreError(f"--{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


# -- lint -----------------------------------------------------------------------------------

def cmd_lint(args: argparse.Namespace) -> int:
    _positive("participants", args.participants, allow_zero=True)
    try:
        campaign = load_campaign(args.campaign)
    except ConfigError as exc:
        # A file that does not load is the first finding, in the format asked for.
        finding = Finding("error", "campaign-invalid", str(exc))
        if args.format == "json":
            sys.stdout.write(orjson.dumps({"campaign": args.campaign, "errors": 1,
                                           "warnings": 0, "infos": 0,
                                           "findings": [msgspec.to_builtins(finding)]},
                                          option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            print(f"error   campaign-invalid         {exc}")
        return 1
    result = lint(campaign, _lint_config(args, args.participants))
    if args.format == "json":
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode()
                         + "\n")
    else:
        print(format_text(result))
    return 1 if result.errors else 0


# -- simulate and review --------------------------------------------------------------------

def _finish_report(args: argparse.Namespace, html: str, png: bytes | None) -> None:
    write_atomic(args.report, html.encode())
    if png is not None:
        write_atomic(args.figure, png)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate  # matplotlib and traffic only when asked for

    _positive("orders", args.orders)
    _positive("participants", args.participants, allow_zero=True)
    if not 0 <= args.close_rate <= 1:
        raise RewardcoreError(f"--close-rate must be between 0 and 1, got {args.close_rate}")
    campaign = load_campaign(args.campaign)
    shape = TrafficShape(orders=args.orders, participants=args.participants, seed=args.seed,
                         close_rate=args.close_rate)
    result = lint(campaign, _lint_config(args, shape.participants
                                         or max(100, shape.orders // 20)))
    sim = simulate(campaign, shape, batch=args.batch)
    try:
        data = sim.data
        participants = data.participants
        context = [
            ("campaign", f"{campaign.id} ({args.campaign})"),
            ("traffic", f"synthetic peak day: {args.orders:,} orders, {participants:,} "
                        f"participants, close rate {args.close_rate:g}, seed {args.seed}"),
            ("engine", f"memory:// (the compiled engine), {sim.events:,} events in "
                       f"{sim.seconds:.2f}s, batches of {args.batch:,}"),
        ]
        html = render_report(data, result, title=f"Simulation of {campaign.id}",
                             context=context, active=sim.active)
        png = overview_png(data, result) if args.figure else None
        _finish_report(args, html, png)
    finally:
        sim.engine.close()
    print(f"{campaign.id}: simulated {sim.events:,} events ({args.orders:,} orders, "
          f"{participants:,} participants, {sim.active:,} placed an order) in "
          f"{sim.seconds:.2f}s on memory://")
    print(summary_text(data, result, sim.active))
    print(f"report: {args.report}" + (f", figure: {args.figure}" if args.figure else ""))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    _positive("participants", args.participants, allow_zero=True)
    campaign = load_campaign(args.campaign)
    result = lint(campaign, _lint_config(args, args.participants))
    with open_engine(campaign, args.backend) as engine:
        data = collect(engine, args.participants)
    if not data.claims and not data.outcomes:
        print(f"warning: {args.backend} holds no events for campaign {campaign.id} "
              "(an in-process backend such as memory:// keeps nothing between runs)",
              file=sys.stderr)
    context = [("campaign", f"{campaign.id} ({args.campaign})"),
               ("state", f"read from {args.backend}; time series from the claims' order times "
                         "(a claim revoked later counts as never held)")]
    html = render_report(data, result, title=f"Review of {campaign.id}", context=context)
    _finish_report(args, html, overview_png(data, result) if args.figure else None)
    print(f"{campaign.id}: reviewed {args.backend}")
    print(summary_text(data, result))
    print(f"report: {args.report}" + (f", figure: {args.figure}" if args.figure else ""))
    return 0


# -- winners --------------------------------------------------------------------------------

_WINNER_FIELDS = ("region", "slot", "beneficiary", "order_id", "placed_at", "ts", "points",
                  "state")


def cmd_winners(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    if args.region is not None and args.region not in campaign.region_by_code:
        raise RewardcoreError(f"--region {args.region}: not a reward region of {campaign.id}")
    with open_engine(campaign, args.backend) as engine:
        rows = winner_rows(engine, args.region)
    out = sys.stdout if args.out == "-" else open(args.out, "w", newline="")  # noqa: SIM115
    try:
        if args.format == "json":
            out.write(orjson.dumps({"campaign": campaign.id, "winners": rows},
                                   option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            w = csv.DictWriter(out, fieldnames=_WINNER_FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


# -- registration ---------------------------------------------------------------------------

def register(sub: Any) -> None:
    """Add lint, simulate, review and winners to the `rewardcore` command."""
    p = sub.add_parser("lint", help="preflight checks of a campaign file; exit 1 on an error")
    p.add_argument("campaign", help="campaign TOML file")
    p.add_argument("--participants", type=int, default=0,
                   help="expected distinct participants (agents or merchants)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--close-rate", type=float, default=0.05,
                   help="expected share of winning orders closed later (default 0.05)")
    _add_lint_options(p)
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("simulate", help="rehearse a campaign on synthetic peak-day traffic "
                                        "through the memory engine; write an HTML report")
    p.add_argument("campaign")
    p.add_argument("--orders", type=int, default=200_000, help="orders (default 200,000)")
    p.add_argument("--participants", type=int, default=0,
                   help="distinct agents (default: one per 20 orders, at least 100)")
    p.add_argument("--close-rate", type=float, default=0.05,
                   help="share of orders closed later (default 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=4096,
                   help="events per engine batch, one point of the time series each")
    p.add_argument("--report", required=True, metavar="FILE.html")
    p.add_argument("--figure", metavar="FILE.png", help="also save the overview picture")
    _add_lint_options(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("review", help="the simulation's report, from a live or finished "
                                      "campaign's real state")
    p.add_argument("campaign")
    p.add_argument("--backend", required=True, help="engine URL holding the campaign's state")
    p.add_argument("--report", required=True, metavar="FILE.html")
    p.add_argument("--participants", type=int, default=0,
                   help="distinct participants, for the shares (default: unknown)")
    p.add_argument("--close-rate", type=float, default=0.05,
                   help="expected close rate, for the preflight findings (default 0.05)")
    p.add_argument("--figure", metavar="FILE.png", help="also save the overview picture")
    _add_lint_options(p)
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("winners", help="the published winners per region (masked ids)")
    p.add_argument("campaign")
    p.add_argument("--backend", required=True)
    p.add_argument("--region", type=int, help="only this region")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--out", "-o", default="-", help="output file (default stdout)")
    p.set_defaults(func=cmd_winners)

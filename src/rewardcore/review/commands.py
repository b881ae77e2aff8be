"""CLI commands: `lint`, `simulate`, `review` and `winners`."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Any

import msgspec
import orjson

from .._files import write_atomic
from ..backends import open_engine
from ..campaign import load_campaign
from ..codec import read_jsonl
from ..console import CountingReader, add_quiet, empty_backend, holds_nothing, progress, warn
from ..errors import ConfigError, RewardcoreError
from ..traffic import TrafficShape, beneficiaries
from ..winners import winner_rows
from .lint import Finding, LintConfig, format_text, lint
from .report import overview_png, render_report, summary_text
from .risk import OrderStream, risk_findings
from .stats import collect


def _lint_config(args: argparse.Namespace, participants: int) -> LintConfig:
    return LintConfig(participants=participants, value_spread=args.value_spread,
                      value_spread_error=args.value_spread_error,
                      min_coverage=args.min_coverage, close_rate=args.close_rate)


def _add_lint_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preflight thresholds (docs/campaign-checks.md)")
    g.add_argument("--value-spread", type=float, default=1.5, metavar="X",
                   help="warn when a point's yuan value differs between prizes by more than X")
    g.add_argument("--value-spread-error", type=float, default=3.0, metavar="X",
                   help="... and fail (an error) beyond X")
    g.add_argument("--min-coverage", type=float, default=0.10, metavar="SHARE",
                   help="warn when fewer than SHARE of the participants can ever win or "
                        "redeem")


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


def _other_kind(campaign: Any, data: Any) -> str:
    pop = data.population
    if campaign.pays_merchant:
        return f"{pop.get('agents', 0):,} agents place their orders"
    return f"working for {pop.get('merchants', 0):,} merchants"


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate  # matplotlib and traffic only when asked for

    _positive("orders", args.orders)
    _positive("participants", args.participants, allow_zero=True)
    if not 0 <= args.close_rate <= 1:
        raise RewardcoreError(f"--close-rate must be between 0 and 1, got {args.close_rate}")
    campaign = load_campaign(args.campaign)
    shape = TrafficShape(orders=args.orders, participants=args.participants, seed=args.seed,
                         close_rate=args.close_rate)
    # the same beneficiary count the traffic is drawn for: shares and coverage agree
    result = lint(campaign, _lint_config(args, beneficiaries(shape)))
    with progress(shape.orders * 1.9, desc="simulate", unit="event",
                  quiet=args.quiet) as bar:  # ~1.9 events per order with the default rates
        sim = simulate(campaign, shape, batch=args.batch, progress=bar.update)
    try:
        data = sim.data
        participants = data.participants
        context = [
            ("campaign", f"{campaign.id} ({args.campaign})"),
            ("traffic", f"synthetic peak day: {args.orders:,} orders, {participants:,} "
                        f"{campaign.info.beneficiary}s ({_other_kind(campaign, data)}), close "
                        f"rate {args.close_rate:g}, seed {args.seed}"),
            ("engine", f"memory:// (the compiled engine), {sim.events:,} events in "
                       f"{sim.seconds:.2f}s, batches of {args.batch:,}"),
        ]
        html = render_report(data, result, title=f"Simulation of {campaign.id}",
                             context=context, active=sim.active, risks=sim.risks)
        png = overview_png(data, result) if args.figure else None
        _finish_report(args, html, png)
    finally:
        sim.engine.close()
    print(f"{campaign.id}: simulated {sim.events:,} events ({args.orders:,} orders, "
          f"{participants:,} participants, {sim.active:,} placed an order) in "
          f"{sim.seconds:.2f}s on memory://")
    print(summary_text(data, result, sim.active, sim.risks))
    print(f"report: {args.report}" + (f", figure: {args.figure}" if args.figure else ""))
    return 0


def _read_stream(campaign: Any, path: str, quiet: bool) -> OrderStream:
    """The order stream of a campaign, read back for the risk findings that need it."""
    stream = OrderStream(campaign)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise RewardcoreError(f"--events {path}: cannot read: {exc.strerror}") from None
    with f, progress(os.path.getsize(path), desc="read events", unit="B",
                     quiet=quiet) as bar:
        for events, _dead in read_jsonl(CountingReader(f, bar)):  # type: ignore[arg-type]
            stream.add(events)
    return stream


def cmd_review(args: argparse.Namespace) -> int:
    _positive("participants", args.participants, allow_zero=True)
    campaign = load_campaign(args.campaign)
    result = lint(campaign, _lint_config(args, args.participants))
    stream = _read_stream(campaign, args.events, args.quiet) if args.events else None
    with progress(None, desc="read state", unit="step", quiet=args.quiet) as bar, \
            open_engine(campaign, args.backend) as engine:
        data = collect(engine, args.participants,
                       orders_by_region=stream.orders_by_region if stream else None)
        bar.update()
        risks = risk_findings(campaign, engine.claims(), stream)
        bar.update()
    if not data.claims and not data.outcomes:
        warn(empty_backend(args.backend, campaign.id))
    context = [("campaign", f"{campaign.id} ({args.campaign})"),
               ("state", f"read from {args.backend}; time series from the claims' order times "
                         "(a claim revoked later counts as never held)")]
    if stream is None:
        context.append(("orders", "not read: pass --events FILE for the risk findings that "
                                  "need the order stream"))
    else:
        context.append(("orders", f"read from {args.events}"))
    html = render_report(data, result, title=f"Review of {campaign.id}", context=context,
                         risks=risks)
    _finish_report(args, html, overview_png(data, result) if args.figure else None)
    print(f"{campaign.id}: reviewed {args.backend}")
    print(summary_text(data, result, risks=risks))
    print(f"report: {args.report}" + (f", figure: {args.figure}" if args.figure else ""))
    return 0


# -- winners --------------------------------------------------------------------------------

_WINNER_FIELDS = ("region", "slot", "rank", "beneficiary", "order_id", "placed_at", "ts",
                  "points", "state")


def cmd_winners(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.campaign)
    if args.region is not None and args.region not in campaign.region_by_code:
        raise RewardcoreError(f"--region {args.region}: not a reward region of {campaign.id}")
    with open_engine(campaign, args.backend) as engine:
        if holds_nothing(engine):
            warn(empty_backend(args.backend, campaign.id) + "; no winners to list")
            return 1
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

_CAMPAIGN_HELP = "campaign TOML file (see docs/campaign-checks.md)"


def register(sub: Any) -> None:
    """Add lint, simulate, review and winners to the `rewardcore` command."""
    p = sub.add_parser("lint", help="preflight checks of a campaign file; exit 1 on an error",
                       description="Check a campaign file before launch: prizes no one can "
                                   "reach, point values, coverage, budget, settings, tiers. "
                                   "Exits 1 when there is an error finding.")
    p.add_argument("campaign", help=_CAMPAIGN_HELP)
    p.add_argument("--participants", type=int, default=0,
                   help="expected distinct participants of the campaign's beneficiary kind "
                        "(agents, or merchants when the campaign pays merchants); 0: unknown")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text lines, or one JSON object with the findings and the figures")
    p.add_argument("--close-rate", type=float, default=0.05,
                   help="expected share of winning orders closed later")
    _add_lint_options(p)
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("simulate", help="rehearse a campaign on synthetic peak-day traffic "
                                        "through the memory engine; write an HTML report",
                       description="Rehearse a campaign: a synthetic peak day through the "
                                   "compiled memory engine, then the HTML report.")
    p.add_argument("campaign", help=_CAMPAIGN_HELP)
    p.add_argument("--orders", type=int, default=200_000, help="orders placed in the day")
    p.add_argument("--participants", type=int, default=0,
                   help="distinct beneficiaries (agents, or merchants when the campaign pays "
                        "merchants; each merchant has 5 agents); 0: one per 20 orders, at "
                        "least 100")
    p.add_argument("--close-rate", type=float, default=0.05,
                   help="share of orders closed later")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the traffic: the same seed makes the same stream")
    p.add_argument("--batch", type=int, default=4096,
                   help="events per engine batch, one point of the time series each")
    p.add_argument("--report", required=True, metavar="FILE.html",
                   help="where to write the HTML report")
    p.add_argument("--figure", metavar="FILE.png", help="also save the overview picture")
    add_quiet(p)
    _add_lint_options(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("review", help="the simulation's report, from a live or finished "
                                      "campaign's real state",
                       description="The report of a live or finished campaign, read from a "
                                   "backend that keeps state (redis://, shm://, a durable "
                                   "memory:// directory).")
    p.add_argument("campaign", help=_CAMPAIGN_HELP)
    p.add_argument("--backend", required=True,
                   help="engine URL holding the campaign's state, e.g. redis://host:6379/0")
    p.add_argument("--report", required=True, metavar="FILE.html",
                   help="where to write the HTML report")
    p.add_argument("--events", metavar="FILE.jsonl",
                   help="the campaign's order stream (JSON lines), for the risk findings that "
                        "need who placed what for how much, and orders per region")
    p.add_argument("--participants", type=int, default=0,
                   help="distinct participants of the beneficiary kind, for the shares; "
                        "0: unknown")
    p.add_argument("--close-rate", type=float, default=0.05,
                   help="expected close rate, for the preflight findings")
    p.add_argument("--figure", metavar="FILE.png", help="also save the overview picture")
    add_quiet(p)
    _add_lint_options(p)
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("winners", help="the published winners per region (masked ids)",
                       description="Every non-revoked claim by region and slot, with masked "
                                   "beneficiary and order ids. Exits 1 when the backend "
                                   "holds nothing.")
    p.add_argument("campaign", help=_CAMPAIGN_HELP)
    p.add_argument("--backend", required=True,
                   help="engine URL holding the campaign's state, e.g. redis://host:6379/0")
    p.add_argument("--region", type=int, help="only this region (its code)")
    p.add_argument("--format", choices=("csv", "json"), default="csv",
                   help="CSV with a header line, or one JSON object")
    p.add_argument("--out", "-o", default="-", help="output file; - for stdout")
    p.set_defaults(func=cmd_winners)

    p = sub.add_parser("participant-link", help="a participant's private page link",
                       description="Print the link to a participant's page on the daemon "
                                   "(/p/ID?key=...). The key is an HMAC of the id with the "
                                   "daemon's page secret: $REWARDCORE_PAGE_SECRET, or derived "
                                   "from $REWARDCORE_TOKEN when that is unset, as the daemon "
                                   "does.")
    p.add_argument("beneficiary", nargs="+", help="beneficiary id(s): agent or merchant ids")
    p.add_argument("--base", default="http://127.0.0.1:8080",
                   help="the daemon's public address")
    p.set_defaults(func=cmd_participant_link)


def cmd_participant_link(args: argparse.Namespace) -> int:
    from ..daemon.pages import page_secret, participant_key

    secret = page_secret(os.environ.get("REWARDCORE_TOKEN", ""))
    if secret is None:
        raise RewardcoreError("participant-link: set REWARDCORE_PAGE_SECRET (or "
                              "REWARDCORE_TOKEN) to the daemon's")
    from urllib.parse import quote

    base = args.base.rstrip("/")
    for who in args.beneficiary:
        print(f"{base}/p/{quote(who, safe='')}?key={participant_key(secret, who)}")
    return 0

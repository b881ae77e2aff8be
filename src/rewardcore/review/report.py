"""The review report: one self-contained HTML file with its pictures inside.

Pictures are drawn with matplotlib's Agg canvas (no display, no pyplot global state) and
embedded as base64 PNG, so the file can be mailed or attached to a ticket as it is. The
headline figures are also embedded as JSON (`<script id="figures">`) for machines and tests.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from ..errors import RewardcoreError
from .lint import Finding, LintResult
from .stats import ReviewData

_DPI = 80
_BLUE, _ORANGE, _RED, _GREY, _GREEN = "#3b6ea5", "#e08a2c", "#c0392b", "#9a9a9a", "#4a9a5b"


def _need_matplotlib() -> Any:
    """matplotlib's Figure, imported only when a picture is drawn: importing it costs over a
    second, which every `rewardcore` command (serve included) would otherwise pay at start."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise RewardcoreError(
            "reports need matplotlib: pip install 'rewardcore[report]'") from None
    return Figure


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)  # constrained layout already fits the margins
    return buf.getvalue()


def _who(data: ReviewData) -> str:
    return data.beneficiary + "s"


def _pct(part: float, whole: float) -> str:
    if not whole:
        return "-"
    share = part / whole
    return f"{share:.1%}" if 0 < share < 0.1 else f"{share:.0%}"


# -- pictures -------------------------------------------------------------------------------

def _tz(data: ReviewData) -> timezone:
    return timezone(timedelta(seconds=data.tz_offset_s))


def _tz_name(data: ReviewData) -> str:
    sign = "+" if data.tz_offset_s >= 0 else "-"
    h, m = divmod(abs(data.tz_offset_s) // 60, 60)
    return f"UTC{sign}{h:02d}:{m:02d}"


def clock(data: ReviewData, ms: int, *, date: bool = False) -> str:
    """An epoch-ms time as the campaign's clock shows it: "00:00:41", with the date
    ("11-12 03:00:00") when it is not the opening day or when asked."""
    t = datetime.fromtimestamp(ms / 1000, _tz(data))
    day0 = datetime.fromtimestamp(data.starts_ms / 1000, _tz(data)).date()
    if date or t.date() != day0:
        return t.strftime("%Y-%m-%d %H:%M:%S")
    return t.strftime("%H:%M:%S")


def _time_axis(ax: Any, data: ReviewData) -> None:
    # The midnight spike is minutes long and the window a day: a log-like axis shows both,
    # labelled with the campaign's clock.
    from matplotlib.ticker import FixedLocator, FuncFormatter

    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ticks = [0, 0.5, 1, 2, 5, 10, 30, 60, 180, 360, 720, 1440]  # minutes
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(FixedLocator([]))

    def label(minutes: float, _pos: int) -> str:
        if minutes >= 1440:
            return "24:00"
        t = datetime.fromtimestamp(data.starts_ms / 1000 + minutes * 60, _tz(data))
        return t.strftime("%H:%M:%S" if minutes < 2 else "%H:%M")

    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.tick_params(axis="x", labelrotation=35, labelsize="small")
    ax.set_xlabel(f"time ({_tz_name(data)}; stretched near the opening)")
    ax.grid(True, alpha=0.3)


def _plot_sold_out(ax: Any, data: ReviewData) -> None:
    s = data.series
    ax.plot(s.minutes, s.sold_out, color=_BLUE, drawstyle="steps-post")
    ax.axhline(data.regions, color=_GREY, linestyle="--", linewidth=1)
    ax.set_ylim(0, data.regions * 1.05)
    ax.set_title(f"regions sold out ({data.regions_sold_out:,} of {data.regions:,})")
    ax.set_ylabel("regions")
    _time_axis(ax, data)


def _plot_budget(ax: Any, data: ReviewData) -> None:
    s = data.series
    ax.plot(s.minutes, s.budget_used, color=_BLUE, label="points held (non-revoked)")
    if data.budget_points:
        ax.axhline(data.budget_points, color=_RED, linestyle="--", linewidth=1, label="budget")
        ax.set_title(f"budget used ({_pct(data.points, data.budget_points)} "
                     f"of {data.budget_points:,} points)")
    else:
        ax.set_title(f"points awarded ({data.points:,}; no budget)")
    ax.set_ylabel("points")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize="small")
    _time_axis(ax, data)


def _plot_revoked(ax: Any, data: ReviewData) -> None:
    s = data.series
    ax.plot(s.minutes, s.awarded, color=_BLUE, label="claims awarded")
    ax.plot(s.minutes, s.revoked, color=_RED, label="claims revoked")
    ax.set_title(f"claims revoked ({data.claims_revoked:,} of {data.claims:,}, "
                 f"{_pct(data.claims_revoked, data.claims)})")
    ax.set_ylabel("claims")
    ax.legend(loc="upper left", fontsize="small")
    _time_axis(ax, data)


def _bins(counts: dict[int, int]) -> list[tuple[str, int]]:
    """Regions unlocked -> beneficiaries, with the long tail grouped."""
    edges = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 20), (21, 50), (51, 10**12)]
    out = []
    for lo, hi in edges:
        n = sum(v for k, v in counts.items() if lo <= k <= hi)
        if n:
            label = str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**12 else f"{lo}+")
            out.append((label, n))
    return out


def _plot_regions_per(ax: Any, data: ReviewData) -> None:
    rows = _bins(data.regions_per_beneficiary)
    ax.bar([r[0] for r in rows], [r[1] for r in rows], color=_BLUE)
    ax.set_title(f"regions unlocked per {data.beneficiary} ({data.rewarded:,} rewarded)")
    ax.set_xlabel("regions unlocked")
    ax.set_ylabel(_who(data))
    ax.grid(True, axis="y", alpha=0.3)


def _plot_points_per(ax: Any, data: ReviewData, lint: LintResult | None = None) -> None:
    """Points held per beneficiary on a log axis wide enough for every prize's cost line,
    the unreachable ones too (in red)."""
    import numpy as np

    pts = [p for p in data.points_per_beneficiary if p > 0]
    costs = [p.cost_points for p in data.prizes]
    top = max([*pts, *costs, 10])
    bins = np.geomspace(1, top * 1.3, 40)
    if pts:
        ax.hist(pts, bins=bins, color=_BLUE)
    ax.set_xscale("log")
    ax.set_xlim(1, top * 1.3)
    reach = {p.id: p.reachable for p in lint.facts.prizes} if lint is not None else {}
    for i, p in enumerate(data.prizes):
        bad = not reach.get(p.id, True)
        color = _RED if bad else _ORANGE
        ax.axvline(p.cost_points, color=color, linestyle="--", linewidth=1.2)
        ax.text(p.cost_points, 0.96 - 0.09 * (i % 5),
                f" {p.id}{' (unreachable)' if bad else ''}", color=color,
                transform=ax.get_xaxis_transform(), fontsize="small", va="top")
    ax.set_yscale("log")
    ax.set_title(f"points per {data.beneficiary} (dashed: each prize's cost)")
    ax.set_xlabel("points held (pending + confirmed), log scale")
    ax.set_ylabel(_who(data))


def _share_rows(data: ReviewData, active: int | None) -> list[tuple[str, int, str]]:
    base = data.participants or (data.rewarded + data.lost_all)
    rows = [("rewarded", data.rewarded, _GREEN),
            ("every claim revoked", data.lost_all, _RED)]
    if active is not None:
        rows.append(("ordered, never won", max(0, active - data.rewarded - data.lost_all),
                     _ORANGE))
        rows.append(("placed no order", max(0, base - active), _GREY))
    elif data.participants:
        rows.append(("no claim", max(0, base - data.rewarded - data.lost_all), _GREY))
    return rows


def _plot_share(ax: Any, data: ReviewData, active: int | None) -> None:
    rows = _share_rows(data, active)
    base = sum(n for _, n, _ in rows) or 1
    left = 0.0
    for label, n, color in rows:
        ax.barh([0], [n / base], left=left, color=color, label=f"{label} ({n:,})")
        left += n / base
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel("share of participants")
    ax.set_title(f"participants rewarded ({_pct(data.rewarded, base)} of {base:,})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2, fontsize="small")


def _plot_point_value(ax: Any, lint: LintResult) -> None:
    prizes = [p for p in lint.facts.prizes if p.yuan_per_point]
    ax.bar([p.id for p in prizes], [p.yuan_per_point for p in prizes], color=_BLUE)
    for i, p in enumerate(prizes):
        ax.text(i, p.yuan_per_point, f"{p.yuan_per_point:.3f}", ha="center", va="bottom",
                fontsize="small")
    ax.set_title("what a point is worth, per prize")
    ax.set_ylabel("yuan per point")
    ax.tick_params(axis="x", labelrotation=20)
    ax.grid(True, axis="y", alpha=0.3)


def _plot_could_earn(ax: Any, data: ReviewData, lint: LintResult) -> None:
    prizes = data.prizes
    names = [p.id for p in prizes]
    ax.bar(names, [p.holders_enough for p in prizes], color=_BLUE,
           label="hold enough points")
    ax.bar(names, [p.available_enough for p in prizes], color=_GREEN, width=0.5,
           label="can spend it now (confirmed)")
    for i, p in enumerate(prizes):
        if p.cost_points > lint.facts.max_points_per_beneficiary:
            ax.text(i, 0, "unreachable", ha="center", va="bottom", color=_RED,
                    fontsize="small", rotation=90)
    ax.set_title(f"{_who(data)} who could afford each prize")
    ax.set_ylabel(_who(data))
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(fontsize="small")


def _figure(width: float, height: float) -> Any:
    return _need_matplotlib()(figsize=(width, height), layout="constrained")


def overview_png(data: ReviewData, lint: LintResult) -> bytes:
    """Four panels in one picture: sold out, budget, regions per beneficiary, point value."""
    fig = _figure(10, 6.5)
    axes = fig.subplots(2, 2)
    _plot_sold_out(axes[0][0], data)
    _plot_budget(axes[0][1], data)
    _plot_regions_per(axes[1][0], data)
    _plot_point_value(axes[1][1], lint)
    fig.suptitle(f"{data.campaign}: {data.claims:,} claims, {data.rewarded:,} {_who(data)} "
                 f"rewarded, {data.claims_revoked:,} revoked")
    return _png(fig)


def _single(plot: Any, *args: Any, height: float = 3.4) -> bytes:
    fig = _figure(7, height)
    plot(fig.subplots(), *args)
    return _png(fig)


# -- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;border-bottom:1px solid #eee;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%}.error{color:#c0392b;font-weight:600}.warning{color:#b9770e;font-weight:600}
.info{color:#555}.muted{color:#777;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, int | float) and not isinstance(v, bool):
            text = f"{v:,}" if isinstance(v, int) else f"{v:,.3f}"
            return f'<td class="n">{text}</td>'
        return f"<td>{html.escape(str(v))}</td>"
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows]
    return "".join(out) + "</table>"


def _summary_rows(data: ReviewData, active: int | None) -> list[tuple[str, Any, str]]:
    placed = sum(data.outcomes.values())
    who = _who(data)
    rows: list[tuple[str, Any, str]] = [
        ("orders placed (placed events)", placed, ""),
        ("claims awarded", data.claims, _pct(data.claims, placed) + " of orders"),
        ("claims revoked (closed orders)", data.claims_revoked,
         _pct(data.claims_revoked, data.claims) + " of claims"),
        ("claims pending / confirmed", f"{data.claims_pending:,} / {data.claims_confirmed:,}",
         ""),
        ("points held (non-revoked claims)", data.points,
         (_pct(data.points, data.budget_points) + " of the budget") if data.budget_points
         else "no budget"),
        ("points redeemed", data.points_redeemed, _pct(data.points_redeemed, data.points)),
        ("regions that awarded a claim", data.regions_awarded,
         _pct(data.regions_awarded, data.regions) + " of regions"),
        ("regions sold out", data.regions_sold_out, _pct(data.regions_sold_out, data.regions)),
        ("regions lost to closed orders (awarded, none held now)", data.regions_lost,
         _pct(data.regions_lost, data.regions_awarded) + " of awarded regions"),
        ("regions with a revoked claim", data.regions_revoked,
         _pct(data.regions_revoked, data.regions_awarded) + " of awarded regions"),
        (f"{who} rewarded", data.rewarded,
         (_pct(data.rewarded, data.participants) + " of participants")
         if data.participants else "participants unknown"),
        (f"{who} whose every claim was revoked", data.lost_all, ""),
    ]
    if data.participants:
        pop = data.population
        other = ("agents place their orders" if data.beneficiary == "merchant"
                 else "merchants they work for")
        kind = "agents" if data.beneficiary == "merchant" else "merchants"
        rows.insert(0, (f"participants ({who})", data.participants,
                        f"{pop[kind]:,} {other}" if kind in pop else ""))
    if active is not None:
        rows.insert(1, ("participants who placed an order", active,
                        _pct(active, data.participants)))
    return rows


def _regions_table(data: ReviewData) -> str:
    who = _who(data)
    rows = []
    for label, n in _bins(data.regions_per_beneficiary):
        unit = "region" if label == "1" else "regions"
        rows.append((f"{n:,} {who} unlocked {label} {unit}", n, _pct(n, data.rewarded)))
    return _table([f"{data.beneficiary}s by regions unlocked", who, f"of rewarded {who}"], rows)


def _findings_html(lint: LintResult) -> str:
    if not lint.findings:
        return "<p>No findings.</p>"
    rows = "".join(
        f'<tr><td class="{f.severity}">{f.severity}</td><td><code>{html.escape(f.code)}</code>'
        f"</td><td>{html.escape(f.message)}</td></tr>" for f in lint.findings)
    return (f"<p>{lint.count('error')} error(s), {lint.count('warning')} warning(s), "
            f"{lint.count('info')} info. See docs/campaign-checks.md.</p>"
            f"<table><tr><th>severity</th><th>code</th><th>finding</th></tr>{rows}</table>")


# -- why people earned nothing ---------------------------------------------------------------

#: what each outcome of a placed order means, in a participant's words
OUTCOME_MEANING = {
    "awarded": "won a slot and its points",
    "duplicate": "a redelivery of an order already counted; changed nothing",
    "closed": "closed before it arrived; never counted",
    "outside_window": "placed outside the campaign's window",
    "no_reward_region": "into a region that carries no reward",
    "below_min_paid": "paid less than min_paid_cents",
    "beneficiary_cap": "its beneficiary already held max_claims_per_beneficiary claims",
    "beneficiary_region_cap": "its beneficiary already held the most claims one may hold in "
                              "that region",
    "sold_out": "its region's slots were all taken",
    "budget_exhausted": "within its region's first N, but the budget was spent",
}


def _n(x: int) -> str:
    return f"{x:,}"


def headline(data: ReviewData, lint: LintResult | None = None) -> list[str]:
    """The report's opening sentences: who earned what, why the others earned nothing, and
    when the campaign's limits were hit (clock times in the campaign's time zone)."""
    o = data.outcomes
    who = _who(data)
    placed = sum(o.values())
    dup = o.get("duplicate", 0)
    orders = placed - dup
    awarded = o.get("awarded", 0)
    out: list[str] = []
    if not placed:
        return ["No order has been placed yet."]
    out.append(f"Of {_n(orders)} orders, {_n(awarded)} ({_pct(awarded, orders)}) won a slot; "
               f"{_n(orders - awarded)} earned nothing"
               + (f" ({_n(dup)} more were redeliveries of orders already counted)."
                  if dup else "."))
    first = data.first_ts
    be = o.get("budget_exhausted", 0)
    if be:
        at = first.get("budget_exhausted") or data.budget_full_ts
        when = (f"ran out at {clock(data, at)}" if first.get("budget_exhausted")
                else f"was used up by about {clock(data, at)}") if at else "ran out"
        out.append(f"The budget of {_n(data.budget_points)} points {when}: after that "
                   f"{_n(be)} orders that came within the first N of their region earned "
                   "nothing (budget_exhausted).")
    elif data.budget_points:
        out.append(f"The budget was never exhausted: {_n(data.points)} of "
                   f"{_n(data.budget_points)} points ({_pct(data.points, data.budget_points)}) "
                   "are held.")
    so = o.get("sold_out", 0)
    sold_times = sorted(r.sold_out_ts for r in data.regions_table if r.sold_out_ts)
    if so:
        text = (f"{_n(so)} orders came after every slot of their region was taken "
                f"(sold_out)")
        if first.get("sold_out"):
            text += f"; the first was refused at {clock(data, first['sold_out'])}"
        out.append(text + ".")
    if sold_times:
        text = (f"{_n(data.regions_sold_out)} of {_n(data.regions)} regions are sold out now; "
                f"the first filled at {clock(data, sold_times[0])}")
        if len(sold_times) >= data.regions / 2 and data.regions:
            text += f", half of all regions by {clock(data, sold_times[data.regions // 2 - 1])}"
        out.append(text + ".")
    for label, limit in (("beneficiary_cap", "max_claims_per_beneficiary"),
                         ("beneficiary_region_cap", "max_claims_per_beneficiary_per_region")):
        if o.get(label):
            at = f", first at {clock(data, first[label])}" if first.get(label) else ""
            out.append(f"{_n(o[label])} orders were refused because their {data.beneficiary} "
                       f"already held the most claims {limit} allows ({label}{at}).")
    small = [(o.get(k, 0), k) for k in ("below_min_paid", "outside_window", "no_reward_region",
                                        "closed")]
    if any(n for n, _ in small):
        out.append("Before any slot was looked at: " + "; ".join(
            f"{_n(n)} {OUTCOME_MEANING[k].replace('its ', 'their ')} ({k})"
            for n, k in small if n) + ".")
    if data.participants:
        text = (f"{_n(data.rewarded)} of {_n(data.participants)} {who} "
                f"({_pct(data.rewarded, data.participants)}) hold points")
        if data.active:
            text += (f"; {_n(data.active)} placed an order and "
                     f"{_n(max(0, data.active - data.rewarded))} of them hold none")
        out.append(text + ".")
    else:
        out.append(f"{_n(data.rewarded)} {who} hold points.")
    if data.claims_revoked:
        again = ("their slots went back to their regions for later orders"
                 if data.on_close == "release" else "their slots were lost (forfeit)")
        out.append(f"{_n(data.claims_revoked)} claims ({_pct(data.claims_revoked, data.claims)})"
                   f" were revoked by closed orders; {again}.")
    if data.revoked_after_confirmed:
        out.append(f"{_n(data.revoked_after_confirmed)} of them had been confirmed first: the "
                   "order was closed after it completed (a return).")
    if data.negative_available:
        out.append(f"{_n(data.negative_available)} {who} had an order closed after its "
                   "points were spent: their available points are below zero.")
    if lint is not None:
        bad = [p for p in lint.facts.prizes if not p.reachable]
        if bad:
            out.append("No one can ever afford " + ", ".join(
                f"{p.id} ({_n(p.cost_points)} points)" for p in bad)
                + f": one {data.beneficiary} can hold at most "
                  f"{_n(lint.facts.max_points_per_beneficiary)}.")
    return out


def _outcome_rows(data: ReviewData) -> list[tuple[str, int, str, str]]:
    placed = sum(data.outcomes.values())
    order = list(OUTCOME_MEANING)
    rows = sorted(data.outcomes.items(), key=lambda kv: order.index(kv[0])
                  if kv[0] in order else len(order))
    return [(k, n, _pct(n, placed), OUTCOME_MEANING.get(k, "")) for k, n in rows]


def regions_csv(data: ReviewData) -> str:
    """Every region that had a claim (or an order), as CSV."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["region", "slots", "orders", "held", "revoked", "points", "first_claim_at",
                "sold_out_at"])
    for r in sorted(data.regions_table, key=lambda r: r.code):
        w.writerow([r.code, r.slots, r.orders, r.held, r.revoked, r.points,
                    clock(data, r.first_ts, date=True) if r.first_ts else "",
                    clock(data, r.sold_out_ts, date=True) if r.sold_out_ts else ""])
    return buf.getvalue()


def _regions_winners_html(data: ReviewData, top: int = 20) -> str:
    rows = data.regions_table[:top]
    if not rows:
        return "<p>No region has a claim.</p>"
    known = any(r.orders for r in data.regions_table)
    head = ["region", "slots", *(["orders"] if known else []), "held", "revoked", "points",
            "first claim", "sold out at"]
    body = [(r.code, r.slots, *([r.orders] if known else []), r.held, r.revoked, r.points,
             clock(data, r.first_ts) if r.first_ts else "-",
             clock(data, r.sold_out_ts) if r.sold_out_ts else "-") for r in rows]
    link = base64.b64encode(regions_csv(data).encode()).decode()
    by = "orders" if known else "claims held"
    return (f"<p>The {len(rows)} busiest regions by {by}, of {len(data.regions_table):,} "
            f"with a claim{' or an order' if known else ''}. "
            f'<a download="{html.escape(data.campaign)}-regions.csv" '
            f'href="data:text/csv;base64,{link}">All regions as CSV</a>. '
            "Who holds each slot: <code>rewardcore winners</code> or the daemon's "
            "<code>/winners</code> page.</p>" + _table(head, body))


def _prize_reach_table(data: ReviewData, lint: LintResult) -> str:
    reach = {p.id: p for p in lint.facts.prizes}
    base = data.participants
    who = _who(data)
    rows = []
    for u in data.prizes:
        f = reach.get(u.id)
        ok = f is None or f.reachable
        rows.append((u.id, u.cost_points, "yes" if ok else "NO",
                     u.holders_enough,
                     _pct(u.holders_enough, base) if base else "-", u.available_enough))
    return _table(["prize", "cost (points)", "reachable", f"{who} holding enough",
                   "share of participants", "can spend it now"], rows)


def _risk_html(risks: Sequence[Finding]) -> str:
    if not risks:
        return ("<p>No risk finding: no pattern of closed winning orders, padded amounts, "
                "opening bursts or shared merchants above its threshold.</p>")
    rows = "".join(
        f'<tr><td class="{f.severity}">{f.severity}</td><td><code>{html.escape(f.code)}</code>'
        f"</td><td>{html.escape(f.message)}</td></tr>" for f in risks)
    return (f"<p>{len(risks)} finding(s); thresholds and meaning in "
            f"docs/campaign-checks.md.</p><table><tr><th>severity</th><th>code</th>"
            f"<th>finding</th></tr>{rows}</table>")


def render_report(data: ReviewData, lint: LintResult, *, title: str,
                  context: Sequence[tuple[str, str]] = (), active: int | None = None,
                  risks: Sequence[Finding] = ()) -> str:
    """The whole report as one HTML string.

    `context` rows say where the data came from (traffic shape, backend URL); `active` is
    how many participants placed an order, when known (a simulation knows it).
    """
    _need_matplotlib()
    facts = lint.facts
    who = _who(data)
    prize_rows = [
        (p.id, p.name, p.cost_points, p.value_cents / 100, p.yuan_per_point or "-",
         p.points_per_yuan or "-", "yes" if p.reachable else "NO")
        for p in facts.prizes]
    earn_rows = [
        (u.id, u.cost_points, u.holders_enough, u.available_enough, u.redeemed_units,
         u.stock_left) for u in data.prizes]
    figures = data.figures() | {"lint": {"errors": lint.count("error"),
                                         "warnings": lint.count("warning")},
                                "risks": [f.code for f in risks],
                                "headline": headline(data, lint)}
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _table(["", ""], [(k, v) for k, v in context]),
        f'<p class="muted">generated {generated} by rewardcore; times are the campaign\'s '
        f"clock ({_tz_name(data)}), the window opened {clock(data, data.starts_ms, date=True)}"
        "</p>",
        '<section id="headline"><h2>What happened</h2><ul>'
        + "".join(f"<li>{html.escape(t)}</li>" for t in headline(data, lint)) + "</ul></section>",
        "<h2>Outcomes of the orders</h2>",
        _table(["outcome", "orders", "share", "what it means"], _outcome_rows(data)),
        _img(overview_png(data, lint), "overview"),
        "<h2>Summary</h2>",
        _table(["figure", "value", "share"], _summary_rows(data, active)),
        "<h2>Preflight findings</h2>", _findings_html(lint),
        "<h2>Risk findings</h2>", _risk_html(risks),
        "<h2>Regions sold out over time</h2>",
        "<p>Under on_close = \"release\" a closed order gives its slot back, so a sold-out "
        "region reopens until a later order takes the slot: the line can dip.</p>"
        if data.on_close == "release" else "",
        _img(_single(_plot_sold_out, data), "sold out"),
        "<h2>Budget used over time</h2>", _img(_single(_plot_budget, data), "budget"),
        "<h2>Share of participants rewarded</h2>",
        _img(_single(_plot_share, data, active, height=2.5), "share rewarded"),
        f"<h2>Regions unlocked per {data.beneficiary}</h2>",
        _img(_single(_plot_regions_per, data), "regions per beneficiary"),
        _regions_table(data),
        f"<h2>Points per {data.beneficiary}</h2>",
        _img(_single(_plot_points_per, data, lint), "points per beneficiary"),
        _prize_reach_table(data, lint),
        "<h2>Winners by region</h2>", _regions_winners_html(data),
        "<h2>Claims revoked</h2>",
        f"<p>{data.claims_revoked:,} of {data.claims:,} claims were revoked by closed orders "
        f"({data.points_revoked:,} points); {data.regions_lost:,} of {data.regions_awarded:,} "
        f"awarded regions hold no claim any more.</p>",
        _img(_single(_plot_revoked, data), "claims revoked"),
        "<h2>What a point is worth</h2>",
        _img(_single(_plot_point_value, lint), "points per yuan"),
        _table(["prize", "name", "cost (points)", "value (yuan)", "yuan per point",
                "points per yuan", "reachable"], prize_rows),
        "<h2>What a participant could earn</h2>",
        f"<p>Under the caps, slots and budget one {data.beneficiary} can hold at most "
        f"{facts.max_points_per_beneficiary:,} points (limited by {facts.beneficiary_limit}); "
        f"at most {facts.max_winners:,} {who} can ever hold points. In this run the top "
        f"{data.beneficiary} held "
        f"{(data.points_per_beneficiary or [0])[0]:,} points.</p>",
        _img(_single(_plot_could_earn, data, lint), "could earn"),
        _table(["prize", "cost (points)", f"{who} holding enough", "can spend it now",
                "units redeemed", "stock left"], earn_rows),
        "<h2>Redemptions</h2>",
        _table(["outcome", "redemptions"], sorted(data.redemptions.items()))
        if data.redemptions else "<p>No redemptions.</p>",
        '<script type="application/json" id="figures">',
        orjson.dumps(figures).decode().replace("</", "<\\/"),
        "</script></body></html>",
    ]
    return "\n".join(parts)


def summary_text(data: ReviewData, lint: LintResult, active: int | None = None,
                 risks: Sequence[Finding] = ()) -> str:
    """A few lines for the terminal."""
    who = _who(data)
    base = data.participants
    lines = [
        f"claims {data.claims:,} awarded, {data.claims_revoked:,} revoked "
        f"({_pct(data.claims_revoked, data.claims)}); points held {data.points:,}"
        + (f" of a {data.budget_points:,} budget ({_pct(data.points, data.budget_points)})"
           if data.budget_points else ""),
        f"regions: {data.regions_sold_out:,} of {data.regions:,} sold out, "
        f"{data.regions_lost:,} of {data.regions_awarded:,} awarded lost to closed orders",
        f"{who} rewarded: {data.rewarded:,}"
        + (f" of {base:,} participants ({_pct(data.rewarded, base)})" if base else "")
        + (f", {active:,} placed an order" if active is not None else "")
        + f"; top {data.beneficiary} holds {(data.points_per_beneficiary or [0])[0]:,} points",
        "redemptions: " + (", ".join(f"{k} {v:,}" for k, v in data.redemptions.items())
                           or "none"),
        f"lint: {lint.count('error')} error(s), {lint.count('warning')} warning(s)"
        + "".join(f"\n  {f.severity} {f.code}: {f.message}" for f in lint.findings
                  if f.severity == "error"),
        f"risk findings: {len(risks)}" + "".join(f"\n  {f.severity} {f.code}: {f.message}"
                                                 for f in risks),
    ]
    lines[:0] = headline(data, lint)
    return "\n".join(lines)

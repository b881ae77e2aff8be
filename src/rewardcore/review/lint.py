"""Preflight checks: what a campaign file promises, and the promises it cannot keep.

`lint(campaign)` works out the campaign's figures (slots, points the slots can award, the
most one beneficiary can earn, how many beneficiaries can ever win, what a point is worth
for each prize) and turns the ones that look like the failures of real "order and earn"
campaigns into findings. Each finding has a severity (error, warning, info) and a stable
code; docs/campaign-checks.md explains every code and the failure it prevents.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Literal

import msgspec

from ..campaign import Campaign

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


class Finding(msgspec.Struct, frozen=True):
    """One preflight finding. `subject` names the prize id or region code it is about."""

    severity: Severity
    code: str
    message: str
    subject: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class LintConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the checks; the defaults are documented in docs/campaign-checks.md."""

    #: expected distinct participants (agents or merchants); 0 = unknown
    participants: int = 0
    #: a warning when the yuan a point is worth differs between prizes by more than this factor
    value_spread: float = 1.5
    #: ... and an error beyond this factor
    value_spread_error: float = 3.0
    #: a warning when fewer than this share of participants can ever win (or redeem)
    min_coverage: float = 0.10
    #: a warning when the budget pays for less than this share of what the slots can award
    budget_low: float = 0.9
    #: a warning when the budget is more than this multiple of what the slots can award
    budget_high: float = 1.5
    #: expected share of winning orders that are closed later (for on_close = "forfeit")
    close_rate: float = 0.05
    #: a warning when the window is shorter than this many hours
    min_window_hours: float = 1.0


class PrizeFacts(msgspec.Struct, frozen=True):
    id: str
    name: str
    cost_points: int
    value_cents: int
    stock: int
    #: yuan one point is worth when spent on this prize (None when value_cents is 0)
    yuan_per_point: float | None
    #: points this prize asks for each yuan of value (None when value_cents is 0)
    points_per_yuan: float | None
    #: one beneficiary can collect cost_points under the caps, slots and budget
    reachable: bool
    #: units all points the campaign can award could buy (ignoring stock)
    max_units: int


class Facts(msgspec.Struct, frozen=True):
    """The figures the findings are built from; the reports show them too."""

    campaign: str
    regions: int
    total_slots: int
    paying_slots: int
    max_awardable_points: int
    budget_points: int
    #: what the campaign can pay out at most: the slots' points, capped by the budget
    payable_points: int
    mean_points_per_slot: float
    max_claims_per_beneficiary: int
    #: the most one beneficiary can hold, with the caps, slots, tiers and budget
    max_points_per_beneficiary: int
    #: what limits max_points_per_beneficiary: "slots", "caps" or "budget"
    beneficiary_limit: str
    #: distinct beneficiaries that can hold points at the end, at most
    max_winners: int
    participants: int
    #: max_winners / participants (None when participants is unknown)
    coverage: float | None
    window_hours: float
    prizes: list[PrizeFacts]
    #: highest yuan per point over lowest, over prizes with a value (None with fewer than 2)
    value_spread: float | None


class LintResult(msgspec.Struct, frozen=True):
    facts: Facts
    findings: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def count(self, severity: Severity) -> int:
        return sum(f.severity == severity for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.facts.campaign,
            "errors": self.count("error"),
            "warnings": self.count("warning"),
            "infos": self.count("info"),
            "findings": msgspec.to_builtins(self.findings),
            "facts": msgspec.to_builtins(self.facts),
        }


# -- figures --------------------------------------------------------------------------------

def _slot_points(campaign: Campaign) -> list[tuple[list[tuple[int, int]], int]]:
    """Per region: its tiers as (points, slots in the tier) and its slot count."""
    out = []
    for r in campaign.regions:
        tiers = []
        lo = 0
        for t in r.tiers:
            hi = min(t.upto, r.slots)
            if hi > lo:
                tiers.append((t.points, hi - lo))
            lo = t.upto
        out.append((tiers, r.slots))
    return out


def max_beneficiary_claims(campaign: Campaign) -> int:
    """The most non-revoked claims one beneficiary can hold: caps and slots together."""
    per_region = campaign.info.max_claims_per_beneficiary_per_region
    total = sum(min(r.slots, per_region) if per_region else r.slots for r in campaign.regions)
    cap = campaign.info.max_claims_per_beneficiary
    return min(total, cap) if cap else total


def max_beneficiary_points(campaign: Campaign) -> tuple[int, str]:
    """The most points one beneficiary can hold at the end, and what limits it.

    An upper bound: the beneficiary is given the best-paying slots it may hold in each
    region (at most max_claims_per_beneficiary_per_region of them), then the best of those
    up to max_claims_per_beneficiary, then the budget. on_close does not raise or lower
    this bound: under "release" a closed claim's slot can be won again but the closed claim
    no longer counts, under "forfeit" the slot is gone; either way the beneficiary holds at
    most this many non-revoked claims. (The forfeit check estimates the expected loss.)
    """
    info = campaign.info
    per_region = info.max_claims_per_beneficiary_per_region
    # points value -> how many slots one beneficiary could hold at that value
    best: Counter[int] = Counter()
    uncapped = 0
    for tiers, slots in _slot_points(campaign):
        uncapped += sum(p * n for p, n in tiers)
        room = min(slots, per_region) if per_region else slots
        for points, n in sorted(tiers, reverse=True):
            take = min(n, room)
            best[points] += take
            room -= take
            if room == 0:
                break
    limit = "slots"
    total = 0
    left = info.max_claims_per_beneficiary or sum(best.values())
    for points in sorted(best, reverse=True):
        take = min(best[points], left)
        total += points * take
        left -= take
        if left <= 0:
            break
    if total < uncapped:
        limit = "caps"
    if info.budget_points and info.budget_points < total:
        return info.budget_points, "budget"
    return total, limit


def campaign_facts(campaign: Campaign, config: LintConfig | None = None) -> Facts:
    """Work out the figures of a campaign file (no engine, no traffic)."""
    config = config or LintConfig()
    info = campaign.info
    awardable = campaign.max_awardable_points()
    payable = min(awardable, info.budget_points) if info.budget_points else awardable
    tiers = _slot_points(campaign)
    paying = [(p, n) for region_tiers, _ in tiers for p, n in region_tiers if p > 0]
    paying_slots = sum(n for _, n in paying)
    max_points, limit = max_beneficiary_points(campaign)
    # Every winner holds at least one paying claim, so the winners are at most the paying
    # slots, and at most what the budget pays at the lowest paying tier.
    max_winners = paying_slots
    if info.budget_points and paying:
        max_winners = min(max_winners, info.budget_points // min(p for p, _ in paying))
    participants = config.participants
    coverage = min(max_winners, participants) / participants if participants else None

    prizes = []
    for p in campaign.prizes:
        ypp = p.value_cents / 100 / p.cost_points if p.value_cents else None
        ppy = p.cost_points / (p.value_cents / 100) if p.value_cents else None
        prizes.append(PrizeFacts(
            id=p.id, name=p.name, cost_points=p.cost_points, value_cents=p.value_cents,
            stock=p.stock, yuan_per_point=ypp, points_per_yuan=ppy,
            reachable=p.cost_points <= max_points, max_units=payable // p.cost_points,
        ))
    values = [p.yuan_per_point for p in prizes if p.yuan_per_point]
    spread = max(values) / min(values) if len(values) >= 2 else None
    total_slots = campaign.total_slots
    return Facts(
        campaign=campaign.id, regions=len(campaign.regions), total_slots=total_slots,
        paying_slots=paying_slots, max_awardable_points=awardable,
        budget_points=info.budget_points, payable_points=payable,
        mean_points_per_slot=awardable / total_slots if total_slots else 0.0,
        max_claims_per_beneficiary=max_beneficiary_claims(campaign),
        max_points_per_beneficiary=max_points, beneficiary_limit=limit,
        max_winners=max_winners, participants=participants, coverage=coverage,
        window_hours=(campaign.ends_ms - campaign.starts_ms) / 3_600_000,
        prizes=prizes, value_spread=spread,
    )


# -- checks ---------------------------------------------------------------------------------

def _n(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"


def _pct(x: float) -> str:
    return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"


def _codes(codes: list[int], at_most: int = 5) -> str:
    shown = ", ".join(str(c) for c in codes[:at_most])
    return shown + (f" and {len(codes) - at_most:,} more" if len(codes) > at_most else "")


def _who(campaign: Campaign) -> str:
    return "merchant" if campaign.pays_merchant else "agent"


def _check_prizes(c: Campaign, f: Facts, cfg: LintConfig, out: list[Finding]) -> None:
    who = _who(c)
    if not f.prizes:
        out.append(Finding("warning", "no-prizes",
                           "the campaign has no prizes: points can be earned but never spent"))
        return
    for p in f.prizes:
        if not p.reachable:
            why = {
                "budget": f"the whole budget is {_n(f.budget_points)} points",
                "caps": (f"the caps let one {who} hold at most "
                         f"{_n(f.max_claims_per_beneficiary)} claims, worth "
                         f"{_n(f.max_points_per_beneficiary)} points at the best tiers"),
                "slots": (f"even winning every slot of every region earns "
                          f"{_n(f.max_points_per_beneficiary)} points"),
            }[f.beneficiary_limit]
            out.append(Finding(
                "error", "prize-unreachable",
                f"prize {p.id} ({p.name}) costs {_n(p.cost_points)} points but no {who} can "
                f"ever collect that many: {why}",
                subject=p.id,
                data={"cost_points": p.cost_points,
                      "max_points_per_beneficiary": f.max_points_per_beneficiary,
                      "limit": f.beneficiary_limit},
            ))
        elif c.info.on_close == "forfeit" and cfg.close_rate > 0 and \
                p.cost_points > f.max_points_per_beneficiary * (1 - cfg.close_rate):
            out.append(Finding(
                "warning", "prize-at-the-limit",
                f"prize {p.id} ({p.name}) costs {_n(p.cost_points)} points, within "
                f"{_pct(cfg.close_rate)} of the most one {who} can ever hold "
                f"({_n(f.max_points_per_beneficiary)}); with on_close = \"forfeit\" a single "
                "closed order puts it out of reach",
                subject=p.id,
                data={"cost_points": p.cost_points,
                      "max_points_per_beneficiary": f.max_points_per_beneficiary},
            ))
        if p.stock == 0:
            out.append(Finding("warning", "prize-no-stock",
                               f"prize {p.id} ({p.name}) has stock 0: every redemption of it "
                               "fails with out_of_stock", subject=p.id))
        if p.value_cents == 0:
            out.append(Finding("warning", "prize-no-value",
                               f"prize {p.id} ({p.name}) has value_cents = 0, so what a point "
                               "is worth cannot be checked for it", subject=p.id))
    idle = [p for p in f.prizes if p.reachable and p.stock > p.max_units]
    if idle:
        out.append(Finding(
            "info", "prize-stock-idle",
            f"all {_n(f.payable_points)} points the campaign can pay, spent on one prize, "
            "buy at most: " + "; ".join(
                f"{p.max_units:,} of {p.id} (stock {p.stock:,})" for p in idle),
            data={p.id: {"stock": p.stock, "max_units": p.max_units} for p in idle}))

    valued = [p for p in f.prizes if p.yuan_per_point]
    if valued:
        table = "; ".join(
            f"{p.id}: {_n(p.cost_points)} points for {p.value_cents / 100:,.2f} yuan = "
            f"{p.yuan_per_point:.3f} yuan/point ({p.points_per_yuan:.1f} points/yuan)"
            for p in valued)
        out.append(Finding("info", "point-value", f"what a point is worth: {table}",
                           data={p.id: p.yuan_per_point for p in valued}))
    if f.value_spread is not None and f.value_spread > cfg.value_spread:
        hi = max(valued, key=lambda p: p.yuan_per_point or 0.0)
        lo = min(valued, key=lambda p: p.yuan_per_point or 0.0)
        severity: Severity = "error" if f.value_spread > cfg.value_spread_error else "warning"
        out.append(Finding(
            severity, "point-value-spread",
            f"inconsistent point value: a point is worth {hi.yuan_per_point:.3f} yuan on "
            f"{hi.id} but {lo.yuan_per_point:.3f} yuan on {lo.id}, {f.value_spread:.1f}x apart "
            f"(limit {cfg.value_spread:g}x): participants cannot tell what their points are worth",
            subject=hi.id,
            data={"spread": f.value_spread, "highest": hi.id, "lowest": lo.id},
        ))
    # A bigger prize should cost no more points per yuan than a smaller one.
    by_value = sorted(valued, key=lambda p: (p.value_cents, p.cost_points))
    for i, big in enumerate(by_value):
        smaller = [s for s in by_value[:i]
                   if s.value_cents < big.value_cents
                   and (big.points_per_yuan or 0) > (s.points_per_yuan or 0) * 1.0001]
        if smaller:
            s = min(smaller, key=lambda p: p.points_per_yuan or 0.0)
            out.append(Finding(
                "warning", "point-value-inverted",
                f"prize {big.id} ({big.value_cents / 100:,.2f} yuan) costs "
                f"{big.points_per_yuan:.1f} points per yuan, more than the smaller prize {s.id} "
                f"({s.value_cents / 100:,.2f} yuan, {s.points_per_yuan:.1f} points per yuan): "
                "saving up for the bigger prize is punished",
                subject=big.id, data={"smaller": s.id}))

    if valued and f.participants:
        cheapest = min(f.prizes, key=lambda p: p.cost_points)
        share = min(cheapest.max_units, f.participants) / f.participants
        if share < cfg.min_coverage:
            out.append(Finding(
                "warning", "redeem-out-of-reach",
                f"all {_n(f.payable_points)} points the campaign can pay buy at most "
                f"{_n(cheapest.max_units)} of the cheapest prize ({cheapest.id}, "
                f"{_n(cheapest.cost_points)} points), for {_n(f.participants)} participants "
                f"({_pct(share)}): most participants will never redeem anything",
                subject=cheapest.id, data={"share": share}))
    if f.prizes and f.mean_points_per_slot:
        cheapest = min(f.prizes, key=lambda p: p.cost_points)
        need = math.ceil(cheapest.cost_points / f.mean_points_per_slot)
        out.append(Finding(
            "info", "claims-per-prize",
            f"the cheapest prize ({cheapest.id}, {_n(cheapest.cost_points)} points) needs about "
            f"{need:,} winning orders at the average {f.mean_points_per_slot:.1f} points a slot",
            subject=cheapest.id, data={"claims": need}))


def _check_coverage(c: Campaign, f: Facts, cfg: LintConfig, out: list[Finding]) -> None:
    who = _who(c)
    ones = sum(r.slots == 1 for r in c.regions)
    if ones >= 0.9 * len(c.regions):
        out.append(Finding(
            "warning", "first-order-only",
            f"{ones:,} of {len(c.regions):,} regions have a single slot: only the first order "
            "of a region earns, so the fastest few take everything",
            data={"single_slot_regions": ones}))
    base = (f"at most {_n(f.max_winners)} distinct {who}s can ever hold points "
            f"({_n(f.paying_slots)} paying slots"
            + (f", a budget of {_n(f.budget_points)} points" if f.budget_points else "") + ")")
    if f.coverage is None:
        out.append(Finding("info", "coverage",
                           base + "; pass --participants to compare with the expected "
                                  "participants", data={"max_winners": f.max_winners}))
    elif f.coverage < cfg.min_coverage:
        out.append(Finding(
            "warning", "coverage",
            f"{base}: {_pct(f.coverage)} of the {_n(f.participants)} expected participants "
            f"(below {_pct(cfg.min_coverage)})",
            data={"max_winners": f.max_winners, "coverage": f.coverage}))
    else:
        out.append(Finding("info", "coverage",
                           f"{base}: up to {_pct(min(f.coverage, 1.0))} of the "
                           f"{_n(f.participants)} expected participants",
                           data={"max_winners": f.max_winners, "coverage": f.coverage}))


def _check_budget(c: Campaign, f: Facts, cfg: LintConfig, out: list[Finding]) -> None:
    budget, awardable = f.budget_points, f.max_awardable_points
    if not budget:
        out.append(Finding("info", "no-budget",
                           f"no budget: the slots can award up to {_n(awardable)} points"))
        return
    if budget < awardable:
        share = budget / awardable
        severity: Severity = "warning" if share < cfg.budget_low else "info"
        out.append(Finding(
            severity, "budget-below-awardable",
            f"the budget ({_n(budget)} points) pays for {_pct(share)} of the "
            f"{_n(awardable)} points the slots can award: once it is spent, orders within the "
            "first N of a region earn nothing (budget_exhausted)",
            data={"budget_points": budget, "max_awardable_points": awardable}))
    elif budget > awardable * cfg.budget_high:
        out.append(Finding(
            "warning", "budget-above-awardable",
            f"the budget ({_n(budget)} points) is {budget / awardable:.1f}x what the slots can "
            f"ever award ({_n(awardable)}): most of it can never be used, and it is not a limit",
            data={"budget_points": budget, "max_awardable_points": awardable}))


def _check_settings(c: Campaign, f: Facts, cfg: LintConfig, out: list[Finding]) -> None:
    info = c.info
    if f.window_hours < cfg.min_window_hours:
        out.append(Finding(
            "warning", "window-short",
            f"the window is only {f.window_hours * 60:.0f} minutes "
            f"({info.starts_at.isoformat()} to {info.ends_at.isoformat()})",
            data={"hours": f.window_hours}))
    if info.min_paid_cents == 0 and f.paying_slots:
        out.append(Finding(
            "warning", "min-paid-zero",
            "min_paid_cents is 0: an order paying a single cent takes a slot, so slots can be "
            "taken by throw-away orders that are closed afterwards"))
    if info.settle_on == "placed":
        out.append(Finding(
            "warning", "settle-on-placed",
            "settle_on = \"placed\": points can be spent before the order is known to stick; an "
            "order closed after its points were redeemed leaves the prize given away"))
    if info.on_close == "forfeit":
        lost_slots = f.total_slots * cfg.close_rate
        single = sum(r.slots == 1 for r in c.regions)
        out.append(Finding(
            "warning", "forfeit-loses-slots",
            f"on_close = \"forfeit\": a closed order's slot is never awarded again; at a close "
            f"rate of {_pct(cfg.close_rate)} about {_n(round(lost_slots))} slots "
            f"({_n(round(f.payable_points * cfg.close_rate))} points) are lost"
            + (f", and {single:,} single-slot regions lose their only slot" if single else ""),
            data={"close_rate": cfg.close_rate, "expected_lost_slots": lost_slots}))
    if info.beneficiary == "agent":
        out.append(Finding(
            "info", "agent-beneficiary",
            "points go to agents (beneficiary = \"agent\") while merchants bear the orders' "
            "cost: agents gain from placing orders a merchant may close later; make sure "
            "merchants agree, and watch the close rate"))
    per_region = info.max_claims_per_beneficiary_per_region
    if per_region and per_region >= max(r.slots for r in c.regions):
        out.append(Finding(
            "info", "region-cap-no-effect",
            f"max_claims_per_beneficiary_per_region ({per_region}) is at least every region's "
            "slots: it never limits anyone"))
    cap = info.max_claims_per_beneficiary
    if cap:
        room = sum(min(r.slots, per_region) if per_region else r.slots for r in c.regions)
        if cap >= room:
            out.append(Finding(
                "info", "cap-no-effect",
                f"max_claims_per_beneficiary ({cap:,}) is at least the {room:,} claims the "
                "slots and the per-region cap allow one beneficiary: it never limits anyone"))


def _check_tiers(c: Campaign, out: list[Finding]) -> None:
    # Group regions by their tiers, so 1,000 regions sharing one mistake give one finding.
    groups: dict[tuple[int, tuple[tuple[int, int], ...]], list[int]] = {}
    for r in c.regions:
        key = (r.slots, tuple((t.upto, t.points) for t in r.tiers))
        groups.setdefault(key, []).append(r.code)
    for (slots, tiers), codes in groups.items():
        used = [(upto, p) for i, (upto, p) in enumerate(tiers)
                if i == 0 or tiers[i - 1][0] < slots]
        pts = [p for _, p in used]
        tier_text = ", ".join(f"up to {u}: {p}" for u, p in used)
        where = f"region{'s' if len(codes) > 1 else ''} {_codes(codes)}"
        ups = any(b > a for a, b in zip(pts, pts[1:], strict=False))
        downs = [i for i in range(1, len(pts)) if pts[i] < pts[i - 1]]
        if ups and downs:
            i = downs[0]
            out.append(Finding(
                "warning", "tier-not-monotone",
                f"{where}: the tier up to slot {used[i][0]} pays {pts[i]} points, less than the "
                f"tier before it ({pts[i - 1]}), while earlier tiers pay more for later slots "
                f"({tier_text}); if later slots should pay more, this tier looks like a typo",
                subject=str(codes[0]), data={"regions": len(codes), "tiers": used}))
        if 0 in pts:
            out.append(Finding(
                "warning", "tier-zero-points",
                f"{where}: a tier pays 0 points ({tier_text}); its slots are taken and count "
                "toward the caps but earn nothing",
                subject=str(codes[0]), data={"regions": len(codes)}))
        if len(used) < len(tiers):
            out.append(Finding(
                "info", "tier-unused",
                f"{where}: {len(tiers) - len(used)} tier(s) start past the last slot ({slots}) "
                "and can never pay",
                subject=str(codes[0]), data={"regions": len(codes)}))


def lint(campaign: Campaign, config: LintConfig | None = None) -> LintResult:
    """Check a campaign before launch; findings are sorted errors first."""
    config = config or LintConfig()
    facts = campaign_facts(campaign, config)
    findings: list[Finding] = []
    _check_prizes(campaign, facts, config, findings)
    _check_coverage(campaign, facts, config, findings)
    _check_budget(campaign, facts, config, findings)
    _check_settings(campaign, facts, config, findings)
    _check_tiers(campaign, findings)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda x: order[x.severity])  # stable: checks keep their order
    return LintResult(facts, findings)


def format_text(result: LintResult) -> str:
    """The findings as text lines, then one summary line."""
    f = result.facts
    lines = [f"{x.severity:<7} {x.code:<24} {x.message}" for x in result.findings]
    lines.append(
        f"{f.campaign}: {result.count('error')} error(s), {result.count('warning')} warning(s), "
        f"{result.count('info')} info; {f.regions:,} regions, {f.total_slots:,} slots, "
        f"{f.payable_points:,} points payable, at most {f.max_points_per_beneficiary:,} per "
        f"beneficiary, at most {f.max_winners:,} winners"
    )
    return "\n".join(lines)

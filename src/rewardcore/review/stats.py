"""What a campaign did, read back from an engine: the figures the reports show.

`collect(engine)` reads the engine's real state (claims, balances, outcomes, redemptions,
stock), so the same code reviews a simulation run on `memory://` and a live or finished
campaign on a backend that keeps state. Time series come either from the simulation (one
point per batch, `Tracker`) or from the claims' order times (`claim_series`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from ..campaign import Campaign
from ..engine import Claim, Decisions, Engine
from ..events import Closed, Event, Placed, Redeem
from ..outcomes import Outcome

_MINUTE = 60_000


class Series(msgspec.Struct):
    """Campaign figures over time, `minutes` after the window opened.

    source "live": measured while the events were applied (one point per batch), so
    revocations show when they happened. source "claims": rebuilt from the final claims'
    order times, so a claim revoked later counts as never held.
    """

    source: str
    minutes: list[float] = msgspec.field(default_factory=list)
    sold_out: list[int] = msgspec.field(default_factory=list)
    budget_used: list[int] = msgspec.field(default_factory=list)
    awarded: list[int] = msgspec.field(default_factory=list)
    revoked: list[int] = msgspec.field(default_factory=list)


class PrizeUse(msgspec.Struct):
    id: str
    name: str
    cost_points: int
    #: beneficiaries holding at least cost_points (pending or confirmed)
    holders_enough: int
    #: beneficiaries who can spend cost_points now (confirmed minus redeemed)
    available_enough: int
    stock_left: int
    redeemed_units: int


class RegionRow(msgspec.Struct):
    """One region's winners, for the report's per-region table and its CSV."""

    code: int
    slots: int
    #: non-revoked claims now
    held: int
    revoked: int
    #: points of the non-revoked claims
    points: int
    #: order time of the region's first claim (epoch ms; 0 when none)
    first_ts: int
    #: order time of the claim that took its last slot, when it is sold out now (else 0)
    sold_out_ts: int
    #: orders placed into it inside the window (0 when the stream is not known)
    orders: int = 0


class ReviewData(msgspec.Struct):
    """A campaign's outcome, from one engine's state."""

    campaign: str
    beneficiary: str
    #: expected or simulated participants; 0 when unknown (then shares use winners seen)
    participants: int
    #: outcomes of `placed` events, by label
    outcomes: dict[str, int]
    #: claims ever created (= outcomes["awarded"])
    claims: int
    claims_revoked: int
    claims_pending: int
    claims_confirmed: int
    #: points of non-revoked claims: what the budget counts
    points: int
    points_revoked: int
    points_redeemed: int
    budget_points: int
    regions: int
    regions_awarded: int
    #: regions with at least one revoked claim
    regions_revoked: int
    #: regions that awarded a claim but hold none now: lost to closed orders
    regions_lost: int
    regions_sold_out: int
    #: beneficiaries holding at least one non-revoked claim
    rewarded: int
    #: beneficiaries whose every claim was revoked
    lost_all: int
    #: points per rewarded beneficiary (pending + confirmed), highest first
    points_per_beneficiary: list[int]
    #: number of regions unlocked (non-revoked claims) -> beneficiaries
    regions_per_beneficiary: dict[int, int]
    redemptions: dict[str, int]
    prizes: list[PrizeUse]
    series: Series
    #: the window's opening (epoch ms) and the campaign's UTC offset, for clock times
    starts_ms: int = 0
    tz_offset_s: int = 0
    #: outcome label -> order time (epoch ms) of the first `placed` with that outcome; exact
    #: in a simulation, empty in a review (the engine keeps no losing orders)
    first_ts: dict[str, int] = msgspec.field(default_factory=dict)
    #: when the claims' points first came within one slot of the budget (epoch ms; 0: never)
    budget_full_ts: int = 0
    regions_table: list[RegionRow] = msgspec.field(default_factory=list)
    #: who is behind the orders, when known: {"agents": n, "merchants": m}
    population: dict[str, int] = msgspec.field(default_factory=dict)
    #: beneficiaries whose available points are below zero: a confirmed claim was closed
    #: after its points were spent
    negative_available: int = 0
    #: revoked claims that had been confirmed first (a return after completion; needs the
    #: claims' settled_ts, v2)
    revoked_after_confirmed: int = 0
    #: participants of the campaign's kind who placed an order (0 when unknown)
    active: int = 0
    on_close: str = "release"

    def figures(self) -> dict[str, Any]:
        """The headline numbers, as the report embeds them for machines."""
        return {
            "campaign": self.campaign,
            "participants": self.participants,
            "claims_awarded": self.claims,
            "claims_revoked": self.claims_revoked,
            "claims_pending": self.claims_pending,
            "claims_confirmed": self.claims_confirmed,
            "points": self.points,
            "points_redeemed": self.points_redeemed,
            "budget_points": self.budget_points,
            "regions": self.regions,
            "regions_awarded": self.regions_awarded,
            "regions_revoked": self.regions_revoked,
            "regions_lost": self.regions_lost,
            "regions_sold_out": self.regions_sold_out,
            "rewarded": self.rewarded,
            "lost_all": self.lost_all,
            "outcomes": self.outcomes,
            "redemptions": self.redemptions,
            "first_ts": self.first_ts,
            "budget_full_ts": self.budget_full_ts,
            "population": self.population,
            "negative_available": self.negative_available,
            "revoked_after_confirmed": self.revoked_after_confirmed,
            "active": self.active,
        }


def _sold_out(campaign: Campaign, claims: Sequence[Claim]) -> dict[int, int]:
    """Region code -> the order time its last slot was taken, for regions with none left.

    Under "release" a region is sold out when its non-revoked claims fill its slots; under
    "forfeit" when every slot was used once, revoked or not (DESIGN.md, slot choice).
    """
    count: Counter[int] = Counter()
    last: dict[int, int] = {}
    for c in claims:
        if campaign.releases and c.state == "revoked":
            continue
        count[c.region] += 1
        last[c.region] = max(last.get(c.region, c.ts), c.ts)
    return {code: last[code] for code, n in count.items()
            if n >= campaign.region_by_code[code].slots}


def _revoked_at(c: Claim) -> int:
    """When a claim was revoked: its `revoked_ts` (v2) when the engine keeps it, else 0."""
    return int(getattr(c, "revoked_ts", 0) or 0) if c.state == "revoked" else 0


def claim_series(campaign: Campaign, claims: Sequence[Claim], points: int = 200) -> Series:
    """Rebuild the time series from the claims' times (for a finished campaign).

    With `revoked_ts` (v2) a revoked claim counts as held from its order time until it was
    revoked, and revocations are placed when they happened; without it a revoked claim
    counts as never held and is drawn at its order time.
    """
    series = Series(source="claims")
    if not claims:
        return series
    ts = np.sort(np.array([c.ts for c in claims], dtype=np.int64))
    plus = sorted((c.ts, c.points if c.state != "revoked" or _revoked_at(c) else 0)
                  for c in claims)
    plus_ts = np.array([t for t, _ in plus], dtype=np.int64)
    plus_pts = np.cumsum([p for _, p in plus])
    minus = sorted((_revoked_at(c), c.points) for c in claims if _revoked_at(c))
    minus_ts = np.array([t for t, _ in minus], dtype=np.int64)
    minus_pts = np.cumsum([p for _, p in minus]) if minus else np.zeros(0, np.int64)
    rev_ts = np.sort(np.array([_revoked_at(c) or c.ts for c in claims if c.state == "revoked"],
                              dtype=np.int64))
    sold_at = np.sort(np.array(list(_sold_out(campaign, claims).values()), dtype=np.int64))
    # orders are placed inside the window, but a close may come after it: the series runs on
    # to the last revocation so that it ends where the state is
    last = max(int(ts[-1]), int(rev_ts[-1]) if len(rev_ts) else 0, campaign.starts_ms + 1)
    edges = np.linspace(campaign.starts_ms, last, points)
    for edge in edges:
        n = int(np.searchsorted(ts, edge, side="right"))
        k = int(np.searchsorted(plus_ts, edge, side="right"))
        m = int(np.searchsorted(minus_ts, edge, side="right"))
        series.minutes.append(float((edge - campaign.starts_ms) / _MINUTE))
        series.awarded.append(n)
        series.budget_used.append((int(plus_pts[k - 1]) if k else 0)
                                  - (int(minus_pts[m - 1]) if m else 0))
        series.revoked.append(int(np.searchsorted(rev_ts, edge, side="right")))
        series.sold_out.append(int(np.searchsorted(sold_at, edge, side="right")))
    return series


def budget_full_at(campaign: Campaign, claims: Sequence[Claim]) -> int:
    """When the points held first came within one slot's points of the budget: from then on
    an order within the first N can be refused (budget_exhausted). 0 when it never did."""
    budget = campaign.info.budget_points
    if not budget or not claims:
        return 0
    slot_points = [t.points for r in campaign.regions for t in r.tiers if t.points > 0]
    margin = min(slot_points) if slot_points else 0
    moves = sorted([(c.ts, c.points) for c in claims if c.state != "revoked" or _revoked_at(c)]
                   + [(_revoked_at(c), -c.points) for c in claims if _revoked_at(c)])
    held = 0
    for t, p in moves:
        held += p
        if held > budget - margin:
            return t
    return 0


def _regions_table(campaign: Campaign, claims: Sequence[Claim],
                   orders: dict[int, int] | None) -> list[RegionRow]:
    sold = _sold_out(campaign, claims)
    rows: dict[int, RegionRow] = {}
    for c in claims:
        row = rows.get(c.region)
        if row is None:
            slots = campaign.region_by_code[c.region].slots
            row = rows[c.region] = RegionRow(c.region, slots, 0, 0, 0, c.ts,
                                             sold.get(c.region, 0))
        row.first_ts = min(row.first_ts, c.ts)
        if c.state == "revoked":
            row.revoked += 1
        else:
            row.held += 1
            row.points += c.points
    if orders:
        for code, n in orders.items():
            row = rows.get(code)
            if row is None:
                row = rows[code] = RegionRow(code, campaign.region_by_code[code].slots,
                                             0, 0, 0, 0, 0)
            row.orders = n
    return sorted(rows.values(), key=lambda r: (-r.orders, -r.held, -r.points, r.code))


_LIMITS = (Outcome.SOLD_OUT, Outcome.BUDGET_EXHAUSTED, Outcome.BENEFICIARY_CAP,
           Outcome.BENEFICIARY_REGION_CAP)


class Tracker:
    """Follows a live run batch by batch, from the events and the engine's decisions.

    Keeps one counter per region and the region of each awarded order, so the time
    series costs a dict lookup per claim, not a read of the engine's whole state.
    """

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.row = {int(code): i for i, code in enumerate(campaign.region_codes.tolist())}
        self.slots = campaign.region_slots.astype(np.int64)
        self.taken = np.zeros(len(self.slots), np.int64)  # non-revoked claims
        self.used = np.zeros(len(self.slots), np.int64)  # slots ever used (forfeit)
        self.region_of: dict[str, int] = {}
        self.points = 0
        self.awarded = 0
        self.revoked = 0
        self.placers: set[str] = set()
        #: outcome code -> order time of its first `placed`, for the limits that refuse
        #: orders (sold out, budget, caps)
        self.first_ts: dict[int, int] = {}
        # The series starts empty at the window's opening, before the first batch.
        self.series = Series(source="live", minutes=[0.0], sold_out=[0], budget_used=[0],
                             awarded=[0], revoked=[0])

    def add(self, events: Sequence[Event], decisions: Decisions) -> None:
        """Account for one applied batch and add a point to the series."""
        who_merchant = self.campaign.pays_merchant
        outcome = decisions.outcome
        last_ts = None
        changed = (outcome == Outcome.AWARDED) | (outcome == Outcome.REVOKED)
        for i in np.flatnonzero(changed).tolist():
            ev = events[i]
            if isinstance(ev, Placed):
                row = self.row[ev.region]
                self.region_of[ev.order_id] = row
                self.taken[row] += 1
                self.used[row] = max(self.used[row], int(decisions.slot[i]))
                self.points += int(decisions.points[i])
                self.awarded += 1
            elif isinstance(ev, Closed):
                self.taken[self.region_of[ev.order_id]] -= 1
                self.points -= int(decisions.points[i])
                self.revoked += 1
        for code in _LIMITS:
            if code not in self.first_ts:
                hit = np.flatnonzero(outcome == code)
                if len(hit):
                    ev = events[int(hit[0])]
                    assert isinstance(ev, Placed)
                    self.first_ts[code] = ev.ts
        if who_merchant:
            self.placers.update([ev.merchant_id for ev in events if type(ev) is Placed])
        else:
            self.placers.update([ev.agent_id for ev in events if type(ev) is Placed])
        # Orders, closes and completions come in time order; redemptions follow the window.
        for ev in reversed(events):
            if not isinstance(ev, Redeem):
                last_ts = ev.ts
                break
        if last_ts is None:
            return
        filled = self.taken if self.campaign.releases else self.used
        s = self.series
        c = self.campaign
        s.minutes.append((min(max(last_ts, c.starts_ms), c.ends_ms) - c.starts_ms) / _MINUTE)
        s.sold_out.append(int(np.count_nonzero(filled >= self.slots)))
        s.budget_used.append(self.points)
        s.awarded.append(self.awarded)
        s.revoked.append(self.revoked)


def collect(engine: Engine, participants: int = 0, series: Series | None = None, *,
            tracker: Tracker | None = None, orders_by_region: dict[int, int] | None = None,
            population: dict[str, int] | None = None) -> ReviewData:
    """Read a campaign's outcome from the engine's state.

    A simulation passes its `tracker` (the live series, when each limit was first hit, who
    placed orders); without it the series is rebuilt from the claims' times. `series`
    alone is the older way to pass the live series.
    """
    if tracker is not None:
        series = tracker.series
    campaign = engine.campaign
    claims = engine.claims()
    balances = engine.balances()
    counts = engine.outcome_counts()
    stock = engine.stock()

    by_state = Counter(c.state for c in claims)
    regions_all: set[int] = set()
    regions_held: set[int] = set()
    regions_revoked: set[int] = set()
    held: defaultdict[str, set[int]] = defaultdict(set)
    earned: Counter[str] = Counter()
    ever: set[str] = set()
    points = points_revoked = 0
    for c in claims:
        regions_all.add(c.region)
        ever.add(c.beneficiary)
        if c.state == "revoked":
            regions_revoked.add(c.region)
            points_revoked += c.points
        else:
            regions_held.add(c.region)
            held[c.beneficiary].add(c.region)
            earned[c.beneficiary] += c.points
            points += c.points

    rewarded = {who for who, regions in held.items() if regions}
    per_beneficiary = sorted((earned[who] for who in rewarded), reverse=True)
    regions_per = Counter(len(regions) for regions in held.values())

    prizes = []
    for p in campaign.prizes:
        left = stock.get(p.id, p.stock)
        prizes.append(PrizeUse(
            id=p.id, name=p.name, cost_points=p.cost_points,
            holders_enough=sum(b.pending + b.confirmed >= p.cost_points
                               for b in balances.values()),
            available_enough=sum(b.available >= p.cost_points for b in balances.values()),
            stock_left=left, redeemed_units=p.stock - left,
        ))
    redemptions = Counter(o.label for o in engine.redemptions().values())
    offset = campaign.info.starts_at.utcoffset()
    return ReviewData(
        campaign=campaign.id,
        beneficiary=campaign.info.beneficiary,
        participants=participants,
        outcomes={o.label: n for o, n in sorted(counts.items()) if n},
        claims=len(claims),
        claims_revoked=by_state["revoked"],
        claims_pending=by_state["pending"],
        claims_confirmed=by_state["confirmed"],
        points=points,
        points_revoked=points_revoked,
        points_redeemed=sum(b.redeemed for b in balances.values()),
        budget_points=campaign.info.budget_points,
        regions=len(campaign.regions),
        regions_awarded=len(regions_all),
        regions_revoked=len(regions_revoked),
        regions_lost=len(regions_all - regions_held),
        regions_sold_out=len(_sold_out(campaign, claims)),
        rewarded=len(rewarded),
        lost_all=len(ever - rewarded),
        points_per_beneficiary=per_beneficiary,
        regions_per_beneficiary=dict(sorted(regions_per.items())),
        redemptions=dict(sorted(redemptions.items())),
        prizes=prizes,
        series=series if series is not None else claim_series(campaign, claims),
        starts_ms=campaign.starts_ms,
        tz_offset_s=int(offset.total_seconds()) if offset is not None else 0,
        first_ts={Outcome(k).label: v for k, v in sorted(tracker.first_ts.items())}
        if tracker is not None else {},
        budget_full_ts=budget_full_at(campaign, claims),
        regions_table=_regions_table(campaign, claims, orders_by_region),
        population=dict(population or {}),
        negative_available=sum(b.available < 0 for b in balances.values()),
        revoked_after_confirmed=sum(1 for c in claims if c.state == "revoked"
                                    and getattr(c, "settled_ts", 0)),
        active=len(tracker.placers) if tracker is not None else 0,
        on_close=campaign.info.on_close,
    )

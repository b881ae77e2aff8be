"""The reference engine: DESIGN.md written as plain Python.

Every other engine is tested against this one, so it favours being obviously right over
being fast: dicts, a heap per region, and the checks of `placed` in the order DESIGN.md
lists them.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..campaign import Campaign
from ..engine import Balance, Claim, ClaimState, Decisions, Engine
from ..events import Closed, Completed, Event, Placed, Redeem, validate_batch
from ..outcomes import Outcome

# What is remembered of an order id: placed, or (arriving before it was placed) closed or
# completed. An early close makes the later placed `closed`; an early completion makes the
# later claim confirmed at once, so a stream delivered out of order, or twice, ends alike.
_PLACED, _TOMBSTONE, _COMPLETED = "placed", "tombstone", "completed"


@dataclass
class _Claim:
    order_id: str
    region: int
    slot: int
    points: int
    beneficiary: str
    state: ClaimState
    ts: int
    rank: int
    settled_ts: int = 0
    revoked_ts: int = 0


class ReferenceEngine(Engine):
    scheme = "reference"
    may_block = False

    def __init__(self, campaign: Campaign) -> None:
        super().__init__(campaign)
        self.reset()

    def reset(self) -> None:
        self._orders: dict[str, str] = {}  # order_id -> _PLACED | _TOMBSTONE | _COMPLETED
        self._claim_of: dict[str, _Claim] = {}
        self._used: Counter[int] = Counter()  # region -> never-used slots handed out so far
        self._ranked: Counter[int] = Counter()  # region -> placed events that reached step 7
        self._released: dict[int, list[int]] = {}  # region -> min-heap of released slots
        self._awarded_points = 0  # points of non-revoked claims (the budget's measure)
        self._held: Counter[str] = Counter()  # beneficiary -> non-revoked claims
        self._held_in_region: Counter[tuple[str, int]] = Counter()
        self._pending: Counter[str] = Counter()
        self._confirmed: Counter[str] = Counter()
        self._redeemed: Counter[str] = Counter()
        self._stock = {p.id: p.stock for p in self.campaign.prizes}
        self._redemptions: dict[str, tuple[Outcome, int]] = {}
        self._outcomes: Counter[Outcome] = Counter()

    def apply(self, events: Sequence[Event]) -> Decisions:
        validate_batch(events)  # the whole batch, before the first change
        out = Decisions.empty(len(events))
        for i, ev in enumerate(events):
            if isinstance(ev, Placed):
                outcome, slot, points, out.rank[i] = self._placed(ev)
                self._outcomes[outcome] += 1
            elif isinstance(ev, Closed):
                outcome, slot, points = self._closed(ev)
            elif isinstance(ev, Completed):
                outcome, slot, points = self._completed(ev)
            else:
                outcome, points = self._redeem(ev)
                slot = 0
            out.outcome[i], out.slot[i], out.points[i] = outcome, slot, points
        return out

    def _placed(self, e: Placed) -> tuple[Outcome, int, int, int]:
        """(outcome, slot, points, rank) of a placed event; rank 0 before step 7."""
        c = self.campaign
        seen = self._orders.get(e.order_id)
        if seen == _PLACED:
            return Outcome.DUPLICATE, 0, 0, 0
        self._orders[e.order_id] = _PLACED  # a redelivery of this event is now a duplicate
        if seen == _TOMBSTONE:
            return Outcome.CLOSED, 0, 0, 0
        refused = c.placed_outcome(e.ts, e.region, e.paid_cents)  # window, region, min paid
        if refused is not None:
            return refused, 0, 0, 0
        region = c.region_by_code[e.region]
        who = e.merchant_id if c.pays_merchant else e.agent_id
        cap = c.info.max_claims_per_beneficiary
        if cap and self._held[who] >= cap:
            return Outcome.BENEFICIARY_CAP, 0, 0, 0
        region_cap = c.info.max_claims_per_beneficiary_per_region
        if region_cap and self._held_in_region[who, region.code] >= region_cap:
            return Outcome.BENEFICIARY_REGION_CAP, 0, 0, 0

        self._ranked[region.code] += 1
        rank = self._ranked[region.code]
        released = self._released.setdefault(region.code, [])
        if released:
            slot = released[0]
        elif self._used[region.code] < region.slots:
            slot = self._used[region.code] + 1
        else:
            return Outcome.SOLD_OUT, 0, 0, rank
        points = region.points_for(slot)
        budget = c.info.budget_points
        if budget and self._awarded_points + points > budget:
            return Outcome.BUDGET_EXHAUSTED, 0, 0, rank  # the slot stays where it was

        if released:
            heapq.heappop(released)
        else:
            self._used[region.code] += 1
        at_once = c.settles_on_placed or seen == _COMPLETED
        state: ClaimState = "confirmed" if at_once else "pending"
        self._claim_of[e.order_id] = _Claim(e.order_id, region.code, slot, points, who, state,
                                            e.ts, rank, e.ts if at_once else 0)
        self._awarded_points += points
        self._held[who] += 1
        self._held_in_region[who, region.code] += 1
        (self._confirmed if state == "confirmed" else self._pending)[who] += points
        return Outcome.AWARDED, slot, points, rank

    def _closed(self, e: Closed) -> tuple[Outcome, int, int]:
        seen = self._orders.get(e.order_id)
        if seen is None or seen == _COMPLETED:  # never placed: the close wins
            self._orders[e.order_id] = _TOMBSTONE
            return Outcome.TOMBSTONED, 0, 0
        claim = self._claim_of.get(e.order_id)
        if claim is None or claim.state == "revoked":
            return Outcome.UNCHANGED, 0, 0
        who = claim.beneficiary
        (self._confirmed if claim.state == "confirmed" else self._pending)[who] -= claim.points
        claim.state = "revoked"
        claim.revoked_ts = e.ts
        # A confirmed claim may already be spent: `available` then goes below zero and
        # redemptions are refused until it is positive again.
        self._awarded_points -= claim.points
        self._held[who] -= 1
        self._held_in_region[who, claim.region] -= 1
        if self.campaign.releases:
            heapq.heappush(self._released[claim.region], claim.slot)
        return Outcome.REVOKED, claim.slot, claim.points

    def _completed(self, e: Completed) -> tuple[Outcome, int, int]:
        if e.order_id not in self._orders:
            # Nothing visible changes (so `unchanged`), but the claim, if the order is
            # awarded later, is confirmed at once.
            self._orders[e.order_id] = _COMPLETED
            return Outcome.UNCHANGED, 0, 0
        claim = self._claim_of.get(e.order_id)
        if claim is None or claim.state != "pending":
            return Outcome.UNCHANGED, 0, 0
        claim.state = "confirmed"
        claim.settled_ts = e.ts
        self._pending[claim.beneficiary] -= claim.points
        self._confirmed[claim.beneficiary] += claim.points
        return Outcome.CONFIRMED, claim.slot, claim.points

    def _redeem(self, e: Redeem) -> tuple[Outcome, int]:
        if e.redemption_id in self._redemptions:
            return self._redemptions[e.redemption_id]
        prize = self.campaign.prize_by_id.get(e.prize)
        # cost_points < 2**31 and qty <= 1,000,000 (validated): the product fits in int64.
        cost = prize.cost_points * e.qty if prize else 0
        if prize is None:
            result = Outcome.UNKNOWN_PRIZE, 0
        elif self._confirmed[e.beneficiary] - self._redeemed[e.beneficiary] < cost:
            result = Outcome.INSUFFICIENT_POINTS, 0
        elif self._stock[prize.id] < e.qty:
            result = Outcome.OUT_OF_STOCK, 0
        else:
            self._stock[prize.id] -= e.qty
            self._redeemed[e.beneficiary] += cost
            result = Outcome.REDEEMED, cost
        self._redemptions[e.redemption_id] = result
        return result

    # -- views ------------------------------------------------------------------------------
    def claims(self) -> list[Claim]:
        return [Claim(c.order_id, c.region, c.slot, c.points, c.beneficiary, c.state, c.ts,
                      c.rank, c.settled_ts, c.revoked_ts)
                for c in self._claim_of.values()]

    def balances(self) -> dict[str, Balance]:
        who_all = set(self._pending) | set(self._confirmed) | set(self._redeemed)
        out = {w: Balance(self._pending[w], self._confirmed[w], self._redeemed[w])
               for w in who_all}
        return {w: b for w, b in out.items() if not b.is_zero()}

    def outcome_counts(self) -> dict[Outcome, int]:
        return dict(self._outcomes)

    def redemptions(self) -> dict[str, Outcome]:
        return {rid: outcome for rid, (outcome, _) in self._redemptions.items()}

    def stock(self) -> dict[str, int]:
        return dict(self._stock)

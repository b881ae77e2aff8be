"""`memory://`: the compiled in-process engine (rewardcore._engine.MemoryCore).

`memory://?orders=N` pre-sizes the order-id table for N orders, so a peak-day replay never
pauses to grow it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._engine import MemoryCore
from .._url import BackendURL
from ..campaign import Campaign
from ..engine import (
    CLAIM_STATES,
    Balance,
    Claim,
    Decisions,
    Engine,
    RegionStatus,
    Summary,
    claims_from_rows,
)
from ..events import Event
from ..outcomes import Outcome


class MemoryEngine(Engine):
    scheme = "memory"
    may_block = False

    def __init__(self, campaign: Campaign, expected_orders: int = 0) -> None:
        super().__init__(campaign)
        self._expected_orders = expected_orders
        self.core = MemoryCore(campaign, expected_orders)

    @classmethod
    def from_url(cls, campaign: Campaign, url: str) -> Engine:
        u = BackendURL(url, known=("orders",))
        if u.netloc or u.has_path:  # memory:///dir is the durable engine's (the registry's)
            raise u.error("memory:// takes no host or path (durable mode is "
                          "memory:///path/to/dir: three slashes, an absolute path)")
        return cls(campaign, u.int("orders", 0))

    def apply(self, events: Sequence[Event]) -> Decisions:
        batch = events if type(events) is list else list(events)
        return Decisions(*self.core.apply(batch))

    def prepare(self, events: list[Event]) -> None:
        """Check a batch (EventError naming the event and field) without changing anything;
        `commit` applies it. The durable engine logs a batch between the two."""
        self.core.prepare(events)

    def commit(self) -> Decisions:
        return Decisions(*self.core.commit())

    def reset(self) -> None:
        self.core.reset(self._expected_orders)

    # -- views ------------------------------------------------------------------------------
    def claims(self) -> list[Claim]:
        return claims_from_rows(self.core.claim_rows())

    def balances(self) -> dict[str, Balance]:
        names, pending, confirmed, redeemed = self.core.balance_rows()
        out = {}
        columns = (names, pending.tolist(), confirmed.tolist(), redeemed.tolist())
        for name, p, c, r in zip(*columns, strict=True):
            if p or c or r:
                out[name] = Balance(p, c, r)
        return out

    def balance(self, beneficiary: str) -> Balance:
        return Balance(*self.core.balance_of(beneficiary))

    def outcome_counts(self) -> dict[Outcome, int]:
        counts = self.core.outcome_count_array()
        return {o: int(counts[o]) for o in Outcome if counts[o]}

    def redemptions(self) -> dict[str, Outcome]:
        return {rid: Outcome(o) for rid, o in self.core.redemption_items().items()}

    def stock(self) -> dict[str, int]:
        left = self.core.stock_array()
        return {p.id: int(left[k]) for k, p in enumerate(self.campaign.prizes)}

    def region_status(self, code: int) -> RegionStatus | None:
        counts = self.core.region_counts(code)
        if counts is None:
            return None
        slots, taken, remaining = counts
        tiers = tuple((t.upto, t.points) for t in self.campaign.region_by_code[code].tiers)
        return RegionStatus(code, slots, taken, remaining, tiers)

    def summary(self) -> Summary:
        # From the core's counters and arrays: microseconds, whatever the number of orders.
        core = self.core
        n_claims = int(core.outcome_count_array()[Outcome.AWARDED])  # one claim per award
        states = np.bincount(core.a_c_state[:n_claims], minlength=len(CLAIM_STATES))
        _, pending, confirmed, redeemed = core.balance_rows()
        left = self.campaign.region_slots - core.a_used + core.a_heap_len
        stock = core.stock_array()
        return Summary(
            budget_used=core.awarded_points_total, slots_left=tuple(left.tolist()),
            stock={p.id: int(stock[k]) for k, p in enumerate(self.campaign.prizes)},
            claims={s: int(states[k]) for k, s in enumerate(CLAIM_STATES)},
            points={"pending": int(pending.sum()), "confirmed": int(confirmed.sum()),
                    "redeemed": int(redeemed.sum())},
            beneficiaries=int(np.count_nonzero((pending != 0) | (confirmed != 0))))

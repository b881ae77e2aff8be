"""The engine interface every backend implements, and the records it hands out.

A backend provides the primitive views (claims, balances, outcome counts, redemptions);
the exported state of DESIGN.md is assembled here once, so every engine exports alike.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import msgspec
import numpy as np
import orjson

from .campaign import Campaign
from .codec import DEFAULT_BATCH
from .events import Event, Redeem
from .outcomes import PLACED_OUTCOMES, Outcome

ClaimState = Literal["pending", "confirmed", "revoked"]
CLAIM_STATES: tuple[ClaimState, ...] = ("pending", "confirmed", "revoked")


class Claim(msgspec.Struct, frozen=True):
    """A slot won by an order. `ts` is the order's time, kept so winners can be checked;
    `rank` the order's place among the region's orders that reached slot choice (1-based);
    `settled_ts` when it was confirmed (the `completed` event's ts, or the placed event's when
    it was confirmed at once: settle_on = placed, or completed before it was placed) and
    `revoked_ts` when it was revoked (the `closed` event's ts); 0 where that did not happen."""

    order_id: str
    region: int
    slot: int
    points: int
    beneficiary: str
    state: ClaimState
    ts: int
    rank: int = 0
    settled_ts: int = 0
    revoked_ts: int = 0


def claims_from_rows(rows: Sequence[Any]) -> list[Claim]:
    """Claims from a compiled core's claim_rows() columns (lists or numpy arrays, in the
    order of Claim's fields)."""
    columns = [c.tolist() if isinstance(c, np.ndarray) else c for c in rows]
    return [Claim(*row) for row in zip(*columns, strict=True)]


class Balance(msgspec.Struct, frozen=True):
    pending: int = 0
    confirmed: int = 0
    redeemed: int = 0

    @property
    def available(self) -> int:
        """Confirmed points not yet spent: what a redemption may use."""
        return self.confirmed - self.redeemed

    def is_zero(self) -> bool:
        return not (self.pending or self.confirmed or self.redeemed)


class RegionStatus(msgspec.Struct, frozen=True):
    code: int
    slots: int
    taken: int  # non-revoked claims
    remaining: int  # slots that can still be awarded (never used + released)
    tiers: tuple[tuple[int, int], ...]  # (upto, points)


class Decisions:
    """Compact decisions for a batch: one row per event, in the batch's order.

    `outcome` holds `Outcome` codes; `slot` and `points` describe the claim that was
    awarded, revoked or confirmed (0 otherwise; for a redemption, `points` is what it cost).
    `rank` is, for a `placed` event that reached slot choice (awarded, sold_out,
    budget_exhausted), its 1-based place among the region's orders that did; 0 for every
    other event, a duplicate `placed` included (it did not reach slot choice; the claim of the
    first delivery keeps its rank).
    """

    __slots__ = ("outcome", "slot", "points", "rank")

    def __init__(self, outcome: np.ndarray, slot: np.ndarray, points: np.ndarray,
                 rank: np.ndarray | None = None) -> None:
        self.outcome = outcome
        self.slot = slot
        self.points = points
        self.rank = np.zeros(len(outcome), np.int64) if rank is None else rank

    @classmethod
    def empty(cls, n: int) -> Decisions:
        return cls(np.zeros(n, np.uint8), np.zeros(n, np.int32), np.zeros(n, np.int32),
                   np.zeros(n, np.int64))

    def __len__(self) -> int:
        return len(self.outcome)

    def __getitem__(self, i: int) -> tuple[Outcome, int, int]:
        return Outcome(int(self.outcome[i])), int(self.slot[i]), int(self.points[i])

    def counts(self) -> dict[str, int]:
        """Outcome label -> how many events of this batch had it."""
        codes = np.bincount(self.outcome, minlength=len(Outcome))
        return {o.label: int(codes[o]) for o in Outcome if codes[o]}


class Engine(abc.ABC):
    """A claim engine for one campaign. Not thread-safe; one engine per process or worker."""

    #: URL scheme(s) this engine answers to, e.g. "memory".
    scheme: ClassVar[str]
    #: Events per batch a streaming caller (`rewardcore replay`) should use. In-process
    #: engines want batches whose decoded objects are still in cache (see codec.DEFAULT_BATCH);
    #: engines that pay per batch (an fsync, a lock, a round trip) want larger ones.
    preferred_batch: ClassVar[int] = DEFAULT_BATCH

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign

    @classmethod
    def from_url(cls, campaign: Campaign, url: str) -> Engine:
        """Open the engine a backend URL names; the default ignores everything but the scheme."""
        return cls(campaign)

    # -- the hot path -----------------------------------------------------------------------
    @abc.abstractmethod
    def apply(self, events: Sequence[Event]) -> Decisions:
        """Apply a batch of decoded events in order; one decision per event."""

    def redeem(
        self, redemption_id: str, beneficiary: str, prize: str, qty: int = 1, ts: int = 0
    ) -> Outcome:
        """Redeem points for a prize; idempotent by redemption_id."""
        ev = Redeem(redemption_id=redemption_id, beneficiary=beneficiary, prize=prize, qty=qty,
                    ts=ts)
        return Outcome(int(self.apply([ev]).outcome[0]))

    # -- views ------------------------------------------------------------------------------
    @abc.abstractmethod
    def claims(self) -> list[Claim]:
        """Every claim ever created, revoked ones too, in no particular order."""

    @abc.abstractmethod
    def balances(self) -> dict[str, Balance]:
        """Every beneficiary with a non-zero figure."""

    @abc.abstractmethod
    def outcome_counts(self) -> dict[Outcome, int]:
        """How many `placed` events had each outcome."""

    @abc.abstractmethod
    def redemptions(self) -> dict[str, Outcome]:
        """Each redemption_id and its (first) outcome."""

    @abc.abstractmethod
    def stock(self) -> dict[str, int]:
        """Prize id -> units left."""

    def balance(self, beneficiary: str) -> Balance:
        return self.balances().get(beneficiary, Balance())

    def region_status(self, code: int) -> RegionStatus | None:
        """Slots, taken and remaining for one region; None when it is not a reward region."""
        region = self.campaign.region_by_code.get(code)
        if region is None:
            return None
        taken = 0
        ever_used: set[int] = set()
        for c in self.claims():
            if c.region == code:
                ever_used.add(c.slot)
                taken += c.state != "revoked"
        # A revoked slot comes back only under on_close = "release".
        if self.campaign.releases:
            remaining = region.slots - taken
        else:
            remaining = region.slots - len(ever_used)
        return RegionStatus(code, region.slots, taken, remaining,
                            tuple((t.upto, t.points) for t in region.tiers))

    def claims_of(self, beneficiary: str) -> list[Claim]:
        return sorted((c for c in self.claims() if c.beneficiary == beneficiary),
                      key=lambda c: (c.ts, c.order_id))

    def winners(self, region: int | None = None) -> list[Claim]:
        """Non-revoked claims by region and slot: who was within the first N."""
        rows = [c for c in self.claims()
                if c.state != "revoked" and (region is None or c.region == region)]
        return sorted(rows, key=lambda c: (c.region, c.slot))

    def export_state(self) -> dict[str, Any]:
        """The exported state of DESIGN.md (keys sorted when serialised)."""
        claims = sorted(self.claims(), key=lambda c: c.order_id)
        counts = self.outcome_counts()
        return {
            "balances": {
                who: {"confirmed": b.confirmed, "pending": b.pending, "redeemed": b.redeemed}
                for who, b in sorted(self.balances().items()) if not b.is_zero()
            },
            "claims": [
                {"beneficiary": c.beneficiary, "order_id": c.order_id, "points": c.points,
                 "rank": c.rank, "region": c.region, "slot": c.slot, "state": c.state}
                for c in claims
            ],
            "outcomes": {o.label: counts[o] for o in PLACED_OUTCOMES if counts.get(o)},
            "redemptions": {rid: o.label for rid, o in sorted(self.redemptions().items())},
        }

    # -- lifecycle --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all state of this campaign (for backends that keep it outside the process)."""
        raise NotImplementedError(f"{type(self).__name__} cannot reset")

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release resources; the in-process engines hold none."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dump_state(state: dict[str, Any]) -> bytes:
    """Serialise exported state canonically: sorted keys, one trailing newline."""
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS) + b"\n"


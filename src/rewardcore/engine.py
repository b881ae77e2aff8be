"""The engine interface every backend implements, and the records it hands out.

A backend provides the primitive views (claims, balances, outcome counts, redemptions);
the exported state of DESIGN.md is assembled here once, so every engine exports alike.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import msgspec
import numpy as np
import orjson

from ._url import BackendURL
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


class Summary(msgspec.Struct, frozen=True):
    """The campaign's figures an operator watches, as the engine holds them now (the daemon
    exports them as gauges at scrape time). A field is None when this engine cannot tell it
    without reading every claim."""

    slots_left: tuple[int, ...]  # slots each reward region can still award, campaign order
    stock: dict[str, int]  # prize id -> units left
    budget_used: int | None = None  # points of non-revoked claims: what the budget measures
    claims: dict[ClaimState, int] | None = None  # claims in each state
    points: dict[str, int] | None = None  # "pending", "confirmed", "redeemed": summed
    beneficiaries: int | None = None  # beneficiaries holding pending or confirmed points


class Decision(NamedTuple):
    """One event's decision (a row of `Decisions`)."""

    outcome: Outcome
    slot: int
    points: int


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

    def __getitem__(self, i: int) -> Decision:
        return Decision(Outcome(int(self.outcome[i])), int(self.slot[i]), int(self.points[i]))

    def __iter__(self) -> Iterator[Decision]:
        """The rows in batch order (the arrays are faster for whole batches)."""
        for o, s, p in zip(self.outcome.tolist(), self.slot.tolist(), self.points.tolist(),
                           strict=True):
            yield Decision(Outcome(o), s, p)

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

    # -- capabilities, declared by each engine class (read, never probed) ----------------
    #: Calls can wait (network, fsync, a cross-process lock): a server runs them on a thread.
    may_block: ClassVar[bool] = True
    #: Other processes opening the same URL work on the same state (replay --workers, a
    #: consumer group of daemons).
    shares_state: ClassVar[bool] = False
    #: The state outlives the process (a server, a segment, a directory): `reset` deletes it.
    keeps_state: ClassVar[bool] = False
    #: Records how far a replay got with each batch (see `Resumable`).
    resumable: ClassVar[bool] = False

    _opened_url: str = ""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign

    @property
    def url(self) -> str:
        """The backend URL that opens this engine's state again (in another process too)."""
        return self._opened_url or f"{self.scheme}://"

    @property
    def open_note(self) -> str | None:
        """What opening found worth telling the user (a recovery), or None."""
        return None

    def stats(self) -> dict[str, Any]:
        """Engine-specific counters for benchmarks (lock waits and the like); {} if none."""
        return {}

    @classmethod
    def from_url(cls, campaign: Campaign, url: str) -> Engine:
        """Open the engine a backend URL names; the default takes no host, path or parameters."""
        u = BackendURL(url, known=())
        if u.netloc or u.has_path:
            raise u.error(f"{u.scheme}:// takes no host or path")
        return cls(campaign)

    @classmethod
    def open_to_reset(cls, campaign: Campaign, url: str) -> Engine:
        """Open the state a backend URL names only to `reset()` it (reset_backend). The
        default is from_url; an engine that refuses to open state it must not use (a
        durable directory of another campaign) opens it here so that reset can clear it."""
        return cls.from_url(campaign, url)

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

    def summary(self) -> Summary:
        """Budget used, slots left per region, stock, claims by state, points and
        beneficiaries. This default reads every claim; engines with counters override it."""
        claims = self.claims()
        row = {r.code: k for k, r in enumerate(self.campaign.regions)}
        taken = [0] * len(row)
        ever_used: list[set[int]] = [set() for _ in row]
        states = dict.fromkeys(CLAIM_STATES, 0)
        used = 0
        for c in claims:
            states[c.state] += 1
            ever_used[row[c.region]].add(c.slot)
            if c.state != "revoked":
                taken[row[c.region]] += 1
                used += c.points
        # A revoked slot comes back only under on_close = "release" (as in region_status).
        left = tuple(r.slots - (taken[k] if self.campaign.releases else len(ever_used[k]))
                     for k, r in enumerate(self.campaign.regions))
        balances = self.balances().values()
        points = {"pending": sum(b.pending for b in balances),
                  "confirmed": sum(b.confirmed for b in balances),
                  "redeemed": sum(b.redeemed for b in balances)}
        holders = sum(1 for b in balances if b.pending or b.confirmed)
        return Summary(left, self.stock(), used, states, points, holders)

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


Position = tuple[int, list[int], int, int, int]
"""Where a replay got: (partitions, the partitions this batch covers, input offset after
it, lines before that offset, CRC-32C of the input before that offset)."""


class Resumable(abc.ABC):
    """An engine that records, atomically with each batch, how far a replay got, so a
    replay of the same input resumes after a crash (rewardcore.replay.resume)."""

    resumable: ClassVar[bool] = True

    @abc.abstractmethod
    def apply_at(self, events: Sequence[Event], pos: Position | None,
                 jsonl: bytes | memoryview | None = None) -> Decisions:
        """`apply`, recording `pos` with the batch; `jsonl` is the batch's JSON lines."""

    @abc.abstractmethod
    def replay_positions(self) -> tuple[int, list[tuple[int, int, int]]]:
        """(partitions, [(offset, line, crc)] per partition) of the last replay recorded."""


def dump_state(state: dict[str, Any]) -> bytes:
    """Serialise exported state canonically: sorted keys, one trailing newline."""
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS) + b"\n"


"""`memory://`: the compiled in-process engine (rewardcore._engine.MemoryCore).

`memory://?orders=N` pre-sizes the order-id table for N orders, so a peak-day replay never
pauses to grow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from .._engine import MemoryCore
from ..campaign import Campaign
from ..engine import Balance, Claim, Decisions, Engine, RegionStatus, claims_from_rows
from ..errors import ConfigError
from ..events import Event
from ..outcomes import Outcome


def _int_param(url: str, query: dict[str, list[str]], name: str, default: int) -> int:
    if name not in query:
        return default
    try:
        value = int(query[name][-1])
    except ValueError:
        raise ConfigError(f"backend URL {url!r}: {name} must be an integer") from None
    if value < 0:
        raise ConfigError(f"backend URL {url!r}: {name} must be >= 0")
    return value


class MemoryEngine(Engine):
    scheme = "memory"

    def __init__(self, campaign: Campaign, expected_orders: int = 0) -> None:
        super().__init__(campaign)
        self._expected_orders = expected_orders
        self.core = MemoryCore(campaign, expected_orders)

    @classmethod
    def from_url(cls, campaign: Campaign, url: str) -> Engine:
        parts = urlsplit(url)
        if not parts.netloc and parts.path not in ("", "/"):
            from .durable import DurableEngine  # memory:///path/to/dir: durable mode

            return DurableEngine.from_url(campaign, url)
        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                f"backend URL {url!r}: memory:// takes no host or path (durable mode is "
                "memory:///path/to/dir: three slashes, an absolute path)"
            )
        query = parse_qs(parts.query)
        return cls(campaign, _int_param(url, query, "orders", 0))

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

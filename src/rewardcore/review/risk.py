"""Risk findings: patterns in a campaign's orders that look like gaming the rules.

The campaigns this project comes from were gamed with sock-puppet accounts and padded or
throw-away orders. Four patterns are looked for (docs/campaign-checks.md, "Risk findings"):

- `risk-closed-after-winning`: a beneficiary whose winning orders are mostly closed later
  (slots grabbed with orders never meant to stick). From the claims alone, so `review`
  finds it on any backend.
- `risk-min-paid-cluster`: orders piled up just above `min_paid_cents` (padded to pass the
  minimum), against the orders just below it.
- `risk-merchant-burst`: one merchant's agents placing most of that merchant's orders in the
  window's first minute, taking the early slots.
- `risk-shared-merchant`: in a campaign that pays agents, many winning agents of one
  merchant (accounts made to get round the per-beneficiary caps).

The last three need the order stream (who placed what, for how much, when): `simulate` has
it, `review --events FILE` reads it. Each threshold is a field of `RiskConfig`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import msgspec

from ..campaign import Campaign
from ..engine import Claim, Decisions
from ..events import Event, Placed
from ..outcomes import Outcome
from .lint import Finding

_MINUTE = 60_000


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the risk findings; the defaults are documented in campaign-checks.md."""

    #: risk-closed-after-winning: a beneficiary with at least this many claims ...
    closed_min_claims: int = 5
    #: ... of which at least this share were revoked by a closed order ...
    closed_share: float = 0.5
    #: ... and so many that the campaign's own close rate makes it this unlikely for any
    #: beneficiary at all (a binomial tail, Bonferroni-corrected over the beneficiaries
    #: tested): ordinary bad luck is not flagged
    closed_p: float = 0.001
    #: risk-min-paid-cluster: the band above (and below) min_paid_cents, as a share of it
    min_paid_band: float = 0.05
    #: ... flagged when the band above holds at least this many times the orders below ...
    min_paid_ratio: float = 3.0
    #: ... and at least this many orders
    min_paid_orders: int = 30
    #: risk-merchant-burst: the window's first this many seconds
    burst_seconds: int = 60
    #: ... a merchant with at least this many orders in them ...
    burst_min_orders: int = 20
    #: ... that are at least this share of all its orders in the window
    burst_share: float = 0.6
    #: risk-shared-merchant: a merchant with at least this many agents holding claims
    shared_agents: int = 20


class OrderStream:
    """What the stream-based checks need, gathered batch by batch (a few counters, not the
    orders): paid amounts near the minimum, orders per merchant in the first minute and in
    the whole window, and each agent's merchant."""

    def __init__(self, campaign: Campaign, config: RiskConfig | None = None) -> None:
        self.campaign = campaign
        self.config = config or RiskConfig()
        cfg = self.config
        floor = campaign.info.min_paid_cents
        self.floor = floor
        self.lo = floor - max(1, int(floor * cfg.min_paid_band))
        self.hi = floor + max(1, int(floor * cfg.min_paid_band))
        self.below = 0  # paid in [lo, floor)
        self.above = 0  # paid in [floor, hi)
        self.priced = 0  # orders in the window into a reward region
        self.burst_end = campaign.starts_ms + cfg.burst_seconds * 1000
        self.early: Counter[str] = Counter()
        self.in_window: Counter[str] = Counter()
        self.early_agents: defaultdict[str, set[str]] = defaultdict(set)
        self.merchant_of: dict[str, str] = {}
        #: orders into each reward region inside the window, for the report's region table
        self.orders_by_region: Counter[int] = Counter()

    def add(self, events: Sequence[Event], decisions: Decisions | None = None) -> None:
        """Count a batch. With the engine's decisions, redelivered orders (`duplicate`) are
        left out; without them (a stream read back from a file) they count again, which
        the thresholds allow for (redeliveries are a few percent)."""
        c = self.campaign
        start, end, regions = c.starts_ms, c.ends_ms, c.region_by_code
        floor, lo, hi, burst_end = self.floor, self.lo, self.hi, self.burst_end
        dup = (decisions.outcome == Outcome.DUPLICATE).tolist() if decisions is not None \
            else None
        for i, ev in enumerate(events):
            if type(ev) is not Placed or (dup is not None and dup[i]):
                continue
            self.merchant_of.setdefault(ev.agent_id, ev.merchant_id)
            if not start <= ev.ts < end or ev.region not in regions:
                continue
            self.priced += 1
            self.orders_by_region[ev.region] += 1
            self.in_window[ev.merchant_id] += 1
            if ev.ts < burst_end:
                self.early[ev.merchant_id] += 1
                self.early_agents[ev.merchant_id].add(ev.agent_id)
            if floor and lo <= ev.paid_cents < hi:
                if ev.paid_cents < floor:
                    self.below += 1
                else:
                    self.above += 1


def _binomial_tail(n: int, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def _closed_after_winning(claims: Sequence[Claim], who: str,
                          cfg: RiskConfig) -> list[Finding]:
    total: Counter[str] = Counter()
    revoked: Counter[str] = Counter()
    for c in claims:
        total[c.beneficiary] += 1
        revoked[c.beneficiary] += c.state == "revoked"
    rate = sum(revoked.values()) / len(claims) if claims else 0.0
    tested = [b for b, n in total.items() if n >= cfg.closed_min_claims]
    alpha = cfg.closed_p / max(1, len(tested))
    flagged = sorted(((b, revoked[b], total[b]) for b in tested
                      if revoked[b] >= cfg.closed_share * total[b]
                      and _binomial_tail(total[b], revoked[b], rate) < alpha),
                     key=lambda r: (-r[1], r[0]))
    if not flagged:
        return []
    shown = "; ".join(f"{b}: {r:,} of {n:,}" for b, r, n in flagged[:5])
    more = f" and {len(flagged) - 5:,} more" if len(flagged) > 5 else ""
    return [Finding(
        "warning", "risk-closed-after-winning",
        f"{len(flagged):,} {who}(s) had at least {cfg.closed_share:.0%} of their winning orders "
        f"closed after winning, far above the campaign's {rate:.1%}: {shown}{more}; slots "
        "taken by orders that were never meant to stick",
        subject=flagged[0][0],
        data={"close_rate": rate,
              "beneficiaries": [{"beneficiary": b, "revoked": r, "claims": n}
                                for b, r, n in flagged[:100]]})]


def _min_paid_cluster(s: OrderStream, cfg: RiskConfig) -> list[Finding]:
    if not s.floor or s.above < cfg.min_paid_orders \
            or s.above < cfg.min_paid_ratio * max(s.below, 1):
        return []
    return [Finding(
        "warning", "risk-min-paid-cluster",
        f"{s.above:,} orders paid between {s.floor:,} and {s.hi - 1:,} cents, just above "
        f"min_paid_cents ({s.floor:,}), against {s.below:,} just below it ({s.lo:,} to "
        f"{s.floor - 1:,}): orders look padded to pass the minimum",
        data={"above": s.above, "below": s.below, "min_paid_cents": s.floor})]


def _merchant_burst(s: OrderStream, cfg: RiskConfig) -> list[Finding]:
    flagged = sorted(((m, n, s.in_window[m]) for m, n in s.early.items()
                      if n >= cfg.burst_min_orders and n >= cfg.burst_share * s.in_window[m]),
                     key=lambda r: (-r[1], r[0]))
    if not flagged:
        return []
    shown = "; ".join(f"{m}: {n:,} of its {t:,} orders by {len(s.early_agents[m]):,} agent(s)"
                      for m, n, t in flagged[:5])
    more = f" and {len(flagged) - 5:,} more" if len(flagged) > 5 else ""
    return [Finding(
        "warning", "risk-merchant-burst",
        f"{len(flagged):,} merchant(s) placed at least {cfg.burst_share:.0%} of their orders in "
        f"the window's first {cfg.burst_seconds} s (at least {cfg.burst_min_orders} orders "
        f"each): {shown}{more}; a burst at the opening takes the early slots",
        subject=flagged[0][0],
        data={"merchants": [{"merchant": m, "early": n, "orders": t,
                             "agents": len(s.early_agents[m])} for m, n, t in flagged[:100]]})]


def _shared_merchant(s: OrderStream, claims: Sequence[Claim], cfg: RiskConfig) -> list[Finding]:
    agents: defaultdict[str, set[str]] = defaultdict(set)
    for c in claims:
        if c.state != "revoked":
            m = s.merchant_of.get(c.beneficiary)
            if m is not None:
                agents[m].add(c.beneficiary)
    flagged = sorted(((m, len(a)) for m, a in agents.items() if len(a) >= cfg.shared_agents),
                     key=lambda r: (-r[1], r[0]))
    if not flagged:
        return []
    shown = "; ".join(f"{m}: {n:,} agents" for m, n in flagged[:5])
    more = f" and {len(flagged) - 5:,} more" if len(flagged) > 5 else ""
    return [Finding(
        "warning", "risk-shared-merchant",
        f"{len(flagged):,} merchant(s) have at least {cfg.shared_agents} agents holding "
        f"claims: {shown}{more}; many accounts of one merchant get round the "
        "per-beneficiary caps",
        subject=flagged[0][0],
        data={"merchants": [{"merchant": m, "agents": n} for m, n in flagged[:100]]})]


def risk_findings(campaign: Campaign, claims: Sequence[Claim], stream: OrderStream | None = None,
                  config: RiskConfig | None = None) -> list[Finding]:
    """The risk findings of a campaign's claims (and, when given, of its order stream)."""
    cfg = stream.config if stream is not None else (config or RiskConfig())
    who = "merchant" if campaign.pays_merchant else "agent"
    out = _closed_after_winning(claims, who, cfg)
    if stream is not None:
        out += _min_paid_cluster(stream, cfg)
        out += _merchant_burst(stream, cfg)
        if not campaign.pays_merchant:
            out += _shared_merchant(stream, claims, cfg)
    return out


RISK_CODES = ("risk-closed-after-winning", "risk-min-paid-cluster", "risk-merchant-burst",
              "risk-shared-merchant")

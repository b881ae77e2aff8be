"""Races: several processes hammer the same hot regions of one campaign at once, on one Redis
and on a 3-master cluster; the invariants of DESIGN.md hold afterwards, and every placed
event is counted exactly once."""

from __future__ import annotations

import multiprocessing as mp
import random
from collections import Counter, defaultdict

import pytest

from rewardcore import Campaign, Closed, Completed, Engine, Placed, Redeem, open_engine

from .campaigns import IN_WINDOW, make_campaign

PROCS = 8


def hot_campaign(**settings: object) -> Campaign:
    """Six hot regions with 1 to 50 slots, two tiers where they fit."""
    regions = []
    for code, slots in ((1, 1), (2, 2), (3, 5), (4, 10), (5, 25), (6, 50)):
        tiers = ((slots, 7),) if slots < 4 else ((slots // 2, 3), (slots, 9))
        regions.append((code, slots, tiers))
    base: dict[str, object] = dict(on_close="release", settle_on="completed", budget_points=400,
                                   max_claims_per_beneficiary=6,
                                   max_claims_per_beneficiary_per_region=2)
    base.update(settings)
    return make_campaign(regions=regions, prizes=(("mug", 5, 20),), **base)


def stream(worker: int, n: int, seed: int) -> list:
    """Worker `worker`'s events: its own orders, redeliveries and closes of everybody's
    orders (ids are shared on purpose), completions and a few redemptions."""
    rng = random.Random(seed * 1000 + worker)
    out: list = []
    for k in range(n):
        r = rng.random()
        oid = f"o{rng.randrange(n * PROCS // 2)}"  # shared ids: cross-process duplicates
        if r < 0.7:
            out.append(Placed(order_id=oid, merchant_id=f"m{rng.randrange(3)}",
                              agent_id=f"a{rng.randrange(12)}", region=rng.randint(0, 6),
                              paid_cents=100, ts=IN_WINDOW + k))
        elif r < 0.85:
            out.append(Closed(order_id=oid, ts=IN_WINDOW + k))
        elif r < 0.97:
            out.append(Completed(order_id=oid, ts=IN_WINDOW + k))
        else:
            out.append(Redeem(redemption_id=f"r{worker}-{k}", beneficiary=f"a{rng.randrange(12)}",
                              prize="mug", ts=IN_WINDOW + k))
    return out


def _worker(url: str, toml: str, worker: int, n: int, seed: int, barrier) -> None:
    from rewardcore import parse_campaign

    campaign = parse_campaign(toml, "race.toml")
    events = stream(worker, n, seed)
    engine = open_engine(campaign, url)
    barrier.wait()
    rng = random.Random(worker)
    pos = 0
    while pos < len(events):
        step = rng.randint(1, 40)
        engine.apply(events[pos:pos + step])
        pos += step
    engine.close()


def check_invariants(engine: Engine, campaign: Campaign) -> None:
    """DESIGN.md's invariants on an engine's views (and the Redis sequencer's own counts)."""
    claims = engine.claims()
    info = campaign.info
    live = [c for c in claims if c.state != "revoked"]
    by_region: dict[int, list[int]] = defaultdict(list)
    for c in live:
        by_region[c.region].append(c.slot)
    for code, slots in by_region.items():
        region = campaign.region_by_code[code]
        assert len(slots) == len(set(slots)), f"region {code}: a slot awarded twice {slots}"
        assert len(slots) <= region.slots, f"region {code} over its slots"
        assert all(1 <= s <= region.slots for s in slots)
        status = engine.region_status(code)
        assert status is not None and status.taken == len(slots)
    for c in claims:
        assert c.points == campaign.region_by_code[c.region].points_for(c.slot)
    if info.budget_points:
        assert sum(c.points for c in live) <= info.budget_points, "budget exceeded"
    held = Counter(c.beneficiary for c in live)
    if info.max_claims_per_beneficiary:
        assert max(held.values(), default=0) <= info.max_claims_per_beneficiary
    if info.max_claims_per_beneficiary_per_region:
        per_region = Counter((c.beneficiary, c.region) for c in live)
        assert max(per_region.values(), default=0) <= info.max_claims_per_beneficiary_per_region
    # balances = claims - redemptions
    pending: Counter[str] = Counter()
    confirmed: Counter[str] = Counter()
    for c in live:
        (pending if c.state == "pending" else confirmed)[c.beneficiary] += c.points
    balances = engine.balances()
    for who in set(pending) | set(confirmed) | set(balances):
        b = balances.get(who)
        assert (b.pending if b else 0) == pending[who], f"{who}: pending balance"
        assert (b.confirmed if b else 0) == confirmed[who], f"{who}: confirmed balance"
    # stock and redeemed points went down together: points spent = units taken x cost
    stock = engine.stock()
    assert all(v >= 0 for v in stock.values())
    taken_points = sum((p.stock - stock[p.id]) * p.cost_points for p in campaign.prizes)
    assert sum(b.redeemed for b in balances.values()) == taken_points
    if any(o.label == "redeemed" for o in engine.redemptions().values()):
        assert taken_points > 0
    core_consistent(engine, live)


def core_consistent(engine: Engine, live: list) -> None:
    """The sequencer's own counts equal the claims: budget spent, claims per beneficiary,
    each region's taken slots."""
    from rewardcore.backends.redis import _BENEFICIARY, RedisEngine

    if not isinstance(engine, RedisEngine):
        return
    node = engine.nodes.node_of(engine._k_scalars)
    if engine.budget:
        spent = int(engine.nodes.command(node, "HGET", engine._k_scalars, "spent") or 0)
        assert spent == sum(c.points for c in live)
    whos = engine._hgetall_many([engine._k_whos], "read beneficiaries", raw=True)[0]
    held = Counter(c.beneficiary for c in live)
    for who, rec in whos.items():
        assert _BENEFICIARY.unpack_from(rec)[3] == held[who.decode()], f"{who}: claims held"
    taken = Counter(c.region for c in live)
    for region in engine.campaign.regions:
        assert engine.region_status(region.code).taken == taken[region.code], region.code


@pytest.mark.slow
@pytest.mark.parametrize("settings", [
    {},
    {"on_close": "forfeit", "settle_on": "placed", "budget_points": 0,
     "max_claims_per_beneficiary": 0},
], ids=["release-capped", "forfeit-open"])
@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_processes_racing_keep_the_invariants(request, server, settings):
    url = request.getfixturevalue(server)
    campaign = hot_campaign(**settings)
    toml = _toml(campaign)
    n = 300
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(PROCS)
    procs = [ctx.Process(target=_worker, args=(url, toml, w, n, 7, barrier))
             for w in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    engine = open_engine(campaign, url)
    try:
        placed = sum(isinstance(e, Placed) for w in range(PROCS) for e in stream(w, n, 7))
        assert sum(engine.outcome_counts().values()) == placed  # none lost, none twice
        check_invariants(engine, campaign)
        assert any(c.state != "revoked" for c in engine.claims())
    finally:
        engine.close()


def _toml(campaign: Campaign) -> str:
    from .campaigns import campaign_toml

    info = campaign.info
    regions = [(r.code, r.slots, tuple((t.upto, t.points) for t in r.tiers))
               for r in campaign.regions]
    prizes = [(p.id, p.cost_points, p.stock) for p in campaign.prizes]
    return campaign_toml(regions=regions, prizes=prizes, beneficiary=info.beneficiary,
                         on_close=info.on_close, settle_on=info.settle_on,
                         budget_points=info.budget_points,
                         max_claims_per_beneficiary=info.max_claims_per_beneficiary,
                         max_claims_per_beneficiary_per_region=(
                             info.max_claims_per_beneficiary_per_region))

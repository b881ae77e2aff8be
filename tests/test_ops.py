"""Operating the daemon: the engine summary behind the campaign gauges, the deploy/ files
checked by promtool, and every metric the rules and the dashboard name exported by a started
daemon."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rewardcore import Campaign, Engine
from rewardcore.codec import decode_jsonl
from rewardcore.engine import Summary
from rewardcore.traffic import TrafficShape, generate

from .campaigns import make_campaign


def _campaign(**settings: object) -> Campaign:
    regions = [(code, 3, ((1, 5), (3, 10))) for code in range(1, 31)]
    regions.append((99, 10_000, ((10_000, 1),)))  # never sells out
    return make_campaign(regions, (("mug", 10, 40), ("tv", 200, 2)), **settings)


@pytest.mark.parametrize("settings", [
    {"on_close": "release", "budget_points": 400},
    {"on_close": "forfeit", "settle_on": "placed"},
], ids=["release-budget", "forfeit-placed"])
def test_summary_equals_the_one_read_from_every_claim(
        make_engine: Callable[[Campaign], Engine], settings: dict[str, object]) -> None:
    """Each engine's cheap summary says what the default (which reads every claim and
    balance) says, on every field the engine reports."""
    campaign = _campaign(**settings)
    events, dead = decode_jsonl(b"".join(generate(campaign, TrafficShape(
        orders=3000, seed=3, participants=60, redeem_share=0.5, close_rate=0.1))))
    assert not dead
    engine = make_engine(campaign)
    for at in range(0, len(events), 500):
        engine.apply(events[at:at + 500])
    got = engine.summary()
    want = Engine.summary(engine)
    assert got.slots_left == want.slots_left
    assert got.stock == want.stock
    for name in ("budget_used", "claims", "points", "beneficiaries"):
        if getattr(got, name) is not None:  # None: not cheap on this engine
            assert getattr(got, name) == getattr(want, name), name
    # the scenario is not trivial: some regions sold out, some claims revoked, points spent
    assert 0 in want.slots_left and any(want.slots_left)
    assert want.claims and want.claims["revoked"] > 0
    assert want.points and want.points["redeemed"] > 0
    assert isinstance(got, Summary)

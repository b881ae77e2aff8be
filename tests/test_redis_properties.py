"""Property tests aimed at the Redis engine's batch protocol: long batches in which caps and
budgets bind, closes release slots, completions and redemptions interleave, so that the
sequencer walks long mixed batches in one call. Every per-event decision and the exported state
must equal the reference, on one Redis and on a 3-master cluster."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardcore import Campaign, open_engine

from .campaigns import make_campaign
from .events import closed, completed, placed, redeem

AGENTS = [f"a{i}" for i in range(5)]


@st.composite
def tight_campaigns(draw: st.DrawFn) -> Campaign:
    regions = []
    for code in range(1, draw(st.integers(2, 7)) + 1):
        slots = draw(st.integers(1, 6))
        regions.append((code, slots, ((max(1, slots // 2), draw(st.integers(0, 6))),
                                      (slots, draw(st.integers(1, 9))))
                        if slots > 1 else ((1, draw(st.integers(0, 9))),)))
    return make_campaign(
        regions=regions,
        prizes=(("p0", draw(st.integers(1, 10)), draw(st.integers(0, 4))),),
        on_close=draw(st.sampled_from(["release", "forfeit"])),
        settle_on=draw(st.sampled_from(["completed", "placed"])),
        budget_points=draw(st.sampled_from([0, 15, 40, 90])),
        max_claims_per_beneficiary=draw(st.sampled_from([0, 1, 2, 4])),
        max_claims_per_beneficiary_per_region=draw(st.sampled_from([0, 1, 2])),
    )


@st.composite
def long_streams(draw: st.DrawFn) -> list:
    n = draw(st.integers(20, 160))
    pool = draw(st.integers(5, 60))  # order ids repeat: redeliveries, closes of winners
    out = []
    for _ in range(n):
        oid = f"o{draw(st.integers(0, pool))}"
        kind = draw(st.sampled_from("ppppppccdr"))
        if kind == "p":
            out.append(placed(oid, draw(st.integers(1, 7)), draw(st.sampled_from(AGENTS))))
        elif kind == "c":
            out.append(closed(oid))
        elif kind == "d":
            out.append(completed(oid))
        else:
            out.append(redeem(f"r{draw(st.integers(0, 9))}", draw(st.sampled_from(AGENTS)),
                              "p0", draw(st.integers(1, 2))))
    return out


@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(campaign=tight_campaigns(), events=long_streams(), batch=st.sampled_from([7, 50, 1000]))
def test_long_batches_equal_reference(request, server, campaign, events, batch):
    url = request.getfixturevalue(server)
    engine = open_engine(campaign, url)
    engine.reset()
    ref = open_engine(campaign, "reference://")
    try:
        for k in range(0, len(events), batch):
            got, want = engine.apply(events[k:k + batch]), ref.apply(events[k:k + batch])
            assert np.array_equal(got.outcome, want.outcome), (k, got.outcome, want.outcome)
            assert np.array_equal(got.slot, want.slot)
            assert np.array_equal(got.points, want.points)
        assert engine.export_state() == ref.export_state()
        assert engine.stock() == ref.stock()
    finally:
        engine.close()

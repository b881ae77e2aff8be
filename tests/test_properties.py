"""Property tests: on random campaigns and event streams, every engine exports exactly the
reference engine's state (claims with their rank and timestamps, every decision with its
rank), and redelivery changes nothing but the duplicate count: each event delivered twice in
place, or the whole stream delivered a second time (an early `completed` is remembered)."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardcore import Campaign, Event, open_engine

from .campaigns import ENDS_MS, STARTS_MS, make_campaign
from .events import closed, completed, placed, redeem

ORDERS = [f"o{i}" for i in range(12)]
AGENTS = ["a0", "a1", "a2", "a3"]
MERCHANTS = ["m0", "m1", "m2"]


@st.composite
def campaigns(draw: st.DrawFn) -> Campaign:
    regions = []
    for code in range(1, draw(st.integers(1, 4)) + 1):
        slots = draw(st.integers(1, 5))
        uptos = sorted(draw(st.sets(st.integers(1, slots), min_size=1, max_size=3)))
        uptos[-1] = max(uptos[-1], slots)
        regions.append((code, slots, tuple((u, draw(st.integers(0, 12))) for u in uptos)))
    prizes = [(f"p{k}", draw(st.integers(1, 20)), draw(st.integers(0, 3)))
              for k in range(draw(st.integers(0, 2)))]
    return make_campaign(
        regions=regions,
        prizes=prizes,
        beneficiary=draw(st.sampled_from(["agent", "merchant"])),
        on_close=draw(st.sampled_from(["release", "forfeit"])),
        settle_on=draw(st.sampled_from(["completed", "placed"])),
        budget_points=draw(st.sampled_from([0, 0, 10, 25, 60])),
        min_paid_cents=draw(st.sampled_from([0, 50])),
        max_claims_per_beneficiary=draw(st.integers(0, 3)),
        max_claims_per_beneficiary_per_region=draw(st.integers(0, 2)),
    )


def event_strategy() -> st.SearchStrategy[Event]:
    order = st.sampled_from(ORDERS)
    ts = st.one_of(st.integers(STARTS_MS, ENDS_MS - 1), st.sampled_from([STARTS_MS - 1, ENDS_MS]))
    return st.one_of(
        st.builds(placed, order, st.integers(0, 5), st.sampled_from(AGENTS),
                  st.sampled_from(MERCHANTS), st.sampled_from([0, 49, 50, 500]), ts),
        st.builds(placed, order, st.integers(1, 4), st.sampled_from(AGENTS),
                  st.sampled_from(MERCHANTS), st.just(100)),
        st.builds(closed, order),
        st.builds(completed, order),
        st.builds(redeem, st.sampled_from(["r0", "r1", "r2", "r3"]),
                  st.sampled_from(AGENTS + MERCHANTS), st.sampled_from(["p0", "p1", "nope"]),
                  st.integers(1, 2)),
    )


streams = st.lists(event_strategy(), max_size=60)


def run(engine, events: list[Event], cuts: list[int]) -> dict:
    """Apply the stream in batches cut at `cuts`; every decision, then the exported state and
    the claims with their timestamps."""
    start = 0
    decisions: list[tuple[int, int, int, int]] = []
    for cut in sorted(set(c % (len(events) + 1) for c in cuts)) + [len(events)]:
        if cut > start:
            d = engine.apply(events[start:cut])
            decisions += zip(d.outcome.tolist(), d.slot.tolist(), d.points.tolist(),
                             d.rank.tolist(), strict=True)
            start = cut
    claims = sorted((c.order_id, c.rank, c.ts, c.settled_ts, c.revoked_ts)
                    for c in engine.claims())
    return {"decisions": decisions, "state": engine.export_state(), "stock": engine.stock(),
            "claims": claims}


def reference(campaign: Campaign, events: list[Event]) -> dict:
    return run(open_engine(campaign, "reference://"), events, [])


PROPERTY = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@PROPERTY
@given(campaign=campaigns(), events=streams, cuts=st.lists(st.integers(0, 60), max_size=4))
def test_engine_equals_reference(make_engine, engine_url, campaign, events, cuts):
    assert run(make_engine(campaign), events, cuts) == reference(campaign, events)


def _plus_duplicates(state: dict, n: int) -> dict:
    outcomes = Counter(state["outcomes"])
    outcomes["duplicate"] += n
    return {**state, "outcomes": {k: v for k, v in sorted(outcomes.items()) if v}}


@PROPERTY
@given(campaign=campaigns(), events=streams)
def test_each_event_delivered_twice_equals_once(make_engine, engine_url, campaign, events):
    once = reference(campaign, events)
    twice = run(make_engine(campaign), [e for ev in events for e in (ev, ev)], [7, 31])
    n_placed = sum(type(e).__name__ == "Placed" for e in events)
    del once["decisions"], twice["decisions"]  # the copies have outcomes of their own
    assert twice == {**once, "state": _plus_duplicates(once["state"], n_placed)}


@PROPERTY
@given(campaign=campaigns(), events=streams, cuts=st.lists(st.integers(0, 120), max_size=3))
def test_whole_stream_delivered_twice_equals_once(make_engine, engine_url, campaign, events,
                                                  cuts):
    once = reference(campaign, events)
    twice = run(make_engine(campaign), events + events, cuts)
    n_placed = sum(type(e).__name__ == "Placed" for e in events)
    assert twice["decisions"][: len(events)] == once["decisions"]
    del once["decisions"], twice["decisions"]
    assert twice == {**once, "state": _plus_duplicates(once["state"], n_placed)}

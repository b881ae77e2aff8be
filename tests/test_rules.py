"""One test per rule of DESIGN.md, run against every engine (see ENGINE_URLS in conftest)."""

from __future__ import annotations

import orjson
import pytest

from rewardcore import Balance, EventError, Outcome, dump_state

from .campaigns import ENDS_MS, IN_WINDOW, STARTS_MS, make_campaign
from .events import closed, completed, placed, redeem

Out = Outcome


def outcomes(engine, events):
    return [Outcome(int(o)) for o in engine.apply(events).outcome]


# -- placed: the checks in order ---------------------------------------------------------------


def test_awarded_claim_is_pending_until_completed(make_engine, engine_url):
    e = make_engine(make_campaign(regions=((1, 20, ((10, 5), (20, 10))),)))
    d = e.apply([placed("o1")])
    assert d[0] == (Out.AWARDED, 1, 5)
    assert e.export_state()["claims"] == [
        {
            "beneficiary": "a1",
            "order_id": "o1",
            "points": 5,
            "rank": 1,
            "region": 1,
            "slot": 1,
            "state": "pending",
        }
    ]
    assert e.balance("a1") == Balance(pending=5)


def test_settle_on_placed_confirms_at_once(make_engine):
    e = make_engine(make_campaign(settle_on="placed"))
    e.apply([placed("o1")])
    assert e.export_state()["claims"][0]["state"] == "confirmed"
    assert e.balance("a1") == Balance(confirmed=10)


def test_duplicate_changes_nothing(make_engine):
    e = make_engine(make_campaign())
    assert outcomes(e, [placed("o1"), placed("o1", agent="a2", region=1)]) == [
        Out.AWARDED,
        Out.DUPLICATE,
    ]
    state = e.export_state()
    assert len(state["claims"]) == 1 and state["outcomes"] == {"awarded": 1, "duplicate": 1}


def test_duplicate_of_a_rejected_order(make_engine):
    e = make_engine(make_campaign())
    assert outcomes(e, [placed("o1", region=99), placed("o1", region=1)]) == [
        Out.NO_REWARD_REGION,
        Out.DUPLICATE,
    ]


def test_tombstone_closes_an_order_placed_later(make_engine):
    e = make_engine(make_campaign())
    assert outcomes(e, [closed("o1"), placed("o1"), placed("o1"), closed("o1")]) == [
        Out.TOMBSTONED,
        Out.CLOSED,
        Out.DUPLICATE,
        Out.UNCHANGED,
    ]
    assert e.export_state()["claims"] == []
    assert outcomes(e, [placed("o2")]) == [Out.AWARDED]  # the slot was never taken


def test_window_is_half_open(make_engine):
    e = make_engine(make_campaign(regions=((1, 10, ((10, 1),)),)))
    got = outcomes(
        e,
        [
            placed("a", ts=STARTS_MS - 1),
            placed("b", ts=STARTS_MS),
            placed("c", ts=ENDS_MS - 1),
            placed("d", ts=ENDS_MS),
        ],
    )
    assert got == [Out.OUTSIDE_WINDOW, Out.AWARDED, Out.AWARDED, Out.OUTSIDE_WINDOW]


def test_window_checked_before_region(make_engine):
    e = make_engine(make_campaign())
    assert outcomes(e, [placed("a", region=99, ts=ENDS_MS)]) == [Out.OUTSIDE_WINDOW]


def test_no_reward_region(make_engine):
    e = make_engine(make_campaign())
    assert outcomes(e, [placed("a", region=2)]) == [Out.NO_REWARD_REGION]


def test_min_paid_is_inclusive(make_engine):
    e = make_engine(make_campaign(regions=((1, 5, ((5, 1),)),), min_paid_cents=100))
    assert outcomes(e, [placed("a", paid=99), placed("b", paid=100)]) == [
        Out.BELOW_MIN_PAID,
        Out.AWARDED,
    ]


def test_beneficiary_cap_counts_non_revoked_claims(make_engine):
    e = make_engine(
        make_campaign(regions=((1, 5, ((5, 1),)), (2, 5, ((5, 1),))), max_claims_per_beneficiary=2)
    )
    got = outcomes(e, [placed("a", 1), placed("b", 2), placed("c", 1), closed("a"), placed("d", 2)])
    assert got == [Out.AWARDED, Out.AWARDED, Out.BENEFICIARY_CAP, Out.REVOKED, Out.AWARDED]


def test_beneficiary_region_cap(make_engine):
    e = make_engine(
        make_campaign(
            regions=((1, 5, ((5, 1),)), (2, 5, ((5, 1),))), max_claims_per_beneficiary_per_region=1
        )
    )
    got = outcomes(
        e,
        [
            placed("a", 1),
            placed("b", 1),
            placed("c", 2),
            placed("x", 1, agent="a2"),
            closed("a"),
            placed("d", 1),
        ],
    )
    assert got == [
        Out.AWARDED,
        Out.BENEFICIARY_REGION_CAP,
        Out.AWARDED,
        Out.AWARDED,
        Out.REVOKED,
        Out.AWARDED,
    ]


def test_campaign_cap_is_checked_before_region_cap(make_engine):
    e = make_engine(
        make_campaign(
            regions=((1, 5, ((5, 1),)),),
            max_claims_per_beneficiary=1,
            max_claims_per_beneficiary_per_region=1,
        )
    )
    assert outcomes(e, [placed("a"), placed("b")]) == [Out.AWARDED, Out.BENEFICIARY_CAP]


def test_merchant_beneficiary(make_engine):
    e = make_engine(
        make_campaign(
            regions=((1, 5, ((5, 3),)),), beneficiary="merchant", max_claims_per_beneficiary=1
        )
    )
    got = outcomes(
        e,
        [
            placed("a", agent="x", merchant="m7"),
            placed("b", agent="y", merchant="m7"),
            placed("c", agent="x", merchant="m8"),
        ],
    )
    assert got == [Out.AWARDED, Out.BENEFICIARY_CAP, Out.AWARDED]
    assert set(e.export_state()["balances"]) == {"m7", "m8"}


def test_slots_in_order_then_sold_out(make_engine):
    e = make_engine(make_campaign(regions=((1, 3, ((2, 5), (3, 9))),)))
    d = e.apply([placed(f"o{i}", agent=f"a{i}") for i in range(4)])
    assert [d[i] for i in range(4)] == [
        (Out.AWARDED, 1, 5),
        (Out.AWARDED, 2, 5),
        (Out.AWARDED, 3, 9),
        (Out.SOLD_OUT, 0, 0),
    ]


def test_release_reawards_the_smallest_released_slot(make_engine):
    e = make_engine(make_campaign(regions=((1, 3, ((1, 5), (3, 9))),), on_close="release"))
    e.apply([placed(f"o{i}", agent=f"a{i}") for i in range(1, 4)])
    d = e.apply([closed("o3"), closed("o1"), placed("n1"), placed("n2"), placed("n3")])
    assert [d[i] for i in range(5)] == [
        (Out.REVOKED, 3, 9),
        (Out.REVOKED, 1, 5),
        (Out.AWARDED, 1, 5),
        (Out.AWARDED, 3, 9),
        (Out.SOLD_OUT, 0, 0),
    ]
    status = e.region_status(1)
    assert (status.slots, status.taken, status.remaining) == (3, 3, 0)


def test_forfeit_loses_the_slot(make_engine):
    e = make_engine(make_campaign(regions=((1, 2, ((2, 5),)),), on_close="forfeit"))
    assert outcomes(e, [placed("o1"), closed("o1"), placed("o2"), placed("o3")]) == [
        Out.AWARDED,
        Out.REVOKED,
        Out.AWARDED,
        Out.SOLD_OUT,
    ]
    status = e.region_status(1)
    assert (status.taken, status.remaining) == (1, 0)
    assert e.region_status(12345) is None


def test_budget_exhausted_does_not_consume_the_slot(make_engine):
    e = make_engine(make_campaign(regions=((1, 5, ((1, 10), (5, 20))),), budget_points=25))
    d = e.apply([placed("o1"), placed("o2"), closed("o1"), placed("o3"), placed("o4")])
    # o2 would take slot 2 (20 points): 10 + 20 > 25. Once o1 is revoked the budget holds
    # 0; o3 gets the released slot 1 (10), o4 slot 2 (20) would make 30 > 25.
    assert [d[i] for i in range(5)] == [
        (Out.AWARDED, 1, 10),
        (Out.BUDGET_EXHAUSTED, 0, 0),
        (Out.REVOKED, 1, 10),
        (Out.AWARDED, 1, 10),
        (Out.BUDGET_EXHAUSTED, 0, 0),
    ]
    assert e.region_status(1).remaining == 4


def test_budget_exhausted_slot_is_offered_again(make_engine):
    e = make_engine(
        make_campaign(regions=((1, 5, ((1, 10), (5, 20))),), budget_points=30, on_close="forfeit")
    )
    d = e.apply([placed("o1"), placed("o2"), placed("o3"), closed("o2"), placed("o4")])
    assert [d[i] for i in range(5)] == [
        (Out.AWARDED, 1, 10),
        (Out.AWARDED, 2, 20),
        (Out.BUDGET_EXHAUSTED, 0, 0),
        (Out.REVOKED, 2, 20),
        (Out.AWARDED, 3, 20),
    ]


# -- closed and completed --------------------------------------------------------------------


def test_close_revokes_and_takes_points_back(make_engine):
    e = make_engine(make_campaign())
    assert outcomes(
        e, [placed("o1"), completed("o1"), closed("o1"), closed("o1"), completed("o1")]
    ) == [Out.AWARDED, Out.CONFIRMED, Out.REVOKED, Out.UNCHANGED, Out.UNCHANGED]
    state = e.export_state()
    assert state["claims"][0]["state"] == "revoked"
    assert state["balances"] == {}
    assert e.balance("a1") == Balance()


def test_close_or_complete_of_unawarded_order_changes_nothing(make_engine):
    e = make_engine(make_campaign())
    assert outcomes(
        e, [placed("o1", region=5), closed("o1"), completed("o1"), completed("never")]
    ) == [Out.NO_REWARD_REGION, Out.UNCHANGED, Out.UNCHANGED, Out.UNCHANGED]
    assert outcomes(e, [placed("never")]) == [Out.AWARDED]  # an early completion is no close


# -- redemptions -----------------------------------------------------------------------------


def test_redeem_outcomes(make_engine):
    e = make_engine(
        make_campaign(regions=((1, 5, ((5, 10),)),), prizes=(("mug", 10, 1), ("bag", 15, 5)))
    )
    e.apply([placed("o1"), placed("o2")])
    assert e.redeem("r0", "a1", "mug") == Out.INSUFFICIENT_POINTS  # pending points don't count
    e.apply([completed("o1"), completed("o2")])
    assert e.redeem("r1", "a1", "hat") == Out.UNKNOWN_PRIZE
    assert e.redeem("r2", "a1", "bag", qty=2) == Out.INSUFFICIENT_POINTS
    assert e.redeem("r3", "a1", "mug") == Out.REDEEMED
    assert e.redeem("r4", "a1", "mug") == Out.OUT_OF_STOCK
    assert e.redeem("r5", "nobody", "mug") == Out.INSUFFICIENT_POINTS
    assert e.balance("a1") == Balance(confirmed=20, redeemed=10)
    assert e.balance("a1").available == 10
    assert e.stock() == {"mug": 0, "bag": 5}
    assert e.export_state()["redemptions"] == {
        "r0": "insufficient_points",
        "r1": "unknown_prize",
        "r2": "insufficient_points",
        "r3": "redeemed",
        "r4": "out_of_stock",
        "r5": "insufficient_points",
    }


def test_redeem_is_idempotent_by_id(make_engine):
    e = make_engine(
        make_campaign(regions=((1, 5, ((5, 10),)),), settle_on="placed", prizes=(("mug", 10, 5),))
    )
    assert e.redeem("r1", "a1", "mug") == Out.INSUFFICIENT_POINTS
    e.apply([placed("o1"), placed("o2")])
    assert e.redeem("r1", "a1", "mug") == Out.INSUFFICIENT_POINTS  # the first outcome stands
    assert e.redeem("r2", "a1", "mug") == Out.REDEEMED
    assert e.redeem("r2", "a1", "mug") == Out.REDEEMED
    assert e.balance("a1") == Balance(confirmed=20, redeemed=10)
    assert e.stock() == {"mug": 4}
    d = e.apply([redeem("r2", "a1")])
    assert d[0] == (Out.REDEEMED, 0, 10)


# -- exported state --------------------------------------------------------------------------


def test_export_state_shape_and_order(make_engine):
    e = make_engine(make_campaign(regions=((1, 1, ((1, 5),)), (2, 2, ((2, 7),)))))
    e.apply([placed("z9", 2, agent="b"), placed("a1", 1), placed("m5", 1), completed("z9")])
    e.redeem("r1", "b", "mug")
    data = dump_state(e.export_state())
    assert data.endswith(b"\n")
    state = orjson.loads(data)
    assert list(state) == ["balances", "claims", "outcomes", "redemptions"]
    assert [c["order_id"] for c in state["claims"]] == ["a1", "z9"]
    assert state["balances"] == {
        "a1": {"confirmed": 0, "pending": 5, "redeemed": 0},
        "b": {"confirmed": 7, "pending": 0, "redeemed": 0},
    }
    assert state["outcomes"] == {"awarded": 2, "sold_out": 1}
    assert state["redemptions"] == {"r1": "insufficient_points"}


def test_winners_and_claims_of(make_engine):
    e = make_engine(make_campaign(regions=((1, 3, ((3, 5),)),)))
    e.apply(
        [placed("o1", agent="x"), placed("o2", agent="y"), placed("o3", agent="x"), closed("o2")]
    )
    assert [(c.order_id, c.slot) for c in e.winners(1)] == [("o1", 1), ("o3", 3)]
    assert [c.order_id for c in e.claims_of("x")] == ["o1", "o3"]


def test_an_object_that_is_not_an_event_is_refused(make_engine):
    e = make_engine(make_campaign())
    with pytest.raises(EventError, match="event 1: is a dict"):
        e.apply([placed("o1"), {"type": "placed"}])


# -- v2: rank, early completion, claim timestamps, spent points taken back ---------------------


def test_rank_counts_the_orders_that_reached_slot_choice(make_engine, engine_url):
    e = make_engine(make_campaign(regions=((1, 2, ((2, 5),)), (2, 1, ((1, 3),))),
                                  max_claims_per_beneficiary=2))
    d = e.apply([
        placed("o1"),                       # rank 1, slot 1
        placed("o1"),                       # duplicate: 0
        placed("o2", region=9),             # no reward region: 0
        placed("o3", ts=STARTS_MS - 1),     # outside the window: 0
        placed("o4", region=2),             # region 2, rank 1
        placed("o5", agent="a1"),           # beneficiary cap (a1 holds 2): 0
        placed("o6", agent="a2"),           # rank 2, slot 2
        placed("o7", agent="a3"),           # sold out, rank 3
        closed("o6"),                       # rank 0 on everything but placed
        placed("o8", agent="a3"),           # rank 4, the released slot 2
    ])
    assert d.rank.tolist() == [1, 0, 0, 0, 1, 0, 2, 3, 0, 4]
    ranks = {c["order_id"]: c["rank"] for c in e.export_state()["claims"]}
    assert ranks == {"o1": 1, "o4": 1, "o6": 2, "o8": 4}


def test_rank_of_budget_exhausted(make_engine, engine_url):
    e = make_engine(make_campaign(regions=((1, 3, ((3, 10),)),), budget_points=10))
    d = e.apply([placed("o1"), placed("o2", agent="a2")])
    assert [Outcome(int(o)) for o in d.outcome] == [Out.AWARDED, Out.BUDGET_EXHAUSTED]
    assert d.rank.tolist() == [1, 2]


def test_early_completion_confirms_the_later_claim(make_engine, engine_url):
    e = make_engine(make_campaign())
    assert outcomes(e, [completed("o1", ts=IN_WINDOW + 5), completed("o1")]) == [
        Out.UNCHANGED, Out.UNCHANGED]
    assert outcomes(e, [placed("o1", ts=IN_WINDOW + 9), completed("o1")]) == [
        Out.AWARDED, Out.UNCHANGED]
    (claim,) = e.claims()
    assert (claim.state, claim.settled_ts, claim.revoked_ts) == ("confirmed", IN_WINDOW + 9, 0)
    assert e.balance("a1") == Balance(confirmed=10)


def test_close_after_early_completion_wins(make_engine, engine_url):
    e = make_engine(make_campaign())
    assert outcomes(e, [completed("o1"), closed("o1"), placed("o1")]) == [
        Out.UNCHANGED, Out.TOMBSTONED, Out.CLOSED]
    assert e.claims() == []


def test_claim_timestamps(make_engine, engine_url):
    e = make_engine(make_campaign(regions=((1, 3, ((3, 5),)),)))
    e.apply([placed("o1", ts=IN_WINDOW), placed("o2", agent="a2", ts=IN_WINDOW + 1),
             completed("o1", ts=IN_WINDOW + 10), closed("o1", ts=IN_WINDOW + 20),
             closed("o2", ts=IN_WINDOW + 30), completed("o2", ts=IN_WINDOW + 40)])
    got = {c.order_id: (c.state, c.ts, c.settled_ts, c.revoked_ts)
           for c in e.claims()}
    want = {"o1": ("revoked", IN_WINDOW, IN_WINDOW + 10, IN_WINDOW + 20),
            "o2": ("revoked", IN_WINDOW + 1, 0, IN_WINDOW + 30)}
    assert got == want


def test_settle_on_placed_settles_at_the_placed_ts(make_engine, engine_url):
    e = make_engine(make_campaign(settle_on="placed"))
    e.apply([placed("o1", ts=IN_WINDOW + 3)])
    (claim,) = e.claims()
    assert (claim.state, claim.settled_ts, claim.revoked_ts) == ("confirmed", IN_WINDOW + 3, 0)


def test_spent_points_taken_back_refuse_redemptions_until_positive(make_engine):
    e = make_engine(make_campaign(regions=((1, 3, ((3, 10),)),), settle_on="placed",
                                  prizes=(("mug", 10, 5),)))
    e.apply([placed("o1")])
    assert e.redeem("r1", "a1", "mug", ts=IN_WINDOW) == Out.REDEEMED
    assert outcomes(e, [closed("o1")]) == [Out.REVOKED]  # a return after the points were spent
    assert e.balance("a1") == Balance(confirmed=0, redeemed=10)
    assert e.balance("a1").available == -10
    e.apply([placed("o2")])
    assert e.balance("a1").available == 0
    assert e.redeem("r2", "a1", "mug", ts=IN_WINDOW) == Out.INSUFFICIENT_POINTS
    e.apply([placed("o3")])
    assert e.redeem("r3", "a1", "mug", ts=IN_WINDOW) == Out.REDEEMED
    assert e.balance("a1") == Balance(confirmed=20, redeemed=20)
    assert e.stock() == {"mug": 3}

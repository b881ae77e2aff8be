"""The compiled engine mirrors Python's outcome codes and rejects malformed events whole."""

from __future__ import annotations

import pytest

from rewardcore import EventError, Outcome, Placed, open_engine
from rewardcore._engine import OUTCOME_CODES

from .campaigns import make_campaign
from .events import placed


def test_outcome_codes_match():
    assert {o.name: o.value for o in Outcome if o.name in OUTCOME_CODES} == OUTCOME_CODES
    assert set(OUTCOME_CODES) >= {o.name for o in Outcome if o.value <= Outcome.UNCHANGED}


@pytest.mark.parametrize("field, value", [("region", "7"), ("order_id", 5), ("ts", 2**70)])
def test_malformed_struct_raises_before_any_change(field, value):
    # msgspec validates when decoding, not in __init__: a hand-built event can carry anything.
    e = open_engine(make_campaign(), "memory://")
    fields = {"order_id": "o2", "merchant_id": "m", "agent_id": "a", "region": 1,
              "paid_cents": 1, "ts": 1}
    fields[field] = value
    with pytest.raises(EventError, match=f"event 1: placed: field '{field}'"):
        e.apply([placed("o1"), Placed(**fields)])
    assert e.export_state()["claims"] == []  # o1 was not applied either


def test_order_table_grows_and_keeps_every_order():
    e = open_engine(make_campaign(regions=((1, 100_000, ((100_000, 1),)),)), "memory://")
    batch = [placed(f"o{i}", agent=f"a{i % 97}") for i in range(50_000)]
    assert (e.apply(batch).outcome == Outcome.AWARDED).all()
    assert (e.apply(batch).outcome == Outcome.DUPLICATE).all()
    assert e.core.orders_remembered == 50_000
    assert len(e.balances()) == 97

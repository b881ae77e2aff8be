"""The daemon's live record (rewardcore.daemon.pages.LiveRecord): bounded, oldest out first."""

from __future__ import annotations

from rewardcore import Outcome
from rewardcore.daemon import pages
from rewardcore.engine import Decisions

from .campaigns import make_campaign
from .events import placed


def _sold_out(events: list) -> Decisions:
    d = Decisions.empty(len(events))
    d.outcome[:] = int(Outcome.SOLD_OUT)
    d.rank[:] = range(1, len(events) + 1)
    return d


def test_recent_orders_keep_the_newest_beneficiaries_and_their_last_orders(monkeypatch):
    monkeypatch.setattr(pages, "RECENT_BENEFICIARIES", 3)
    monkeypatch.setattr(pages, "RECENT_PER_BENEFICIARY", 2)
    live = pages.LiveRecord(make_campaign(), clock=lambda: 1000.0)
    for batch in range(4):  # four batches of three orders, by a0-a2, a1-a3, a2-a4, a3-a5
        events = [placed(f"o{batch}-{k}", agent=f"a{batch + k}") for k in range(3)]
        live.observe(events, _sold_out(events))
    assert list(live.recent) == ["a3", "a4", "a5"]  # a0, a1, a2 went, the longest-known first
    assert live.recent_of("a0") == []
    # a3 lost in batches 1, 2 and 3: the last two are kept
    assert [row[0] for row in live.recent_of("a3")] == ["o2-1", "o3-0"]
    assert live.recent_of("a5")[0][2:4] == (int(Outcome.SOLD_OUT), 3)
    for _ in range(20):  # trimmed now and then: two values per order, at most twice the
        events = [placed("again", agent="a5")]  # kept orders and one more
        live.observe(events, _sold_out(events))
        assert len(live.recent["a5"]) <= 2 * (2 * pages.RECENT_PER_BENEFICIARY + 1)
    assert len(live.recent_of("a5")) == 2

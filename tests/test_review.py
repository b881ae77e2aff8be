"""Post-campaign review and the published winners, from an engine's real state."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from rewardcore import Closed, Completed, Engine, Placed, Redeem, open_engine, parse_campaign
from rewardcore.review.lint import lint
from rewardcore.review.report import render_report
from rewardcore.review.stats import collect
from rewardcore.winners import mask_id, winner_rows

from .conftest import EXAMPLES, rc

STARTS_MS = 1_762_790_400_000  # 2025-11-11T00:00:00+08:00
CAMPAIGN_TOML = """
[campaign]
id = "review-test"
starts_at = 2025-11-11T00:00:00+08:00
ends_at = 2025-11-12T00:00:00+08:00
min_paid_cents = 100

[[regions]]
code = 1
slots = 2
tiers = [{upto = 1, points = 5}, {upto = 2, points = 10}]

[[regions]]
code = 2
slots = 1
tiers = [{upto = 1, points = 7}]

[[regions]]
code = 3
slots = 3
tiers = [{upto = 3, points = 1}]

[[prizes]]
id = "mug"
name = "a mug"
cost_points = 10
value_cents = 1000
stock = 5
"""


def placed(order: str, agent: str, region: int, dt: int) -> Placed:
    return Placed(order_id=order, merchant_id="merchant-1", agent_id=agent, region=region,
                  paid_cents=500, ts=STARTS_MS + dt)


# Hand-worked: what each event does is in the comment beside it.
EVENTS = [
    placed("order-0001", "agent-0001", 1, 1_000),   # region 1 slot 1, 5 points
    placed("order-0002", "agent-0002", 1, 2_000),   # region 1 slot 2, 10 points
    placed("order-0003", "agent-0001", 2, 3_000),   # region 2 slot 1, 7 points
    placed("order-0004", "agent-0003", 2, 4_000),   # sold_out
    Closed(order_id="order-0002", ts=STARTS_MS + 5_000),     # revoked, slot 2 released
    placed("order-0005", "agent-0003", 1, 6_000),   # region 1 slot 2 again, 10 points
    placed("order-0006", "agent-0002", 3, 7_000),   # region 3 slot 1, 1 point
    Closed(order_id="order-0006", ts=STARTS_MS + 8_000),     # revoked: region 3 lost
    Completed(order_id="order-0001", ts=STARTS_MS + 9_000),
    Completed(order_id="order-0003", ts=STARTS_MS + 9_000),
    Completed(order_id="order-0005", ts=STARTS_MS + 9_000),
    Redeem(redemption_id="r1", beneficiary="agent-0001", prize="mug", ts=STARTS_MS + 10_000),
    Redeem(redemption_id="r2", beneficiary="agent-0002", prize="mug", ts=STARTS_MS + 10_000),
]


@pytest.fixture
def campaign():
    return parse_campaign(CAMPAIGN_TOML, "review-test.toml")


@pytest.fixture
def filled(make_engine, campaign) -> Engine:
    engine = make_engine(campaign)
    engine.apply(EVENTS)
    return engine


def test_collect_reads_the_campaign_from_the_engine(filled):
    d = collect(filled, participants=10)
    assert d.claims == 5 and d.claims_revoked == 2
    assert (d.claims_pending, d.claims_confirmed) == (0, 3)
    assert d.points == 5 + 7 + 10 and d.points_revoked == 10 + 1
    assert d.points_redeemed == 10
    assert d.outcomes == {"awarded": 5, "sold_out": 1}
    assert (d.regions_awarded, d.regions_revoked, d.regions_lost, d.regions_sold_out) == \
        (3, 2, 1, 2)
    assert d.rewarded == 2 and d.lost_all == 1  # agent-0002 lost both of its claims
    assert d.regions_per_beneficiary == {1: 1, 2: 1}
    assert d.points_per_beneficiary == [12, 10]
    assert d.redemptions == {"insufficient_points": 1, "redeemed": 1}
    (mug,) = d.prizes
    assert (mug.holders_enough, mug.available_enough, mug.redeemed_units, mug.stock_left) == \
        (2, 1, 1, 4)


def test_claim_series_from_order_times(filled):
    s = collect(filled).series
    assert s.source == "claims"
    assert s.minutes[0] == 0 and s.minutes == sorted(s.minutes)
    assert s.awarded[-1] == 5 and s.revoked[-1] == 2
    assert s.budget_used[-1] == 22
    assert s.sold_out[-1] == 2
    assert all(a <= b for a, b in zip(s.awarded, s.awarded[1:], strict=False))


def test_review_report_renders_from_engine_state(campaign):
    # drawing costs seconds, so once, not per engine: collect is what differs by engine
    with open_engine(campaign, "reference://") as engine:
        engine.apply(EVENTS)
        html = render_report(collect(engine, participants=10), lint(campaign), title="r")
    assert html.count("data:image/png;base64,") >= 8
    assert "1 agents unlocked 2 regions" in html
    assert '<td>claims revoked (closed orders)</td><td class="n">2</td>' in html


def test_mask_id():
    assert mask_id("agent-0001") == "ag******01"
    assert mask_id("a1029384") == "a1****84"
    assert mask_id("abcd") == "a**d"
    assert mask_id("ab") == "a*"
    assert mask_id("") == ""
    for s in ("order-123456789", "m7", "13800138000"):
        masked = mask_id(s)
        assert len(masked) == len(s) and masked != s or len(s) == 1
        assert "*" in masked


def test_winner_rows(filled):
    rows = winner_rows(filled)
    assert [(r["region"], r["slot"], r["beneficiary"], r["order_id"], r["points"])
            for r in rows] == [
        (1, 1, "ag******01", "or******01", 5),
        (1, 2, "ag******03", "or******05", 10),
        (2, 1, "ag******01", "or******03", 7),
    ]
    assert rows[1]["placed_at"] == "2025-11-11T00:00:06.000+08:00"
    assert rows[1]["ts"] == STARTS_MS + 6_000
    assert [r["slot"] for r in winner_rows(filled, 1)] == [1, 2]
    assert winner_rows(filled, 3) == []


# -- the commands ---------------------------------------------------------------------------

def test_review_of_an_in_process_backend_warns_it_is_empty(tmp_path, cli):
    report = tmp_path / "review.html"
    out = cli("review", str(EXAMPLES / "d11-2026.toml"), "--backend", "memory://",
             "--report", str(report))
    assert out.returncode == 0, out.stderr
    assert "holds no events" in out.stderr
    assert "data:image/png;base64," in report.read_text()
    # nothing to list: a warning and exit 1 (tests/test_cli_comfort.py has the details)
    winners = cli("winners", str(EXAMPLES / "d11-2026.toml"), "--backend", "memory://")
    assert winners.returncode == 1 and "holds no events" in winners.stderr


def test_winners_refuses_an_unknown_region(cli):
    out = cli("winners", str(EXAMPLES / "d11-2026.toml"), "--backend", "memory://",
             "--region", "42")
    assert out.returncode == 2 and "--region 42" in out.stderr


def test_review_and_winners_commands_on_a_backend_that_keeps_state(tmp_path, redis_url, cli):
    """Replay into Redis in another process; review and list the winners from this one."""
    campaign_path = tmp_path / "c.toml"
    campaign_path.write_text(CAMPAIGN_TOML)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps({"type": type(e).__struct_config__.tag,
                                              **{f: getattr(e, f) for f in e.__struct_fields__}})
                                + b"\n" for e in EVENTS))
    out = rc("replay", str(campaign_path), str(events), "--backend", redis_url)
    assert out.returncode == 0, out.stderr

    report = tmp_path / "review.html"
    out = cli("review", str(campaign_path), "--backend", redis_url, "--report", str(report),
             "--participants", "10")
    assert out.returncode == 0, out.stderr
    html = report.read_text()
    assert '<td>claims awarded</td><td class="n">5</td>' in html
    assert '<td>claims revoked (closed orders)</td><td class="n">2</td>' in html

    out = cli("winners", str(campaign_path), "--backend", redis_url)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["region"], r["slot"], r["beneficiary"]) for r in rows] == [
        ("1", "1", "ag******01"), ("1", "2", "ag******03"), ("2", "1", "ag******01")]
    out = cli("winners", str(campaign_path), "--backend", redis_url, "--format", "json",
             "--region", "1")
    assert [w["order_id"] for w in orjson.loads(out.stdout)["winners"]] == \
        ["or******01", "or******05"]

"""Risk findings: each pattern on a crafted stream that has it, none on generated traffic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardcore import load_campaign, open_engine, parse_campaign
from rewardcore.codec import decode_jsonl
from rewardcore.review.risk import RISK_CODES, OrderStream, RiskConfig, risk_findings
from rewardcore.review.simulate import simulate
from rewardcore.traffic import TrafficShape

from .campaigns import IN_WINDOW, campaign_toml, make_campaign
from .conftest import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN = make_campaign(regions=[(r, 10, ((10, 5),)) for r in range(1, 41)],
                         min_paid_cents=1000)


def placed(order: str, agent: str, region: int, *, merchant: str | None = None,
           paid: int = 5000, ts: int = IN_WINDOW) -> dict:
    return {"type": "placed", "order_id": order, "merchant_id": merchant or f"m-{agent}",
            "agent_id": agent, "region": region, "paid_cents": paid, "ts": ts}


def background(n: int = 200) -> list[dict]:
    """Ordinary traffic: 40 agents of 8 merchants, amounts spread, times spread over hours."""
    return [placed(f"bg{i}", f"agent-{i % 40}", 1 + i % 40, merchant=f"m-{i % 8}",
                   paid=1200 + (i * 733) % 9000, ts=IN_WINDOW + i * 97_000) for i in range(n)]


def run(rows: list[dict], campaign=CAMPAIGN, config: RiskConfig | None = None):
    events, dead = decode_jsonl("\n".join(json.dumps(r) for r in rows).encode())
    assert not dead
    with open_engine(campaign, "memory://") as engine:
        stream = OrderStream(campaign, config)
        stream.add(events, engine.apply(events))
        return {f.code: f for f in risk_findings(campaign, engine.claims(), stream)}


def test_ordinary_traffic_has_no_finding():
    assert run(background()) == {}


def test_winning_orders_mostly_closed_afterwards():
    rows = background()
    rows += [placed(f"grab{i}", "grabber", 30 + i, ts=IN_WINDOW + 5 + i) for i in range(6)]
    rows += [{"type": "closed", "order_id": f"grab{i}", "ts": IN_WINDOW + 60_000 + i}
             for i in range(4)]
    found = run(rows)
    assert set(found) == {"risk-closed-after-winning"}
    f = found["risk-closed-after-winning"]
    assert f.subject == "grabber" and "grabber: 4 of 6" in f.message
    # 2 of 6 closed is under half: not flagged
    assert run(rows[:-2]) == {}


def test_orders_padded_just_above_the_minimum():
    rows = background()
    rows += [placed(f"pad{i}", f"agent-{i % 40}", 1 + i % 40, paid=1000 + i % 40,
                    ts=IN_WINDOW + 3_000 + i) for i in range(40)]
    found = run(rows)
    assert set(found) == {"risk-min-paid-cluster"}
    assert found["risk-min-paid-cluster"].data["above"] >= 40
    # the same number spread evenly around the minimum is not a cluster
    even = background() + [placed(f"ev{i}", "agent-1", 1, paid=950 + i * 100 // 40,
                                  ts=IN_WINDOW + 3_600_000 + i * 60_000) for i in range(40)]
    assert run(even) == {}


def test_one_merchants_agents_burst_at_the_opening():
    rows = background()
    rows += [placed(f"burst{i}", f"shill-{i % 6}", 1 + i % 40, merchant="m-burst",
                    ts=IN_WINDOW + i * 500) for i in range(25)]
    rows += [placed(f"late{i}", f"shill-{i}", 2, merchant="m-burst",
                    ts=IN_WINDOW + 3_600_000 + i) for i in range(5)]
    found = run(rows)
    assert set(found) == {"risk-merchant-burst"}
    f = found["risk-merchant-burst"]
    assert f.subject == "m-burst" and "25 of its 30 orders by 6 agent(s)" in f.message


def test_many_winning_agents_of_one_merchant():
    rows = background()
    rows += [placed(f"farm{i}", f"puppet-{i}", 1 + i % 40, merchant="m-farm",
                    ts=IN_WINDOW + 7_200_000 + i * 60_000) for i in range(25)]
    found = run(rows)
    assert set(found) == {"risk-shared-merchant"}
    assert found["risk-shared-merchant"].data["merchants"] == [{"merchant": "m-farm",
                                                               "agents": 25}]
    # a campaign that pays merchants pays m-farm once however many agents it has
    paid_merchant = make_campaign(regions=[(r, 10, ((10, 5),)) for r in range(1, 41)],
                                  min_paid_cents=1000, beneficiary="merchant")
    assert "risk-shared-merchant" not in run(rows, paid_merchant)


@pytest.mark.parametrize("beneficiary", ["agent", "merchant"])
def test_the_example_campaigns_generated_traffic_has_no_risk_finding(beneficiary):
    text = (EXAMPLES / "d11-2026.toml").read_text()
    campaign = parse_campaign(text.replace('beneficiary = "agent"',
                                           f'beneficiary = "{beneficiary}"'), "d11.toml")
    assert campaign.info.beneficiary == beneficiary
    sim = simulate(campaign, TrafficShape(orders=60_000, seed=11, close_rate=0.1))
    try:
        assert sim.risks == []
    finally:
        sim.engine.close()


def test_review_reads_the_stream_for_the_findings_that_need_it(tmp_path, cli):
    rows = background() + [placed(f"pad{i}", f"agent-{i % 40}", 1 + i % 40, paid=1000 + i % 9,
                                  ts=IN_WINDOW + 3_000 + i) for i in range(40)]
    (tmp_path / "c.toml").write_text(campaign_toml(
        regions=[(r, 10, ((10, 5),)) for r in range(1, 41)], min_paid_cents=1000))
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(r) + "\n" for r in rows))
    state = f"memory://{tmp_path}/state?fsync=none"
    assert cli("replay", str(tmp_path / "c.toml"), str(events), "--backend", state).returncode == 0
    report = tmp_path / "r.html"
    without = cli("review", str(tmp_path / "c.toml"), "--backend", state, "--report", str(report))
    assert without.returncode == 0 and "risk findings: 0" in without.stdout
    out = cli("review", str(tmp_path / "c.toml"), "--backend", state, "--report", str(report),
              "--events", str(events))
    assert out.returncode == 0 and "warning risk-min-paid-cluster" in out.stdout
    assert "risk-min-paid-cluster" in report.read_text()


def test_every_risk_code_is_documented():
    doc = (ROOT / "docs" / "campaign-checks.md").read_text()
    assert all(f"`{code}`" in doc for code in RISK_CODES)


def test_the_example_campaign_loads():
    assert load_campaign(EXAMPLES / "d11-2026.toml").info.min_paid_cents == 1000

"""The report explains itself: headline sentences from the run's own figures, shares of the
right kind of participant, a cost line for every prize, winners by region."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections import Counter
from collections.abc import Iterator

import pytest

from rewardcore import load_campaign, parse_campaign
from rewardcore.review.lint import lint
from rewardcore.review.report import _plot_points_per, clock, headline, render_report
from rewardcore.review.simulate import Simulation, simulate
from rewardcore.traffic import TrafficShape

from .conftest import EXAMPLES

BROKEN = EXAMPLES / "broken-2025.toml"


@pytest.fixture(scope="module")
def broken() -> Iterator[Simulation]:
    sim = simulate(load_campaign(BROKEN), TrafficShape(orders=40_000, participants=30_000,
                                                       seed=2, close_rate=0.33))
    yield sim
    sim.engine.close()


def test_headline_says_when_the_budget_ran_out_and_what_it_cost(broken):
    data, state = broken.data, broken.engine.export_state()
    lines = headline(data, lint(broken.engine.campaign))
    outcomes = state["outcomes"]
    placed = sum(outcomes.values()) - outcomes.get("duplicate", 0)
    assert lines[0].startswith(f"Of {placed:,} orders, {outcomes['awarded']:,} ")
    at = clock(data, data.first_ts["budget_exhausted"])
    assert re.fullmatch(r"\d\d:\d\d:\d\d", at)
    assert (f"The budget of 7,500 points ran out at {at}: after that "
            f"{outcomes['budget_exhausted']:,} orders that came within the first N of their "
            "region earned nothing (budget_exhausted).") in lines
    assert any(line.startswith(f"{outcomes['sold_out']:,} orders came after every slot")
               for line in lines)
    rewarded = len({c["beneficiary"] for c in state["claims"] if c["state"] != "revoked"})
    assert f"{rewarded:,} of 30,000 agents" in " ".join(lines)
    revoked = sum(c["state"] == "revoked" for c in state["claims"])
    assert any(line.startswith(f"{revoked:,} claims") and "lost (forfeit)" in line
               for line in lines)
    assert "No one can ever afford laptop (10,000 points)" in " ".join(lines)
    # the first budget_exhausted is the first such decision of the stream: no claim after it
    # can have been awarded with points the budget did not have
    assert data.first_ts["budget_exhausted"] >= min(c.ts for c in broken.engine.claims())


def test_the_report_opens_with_the_headline_and_every_outcome(broken):
    html = render_report(broken.data, lint(broken.engine.campaign), title="t",
                         active=broken.active)
    assert html.index('id="headline"') < html.index("<img")
    for label, n in broken.engine.export_state()["outcomes"].items():
        assert f"<td>{label}</td><td class=\"n\">{n:,}</td>" in html
    assert "times are the campaign's clock (UTC+08:00)" in html


def test_every_prize_gets_a_cost_line_unreachable_ones_too(broken):
    from matplotlib.figure import Figure

    campaign = broken.engine.campaign
    ax = Figure().subplots()
    _plot_points_per(ax, broken.data, lint(campaign))
    drawn = sorted(line.get_xdata()[0] for line in ax.lines)
    assert drawn == sorted(p.cost_points for p in campaign.prizes)
    assert 10_000 in drawn and ax.get_xlim()[1] > 10_000  # the laptop nobody can reach
    labels = [t.get_text().strip() for t in ax.texts]
    assert "laptop (unreachable)" in labels


def test_winners_by_region_with_a_csv_of_every_region(broken):
    html = render_report(broken.data, lint(broken.engine.campaign), title="t")
    m = re.search(r'href="data:text/csv;base64,([A-Za-z0-9+/=]+)"', html)
    assert m
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(m.group(1)).decode())))
    claims = broken.engine.export_state()["claims"]
    held = Counter(c["region"] for c in claims if c["state"] != "revoked")
    assert {int(r["region"]): int(r["held"]) for r in rows if int(r["held"])} == dict(held)
    assert sum(int(r["orders"]) for r in rows) > 0
    assert "<h2>Winners by region</h2>" in html


def test_a_merchant_campaign_counts_merchants(tmp_path, cli):
    text = (EXAMPLES / "d11-2026.toml").read_text().replace('beneficiary = "agent"',
                                                            'beneficiary = "merchant"')
    path = tmp_path / "merchants.toml"
    path.write_text(text)
    assert parse_campaign(text, "m.toml").pays_merchant
    report = tmp_path / "r.html"
    out = cli("simulate", str(path), "--orders", "20000", "--participants", "400",
              "--report", str(report), "--quiet")
    assert out.returncode == 0, out.stderr
    m = re.search(r"merchants rewarded: ([\d,]+) of 400 participants \((\d+)%\)", out.stdout)
    assert m, out.stdout
    rewarded = int(m.group(1).replace(",", ""))
    assert 0 < rewarded <= 400 and int(m.group(2)) == round(100 * rewarded / 400)
    html = report.read_text()
    assert "400 merchants (2,000 agents place their orders)" in html
    assert '<td>participants (merchants)</td><td class="n">400</td>' in html
    # lint's coverage finding compares with the same 400 merchants
    assert "of the 400 expected participants" in html


def test_generated_merchants_and_agents_come_in_proportion():
    import json

    from rewardcore.traffic import generate, population

    text = (EXAMPLES / "d11-2026.toml").read_text()
    merchant = parse_campaign(text.replace('beneficiary = "agent"', 'beneficiary = "merchant"'),
                              "m.toml")
    shape = TrafficShape(orders=20_000, participants=400)
    assert population(merchant, shape) == (2_000, 400)
    assert population(load_campaign(EXAMPLES / "d11-2026.toml"), shape) == (400, 80)
    agents, merchants = set(), set()
    for chunk in generate(merchant, shape):
        for line in chunk.splitlines():
            ev = json.loads(line)
            if ev["type"] == "placed":
                agents.add(ev["agent_id"])
                merchants.add(ev["merchant_id"])
    assert len(merchants) <= 400 < len(agents) <= 2_000
    assert len(merchants) > 300  # Zipf-active, but most merchants place something


def test_a_return_after_the_points_were_spent_is_told():
    """settle_on = placed: points are confirmed at once, spent, then the order closes."""
    from rewardcore import open_engine
    from rewardcore.events import Closed, Placed, Redeem
    from rewardcore.review.stats import collect

    from .campaigns import IN_WINDOW, make_campaign

    campaign = make_campaign(regions=((1, 2, ((2, 10),)),), prizes=(("mug", 10, 5),),
                             settle_on="placed")
    with open_engine(campaign, "reference://") as engine:
        engine.apply([
            Placed(order_id="o1", merchant_id="m1", agent_id="a1", region=1, paid_cents=500,
                   ts=IN_WINDOW),
            Redeem(redemption_id="r1", beneficiary="a1", prize="mug", qty=1, ts=IN_WINDOW + 1),
            Closed(order_id="o1", ts=IN_WINDOW + 2)])
        assert engine.balance("a1").available == -10
        data = collect(engine, participants=10)
    assert data.negative_available == 1 and data.revoked_after_confirmed == 1
    text = " ".join(headline(data))
    assert "1 of them had been confirmed first" in text
    assert "1 agents had an order closed after its points were spent" in text

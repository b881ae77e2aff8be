"""Preflight checks: the failures of real campaigns are caught, a sound campaign passes."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardcore import Campaign, Closed, Placed, load_campaign, open_engine, parse_campaign
from rewardcore.review.lint import (
    Finding,
    LintConfig,
    campaign_facts,
    lint,
    max_beneficiary_points,
)

from .conftest import EXAMPLES, ROOT, rc

BROKEN = str(EXAMPLES / "broken-2025.toml")
SOUND = str(EXAMPLES / "d11-2026.toml")
STARTS_MS = 1_762_790_400_000  # 2025-11-11T00:00:00+08:00


def toml(regions: Sequence[tuple[int, int, Sequence[tuple[int, int]]]] = ((1, 2, ((2, 10),)),),
         prizes: Sequence[tuple[str, int, int]] = (("mug", 10, 100),),
         ends: str = "2025-11-12T00:00:00+08:00", **settings: object) -> str:
    """regions: (code, slots, ((upto, points), ...)); prizes: (id, cost_points, value_cents)."""
    lines = ["[campaign]", 'id = "lint-test"', "starts_at = 2025-11-11T00:00:00+08:00",
             f"ends_at = {ends}"]
    settings.setdefault("min_paid_cents", 100)
    for key, value in settings.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    for code, slots, tiers in regions:
        t = ", ".join(f"{{upto = {u}, points = {p}}}" for u, p in tiers)
        lines += ["[[regions]]", f"code = {code}", f"slots = {slots}", f"tiers = [{t}]"]
    for pid, cost, value in prizes:
        lines += ["[[prizes]]", f'id = "{pid}"', f'name = "the {pid}"', f"cost_points = {cost}",
                  f"value_cents = {value}", "stock = 1000"]
    return "\n".join(lines) + "\n"


def campaign(**kwargs: object) -> Campaign:
    return parse_campaign(toml(**kwargs), "lint-test.toml")  # type: ignore[arg-type]


def codes(findings: Sequence[Finding], severity: str | None = None) -> set[str]:
    return {f.code for f in findings if severity is None or f.severity == severity}


def by_code(findings: Sequence[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


# -- the two example campaigns, through the command ------------------------------------------

def test_broken_campaign_fails_and_names_the_prize_and_the_point_value(cli):
    out = cli("lint", BROKEN, "--participants", "60000", "--format", "json")
    assert out.returncode == 1, out.stderr
    report = orjson.loads(out.stdout)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    unreachable = [f for f in errors if f["code"] == "prize-unreachable"]
    assert [f["subject"] for f in unreachable] == ["laptop"]
    assert "10,000 points" in unreachable[0]["message"]
    assert "7,500" in unreachable[0]["message"]
    spread = [f for f in errors if f["code"] == "point-value-spread"]
    assert len(spread) == 1
    # 0.6 yuan a point on the laptop, 0.07 on the tea box: 8.6x apart
    assert spread[0]["data"]["highest"] == "laptop"
    assert spread[0]["data"]["lowest"] == "tea-gift"
    assert spread[0]["data"]["spread"] == pytest.approx(0.6 / 0.07)
    values = next(f for f in report["findings"] if f["code"] == "point-value")["data"]
    assert values == pytest.approx({"phone-5": 0.2, "tea-gift": 0.07, "laptop": 0.6})
    warnings = {f["code"] for f in report["findings"] if f["severity"] == "warning"}
    assert {"coverage", "first-order-only", "point-value-inverted", "forfeit-loses-slots",
            "min-paid-zero", "redeem-out-of-reach", "budget-below-awardable"} <= warnings
    facts = report["facts"]
    assert facts["total_slots"] == 1111
    assert facts["max_winners"] == 750  # 7,500 points at 10 a region
    assert facts["coverage"] == pytest.approx(750 / 60000)
    assert facts["coverage"] < 0.02


def test_broken_campaign_text_output_names_the_prize():
    # a real process: the exit status is what a release pipeline gates on
    out = rc("lint", BROKEN)
    assert out.returncode == 1
    first = out.stdout.splitlines()[0]
    assert first.startswith("error") and "prize-unreachable" in first and "laptop" in first
    assert "0.600 yuan" in out.stdout and "0.070 yuan" in out.stdout
    assert out.stdout.splitlines()[-1].startswith("broken-2025: 2 error(s)")


def test_sound_example_campaign_passes(cli):
    out = cli("lint", SOUND, "--participants", "10000", "--format", "json")
    assert out.returncode == 0, out.stdout
    report = orjson.loads(out.stdout)
    assert report["errors"] == 0
    assert not [f for f in report["findings"] if f["severity"] == "error"]
    facts = report["facts"]
    assert facts["max_awardable_points"] == 1071 * 150 + 40 * (50 + 100 + 30 * 12)
    assert facts["payable_points"] == 170_000
    # 100 claims at most (cap), 2 a region: 80 in the 40 busy regions' 12-point slots, then
    # 20 of 10 points: 1,160 points, enough for every prize
    assert facts["max_points_per_beneficiary"] == 80 * 12 + 20 * 10
    assert all(p["reachable"] for p in facts["prizes"])
    assert facts["value_spread"] < 1.5


def test_a_file_that_does_not_load_is_an_error_finding(tmp_path, cli):
    bad = tmp_path / "bad.toml"
    bad.write_text(toml().replace('ends_at = 2025-11-12', 'ends_at = 2025-11-10'))
    out = cli("lint", str(bad), "--format", "json")
    assert out.returncode == 1
    report = orjson.loads(out.stdout)
    assert report["findings"][0]["code"] == "campaign-invalid"
    assert "ends_at" in report["findings"][0]["message"]


# -- the figures ----------------------------------------------------------------------------

def test_most_one_beneficiary_can_earn_under_caps_and_budget():
    regions = [(c, 5, ((2, 1), (5, 10))) for c in (1, 2, 3)]
    c = campaign(regions=regions)
    assert max_beneficiary_points(c) == (3 * 2 + 3 * 30, "slots")
    # two claims a region: the two best slots (10 each) of each of three regions
    c = campaign(regions=regions, max_claims_per_beneficiary_per_region=2)
    assert max_beneficiary_points(c) == (60, "caps")
    # ... and three claims in all
    c = campaign(regions=regions, max_claims_per_beneficiary_per_region=2,
                 max_claims_per_beneficiary=3)
    assert max_beneficiary_points(c) == (30, "caps")
    c = campaign(regions=regions, max_claims_per_beneficiary=3, budget_points=25)
    assert max_beneficiary_points(c) == (25, "budget")


def test_unreachable_prize_names_the_cap_that_limits_it():
    c = campaign(regions=[(1, 10, ((10, 5),))], max_claims_per_beneficiary=4,
                 prizes=[("mug", 20, 200), ("bike", 21, 210)])
    found = by_code(lint(c).findings, "prize-unreachable")
    assert [f.subject for f in found] == ["bike"]
    assert found[0].severity == "error"
    assert "at most 4 claims" in found[0].message


def test_forfeit_makes_a_prize_at_the_limit_a_warning():
    c = campaign(regions=[(1, 10, ((10, 5),))], on_close="forfeit",
                 prizes=[("all", 50, 500), ("some", 30, 300)])
    result = lint(c)
    assert [f.subject for f in by_code(result.findings, "prize-at-the-limit")] == ["all"]
    assert not result.errors


@pytest.mark.parametrize(("values", "expected"), [
    ((100, 110, 140), None),                       # 1.4x apart: fine at 1.5x
    ((100, 200, 240), "warning"),                  # 2.4x
    ((100, 200, 400), "error"),                    # 4x
])
def test_point_value_spread(values, expected):
    prizes = [(f"p{i}", 100 * (i + 1), v * (i + 1)) for i, v in enumerate(values)]
    found = by_code(lint(campaign(prizes=prizes)).findings, "point-value-spread")
    assert [f.severity for f in found] == ([expected] if expected else [])


def test_point_value_spread_threshold_is_configurable():
    prizes = [("a", 100, 100), ("b", 200, 280)]  # 1.4x apart
    assert not by_code(lint(campaign(prizes=prizes)).findings, "point-value-spread")
    found = by_code(lint(campaign(prizes=prizes), LintConfig(value_spread=1.2)).findings,
                    "point-value-spread")
    assert [f.severity for f in found] == ["warning"]


def test_a_bigger_prize_that_costs_more_per_yuan_is_flagged():
    # 10 yuan for 100 points (10/yuan), 50 yuan for 600 points (12/yuan)
    found = by_code(lint(campaign(prizes=[("small", 100, 1000), ("big", 600, 5000)])).findings,
                    "point-value-inverted")
    assert [(f.subject, f.data["smaller"]) for f in found] == [("big", "small")]
    # a bulk discount is what participants expect: no finding
    assert not by_code(lint(campaign(prizes=[("small", 100, 1000),
                                             ("big", 400, 5000)])).findings,
                       "point-value-inverted")


def test_coverage_against_participants():
    c = campaign(regions=[(i, 2, ((2, 10),)) for i in range(50)])  # 100 paying slots
    result = lint(c, LintConfig(participants=5000))
    cov = by_code(result.findings, "coverage")[0]
    assert cov.severity == "warning" and cov.data["max_winners"] == 100
    assert result.facts.coverage == pytest.approx(0.02)
    assert by_code(lint(c, LintConfig(participants=500)).findings, "coverage")[0].severity \
        == "info"
    # the budget pays 30 claims: at most 30 winners
    c = campaign(regions=[(i, 2, ((2, 10),)) for i in range(50)], budget_points=300)
    assert campaign_facts(c).max_winners == 30


@pytest.mark.parametrize(("budget", "code", "severity"), [
    (100, "budget-below-awardable", "warning"),   # 100 of 200
    (190, "budget-below-awardable", "info"),      # 95%: the budget binds late
    (250, None, None),
    (400, "budget-above-awardable", "warning"),   # 2x what the slots can award
    (0, "no-budget", "info"),
])
def test_budget_against_what_the_slots_award(budget, code, severity):
    c = campaign(regions=[(i, 2, ((2, 10),)) for i in range(10)], budget_points=budget)
    found = [f for f in lint(c).findings if f.code.startswith(("budget", "no-budget"))]
    assert [(f.code, f.severity) for f in found] == ([(code, severity)] if code else [])


def test_settings_that_look_like_mistakes():
    c = campaign(ends="2025-11-11T00:30:00+08:00", min_paid_cents=0, settle_on="placed",
                 regions=[(1, 30, ((10, 5), (20, 10), (30, 8))),
                          (2, 30, ((10, 5), (20, 10), (30, 8))),
                          (3, 10, ((10, 0),)),
                          (4, 5, ((5, 10), (10, 20)))])
    found = lint(c).findings
    assert {"window-short", "min-paid-zero", "settle-on-placed", "tier-not-monotone",
            "tier-zero-points", "tier-unused"} <= codes(found)
    mono = by_code(found, "tier-not-monotone")
    assert len(mono) == 1 and mono[0].data["regions"] == 2  # grouped by tier pattern
    assert "regions 1, 2" in mono[0].message
    # decreasing tiers (early orders pay more) are a design, not a typo
    c = campaign(regions=[(1, 20, ((10, 10), (20, 5)))])
    assert "tier-not-monotone" not in codes(lint(c).findings)


def test_agent_advisory_only_when_agents_are_paid():
    assert "agent-beneficiary" in codes(lint(campaign(beneficiary="agent")).findings)
    assert "agent-beneficiary" not in codes(lint(campaign(beneficiary="merchant")).findings)


def test_findings_come_errors_first():
    order = [f.severity for f in lint(load_campaign(BROKEN)).findings]
    assert order == sorted(order, key=("error", "warning", "info").index)


# -- the bounds hold against the real engine ------------------------------------------------

region_st = st.tuples(st.integers(1, 4),
                      st.lists(st.integers(0, 9), min_size=1, max_size=3))


@st.composite
def campaigns(draw: st.DrawFn) -> Campaign:
    regions = []
    for code, (slots, points) in enumerate(draw(st.lists(region_st, min_size=1, max_size=4))):
        n = min(len(points), slots)
        uptos = sorted(draw(st.sets(st.integers(1, slots - 1), min_size=n - 1,
                                    max_size=n - 1))) + [slots] if slots > 1 else [1]
        regions.append((code, slots, tuple(zip(uptos, points[:len(uptos)], strict=False))))
    return campaign(
        regions=regions,
        max_claims_per_beneficiary=draw(st.integers(0, 4)),
        max_claims_per_beneficiary_per_region=draw(st.integers(0, 3)),
        budget_points=draw(st.sampled_from([0, 5, 20, 60])),
        on_close=draw(st.sampled_from(["release", "forfeit"])),
    )


@settings(max_examples=60, deadline=None)
@given(c=campaigns(), orders=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3),
                                                st.booleans()), max_size=60))
def test_no_run_beats_the_preflight_bounds(c, orders):
    """Whatever the orders and closes, no beneficiary holds more than the bound, no more
    beneficiaries win than max_winners, and no more points are held than payable."""

    facts = campaign_facts(c)
    codes_ = [r.code for r in c.regions]
    events: list = []
    for i, (who, region, close) in enumerate(orders):
        events.append(Placed(order_id=f"o{i}", merchant_id="m", agent_id=f"a{who}",
                             region=codes_[region % len(codes_)], paid_cents=1000,
                             ts=STARTS_MS + i))
        if close:
            events.append(Closed(order_id=f"o{i // 2}", ts=STARTS_MS + i))
    with open_engine(c, "memory://") as engine:
        engine.apply(events)
        held = {who: b.pending + b.confirmed for who, b in engine.balances().items()}
    assert max(held.values(), default=0) <= facts.max_points_per_beneficiary
    assert sum(1 for v in held.values() if v > 0) <= facts.max_winners
    assert sum(held.values()) <= facts.payable_points


def test_the_bound_is_reached_when_one_beneficiary_takes_every_slot():
    c = campaign(regions=[(1, 3, ((1, 5), (3, 10))), (2, 2, ((2, 7),))],
                 max_claims_per_beneficiary_per_region=2)
    bound, limit = max_beneficiary_points(c)
    assert (bound, limit) == (10 + 10 + 14, "caps")
    # someone else takes slot 1 of region 1, so a1 gets the two 10-point slots
    events = [Placed(order_id="o0", merchant_id="m", agent_id="a0", region=1, paid_cents=500,
                     ts=STARTS_MS)]
    events += [Placed(order_id=f"o{i}", merchant_id="m", agent_id="a1", region=r,
                      paid_cents=500, ts=STARTS_MS + i) for i, r in enumerate((1, 1, 1, 2, 2), 1)]
    with open_engine(c, "memory://") as engine:
        engine.apply(events)
        held = engine.balance("a1")
    assert held.pending == bound


def test_every_finding_code_is_documented():
    import re
    from pathlib import Path

    import rewardcore.review.lint as lint_module

    source = Path(lint_module.__file__).read_text()
    found = set(re.findall(r'(?:"(?:error|warning|info)"|severity), "([a-z][a-z-]+)"', source))
    found -= {"warning", "info"}  # the Severity literal itself
    assert len(found) >= 20
    docs = (ROOT / "docs" / "campaign-checks.md").read_text()
    assert not {c for c in found | {"campaign-invalid"} if f"`{c}`" not in docs}

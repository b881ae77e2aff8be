"""Simulation through the real memory engine, and the HTML report it writes."""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from rewardcore import load_campaign
from rewardcore.review.lint import lint
from rewardcore.review.report import render_report
from rewardcore.review.simulate import Simulation, simulate
from rewardcore.review.stats import claim_series
from rewardcore.traffic import TrafficShape

from .conftest import EXAMPLES

SOUND = str(EXAMPLES / "d11-2026.toml")
BROKEN = str(EXAMPLES / "broken-2025.toml")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def figures_of(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="figures">\s*(.*?)\s*</script>', html,
                  re.S)
    assert m, "the report embeds its figures"
    return orjson.loads(m.group(1))


def pngs_of(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in
            re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def expected_from_state(state: dict, campaign) -> dict:
    """The report's headline figures, worked out independently from exported state."""
    claims = state["claims"]
    kept = [c for c in claims if c["state"] != "revoked"]
    by_region = Counter(c["region"] for c in (kept if campaign.releases else claims))
    return {
        "claims_awarded": state["outcomes"].get("awarded", 0),
        "claims": len(claims),
        "claims_revoked": sum(c["state"] == "revoked" for c in claims),
        "points": sum(c["points"] for c in kept),
        "balance_points": sum(b["pending"] + b["confirmed"] for b in state["balances"].values()),
        "points_redeemed": sum(b["redeemed"] for b in state["balances"].values()),
        "rewarded": len({c["beneficiary"] for c in kept}),
        "regions_awarded": len({c["region"] for c in claims}),
        "regions_lost": len({c["region"] for c in claims} - {c["region"] for c in kept}),
        "regions_sold_out": sum(n >= campaign.region_by_code[r].slots
                                for r, n in by_region.items()),
        "redemptions": dict(Counter(state["redemptions"].values())),
        "outcomes": state["outcomes"],
    }


@pytest.fixture(scope="module")
def sound_run() -> Iterator[Simulation]:
    campaign = load_campaign(SOUND)
    sim = simulate(campaign, TrafficShape(orders=30_000, seed=5, close_rate=0.1), batch=2048)
    yield sim
    sim.engine.close()


def test_simulation_figures_equal_the_engines_exported_state(sound_run):
    sim = sound_run
    state = sim.engine.export_state()
    want = expected_from_state(state, sim.engine.campaign)
    got = sim.data.figures()
    assert want["claims_awarded"] == want["claims"] == got["claims_awarded"] > 1000
    assert got["claims_revoked"] == want["claims_revoked"] > 0
    assert got["points"] == want["points"] == want["balance_points"]
    for key in ("points_redeemed", "rewarded", "regions_awarded", "regions_lost",
                "regions_sold_out", "redemptions", "outcomes"):
        assert got[key] == want[key], key
    assert sum(sim.data.regions_per_beneficiary.values()) == got["rewarded"]
    assert sum(sim.data.points_per_beneficiary) == got["points"]


def test_live_series_ends_where_the_state_is(sound_run):
    s, data = sound_run.data.series, sound_run.data
    assert s.source == "live"
    assert s.minutes[0] == 0 and s.minutes == sorted(s.minutes)
    assert len(s.minutes) > 10  # one point per batch
    assert s.awarded[-1] == data.claims
    assert s.revoked[-1] == data.claims_revoked
    assert s.budget_used[-1] == data.points
    assert s.sold_out[-1] == data.regions_sold_out
    assert max(s.budget_used) <= data.budget_points
    # rebuilt from the claims' order times, the totals agree too
    rebuilt = claim_series(sound_run.engine.campaign, sound_run.engine.claims())
    assert rebuilt.awarded[-1] == data.claims
    assert rebuilt.budget_used[-1] == data.points
    assert rebuilt.sold_out[-1] == data.regions_sold_out


def test_report_holds_its_pictures_and_the_runs_numbers(sound_run):
    data = sound_run.data
    html = render_report(data, lint(sound_run.engine.campaign), title="t", active=sound_run.active)
    images = pngs_of(html)
    assert len(images) >= 8
    assert all(img.startswith(PNG_MAGIC) and len(img) > 2000 for img in images)
    state = sound_run.engine.export_state()
    figures = figures_of(html)
    want = expected_from_state(state, sound_run.engine.campaign)
    assert figures["claims_awarded"] == want["claims"]
    assert figures["claims_revoked"] == want["claims_revoked"]
    assert figures["points"] == want["points"]
    # the visible summary shows the same numbers
    assert f"<td>claims awarded</td><td class=\"n\">{want['claims']:,}</td>" in html
    assert f"<td>claims revoked (closed orders)</td><td class=\"n\">" \
           f"{want['claims_revoked']:,}</td>" in html
    assert "unlocked 1 region" in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_simulate_command_report_matches_a_replay_of_the_same_stream(tmp_path, cli):
    """The CLI's report against an independent run: generate + replay of the same seed."""
    report, figure = tmp_path / "sim.html", tmp_path / "sim.png"
    out = cli("simulate", SOUND, "--orders", "20000", "--seed", "9", "--close-rate", "0.08",
             "--report", str(report), "--figure", str(figure))
    assert out.returncode == 0, out.stderr
    assert "claims" in out.stdout and "lint: 0 error(s)" in out.stdout
    assert f"report: {report}" in out.stdout
    html = report.read_text()
    img = pngs_of(html)[0]
    assert img.startswith(PNG_MAGIC)
    assert figure.read_bytes().startswith(PNG_MAGIC)

    events, state_path = tmp_path / "events.jsonl", tmp_path / "state.json"
    assert cli("generate", SOUND, "--orders", "20000", "--seed", "9", "--close-rate", "0.08",
              "--out", str(events)).returncode == 0
    replay = cli("replay", SOUND, str(events), "--state-out", str(state_path))
    assert replay.returncode == 0, replay.stderr
    state = orjson.loads(state_path.read_bytes())
    want = expected_from_state(state, load_campaign(SOUND))
    got = figures_of(html)
    assert got["claims_awarded"] == want["claims"]
    assert got["claims_revoked"] == want["claims_revoked"]
    assert got["points"] == want["points"]
    assert got["outcomes"] == want["outcomes"]
    assert got["redemptions"] == want["redemptions"]


def test_broken_campaign_rehearsal_shows_the_2025_failures(tmp_path):
    """A third of awarded regions lost to closes, under 2% of agents rewarded."""
    campaign = load_campaign(BROKEN)
    sim = simulate(campaign, TrafficShape(orders=40_000, participants=30_000, seed=2,
                                          close_rate=0.33))
    try:
        d = sim.data
        assert d.points <= 7500
        assert d.outcomes.get("budget_exhausted", 0) > 0
        assert 0.2 < d.regions_lost / d.regions_awarded < 0.45
        assert d.rewarded / d.participants < 0.02
        assert d.regions_sold_out == d.regions_awarded  # one slot, forfeited on close
        assert next(p for p in d.prizes if p.id == "laptop").holders_enough == 0
    finally:
        sim.engine.close()


def test_bad_arguments_are_refused(tmp_path, cli):
    out = cli("simulate", SOUND, "--orders", "0", "--report", str(tmp_path / "x.html"))
    assert out.returncode == 2 and "--orders" in out.stderr
    out = cli("simulate", SOUND, "--close-rate", "1.5", "--report", str(tmp_path / "x.html"))
    assert out.returncode == 2 and "--close-rate" in out.stderr
    assert not Path(tmp_path / "x.html").exists()

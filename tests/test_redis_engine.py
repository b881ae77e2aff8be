"""The Redis engine as a library and from the CLI: URLs, key layout, reset, views read by
another process, the sold-out cache, and exact equality with the reference on a peak-day
stream of the example campaign (decisions included), on one Redis and on a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rewardcore import ConfigError, Outcome, load_campaign, open_engine
from rewardcore.backends.redis import RedisClusterEngine, RedisEngine
from rewardcore.codec import decode_jsonl
from rewardcore.traffic import TrafficShape, generate

from .campaigns import make_campaign
from .conftest import assert_state_matches
from .events import closed, placed
from .servers import _cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "d11-2026.toml"
SERVERS = ["redis_url", "redis_cluster_url"]


@pytest.fixture(scope="module")
def peak():
    campaign = load_campaign(EXAMPLE)
    data = b"".join(generate(campaign, TrafficShape(orders=8000, seed=5, participants=400)))
    events, dead = decode_jsonl(data)
    assert not dead
    return campaign, data, events


@pytest.mark.parametrize("server", SERVERS)
def test_peak_stream_decisions_and_state_equal_reference(request, server, peak):
    campaign, _, events = peak
    engine = open_engine(campaign, request.getfixturevalue(server))
    ref = open_engine(campaign, "reference://")
    try:
        for k in range(0, len(events), 1000):
            got, want = engine.apply(events[k:k + 1000]), ref.apply(events[k:k + 1000])
            assert np.array_equal(got.outcome, want.outcome)
            assert np.array_equal(got.slot, want.slot)
            assert np.array_equal(got.points, want.points)
        assert_state_matches("redis://", engine.export_state(), ref.export_state())
        assert engine.stock() == ref.stock()
        for code in list(campaign.region_by_code)[:50]:
            assert engine.region_status(code) == ref.region_status(code)
        who = events[0].agent_id
        assert engine.balance(who) == ref.balance(who)
        counts = engine.export_state()["outcomes"]
        assert counts.get("sold_out") and counts.get("beneficiary_cap")  # the caps did bind
    finally:
        engine.close()


def test_urls_pick_the_engine_and_options(redis_url, redis_cluster_url, example_campaign):
    e = open_engine(example_campaign, redis_url + "?prefix=t1&buckets=4&soldout_ttl=0.5")
    assert type(e) is RedisEngine and e.prefix == "t1" and e.n_buckets == 4
    e.close()
    c = open_engine(example_campaign, redis_cluster_url)
    assert type(c) is RedisClusterEngine and len(c.nodes.all_nodes()) == 3
    c.close()
    for bad, what in ((redis_url + "?buckets=x", "buckets"),
                      (redis_url + "?prefix=a%20b", "prefix"),
                      ("redis://", "host"), (redis_cluster_url + "/3", "database 0")):
        with pytest.raises(ConfigError, match=what):
            open_engine(example_campaign, bad)


def test_keys_share_hash_tags_and_reset_is_scoped(redis_url):
    campaign = make_campaign(regions=((7, 2, ((2, 10),)),), budget_points=15)
    a = open_engine(campaign, redis_url + "?prefix=ka")
    b = open_engine(campaign, redis_url + "?prefix=kb")
    for e in (a, b):
        e.apply([placed("o1", region=7), placed("o2", region=99), closed("o3")])
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    keys = _cli(port, "KEYS", "*").split()
    assert keys and all(k.startswith(("ka:{test-campaign:", "kb:{test-campaign:")) for k in keys)
    tags = {k.split("{", 1)[1].split("}", 1)[0] for k in keys if k.startswith("ka:")}
    assert "test-campaign:7" in tags and "test-campaign:ledger" in tags
    assert any(t.startswith("test-campaign:o") for t in tags)
    a.reset()
    left = _cli(port, "KEYS", "*").split()
    assert left and all(k.startswith("kb:") for k in left)
    assert a.export_state() == {"balances": {}, "claims": [], "outcomes": {}, "redemptions": {}}
    assert b.export_state()["claims"][0]["order_id"] == "o1"
    a.close()
    b.close()


def _cli_run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "rewardcore", *args], capture_output=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("server", SERVERS)
def test_cli_replay_export_reset_across_processes(request, server, tmp_path):
    campaign = load_campaign(EXAMPLE)
    data = b"".join(generate(campaign, TrafficShape(orders=2500, seed=8, participants=150)))
    events, _ = decode_jsonl(data)
    url = request.getfixturevalue(server)
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    run = _cli_run("replay", str(EXAMPLE), str(path), "--backend", url, "--batch", "700")
    assert run.returncode == 0, run.stderr.decode()
    out = tmp_path / "state.json"
    run = _cli_run("export", str(EXAMPLE), "--backend", url, "--state-out", str(out))
    assert run.returncode == 0, run.stderr.decode()
    ref = open_engine(campaign, "reference://")
    for k in range(0, len(events), 700):
        ref.apply(events[k:k + 700])
    assert_state_matches("redis://", json.loads(out.read_text()), ref.export_state())
    run = _cli_run("reset", str(EXAMPLE), "--backend", url, "--yes")
    assert run.returncode == 0, run.stderr.decode()
    with open_engine(campaign, url) as engine:
        assert engine.export_state()["claims"] == []


def test_cli_names_an_unreachable_backend(tmp_path):
    run = _cli_run("export", str(EXAMPLE), "--backend", "redis://127.0.0.1:1/0",
                   "--state-out", str(tmp_path / "s.json"))
    assert run.returncode == 2
    assert b"redis://127.0.0.1:1/0" in run.stderr and b"cannot connect" in run.stderr


def _count_calls(engine: RedisEngine) -> dict[str, int]:
    calls: dict[str, int] = {}
    real = engine.nodes.run

    def run(batch, what):
        calls[what] = calls.get(what, 0) + 1
        return real(batch, what)

    engine.nodes.run = run  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("server", SERVERS)
def test_sold_out_regions_are_answered_without_the_regions(request, server):
    """Once a region is known sold out, its new orders cost only the order-bucket call
    (dedup stays in Redis), and the state still equals the reference."""
    campaign = make_campaign(regions=((1, 2, ((2, 5),)), (2, 1, ((1, 5),))),
                             max_claims_per_beneficiary=50,
                             max_claims_per_beneficiary_per_region=1)
    engine = open_engine(campaign, request.getfixturevalue(server))
    ref = open_engine(campaign, "reference://")
    fill = [placed("f1", 1, agent="a1"), placed("f2", 1, agent="a2"), placed("f3", 2, agent="a3")]
    engine.apply(fill)
    ref.apply(fill)
    assert set(engine._soldout) == {1, 2}
    calls = _count_calls(engine)
    batch = [placed(f"n{i}", 1 + i % 2, agent=f"a{i % 4}") for i in range(200)]
    batch += [placed("n0", 1), placed("n1", 1)]  # redeliveries: duplicates, from Redis
    got, want = engine.apply(batch), ref.apply(batch)
    assert calls == {"mark orders": 1}
    assert np.array_equal(got.outcome, want.outcome)
    assert Outcome.BENEFICIARY_REGION_CAP in set(got.outcome.tolist())
    assert got.outcome[-1] == got.outcome[-2] == Outcome.DUPLICATE
    # a redelivered winner also makes sure its region decided it (one region round)
    calls.clear()
    again = [placed("f1", 2)]
    assert engine.apply(again).outcome[0] == ref.apply(again).outcome[0] == Outcome.DUPLICATE
    assert calls["decide claims"] == 1
    assert_state_matches("redis://", engine.export_state(), ref.export_state())
    engine.close()


def test_a_release_elsewhere_reopens_a_cached_region(redis_url):
    """Client A knows region 1 sold out; client B closes an order there (on_close =
    release): A's next order in region 1 wins the released slot."""
    campaign = make_campaign(regions=((1, 1, ((1, 5),)),), on_close="release")
    a = open_engine(campaign, redis_url)
    b = open_engine(campaign, redis_url)
    a.apply([placed("o1", 1)])
    assert a.apply([placed("o2", 1)]).outcome[0] == Outcome.SOLD_OUT
    assert 1 in a._soldout
    assert b.apply([closed("o1")]).outcome[0] == Outcome.REVOKED
    d = a.apply([placed("o3", 1)])
    assert (d.outcome[0], d.slot[0]) == (Outcome.AWARDED, 1)
    a.close()
    b.close()


def test_retrying_a_batch_changes_nothing_but_duplicates(redis_url, peak):
    campaign, _, events = peak
    engine = open_engine(campaign, redis_url)
    part = events[:3000]
    engine.apply(part)
    before = engine.export_state()
    again = engine.apply(part)
    placed_n = sum(type(e).__name__ == "Placed" for e in part)
    after = engine.export_state()
    assert after["claims"] == before["claims"] and after["balances"] == before["balances"]
    assert after["outcomes"]["duplicate"] == before["outcomes"].get("duplicate", 0) + placed_n
    assert (again.outcome[[type(e).__name__ == "Placed" for e in part]]
            == Outcome.DUPLICATE).all()
    engine.close()


def test_a_budget_that_cannot_bind_is_not_tracked(redis_url):
    campaign = make_campaign(regions=((1, 3, ((3, 2**31 - 1),)),), budget_points=2**53 + 5)
    # every slot at once fits (and the figure is beyond what Lua counts exactly)
    with open_engine(campaign, redis_url) as e:
        assert e.budget == 0

"""The Redis engine as a library and from the CLI: URLs, key layout, reset, views read by
another process, the sold-out cache, and exact equality with the reference on a peak-day
stream of the example campaign (decisions included), on one Redis and on a cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from rewardcore import BackendError, ConfigError, EventError, Outcome, load_campaign, open_engine
from rewardcore.backends.redis import RedisClusterEngine, RedisEngine
from rewardcore.codec import decode_jsonl
from rewardcore.examples import example_path
from rewardcore.traffic import TrafficShape, generate

from .campaigns import make_campaign
from .events import closed, placed, redeem
from .servers import _cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = example_path("d11-2026")
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
        assert engine.export_state() == ref.export_state()
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
    e = open_engine(example_campaign, redis_url + "?prefix=t1&buckets=4&call_events=100")
    assert type(e) is RedisEngine and e.prefix == "t1" and e.n_buckets == 4
    assert e.call_events == 100
    e.close()
    c = open_engine(example_campaign, redis_cluster_url)
    assert type(c) is RedisClusterEngine and len(c.nodes.all_nodes()) == 3
    c.close()
    for bad, what in ((redis_url + "?buckets=x", "buckets"),
                      (redis_url + "?prefix=a%20b", "prefix"),
                      (redis_url + "?wait=-1", "wait"), (redis_url + "?buckets=0", "buckets"),
                      ("redis://", "host"), (redis_cluster_url + "/3", "database 0")):
        with pytest.raises(ConfigError, match=what):
            open_engine(example_campaign, bad)


def test_redis_py_connection_parameters_reach_the_client(redis_url, example_campaign):
    url = redis_url + "?socket_timeout=5&client_name=rc-url-test&prefix=cp&max_connections=4"
    with open_engine(example_campaign, url) as e:
        assert e.prefix == "cp"
        e.apply([placed("a")])  # a connection of the engine's pool is open now
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        clients = redis.Redis(port=port).client_list()
        assert any(c["name"] == "rc-url-test" for c in clients)


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
    assert "test-campaign:core" in tags
    assert any(t.startswith("test-campaign:o") for t in tags)
    a.reset()
    left = _cli(port, "KEYS", "*").split()
    assert left and all(k.startswith("kb:") for k in left)
    assert a.export_state() == {"balances": {}, "claims": [], "outcomes": {}, "redemptions": {}}
    assert b.export_state()["claims"][0]["order_id"] == "o1"
    a.close()
    b.close()


def test_order_buckets_are_hash_tables_from_their_first_write(redis_url):
    # A small hash kept as a listpack is scanned on every lookup; the bucket's header field
    # makes it a hash table at once, and is never taken for an order.
    from rewardcore._redis_wire import BUCKET_HEADER, BUCKET_HEADER_FIELD
    campaign = make_campaign(regions=((7, 2, ((2, 10),)),))
    e = open_engine(campaign, redis_url + "?prefix=hb&buckets=2")
    e.apply([placed("o1", region=7), placed("o2", region=7), closed("o3")])
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    buckets = [k for k in _cli(port, "KEYS", "hb:*").split() if k.endswith("}:ord")]
    assert buckets and set(buckets) <= {b for b, _ in e._buckets}
    for key in buckets:
        assert _cli(port, "OBJECT", "ENCODING", key).strip() == "hashtable"
        assert _cli(port, "HGET", key, BUCKET_HEADER_FIELD).strip() == BUCKET_HEADER
    assert len(BUCKET_HEADER) > 64  # Redis's default hash-max-listpack-value
    e.apply([placed("o1", region=7)])  # a redelivery still finds its order
    assert e.export_state()["outcomes"]["duplicate"] == 1
    assert [c["order_id"] for c in e.export_state()["claims"]] == ["o1", "o2"]
    e.close()


def test_core_records_are_packed_the_same_by_lua_and_python(redis_url):
    # The core keeps regions, beneficiaries and claims as binary records; the views read them
    # with Python's struct, the scripts write them with Lua's.
    import struct

    from rewardcore import _redis_wire as W
    client = redis.Redis.from_url(redis_url)
    for lua_format, py_format, size, values in (
            (W.REGION_FORMAT, W.REGION_STRUCT, W.REGION_REC, (3, 2, 1, 2.0**52 + 1)),
            (W.BENEFICIARY_FORMAT, W.BENEFICIARY_FORMAT, W.BENEFICIARY_REC, (-5, 7, 12, 3))):
        packed = client.eval("return struct.pack(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),"
                             " tonumber(ARGV[4]), tonumber(ARGV[5]))", 0, lua_format, *values)
        assert len(packed) == size == struct.calcsize(py_format)
        assert struct.unpack(py_format, packed) == values
    # a claim: numbers, then texts after their lengths (a beneficiary id of any length)
    from rewardcore.backends.redis import _claim
    who = "ag\u00e9nt|,:{}\n" * 700
    packed = client.eval(
        "return struct.pack(ARGV[1], 7, 10, 2.0^52 + 1, 3, 'c', #ARGV[2], ARGV[2], #ARGV[3],"
        " ARGV[3], #ARGV[4], ARGV[4], 1, '0', #ARGV[5], ARGV[5])", 0, W.CLAIM_FORMAT,
        "440305", "1794322815890", "1794322900000", who)
    claim = _claim("o\x00", packed)
    assert (claim.order_id, claim.region, claim.slot, claim.points, claim.rank, claim.state,
            claim.ts, claim.settled_ts, claim.revoked_ts, claim.beneficiary) == (
        "o\x00", 440305, 7, 10, 2**52 + 1, "confirmed", 1794322815890, 1794322900000, 0, who)
    client.close()


def test_another_region_list_under_the_same_campaign_id_is_refused(redis_url):
    # Region records are kept by the region's index in the campaign: a campaign of the same
    # id with another region list must not read them as its own.
    first = make_campaign(regions=((7, 2, ((2, 10),)), (8, 2, ((2, 10),))))
    e = open_engine(first, redis_url + "?prefix=rl")
    e.apply([placed("o1", region=8)])
    before = e.export_state()
    other = open_engine(make_campaign(regions=((8, 2, ((2, 10),)),)), redis_url + "?prefix=rl")
    with pytest.raises(BackendError, match="another region list"):
        other.apply([placed("o2", region=8)])
    for view in (other.summary, lambda: other.region_status(8)):
        with pytest.raises(BackendError, match="another region list"):
            view()
    assert e.export_state() == before
    assert e.region_status(8).remaining == 1 and e.region_status(7).remaining == 2
    other.close()
    e.close()
    # regions kept as a hash, as an earlier layout did: refused the same way
    old = open_engine(first, redis_url + "?prefix=rh")
    client = redis.Redis.from_url(redis_url)
    client.hset(old._k_regions, "8", "1|1|1|")
    with pytest.raises(BackendError, match="another version"):
        old.apply([placed("o1", region=8)])
    assert old.claims() == []
    # the same region list, its records written by a version with other records (whose
    # fingerprint did not name the layout): refused, not misread
    import zlib
    codes = ",".join(str(r.code) for r in first.regions)
    older = open_engine(first, redis_url + "?prefix=rv")
    client.set(older._k_regions, f"{zlib.crc32(codes.encode()):08x}".encode() + bytes(40))
    with pytest.raises(BackendError, match="another version"):
        older.apply([placed("o1", region=8)])
    assert older.claims() == []
    client.close()
    old.close()
    older.close()


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
    assert json.loads(out.read_text()) == ref.export_state()
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

    def run(batch, what, wait=None):
        calls[what] = calls.get(what, 0) + len(batch)
        return real(batch, what, wait)

    engine.nodes.run = run  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("server", SERVERS)
def test_a_batch_is_one_call_per_bucket_then_one_core_call(request, server, peak):
    """Whatever binds (caps, budget, sold-out regions, closes, redemptions), a batch costs
    one sequencer call and one bucket call per order bucket it touches on a cluster, or a
    single bucket call for all of them on a standalone server."""
    campaign, _, events = peak
    per_call = 8 if server == "redis_cluster_url" else 1
    engine = open_engine(campaign, request.getfixturevalue(server) + "?buckets=8")
    calls = _count_calls(engine)
    part = events[:4000]
    engine.apply(part[:2048])  # up to call_events (2,048 by default): one two-step call
    assert calls == {"mark orders": per_call, "decide batch": 1}
    calls.clear()
    engine.apply(part[2048:2058])  # a small batch touches fewer buckets
    assert calls.get("decide batch", 0) <= 1 and 1 <= calls["mark orders"] <= per_call
    calls.clear()
    big = open_engine(campaign, request.getfixturevalue(server) + "?buckets=8&call_events=1500")
    big.reset()
    calls = _count_calls(big)
    big.apply(part)  # split so that no script runs long: ceil(4000 / 1500) = 3 calls
    assert calls == {"mark orders": 3 * per_call, "decide batch": 3}
    ref = open_engine(campaign, "reference://")
    ref.apply(part)
    assert big.export_state() == ref.export_state()
    engine.close()
    big.close()


def test_generated_lua_constants_are_current():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_lua_constants.py"),
                          "--check"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    text = (ROOT / "src" / "rewardcore" / "lua" / "_constants.lua").read_text()
    assert text.startswith("-- GENERATED FROM src/rewardcore/outcomes.py")
    assert f"local SOLD_OUT = {int(Outcome.SOLD_OUT)}" in text
    for name in ("mark_orders", "decide_batch"):  # no outcome code written by hand
        body = (ROOT / "src" / "rewardcore" / "lua" / f"{name}.lua").read_text()
        assert not re.search(r"\b(AWARDED|SOLD_OUT|DUPLICATE)\s*=", body)


@pytest.mark.parametrize("server", SERVERS)
def test_ids_round_trip_exactly(request, server):
    """Ids holding separators, newlines, NUL, non-ASCII and the longest allowed come back as
    they went in, in claims, balances and redemptions; a longer one (10,000 characters) is
    refused before anything changes."""
    odd = ["a|b,c#d{e}f:g", "line\nbreak", "nul\x00inside", "地区-éü-🎁", "x" * 254,
           "|", "{", ":"]
    campaign = make_campaign(regions=((1, 20, ((20, 5),)),), settle_on="placed",
                             prizes=(("p|{x}:1", 5, 9),))
    engine = open_engine(campaign, request.getfixturevalue(server))
    ref = open_engine(campaign, "reference://")
    batch = [placed(f"o-{who}", 1, agent=who) for who in odd]
    batch += [closed("o-" + odd[1])]
    batch += [redeem(f"r-{who}", who, "p|{x}:1") for who in odd]
    got, want = engine.apply(batch), ref.apply(batch)
    assert np.array_equal(got.outcome, want.outcome)
    assert engine.export_state() == ref.export_state()
    assert {c.beneficiary for c in engine.claims()} == set(odd)
    assert engine.balance(odd[4]) == ref.balance(odd[4])
    before = engine.export_state()
    with pytest.raises(EventError, match="order_id"):
        engine.apply([placed("fine", 1), placed("y" * 10_000, 1)])
    assert engine.export_state() == before
    engine.close()


def test_wait_for_a_replica(redis_url, tmp_path):
    """?wait=1: each step's writes are confirmed by a replica before the batch goes on; the
    replica holds the decisions; without a replica the batch fails with BackendError."""
    from .servers import RedisServer

    campaign = make_campaign(regions=((1, 2, ((2, 5),)),))
    primary = RedisServer().start()
    replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(primary.port))).start()
    try:
        deadline = time.monotonic() + 30
        while "master_link_status:up" not in _cli(replica.port, "INFO", "replication"):
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        with open_engine(campaign, primary.url + "?wait=1&wait_timeout=5000") as engine:
            d = engine.apply([placed("o1", 1), placed("o2", 1), placed("o3", 1)])
            assert d.outcome.tolist() == [Outcome.AWARDED, Outcome.AWARDED, Outcome.SOLD_OUT]
            # the replica already holds the claims when apply returns
            with open_engine(campaign, replica.url) as view:
                assert sorted(c.order_id for c in view.claims()) == ["o1", "o2"]
        replica.stop()
        with (open_engine(campaign, primary.url + "?wait=1&wait_timeout=200") as engine,
              pytest.raises(BackendError, match="0 of 1 replica")):
            engine.apply([placed("o4", 1)])
    finally:
        replica.close()
        primary.close()


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


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_compiled_and_python_clients_send_the_same_items(redis_url, peak, compiled):
    """rewardcore._redis_batch and the plain-Python twins build the same bucket items; each
    client alone decides the peak stream exactly as the reference does."""
    from rewardcore.backends import redis as redis_backend

    if redis_backend._rb is None:
        pytest.skip("rewardcore._redis_batch is not built")
    campaign, _, events = peak
    engine = open_engine(campaign, redis_url)
    c = campaign
    fast = redis_backend._rb.bucket_items(events, 0, 3000, engine.n_buckets, c.starts_ms,
                                          c.ends_ms, c.info.min_paid_cents,
                                          engine._region_args, c.pays_merchant)
    slow = engine._bucket_items(events, 0, 3000)
    assert fast[0] == slow[0]
    assert fast[1].tolist() == slow[1] and fast[2].tolist() == slow[2]
    # and the same core items: two more clients (each on a prefix of its own, from the same
    # empty state) apply the same events, one compiled, one not
    sent = {}
    for twin in (True, False):
        probe = open_engine(campaign, f"{redis_url}?prefix=probe{int(twin)}")
        probe.compiled = twin
        probe._client_id = "twin"  # items name earlier calls by id
        real_core = probe._core
        probe._core = lambda call, core, *rest, twin=twin, real_core=real_core: (
            sent.setdefault(twin, []).append(core), real_core(call, core, *rest))
        probe.apply(events[:3000])
        probe.close()
    assert sent[True] == sent[False] and len(sent[True]) == 2
    engine.compiled = compiled
    ref = open_engine(campaign, "reference://")
    for k in range(0, len(events), 2000):
        got, want = engine.apply(events[k:k + 2000]), ref.apply(events[k:k + 2000])
        assert np.array_equal(got.outcome, want.outcome)
        assert np.array_equal(got.slot, want.slot)
    assert engine.export_state() == ref.export_state()
    engine.close()


def test_calls_larger_than_a_script_chunk_equal_the_reference(redis_url):
    """The scripts read and write in chunks of 2,000 fields (Lua's C stack bounds unpack()):
    one bucket and one call of 4,500 events (distinct beneficiaries, each order placed, then
    half closed, in the same call) go through several chunks of every read and write."""
    campaign = make_campaign(regions=((1, 3000, ((3000, 2),)), (2, 500, ((500, 3),))),
                             max_claims_per_beneficiary_per_region=1, on_close="release")
    orders = [placed(f"o{k}", region=1 + k % 2, agent=f"a{k}", merchant=f"m{k}")
              for k in range(3000)]
    events = orders + [closed(f"o{k}") for k in range(0, 3000, 2)]
    engine = open_engine(campaign, f"{redis_url}?buckets=1&call_events=5000")
    ref = open_engine(campaign, "reference://")
    got, want = engine.apply(events), ref.apply(events)
    assert np.array_equal(got.outcome, want.outcome) and np.array_equal(got.slot, want.slot)
    assert engine.export_state() == ref.export_state()
    assert sum(d == Outcome.REVOKED for d in got.outcome) == 1500
    engine.close()


def test_compiled_and_python_core_items_agree_on_extreme_ids_and_ts(redis_url):
    """The core's items of new candidates whose ids and ts are at the edges of what an
    event may hold (the longest id, non-ASCII, NUL; ts 0 and the largest int64) are the same
    bytes from both clients."""
    from rewardcore.backends import redis as redis_backend

    if redis_backend._rb is None:
        pytest.skip("rewardcore._redis_batch is not built")
    campaign = make_campaign()
    engine = open_engine(campaign, redis_url)
    events = [placed(oid, ts=ts) for oid, ts in (
        ("\u00e9\u4e2d|,#{}:\n" * 28 + "\u00e9\u4e2d|,", 0), ("o\x00", 2**63 - 1), ("o2", 10**15 + 7))]
    redis_backend._rb.check_batch(events, campaign.pays_merchant)  # all valid
    n = len(events)
    bucket, pos = np.zeros(n, np.int32), np.arange(n, dtype=np.int32)
    replies = [[redis_backend.NEW_CANDIDATE] * n]
    fast, fast_rows, fast_regs = redis_backend._rb.core_items(
        events, 0, bucket, pos, replies, engine._region_args, engine._prize_args,
        campaign.pays_merchant, np.zeros(n, np.uint8))
    slow, slow_rows, slow_regs = engine._core_items(events, 0, bucket.tolist(), pos.tolist(),
                                                    replies, np.zeros(n, np.uint8))
    assert redis_backend.CoreItems(*fast) == slow and fast_rows == slow_rows
    assert fast_regs == slow_regs
    for k, ev in enumerate(events):  # each reads back as its order id and ts
        at = slow.items[4 * k + 3] - 1
        assert redis_backend._texts(slow.ids, at, (4, 1)) == [ev.order_id, str(ev.ts)]
    engine.close()

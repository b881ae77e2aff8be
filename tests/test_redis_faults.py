"""Faults: a Redis node restarted during a run, the script cache flushed mid-run, a client
killed between two steps of a batch. Afterwards the state is consistent, nothing was
awarded twice, and a rerun of the same events changes nothing but the duplicate count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rewardcore import BackendError, load_campaign, open_engine
from rewardcore.codec import decode_jsonl
from rewardcore.traffic import TrafficShape, generate

from .conftest import assert_state_matches
from .servers import RedisCluster, RedisServer, _cli
from .test_redis_races import check_invariants, hot_campaign

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "d11-2026.toml"


@pytest.fixture(scope="module")
def d11_events():
    campaign = load_campaign(EXAMPLE)
    data = b"".join(generate(campaign, TrafficShape(orders=6000, seed=11, participants=300)))
    events, dead = decode_jsonl(data)
    assert not dead
    return campaign, events


def reference_state(campaign, events, batch=512):
    ref = open_engine(campaign, "reference://")
    for k in range(0, len(events), batch):
        ref.apply(events[k:k + batch])
    return ref.export_state(), ref.stock()


def plus_duplicates(state: dict, n: int) -> dict:
    outcomes = dict(state["outcomes"])
    outcomes["duplicate"] = outcomes.get("duplicate", 0) + n
    return {**state, "outcomes": outcomes}


def test_node_restart_surfaces_backend_error_and_retry_is_exact(d11_events):
    """A crashed and restarted Redis (with AOF fsync always, as production must run it)
    loses nothing; calls while it is down fail with BackendError, the client reconnects by
    itself, and applying that batch again gives exactly the reference state."""
    campaign, events = d11_events
    server = RedisServer(extra=("--appendonly", "yes", "--appendfsync", "always")).start()
    try:
        engine = open_engine(campaign, server.url)
        engine.reset()
        batches = [events[k:k + 512] for k in range(0, len(events), 512)]
        for n, batch in enumerate(batches):
            if n == len(batches) // 2:
                server.proc.send_signal(signal.SIGKILL)  # no goodbye: a crash
                server.proc.wait()
                server.proc = None
                with pytest.raises(BackendError, match="127.0.0.1"):
                    engine.apply(batch)  # the node is down
                server.start()  # back, from its append-only file
            engine.apply(batch)  # a retry after the error (or the first try)
        ref_state, ref_stock = reference_state(campaign, events)
        assert_state_matches("redis://", engine.export_state(), ref_state)
        assert engine.stock() == ref_stock
        check_invariants(engine, campaign)
        engine.close()
    finally:
        server.close()


def test_cluster_master_crash_names_the_node_and_retry_is_exact(d11_events):
    """One master of a 3-master cluster (AOF fsync always) is killed mid-run: calls that need
    it fail with BackendError naming its address; once it is back (same slots, from its
    nodes.conf and append-only file), applying the batch again awards exactly what the
    reference awards."""
    campaign, events = d11_events
    cluster = RedisCluster(3)
    for node in cluster.nodes:
        node.extra = ("--appendonly", "yes", "--appendfsync", "always")
    cluster.start()
    try:
        engine = open_engine(campaign, cluster.url)
        engine.reset()
        victim = cluster.nodes[1]
        batches = [events[k:k + 512] for k in range(0, len(events), 512)]
        for n, batch in enumerate(batches):
            if n == len(batches) // 2:
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait()
                victim.proc = None
                with pytest.raises(BackendError, match=str(victim.port)):
                    engine.apply(batch)
                victim.start()
                deadline = time.monotonic() + 30
                while not all("cluster_state:ok" in _cli(x.port, "CLUSTER", "INFO")
                              for x in cluster.nodes):
                    assert time.monotonic() < deadline, "cluster did not recover"
                    time.sleep(0.1)
            engine.apply(batch)
        # The failed batch's orders that the two healthy masters had already marked count
        # as redelivered (duplicate) on the retry, as in the reference; nothing else moves.
        ref_state, ref_stock = reference_state(campaign, events)
        state = engine.export_state()
        extra = state["outcomes"]["duplicate"] - ref_state["outcomes"].get("duplicate", 0)
        assert 0 < extra <= len(batches[len(batches) // 2])
        assert_state_matches("redis://", state, plus_duplicates(ref_state, extra))
        assert engine.stock() == ref_stock
        check_invariants(engine, campaign)
        engine.close()
    finally:
        cluster.close()


@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_script_flush_mid_run_is_transparent(request, server, d11_events, redis_cluster):
    campaign, events = d11_events
    url = request.getfixturevalue(server)
    engine = open_engine(campaign, url)
    engine.reset()
    ports = ([n.port for n in redis_cluster.nodes] if "cluster" in url
             else [int(url.rsplit(":", 1)[1].split("/")[0])])
    for k in range(0, len(events), 512):
        if k and k % 2048 == 0:
            for port in ports:
                assert _cli(port, "SCRIPT", "FLUSH") == "OK"
        engine.apply(events[k:k + 512])
    ref_state, ref_stock = reference_state(campaign, events)
    assert_state_matches("redis://", engine.export_state(), ref_state)
    assert engine.stock() == ref_stock
    engine.close()


def test_unreachable_server_is_a_backend_error(d11_events):
    campaign, _ = d11_events
    server = RedisServer().start()
    url = server.url
    server.close()
    with pytest.raises(BackendError, match="cannot connect"):
        open_engine(campaign, url)


KILLER = textwrap.dedent("""
    import os, sys
    from rewardcore import open_engine, parse_campaign
    from rewardcore.codec import decode_jsonl
    url, toml, events_path, step, nth = sys.argv[1:6]
    campaign = parse_campaign(open(toml).read(), toml)
    events, _ = decode_jsonl(open(events_path, "rb").read())
    engine = open_engine(campaign, url)
    seen = 0
    real = engine.nodes.run
    def run(calls, what):
        global seen
        out = real(calls, what)
        if what == step:
            seen += 1
            if seen == int(nth):
                os._exit(17)  # killed right after this step, before the next one
        return out
    engine.nodes.run = run
    for k in range(0, len(events), 40):
        engine.apply(events[k:k + 40])
    os._exit(0)
""")


@pytest.mark.parametrize("step", ["mark orders", "grant capacity", "decide claims"])
@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_client_killed_between_steps(request, tmp_path, server, step):
    """A client dies between two steps of a batch; a fresh client reruns every event.
    The invariants hold (a grant the dead client never settled only holds capacity back),
    balances equal the claims, and a second rerun changes nothing but duplicates."""
    from .campaigns import campaign_toml
    from .test_redis_races import PROCS, stream

    url = request.getfixturevalue(server)
    campaign = hot_campaign()
    toml = tmp_path / "c.toml"
    info = campaign.info
    toml.write_text(campaign_toml(
        regions=[(r.code, r.slots, tuple((t.upto, t.points) for t in r.tiers))
                 for r in campaign.regions],
        prizes=[(p.id, p.cost_points, p.stock) for p in campaign.prizes],
        on_close=info.on_close, settle_on=info.settle_on, budget_points=info.budget_points,
        max_claims_per_beneficiary=info.max_claims_per_beneficiary,
        max_claims_per_beneficiary_per_region=info.max_claims_per_beneficiary_per_region))
    events = [e for w in range(2) for e in stream(w, 200, 3)]
    assert PROCS >= 2
    import msgspec

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(msgspec.json.encode(e) for e in events) + b"\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    proc = subprocess.run([sys.executable, "-c", KILLER, url, str(toml), str(path), step, "3"],
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]

    engine = open_engine(campaign, url)
    try:
        for k in range(0, len(events), 40):
            engine.apply(events[k:k + 40])
        first = engine.export_state()
        check_invariants(engine, campaign, open_grants_ok=True)
        open_grants = engine.rebuild_ledger()  # with no client running: exact again
        assert open_grants == (0 if step == "mark orders" else 1)
        check_invariants(engine, campaign)
        assert engine.export_state() == first
        for k in range(0, len(events), 40):
            engine.apply(events[k:k + 40])
        n_placed = sum(type(e).__name__ == "Placed" for e in events)
        assert engine.export_state() == plus_duplicates(first, n_placed)
        check_invariants(engine, campaign)
    finally:
        engine.close()

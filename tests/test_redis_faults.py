"""Faults that land inside a batch, between its bucket step and its core step (through the
engine's test hook, so where the fault lands does not depend on timing): the server
SIGKILLed (AOF always) and restarted, the engine's connections killed (CLIENT KILL), the
script cache flushed, a cluster master killed, a client process that dies. Each batch is
retried after BackendError, as docs/redis.md prescribes; afterwards claims, balances,
redemptions and stock equal a run without faults, and the outcome counts differ only by
the retried placed events, counted once more as duplicates."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from rewardcore import BackendError, Placed, load_campaign, open_engine
from rewardcore.codec import decode_jsonl
from rewardcore.examples import example_path
from rewardcore.traffic import TrafficShape, generate

from .servers import RedisCluster, RedisServer, _cli
from .test_redis_races import check_invariants, hot_campaign, stream

EXAMPLE = example_path("d11-2026")
BATCH = 400


@pytest.fixture(scope="module")
def d11_events():
    campaign = load_campaign(EXAMPLE)
    data = b"".join(generate(campaign, TrafficShape(orders=6000, seed=11, participants=300)))
    events, dead = decode_jsonl(data)
    assert not dead
    return campaign, events


def reference_state(campaign, events, batch=BATCH):
    ref = open_engine(campaign, "reference://")
    for k in range(0, len(events), batch):
        ref.apply(events[k:k + batch])
    return ref.export_state(), ref.stock()


def plus_duplicates(state: dict, n: int) -> dict:
    outcomes = dict(state["outcomes"])
    outcomes["duplicate"] = outcomes.get("duplicate", 0) + n
    return {**state, "outcomes": outcomes}


def n_placed(batch) -> int:
    return sum(type(e) is Placed for e in batch)


def replay_with_faults(engine, events, fault, picks: set[int], recover=None) -> int:
    """Apply `events` in batches; in the batches numbered in `picks`, `fault()` runs between
    the bucket step and the core step. A batch that raises BackendError is applied again
    (after `recover()`). Returns the placed events of the batches that were retried."""
    retried = 0
    batches = [events[k:k + BATCH] for k in range(0, len(events), BATCH)]
    for n, batch in enumerate(batches):
        engine._between_steps = fault if n in picks else None
        try:
            engine.apply(batch)
        except BackendError:
            engine._between_steps = None
            retried += n_placed(batch)
            if recover is not None:
                recover()
            engine.apply(batch)  # the retry the caller owes
    engine._between_steps = None
    return retried


def _kill(server: RedisServer) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)  # no goodbye: a crash
    server.proc.wait()
    server.proc = None


def test_server_crash_inside_batches_retry_is_exact(d11_events):
    """A standalone Redis with AOF fsync always is SIGKILLed after the bucket step of random
    batches. Either it is started again (from its append-only file) before the core step
    runs, which then reconnects and reloads its script by itself; or it is still down, the
    core step fails, and the batch is retried once it is back."""
    campaign, events = d11_events
    server = RedisServer(extra=("--appendonly", "yes", "--appendfsync", "always")).start()
    try:
        engine = open_engine(campaign, server.url)
        engine.reset()

        crashes = 0

        def crash() -> None:
            nonlocal crashes
            crashes += 1
            _kill(server)
            if crashes % 2:
                server.start()
        n_batches = -(-len(events) // BATCH)
        picks = set(random.Random(3).sample(range(n_batches), 4))
        retried = replay_with_faults(engine, events, crash, picks, recover=server.start)
        assert crashes == 4 and retried > 0
        ref_state, ref_stock = reference_state(campaign, events)
        assert engine.export_state() == plus_duplicates(ref_state, retried)
        assert engine.stock() == ref_stock
        check_invariants(engine, campaign)
        engine.close()
    finally:
        server.close()


@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_connections_killed_and_scripts_flushed_inside_batches(request, server, d11_events,
                                                               redis_cluster):
    """CLIENT KILL of the engine's connections (the core step fails: retried) and SCRIPT
    FLUSH (the core step reloads its script: no error) between the two steps."""
    campaign, events = d11_events
    url = request.getfixturevalue(server)
    ports = ([n.port for n in redis_cluster.nodes] if "cluster" in url
             else [int(url.rsplit(":", 1)[1].split("/")[0])])
    engine = open_engine(campaign, url)
    engine.reset()
    rng = random.Random(5)
    kinds: list[str] = []

    def fault() -> None:
        kind = rng.choice(["kill", "flush"])
        kinds.append(kind)
        for port in ports:
            if kind == "kill":
                _cli(port, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            else:
                assert _cli(port, "SCRIPT", "FLUSH") == "OK"
    n_batches = -(-len(events) // BATCH)
    picks = set(rng.sample(range(n_batches), 6))
    retried = replay_with_faults(engine, events, fault, picks)
    assert "kill" in kinds and "flush" in kinds
    ref_state, ref_stock = reference_state(campaign, events)
    assert engine.export_state() == plus_duplicates(ref_state, retried)
    assert engine.stock() == ref_stock
    check_invariants(engine, campaign)
    engine.close()


def test_cluster_master_crash_inside_a_batch_retry_is_exact(d11_events):
    """The master holding the sequencer tag is killed after the bucket step (some buckets
    live on it too); the core step fails naming it; once it is back (same slots, from its
    nodes.conf and append-only file) the retried batch ends where a run without the crash
    ends. A master killed before a batch: the bucket step fails part-way, the retry too is
    exact."""
    campaign, events = d11_events
    cluster = RedisCluster(3)
    for node in cluster.nodes:
        node.extra = ("--appendonly", "yes", "--appendfsync", "always")
    cluster.start()
    try:
        engine = open_engine(campaign, cluster.url)
        engine.reset()
        core_port = int(engine.nodes.node_of(engine._k_claims).name.rsplit(":", 1)[1])
        victim = next(n for n in cluster.nodes if n.port == core_port)
        other = next(n for n in cluster.nodes if n.port != core_port)

        def back(node: RedisServer) -> None:
            node.start()
            deadline = time.monotonic() + 30
            while not all("cluster_state:ok" in _cli(x.port, "CLUSTER", "INFO")
                          for x in cluster.nodes):
                assert time.monotonic() < deadline, "cluster did not recover"
                time.sleep(0.1)

        batches = [events[k:k + BATCH] for k in range(0, len(events), BATCH)]
        for n, batch in enumerate(batches):
            if n == 3:
                engine._between_steps = lambda: _kill(victim)
                with pytest.raises(BackendError, match=str(victim.port)):
                    engine.apply(batch)
                engine._between_steps = None
                back(victim)
            elif n == 9:
                _kill(other)
                with pytest.raises(BackendError, match=str(other.port)):
                    engine.apply(batch)
                back(other)
            engine.apply(batch)  # the first try, or the retry after the error
        ref_state, ref_stock = reference_state(campaign, events)
        state = engine.export_state()
        dup = state["outcomes"]["duplicate"] - ref_state["outcomes"].get("duplicate", 0)
        assert n_placed(batches[3]) < dup <= n_placed(batches[3]) + n_placed(batches[9])
        assert state == plus_duplicates(ref_state, dup)
        assert engine.stock() == ref_stock
        check_invariants(engine, campaign)
        engine.close()
    finally:
        cluster.close()


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
    url, toml, events_path, nth = sys.argv[1:5]
    campaign = parse_campaign(open(toml).read(), toml)
    events, _ = decode_jsonl(open(events_path, "rb").read())
    engine = open_engine(campaign, url)
    seen = 0
    def die():
        global seen
        seen += 1
        if seen == int(nth):
            os._exit(17)  # dies after the bucket step, before the core step
    engine._between_steps = die
    for k in range(0, len(events), 40):
        engine.apply(events[k:k + 40])
    os._exit(0)
""")


@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_client_killed_between_steps(request, tmp_path, server):
    """A client process dies between the two steps of its third batch; a fresh client
    reruns every event (an at-least-once stream): the state equals the reference's, with
    the dead client's marked orders counted once more as duplicates; the invariants hold
    and a second rerun changes nothing but duplicates."""
    from .test_redis_races import _toml

    url = request.getfixturevalue(server)
    campaign = hot_campaign()
    toml = tmp_path / "c.toml"
    toml.write_text(_toml(campaign))
    events = [e for w in range(2) for e in stream(w, 200, 3)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(msgspec.json.encode(e) for e in events) + b"\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    proc = subprocess.run([sys.executable, "-c", KILLER, url, str(toml), str(path), "3"],
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    done = events[:80]  # the two batches the dead client finished
    third = events[80:120]

    engine = open_engine(campaign, url)
    try:
        for k in range(0, len(events), 40):
            engine.apply(events[k:k + 40])
        ref = open_engine(campaign, "reference://")
        for k in range(0, len(events), 40):
            ref.apply(events[k:k + 40])
        first = engine.export_state()
        # every placed event the dead client had sent counts once more (as a duplicate)
        assert first == plus_duplicates(ref.export_state(), n_placed(done) + n_placed(third))
        check_invariants(engine, campaign)
        for k in range(0, len(events), 40):
            engine.apply(events[k:k + 40])
        assert engine.export_state() == plus_duplicates(first, n_placed(events))
        check_invariants(engine, campaign)
    finally:
        engine.close()


@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_a_redelivery_overtaking_a_batch_decides_each_order_once(request, server, d11_events):
    """Client A has marked its batch in the buckets when client B, redelivering the same
    events, reaches the core first: B's duplicates adopt A's orders (A's core call is
    cancelled), and A, refused, sends its items again as references. Each order is decided
    once; A still answers the first delivery's decisions; every placed event is counted
    exactly once (B's as duplicates)."""
    campaign, events = d11_events
    url = request.getfixturevalue(server)
    a = open_engine(campaign, url)
    a.reset()
    b = open_engine(campaign, url)
    ref = open_engine(campaign, "reference://")
    head, batch = events[:1200], events[1200:1600]
    a.apply(head)
    ref.apply(head)
    b_decisions = []
    a._between_steps = lambda: b_decisions.append(b.apply(batch))
    got = a.apply(batch)
    want = ref.apply(batch)
    # A's placed events keep their decisions (B's closes and completions were applied by B,
    # so A's own are answered as repeats: unchanged)
    placed = np.array([type(e) is Placed for e in batch])
    assert (got.outcome[placed] == want.outcome[placed]).all()
    assert (got.slot[placed] == want.slot[placed]).all()
    if hasattr(got, "rank"):
        assert (got.rank[placed] == want.rank[placed]).all()
    assert (b_decisions[0].outcome[placed] == 1).all()  # B's placed events: duplicates
    assert a.export_state() == plus_duplicates(ref.export_state(), n_placed(batch))
    check_invariants(a, campaign)
    a.close()
    b.close()

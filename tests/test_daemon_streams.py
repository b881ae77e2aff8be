"""The daemon's Redis Streams consumer against a real redis-server: started daemon
processes in one consumer group, killed and stopped mid-stream."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rewardcore import load_campaign, open_engine
from rewardcore.engine import dump_state

from .test_daemon import (
    START_MS,
    Daemon,
    campaign_file,
    engine_backends,
    expected_rows,
    killing_at_exit,
    start,
    start_together,
    thread_events,
)

STREAM, GROUP = "orders", "rc"


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    yield from killing_at_exit()


def connect(redis_url: str) -> Any:
    """A Redis client for the test's own reads and writes (typed loosely: redis-py's reply
    types are unions the test does not need to narrow)."""
    return redis.Redis.from_url(redis_url)


def source(redis_url: str, consumer: str, **params: Any) -> str:
    hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
    query = "&".join(f"{k}={v}" for k, v in {"group": GROUP, "consumer": consumer,
                                             **params}.items())
    return f"redis-stream://{hostport}/{STREAM}?{query}"


def xadd_all(r: Any, entries: list[dict[str, bytes]]) -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(STREAM, fields)
    return pipe.execute()


def group_info(r: Any) -> dict[str, Any]:
    for g in r.xinfo_groups(STREAM):
        if g["name"] == GROUP.encode():
            return g
    raise AssertionError(f"group {GROUP} missing")


def wait_drained(r: Any, decisions: int, dead: int = 0, timeout: float = 60) -> None:
    """Until every entry was delivered and acknowledged, with its decision or dead letter."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        g = group_info(r)
        if (g["lag"] == 0 and g["pending"] == 0 and r.xlen(f"{STREAM}:decisions") >= decisions
                and r.xlen(f"{STREAM}:dead") >= dead):
            return
        time.sleep(0.05)
    raise AssertionError(f"stream not drained: {group_info(r)}, decisions "
                         f"{r.xlen(f'{STREAM}:decisions')}/{decisions}, dead "
                         f"{r.xlen(f'{STREAM}:dead')}/{dead}")


def read_decisions(r: Any, consumer: str | None = None,
                   ) -> list[tuple[bytes, dict[str, Any], int]]:
    """(source entry id, decision, deliveries) per entry of the decisions stream (of one
    consumer, or all)."""
    return [(f[b"src"], json.loads(f[b"d"]), int(f.get(b"deliveries", 1)))
            for _, f in r.xrange(f"{STREAM}:decisions")
            if consumer is None or f[b"consumer"] == consumer.encode()]


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def placed_line(oid: str, region: int, agent: str) -> bytes:
    return json.dumps({"type": "placed", "order_id": oid, "merchant_id": "m", "agent_id": agent,
                       "region": region, "paid_cents": 100, "ts": START_MS + 1}).encode()


def test_consumer_applies_claims_and_dead_letters(tmp_path: Path, daemons: list[Daemon],
                                                  redis_url: str) -> None:
    """One consumer: entries left by a dead consumer are claimed (one of them dead-lettered
    after too many deliveries), bad entries are dead-lettered, every other entry gets the
    reference's decision in stream order, and the state is the reference's."""
    camp = campaign_file(tmp_path / "c.toml", regions=40, slots=5,
                         max_claims_per_beneficiary_per_region=2)
    r = connect(redis_url)
    r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    # a consumer that took two entries and died: one was delivered 9 times already
    ghost = xadd_all(r, [{"e": placed_line("ghost-1", 1, "g")},
                         {"e": placed_line("ghost-2", 2, "g")}])
    r.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=2)
    r.xclaim(STREAM, GROUP, "ghost", 0, [ghost[1]], retrycount=9)
    lines = thread_events(0, list(range(1, 41)), 1500, seed=7)
    bad = [{"e": b'{"type":"placed","order_id":'}, {"payload": b"{}"},
           {"e": b'{"type":"placed","order_id":"z","merchant_id":"m","agent_id":"a",'
                 b'"region":1,"paid_cents":"ten","ts":1}'}]
    entries: list[dict[str, bytes]] = [{"e": line} for line in lines]
    for k, b in enumerate(bad):
        entries.insert(300 * (k + 1), b)
    ids = xadd_all(r, entries)
    time.sleep(0.4)  # the ghost's entries are now idle longer than claim_idle

    d = start(daemons, workdir(tmp_path, "d"), camp, "--source",
              source(redis_url, "c1", batch=64, claim_idle=300, claim_every=200, block=200))
    wait_drained(r, decisions=1 + len(lines), dead=4)

    got = read_decisions(r)
    assert Counter(src for src, _, _ in got) == Counter([ghost[0], *(
        i for i, e in zip(ids, entries, strict=True) if e.get("e") in lines)])
    ref = open_engine(load_campaign(camp), "reference://")
    want = expected_rows(ref, [placed_line("ghost-1", 1, "g"), *lines])
    assert [row for _, row, _ in got] == want
    assert [n for _, _, n in got] == [2] + [1] * len(lines)  # the claimed one was redelivered

    dead = {f[b"src"]: f for _, f in r.xrange(f"{STREAM}:dead")}
    assert set(dead) == {ghost[1], *(i for i, e in zip(ids, entries, strict=True)
                                     if e.get("e") not in lines)}
    assert b"delivered 10 times" in dead[ghost[1]][b"reason"]
    reasons = [dead[i][b"reason"].decode() for i, e in zip(ids, entries, strict=True)
               if e.get("e") not in lines]
    assert "field 'e'" in reasons[0] and "no field 'e'" in reasons[1]
    assert "paid_cents" in reasons[2]
    assert dead[ids[entries.index(bad[0])]][b"e"] == bad[0]["e"]  # kept as received

    status, _, state = d.request("GET", "/v1/state")
    assert status == 200 and state == dump_state(ref.export_state())
    assert d.metric("rewardcore_stream_entries_total", 'result="applied"') == 1 + len(lines)
    assert d.metric("rewardcore_stream_entries_total", 'result="dead_lettered"') == 4
    assert d.metric("rewardcore_dead_letters_total", 'source="stream"') == 4
    lag = f'group="{GROUP}",stream="{STREAM}"'
    deadline = time.monotonic() + 30  # the lag gauge is polled once a second
    while d.metric("rewardcore_stream_lag", lag) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.metric("rewardcore_stream_lag", lag) == 0
    assert d.stop() == 0
    assert any(x["event"] == "stream_claimed" for x in d.logs())


class Producer:
    """XADDs new orders (o0, o1, ...) in small chunks on a thread until stopped, so that a
    daemon is busy with entries whenever the test looks; `ids` are the entries written."""

    def __init__(self, redis_url: str, chunk: int = 50, pause: float = 0.02) -> None:
        self.r = connect(redis_url)
        self.chunk, self.pause = chunk, pause
        self.ids: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = len(self.ids)
            self.ids += xadd_all(self.r, [{"e": placed_line(f"o{i}", 1 + i % 40, f"a{i % 97}")}
                                          for i in range(at, at + self.chunk)])
            time.sleep(self.pause)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.r.close()


def _freeze_with_pending(d: Daemon, r: Any, consumer: str) -> int:
    """SIGSTOP the daemon at a moment it holds delivered, unacknowledged entries."""
    for _ in range(200):
        os.kill(d.pid, signal.SIGSTOP)
        time.sleep(0.05)
        n = _pending_of(r, consumer)
        if n:
            return n
        os.kill(d.pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the daemon never held a pending entry")


@pytest.mark.parametrize("backend", engine_backends())
def test_two_daemons_one_killed_nothing_lost_or_doubled(backend: str, tmp_path: Path,
                                                        daemons: list[Daemon],
                                                        redis_url: str) -> None:
    """Two daemons share a group; one is SIGKILLed holding entries; the other claims them.
    Every entry ends with exactly one decision, and (with a shared engine) every order has
    exactly one claim, whatever was redelivered."""
    camp = campaign_file(tmp_path / "c.toml", regions=40, slots=10_000)  # nothing sells out
    url = redis_url if backend == "redis" else "memory://"
    # claim_idle: long enough that a live daemon on a loaded machine keeps its entries
    params = dict(batch=50, claim_idle=2000, claim_every=200, block=100)
    a, b = start_together(
        daemons,
        *((workdir(tmp_path, c), camp, ["--backend", url, "--source",
                                        source(redis_url, c, **params)]) for c in "ab"))
    r = connect(redis_url)
    with Producer(redis_url) as producer:
        deadline = time.monotonic() + 60
        while r.xlen(f"{STREAM}:decisions") < 400 and time.monotonic() < deadline:
            time.sleep(0.02)
        held = _freeze_with_pending(a, r, "a")
        a.kill()  # SIGKILL: no chance to finish or hand back anything
        time.sleep(0.3)  # b alone for a while, under load
    ids = producer.ids
    n = len(ids)
    wait_drained(r, decisions=n)

    got = read_decisions(r)
    per_entry = Counter(src for src, _, _ in got)
    assert set(per_entry) == set(ids) and max(per_entry.values()) == 1
    assert r.xlen(f"{STREAM}:dead") == 0
    by_consumer = Counter(x["event"] for x in b.logs())
    assert by_consumer["stream_claimed"] >= 1, "b never claimed a's pending entries"
    redelivered = [(row, k) for _, row, k in got if k > 1]
    assert len(redelivered) >= held
    for _, row, k in got:
        # every order is new; only a redelivered entry may find its order already applied
        # (by the killed daemon, with a shared engine)
        assert row["outcome"] == "awarded" or (row["outcome"] == "duplicate" and k > 1), row
    status, state = b.get("/v1/state")
    assert status == 200
    if backend == "redis":
        # one engine for both daemons: every order claimed once, no slot given twice
        assert sorted(c["order_id"] for c in state["claims"]) == sorted(f"o{i}"
                                                                      for i in range(n))
        slots: dict[int, list[int]] = {}
        for c in state["claims"]:
            slots.setdefault(c["region"], []).append(c["slot"])
        assert all(sorted(s) == list(range(1, len(s) + 1)) for s in slots.values())
        assert state["outcomes"]["awarded"] == n
        assert state["outcomes"].get("duplicate", 0) == sum(
            row["outcome"] == "duplicate" for row, _ in redelivered)
        pending = sum(bal["pending"] for bal in state["balances"].values())
        assert pending == sum(c["points"] for c in state["claims"])
    else:
        # each memory:// daemon keeps its own claims (b warns about that in its log): b's
        # engine holds exactly the orders b decided, the ones it took over from a included
        assert any(x["event"] == "stream_group_shared" for x in b.logs() + a.logs()), b.log_text()
        claimed = {c["order_id"] for c in state["claims"]}
        decided = {row["order_id"] for _, row, _ in read_decisions(r, "b")}
        taken = b.metric("rewardcore_stream_entries_total", 'result="taken_over"')
        assert decided <= claimed and len(claimed - decided) == taken
    assert b.stop() == 0


def _pending_of(r: Any, consumer: str) -> int:
    held = r.xpending(STREAM, GROUP)["consumers"]
    return next((int(c["pending"]) for c in held if c["name"] == consumer.encode()), 0)


def test_a_consumer_too_slow_for_claim_idle_adds_no_second_decision(
        tmp_path: Path, daemons: list[Daemon], redis_url: str) -> None:
    """A daemon frozen (SIGSTOP) while holding entries for longer than claim_idle loses them
    to the other daemon; when it wakes up and finishes its batch, it writes nothing for the
    entries it no longer owns: every entry still has exactly one decision."""
    backend = engine_backends()[-1]  # redis:// when registered: the real shared setup
    camp = campaign_file(tmp_path / "c.toml", regions=40, slots=10_000)
    url = redis_url if backend == "redis" else "memory://"
    params = dict(batch=50, claim_idle=500, claim_every=100, block=100)
    a, b = start_together(
        daemons,
        *((workdir(tmp_path, c), camp, ["--backend", url, "--source",
                                        source(redis_url, c, **params)]) for c in "ab"))
    r = connect(redis_url)
    with Producer(redis_url) as producer:
        held = _freeze_with_pending(a, r, "a")
        deadline = time.monotonic() + 30
        while _pending_of(r, "a") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pending_of(r, "a") == 0, "b never claimed the frozen daemon's entries"
        os.kill(a.pid, signal.SIGCONT)
        time.sleep(0.3)  # both at work again
    ids = producer.ids
    n = len(ids)
    wait_drained(r, decisions=n)
    deadline = time.monotonic() + 20
    while (not any(x["event"] == "stream_entries_taken_over" for x in a.logs())
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert a.metric("rewardcore_stream_entries_total", 'result="taken_over"') == held
    per_entry = Counter(src for src, _, _ in read_decisions(r))
    assert set(per_entry) == set(ids) and max(per_entry.values()) == 1
    assert a.stop() == 0 and b.stop() == 0


def test_sigterm_mid_stream_hands_back_nothing_half_done(tmp_path: Path,
                                                          daemons: list[Daemon],
                                                          redis_url: str) -> None:
    """SIGTERM while consuming: the batch in hand is finished and acknowledged, nothing is
    left pending, exit 0; every acknowledged entry has its decision and is in the state the
    daemon wrote on the way out; a second daemon takes the rest, so each entry is decided
    exactly once."""
    camp = campaign_file(tmp_path / "c.toml", regions=40, slots=10_000)
    r = connect(redis_url)
    params = dict(batch=100, claim_idle=60_000, block=100)
    with Producer(redis_url) as producer:
        a = start(daemons, workdir(tmp_path, "a"), camp, "--source",
                  source(redis_url, "a", **params))
        # SIGTERM lands while the daemon holds a batch, by construction: it is frozen
        # holding one, signalled, then woken
        _freeze_with_pending(a, r, "a")
        os.kill(a.pid, signal.SIGTERM)
        os.kill(a.pid, signal.SIGCONT)
        assert a.proc is not None and a.proc.wait(30) == 0
    # one more entry after the stop, so the stream has a rest for the second daemon
    ids = [*producer.ids, *xadd_all(r, [{"e": placed_line("last", 1, "a-last")}])]
    n = len(ids)
    g = group_info(r)
    assert g["pending"] == 0  # nothing taken and left half done
    first = read_decisions(r)
    assert 0 < len(first) < n, "stop landed after the whole stream: no mid-stream test"
    assert len(first) == g["entries-read"]  # acknowledged == decided
    state = json.loads(a.state_path.read_bytes())
    assert {c["order_id"] for c in state["claims"]} == {row["order_id"] for _, row, _ in first}

    b = start(daemons, workdir(tmp_path, "b"), camp, "--source",
              source(redis_url, "b", **params))
    wait_drained(r, decisions=n)
    got = read_decisions(r)
    assert sorted(src for src, _, _ in got) == sorted(ids)
    assert all(row["outcome"] == "awarded" for _, row, _ in got)
    assert b.stop() == 0

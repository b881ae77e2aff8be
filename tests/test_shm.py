"""The shared-memory engine, shm://: one segment, several processes.

The engine's rules are checked against the reference by the cross-engine tests
(tests/test_rules.py, tests/test_properties.py: "shm" in ENGINE_URLS). Here: the segment's
life (create, attach, remove, stale, a holder killed mid-batch), capacities, routing
lines to workers, and the invariants of DESIGN.md when several workers claim at once."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from rewardcore import BackendError, Campaign, ConfigError, _scan, _shm, load_campaign, open_engine
from rewardcore.backends.shm import SHM_DIR, list_segments, remove_segment, segment_info
from rewardcore.cli import main
from rewardcore.outcomes import Outcome
from rewardcore.replay import replay_file
from rewardcore.replay.source import slow_partition
from rewardcore.traffic import TrafficShape, generate

from .campaigns import campaign_toml, make_campaign
from .events import closed, completed, placed, redeem


def unique() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def name():
    n = unique()
    yield n
    with contextlib.suppress(BackendError):
        remove_segment(n, force=True)


@pytest.fixture
def campaign() -> Campaign:
    return make_campaign(regions=((1, 3, ((2, 5), (3, 9))), (2, 2, ((2, 4),))),
                         prizes=(("mug", 5, 3),))


def check_invariants(campaign: Campaign, state: dict, events_file: Path | None = None,
                     stock: dict[str, int] | None = None) -> None:
    """DESIGN.md's invariants under concurrency, on an exported state."""
    info = campaign.info
    claims = state["claims"]
    ids = [c["order_id"] for c in claims]
    assert len(ids) == len(set(ids)), "a claim was duplicated"
    assert state["outcomes"].get("awarded", 0) == len(claims), "a claim was lost"
    live = [c for c in claims if c["state"] != "revoked"]
    slots: dict[int, list[int]] = defaultdict(list)
    for c in claims:
        region = campaign.region_by_code[c["region"]]
        assert 1 <= c["slot"] <= region.slots
        assert c["points"] == region.points_for(c["slot"])
    for c in live:
        slots[c["region"]].append(c["slot"])
    for code, taken in slots.items():
        assert len(taken) == len(set(taken)), f"region {code}: a slot awarded twice"
        assert len(taken) <= campaign.region_by_code[code].slots
        if not campaign.releases:
            used = [c["slot"] for c in claims if c["region"] == code]
            assert len(used) == len(set(used)), f"region {code}: a forfeited slot came back"
    if info.budget_points:
        assert sum(c["points"] for c in live) <= info.budget_points
    held = Counter(c["beneficiary"] for c in live)
    if info.max_claims_per_beneficiary:
        assert max(held.values(), default=0) <= info.max_claims_per_beneficiary
    if info.max_claims_per_beneficiary_per_region:
        pairs = Counter((c["beneficiary"], c["region"]) for c in live)
        assert max(pairs.values(), default=0) <= info.max_claims_per_beneficiary_per_region
    pending, confirmed = Counter(), Counter()
    for c in live:
        (confirmed if c["state"] == "confirmed" else pending)[c["beneficiary"]] += c["points"]
    spent: Counter[str] = Counter()
    used_stock: Counter[str] = Counter()
    if events_file is not None:
        redeems = {}
        for raw in events_file.read_bytes().splitlines():
            ev = orjson.loads(raw)
            if ev["type"] == "redeem":
                redeems.setdefault(ev["redemption_id"], ev)
        for rid, outcome in state["redemptions"].items():
            if outcome == "redeemed":
                ev = redeems[rid]
                spent[ev["beneficiary"]] += campaign.prize_by_id[ev["prize"]].cost_points * \
                    ev.get("qty", 1)
                used_stock[ev["prize"]] += ev.get("qty", 1)
    for who in set(pending) | set(confirmed) | set(state["balances"]):
        b = state["balances"].get(who, {"pending": 0, "confirmed": 0, "redeemed": 0})
        assert b["pending"] == pending[who] and b["confirmed"] == confirmed[who], who
        assert b["redeemed"] >= 0, who
        if events_file is not None:
            assert b["redeemed"] == spent[who], who
    if stock is not None and events_file is not None:
        for p in campaign.prizes:
            assert stock[p.id] == p.stock - used_stock[p.id] >= 0


def test_outcome_codes_match_the_enum():
    assert {o.name: o.value for o in Outcome} == _shm.OUTCOME_CODES


def test_engines_in_one_process_share_a_named_segment(campaign, name):
    a = open_engine(campaign, f"shm://{name}?orders=100")
    b = open_engine(campaign, f"shm://{name}")
    try:
        a.apply([placed("o1"), placed("o2", region=2, agent="a2")])
        b.apply([completed("o1"), placed("o3")])
        assert sorted(c.order_id for c in a.claims()) == ["o1", "o2", "o3"]
        assert a.balance("a1").confirmed == 5 and b.balance("a1").pending == 5
        assert b.region_status(1).remaining == 1
        stats = a.stats()
        assert stats["orders"] == 3 and stats["lock_acquired"] > 0
    finally:
        a.close()
        b.close()
    assert name in list_segments()  # a named segment stays, like a database
    c = open_engine(campaign, f"shm://{name}")
    try:
        assert len(c.claims()) == 3
    finally:
        c.close()
    remove_segment(name)
    assert name not in list_segments()


def test_transient_segments_go_with_the_last_close(campaign, name):
    anon = open_engine(campaign, "shm://?orders=100")
    path = anon.segment_path
    assert path.exists()
    anon.close()
    assert not path.exists()
    a = open_engine(campaign, f"shm://{name}?transient=1&orders=100")
    b = open_engine(campaign, f"shm://{name}")
    a.close()
    assert (SHM_DIR / f"rewardcore.{name}").exists()
    b.close()
    assert not (SHM_DIR / f"rewardcore.{name}").exists()


def test_a_batch_that_could_overflow_is_refused_before_any_change(campaign, name):
    e = open_engine(campaign, f"shm://{name}?orders=4")
    try:
        e.apply([placed("o1"), placed("o2"), closed("z1")])
        before = e.export_state()
        with pytest.raises(BackendError, match=r"full: 3 order ids of 4 held and the batch "
                                               r"may add 2; create the segment with a larger "
                                               r"\?orders="):
            e.apply([placed("o1"), placed("o3"), placed("o4")])
        assert e.export_state() == before
        e.apply([placed("o1"), placed("o2"), placed("o3")])  # only one new order: fits
        assert e.export_state()["outcomes"] == {"awarded": 3, "duplicate": 2}
    finally:
        e.close()
    e = open_engine(campaign, "shm://?orders=10&claims=1")
    try:
        e.apply([placed("o1")])
        with pytest.raises(BackendError, match=r"1 claims of 1 held.*\?claims="):
            e.apply([placed("o2", region=2)])
    finally:
        e.close()
    e = open_engine(campaign, "shm://?arena=1024&orders=100")
    try:
        with pytest.raises(BackendError, match=r"bytes of strings.*\?arena="):
            e.apply([placed(c * 256, agent=c.upper() * 256) for c in "xyz"])
        assert e.claims() == []
    finally:
        e.close()


def test_attaching_with_another_campaign_or_capacity_is_an_error(campaign, name, tmp_path):
    e = open_engine(campaign, f"shm://{name}?orders=100")
    try:
        other = make_campaign(regions=((1, 4, ((4, 5),)),))
        with pytest.raises(ConfigError, match="different campaign.*shm-rm"):
            open_engine(other, f"shm://{name}")
        with pytest.raises(ConfigError, match="exists with orders=100, the URL asks orders=200"):
            open_engine(campaign, f"shm://{name}?orders=200")
        with pytest.raises(ConfigError, match="created without a durable dir"):
            open_engine(campaign, f"shm://{name}?dir={tmp_path}/d")
    finally:
        e.close()
    for bad in ("shm://bad name", "shm://x/path", "shm://x?orders=-1", "shm://x?color=red"):
        with pytest.raises(ConfigError):
            open_engine(campaign, bad)


_CHILD_PRELUDE = """
import os, signal, sys, time
from rewardcore import open_engine, parse_campaign
from tests.campaigns import campaign_toml
from tests.events import placed
c = parse_campaign(campaign_toml(regions=((1, 3, ((2, 5), (3, 9))), (2, 2, ((2, 4),))),
                                 prizes=(("mug", 5, 3),)))
e = open_engine(c, sys.argv[1])
e.apply([placed("o1"), placed("o2", agent="a2")])
"""
_ROOT = str(Path(__file__).resolve().parent.parent)


def test_a_stale_segment_is_listed_reused_and_removed(campaign, name, capsys):
    with subprocess.Popen([sys.executable, "-c", _CHILD_PRELUDE + "print('ready', flush=True)"
                           "\ntime.sleep(60)\n", f"shm://{name}?orders=100"],
                          stdout=subprocess.PIPE, text=True, cwd=_ROOT) as p:
        assert p.stdout.readline().strip() == "ready"
        p.kill()
    info = segment_info(name)
    assert info["pids"] == [p.pid] and info["live_pids"] == []
    assert main(["shm-ls"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith(name) and "stale" in line for line in out.splitlines())
    e = open_engine(campaign, f"shm://{name}")  # a crash outside the lock leaves it sound
    try:
        assert sorted(c.order_id for c in e.claims()) == ["o1", "o2"]
        assert segment_info(name)["pids"] == [os.getpid()]  # the dead one was pruned
    finally:
        e.close()
    assert main(["shm-rm", name]) == 0 and name not in list_segments()
    with pytest.raises(BackendError, match="no such segment"):
        remove_segment(name)


_DIE_HOLDING_THE_LOCK = """
e.core.prepare([placed("o3")])
e.core.lock()
e.core.commit()                   # changed, and then
os.kill(os.getpid(), signal.SIGKILL)   # killed before unlocking
"""


def test_a_holder_killed_mid_batch_makes_the_segment_suspect(campaign, name, capsys):
    p = subprocess.run([sys.executable, "-c", _CHILD_PRELUDE + _DIE_HOLDING_THE_LOCK,
                        f"shm://{name}?orders=100"], cwd=_ROOT, capture_output=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    with pytest.raises(BackendError, match="died while changing the segment.*shm-rm"):
        open_engine(campaign, f"shm://{name}")
    with pytest.raises(BackendError, match="died while changing"):  # for everyone after too
        open_engine(campaign, f"shm://{name}")
    assert main(["shm-ls"]) == 0 and "suspect" in capsys.readouterr().out
    remove_segment(name)


def test_durable_segment_is_rebuilt_after_a_holder_is_killed(campaign, name, tmp_path):
    url = f"shm://{name}?orders=100&dir={tmp_path}/d"
    p = subprocess.run([sys.executable, "-c", _CHILD_PRELUDE + _DIE_HOLDING_THE_LOCK, url],
                       cwd=_ROOT, capture_output=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    e = open_engine(campaign, url)
    try:
        assert e.recovery.records == 1  # the logged batch; o3 was never logged
        assert sorted(c.order_id for c in e.claims()) == ["o1", "o2"]
        e.apply([placed("o3")])
    finally:
        e.close()
    remove_segment(name)  # the segment goes; the directory holds the state
    e = open_engine(campaign, url)
    try:
        assert sorted(c.order_id for c in e.claims()) == ["o1", "o2", "o3"]
        assert e.recovery.records == 2
    finally:
        e.close()


def test_durable_segment_reopens_without_replay_when_it_matches_the_log(campaign, name,
                                                                        tmp_path):
    url = f"shm://{name}?orders=100&dir={tmp_path}/d&snapshot_mb=1"
    e = open_engine(campaign, url)
    e.apply([placed("o1"), redeem("r1", "a1")])
    e.checkpoint()
    e.apply([completed("o1"), redeem("r2", "a1")])
    state = e.export_state()
    e.close()
    e = open_engine(campaign, url)  # the segment is still there and matches the log
    try:
        assert e.recovery.records == 0 and e.export_state() == state
    finally:
        e.close()
    remove_segment(name)
    e = open_engine(campaign, url)  # rebuilt: snapshot, then the log after it
    try:
        assert e.recovery.snapshot and e.recovery.records == 1
        assert e.export_state() == state
        assert e.stock() == {"mug": 2}
    finally:
        e.close()


def test_a_durable_directory_belongs_to_one_segment(campaign, name, tmp_path):
    d = tmp_path / "d"
    a = open_engine(campaign, f"shm://{name}?orders=100&dir={d}")
    b = open_engine(campaign, f"shm://{name}?dir={d}")  # the same segment: shares the dir
    try:
        other = unique()
        with pytest.raises(BackendError, match=rf"{d}: the durable directory is in use by "
                                               rf"another process \(shm:{name}\)"):
            open_engine(campaign, f"shm://{other}?orders=100&dir={d}")
        with pytest.raises(BackendError, match="in use"):
            open_engine(campaign, f"memory://{d}")
        b.apply([placed("o1")])
        assert [c.order_id for c in a.claims()] == ["o1"]
    finally:
        a.close()
        b.close()
    # free again, but it holds shm state: memory:// refuses it at open
    with pytest.raises(ConfigError, match="written by the shm engine, not memory"):
        open_engine(campaign, f"memory://{d}")


# -- routing ----------------------------------------------------------------------------------
ROUTE_LINES = [
    (b'{"type":"placed","order_id":"o1","region":1}', "o1"),
    (b'  {"region":1, "type" : "closed" ,\t"order_id" :  "o1","ts":1}', "o1"),
    (b'{"nested":{"order_id":"decoy","a":[1,{"b":"}"}]},"order_id":"o1"}', "o1"),
    (b'{"type":"completed","order_id":"o\\u0031","ts":1}', "o1"),  # an escape: slow path
    (b'{"type":"completed","order\\u005fid":"o1","ts":1}', "o1"),
    (b'{"order_id":"decoy","order_id":"o1"}', "o1"),  # the last key wins, as in msgspec
    (b'{"type":"placed","order_id":"\xc3\xa9t\xc3\xa9","ts":1}', "\u00e9t\u00e9"),
    (b'{"type":"placed","order_id":"\\u00e9t\\u00e9","ts":1}', "\u00e9t\u00e9"),
    (b'{"s":"a \\"quoted\\" \\\\ string","order_id":"o2"}', "o2"),
    (b'{"type":"placed","order_id":"decoy","x_y":1,"order_id":"o2"}', "o2"),
    (b'{"type":"closed","order_id":"o2","note":"\\u0041"}', "o2"),
    (b'{"type":"redeem","redemption_id":"r1"}', None),
    (b'{"order_id":17}', None),
    (b'not json at all', None),
    (b'{"order_id":"unterminated', None),
    (b'', None),
]


@pytest.mark.parametrize("parts", [2, 7, 64])
def test_routing_sends_every_form_of_an_order_id_to_one_partition(parts):
    import numpy as np

    data = b"\n".join(raw for raw, _ in ROUTE_LINES) + b"\n"
    slow_calls = []

    real = slow_partition(parts)

    def slow(line: bytes) -> int:
        slow_calls.append(line)
        return real(line)

    got: dict[int, int] = {}
    for worker in range(parts):
        out = bytearray(len(data) + 1)
        offs, idxs = np.zeros(100, np.int64), np.zeros(100, np.int64)
        end, scanned, n, used = _scan.route(data, 0, len(data), parts, parts, worker,
                                           np.zeros(parts, np.int64), out, offs, idxs, slow)
        assert end == len(data) and scanned == len(ROUTE_LINES)
        idxs = idxs[:n].tolist()
        assert out[:used].splitlines() == [ROUTE_LINES[i][0] for i in idxs]
        assert offs[:n].tolist() == [data.index(ROUTE_LINES[i][0] + b"\n") if ROUTE_LINES[i][0]
                                     else len(data) - 1 for i in idxs]
        for i in idxs:
            assert i not in got
            got[i] = worker
    assert sorted(got) == list(range(len(ROUTE_LINES)))
    for i, (_, oid) in enumerate(ROUTE_LINES):
        want = 0 if oid is None else _scan.route_hash(oid.encode(), parts)
        assert got[i] == want, ROUTE_LINES[i][0]
    # only escapes, repeated keys and a non-string order id needed decoding
    assert len(slow_calls) == 7 * parts


def test_routing_skips_what_was_applied_and_stops_at_a_cut_line():
    import numpy as np

    data = b'{"order_id":"a"}\n{"order_id":"b"}\n{"order_id":"c"}\n{"order_id":"d'
    out = bytearray(len(data) + 1)
    offs, idxs = np.zeros(10, np.int64), np.zeros(10, np.int64)
    end, scanned, n, used = _scan.route(data, 0, 40, 1, 1, 0, np.array([17], np.int64), out,
                                       offs, idxs, None)
    # line 1 was applied before (skip), line 3 is cut at the limit
    assert (end, scanned, offs[:n].tolist(), idxs[:n].tolist()) == (34, 2, [17], [1])
    end, scanned, n, used = _scan.route(data, 34, len(data), 1, 1, 0, np.zeros(1, np.int64),
                                       out, offs, idxs, None)
    assert (end, scanned, out[:used]) == (len(data), 2, data[34:] + b"\n")
    # stops when the output arrays are full
    end, scanned, n, used = _scan.route(data, 0, len(data), 1, 1, 0, np.zeros(1, np.int64),
                                       out, offs[:1], idxs, None)
    assert (end, scanned, n) == (17, 1, 1)
    assert _scan.lines_end(data, 0, len(data), 2) == (34, 2)
    assert _scan.lines_end(data, 0, 40, 5) == (34, 2)  # the third line is cut at 40
    assert _scan.lines_end(data, 34, len(data), 5) == (len(data), 2)  # the data's end ends one


# -- several workers on hot regions ----------------------------------------------------------
HOT = [
    dict(on_close="release", budget_points=400, max_claims_per_beneficiary=6,
         max_claims_per_beneficiary_per_region=2),
    dict(on_close="forfeit", settle_on="placed", beneficiary="merchant"),
    dict(on_close="release", settle_on="placed", min_paid_cents=2000),
]


def hot_campaign(tmp_path: Path, k: int) -> Path:
    toml = tmp_path / f"hot{k}.toml"
    toml.write_text(campaign_toml(
        regions=((1, 5, ((2, 3), (5, 8))), (2, 3, ((3, 10),)), (3, 1, ((1, 40),))),
        prizes=(("mug", 10, 4), ("bag", 25, 2)), **HOT[k]))
    return toml


def hot_stream(path: Path, campaign: Campaign, seed: int, orders: int = 30_000) -> Path:
    shape = TrafficShape(orders=orders, participants=60, seed=seed, close_rate=0.3,
                         off_region_rate=0.0, redeem_share=1.0, redeliver_rate=0.05)
    with open(path, "wb") as f:
        for chunk in generate(campaign, shape):
            f.write(chunk)
    return path


@pytest.mark.parametrize("k", range(len(HOT)))
def test_workers_on_hot_regions_hold_the_invariants(tmp_path, k):
    toml = hot_campaign(tmp_path, k)
    c = load_campaign(toml)
    events = hot_stream(tmp_path / "ev.jsonl", c, seed=k)
    n_placed = events.read_bytes().count(b'"type":"placed"')
    for _ in range(2):
        engine = open_engine(c, "shm://?orders=100000")
        try:
            result = replay_file(str(toml), engine.url, str(events), workers=2, batch=512,
                                 dead_letters=str(tmp_path / "dead"), engine=engine)
            state = engine.export_state()
            check_invariants(c, state, events, engine.stock())
            assert sum(state["outcomes"].values()) == n_placed
            assert all(w.events for w in result.workers)  # both did work
            assert result.events == events.read_bytes().count(b"\n")
        finally:
            engine.close()


def test_one_worker_equals_the_reference_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toml = hot_campaign(tmp_path, 0)
    c = load_campaign(toml)
    events = hot_stream(tmp_path / "ev.jsonl", c, seed=9, orders=10_000)
    assert main(["replay", str(toml), str(events), "--backend", "reference://",
                 "--state-out", "ref.json"]) == 0
    assert main(["replay", str(toml), str(events), "--backend", "shm://?orders=50000",
                 "--workers", "1", "--batch", "333", "--state-out", "shm.json"]) == 0
    assert (tmp_path / "shm.json").read_bytes() == (tmp_path / "ref.json").read_bytes()


def test_cli_workers_into_a_named_segment_then_export(tmp_path, name, capsys):
    toml = hot_campaign(tmp_path, 1)
    c = load_campaign(toml)
    events = hot_stream(tmp_path / "ev.jsonl", c, seed=4, orders=8_000)
    bad = tmp_path / "with-bad.jsonl"
    bad.write_bytes(events.read_bytes() + b'{"type":"placed","order_id":"x"}\n')
    url = f"shm://{name}?orders=20000"
    assert main(["replay", str(toml), str(bad), "--backend", url, "--workers", "2",
                 "--dead-letters", str(tmp_path / "dead.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "(2 workers)" in err and "dead letters 1" in err
    dead = orjson.loads((tmp_path / "dead.jsonl").read_bytes())
    assert dead["line"] == bad.read_bytes().count(b"\n")  # the real line number
    out = tmp_path / "state.json"
    assert main(["export", str(toml), "--backend", url, "--state-out", str(out)]) == 0
    check_invariants(c, orjson.loads(out.read_bytes()), events)
    assert main(["replay", str(toml), str(events), "--backend", "memory://",
                 "--workers", "2"]) == 2
    assert "needs a backend the worker processes share" in capsys.readouterr().err


_PUSH = """
import sys
from rewardcore import load_campaign, open_engine
from rewardcore.codec import decode_jsonl
events, _ = decode_jsonl(open(sys.argv[3], "rb").read())
e = open_engine(load_campaign(sys.argv[1]), sys.argv[2])
for i in range(0, len(events), 64):
    e.apply(events[i:i + 64])
e.close()
"""


def test_a_failing_worker_fails_the_replay_with_its_reason(tmp_path, campaign):
    from rewardcore.errors import RewardcoreError
    from rewardcore.replay.run import Job
    from rewardcore.replay.workers import run_workers

    toml = tmp_path / "c.toml"
    toml.write_text(campaign_toml(regions=((1, 3, ((2, 5), (3, 9))), (2, 2, ((2, 4),))),
                                  prizes=(("mug", 5, 3),)))
    events = tmp_path / "ev.jsonl"
    events.write_bytes(b"")
    jobs = [Job(str(toml), "shm://?orders=10", str(events), 2, 2, k, [0, 0], (0, 0, 0), 64,
                str(tmp_path / "dead")) for k in range(2)]
    jobs[1].url = "nope://"
    with pytest.raises(RewardcoreError, match=r"worker 1 .* unknown scheme 'nope'"):
        run_workers(jobs)


def test_processes_claiming_at_once_hold_the_invariants(tmp_path, name):
    """Three processes push batches of one hot stream's shuffled pieces into one segment."""
    toml = hot_campaign(tmp_path, 0)
    c = load_campaign(toml)
    events = hot_stream(tmp_path / "ev.jsonl", c, seed=21, orders=6_000).read_bytes()
    lines = events.splitlines(keepends=True)
    rng = random.Random(5)
    pieces = [tmp_path / f"p{k}.jsonl" for k in range(3)]
    chunks = [lines[i:i + 50] for i in range(0, len(lines), 50)]
    rng.shuffle(chunks)
    for k, p in enumerate(pieces):
        p.write_bytes(b"".join(line for ch in chunks[k::3] for line in ch))
    url = f"shm://{name}?orders=20000"
    keep = open_engine(c, url)
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _PUSH, str(toml), url, str(p)],
                                  stderr=subprocess.PIPE) for p in pieces]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        state = keep.export_state()
        check_invariants(c, state)
        assert sum(state["outcomes"].values()) == events.count(b'"type":"placed"')
        assert keep.stats()["lock_acquired"] >= len(lines) // 64
    finally:
        keep.close()


# -- kill -9 with several workers ------------------------------------------------------------
def test_workers_killed_many_times_resume_exactly(tmp_path, name):
    from .test_durable import crash_loop

    toml = hot_campaign(tmp_path, 0)
    c = load_campaign(toml)
    events = hot_stream(tmp_path / "ev.jsonl", c, seed=33, orders=60_000)
    n_placed = events.read_bytes().count(b'"type":"placed"')
    d = tmp_path / "d"
    url = f"shm://{name}?orders=200000&dir={d}&snapshot_mb=1&fsync=none"
    cmd = [sys.executable, "-m", "rewardcore", "replay", str(toml), str(events), "--backend",
           url, "--workers", "2", "--batch", "256", "--dead-letters", str(tmp_path / "dead")]
    seed = random.randrange(1 << 30)
    crash_loop(cmd, d, 5, random.Random(seed))
    if seed % 2:  # the segment may also be gone (a reboot): the log rebuilds it
        with contextlib.suppress(BackendError):
            remove_segment(name, force=True)
    out = tmp_path / "state.json"
    r = subprocess.run([*cmd, "--state-out", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"seed {seed}: {r.stderr}"
    state = orjson.loads(out.read_bytes())
    check_invariants(c, state, events)
    # every placed event was applied exactly once over all the runs
    assert sum(state["outcomes"].values()) == n_placed, f"seed {seed}: {state['outcomes']}"

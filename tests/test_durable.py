"""Durable embedded mode, memory:///dir: the log, snapshots, recovery, and what breaks it.

Crash tests kill a real `rewardcore replay` with SIGKILL at random moments, many times,
and check that the final rerun ends exactly where a clean run does."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from rewardcore import BackendError, ConfigError, EventError, load_campaign, open_engine
from rewardcore.backends import reset_backend
from rewardcore.examples import example_path
from rewardcore.storage.records import iter_records
from rewardcore.traffic import TrafficShape, generate

from .campaigns import make_campaign
from .events import closed, completed, placed, redeem

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = example_path("d11-2026")


def batches() -> list[list]:
    return [
        [placed("o1"), placed("o2", agent="a2"), completed("o1")],
        [placed("o3"), closed("o2"), placed("o4", agent="a3")],
        [completed("o3"), redeem("r1", "a1"), placed("o5")],
        [closed("o9"), placed("o9"), completed("o4")],
    ]


def state_after(campaign, k: int) -> dict:
    ref = open_engine(campaign, "reference://")
    for b in batches()[:k]:
        ref.apply(b)
    return {"state": ref.export_state(), "stock": ref.stock()}


def snap(engine) -> dict:
    return {"state": engine.export_state(), "stock": engine.stock()}


@pytest.fixture
def campaign():
    return make_campaign(regions=((1, 3, ((2, 5), (3, 9))),), prizes=(("mug", 5, 3),))


def wal_files(d: Path) -> list[Path]:
    return sorted(d.glob("wal-*.log"))


def test_reopen_recovers_every_acknowledged_batch(tmp_path, campaign):
    url = f"memory://{tmp_path}/d"
    e = open_engine(campaign, url)
    for b in batches():
        e.apply(b)
    e.close()
    again = open_engine(campaign, url)
    try:
        assert snap(again) == state_after(campaign, 4)
        assert again.recovery.records == 4 and not again.recovery.cut
        again.apply([placed("o6")])  # appends after the recovered log
    finally:
        again.close()
    third = open_engine(campaign, url)
    try:
        ref = open_engine(campaign, "reference://")
        for b in [*batches(), [placed("o6")]]:
            ref.apply(b)
        assert snap(third) == {"state": ref.export_state(), "stock": ref.stock()}
        assert third.recovery.records == 5
    finally:
        third.close()


def test_snapshots_rotate_the_log_and_recovery_starts_from_the_newest(tmp_path):
    c = load_campaign(EXAMPLE)
    data = b"".join(generate(c, TrafficShape(orders=20_000, seed=5)))
    from rewardcore.codec import decode_jsonl

    events, _ = decode_jsonl(data)
    d = tmp_path / "d"
    e = open_engine(c, f"memory://{d}?snapshot_mb=1&fsync=none")
    ref = open_engine(c, "memory://")
    for i in range(0, len(events), 1000):
        e.apply(events[i:i + 1000])
        ref.apply(events[i:i + 1000])
    e.close()
    snaps = sorted(d.glob("snapshot-*.rcs"))
    assert len(snaps) == 1 and len(wal_files(d)) == 1  # older generations were removed
    assert snaps[0].name[9:17] == wal_files(d)[0].name[4:12]
    again = open_engine(c, f"memory://{d}")
    try:
        assert again.recovery.snapshot == snaps[0].name
        assert again.export_state() == ref.export_state()
        assert again.stock() == ref.stock()
    finally:
        again.close()


def test_fsync_policies(tmp_path, campaign):
    for policy in ("batch", "interval&ms=5", "none"):
        url = f"memory://{tmp_path}/{policy[:5]}?fsync={policy}"
        e = open_engine(campaign, url)
        for b in batches():
            e.apply(b)
        time.sleep(0.02)
        e.close()
        again = open_engine(campaign, url)
        assert snap(again) == state_after(campaign, 4), policy
        again.close()
    with pytest.raises(ConfigError, match="fsync must be one of"):
        open_engine(campaign, f"memory://{tmp_path}/bad?fsync=sometimes")
    with pytest.raises(ConfigError, match="ms must be >= 1"):
        open_engine(campaign, f"memory://{tmp_path}/bad?fsync=interval&ms=0")
    with pytest.raises(ConfigError, match="three slashes"):
        open_engine(campaign, "memory://relative/dir")


def _written(tmp_path: Path, campaign, n: int = 4) -> tuple[str, Path]:
    url = f"memory://{tmp_path}/d"
    e = open_engine(campaign, url)
    for b in batches()[:n]:
        e.apply(b)
    e.close()
    return url, wal_files(tmp_path / "d")[-1]


@pytest.mark.parametrize("damage", ["cut-1", "cut-half", "flip-last", "zeros", "garbage"])
def test_torn_or_corrupt_tail_is_cut_and_reported(tmp_path, campaign, damage):
    url, wal = _written(tmp_path, campaign)
    data = bytearray(wal.read_bytes())
    last_start = [off for off, *_ in iter_records(wal)][-1]
    if damage == "cut-1":
        data = data[:-1]
    elif damage == "cut-half":
        data = data[: last_start + (len(data) - last_start) // 2]
    elif damage == "flip-last":
        data[-3] ^= 0x40
    elif damage == "zeros":
        data += bytes(4096)  # a file extended by a crash, its data never written
    else:
        data += b"RCW1\xff\xff\x00\x00partial"
    wal.write_bytes(bytes(data))
    e = open_engine(campaign, url)
    try:
        rep = e.recovery
        assert rep.cut and rep.cut_file == wal.name
        expect_records = 4 if damage in ("zeros", "garbage") else 3
        assert rep.cut_offset == (len(wal.read_bytes()))
        assert rep.records == expect_records
        assert "cut a torn tail" in rep.summary()
        assert snap(e) == state_after(campaign, expect_records)
        for b in batches()[expect_records:]:
            e.apply(b)  # the log goes on after the cut
    finally:
        e.close()
    again = open_engine(campaign, url)
    try:
        assert not again.recovery.cut
        assert snap(again) == state_after(campaign, 4)
    finally:
        again.close()


def test_damage_before_valid_records_is_not_cut(tmp_path, campaign):
    url, wal = _written(tmp_path, campaign)
    data = bytearray(wal.read_bytes())
    second = [off for off, *_ in iter_records(wal)][1]
    data[second + 30] ^= 0x01  # inside the second of four records
    wal.write_bytes(bytes(data))
    with pytest.raises(BackendError, match="not a torn tail, so nothing was cut"):
        open_engine(campaign, url)
    assert wal.read_bytes() == bytes(data)  # left as it was


def test_directory_in_use_by_another_process(tmp_path, campaign):
    url = f"memory://{tmp_path}/d"
    e = open_engine(campaign, url)
    try:
        with pytest.raises(BackendError, match=r"/d: the durable directory is in use"):
            open_engine(campaign, url)
        code = ("import sys; from rewardcore import load_campaign, open_engine\n"
                "from rewardcore.errors import BackendError\n"
                "try:\n    open_engine(load_campaign(sys.argv[1]), sys.argv[2])\n"
                "except BackendError as exc:\n    print(exc); sys.exit(3)\n")
        toml = tmp_path / "c.toml"
        from .campaigns import campaign_toml

        toml.write_text(campaign_toml(regions=((1, 3, ((2, 5), (3, 9))),),
                                      prizes=(("mug", 5, 3),)))
        r = subprocess.run([sys.executable, "-c", code, str(toml), url], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 3 and "in use by another process (memory)" in r.stdout
    finally:
        e.close()
    open_engine(campaign, url).close()  # free again once closed


@contextlib.contextmanager
def tmpfs(where: Path, size: str, readonly: bool = False) -> Iterator[Path]:
    where.mkdir(parents=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to make a full or read-only disk: {r.stderr}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_directory_is_a_clear_error(tmp_path, campaign):
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as ro, \
            pytest.raises(BackendError, match=rf"{ro}/d.*Read-only file system.*writable"):
        open_engine(campaign, f"memory://{ro}/d")


def test_disk_full_is_a_clear_error_and_corrupts_nothing(tmp_path, campaign):
    with tmpfs(tmp_path / "full", "64k") as full:
        url = f"memory://{full}/d"
        e = open_engine(campaign, url)
        acked = 0
        big = [placed(f"order-{i:06d}-" + "x" * 200) for i in range(100)]
        with pytest.raises(BackendError, match=r"full/d/wal-00000000.log: cannot append.*No "
                                               r"space left on device"):
            for _ in range(1000):
                e.apply(big)
                acked += 1
        state = snap(e)
        e.close()
        again = open_engine(campaign, url)  # every acknowledged batch, nothing torn
        try:
            assert not again.recovery.cut
            assert again.recovery.records == acked
            assert snap(again) == state
        finally:
            again.close()


def test_a_failed_snapshot_does_not_fail_the_batch(tmp_path, caplog):
    c = load_campaign(EXAMPLE)
    from rewardcore.codec import decode_jsonl

    events, _ = decode_jsonl(b"".join(generate(c, TrafficShape(orders=8_000, seed=2))))
    d = tmp_path / "d"
    (d / "snapshot-00000001.rcs.tmp").mkdir(parents=True)  # the snapshot cannot be written
    e = open_engine(c, f"memory://{d}?snapshot_mb=1&fsync=none")
    ref = open_engine(c, "memory://")
    for i in range(0, len(events), 500):
        e.apply(events[i:i + 500])
        ref.apply(events[i:i + 500])
    e.close()
    assert "cannot write snapshot" in caplog.text and not list(d.glob("snapshot-*.rcs"))
    (d / "snapshot-00000001.rcs.tmp").rmdir()
    again = open_engine(c, f"memory://{d}")
    try:
        assert again.export_state() == ref.export_state()
    finally:
        again.close()


def test_another_campaign_in_the_directory(tmp_path, campaign):
    url = f"memory://{tmp_path}/d"
    e = open_engine(campaign, url)
    e.apply(batches()[0])
    e.close()
    other = make_campaign(regions=((1, 5, ((5, 1),)),))
    with pytest.raises(ConfigError) as exc:
        open_engine(other, url)  # refused at open, not at the first batch
    text = str(exc.value)
    assert text.startswith(f"{tmp_path}/d: ") and "another campaign file" in text
    assert f"campaign {campaign.id!r}" in text and "fingerprint" in text
    assert f"rewardcore reset CAMPAIGN.toml --backend memory://{tmp_path}/d --yes" in text
    reset_backend(other, url)  # what `rewardcore reset` does: the one way to reuse it
    e = open_engine(other, url)
    try:
        assert e.claims() == []
        e.apply([placed("x")])
        assert [c.order_id for c in e.claims()] == ["x"]
    finally:
        e.close()
    e = open_engine(other, url)
    try:
        assert [c.order_id for c in e.claims()] == ["x"]
    finally:
        e.close()
    with pytest.raises(ConfigError, match="another campaign file"):
        open_engine(campaign, url)  # and now the first campaign is the foreign one


def test_unvalidated_events_are_refused_not_logged(tmp_path, campaign):
    # Structs built in Python skip msgspec's constraints; apply checks them before the log.
    url = f"memory://{tmp_path}/d"
    e = open_engine(campaign, url)
    e.apply(batches()[0])
    for odd in ([placed("")], [placed("ok", agent="")], [redeem("", "a1")]):
        with pytest.raises(EventError, match="event 0: .* must have 1 to 256 characters"):
            e.apply(odd)
    e.close()
    again = open_engine(campaign, url)
    try:
        assert again.recovery.records == 1 and snap(again) == state_after(campaign, 1)
    finally:
        again.close()


def test_a_refused_batch_is_not_logged(tmp_path, campaign):
    url = f"memory://{tmp_path}/d"
    e = open_engine(campaign, url)
    e.apply(batches()[0])
    with pytest.raises(EventError):
        e.apply([placed("o7"), "not an event"])
    e.close()
    again = open_engine(campaign, url)
    try:
        assert again.recovery.records == 1 and snap(again) == state_after(campaign, 1)
    finally:
        again.close()


# -- the CLI: resume after kill -9 -----------------------------------------------------------
def _rc(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "rewardcore", *args], capture_output=True,
                       timeout=300, **kw)
    if check and r.returncode != 0:
        pytest.fail(f"rewardcore {' '.join(args)} exited {r.returncode}: "
                    f"{r.stderr.decode(errors='replace')}")
    return r


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> tuple[Path, dict]:
    """A peak-day stream of the example campaign, and the state a clean replay reaches."""
    d = tmp_path_factory.mktemp("stream")
    events = d / "events.jsonl"
    c = load_campaign(EXAMPLE)
    with open(events, "wb") as f:
        for chunk in generate(c, TrafficShape(orders=120_000, seed=11)):
            f.write(chunk)
    _rc("replay", str(EXAMPLE), str(events), "--state-out", str(d / "ref.json"),
        "--dead-letters", str(d / "dead.jsonl"))
    return events, orjson.loads((d / "ref.json").read_bytes())


def log_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("wal-*.log")) if d.exists() else 0


def crash_loop(cmd: list[str], d: Path, kills: int, rng: random.Random) -> int:
    """Start the replay and kill its process group with SIGKILL, `kills` times; some kills
    land during start-up, most while batches are being applied. Returns runs that finished."""
    finished = 0
    for i in range(kills):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        if i % 3 != 2:  # wait until it is applying, then a little more
            start = log_bytes(d)
            deadline = time.monotonic() + 30
            while p.poll() is None and log_bytes(d) <= start + 4096 and \
                    time.monotonic() < deadline:
                time.sleep(0.005)
        if i:  # the first kill lands as soon as it is applying: one mid-replay kill at least
            time.sleep(rng.uniform(0.0, 0.5))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        finished += p.returncode == 0
    return finished


def test_replay_killed_many_times_ends_as_a_clean_run(tmp_path, stream):
    events, ref = stream
    seed = random.randrange(1 << 30)
    d = tmp_path / "d"
    url = f"memory://{d}?snapshot_mb=2"
    cmd = [sys.executable, "-m", "rewardcore", "replay", str(EXAMPLE), str(events),
           "--backend", url, "--batch", "1024", "--dead-letters", str(tmp_path / "dead")]
    finished = crash_loop(cmd, d, 7, random.Random(seed))
    assert finished < 7  # most kills landed mid-replay
    out = tmp_path / "state.json"
    r = _rc("replay", str(EXAMPLE), str(events), "--backend", url, "--state-out", str(out),
            "--dead-letters", str(tmp_path / "dead"))
    state = orjson.loads(out.read_bytes())
    for key in ("claims", "balances", "redemptions", "outcomes"):
        assert state[key] == ref[key], f"{key} differs (seed {seed}): {r.stderr.decode()}"
    # and once more: a finished replay of the same input changes nothing
    _rc("replay", str(EXAMPLE), str(events), "--backend", url, "--state-out", str(out))
    assert orjson.loads(out.read_bytes()) == ref


def test_a_different_input_is_applied_from_the_start(tmp_path, stream):
    events, ref = stream
    d = tmp_path / "d"
    half = tmp_path / "half.jsonl"
    data = events.read_bytes()
    half.write_bytes(data[: data.index(b"\n", len(data) // 2) + 1])
    url = f"memory://{d}"
    _rc("replay", str(EXAMPLE), str(half), "--backend", url)
    # the whole stream begins with the half: the rerun resumes after it, exactly
    out = tmp_path / "s.json"
    r = _rc("replay", str(EXAMPLE), str(events), "--backend", url, "--state-out", str(out))
    assert b"resuming" in r.stderr
    assert orjson.loads(out.read_bytes()) == ref
    # another input: applied from the start, with a note; claims stay exact (idempotent)
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"\n" + data)
    r = _rc("replay", str(EXAMPLE), str(other), "--backend", url, "--state-out", str(out))
    assert b"differs from the one replayed" in r.stderr
    state = orjson.loads(out.read_bytes())
    assert state["claims"] == ref["claims"] and state["balances"] == ref["balances"]


def test_a_logged_replay_with_dead_letters_recovers_the_same_events(tmp_path, stream):
    events, _ = stream
    lines = events.read_bytes().splitlines(keepends=True)[:3000]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines[:1000]) + b'{"type":"placed"}\n' + b"".join(lines[1000:]))
    ref = tmp_path / "ref.json"
    _rc("replay", str(EXAMPLE), str(bad), "--state-out", str(ref), "--dead-letters",
        str(tmp_path / "dead1"))
    url = f"memory://{tmp_path}/d"
    _rc("replay", str(EXAMPLE), str(bad), "--backend", url, "--batch", "700",
        "--dead-letters", str(tmp_path / "dead2"))
    assert (tmp_path / "dead1").read_bytes() == (tmp_path / "dead2").read_bytes()
    out = tmp_path / "out.json"
    _rc("export", str(EXAMPLE), "--backend", url, "--state-out", str(out))  # from the log
    assert out.read_bytes() == ref.read_bytes()



def test_a_snapshot_with_redemptions_reopens(tmp_path):
    # restore once read redemption ids into a C int named like the loop's counter
    c = make_campaign(prizes=(("mug", 5, 3),))
    url = f"memory://{tmp_path}/d"
    e = open_engine(c, url)
    e.apply([placed("o1"), completed("o1"), redeem("r1", "a1", "mug")])
    e.checkpoint()
    state = e.export_state()
    e.close()
    again = open_engine(c, url)
    try:
        assert again.recovery.snapshot is not None and again.export_state() == state
        assert state["redemptions"] == {"r1": "redeemed"}
    finally:
        again.close()

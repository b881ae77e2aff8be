"""The rewardcore command, run as a user would: a real process, files and pipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from rewardcore import load_campaign, open_engine
from rewardcore.codec import read_jsonl

from .campaigns import make_campaign
from .conftest import EXAMPLES
from .events import placed

CAMPAIGN = str(EXAMPLES / "d11-2026.toml")


def rc(*args: str, stdin: bytes | None = None, cwd=None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "rewardcore", *args], input=stdin,
                          capture_output=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cli") / "events.jsonl"
    out = rc("generate", CAMPAIGN, "--orders", "30000", "--seed", "3", "--out", str(path))
    assert out.returncode == 0, out.stderr
    return str(path)


def test_generate_is_deterministic_by_seed(stream, tmp_path):
    again = tmp_path / "again.jsonl"
    rc("generate", CAMPAIGN, "--orders", "30000", "--seed", "3", "--out", str(again))
    data = Path(stream).read_bytes()
    assert again.read_bytes() == data
    kinds = {orjson.loads(line)["type"] for line in data.splitlines()}
    assert kinds == {"placed", "closed", "completed", "redeem"}


def test_replay_memory_equals_reference_and_library(stream, tmp_path):
    states = {}
    for backend in ("memory://", "reference://"):
        out_file = tmp_path / f"{backend[:-3]}.json"
        res = rc("replay", CAMPAIGN, stream, "--backend", backend, "--state-out", str(out_file),
                 "--batch", "1000")
        assert res.returncode == 0, res.stderr
        assert b"events/s" in res.stderr and b"awarded" in res.stderr
        states[backend] = out_file.read_bytes()
    assert states["memory://"] == states["reference://"]

    engine = open_engine(load_campaign(CAMPAIGN), "reference://")
    with open(stream, "rb") as f:
        for events, dead in read_jsonl(f):
            assert dead == []
            engine.apply(events)
    state = orjson.loads(states["memory://"])
    assert state == engine.export_state()
    assert state["outcomes"]["awarded"] > 1000 and state["outcomes"]["sold_out"] > 1000


def test_replay_from_stdin_to_stdout(stream):
    data = Path(stream).read_bytes()
    res = rc("replay", CAMPAIGN, "-", "--state-out", "-", stdin=data)
    assert res.returncode == 0, res.stderr
    assert set(orjson.loads(res.stdout)) == {"balances", "claims", "outcomes", "redemptions"}


def test_replay_keeps_bad_lines_as_dead_letters(tmp_path):
    good = (b'{"type":"placed","order_id":"o1","merchant_id":"m","agent_id":"a",'
            b'"region":110101,"paid_cents":5000,"ts":1762790401000}')
    events = tmp_path / "mixed.jsonl"
    events.write_bytes(good + b"\n{oops\n\n" + b'{"type":"closed","order_id":7,"ts":1}\n\xff\n')
    dead = tmp_path / "dl" / "dead.jsonl"
    res = rc("replay", CAMPAIGN, str(events), "--dead-letters", str(dead))
    assert res.returncode == 0, res.stderr
    assert b"dead letters 3" in res.stderr and str(dead).encode() in res.stderr
    rows = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [r["line"] for r in rows] == [2, 4, 5]
    assert rows[0]["raw"] == "{oops" and "$.order_id" in rows[1]["reason"]
    assert rows[2]["raw_base64"] == "/w=="


def test_no_dead_letter_file_when_all_is_well(stream, tmp_path):
    res = rc("replay", CAMPAIGN, stream, cwd=tmp_path)
    assert res.returncode == 0 and not (tmp_path / "dead-letters.jsonl").exists()


@pytest.mark.parametrize("args, message", [
    (("replay", "nope.toml", "x"), b"cannot read campaign file"),
    (("replay", CAMPAIGN, "/nonexistent/events"), b"cannot read events"),
    (("replay", CAMPAIGN, "-", "--backend", "mongo://x"), b"unknown scheme 'mongo'"),
    (("replay", CAMPAIGN, "-", "--backend", "memory://host/x"), b"takes no host or path"),
    (("reset", CAMPAIGN, "--backend", "memory://"), b"pass --yes"),
])
def test_clear_errors(args, message):
    res = rc(*args, stdin=b"")
    assert res.returncode == 2
    assert res.stderr.startswith(b"rewardcore: error: ") and message in res.stderr
    assert b"Traceback" not in res.stderr


def test_reset_clears_a_directory_of_another_campaign(tmp_path):
    d = tmp_path / "d"
    with open_engine(make_campaign(), f"memory://{d}") as engine:
        engine.apply([placed("x")])
    state = tmp_path / "state.json"
    res = rc("export", CAMPAIGN, "--backend", f"memory://{d}", "--state-out", str(state))
    assert res.returncode == 2 and b"another campaign file" in res.stderr
    assert b"rewardcore reset CAMPAIGN.toml --backend" in res.stderr
    assert b"Traceback" not in res.stderr
    res = rc("reset", CAMPAIGN, "--backend", f"memory://{d}", "--yes")
    assert res.returncode == 0, res.stderr
    assert b"reset campaign d11-2026" in res.stderr
    with open_engine(CAMPAIGN, f"memory://{d}") as engine:  # now the directory is its own
        assert engine.claims() == []


def test_version_is_the_package_version():
    import rewardcore

    out = rc("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().strip() == f"rewardcore {rewardcore.__version__}"


def test_example_writes_a_campaign_a_user_can_edit(tmp_path):
    listed = rc("example", "--list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.decode().splitlines()]
    assert names == ["broken-2025", "d11-2026"]
    out = rc("example", "d11")  # a unique prefix will do
    assert out.returncode == 0, out.stderr
    assert out.stdout == (EXAMPLES / "d11-2026.toml").read_bytes()
    mine = tmp_path / "my.toml"
    mine.write_bytes(out.stdout.replace(b'id = "d11-2026"', b'id = "mine"'))
    assert load_campaign(mine).id == "mine"
    bad = rc("example", "nosuch")
    assert bad.returncode == 2
    assert b"'nosuch'" in bad.stderr and b"d11-2026" in bad.stderr


def test_building_the_parser_loads_no_capacity_or_plotting_code():
    """Every `rewardcore` call builds the parser: the benchmark, the load test (Locust) and
    matplotlib load only when their command runs."""
    code = ("import sys; from rewardcore.cli import build_parser; build_parser(); "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert "rewardcore.capacity.commands" in loaded  # the commands are there
    heavy = {"rewardcore.capacity.bench", "rewardcore.capacity.loadtest",
             "rewardcore.capacity.locustfile", "locust", "matplotlib",
             "rewardcore.review.simulate"}
    assert loaded.isdisjoint(heavy), loaded & heavy


def test_the_package_runs_no_git_and_reads_no_files_outside_itself():
    """A wheel install has no checkout around it: nothing in the package climbs out of it
    or asks git."""
    pkg = Path(__file__).resolve().parent.parent / "src" / "rewardcore"
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        assert "parent.parent.parent" not in text, path
        assert '"git"' not in text, path

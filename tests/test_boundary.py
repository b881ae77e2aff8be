"""The library boundary: what open_engine takes, URLs parsed once, declared capabilities,
one error root, readable outcomes and decision rows; and one replay path for every backend."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from rewardcore import (
    BackendError,
    ConfigError,
    Decision,
    Outcome,
    Resumable,
    RewardcoreError,
    _shm,
    load_campaign,
    open_engine,
)
from rewardcore.aio import waits_on_io
from rewardcore.backends import engine_class
from rewardcore.backends.durable import DurableEngine
from rewardcore.backends.memory import MemoryEngine
from rewardcore.backends.redis import RedisClusterEngine, RedisEngine
from rewardcore.backends.reference import ReferenceEngine
from rewardcore.backends.shm import ShmEngine
from rewardcore.storage.log import Foreign

from .campaigns import make_campaign
from .conftest import EXAMPLES
from .events import placed, redeem

CAMPAIGN = EXAMPLES / "d11-2026.toml"


@pytest.mark.parametrize("given", [str(CAMPAIGN), CAMPAIGN])
def test_open_engine_takes_a_path(given):
    with open_engine(given, "memory://") as engine:
        assert engine.campaign.id == load_campaign(CAMPAIGN).id


@pytest.mark.parametrize("given, named", [(42, "int 42"), (None, "NoneType None"),
                                          ({"id": "x"}, "dict {'id': 'x'}")])
def test_open_engine_says_what_it_got(given, named):
    with pytest.raises(ConfigError, match="must be a Campaign or the path") as exc:
        open_engine(given, "memory://")
    assert named in str(exc.value)


@pytest.mark.parametrize("url, unknown, known", [
    ("memory://?ordrs=10", "'ordrs'", "takes orders"),
    ("reference://?orders=1", "'orders'", "takes none"),
    ("memory:///{tmp}/d?fsync=none&snapshot=1&x=2", "'snapshot', 'x'",
     "fsync, ms, orders, snapshot_mb"),
    ("shm://?order=5", "'order'", "arena, beneficiaries, claims, dir, fsync"),
    ("redis://h:1/0?prefix=a&sockettimeout=1", "'sockettimeout'",
     "buckets, call_events, client_name, db"),
    ("redis://h:1/0?ssl_cert_reqs=none", "'ssl_cert_reqs'", "socket_timeout, username, wait"),
    ("rediss+cluster://h:1?retry_on_timeout=1&x=2", "'retry_on_timeout', 'x'",
     "ssl_ca_certs, ssl_ca_path, ssl_cert_reqs"),
])
def test_unknown_url_parameters_are_named_with_the_known_ones(tmp_path, url, unknown, known):
    with pytest.raises(ConfigError, match="unknown parameter") as exc:
        open_engine(make_campaign(), url.format(tmp=tmp_path))
    assert unknown in str(exc.value) and known in str(exc.value)
    assert not (tmp_path / "d").exists()  # refused before anything was made


@pytest.mark.parametrize("url, message", [
    ("memory://?orders=many", "orders must be an integer, not 'many'"),
    ("memory:///{tmp}/d?ms=0&fsync=interval", "ms must be >= 1"),
    ("shm://?orders=-1", "orders must be >= 1"),
    ("redis://h:1/0?socket_timeout=soon", "socket_timeout='soon' must be a number of seconds"),
    ("rediss://h:1/0?ssl_cert_reqs=maybe", "must be none, optional or required"),
    ("redis+cluster://h:1?db=2", "a cluster has only database 0"),
])
def test_bad_integer_parameters(tmp_path, url, message):
    with pytest.raises(ConfigError, match=message):
        open_engine(make_campaign(), url.format(tmp=tmp_path))


def test_the_registry_maps_each_url_form_to_its_engine(tmp_path):
    assert engine_class("memory://") is MemoryEngine
    assert engine_class("memory://?orders=5") is MemoryEngine
    assert engine_class(f"memory://{tmp_path}/d") is DurableEngine
    assert engine_class("reference://") is ReferenceEngine
    assert engine_class("shm://x") is ShmEngine
    assert engine_class("redis://h:1/0") is RedisEngine
    assert engine_class("rediss+cluster://h:1") is RedisClusterEngine
    with open_engine(make_campaign(), f"memory://{tmp_path}/d") as engine:
        assert type(engine) is DurableEngine and engine.url == f"memory://{tmp_path}/d"


def test_capabilities_are_declared_by_class():
    table = {cls: (cls.may_block, cls.shares_state, cls.keeps_state, cls.resumable)
             for cls in (MemoryEngine, ReferenceEngine, DurableEngine, ShmEngine, RedisEngine)}
    assert table == {
        MemoryEngine: (False, False, False, False),
        ReferenceEngine: (False, False, False, False),
        DurableEngine: (True, False, True, True),
        ShmEngine: (True, True, True, True),
        RedisEngine: (True, True, True, False),
    }
    assert {cls for cls in table if issubclass(cls, Resumable)} == {DurableEngine, ShmEngine}
    with open_engine(make_campaign(), "memory://") as engine:
        assert not waits_on_io(engine) and engine.stats() == {} and engine.open_note is None


def test_every_error_has_one_root():
    for cls in (_shm.CapacityError, _shm.StateError):
        assert issubclass(cls, BackendError)
    assert issubclass(Foreign, ConfigError) and issubclass(BackendError, RewardcoreError)


def test_a_full_segment_is_a_backend_error_naming_the_parameter():
    with open_engine(make_campaign(), "shm://?orders=2&transient=1") as engine, \
            pytest.raises(BackendError, match=r"\?orders="):
        engine.apply([placed(f"o{k}") for k in range(5)])


def test_outcomes_read_as_their_labels():
    assert str(Outcome.INSUFFICIENT_POINTS) == "insufficient_points"
    assert f"{Outcome.SOLD_OUT}" == "sold_out" and f"{Outcome.SOLD_OUT:>9}" == " sold_out"
    assert int(Outcome.SOLD_OUT) == 8 and Outcome(8) is Outcome.SOLD_OUT


def test_decisions_iterate_as_typed_rows():
    c = make_campaign(regions=((1, 1, ((1, 10),)),))
    with open_engine(c, "memory://") as engine:
        decisions = engine.apply([placed("o1"), placed("o2"), placed("o1"),
                                  redeem("r1", "a1", "mug")])
    rows = list(decisions)
    assert rows == [decisions[k] for k in range(len(decisions))]
    assert all(type(r) is Decision for r in rows)
    assert [r.outcome for r in rows] == [Outcome.AWARDED, Outcome.SOLD_OUT, Outcome.DUPLICATE,
                                         Outcome.INSUFFICIENT_POINTS]
    assert rows[0].slot == 1 and rows[0].points == 10


def _replay(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "rewardcore", "replay", *args], input=stdin,
                          capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("boundary") / "events.jsonl"
    out = subprocess.run([sys.executable, "-m", "rewardcore", "generate", str(CAMPAIGN),
                          "--orders", "3000", "--seed", "5", "--out", str(path)],
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return path.read_bytes()


def test_a_redis_replay_is_the_same_with_and_without_workers(tmp_path, events, redis_url):
    path = tmp_path / "events.jsonl"
    path.write_bytes(events)
    states = {}
    for label, url, extra in [("reference", "reference://", ()),
                              ("redis", f"{redis_url}?prefix=one", ()),
                              ("redis, 1 worker", f"{redis_url}?prefix=w1", ("--workers", "1")),
                              ("redis, 2 workers", f"{redis_url}?prefix=w2", ("--workers", "2"))]:
        out = tmp_path / f"{label}.json"
        res = _replay(str(CAMPAIGN), str(path), "--backend", url, "--state-out", str(out),
                      *extra)
        assert res.returncode == 0, res.stderr
        assert (b"(2 workers)" in res.stderr) == (label == "redis, 2 workers")
        states[label] = orjson.loads(out.read_bytes())
    # one worker replays in input order: exactly the reference's result
    assert states["redis"] == states["redis, 1 worker"] == states["reference"]
    # two workers split the input by order: every order's claim is decided once
    two = states["redis, 2 workers"]
    assert sum(two["outcomes"].values()) == sum(states["reference"]["outcomes"].values())


def test_stdin_streams_into_an_in_process_engine_and_is_kept_for_a_resumable_one(tmp_path,
                                                                                 events):
    plain = _replay(str(CAMPAIGN), "-", "--state-out", "-", stdin=events)
    durable = _replay(str(CAMPAIGN), "-", "--backend", f"memory://{tmp_path}/d",
                      "--state-out", "-", stdin=events)
    assert plain.returncode == 0 and durable.returncode == 0, plain.stderr + durable.stderr
    assert plain.stdout == durable.stdout
    # the same input again from stdin: the durable state knows it was applied
    again = _replay(str(CAMPAIGN), "-", "--backend", f"memory://{tmp_path}/d",
                    "--state-out", "-", stdin=events)
    assert again.returncode == 0 and again.stdout == plain.stdout
    assert b"resuming: the first" in again.stderr

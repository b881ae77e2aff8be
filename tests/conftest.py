"""Shared fixtures: real Redis servers (session-wide, flushed between tests) and the engine
parametrization every cross-engine test uses."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from rewardcore import Campaign, Engine, load_campaign, open_engine
from rewardcore.backends import reset_backend
from rewardcore.cli import main
from rewardcore.examples import example_path

from .servers import RedisCluster, RedisServer, _cli

ROOT = Path(__file__).resolve().parent.parent  # the source checkout (docs, README)
EXAMPLES = example_path("d11-2026").parent  # the example campaigns shipped in the package


def rc(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the rewardcore command as a user would: a new process."""
    return subprocess.run([sys.executable, "-m", "rewardcore", *args], capture_output=True,
                          text=True, timeout=300)


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """Run the rewardcore command in this process (no interpreter start-up per call)."""
    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)
    return run


@pytest.fixture(scope="session")
def example_campaign() -> Campaign:
    return load_campaign(EXAMPLES / "d11-2026.toml")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster(3).start()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    _cli(redis_server.port, "FLUSHALL")
    return redis_server.url


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    redis_cluster.flushall()
    return redis_cluster.url


# Every engine the cross-engine tests run against: name -> (request -> backend URL).
# Backends that need a server take it from a fixture through the request.
ENGINE_URLS: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "reference": lambda request: "reference://",
    "memory": lambda request: "memory://",
    "redis": lambda request: request.getfixturevalue("redis_url"),
    "redis-cluster": lambda request: request.getfixturevalue("redis_cluster_url"),
    # a private segment per engine, removed when it closes
    "shm": lambda request: "shm://?orders=4096",
    # the durable memory engine (write-ahead log and snapshots) in the test's directory
    "memory-durable": lambda request: (
        f"memory://{request.getfixturevalue('tmp_path')}/state?fsync=none"),
}


@pytest.fixture(params=sorted(ENGINE_URLS))
def engine_url(request: pytest.FixtureRequest) -> str:
    return ENGINE_URLS[request.param](request)


@pytest.fixture
def make_engine(engine_url: str) -> Iterator[Callable[[Campaign], Engine]]:
    """Open engines of the parametrized backend: each call gives a fresh, empty engine (the
    previous one is closed first, so a backend may reuse its server, segment or directory)."""
    opened: list[Engine] = []

    def make(campaign: Campaign) -> Engine:
        while opened:
            opened.pop().close()
        if engine_url not in ("reference://", "memory://"):
            # the state the previous engine left, of whichever campaign: rewardcore reset's way
            reset_backend(campaign, engine_url)
        engine = open_engine(campaign, engine_url)
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        engine.close()

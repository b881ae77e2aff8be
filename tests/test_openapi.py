"""The daemon's OpenAPI description: in step with its routes, and true of a started daemon
(schemathesis generates requests for every operation from it and checks the answers)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rewardcore import load_campaign, open_engine
from rewardcore.daemon.app import DaemonContext, build_app
from rewardcore.daemon.deadletters import DeadLetterSink
from rewardcore.daemon.metrics import Metrics
from rewardcore.daemon.openapi import document
from rewardcore.daemon.worker import engine_worker

from .test_daemon import TOKEN, Daemon, campaign_file

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    # The schema says "a string of JSON lines"; generated strings are mostly not events,
    # which is the point: they must be answered, never fail the daemon.
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else \
        msgspec.json.encode(value)


def _clamped(value: Any) -> Any:
    # MessagePack has no integers past 64 bits; generated extra fields may hold them.
    if isinstance(value, int) and not isinstance(value, bool):
        return max(-(2**63), min(value, 2**64 - 1))
    if isinstance(value, list):
        return [_clamped(v) for v in value]
    if isinstance(value, dict):
        return {k: _clamped(v) for k, v in value.items()}
    return value


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: Any, value: Any) -> bytes:
    return msgspec.msgpack.encode(_clamped(value))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    work = tmp_path_factory.mktemp("openapi")
    camp = campaign_file(work / "c.toml", regions=3, slots=2)
    started = Daemon(work, camp, "--max-body", "64KiB").start()
    yield started
    started.kill()


# The document is static, so it is loaded here; the other test checks it is the one served.
schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_described(case: Any, daemon: Daemon) -> None:
    case.call_and_validate(base_url=f"http://127.0.0.1:{daemon.port}",
                           headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS,
                           timeout=30)


def _routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every route the daemon's app serves."""
    campaign = load_campaign(campaign_file(tmp_path / "c.toml", regions=1, slots=2))
    engine = open_engine(campaign, "memory://")

    async def build() -> Any:
        metrics = Metrics(campaign, "memory://", "memory")
        worker = engine_worker(engine, metrics, threaded=False, max_batch=10)
        ctx = DaemonContext(campaign=campaign, backend="memory://", engine=engine,
                            worker=worker, metrics=metrics,
                            dead=DeadLetterSink(None, 10, metrics), token=TOKEN, max_body=10)
        return build_app(ctx)

    front = asyncio.run(build())
    out = set()
    for route in front.app.routes:
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                out.add((method, route.path))
    return out


def test_the_document_describes_every_route(tmp_path: Path, daemon: Daemon) -> None:
    status, headers, body = daemon.request("GET", "/openapi.json", token=None)
    assert status == 200 and headers["content-type"] == "application/json"
    served = json.loads(body)
    assert served == json.loads(json.dumps(document()))
    assert served["openapi"].startswith("3.1")
    described = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert described == _routes(tmp_path)
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert "200" in codes, (method, path)
            if path.startswith("/v1/"):
                assert {"401", "400", "503"} <= codes, (method, path)
                assert op["security"][0] == {"bearer": []}
            for code, answer in op["responses"].items():
                assert answer["content"], (method, path, code)  # every answer has a body
            if method == "post":
                assert op["requestBody"]["content"], path

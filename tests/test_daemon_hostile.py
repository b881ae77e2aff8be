"""The daemon under hostile input and slow clients, over real sockets against a started
`rewardcore serve`: every bad event is a dead letter and the rest of its batch goes on,
answers to bad input stay small, slow and idle connections are cut off by the limits,
secrets never show, bad settings stop the start, tokens have scopes, views paginate."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from rewardcore import load_campaign, open_engine
from rewardcore.codec import MAX_DEAD_PER_BATCH
from rewardcore.engine import dump_state
from rewardcore.redis_servers import RedisServer

from .conftest import rc
from .test_daemon import (
    START_MS,
    TOKEN,
    Daemon,
    campaign_file,
    jsonl,
    killing_at_exit,
    start,
)

READ = "read-only-token-for-tests"
DEEP = b'{"type":"closed","order_id":"deep","ts":1,"x":' + b"[" * 1000 + b"]" * 1000 + b"}"
DUP = b'{"type":"closed","order_id":"dup","ts":1,"ts":2}'


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    yield from killing_at_exit()


def placed(oid: str, region: int = 1, agent: str = "a1") -> bytes:
    return json.dumps({"type": "placed", "order_id": oid, "merchant_id": "m", "agent_id": agent,
                       "region": region, "paid_cents": 100, "ts": START_MS + 1}).encode()


def claims(d: Daemon) -> set[str]:
    status, state = d.get("/v1/state")
    assert status == 200
    return {c["order_id"] for c in state["claims"]}


def raw_exchange(port: int, data: bytes, *, then_wait: bool = True) -> bytes:
    """Send bytes on a fresh connection and read until the daemon closes it (a 30 s socket
    timeout only guards against a hang)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        if data:
            s.sendall(data)
        out = b""
        while then_wait:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


class Fresh(Daemon):
    """A client that opens a new connection per request: the daemons here close idle
    keep-alive connections soon, and http.client does not retry a request sent on one the
    daemon closed meanwhile."""

    def request(self, *args: Any, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        self.close_connections()
        self._local.conn = None
        return super().request(*args, **kw)


def fresh(daemons: list[Daemon], workdir: Path, campaign: Path, *args: str,
          **kw: Any) -> Daemon:
    d = Fresh(workdir, campaign, *args, **kw)
    daemons.append(d)
    return d.start()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the probes: small limits, a read token and public winners."""
    work = tmp_path_factory.mktemp("hostile")
    camp = campaign_file(work / "c.toml", regions=3, slots=4)
    d = Fresh(work, camp, "--max-header", "8KiB", "--max-rejects-shown", "5",
              "--dead-letter-raw", "4KiB", "--public-winners",
              env={"REWARDCORE_READ_TOKEN": READ}).start()
    yield d
    d.kill()


# -- every decode failure is one event's dead letter ---------------------------------------
def test_deep_nesting_and_duplicate_keys_over_http(hostile: Daemon) -> None:
    d = hostile
    body = jsonl([placed("n1"), DEEP, DUP, placed("n2")])
    status, got = d.post("/v1/events", body)
    assert status == 200, got
    assert [r["order_id"] for r in got["decisions"]] == ["n1", "n2"]
    assert got["rejected"] == 2 and [r["line"] for r in got["dead_letters"]] == [2, 3]
    assert "nested deeper than 32" in got["dead_letters"][0]["reason"]
    assert "duplicate key `ts`" in got["dead_letters"][1]["reason"]
    # the deep one is shown cut, and says so
    row = got["dead_letters"][0]
    assert len(row["raw"]) == 256 and row["raw_size"] == len(DEEP)
    assert row["raw_cut"] == len(DEEP) - 256
    # the same in a JSON array and in MessagePack
    status, got = d.post("/v1/events", b"[" + b",".join([placed("n3"), DEEP, DUP]) + b"]",
                         "application/json")
    assert status == 200 and got["accepted"] == 1 and got["rejected"] == 2
    good = msgspec.msgpack.encode(json.loads(placed("n4")))
    deep = (b"\x84\xa4type\xa6closed\xa8order_id\xa1y\xa2ts\x01\xa1z" + b"\x91" * 2000
            + b"\xc0")
    dup = b"\x84\xa4type\xa6closed\xa8order_id\xa1d\xa2ts\x01\xa2ts\x02"
    status, got = d.post("/v1/events", b"\x94" + good + deep + dup + good,
                         "application/msgpack")
    assert status == 200, got
    assert got["accepted"] == 2 and got["rejected"] == 2
    assert [r["index"] for r in got["dead_letters"]] == [1, 2]
    # a deep redemption is a 400, not a 500
    status, got = d.post("/v1/redemptions", b'{"redemption_id":' + b"[" * 5000 + b"]" * 5000
                         + b"}", "application/json")
    assert status == 400 and got["error"]
    assert {"n1", "n2", "n3", "n4"} <= claims(d)


def test_replay_dead_letters_deep_nesting(tmp_path: Path) -> None:
    camp = campaign_file(tmp_path / "c.toml", regions=3, slots=4)
    events = tmp_path / "events.jsonl"
    events.write_bytes(jsonl([placed("r1"), DEEP, DUP, placed("r2")]))
    dead = tmp_path / "dead.jsonl"
    out = rc("replay", str(camp), str(events), "--state-out", str(tmp_path / "s.json"),
             "--dead-letters", str(dead))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    state = json.loads((tmp_path / "s.json").read_text())
    assert {c["order_id"] for c in state["claims"]} == {"r1", "r2"}
    rows = [json.loads(x) for x in dead.read_text().splitlines()]
    assert [r["line"] for r in rows] == [2, 3]


def test_stream_entry_nested_too_deep_is_dead_lettered(tmp_path: Path, daemons: list[Daemon],
                                                       redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    camp = campaign_file(tmp_path / "c.toml", regions=3, slots=4)
    for fields in ({"e": placed("s1")}, {"e": DEEP}, {"e": DUP}, {"e": placed("s2")}):
        r.xadd("orders", fields)
    hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
    d = start(daemons, tmp_path, camp, "--source",
              f"redis-stream://{hostport}/orders?group=g&consumer=c1&block=100")
    deadline = time.monotonic() + 60  # a hang guard: the consumer drains in milliseconds
    while r.xlen("orders:decisions") < 2 or r.xlen("orders:dead") < 2:
        assert time.monotonic() < deadline and d.proc and d.proc.poll() is None
        time.sleep(0.05)
    reasons = [f[b"reason"] for _, f in r.xrange("orders:dead")]
    assert b"nested deeper than 32" in reasons[0] and b"duplicate key" in reasons[1]
    r.xadd("orders", {"e": placed("s3")})  # the consumer goes on
    while r.xlen("orders:decisions") < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert claims(d) == {"s1", "s2", "s3"}
    assert d.stop() == 0


# -- answers to bad input stay small -------------------------------------------------------
def test_8mb_of_bad_lines_gets_a_small_answer_and_healthz_answers(hostile: Daemon) -> None:
    d = hostile
    body = b"x\n" * (4 * 1024 * 1024)
    before = d.dead_path.stat().st_size if d.dead_path.exists() else 0
    result: dict[str, Any] = {}

    def post() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)
        conn.request("POST", "/v1/events", body, {"Authorization": f"Bearer {TOKEN}",
                                                  "Content-Type": "application/x-ndjson"})
        resp = conn.getresponse()
        result["status"], result["body"] = resp.status, resp.read()
        conn.close()

    poster = threading.Thread(target=post)
    poster.start()
    health = []
    while poster.is_alive() or not health:
        status, h = d.get("/healthz", token=None)
        health.append(status == 200 and h["status"] == "ok")
    poster.join()
    assert all(health)
    assert result["status"] == 400
    assert len(result["body"]) < 8 * 1024  # 422 MB before
    got = json.loads(result["body"])
    assert got["rejected"] == len(body) // 2 and got["accepted"] == 0
    assert len(got["dead_letters"]) == 5
    assert got["dead_letters_omitted"] == got["rejected"] - 5
    # the file: the first rejects one by one, the rest folded, each cut to --dead-letter-raw
    added = d.dead_path.read_bytes()[before:]
    assert len(added) < 400 * 1024  # 650 MB before
    rows = [json.loads(x) for x in added.splitlines()]
    assert len(rows) == MAX_DEAD_PER_BATCH + 1
    fold = rows[-1]
    assert fold["count"] == got["rejected"] - MAX_DEAD_PER_BATCH
    assert fold["raw"].startswith("x\nx\n") and len(fold["raw"]) == 4096
    assert fold["raw_size"] == 2 * fold["count"] - 1 and fold["raw_cut"] > 0
    # the in-memory view is bounded too
    status, _, view = d.request("GET", "/v1/dead-letters")
    assert status == 200 and len(view) < 2 * 1024 * 1024
    assert json.loads(view)["total"] >= got["rejected"]


# -- connection limits ---------------------------------------------------------------------
def test_idle_slow_and_oversized_connections_are_cut_off(tmp_path: Path,
                                                         daemons: list[Daemon]) -> None:
    camp = campaign_file(tmp_path / "c.toml", regions=3, slots=4)
    hostile = fresh(daemons, tmp_path, camp, "--header-timeout", "0.5", "--body-timeout",
                    "0.5", "--keep-alive", "0.5", "--max-header", "8KiB")
    port = hostile.port
    # connections that send nothing: all answered 408 and closed by --header-timeout
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(40)]
    for s in socks:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        status, headers, body = answer(data)
        assert status == 408 and "header" in body["error"]
        s.close()
    # headers that never finish
    status, _, body = answer(raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1"))
    assert status == 408
    # a body that never finishes: 408 from --body-timeout, nothing applied
    status, headers, body = answer(raw_exchange(
        port, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
        + b"\r\nContent-Type: application/x-ndjson\r\nContent-Length: 5000\r\n\r\n"
        + placed("slow")[:20]))
    assert status == 408 and "body" in body["error"] and headers["connection"] == "close"
    # headers over --max-header: 431
    status, _, body = answer(raw_exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"))
    assert status == 431 and "8192" in body["error"]
    # not HTTP at all: JSON 400 (uvicorn's own answer was plain text)
    status, _, body = answer(raw_exchange(port, b"\x16\x03\x01 hello\r\n\r\n"))
    assert status == 400 and body["error"]
    # an idle keep-alive connection is closed after --keep-alive, with no answer
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b'"ok"' not in data:
            data += s.recv(65536)
        assert s.recv(65536) == b""  # closed, nothing more said
    assert "slow" not in claims(hostile)
    status, h = hostile.get("/healthz", token=None)
    assert status == 200


def test_connections_past_the_cap_are_refused_clearly(tmp_path: Path,
                                                      daemons: list[Daemon]) -> None:
    camp = campaign_file(tmp_path / "c.toml", regions=3, slots=4)
    d = fresh(daemons, tmp_path, camp, "--max-connections", "5", "--header-timeout", "60")
    held = [socket.create_connection(("127.0.0.1", d.port), timeout=30) for _ in range(5)]
    try:
        time.sleep(0.2)  # let the daemon accept them (a refusal below is the assertion)
        status, _, body = answer(raw_exchange(d.port, b""))
        assert status == 503 and "--max-connections" in body["error"]
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 30
    while True:  # the slots free up once the held connections are gone
        try:
            status, _ = d.get("/healthz", token=None)
            break
        except (OSError, http.client.HTTPException, json.JSONDecodeError):
            d.close_connections()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert status == 200


# -- secrets -------------------------------------------------------------------------------
def test_a_password_in_a_url_is_never_shown(tmp_path: Path, daemons: list[Daemon]) -> None:
    password = "PW-s3cr3t-in-the-query"
    server = RedisServer().start()
    try:
        r = redis.Redis(port=server.port)
        r.config_set("requirepass", password)
        camp = campaign_file(tmp_path / "c.toml", regions=3, slots=4)
        backend = f"redis://127.0.0.1:{server.port}/0?password={password}"
        d = start(daemons, tmp_path, camp, "--access-log", backend=backend)
        status, _, health = d.request("GET", "/healthz", token=None)
        assert status == 200 and b"password=***" in health
        status, _, metrics = d.request("GET", "/metrics", token=None)
        assert status == 200 and b"rewardcore_info" in metrics
        d.post("/v1/events", jsonl([placed("p1")]))
        assert d.stop() == 0
        logs = d.log_text()
        for shown in (health, metrics, logs.encode()):
            assert password.encode() not in shown
        # a bad stream URL: the error line names it without the password
        bad = rc("serve", "--campaign", str(camp), "--token", TOKEN, "--http", "127.0.0.1:0",
                 "--dead-letters", str(tmp_path / "dl.jsonl"), "--source",
                 f"redis-stream://u:{password}@127.0.0.1:{server.port}/orders?group=g&bogus=1")
        assert bad.returncode == 2 and "bogus" in bad.stderr
        assert password not in bad.stderr
    finally:
        server.stop()


# -- start-up refusals ---------------------------------------------------------------------
@pytest.mark.parametrize(("case", "what"), [
    ("short token", "at least 16"),
    ("token file", "at least 16"),
    ("missing token file", "--token-file"),
    ("short read token", "--read-token"),
    ("dead letters in a file", "--dead-letters"),
    ("state-out directory", "does not exist"),
])
def test_bad_start_up_settings_are_refused(case: str, what: str, tmp_path: Path) -> None:
    camp = campaign_file(tmp_path / "c.toml", regions=3, slots=4)
    (tmp_path / "short").write_text("tooshort\n")
    (tmp_path / "afile").write_text("")
    args = {"short token": ["--token", "x"],
            "token file": ["--token-file", str(tmp_path / "short")],
            "missing token file": ["--token-file", str(tmp_path / "nope")],
            "short read token": ["--token", TOKEN, "--read-token", "r"],
            "dead letters in a file": ["--token", TOKEN, "--dead-letters",
                                       str(tmp_path / "afile" / "dl.jsonl")],
            "state-out directory": ["--token", TOKEN, "--state-out",
                                    str(tmp_path / "no" / "such" / "state.json")]}[case]
    if "--dead-letters" not in args:
        args += ["--dead-letters", str(tmp_path / "dl.jsonl")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDCORE_")}
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "rewardcore", "serve", "--campaign", str(camp),
                          "--http", "127.0.0.1:0", *args], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 2
    errors = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    assert [e for e in errors if e["level"] == "error" and what in e["error"]], out.stderr
    assert not any(e["event"] == "start" for e in errors)


def test_a_token_file_is_read(tmp_path: Path, daemons: list[Daemon]) -> None:
    camp = campaign_file(tmp_path / "c.toml", regions=3, slots=4)
    (tmp_path / "token").write_text("from-the-file-0123456789\n")
    d = Fresh(tmp_path, camp, "--token-file", str(tmp_path / "token"))
    del d.env["REWARDCORE_TOKEN"]
    daemons.append(d)
    d.start()
    assert d.get("/v1/state", token="from-the-file-0123456789")[0] == 200
    assert d.get("/v1/state")[0] == 401


# -- scopes --------------------------------------------------------------------------------
def test_read_token_reads_and_write_token_writes(hostile: Daemon) -> None:
    d = hostile
    status, got = d.post("/v1/events", jsonl([placed("w1", region=2)]))
    assert status == 200
    for path in ("/v1/state", "/v1/state/claims", "/v1/regions/2", "/v1/beneficiaries/a1",
                 "/v1/dead-letters", "/v1/winners"):
        assert d.get(path, token=READ)[0] == 200, path
        assert d.get(path, token=TOKEN)[0] == 200, path
    for path, body in (("/v1/events", jsonl([placed("w2")])),
                       ("/v1/redemptions", b'{"redemption_id":"r","beneficiary":"a1",'
                                           b'"prize":"mug"}')):
        status, got = d.post(path, body, "application/json", token=READ)
        assert status == 403 and "write token" in got["error"]
    assert "w2" not in claims(d)
    # --public-winners: the winners without a token, nothing else
    status, got = d.get("/v1/winners", token=None)
    assert status == 200 and got["count"] >= 1
    assert all("*" in w["order_id"] for w in got["winners"])
    assert d.get("/v1/state", token=None)[0] == 401
    assert d.get("/v1/winners", token="wrong-token-of-enough-length")[0] == 200


# -- strict paths and pagination ------------------------------------------------------------
def test_path_parameters_are_strict(hostile: Daemon) -> None:
    d = hostile
    assert d.get("/v1/regions/1")[0] == 200
    for path in ("/v1/regions/%201", "/v1/regions/1%20", "/v1/regions/+1", "/v1/regions/1_0",
                 "/v1/regions/%D9%A1", "/v1/regions/99999999999999999999",
                 "/v1/winners?region=%201", "/v1/beneficiaries/%20a1"):
        status, got = d.get(path)
        assert status == 400 and got["error"], path


def test_views_paginate_with_cursors(tmp_path: Path, daemons: list[Daemon]) -> None:
    camp = campaign_file(tmp_path / "c.toml", regions=5, slots=4)
    d = start(daemons, tmp_path, camp)
    lines = [placed(f"o{i:02}", region=1 + i % 5, agent=f"a{i}") for i in range(17)]
    assert d.post("/v1/events", jsonl(lines))[0] == 200
    assert d.post("/v1/events", jsonl([b"bad %d" % i for i in range(7)]))[0] == 400

    def pages(path: str, key: str) -> list[Any]:
        rows: list[Any] = []
        cursor = ""
        for _ in range(100):
            status, got = d.get(f"{path}?limit=3" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200 and len(got[key]) <= 3
            rows += got[key]
            cursor = got["next_cursor"]
            if cursor is None:
                return rows
        raise AssertionError("pagination did not end")

    status, everything = d.get("/v1/winners")
    assert pages("/v1/winners", "winners") == everything["winners"]
    assert len(everything["winners"]) == 17
    status, state = d.get("/v1/state")
    assert pages("/v1/state/claims", "claims") == state["claims"]
    dead = pages("/v1/dead-letters", "recent")
    assert [r["line"] for r in dead] == list(range(1, 8))
    for path in ("/v1/winners?cursor=zz", "/v1/dead-letters?cursor=-1",
                 "/v1/state/claims?cursor=%%%", "/v1/winners?limit=0",
                 "/v1/winners?limit=100000"):
        assert d.get(path)[0] == 400, path


# -- a bounded soak ------------------------------------------------------------------------
def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_soak_mixed_traffic_stays_bounded_and_applies_each_event_once(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    """A fixed count of requests, valid batches between hostile ones (deep, duplicate,
    garbage, oversized, slow, truncated): RSS stays under 200 MiB and the state is the
    reference's for the valid events, each applied once."""
    camp = campaign_file(tmp_path / "c.toml", regions=40, slots=5)
    d = fresh(daemons, tmp_path, camp, "--max-body", "2MiB", "--body-timeout", "0.5")
    valid: list[bytes] = []
    rss = [_rss_kib(d.pid)]
    hostile_bodies = [jsonl([DEEP] * 20), jsonl([DUP] * 20), b"x\n" * 200_000,
                      b"[" * 1_000_000, b"\xff" * 100_000]
    for n in range(70):
        batch = [placed(f"k{n}-{i}", region=1 + (n * 7 + i) % 40, agent=f"a{(n + i) % 60}")
                 for i in range(20)]
        valid += batch
        status, _ = d.post("/v1/events", jsonl(batch[:10] + [DEEP, DUP] + batch[10:]))
        assert status == 200
        kind = n % 7
        if kind < len(hostile_bodies):
            status, _, data = d.request("POST", "/v1/events", hostile_bodies[kind],
                                        {"Content-Type": "application/x-ndjson"})
            assert status == 400 and len(data) < 16 * 1024
        elif kind == 5:
            status, _, _ = answer(raw_exchange(
                d.port, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\n{"))
            assert status == 408
        else:
            status, _, _ = answer(raw_exchange(
                d.port, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode() + b"\r\nContent-Length: 3000000\r\n\r\n"))
            assert status == 413
        if n % 5 == 0:
            rss.append(_rss_kib(d.pid))
    rss.append(_rss_kib(d.pid))
    print(f"soak: daemon RSS KiB, sampled: {rss}")
    assert max(rss) < 200 * 1024, rss
    ref = open_engine(load_campaign(camp), "reference://")
    ref.apply([msgspec.json.decode(line, type=Any) and _event(line) for line in valid])
    status, _, state = d.request("GET", "/v1/state")
    assert status == 200 and state == dump_state(ref.export_state())


def _event(line: bytes) -> Any:
    from rewardcore.codec import decode_json_event

    return decode_json_event(line)

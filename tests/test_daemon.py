"""The ingest daemon over real HTTP: a started `python -m rewardcore serve` process.

Every test talks to the daemon as a client would (http.client, real sockets), and checks
what it answers against the reference engine fed the same events in the same order.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rewardcore import load_campaign, open_engine
from rewardcore.backends import backend_schemes
from rewardcore.engine import Engine, dump_state
from rewardcore.events import Event, Placed, Redeem
from rewardcore.examples import example_path
from rewardcore.outcomes import Outcome
from rewardcore.traffic import TrafficShape, generate
from rewardcore.winners import mask_id, winner_rows

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = example_path("d11-2026")
TOKEN = "s3cret-token-for-tests"
START_MS = 1_762_790_400_000  # 2025-11-11T00:00:00+08:00, the window of the test campaigns

# -- a started daemon -----------------------------------------------------------------------


class Daemon:
    """`rewardcore serve` in a subprocess on a free port, logs in a file, plus a client."""

    def __init__(self, workdir: Path, campaign: Path | str, *args: str,
                 backend: str = "memory://", env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"daemon-{time.monotonic_ns()}.log"
        self.dead_path = workdir / "dead-letters.jsonl"
        self.state_path = workdir / "state-out.json"
        self.cmd = [sys.executable, "-m", "rewardcore", "serve", "--campaign", str(campaign),
                    "--backend", backend, "--http", "127.0.0.1:0",
                    "--dead-letters", str(self.dead_path), "--state-out", str(self.state_path),
                    *args]
        self.env = dict(os.environ, REWARDCORE_TOKEN=TOKEN, **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []

    def start(self, timeout: float = 30) -> Daemon:
        return self.launch().wait_started(timeout)

    def launch(self) -> Daemon:
        """Start the process without waiting (several daemons can start side by side)."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stderr=log, stdout=subprocess.DEVNULL,
                                         env=self.env, cwd=self.workdir)
        return self

    def wait_started(self, timeout: float = 30) -> Daemon:
        """Until the `start` log line (which names the port) appears."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.logs():
                if rec.get("event") == "start":
                    self.port = rec["port"]
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_text()}")
            time.sleep(0.02)
        raise AssertionError(f"daemon did not start in {timeout}s:\n{self.log_text()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            # a line being written right now is not JSON yet
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close_connections()

    def close_connections(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()

    # -- client: one keep-alive connection per thread ---------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None = TOKEN,
                ) -> tuple[int, dict[str, str], bytes]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                                 timeout=30)
            self._conns.append(conn)
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        except Exception:
            conn.close()
            self._local.conn = None
            raise
        if resp.getheader("connection", "").lower() == "close":
            conn.close()
            self._local.conn = None
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, data = self.request("GET", path, **kw)
        return status, json.loads(data)

    def post(self, path: str, body: bytes, ctype: str = "application/x-ndjson",
             **kw: Any) -> tuple[int, Any]:
        status, _, data = self.request("POST", path, body, {"Content-Type": ctype}, **kw)
        return status, json.loads(data)

    def metric(self, name: str, labels: str = "") -> float:
        """The sum of the /metrics samples of `name` that carry these labels (and any
        others), e.g. metric("rewardcore_dead_letters_total", 'source="http"')."""
        _, _, data = self.request("GET", "/metrics", token=None)
        want = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found = [s.value for family in text_string_to_metric_families(data.decode())
                 for s in family.samples
                 if s.name == name and want.items() <= s.labels.items()]
        if not found:
            raise AssertionError(f"{name}{{{labels}}} not in /metrics")
        return sum(found)


def killing_at_exit() -> Iterator[list[Daemon]]:
    """A list for the daemons a test starts; they are killed at the end, whatever happened."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    yield from killing_at_exit()


def start(daemons: list[Daemon], workdir: Path, campaign: Path | str, *args: str,
          **kw: Any) -> Daemon:
    d = Daemon(workdir, campaign, *args, **kw)
    daemons.append(d)
    return d.start()


def start_together(daemons: list[Daemon], *specs: tuple[Path, Path, list[str]],
                   ) -> list[Daemon]:
    """Start several daemons side by side: (workdir, campaign, args) each."""
    started = [Daemon(workdir, campaign, *args) for workdir, campaign, args in specs]
    daemons.extend(started)
    for d in started:
        d.launch()
    return [d.wait_started() for d in started]


# -- events, bodies and the reference ------------------------------------------------------
_event_json = msgspec.json.Decoder(Event)


def jsonl(lines: Sequence[bytes]) -> bytes:
    return b"".join(line.rstrip(b"\n") + b"\n" for line in lines)


def json_array(lines: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(line.strip() for line in lines) + b"]"


def msgpack_array(lines: Sequence[bytes]) -> bytes:
    return msgspec.msgpack.encode([msgspec.json.decode(line) for line in lines])


BODIES = {
    "application/x-ndjson": jsonl,
    "application/json": json_array,
    "application/msgpack": msgpack_array,
}


def expected_rows(engine: Engine, lines: Sequence[bytes]) -> list[dict[str, Any]]:
    """What the daemon must answer for these events: the reference's decisions, in the
    documented row shape (docs/daemon.md)."""
    events = [_event_json.decode(line) for line in lines]
    d = engine.apply(events)
    rows = []
    for i, ev in enumerate(events):
        row = {"type": type(ev).__name__.lower(), "order_id": getattr(ev, "order_id", None),
               "outcome": Outcome(int(d.outcome[i])).label,
               "region": ev.region if isinstance(ev, Placed) else None,
               "slot": int(d.slot[i]), "points": int(d.points[i])}
        if isinstance(ev, Redeem):
            row["redemption_id"] = ev.redemption_id
        rows.append(row)
    return rows


def campaign_file(path: Path, regions: int = 40, slots: int = 5, **settings: Any) -> Path:
    """A small campaign (regions 1..N) written as TOML, loaded by the daemon like any other."""
    base = {"beneficiary": "agent", "on_close": "release", "settle_on": "completed",
            "budget_points": 0, "min_paid_cents": 0, "max_claims_per_beneficiary": 0,
            "max_claims_per_beneficiary_per_region": 0}
    base.update(settings)
    lines = ["[campaign]", 'id = "daemon-test"', "starts_at = 2025-11-11T00:00:00+08:00",
             "ends_at = 2025-11-12T00:00:00+08:00"]
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in base.items()]
    upto = max(1, slots // 2)
    for code in range(1, regions + 1):
        lines += ["[[regions]]", f"code = {code}", f"slots = {slots}",
                  f"tiers = [{{upto = {upto}, points = 5}}, {{upto = {slots}, points = 10}}]"]
    lines += ["[[prizes]]", 'id = "mug"', 'name = "mug"', "cost_points = 10",
              "value_cents = 100", "stock = 50"]
    path.write_text("\n".join(lines) + "\n")
    return path


def thread_events(k: int, regions: Sequence[int], n: int, seed: int) -> list[bytes]:
    """The first `n` of `endless_events`."""
    return list(itertools.islice(endless_events(k, regions, seed), n))


def endless_events(k: int, regions: Sequence[int], seed: int) -> Iterator[bytes]:
    """Random placed/closed/completed events of one client: its own regions and agents, so
    clients share no state and any interleaving of them gives the same result."""
    rng = random.Random(seed)
    out: list[bytes] = []
    placed: list[str] = []
    for i in itertools.count():
        r = rng.random()
        if r < 0.65 or not placed:
            oid = f"t{k}-o{i}"
            placed.append(oid)
            out.append(json.dumps({
                "type": "placed", "order_id": oid, "merchant_id": f"t{k}-m{rng.randrange(3)}",
                "agent_id": f"t{k}-a{rng.randrange(8)}", "region": rng.choice(regions),
                "paid_cents": rng.randrange(100, 9000), "ts": START_MS + i}).encode())
        elif r < 0.72:
            out.append(out[rng.randrange(len(out))])  # a redelivery
        else:
            kind = "closed" if r < 0.82 else "completed"
            out.append(json.dumps({"type": kind, "order_id": rng.choice(placed),
                                   "ts": START_MS + i}).encode())
        yield out[-1]


def batches(lines: Sequence[bytes], rng: random.Random, most: int) -> list[list[bytes]]:
    out, i = [], 0
    while i < len(lines):
        n = rng.randint(1, most)
        out.append(list(lines[i:i + n]))
        i += n
    return out


# -- tests ----------------------------------------------------------------------------------


def engine_backends() -> list[str]:
    """memory://, and redis:// once that backend is registered (state then lives in Redis)."""
    return ["memory", *(["redis"] if "redis" in backend_schemes() else [])]


@pytest.fixture(params=engine_backends())
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return "memory://"


def test_state_and_views_match_the_reference(tmp_path: Path, daemons: list[Daemon],
                                             backend_url: str) -> None:
    """A peak-day stream posted in batches of every format: each answer, the exported
    state, and the balance, region and winners views equal the reference engine's."""
    campaign = load_campaign(EXAMPLE)
    lines = b"".join(generate(campaign, TrafficShape(orders=2000, seed=5, participants=100,
                                                     redeem_share=0.3))).splitlines()
    d = start(daemons, tmp_path, EXAMPLE, backend=backend_url)
    ref = open_engine(campaign, "reference://")
    rng = random.Random(1)
    kinds = list(BODIES)
    for n, batch in enumerate(batches(lines, rng, 400)):
        ctype = kinds[n % len(kinds)]
        status, answer = d.post("/v1/events", BODIES[ctype](batch), ctype)
        assert status == 200, answer
        want = expected_rows(ref, batch)
        assert answer["decisions"] == want, f"batch {n} ({ctype})"
        assert answer["accepted"] == len(batch) and answer["rejected"] == 0
    status, _, state = d.request("GET", "/v1/state")
    assert status == 200
    assert state == dump_state(ref.export_state())

    # redemptions: a new one, then the same id again (idempotent: first outcome, no change)
    rich = max(ref.balances().items(), key=lambda kv: kv[1].available)[0]
    body = json.dumps({"redemption_id": "rx-1", "beneficiary": rich, "prize": "phone-5"})
    status, first = d.post("/v1/redemptions", body.encode(), "application/json")
    assert status == 200
    outcome = ref.redeem("rx-1", rich, "phone-5", 1, ts=0)
    assert first["outcome"] == outcome.label == "redeemed"
    b = ref.balance(rich)
    assert first["balance"] == {"pending": b.pending, "confirmed": b.confirmed,
                                "redeemed": b.redeemed, "available": b.available}
    status, again = d.post("/v1/redemptions", body.encode(), "application/json")
    assert status == 200 and again == first

    for who in [rich, *sorted(ref.balances())[:5], "nobody"]:
        status, view = d.get(f"/v1/beneficiaries/{who}")
        assert status == 200
        b = ref.balance(who)
        assert view["balance"] == {"pending": b.pending, "confirmed": b.confirmed,
                                   "redeemed": b.redeemed, "available": b.available}
        assert view["claims"] == [
            {"order_id": c.order_id, "region": c.region, "slot": c.slot, "points": c.points,
             "state": c.state, "ts": c.ts} for c in ref.claims_of(who)]

    taken = {c["region"] for c in json.loads(state)["claims"]}
    busiest = max(taken, key=lambda code: len(ref.winners(code)))
    for code in (busiest, int(campaign.region_codes[0])):
        status, view = d.get(f"/v1/regions/{code}")
        rs = ref.region_status(code)
        assert status == 200 and rs is not None
        assert (view["slots"], view["taken"], view["remaining"]) == (rs.slots, rs.taken,
                                                                    rs.remaining)
        assert view["sold_out"] == (rs.remaining == 0)
        assert [(t["upto"], t["points"]) for t in view["tiers"]] == list(rs.tiers)

    status, view = d.get(f"/v1/winners?region={busiest}")
    assert status == 200
    assert view["winners"] == winner_rows(ref, busiest) and view["count"] > 0
    # ids are published masked, never in full
    for row, claim in zip(view["winners"], ref.winners(busiest), strict=True):
        assert row["beneficiary"] == mask_id(claim.beneficiary) != claim.beneficiary
        assert row["order_id"] == mask_id(claim.order_id) != claim.order_id
    status, view = d.get("/v1/winners")
    assert status == 200 and view["count"] == len(ref.winners())

    # metrics count what was applied (the redemption twice, as two requests)
    counts = ref.outcome_counts()
    assert d.metric("rewardcore_claims_total") == counts[Outcome.AWARDED]
    assert d.metric("rewardcore_events_total", 'outcome="sold_out"') == counts.get(
        Outcome.SOLD_OUT, 0)
    assert d.metric("rewardcore_sold_out_regions") >= 1
    assert d.stop() == 0
    assert d.state_path.read_bytes() == dump_state(ref.export_state())
    stops = [r for r in d.logs() if r["event"] == "stop"]
    assert len(stops) == 1 and stops[0]["exit"] == 0


@pytest.mark.parametrize("engine_thread", ["off", "on"])
def test_concurrent_clients_get_their_own_decisions(tmp_path: Path, daemons: list[Daemon],
                                                    engine_thread: str) -> None:
    """Several clients at once: requests are merged into shared engine calls, yet every
    client gets exactly the decisions of its own events, and the state is the reference's."""
    camp = campaign_file(tmp_path / "c.toml", regions=40, slots=5,
                         max_claims_per_beneficiary_per_region=2)
    d = start(daemons, tmp_path, camp, "--engine-thread", engine_thread)
    clients = 6
    work = []
    for k in range(clients):
        regions = [c for c in range(1, 41) if c % clients == k]
        work.append(batches(thread_events(k, regions, 500, seed=k), random.Random(k), 12))
    answers: list[list[list[dict[str, Any]]]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            for batch in work[k]:
                status, answer = d.post("/v1/events", jsonl(batch))
                assert status == 200, answer
                answers[k].append(answer["decisions"])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    ref = open_engine(load_campaign(camp), "reference://")
    for k in range(clients):
        for n, batch in enumerate(work[k]):
            assert answers[k][n] == expected_rows(ref, batch), f"client {k} batch {n}"
    status, _, state = d.request("GET", "/v1/state")
    assert state == dump_state(ref.export_state())
    requests = sum(len(w) for w in work)
    engine_calls = d.metric("rewardcore_batch_events_count")
    assert engine_calls <= requests  # merged calls are fewer (how many depends on timing)
    assert d.stop() == 0


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the tests that only probe it (auth, bad input): a small body limit."""
    work = tmp_path_factory.mktemp("daemon")
    camp = campaign_file(work / "c.toml", regions=3, slots=2)
    d = Daemon(work, camp, "--max-body", "4KiB").start()
    yield d
    try:
        assert d.stop(signal.SIGINT) == 0  # Ctrl-C stops it as cleanly as SIGTERM
        assert [r["reason"] for r in d.logs() if r["event"] == "stop"] == ["SIGINT"]
    finally:
        d.kill()


def test_v1_needs_the_bearer_token(shared_daemon: Daemon) -> None:
    d = shared_daemon
    paths = [("GET", "/v1/state"), ("GET", "/v1/winners"), ("GET", "/v1/regions/1"),
             ("GET", "/v1/beneficiaries/a1"), ("GET", "/v1/dead-letters"),
             ("POST", "/v1/events"), ("POST", "/v1/redemptions"), ("GET", "/v1/nothing")]
    body = b'{"type":"closed","order_id":"x","ts":1}\n'
    for token in (None, "", "wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper()):
        for method, path in paths:
            status, headers, data = d.request(method, path, body if method == "POST" else None,
                                              token=token)
            assert status == 401, (token, path)
            assert headers["www-authenticate"] == "Bearer"
            assert "bearer token" in json.loads(data)["error"]
    # another scheme with the right secret is still wrong
    status, _, _ = d.request("GET", "/v1/state", token=None,
                             headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 401
    # nothing was applied by the refused requests
    status, state = d.get("/v1/state")
    assert status == 200 and state["outcomes"] == {}
    # health and metrics are open
    status, health = d.get("/healthz", token=None)
    assert status == 200 and health["status"] == "ok"
    status, _, data = d.request("GET", "/metrics", token=None)
    assert status == 200 and b'rewardcore_http_requests_total{route="/v1/state",status="401"}' \
        in data


def _placed(oid: str, region: int = 1, agent: str = "a1") -> dict[str, Any]:
    return {"type": "placed", "order_id": oid, "merchant_id": "m1", "agent_id": agent,
            "region": region, "paid_cents": 500, "ts": START_MS + 5}


def test_bad_input_is_answered_and_kept(shared_daemon: Daemon) -> None:
    d = shared_daemon
    dead_before = d.metric("rewardcore_dead_letters_total", 'source="http"')

    # every event invalid: 400, each bad line named with its field; nothing applied
    bad = [b'{"type":"placed","order_id":"b1","merchant_id":"m","agent_id":"a",'
           b'"region":"one","paid_cents":1,"ts":1}',
           b'{"type":"placed","order_id":"b2","merchant_id":"m","agent_id":"a","region":1,'
           b'"paid_cents":1}',
           b'{"type":"teleported","order_id":"b3","ts":1}',
           b'{"type":"closed","order_id":"b4","ts":-5}',
           b"not json at all"]
    status, answer = d.post("/v1/events", jsonl(bad))
    assert status == 400
    assert answer["accepted"] == 0 and answer["rejected"] == 5
    assert "no valid event" in answer["error"]
    rows = answer["dead_letters"]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r.get("field") for r in rows] == ["region", "ts", "type", "ts", None]
    assert "malformed" in rows[4]["reason"].lower() or "invalid" in rows[4]["reason"].lower()
    assert rows[0]["raw"] == bad[0].decode()

    # mixed: the valid events are applied, the invalid reported, 200
    mixed = [json.dumps(_placed("g1")).encode(), bad[0], json.dumps(_placed("g2")).encode()]
    for ctype, where in (("application/x-ndjson", "line"), ("application/json", "index"),
                         ("application/msgpack", "index")):
        body = (BODIES[ctype](mixed) if ctype != "application/msgpack" else
                msgspec.msgpack.encode([_placed("g1"), {**_placed("x"), "region": "one"},
                                        _placed("g2")]))
        status, answer = d.post("/v1/events", body, ctype)
        assert status == 200, answer
        assert answer["accepted"] == 2 and answer["rejected"] == 1
        assert [r["order_id"] for r in answer["decisions"]] == ["g1", "g2"]
        assert answer["dead_letters"][0][where] == (2 if where == "line" else 1)
        assert answer["dead_letters"][0]["field"] == "region"
    status, state = d.get("/v1/state")
    assert {c["order_id"] for c in state["claims"]} == {"g1", "g2"}  # applied once each

    # not an array at all / not MessagePack at all
    status, answer = d.post("/v1/events", b'{"events": [1, 2]', "application/json")
    assert status == 400 and answer["rejected"] == 1
    status, answer = d.post("/v1/events", b"\xc1\xc1\xc1", "application/msgpack")
    assert status == 400 and "MessagePack" in answer["dead_letters"][0]["reason"]
    status, answer = d.post("/v1/events", b"a,b,c\n", "text/csv")
    assert status == 415 and "application/x-ndjson" in answer["error"]

    # every rejected event is kept: in the file, in /v1/dead-letters, in the metric
    rejected = 5 + 3 + 1 + 1
    assert d.metric("rewardcore_dead_letters_total", 'source="http"') == dead_before + rejected
    kept = [json.loads(line) for line in d.dead_path.read_text().splitlines()]
    assert len(kept) >= rejected
    assert kept[0]["reason"] and kept[0]["source"] == "http" and kept[0]["line"] == 1
    status, recent = d.get("/v1/dead-letters")
    assert status == 200 and recent["total"] >= rejected
    assert recent["recent"][-1] == kept[-1]

    # bad redemptions and bad paths
    for body, field in ((b'{"redemption_id":"r","beneficiary":"a1"}', "prize"),
                        (b'{"redemption_id":"r","beneficiary":"a1","prize":"mug","qty":0}',
                         "qty"),
                        (b'{"redemption_id":"r","beneficiary":"a1","prize":"mug","qtty":2}',
                         "qtty"),
                        (b"[1,2]", None)):
        status, answer = d.post("/v1/redemptions", body, "application/json")
        assert status == 400, body
        assert answer["field"] == field, answer
    status, answer = d.get("/v1/regions/abc")
    assert status == 400 and "not an integer" in answer["error"]
    status, answer = d.get("/v1/regions/999")
    assert status == 404 and "999" in answer["error"]
    status, answer = d.get("/v1/winners?region=x")
    assert status == 400
    status, answer = d.get("/v1/nowhere")
    assert status == 404 and answer["error"]
    status, _, _ = d.request("GET", "/v1/events")
    assert status == 405
    status, health = d.get("/healthz", token=None)
    assert status == 200 and health["status"] == "ok"  # still up


def test_body_over_the_limit_gets_413(shared_daemon: Daemon) -> None:
    d = shared_daemon
    big = jsonl([json.dumps(_placed(f"big{i}")).encode() for i in range(60)])
    assert len(big) > 4096
    status, headers, data = d.request("POST", "/v1/events", big,
                                      {"Content-Type": "application/x-ndjson"})
    assert status == 413 and "4096" in json.loads(data)["error"]
    assert headers.get("connection") == "close"

    # a chunked body has no length up front: counted as it arrives
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    conn.putrequest("POST", "/v1/events")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Type", "application/x-ndjson")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for i in range(0, len(big), 1000):
            part = big[i:i + 1000]
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon may answer and close before the last chunk
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()
    status, _, data = d.request("POST", "/v1/redemptions", b" " * 5000,
                                {"Content-Type": "application/json"})
    assert status == 413
    status, state = d.get("/v1/state")
    assert not any(c["order_id"].startswith("big") for c in state["claims"])
    status, health = d.get("/healthz", token=None)
    assert status == 200


def test_sigterm_under_load_loses_nothing_acknowledged(tmp_path: Path,
                                                       daemons: list[Daemon]) -> None:
    """Clients post until the daemon stops answering; SIGTERM lands once every client has had
    a batch answered. The daemon exits 0 and the state it writes on the way out holds exactly
    the batches it answered 200 for."""
    camp = campaign_file(tmp_path / "c.toml", regions=40, slots=5)
    d = start(daemons, tmp_path, camp, "--grace", "5")
    clients = 4
    acked: list[list[list[bytes]]] = [[] for _ in range(clients)]
    failures: list[str] = [""] * clients
    answered = [threading.Event() for _ in range(clients)]

    def client(k: int) -> None:
        # No fixed amount of work: a client only stops when the daemon refuses or closes,
        # so the load outlasts the stop however fast the machine is.
        lines = endless_events(k, [c for c in range(1, 41) if c % clients == k], seed=10 + k)
        rng = random.Random(k)
        hang_guard = time.monotonic() + 120
        while time.monotonic() < hang_guard:
            batch = list(itertools.islice(lines, rng.randint(1, 20)))
            try:
                status, _, _ = d.request("POST", "/v1/events", jsonl(batch),
                                         {"Content-Type": "application/x-ndjson"})
            except (OSError, http.client.HTTPException) as exc:
                failures[k] = type(exc).__name__  # refused or closed: not acknowledged
                return
            if status != 200:
                failures[k] = f"status {status}"
                return
            acked[k].append(batch)
            answered[k].set()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    assert all(e.wait(60) for e in answered)
    assert d.stop(signal.SIGTERM) == 0
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert all(failures), f"every client should have been cut off by the stop: {failures}"
    ref = open_engine(load_campaign(camp), "reference://")
    for k in range(clients):
        for batch in acked[k]:
            ref.apply([_event_json.decode(line) for line in batch])
    assert d.state_path.read_bytes() == dump_state(ref.export_state())
    stop = [r for r in d.logs() if r["event"] == "stop"]
    assert stop and stop[0]["reason"] == "SIGTERM" and stop[0]["exit"] == 0


@pytest.mark.parametrize(("args", "what"), [
    (["--source", "redis-stream://127.0.0.1:1/orders"], "group=NAME is required"),
    (["--source", "redis-stream://127.0.0.1:1/orders?group=g&batch=x"], "batch"),
    (["--source", "redis-stream://127.0.0.1:1/orders?group=g"], "cannot start the consumer"),
    (["--backend", "nosuch://x"], "nosuch"),
    (["--max-body", "lots"], "lots"),
    (["--http", "localhost"], "HOST:PORT"),
    (["--token", ""], "REWARDCORE_TOKEN"),
])
def test_bad_settings_are_named(args: list[str], what: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad setting stops the start with exit 2 and one JSON error line naming it; so does
    a missing token (no --token, no REWARDCORE_TOKEN)."""
    from rewardcore.cli import main

    monkeypatch.delenv("REWARDCORE_TOKEN", raising=False)
    rc = main(["serve", "--campaign", str(EXAMPLE), "--token", TOKEN, "--http", "127.0.0.1:0",
               "--dead-letters", str(tmp_path / "dl.jsonl"), *args])
    assert rc == 2
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    errors = [x for x in lines if x["level"] == "error"]
    assert len(errors) == 1 and what in errors[0]["error"], lines
    assert not any(x["event"] == "start" for x in lines)


def test_mask_id() -> None:
    assert mask_id("a1029384") == "a1****84"
    assert mask_id("a17") == "a**"
    assert mask_id("x") == "x"
    assert all(len(mask_id(s)) == len(s) for s in ("", "ab", "abcd", "order-123456789"))


def test_sigkill_with_a_durable_engine_loses_no_answered_batch(tmp_path: Path,
                                                               daemons: list[Daemon]) -> None:
    """memory:///dir logs (and fsyncs) each batch before answering: after a SIGKILL under
    load, a daemon started on the same directory holds every batch that was answered 200,
    plus at most the one batch in flight at the kill."""
    camp = campaign_file(tmp_path / "c.toml", regions=40, slots=5)
    url = f"memory://{tmp_path / 'state'}"
    d = start(daemons, tmp_path, camp, backend=url)
    acked: list[list[bytes]] = []
    sent: list[list[bytes]] = []
    statuses: list[int] = []
    cut = threading.Event()

    def client() -> None:
        # Posts until the kill cuts it off (no fixed amount of work to finish first).
        lines = endless_events(0, list(range(1, 41)), seed=3)
        rng = random.Random(3)
        hang_guard = time.monotonic() + 120
        while time.monotonic() < hang_guard:
            sent.append(list(itertools.islice(lines, rng.randint(1, 20))))
            try:
                status, _, _ = d.request("POST", "/v1/events", jsonl(sent[-1]),
                                         {"Content-Type": "application/x-ndjson"})
            except (OSError, http.client.HTTPException):
                return
            if status != 200:
                statuses.append(status)
                return
            acked.append(sent[-1])
            if len(acked) == 50:
                cut.set()

    t = threading.Thread(target=client)
    t.start()
    assert cut.wait(60)
    d.kill()
    t.join(60)
    assert not t.is_alive() and statuses == []
    assert len(acked) >= 50 and len(sent) == len(acked) + 1
    again = start(daemons, tmp_path, camp, backend=url)
    status, _, state = again.request("GET", "/v1/state")
    assert status == 200
    ref = open_engine(load_campaign(camp), "reference://")
    for batch in acked:
        ref.apply([_event_json.decode(line) for line in batch])
    if state != dump_state(ref.export_state()):  # the batch in flight made it to the log
        ref.apply([_event_json.decode(line) for line in sent[-1]])
        assert state == dump_state(ref.export_state())
    assert again.stop() == 0

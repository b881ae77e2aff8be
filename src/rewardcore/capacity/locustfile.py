"""Locust load test of the rewardcore daemon: a Double-Eleven night against `rewardcore serve`.

Users (pick some on the command line, e.g. `locust -f loadtests/locustfile.py OrderUser`):
  OrderUser   POST /v1/events, one order per request (the checkout path)
  BatchUser   POST /v1/events, RC_BATCH_SIZE (1,000) orders per request, JSON lines
  StreamUser  XADD to the daemon's Redis stream (`--source redis-stream://...`), one order per
              entry in the field `e`, RC_STREAM_BATCH entries per pipelined request

Shape (DoubleElevenShape): a warm-up at 10 % of the peak, the midnight spike to the peak
within 30 s, a plateau, then the decay to 20 %; RC_DURATION scales the whole night, so a smoke
run takes seconds. Every user sends at a constant rate (RC_*_RATE requests/s), so the load
offered is users x rate x orders per request, and a daemon that cannot keep up shows as
latency and a rate below the offer.

Settings (environment variables; `rewardcore loadtest` sets them):
  RC_CAMPAIGN      campaign TOML (default the example d11-2026): regions and the window
  RC_TOKEN         the daemon's bearer token
  RC_DURATION      seconds of the whole night (default 300)
  RC_PEAK_USERS    users at the peak (default 40)
  RC_ORDER_RATE    requests/s per OrderUser (default 20)
  RC_BATCH_RATE    requests/s per BatchUser (default 1)
  RC_BATCH_SIZE    orders per BatchUser request (default 1000)
  RC_STREAM_URL    redis://host:port/db of the stream (StreamUser only)
  RC_STREAM        stream name (default orders)
  RC_STREAM_RATE   pipelined XADD requests/s per StreamUser (default 5)
  RC_STREAM_BATCH  entries per StreamUser request (default 100)
  RC_TIMELINE      file prefix: each process writes PREFIX.<pid>.json with every request's
                   latency per second, for an exact per-second p99 (the runner reads them)

Request names carry the orders they hold ("[1000 orders]"), so reports can count orders.
"""

from __future__ import annotations

import itertools
import os
import random
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import redis
from locust import FastHttpUser, LoadTestShape, User, constant_throughput, events, task

from rewardcore import load_campaign
from rewardcore.examples import example_path


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"loadtests: {name}={value!r} is not an integer") from None


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise SystemExit(f"loadtests: {name}={value!r} is not a number") from None


CAMPAIGN = load_campaign(os.environ.get("RC_CAMPAIGN") or example_path("d11-2026"))
TOKEN = os.environ.get("RC_TOKEN", "")
BATCH_SIZE = _env_int("RC_BATCH_SIZE", 1000)
STREAM_BATCH = _env_int("RC_STREAM_BATCH", 100)
STREAM = os.environ.get("RC_STREAM", "orders")

# Zipf-popular regions, as in traffic.generate: a few regions take most orders.
_T0 = time.time()
_CODES = [int(c) for c in CAMPAIGN.region_codes]
_CUM = list(itertools.accumulate(1.0 / (k + 1) ** 1.1 for k in range(len(_CODES))))
random.Random(11).shuffle(_CODES)


class Orders:
    """Placed events with unique order ids, inside the campaign's window.

    Building thousands of JSON lines per second in Python would make Locust, not the daemon,
    the bottleneck; so each user draws a few template batches once (Zipf regions, random
    agents and amounts) and each request stamps a fresh order-id prefix into one with a
    single bytes.replace. Order ids stay unique (prefix per request, index per line)."""

    TEMPLATES = 8  # template batches per size and user
    MARK = b"@ID@"

    def __init__(self) -> None:
        self.prefix = f"lt-{uuid.uuid4().hex[:10]}-"
        self.n = 0
        self.rng = random.Random()
        self._templates: dict[int, list[tuple[bytes, ...]]] = {}

    def _draw(self, k: int) -> tuple[bytes, ...]:
        c = CAMPAIGN
        # Inside [starts, ends): minutes after midnight, as the night goes on.
        ts = c.starts_ms + int((time.time() - _T0) * 1000) % (c.ends_ms - c.starts_ms)
        regions = self.rng.choices(_CODES, cum_weights=_CUM, k=k)
        out = []
        for i, region in enumerate(regions):
            agent = self.rng.randrange(50_000)
            out.append(f'{{"type":"placed","order_id":"@ID@{i}",'
                       f'"merchant_id":"m{agent // 5}","agent_id":"a{agent}",'
                       f'"region":{region},"paid_cents":{self.rng.randrange(1000, 90000)},'
                       f'"ts":{ts}}}'.encode())
        return tuple(out)

    def lines(self, k: int) -> list[bytes]:
        """k JSON lines (without newlines) of new orders."""
        pool = self._templates.get(k)
        if pool is None:
            pool = self._templates[k] = [self._draw(k) for _ in range(self.TEMPLATES)]
        self.n += 1
        stamp = f"{self.prefix}{self.n}-".encode()
        return [line.replace(self.MARK, stamp) for line in self.rng.choice(pool)]

    def body(self, k: int) -> bytes:
        """A JSON-lines body of k new orders."""
        pool = self._templates.get(-k)
        if pool is None:
            pool = self._templates[-k] = [
                (b"\n".join(t) + b"\n",) for t in (self._draw(k) for _ in range(self.TEMPLATES))]
        self.n += 1
        return self.rng.choice(pool)[0].replace(self.MARK, f"{self.prefix}{self.n}-".encode())


class _Answer(msgspec.Struct):
    accepted: int = 0
    rejected: int = 0


_answer = msgspec.json.Decoder(_Answer)


class _DaemonUser(FastHttpUser):
    abstract = True

    def on_start(self) -> None:
        self.orders = Orders()
        self.headers = {"Authorization": f"Bearer {TOKEN}",
                        "Content-Type": "application/x-ndjson"}

    def post(self, k: int) -> None:
        body = self.orders.body(k)
        name = f"POST /v1/events [{k} order{'s' if k > 1 else ''}]"
        # bytes go out as they are (Locust's hint says str; encoding again would cost CPU)
        with self.client.post("/v1/events", data=body,  # type: ignore[arg-type]
                              headers=self.headers, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                got = _answer.decode(resp.content)
            except msgspec.DecodeError as exc:
                resp.failure(f"undecodable answer: {exc}")
                return
            if got.accepted != k or got.rejected:
                resp.failure(f"accepted {got.accepted} of {k}, rejected {got.rejected}")


class OrderUser(_DaemonUser):
    """One order per request, as an order gateway calling the daemon at checkout."""

    weight = 6
    wait_time = constant_throughput(_env_float("RC_ORDER_RATE", 20))

    @task
    def one_order(self) -> None:
        self.post(1)


class BatchUser(_DaemonUser):
    """RC_BATCH_SIZE orders per request, as a gateway forwarding what it buffered."""

    weight = 2
    wait_time = constant_throughput(_env_float("RC_BATCH_RATE", 1))

    @task
    def batch(self) -> None:
        self.post(BATCH_SIZE)


class StreamUser(User):
    """Orders written to the Redis stream the daemon consumes (`--source`), one per entry,
    RC_STREAM_BATCH entries per pipelined request."""

    weight = 2
    wait_time = constant_throughput(_env_float("RC_STREAM_RATE", 5))

    def on_start(self) -> None:
        url = os.environ.get("RC_STREAM_URL")
        if not url:
            raise SystemExit("loadtests: StreamUser needs RC_STREAM_URL=redis://host:port/0")
        self.redis = redis.Redis.from_url(url)
        self.orders = Orders()
        self.name = f"XADD {STREAM} [{STREAM_BATCH} orders]"

    def on_stop(self) -> None:
        self.redis.close()

    @task
    def xadd(self) -> None:
        lines = self.orders.lines(STREAM_BATCH)
        start = time.perf_counter()
        exc: Exception | None = None
        try:
            pipe = self.redis.pipeline(transaction=False)
            for line in lines:
                pipe.xadd(STREAM, {"e": line})
            pipe.execute()
        except redis.RedisError as e:
            exc = e
        self.environment.events.request.fire(
            request_type="XADD", name=self.name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=0, exception=exc, context={})


class DoubleElevenShape(LoadTestShape):
    """Warm-up, the midnight spike (peak within 30 s), a plateau, the decay."""

    def __init__(self) -> None:
        super().__init__()
        self.duration = _env_float("RC_DURATION", 300)
        self.peak = max(1, _env_int("RC_PEAK_USERS", 40))
        d = self.duration
        self.warm_end = 0.2 * d
        self.spike_end = self.warm_end + min(30.0, 0.15 * d)
        self.plateau_end = self.spike_end + 0.4 * d
        self.low = max(1, round(0.1 * self.peak))
        self.tail = max(1, round(0.2 * self.peak))

    def users_at(self, t: float) -> int:
        """Users the shape asks for `t` seconds into the night."""
        if t < self.warm_end:
            return self.low
        if t < self.spike_end:
            f = (t - self.warm_end) / (self.spike_end - self.warm_end)
            return round(self.low + f * (self.peak - self.low))
        if t < self.plateau_end:
            return self.peak
        f = min(1.0, (t - self.plateau_end) / max(1e-9, self.duration - self.plateau_end))
        return round(self.peak - f * (self.peak - self.tail))

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.duration:
            return None
        spike_rate = (self.peak - self.low) / max(1.0, self.spike_end - self.warm_end)
        return self.users_at(t), max(float(self.peak), spike_rate * 2)


# -- an exact per-second timeline, beside Locust's own (windowed) CSV percentiles -----------
_timeline: dict[tuple[int, str], list[float]] = defaultdict(list)
_failures: dict[tuple[int, str], int] = defaultdict(int)


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float, exception: Any,
                **_: Any) -> None:
    key = (int(time.time()), name)
    if exception is None:
        _timeline[key].append(round(response_time, 3))
    else:
        _failures[key] += 1


@events.quitting.add_listener
def _write_timeline(environment: Any, **_: Any) -> None:
    prefix = os.environ.get("RC_TIMELINE")
    if not prefix:
        return
    rows = [{"second": s, "name": n, "ms": v, "failures": _failures.get((s, n), 0)}
            for (s, n), v in sorted(_timeline.items())]
    rows += [{"second": s, "name": n, "ms": [], "failures": f}
             for (s, n), f in sorted(_failures.items()) if (s, n) not in _timeline]
    Path(f"{prefix}.{os.getpid()}.json").write_bytes(msgspec.json.encode(rows))

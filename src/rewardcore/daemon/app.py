"""The HTTP API (Starlette). See docs/daemon.md for the reference.

Every /v1 path needs `Authorization: Bearer <token>` (compared in constant time);
/healthz and /metrics are open. Bodies are decoded with the shared codecs, so an event the
daemon rejects is rejected exactly as `rewardcore replay` would, with the same reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..campaign import Campaign
from ..codec import (
    Batch,
    DeadLetter,
    decode_json_array,
    decode_jsonl,
    decode_msgpack,
    json_depth_over,
)
from ..engine import Decisions, Engine, dump_state
from ..events import INT64_MAX, Closed, Completed, Event, Placed, Qty, Redeem, Ts
from ..events import Id as _Id
from ..outcomes import LABELS, Outcome
from ..winners import winner_rows
from .deadletters import DeadLetterSink
from .logs import StatusOf
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .pages import Pages
from .worker import EngineWorker, WorkerClosed

log = logging.getLogger("rewardcore.daemon")

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
_TAG = {Placed: "placed", Closed: "closed", Completed: "completed", Redeem: "redeem"}


@dataclass
class DaemonContext:
    """What the handlers share: the engine's worker and the daemon's bookkeeping."""

    campaign: Campaign
    backend: str
    engine: Engine
    worker: EngineWorker
    metrics: Metrics
    dead: DeadLetterSink
    token: str
    max_body: int
    read_token: str = ""  # may only read the views
    public_winners: bool = False  # GET /v1/winners needs no token
    body_timeout: float = 30.0  # seconds for a whole request body
    max_rejects_shown: int = 20  # rejected events an answer lists in full
    stopping: bool = False
    started: float = field(default_factory=time.monotonic)


# -- answers --------------------------------------------------------------------------------
class DecisionRow(msgspec.Struct, omit_defaults=True):
    """One event's decision. `region` is null for events other than `placed`; a redeem row
    carries its `redemption_id` (and a null `order_id`)."""

    type: str
    order_id: str | None
    outcome: str
    region: int | None
    slot: int
    points: int
    redemption_id: str | None = None


class EventsAnswer(msgspec.Struct):
    decisions: list[DecisionRow]
    counts: dict[str, int]
    accepted: int
    rejected: int
    dead_letters: list[dict[str, Any]]
    dead_letters_omitted: int = 0  # rejected events past --max-rejects-shown, not listed


#: Bytes of a rejected event's raw an answer shows (the dead-letter file keeps more).
SHOWN_RAW = 256
#: Bodies larger than this are decoded off the event loop, so a huge bad body never stalls
#: the other connections (a small one decodes faster than a thread hop).
THREAD_DECODE = 256 * 1024
_decoding = ThreadPoolExecutor(2, thread_name_prefix="rewardcore-decode")


class RedemptionBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/redemptions. `ts` defaults to the time of the request."""

    redemption_id: _Id
    beneficiary: _Id
    prize: _Id
    qty: Qty = 1
    ts: Ts | None = None


_redemption_json = msgspec.json.Decoder(RedemptionBody)
_redemption_msgpack = msgspec.msgpack.Decoder(RedemptionBody)


class _Encoded(Response):
    """A JSON (or MessagePack, when the client accepts it) response from msgspec."""

    def __init__(self, content: Any, status_code: int = 200, *, msgpack: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        if msgpack:
            super().__init__(_msgpack.encode(content), status_code, headers,
                             "application/msgpack")
        else:
            super().__init__(_json.encode(content), status_code, headers, "application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None,
           **extra: Any) -> Response:
    return _Encoded({"error": message, **extra}, status, headers=headers)


def _wants_msgpack(request: Request) -> bool:
    return "msgpack" in request.headers.get("accept", "")


_FIELD_AT = re.compile(r"at `\$(?:\[\d+\])?\.([^`\[]+)")
_FIELD_MISSING = re.compile(r"(?:required|unknown) field `([^`]+)`")


def dead_letter_row(d: DeadLetter, raw_limit: int | None = SHOWN_RAW) -> dict[str, Any]:
    """A dead letter for an answer: where it was, why, the field when msgspec names one,
    and at most `raw_limit` bytes of it as received."""
    row = d.to_dict(raw_limit)
    m = _FIELD_AT.search(d.reason) or _FIELD_MISSING.search(d.reason)
    if m:
        row["field"] = m.group(1)
    return row


def decision_rows(events: list[Event], d: Decisions) -> list[DecisionRow]:
    rows: list[DecisionRow] = []
    append = rows.append
    for ev, o, s, p in zip(events, d.outcome.tolist(), d.slot.tolist(), d.points.tolist(),
                           strict=True):
        if isinstance(ev, Placed):
            append(DecisionRow("placed", ev.order_id, LABELS[o], ev.region, s, p))
        elif isinstance(ev, Redeem):
            append(DecisionRow("redeem", None, LABELS[o], None, s, p, ev.redemption_id))
        else:
            append(DecisionRow(_TAG[type(ev)], ev.order_id, LABELS[o], None, s, p))
    return rows


def outcome_counts(rows: list[DecisionRow]) -> dict[str, int]:
    """Outcome label -> how many rows have it (a dict is cheaper than numpy for a few)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return counts


# -- bodies ---------------------------------------------------------------------------------
class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:  # chunked bodies have no length up front
                    raise _TooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise _TooSlow from None
    return b"".join(chunks)


def _too_slow_message(timeout: float) -> str:
    return f"request body not received within {timeout:g} s (--body-timeout)"


def _too_large(limit: int) -> Response:
    # The rest of the body is never read, so the connection cannot be reused.
    return _Encoded({"error": f"request body over the limit of {limit} bytes (--max-body)"},
                    413, headers={"connection": "close"})


_JSONL_TYPES = {"application/x-ndjson", "application/jsonl", "application/x-jsonlines",
                "application/json-seq", "text/plain"}
_MSGPACK_TYPES = {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
SUPPORTED_TYPES = ("application/x-ndjson (JSON lines), application/json (an array of events, "
                   "or one event), application/msgpack (an array of events)")


def _decoder_for(content_type: str) -> Callable[[bytes], Batch] | None:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in _JSONL_TYPES or ctype == "":
        return decode_jsonl
    if ctype == "application/json":
        return _decode_json
    if ctype in _MSGPACK_TYPES:
        return decode_msgpack
    return None


def _decode_json(body: bytes) -> Batch:
    # A JSON array is a batch; a single object (curl -d '{...}') is a batch of one.
    if body.lstrip()[:1] == b"[":
        return decode_json_array(body)
    return decode_jsonl(body)


# -- handlers -------------------------------------------------------------------------------
def build_app(ctx: DaemonContext) -> ASGIApp:
    """The daemon's ASGI app: routes, JSON errors, bearer auth and request metrics."""
    events = EventsEndpoint(ctx)

    async def post_redemption(request: Request) -> Response:
        try:
            body = await _read_body(request, ctx.max_body, ctx.body_timeout)
        except _TooLarge:
            return _too_large(ctx.max_body)
        except _TooSlow:
            return _Encoded({"error": _too_slow_message(ctx.body_timeout)}, 408,
                            headers={"connection": "close"})
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            if ctype in _MSGPACK_TYPES:
                r = _redemption_msgpack.decode(body)
            elif json_depth_over(body):
                raise msgspec.DecodeError("nested deeper than a redemption can be")
            else:
                r = _redemption_json.decode(body)
        except Exception as exc:  # whatever hostile bytes make the decoder raise
            reason = str(exc) if isinstance(exc, msgspec.DecodeError) else (
                f"{type(exc).__name__}: {exc}")
            row = dead_letter_row(DeadLetter(reason, body))
            return _error(400, f"invalid redemption: {reason}", field=row.get("field"))
        ts = r.ts if r.ts is not None else int(time.time() * 1000)
        ev = Redeem(redemption_id=r.redemption_id, beneficiary=r.beneficiary, prize=r.prize,
                    qty=r.qty, ts=ts)
        try:
            d = await ctx.worker.apply([ev])
            balance = await ctx.worker.call(ctx.engine.balance, r.beneficiary)
        except WorkerClosed:
            return _error(503, "the daemon is stopping")
        except Exception as exc:
            log.error("engine_error", exc_info=exc,
                      extra={"fields": {"where": "POST /v1/redemptions"}})
            return _error(503, f"the engine failed: {exc}; send the redemption again "
                               "(it is idempotent by redemption_id)")
        outcome = Outcome(int(d.outcome[0]))
        return _Encoded({
            "redemption_id": r.redemption_id, "beneficiary": r.beneficiary, "prize": r.prize,
            "qty": r.qty, "outcome": outcome.label, "points": int(d.points[0]),
            "balance": _balance(balance),
        }, msgpack=_wants_msgpack(request))

    async def get_beneficiary(request: Request) -> Response:
        who = _id_param(request.path_params["id"], "beneficiary id")

        def view(engine: Engine) -> dict[str, Any]:
            return {
                "beneficiary": who,
                "balance": _balance(engine.balance(who)),
                "claims": [{"order_id": c.order_id, "region": c.region, "slot": c.slot,
                            "points": c.points, "state": c.state, "ts": c.ts}
                           for c in engine.claims_of(who)],
            }

        return await _view(view)

    async def get_region(request: Request) -> Response:
        code = _int_param(request.path_params["code"], "region code")
        status = await _engine_call(ctx.engine.region_status, code)
        if isinstance(status, Response):
            return status
        if status is None:
            return _error(404, f"region {code} is not a reward region of campaign "
                               f"{ctx.campaign.id}")
        return _Encoded({
            "code": status.code, "slots": status.slots, "taken": status.taken,
            "remaining": status.remaining, "sold_out": status.remaining <= 0,
            "tiers": [{"upto": upto, "points": pts} for upto, pts in status.tiers],
        })

    async def get_winners(request: Request) -> Response:
        raw = request.query_params.get("region")
        region = None
        if raw is not None and raw != "":
            region = _int_param(raw, "region")
            if region not in ctx.campaign.region_by_code:
                return _error(404, f"region {region} is not a reward region of campaign "
                                   f"{ctx.campaign.id}")
        limit = _limit_param(request)
        after = _winners_cursor(request.query_params.get("cursor"))

        def view(engine: Engine) -> dict[str, Any]:
            rows = winner_rows(engine, region)
            later = [r for r in rows if (r["region"], r["slot"]) > after] if after else rows
            page = later[:limit]
            more = len(later) > limit
            return {"campaign": ctx.campaign.id, "region": region, "count": len(rows),
                    "winners": page,
                    "next_cursor": f"{page[-1]['region']}:{page[-1]['slot']}" if more else None}

        return await _view(view)

    async def get_state(request: Request) -> Response:
        state = await _engine_call(ctx.engine.export_state)
        if isinstance(state, Response):
            return state
        return Response(dump_state(state), media_type="application/json")

    async def get_state_claims(request: Request) -> Response:
        limit = _limit_param(request)
        after = _claims_cursor(request.query_params.get("cursor"))
        state = await _engine_call(ctx.engine.export_state)
        if isinstance(state, Response):
            return state
        claims = state["claims"]  # sorted by order_id
        later = [c for c in claims if c["order_id"] > after] if after else claims
        page = later[:limit]
        nxt = None
        if len(later) > limit:
            nxt = base64.urlsafe_b64encode(page[-1]["order_id"].encode()).decode().rstrip("=")
        return _Encoded({"count": len(claims), "claims": page, "next_cursor": nxt})

    async def get_dead_letters(request: Request) -> Response:
        limit = _limit_param(request)
        raw = request.query_params.get("cursor")
        after = 0
        if raw:
            if not _DIGITS.fullmatch(raw):
                raise HTTPException(400, f"cursor {raw[:40]!r} is not one this API gave out")
            after = int(raw)
        page, nxt = ctx.dead.page(after, limit)
        return _Encoded({"total": ctx.dead.total, "recent": page,
                         "next_cursor": None if nxt is None else str(nxt)})

    async def openapi(request: Request) -> Response:
        from .openapi import document

        return _Encoded(document())

    async def healthz(request: Request) -> Response:
        body = {"status": "stopping" if ctx.stopping else "ok", "campaign": ctx.campaign.id,
                "backend": ctx.backend, "events": ctx.worker.events_applied,
                "uptime_s": round(time.monotonic() - ctx.started, 3)}
        return _Encoded(body, 503 if ctx.stopping else 200)

    async def metrics(request: Request) -> Response:
        # The campaign gauges: one summary per scrape, in order with the batches.
        try:
            ctx.metrics.summary = await ctx.worker.call(ctx.engine.summary)
        except WorkerClosed:
            pass  # stopping: the last summary stands
        except Exception as exc:  # the other metrics still answer; the gauges keep the last
            log.error("engine_error", exc_info=exc, extra={"fields": {"where": "summary"}})
        return Response(ctx.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def _engine_call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await ctx.worker.call(fn, *args)
        except WorkerClosed:
            return _error(503, "the daemon is stopping")
        except Exception as exc:
            log.error("engine_error", exc_info=exc, extra={"fields": {"where": fn.__name__}})
            return _error(503, f"the engine failed: {exc}")

    async def _view(fn: Callable[[Engine], dict[str, Any]]) -> Response:
        result = await _engine_call(fn, ctx.engine)
        return result if isinstance(result, Response) else _Encoded(result)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, exc.detail, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("error", exc_info=exc, extra={"fields": {"where": request.url.path}})
        return _error(500, f"internal error: {type(exc).__name__}; see the daemon's log")

    routes = [
        Route("/v1/events", events, methods=["POST"]),
        Route("/v1/redemptions", post_redemption, methods=["POST"]),
        Route("/v1/beneficiaries/{id}", get_beneficiary, methods=["GET"]),
        Route("/v1/regions/{code}", get_region, methods=["GET"]),
        Route("/v1/winners", get_winners, methods=["GET"]),
        Route("/v1/state", get_state, methods=["GET"]),
        Route("/v1/state/claims", get_state_claims, methods=["GET"]),
        Route("/v1/dead-letters", get_dead_letters, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *Pages(ctx).routes(),  # /p/{beneficiary}, /winners, /live (docs/daemon.md)
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error,
                                                       Exception: server_error})
    return Front(app, events, ctx)


_INT = re.compile(r"-?[0-9]{1,19}")
_DIGITS = re.compile(r"[0-9]{1,19}")
#: Rows a paginated view answers at most, unless ?limit= asks for fewer (a page of winners
#: is about 200 bytes a row: 2 MB at most).
PAGE_LIMIT = 10_000


def _int_param(raw: str, what: str) -> int:
    # Strictly ASCII digits: int() would also take " 110140", "1_10140" and other scripts'
    # digits, so one region would have many spellings.
    if not _INT.fullmatch(raw):
        raise HTTPException(400, f"{what} {raw[:40]!r} is not an integer")
    value = int(raw)
    if not -INT64_MAX <= value <= INT64_MAX:  # the range of a region code (events.py)
        raise HTTPException(400, f"{what} {raw[:40]!r} is out of range")
    return value


def _id_param(raw: str, what: str) -> str:
    if not 1 <= len(raw) <= 256 or not raw.isprintable() or raw != raw.strip():
        raise HTTPException(400, f"{what} {raw[:40]!r}: expected 1-256 printable characters, "
                                 "no spaces at the ends")
    return raw


def _limit_param(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return PAGE_LIMIT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= PAGE_LIMIT:
        raise HTTPException(400, f"limit {raw[:40]!r}: expected an integer from 1 to "
                                 f"{PAGE_LIMIT}")
    return int(raw)


def _winners_cursor(raw: str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    region, sep, slot = raw.partition(":")
    if not sep or not _INT.fullmatch(region) or not _DIGITS.fullmatch(slot):
        raise HTTPException(400, f"cursor {raw[:40]!r} is not one this API gave out")
    return int(region), int(slot)


def _claims_cursor(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        after = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_",
                                 validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        after = ""
    if not after:
        raise HTTPException(400, f"cursor {raw[:40]!r} is not one this API gave out")
    return after


def _balance(b: Any) -> dict[str, int]:
    return {"pending": b.pending, "confirmed": b.confirmed, "redeemed": b.redeemed,
            "available": b.available}


_ROUTE_PREFIXES = (("/v1/beneficiaries/", "/v1/beneficiaries/{id}"),
                   ("/v1/regions/", "/v1/regions/{code}"), ("/p/", "/p/{beneficiary}"))
_ROUTES = {"/v1/events", "/v1/redemptions", "/v1/winners", "/v1/state", "/v1/state/claims",
           "/v1/dead-letters", "/healthz", "/metrics", "/openapi.json", "/winners", "/live",
           "/live/summary.json"}


def _route_label(path: str) -> str:
    if path in _ROUTES:
        return path
    for prefix, label in _ROUTE_PREFIXES:
        if path.startswith(prefix):
            return label
    return "other"  # keeps the label set small whatever paths strangers try


class Front:
    """The outermost ASGI app: bearer auth for /v1, request metrics, and the hot path.

    POST /v1/events goes straight to its endpoint; Starlette's routing and request objects
    cost more than the rest of such a request (measured: bench/bench_daemon.py, see
    docs/daemon.md), and it is the one path the order gateway calls per order.
    """

    def __init__(self, app: ASGIApp, events: EventsEndpoint, ctx: DaemonContext) -> None:
        self.app = app
        self.events = events
        self.expected = b"Bearer " + ctx.token.encode()
        # Without a read token, nothing may match it: a value no header can carry.
        self.read_only = b"Bearer " + ctx.read_token.encode() if ctx.read_token else b"\n"
        self.public_winners = ctx.public_winners
        self.metrics = ctx.metrics
        self._counters: dict[tuple[str, int], Any] = {}

    def _count(self, route: str, status: int) -> None:
        child = self._counters.get((route, status))
        if child is None:
            child = self._counters[(route, status)] = self.metrics.requests.labels(
                route, str(status))
        child.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/v1" or path.startswith("/v1/"):
            got = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    got = value
                    break
            reads = scope["method"] in ("GET", "HEAD")
            # compare_digest takes the same time wherever the two differ.
            if hmac.compare_digest(got, self.expected):
                pass  # the write token may do everything
            elif hmac.compare_digest(got, self.read_only):
                if not reads:
                    await _send_raw(send, 403, _json.encode({
                        "error": "this token may only read (--read-token): "
                                 f"{scope['method']} {path} needs the write token"
                    }), b"application/json")
                    self._count(_route_label(path), 403)
                    return
            elif not (reads and self.public_winners and path == "/v1/winners"):
                await _send_raw(send, 401, _json.encode({
                    "error": "missing or wrong bearer token: send Authorization: Bearer <token>"
                }), b"application/json", [(b"www-authenticate", b"Bearer")])
                self._count(_route_label(path), 401)
                return
            if path == "/v1/events" and scope["method"] == "POST":
                try:
                    status = await self.events.handle(scope, receive, send)
                except Exception as exc:  # a bug must still answer JSON (the answer is
                    # sent last, so nothing of it went out yet)
                    log.error("error", exc_info=exc, extra={"fields": {"where": path}})
                    await _send_raw(send, 500, _json.encode({
                        "error": f"internal error: {type(exc).__name__}; see the daemon's log"
                    }), b"application/json", [(b"connection", b"close")])
                    status = 500
                self._count("/v1/events", status)
                return
        sent = StatusOf(send, 500)
        try:
            await self.app(scope, receive, sent)
        finally:
            self._count(_route_label(path), sent.status)


async def _send_raw(send: Send, status: int, body: bytes, content_type: bytes,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class EventsEndpoint:
    """POST /v1/events as a plain ASGI app (see `Front` for why)."""

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one batch; returns the status sent."""
        ctx = self.ctx
        start = time.perf_counter()
        ctype = b""
        accept = b""
        length = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value
            elif name == b"content-length":
                length = value
            elif name == b"accept":
                accept = value
        decoder = _decoder_for(ctype.decode("latin-1"))
        if decoder is None:
            return await self._error(send, 415, f"unsupported content-type "
                                                f"{ctype.decode('latin-1')!r}; send "
                                                f"{SUPPORTED_TYPES}")
        limit = ctx.max_body
        if length.isdigit() and int(length) > limit:
            return await self._too_large(send)
        chunks = []
        size = 0
        try:
            async with asyncio.timeout(ctx.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return 499  # the client went away before its body: nothing applied
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:  # chunked bodies have no length up front
                        return await self._too_large(send)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _send_raw(send, 408, _json.encode({
                "error": _too_slow_message(ctx.body_timeout) + "; nothing of it was applied"}),
                b"application/json", [(b"connection", b"close")])
            return 408
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if len(body) > THREAD_DECODE:
            events, dead = await asyncio.get_running_loop().run_in_executor(
                _decoding, decoder, body)
        else:
            events, dead = decoder(body)
        rejected = 0
        dead_rows: list[dict[str, Any]] = []
        if dead:
            ctx.dead.add("http", dead)
            rejected = sum(d.count for d in dead)
            shown = ctx.max_rejects_shown
            dead_rows = [dead_letter_row(d) for d in dead[:shown]]
        omitted = rejected - sum(r.get("count", 1) for r in dead_rows)
        if not events and dead:
            return await self._error(send, 400, f"no valid event in the batch: {rejected} "
                                                "rejected, none applied", accepted=0,
                                     rejected=rejected, dead_letters=dead_rows,
                                     dead_letters_omitted=omitted)
        rows: list[DecisionRow] = []
        counts: dict[str, int] = {}
        if events:
            try:
                decisions = await ctx.worker.apply(events)
            except WorkerClosed:
                return await self._error(send, 503, "the daemon is stopping; nothing of this "
                                                    "batch was applied")
            except Exception as exc:
                log.error("engine_error", exc_info=exc,
                          extra={"fields": {"where": "POST /v1/events", "events": len(events)}})
                return await self._error(send, 503, f"the engine failed: {exc}; the batch may "
                                                    "be partly applied: send it again (events "
                                                    "are idempotent)")
            rows = decision_rows(events, decisions)
            counts = outcome_counts(rows)
        answer = EventsAnswer(rows, counts, len(events), rejected, dead_rows, omitted)
        if b"msgpack" in accept:
            await _send_raw(send, 200, _msgpack.encode(answer), b"application/msgpack")
        else:
            await _send_raw(send, 200, _json.encode(answer), b"application/json")
        ctx.metrics.request_seconds.observe(time.perf_counter() - start)
        return 200

    async def _error(self, send: Send, status: int, message: str, **extra: Any) -> int:
        await _send_raw(send, status, _json.encode({"error": message, **extra}),
                        b"application/json")
        return status

    async def _too_large(self, send: Send) -> int:
        # The rest of the body is never read, so the connection cannot be reused.
        await _send_raw(send, 413, _json.encode({
            "error": f"request body over the limit of {self.ctx.max_body} bytes (--max-body)"
        }), b"application/json", [(b"connection", b"close")])
        return 413

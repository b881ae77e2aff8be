"""The OpenAPI 3.1 description of the daemon's HTTP API, served at GET /openapi.json.

Written out here next to the routes (tests/test_openapi.py keeps the two in step and runs
schemathesis against a started daemon); the event and request schemas come from the
msgspec structs themselves, so they cannot drift from what the decoders accept.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from ..events import Event
from ..outcomes import Outcome
from .app import PAGE_LIMIT, SHOWN_RAW, RedemptionBody

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _obj(required: list[str], props: dict[str, Any], *, extra: bool = False,
         description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "required": required, "properties": props}
    if not extra:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


_INT = {"type": "integer"}
_STR = {"type": "string"}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_CURSOR = {"type": ["string", "null"],
           "description": "pass as ?cursor= for the next page; null on the last page"}
_BALANCE = _obj(["pending", "confirmed", "redeemed", "available"],
                {k: _INT for k in ("pending", "confirmed", "redeemed", "available")})
_LABELS = sorted(o.label for o in Outcome)

_SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error"], {"error": {"type": "string", "description": "what was wrong, "
                                                                          "and where"}},
                  extra=True, description="Every error answer: JSON with a reason, sometimes "
                                          "with more fields."),
    "DeadLetter": _obj(["reason"], {
        "reason": _STR,
        "line": {**_INT, "description": "1-based line (JSON lines)"},
        "offset": {**_INT, "description": "byte offset of the line (JSON lines)"},
        "index": {**_INT, "description": "position in the array (JSON array, MessagePack)"},
        "count": {**_INT, "description": "more than 1: a fold of that many rejected events, "
                                         "raw holds their bytes one per line"},
        "field": {**_NULLABLE_STR, "description": "the field the reason is about"},
        "raw": {**_STR, "description": f"the event as received (UTF-8), at most {SHOWN_RAW} "
                                       "bytes in an answer"},
        "raw_base64": {**_STR, "description": "the event as received, when not UTF-8"},
        "raw_size": {**_INT, "description": "bytes of the event as received, when raw is cut"},
        "raw_cut": {**_INT, "description": "bytes of the event left out of raw"},
        "seq": {**_INT, "description": "the row's number (GET /v1/dead-letters)"},
        "source": {"enum": ["http", "stream"]},
        "received_ms": _INT,
        "stream": _STR, "id": _STR, "deliveries": _INT,
    }, extra=True),
    "DecisionRow": _obj(["type", "order_id", "outcome", "region", "slot", "points"], {
        "type": {"enum": ["placed", "closed", "completed", "redeem"]},
        "order_id": _NULLABLE_STR, "outcome": {"enum": _LABELS}, "region": _NULLABLE_INT,
        "slot": _INT, "points": _INT, "redemption_id": _STR}),
    "EventsAnswer": _obj(["decisions", "counts", "accepted", "rejected", "dead_letters",
                          "dead_letters_omitted"], {
        "decisions": {"type": "array", "items": _ref("DecisionRow")},
        "counts": {"type": "object", "additionalProperties": _INT},
        "accepted": _INT, "rejected": _INT,
        "dead_letters": {"type": "array", "items": _ref("DeadLetter"),
                         "description": "the first --max-rejects-shown rejected events"},
        "dead_letters_omitted": {**_INT, "description": "rejected events not listed"}}),
    "BatchRejected": _obj(["error", "accepted", "rejected", "dead_letters",
                           "dead_letters_omitted"], {
        "error": _STR, "accepted": _INT, "rejected": _INT,
        "dead_letters": {"type": "array", "items": _ref("DeadLetter")},
        "dead_letters_omitted": _INT}),
    "RedemptionAnswer": _obj(["redemption_id", "beneficiary", "prize", "qty", "outcome",
                              "points", "balance"], {
        "redemption_id": _STR, "beneficiary": _STR, "prize": _STR, "qty": _INT,
        "outcome": {"enum": _LABELS}, "points": _INT, "balance": _BALANCE}),
    "Beneficiary": _obj(["beneficiary", "balance", "claims"], {
        "beneficiary": _STR, "balance": _BALANCE,
        "claims": {"type": "array", "items": _obj(
            ["order_id", "region", "slot", "points", "state", "ts"],
            {"order_id": _STR, "region": _INT, "slot": _INT, "points": _INT, "state": _STR,
             "ts": _INT})}}),
    "Region": _obj(["code", "slots", "taken", "remaining", "sold_out", "tiers"], {
        "code": _INT, "slots": _INT, "taken": _INT, "remaining": _INT,
        "sold_out": {"type": "boolean"},
        "tiers": {"type": "array", "items": _obj(["upto", "points"],
                                                 {"upto": _INT, "points": _INT})}}),
    "Winners": _obj(["campaign", "region", "count", "winners", "next_cursor"], {
        "campaign": _STR, "region": _NULLABLE_INT,
        "count": {**_INT, "description": "winners in all pages"},
        "winners": {"type": "array", "items": _obj(
            ["region", "slot", "rank", "beneficiary", "order_id", "ts", "placed_at", "points",
             "state"],
            {"region": _INT, "slot": _INT,
             "rank": {**_INT, "description": "the order's place among the region's orders "
                                             "that reached slot choice (0: not kept)"},
             "beneficiary": {**_STR, "description": "masked"},
             "order_id": {**_STR, "description": "masked"}, "ts": _INT, "placed_at": _STR,
             "points": _INT, "state": _STR})},
        "next_cursor": _CURSOR}),
    "State": _obj(["balances", "claims", "outcomes", "redemptions"], {
        "balances": {"type": "object", "additionalProperties": _obj(
            ["confirmed", "pending", "redeemed"],
            {"confirmed": _INT, "pending": _INT, "redeemed": _INT})},
        "claims": {"type": "array", "items": _ref("StateClaim")},
        "outcomes": {"type": "object", "additionalProperties": _INT},
        "redemptions": {"type": "object", "additionalProperties": _STR}},
        description="The exported state of DESIGN.md, keys sorted."),
    "StateClaim": _obj(["beneficiary", "order_id", "points", "region", "slot", "state"], {
        "beneficiary": _STR, "order_id": _STR, "points": _INT, "region": _INT, "slot": _INT,
        "state": _STR}),
    "ClaimsPage": _obj(["count", "claims", "next_cursor"], {
        "count": {**_INT, "description": "claims in all pages"},
        "claims": {"type": "array", "items": _ref("StateClaim")}, "next_cursor": _CURSOR}),
    "DeadLetters": _obj(["total", "recent", "next_cursor"], {
        "total": {**_INT, "description": "rejected events since the start"},
        "recent": {"type": "array", "items": _ref("DeadLetter"),
                   "description": "the kept rows after the cursor, oldest first"},
        "next_cursor": _CURSOR}),
    "Health": _obj(["status", "campaign", "backend", "events", "uptime_s"], {
        "status": {"enum": ["ok", "stopping"]}, "campaign": _STR,
        "backend": {**_STR, "description": "the engine URL, secrets masked"},
        "events": _INT, "uptime_s": {"type": "number"}}, extra=True),
}

_ERROR_WHY = {
    "400": "bad request: a parameter, body or cursor that does not parse (the reason says "
           "which)",
    "401": "missing or wrong bearer token",
    "403": "the read-only token, on an operation that writes",
    "404": "no such region (or path)",
    "408": "the request's headers (--header-timeout) or body (--body-timeout) came too "
           "slowly; the connection is closed",
    "413": "body over --max-body; the connection is closed",
    "415": "unsupported Content-Type",
    "431": "request line and headers over --max-header; the connection is closed",
    "500": "an internal error (logged)",
    "503": "the engine failed, the daemon is stopping, or --max-connections connections "
           "are open",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {c: {"description": _ERROR_WHY[c],
                "content": {"application/json": {"schema": _ref("Error")}}} for c in codes}


def _ok(schema: str, description: str, *, msgpack: bool = False) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(schema)}}
    if msgpack:
        content["application/msgpack"] = {"schema": _ref(schema)}
    return {"200": {"description": description, "content": content}}


_CONNECTION = ("408", "431", "500", "503")
_READ = ("400", "401", *_CONNECTION)
_WRITE = ("400", "401", "403", "413", *_CONNECTION)
_PAGE = [
    {"name": "cursor", "in": "query", "required": False, "schema": _STR,
     "description": "next_cursor of the previous page; opaque"},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT},
     "description": f"rows per page (default and most: {PAGE_LIMIT})"},
]
_BEARER = [{"bearer": []}]
_QUERY_TOKEN = {"name": "token", "in": "query", "required": False, "schema": _STR,
                "description": "the bearer or read token, once: kept in a cookie, then a "
                               "redirect (303) to the page without it"}
_QUERY_KEY = {"name": "key", "in": "query", "required": False, "schema": _STR,
              "description": "the participant's private link key"}


def _html() -> dict[str, Any]:
    page = {"text/html": {"schema": _STR}}
    return {"200": {"description": "the page", "content": page},
            "303": {"description": "the token was taken from ?token= into a cookie: the same "
                                   "page without it", "content": page},
            "403": {"description": "not allowed (the page says why)", "content": page},
            "503": {"description": "the engine failed or the daemon is stopping",
                    "content": {**page, "application/json": {"schema": _ref("Error")}}},
            **_errors("400", "404", "408", "431", "500")}


def _get(summary: str, responses: dict[str, Any], *, params: list[Any] | None = None,
         security: list[Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses,
                          "security": _BEARER if security is None else security}
    if params:
        op["parameters"] = params
    return {"get": op}


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    (event, redemption), defs = msgspec.json.schema_components(
        [Event, RedemptionBody], ref_template=_REF)
    schemas = {**defs, **_SCHEMAS, "Event": event}
    events_body = {
        "application/x-ndjson": {
            "schema": {"type": "string", "description": "JSON lines: one Event per line "
                                                        "(blank lines skipped)"}},
        "application/json": {
            "schema": {"oneOf": [{"type": "array", "items": _ref("Event")}, _ref("Event")]}},
        "application/msgpack": {"schema": {"type": "array", "items": _ref("Event")}},
    }
    paths: dict[str, Any] = {
        "/v1/events": {"post": {
            "summary": "Apply a batch of events; one decision per valid event",
            "description": "Also accepted: application/jsonl, application/x-jsonlines, "
                           "text/plain, no Content-Type (JSON lines); application/x-msgpack, "
                           "application/vnd.msgpack. Valid events are applied and invalid "
                           "ones dead-lettered; 400 when none is valid.",
            "requestBody": {"required": True, "content": events_body},
            "responses": {**_ok("EventsAnswer", "the decisions", msgpack=True),
                          "400": {"description": "no valid event in the batch",
                                  "content": {"application/json": {
                                      "schema": _ref("BatchRejected")}}},
                          **_errors("401", "403", "413", "415", *_CONNECTION)},
            "security": _BEARER}},
        "/v1/redemptions": {"post": {
            "summary": "Spend confirmed points on a prize (idempotent by redemption_id)",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": redemption},
                "application/msgpack": {"schema": redemption}}},
            "responses": {**_ok("RedemptionAnswer", "the outcome and the balance now",
                                msgpack=True), **_errors(*_WRITE)},
            "security": _BEARER}},
        "/v1/beneficiaries/{id}": _get(
            "A beneficiary's balance and claims", {**_ok("Beneficiary", "the beneficiary"),
                                                   **_errors("404", *_READ)},
            params=[{"name": "id", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 256}}]),
        "/v1/regions/{code}": _get(
            "A region's slots", {**_ok("Region", "the region"), **_errors("404", *_READ)},
            params=[{"name": "code", "in": "path", "required": True,
                     "schema": {"type": "integer", "format": "int64"}}]),
        "/v1/winners": _get(
            "The published winners (ids masked), by region then slot, a page at a time",
            {**_ok("Winners", "a page of winners"), **_errors("404", *_READ)},
            params=[{"name": "region", "in": "query", "required": False,
                     "schema": {"type": "integer", "format": "int64"}}, *_PAGE],
            security=[*_BEARER, {}]),
        "/v1/state": _get("The exported state (as rewardcore replay --state-out writes it)",
                          {**_ok("State", "the state"), **_errors(*_READ)}),
        "/v1/state/claims": _get("The exported state's claims, by order_id, a page at a "
                                 "time", {**_ok("ClaimsPage", "a page of claims"),
                                          **_errors(*_READ)}, params=_PAGE),
        "/v1/dead-letters": _get("The kept recent dead letters, oldest first, a page at a "
                                 "time", {**_ok("DeadLetters", "a page of dead letters"),
                                          **_errors(*_READ)}, params=_PAGE),
        "/healthz": _get("Liveness", {
            "200": {"description": "serving", "content": {"application/json": {
                "schema": _ref("Health")}}},
            "503": {"description": "stopping (or too many connections)",
                    "content": {"application/json": {"schema": {
                        "oneOf": [_ref("Health"), _ref("Error")]}}}},
            **_errors("400", "408", "431", "500")}, security=[]),
        "/metrics": _get("Prometheus metrics", {
            "200": {"description": "the exposition", "content": {"text/plain": {
                "schema": _STR}}}, **_errors("400", *_CONNECTION)}, security=[]),
        # The pages for people (rewardcore.daemon.pages): HTML; a token may also come as
        # ?token= (which sets a cookie and redirects) or the rewardcore_token cookie.
        "/p/{beneficiary}": _get(
            "A participant's page (behind ?key= or a token)", _html(),
            params=[{"name": "beneficiary", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 256}},
                    _QUERY_KEY, _QUERY_TOKEN], security=[]),
        "/winners": _get(
            "The winners page (public with --public-winners, else a token)", _html(),
            params=[{"name": "region", "in": "query", "required": False, "schema": _STR},
                    {"name": "q", "in": "query", "required": False, "schema": _STR},
                    {"name": "page", "in": "query", "required": False, "schema": _STR},
                    _QUERY_TOKEN], security=[]),
        "/live": _get("The operators' live page (a token)", _html(), params=[_QUERY_TOKEN],
                      security=[]),
        "/live/summary.json": _get(
            "What the live page shows, as JSON (a token)", {
                "200": {"description": "the summary", "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                **_errors("400", "401", *_CONNECTION)}, params=[_QUERY_TOKEN], security=[]),
        "/openapi.json": _get("This document", {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                "schema": {"type": "object"}}}}, **_errors("400", *_CONNECTION)},
            security=[]),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "rewardcore daemon", "version": "1",
                 "description": "The ingest daemon's HTTP API (docs/daemon.md). Every /v1 "
                                "operation needs a bearer token: the write token allows "
                                "everything, the read token (--read-token) the GET "
                                "operations; GET /v1/winners needs none when the daemon "
                                "runs with --public-winners. Every error answer is JSON "
                                "with a reason (Error)."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "Authorization: Bearer <token> (write or read token)"}}},
    }

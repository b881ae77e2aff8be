"""The decoders' checks against hostile bytes: nesting depth, duplicate keys, folds of many
rejects; whatever the fast path proves, the event-by-event path agrees with."""

from __future__ import annotations

import msgspec
import pytest

from rewardcore.codec import (
    MAX_DEAD_PER_BATCH,
    decode_json_array,
    decode_jsonl,
    decode_msgpack,
    json_depth_over,
)

CLOSED = b'{"type":"closed","order_id":"c","ts":1}'
REDEEM_QTY = b'{"type":"redeem","redemption_id":"r","beneficiary":"a","prize":"p","qty":2,"ts":1}'
REDEEM_DUP = b'{"type":"redeem","redemption_id":"r","beneficiary":"a","prize":"p","ts":1,"ts":2}'
DEEP = b'{"type":"closed","order_id":"d","ts":1,"x":' + b"[" * 40 + b"]" * 40 + b"}"
SHALLOW = b'{"type":"closed","order_id":"s","ts":1,"x":' + b"[" * 30 + b"]" * 30 + b"}"


@pytest.mark.parametrize("bad, reason", [(REDEEM_DUP, "duplicate key `ts`"),
                                         (DEEP, "nested deeper than 32"),
                                         (b'{"type":"closed","order_id":"a","order_id":"b",'
                                          b'"ts":1}', "duplicate key `order_id`")])
def test_a_bad_event_among_good_ones_whatever_the_format(bad: bytes, reason: str) -> None:
    good = [CLOSED, REDEEM_QTY, SHALLOW]
    for body, decode in ((b"\n".join([*good, bad]) + b"\n", decode_jsonl),
                         (b"[" + b",".join([*good, bad]) + b"]", decode_json_array)):
        events, dead = decode(body)
        assert len(events) == 3 and len(dead) == 1, body
        assert reason in dead[0].reason


def test_optional_qty_is_not_a_duplicate_and_stays_on_the_fast_path() -> None:
    body = b"\n".join([CLOSED, REDEEM_QTY, CLOSED, REDEEM_QTY]) + b"\n"
    events, dead = decode_jsonl(body)
    assert dead == [] and [getattr(e, "qty", None) for e in events] == [None, 2, None, 2]


def test_msgpack_duplicates_and_depth() -> None:
    good = msgspec.msgpack.encode(msgspec.json.decode(REDEEM_QTY))
    dup = (b"\x86\xa4type\xa6redeem\xadredemption_id\xa1r\xabbeneficiary\xa1a\xa5prize\xa1p"
           b"\xa2ts\x01\xa2ts\x02")
    deep = b"\x84\xa4type\xa6closed\xa8order_id\xa1y\xa2ts\x01\xa1z" + b"\x91" * 40 + b"\xc0"
    events, dead = decode_msgpack(b"\x94" + good + dup + deep + good)
    assert len(events) == 2
    assert [(d.index, d.reason.split(":")[0]) for d in dead] == [
        (1, "duplicate key `ts`"), (2, "nested deeper than 32 levels (an event is a flat map)")]


def test_depth_ignores_brackets_in_strings() -> None:
    assert not json_depth_over(b'{"a":"' + b"[" * 100 + b'"}')
    assert json_depth_over(b"[" * 33 + b"]" * 33)
    assert not json_depth_over(b"[" * 32 + b"]" * 32)
    assert json_depth_over(b"[" * 10_000)  # unbalanced, deep


def test_many_rejects_fold_into_one_that_keeps_their_bytes() -> None:
    n = MAX_DEAD_PER_BATCH + 500
    body = b"".join(b"bad%d\n" % i for i in range(n)) + CLOSED + b"\n"
    events, dead = decode_jsonl(body)
    assert len(events) == 1 and len(dead) == MAX_DEAD_PER_BATCH + 1
    fold = dead[-1]
    assert fold.count == 500 and fold.line == MAX_DEAD_PER_BATCH + 1
    assert fold.raw.split(b"\n") == [b"bad%d" % i for i in range(MAX_DEAD_PER_BATCH, n)]
    row = fold.to_dict(raw_limit=10)
    assert row["count"] == 500 and row["raw_size"] == len(fold.raw) and len(row["raw"]) == 10

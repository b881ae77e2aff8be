"""Decoding: a bad event becomes a dead letter that says where and why; nothing is lost."""

from __future__ import annotations

import io

import msgspec
import pytest

from rewardcore import Closed, Placed, decode_json_array, decode_jsonl, decode_msgpack, read_jsonl
from rewardcore.events import Event

GOOD = b'{"type":"closed","order_id":"o1","ts":5}'
PLACED = (b'{"type":"placed","order_id":"o2","merchant_id":"m","agent_id":"a","region":7,'
          b'"paid_cents":100,"ts":6}')


def test_good_lines_decode_to_structs():
    events, dead = decode_jsonl(GOOD + b"\n" + PLACED + b"\n")
    assert dead == []
    assert events == [Closed(order_id="o1", ts=5),
                      Placed(order_id="o2", merchant_id="m", agent_id="a", region=7,
                             paid_cents=100, ts=6)]


def msgspec_says(raw: bytes) -> str:
    """msgspec's own message for an event that does not decode (its text varies by version)."""
    with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)) as exc:
        msgspec.json.decode(raw, type=Event)
    return str(exc.value)


# Each bad line with the part of the reason that says where (a JSON path, or a byte of the
# event); None where msgspec's message is the whole story (the event as a whole is wrong).
@pytest.mark.parametrize(
    "bad, where",
    [
        (b'{"type":"closed","order_id":"o9","ts":5', None),
        (b'{"type":"closed","order_id":"o9","ts":"5"}', "$.ts"),
        (b'{"type":"cancelled","order_id":"o9","ts":5}', "$.type"),
        (b'{"order_id":"o9","ts":5}', None),
        (b'{"type":"closed","order_id":"o9","ts":99999999999999999999999}', "$.ts"),
        (b'{"type":"closed","order_id":"o9","ts":-1}', "$.ts"),
        (b'{"type":"closed","order_id":"","ts":1}', "$.order_id"),
        (b'{"type":"redeem","redemption_id":"r","beneficiary":"a","prize":"p","qty":0,"ts":1}',
         "$.qty"),
        (b'[1,2,3]', None),
    ],
)
def test_bad_line_is_dead_lettered_with_line_offset_and_reason(bad, where):
    data = GOOD + b"\n" + bad + b"\n" + GOOD + b"\n"
    events, dead = decode_jsonl(data, first_line=10, base_offset=1000)
    assert len(events) == 2  # the rest of the batch goes on
    assert len(dead) == 1
    d = dead[0]
    assert d.raw == bad  # kept as received
    assert (d.line, d.offset) == (11, 1000 + len(GOOD) + 1)
    assert "line 11" in d.where()
    assert msgspec_says(bad) in d.reason
    if where is not None:
        assert where in d.reason


@pytest.mark.parametrize(
    "bad, byte",
    [
        (b'\xff\xfe\xfd', 0),
        (b'{"type":"closed","order_id":"\xc3\x28","ts":5}', 29),
        (b'{"type":"clo\xffsed","order_id":"o9","ts":5}', 12),
        (b'{"ty\xffpe":"closed","order_id":"o9","ts":5}', 4),
    ],
)
def test_invalid_utf8_is_dead_lettered_with_its_byte(bad, byte):
    """Whatever msgspec version decodes it, the reason says the line is not UTF-8 and where."""
    decoded = [decode_jsonl(GOOD + b"\n" + bad + b"\n")]
    if bad.startswith(b"{"):  # an object: a JSON array can hold it as one bad item
        decoded.append(decode_json_array(b"[" + GOOD + b"," + bad + b"]"))
    for events, dead in decoded:
        assert len(events) == 1 and len(dead) == 1 and dead[0].raw == bad
        assert f"invalid UTF-8 at byte {byte} of the event" in dead[0].reason


def test_blank_and_crlf_lines():
    events, dead = decode_jsonl(b"\n\n" + GOOD + b"\r\n   \n" + GOOD)
    assert (len(events), dead) == (2, [])


def test_dead_letter_to_dict_keeps_non_utf8_as_base64():
    _, dead = decode_jsonl(b"\xff\n")
    d = dead[0].to_dict()
    assert d["raw_base64"] == "/w==" and d["line"] == 1 and "raw" not in d


def test_read_jsonl_streams_across_block_boundaries():
    lines = [b'{"type":"closed","order_id":"o%d","ts":%d}' % (i, i) for i in range(1000)]
    lines[500] = b'{"type":"closed"'
    data = b"\n".join(lines)  # no trailing newline: the last line still counts
    batches = list(read_jsonl(io.BytesIO(data), batch=7))
    events = [e for b, _ in batches for e in b]
    dead = [d for _, ds in batches for d in ds]
    assert len(batches) > 10
    assert [e.order_id for e in events] == [f"o{i}" for i in range(1000) if i != 500]
    assert len(dead) == 1 and dead[0].line == 501
    assert dead[0].offset == data.index(b'{"type":"closed"\n')


@pytest.mark.parametrize("encode, decode", [(msgspec.json.encode, decode_json_array),
                                            (msgspec.msgpack.encode, decode_msgpack)])
def test_arrays_dead_letter_by_index(encode, decode):
    good = {"type": "closed", "order_id": "o1", "ts": 1}
    events, dead = decode(encode([good, {"type": "closed", "order_id": 5, "ts": 1}, good]))
    assert len(events) == 2
    assert [(d.index, "$.order_id" in d.reason) for d in dead] == [(1, True)]


@pytest.mark.parametrize("decode", [decode_json_array, decode_msgpack])
def test_array_that_is_not_an_array(decode):
    events, dead = decode(b"\x92{")
    assert events == [] and len(dead) == 1 and "array of events" in dead[0].reason

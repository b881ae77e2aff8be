"""The fast path's proof that a decoded JSON batch is plain (rewardcore._scan.json_plain),
against its plain-Python twin and the event-by-event path, on random batches built to fake
the count: colons and quotes inside strings, duplicate keys, qty given once, twice or
spelled otherwise, unknown and nested values, events split over lines or sharing one,
blank lines, no final newline."""

from __future__ import annotations

import io
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rewardcore import codec
from rewardcore.campaign import load_campaign
from rewardcore.errors import EventError
from rewardcore.events import FIELD_RULES, Closed, Completed, Event, Placed, Redeem
from rewardcore.examples import example_path
from rewardcore.traffic import TrafficShape, generate

pytestmark = pytest.mark.skipif(codec._scan is None, reason="rewardcore._scan is not built")

_lines = msgspec.json.Decoder(Event).decode_lines
_array = msgspec.json.Decoder(list[Event]).decode
#: a kind's tag and the rules of its required fields
FIELDS = {t: (t.__struct_config__.tag, [r for r in FIELD_RULES[t] if r.name != "qty"])
          for t in (Placed, Closed, Completed, Redeem)}
# Bytes that can fake a key or a line end once inside a string (escaped by the encoder).
TEXT = st.text(st.sampled_from(list(':",{}\\\nqty ') + ["é", "\u2028", "a", "1"]), min_size=1,
               max_size=8)
TRICKS = ["dup", "dup_qty", "unknown", "unknown_qty", "nested", "deep", "escaped_qty",
          "spaced", "split"]
CHECK = settings(max_examples=400, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _fast(buf: bytes | memoryview, events: list[Any], by_line: bool = True) -> tuple[bool, int]:
    assert codec._scan is not None
    return codec._scan.json_plain(buf, events, codec._KINDS, codec._KIND_KEYS, by_line)


def _each_value(buf: bytes) -> list[Event]:
    """The batch's top-level values, each decoded alone with every check (wherever its
    lines start and end); raises on the first that fails."""
    text, at, out = buf.decode(), 0, []
    skip = json.JSONDecoder()
    while True:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        if at == len(text):
            return out
        _, end = skip.raw_decode(text, at)
        out.append(codec.decode_json_event(text[at:end].encode()))
        at = end


def _enc(v: object) -> str:
    return msgspec.json.encode(v).decode()


@st.composite
def event_line(draw: st.DrawFn) -> tuple[bytes, set[str], type, bool]:
    """One event's JSON text, the tricks it plays, its kind, whether a string holds a ':'."""
    kind = draw(st.sampled_from(list(FIELDS)))
    tag, rules = FIELDS[kind]
    values = [(r.name, draw(TEXT) if r.is_str else draw(st.integers(max(r.min, 0), 2**40)))
              for r in rules]
    pairs = [('"type"', _enc(tag))] + [(_enc(k), _enc(v)) for k, v in values]
    colon_in_string = any(isinstance(v, str) and ":" in v for _, v in values)
    if kind is Redeem and draw(st.booleans()):
        pairs.append(('"qty"', _enc(draw(st.integers(1, 9)))))
    tricks = set(draw(st.lists(st.sampled_from(TRICKS), max_size=2))) if draw(
        st.integers(0, 3)) == 0 else set()
    if "dup" in tricks:
        pairs.append(draw(st.sampled_from(pairs)))
    if "dup_qty" in tricks:
        pairs += [('"qty"', "1"), ('"qty"', "2")]
    if "unknown" in tricks:
        pairs.append(('"x"', _enc(draw(TEXT))))
    if "unknown_qty" in tricks:  # qty where the kind has none
        pairs.append(('"qty"', "1"))
    if "nested" in tricks:
        pairs.append(('"x"', draw(st.sampled_from(['{"qty":1}', '[{"qty":1}]', "[1,[2]]"]))))
    if "deep" in tricks:
        pairs.append(('"x"', "[" * 40 + "]" * 40))
    if "escaped_qty" in tricks:
        pairs.append(('"q\\u0074y"', "1"))
    pairs = draw(st.permutations(pairs))
    sep = ", " if "spaced" in tricks else ","
    items = [f"{k}:{v}" for k, v in pairs]
    if "split" in tricks:  # one event over two lines
        at = draw(st.integers(1, len(items) - 1))
        text = "{" + sep.join(items[:at]) + ",\n" + sep.join(items[at:]) + "}"
    else:
        text = "{" + sep.join(items) + "}"
    return text.encode(), tricks, kind, colon_in_string


@st.composite
def batch(draw: st.DrawFn) -> tuple[bytes, bool, bool]:
    """A JSON-lines batch; whether it is simple (one compact event per line, qty given once
    or not at all) and whether a string of a redeem or of any event holds a ':'."""
    events = draw(st.lists(event_line(), min_size=1, max_size=12))
    simple = not any(tricks for _, tricks, _, _ in events)
    parts = [events[0][0]]
    for text, *_ in events[1:]:
        glue = draw(st.sampled_from([b"\n"] * 8 + [b"\n\n", b" ", b"\r\n"]))
        simple &= glue == b"\n"
        parts += [glue, text]
    end = draw(st.sampled_from([b"\n", b"", b"\n\n"]))
    simple &= end != b"\n\n"
    redeem_colon = any(colon and kind is Redeem for _, _, kind, colon in events)
    any_colon = any(colon for *_, colon in events)
    return b"".join(parts) + end, simple and not redeem_colon, simple and not any_colon


@CHECK
@given(batch())
def test_the_tally_never_calls_plain_a_batch_the_exact_path_would_change(case) -> None:
    buf, simple, no_colon_in_strings = case
    try:
        events = _lines(buf)
    except msgspec.DecodeError:
        assume(False)
    fast, newlines = _fast(buf, events)
    assert newlines == buf.count(b"\n")
    assert _fast(memoryview(buf), events) == (fast, newlines)
    old = codec._plain_json_twin(buf, events)
    if fast or old:  # plain: each event passes every check
        assert _each_value(buf) == events
    if fast and not old:  # the twin needs lines and events one to one, blank lines too
        assert buf.startswith(b"\n") or b"\n\n" in buf
    if simple:  # the definitions agree (the twin also takes a redeem's colon in a string)
        assert fast == old
    if no_colon_in_strings:  # the generator's batches: always the fast path
        assert fast
    if simple:  # lines and events one to one: the event-by-event path agrees
        assert codec.decode_jsonl(buf) == codec._jsonl_one_by_one(buf, 1, 0)


@CHECK
@given(st.lists(event_line(), min_size=1, max_size=8))
def test_arrays_are_plain_by_the_whole_count_only(items) -> None:
    buf = b"[" + b",".join(text for text, *_ in items) + b"]"
    try:
        events = _array(buf)
    except msgspec.DecodeError:
        assume(False)
    fast, _ = _fast(buf, events, by_line=False)
    assert fast == codec._plain_json_twin(buf, events)
    exact = codec._array_one_by_one(buf, "a JSON array of events", codec._json_raws.decode,
                                    codec._json_array_items, codec._json_one)
    if fast:
        assert exact == (events, [])
    assert codec.decode_json_array(buf) == exact


@CHECK
@given(batch())
def test_without_the_compiled_module_the_twin_decodes_the_same(monkeypatch, case) -> None:
    buf = case[0]
    with_tally = codec.decode_jsonl(buf)
    with monkeypatch.context() as m:
        m.setattr(codec, "_scan", None)
        assert codec.decode_jsonl(buf) == with_tally


def test_edges() -> None:
    closed = b'{"type":"closed","order_id":"a","ts":1}'
    qty = b'{"type":"redeem","redemption_id":"r","beneficiary":"a","prize":"p","qty":1,"ts":1}'
    assert _fast(b"", []) == (True, 0)
    assert _fast(b"\n\n", []) == (True, 2)
    for buf in (qty, qty + b"\n", b"\n" + qty + b"\n\n" + closed, closed + b"\n" + qty):
        assert _fast(buf, _lines(buf)) == (True, buf.count(b"\n")), buf
    for fake in (b'"r\\",\\"qty\\":"', b'"r","x\\"qty":1'):  # a colon in a string; a key x"qty
        buf = b'{"type":"redeem","redemption_id":' + fake + b',"beneficiary":"a","prize":"p",' \
            b'"ts":1}'
        assert _fast(buf, _lines(buf)) == (False, 0), buf
    # qty twice, on two lines of one event, the lines' count made up by two events on one
    # line: only lines that are whole objects are taken as one event each
    redeem = b'{"type":"redeem","redemption_id":"r","beneficiary":"a","prize":"p","ts":1'
    buf = redeem + b',"qty":1\n,"qty":2} ' + redeem + b'}\n'
    events = _lines(buf)
    assert len(events) == 2 and _fast(buf, events) == (False, 2)
    with pytest.raises(EventError, match="duplicate key `qty`"):
        _each_value(buf)
    assert codec.decode_jsonl(buf)[0] == []  # the event-by-event path takes neither line
    with pytest.raises(ValueError):
        codec._scan.json_plain(b"", [], (Placed,), b"", True)  # type: ignore[union-attr]
    assert _fast(closed, [object()]) == (False, 0)  # not an event of a known kind


def test_every_batch_of_generated_traffic_takes_the_fast_path(monkeypatch) -> None:
    c = load_campaign(example_path("d11-2026"))
    data = b"".join(generate(c, TrafficShape(orders=3000, seed=5, redeem_share=0.5)))
    assert data.count(b'"qty":') > 50  # several batches of redeems

    def slow(*args: object) -> None:
        raise AssertionError("a generated batch went event by event")

    monkeypatch.setattr(codec, "_jsonl_one_by_one", slow)
    n = sum(len(events) for events, _ in codec.read_jsonl(io.BytesIO(data), 64))
    assert n == data.count(b"\n")

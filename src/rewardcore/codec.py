"""Decoding event batches: JSON lines, JSON arrays, MessagePack arrays.

Each decoder takes the fast path (one msgspec call for the whole batch) and falls back to
event-by-event decoding only when that fails, so a bad event costs nothing until it occurs.
An event that does not decode or validate becomes a `DeadLetter` that keeps its raw bytes,
where it was (line and byte offset, or array index) and the reason (msgspec's, which names
the field, or one of the checks below); the rest of the batch goes on. Whatever a decoder
raises on hostile bytes (RecursionError included) is that event's reason, never the batch's.

Two checks msgspec does not make:

- Nesting depth: an event is a flat object; one nested deeper than `MAX_DEPTH` is rejected
  before it is decoded (msgspec's own guard is Python's recursion limit, which then fails
  the whole batch and depends on the caller's stack).
- Duplicate keys: msgspec keeps the last of two equal keys, another reader of the same bytes
  may keep the first, so an event with a key given twice is rejected. The fast path proves
  there is none by counting: a batch whose events have no key beyond their required ones
  has exactly as many `:` (JSON) or map entries (MessagePack) as those keys, and then also
  no nesting; a redeem that gives its optional `qty` has one more, which for JSON lines
  must be a `"qty":` key on the redeem's own line (one compiled pass over the batch,
  `rewardcore._scan.json_plain`; a plain-Python twin when it is not built); any other
  surplus (unknown fields, a colon inside a string) has the batch checked event by event.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import msgspec
import numpy as np

from .events import Closed, Completed, Event, Placed, Redeem

try:
    from . import _scan
except ImportError:  # not built: the plain-Python twin of its tally does the same work
    _scan = None  # type: ignore[assignment]

_json_event = msgspec.json.Decoder(Event)
_json_events = msgspec.json.Decoder(list[Event])
_json_raws = msgspec.json.Decoder(list[msgspec.Raw])
_mp_event = msgspec.msgpack.Decoder(Event)
_mp_events = msgspec.msgpack.Decoder(list[Event])
_mp_raws = msgspec.msgpack.Decoder(list[msgspec.Raw])

#: Deepest nesting of an event (the event's own object is level 1). Events are flat; the
#: room is for unknown fields, which are ignored.
MAX_DEPTH = 32
#: Dead letters a decoder returns one by one per batch; the rejected events after them are
#: folded into one more, which keeps their bytes (so a body of millions of bad lines costs
#: memory in proportion to its size, not to its line count).
MAX_DEAD_PER_BATCH = 1000

# Keys an event of each type must have (the tag included): an event with exactly these has
# no duplicate and no nested value.
_REQUIRED_KEYS = {t: 1 + sum(f.required for f in msgspec.structs.fields(t))
                  for t in (Placed, Closed, Completed, Redeem)}
# For the compiled tally: the kinds, the most frequent first (it tries them in this order),
# and each one's required keys, flagged when the kind may give an optional qty besides.
_KINDS = (Placed, Completed, Closed, Redeem)
_KIND_KEYS = bytes(_REQUIRED_KEYS[t] | (_scan.MAY_GIVE_QTY if t is Redeem else 0)
                   for t in _KINDS) if _scan is not None else b""
_COLON = ord(":")
# Bytes that cannot start a JSON value: such a line is malformed without asking msgspec.
_NOT_JSON_START = np.ones(256, bool)
_NOT_JSON_START[list(b'{["-0123456789tfn \t\r\n\x0b\x0c')] = False
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = b"[]{}"
_TO_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(_BRACKETS)))


class DeadLetter(msgspec.Struct, frozen=True):
    """An event that was rejected, with why and where, and its bytes as received.

    `count` > 1 is a fold of that many rejected events (see MAX_DEAD_PER_BATCH): `raw`
    holds their bytes one per line, `line`/`index` is where the first of them was."""

    reason: str
    raw: bytes
    line: int | None = None  # 1-based line in the stream (JSON lines)
    offset: int | None = None  # byte offset of the line in the stream (JSON lines)
    index: int | None = None  # position in the batch (JSON array, MessagePack)
    count: int = 1

    def where(self) -> str:
        if self.line is not None:
            return f"line {self.line} (byte {self.offset})"
        return f"event {self.index}"

    def to_dict(self, raw_limit: int | None = None) -> dict[str, Any]:
        """JSON-ready form: raw as text when it is UTF-8, else as base64. With `raw_limit`,
        at most that many bytes of raw, and `raw_size`/`raw_cut` say what was left out."""
        out: dict[str, Any] = {"reason": self.reason}
        for key in ("line", "offset", "index"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.count != 1:
            out["count"] = self.count
        out.update(raw_fields(self.raw, raw_limit))
        return out


def raw_fields(raw: bytes, limit: int | None = None) -> dict[str, Any]:
    """`raw` (text) or `raw_base64`, cut to `limit` bytes; a cut says so (`raw_size`, the
    size as received, and `raw_cut`, the bytes left out)."""
    kept = raw if limit is None or len(raw) <= limit else raw[:max(limit, 0)]
    try:
        out: dict[str, Any] = {"raw": kept.decode()}
    except UnicodeDecodeError as exc:
        if len(kept) < len(raw) and exc.start >= len(kept) - 3 and exc.reason in (
                "unexpected end of data", "invalid continuation byte"):
            kept = kept[:exc.start]  # the cut fell inside a character
            out = {"raw": kept.decode("utf-8", "replace")}
        else:
            out = {"raw_base64": base64.b64encode(kept).decode()}
    if len(kept) < len(raw):
        out["raw_size"] = len(raw)
        out["raw_cut"] = len(raw) - len(kept)
    return out


Batch = tuple[list[Event], list[DeadLetter]]

#: Events per batch when streaming. Small enough that a batch's decoded objects are still in
#: the core's L2 cache when the engine reads them: at 4096 they are not, and a replay ran
#: 0.29-0.53 x decode speed against 0.79-1.06 x at 512 (rewardcore bench, same runs; see
#: docs/engine.md); callgrind's cache model agrees (half the engine's last-level misses).
DEFAULT_BATCH = 512


def _reason(exc: BaseException, text: bytes | None = None) -> str:
    """Why `text` (a JSON event, when given) did not decode, saying where in it.

    Invalid UTF-8 is located here rather than by msgspec: msgspec 0.23 reports it as a
    DecodeError without a position, older versions as a UnicodeDecodeError with one.
    """
    if text is not None:
        try:
            text.decode()
        except UnicodeDecodeError as bad:
            return f"invalid UTF-8 at byte {bad.start} of the event: {bad.reason}"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 in a string at byte {exc.start}: {exc.reason}"
    if isinstance(exc, RecursionError):
        return "nested too deeply to decode"
    if isinstance(exc, msgspec.DecodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _Rejected(Exception):
    """One event's rejection inside this module: its reason."""


class _DeadList:
    """The dead letters of one batch: the first MAX_DEAD_PER_BATCH one by one, the rest
    folded into one (bytes kept, one per line)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self._fold = bytearray()
        self._fold_count = 0
        self._fold_first: DeadLetter | None = None

    def add(self, d: DeadLetter) -> None:
        if len(self.letters) < MAX_DEAD_PER_BATCH:
            self.letters.append(d)
            return
        if self._fold_first is None:
            self._fold_first = d
        elif self._fold:
            self._fold += b"\n"
        self._fold += d.raw
        self._fold_count += 1

    def result(self) -> list[DeadLetter]:
        first = self._fold_first
        if first is None:
            return self.letters
        folded = DeadLetter(
            f"{self._fold_count} more rejected events after the first {MAX_DEAD_PER_BATCH} "
            f"of this batch, one per line of raw (the first of them: {first.reason})",
            bytes(self._fold), line=first.line, offset=first.offset, index=first.index,
            count=self._fold_count)
        return [*self.letters, folded]


# -- JSON -----------------------------------------------------------------------------------
def _plain_json(buf: bytes | memoryview, events: list[Event], by_line: bool) -> tuple[bool, int]:
    """(plain, newlines of buf). Plain: no event of the batch has a key beyond its required
    ones and a redeem's optional `qty` (so no duplicate, nothing nested), which the ':'
    count shows; `by_line` for JSON lines (a batch's line count comes with it)."""
    if _scan is not None:
        return _scan.json_plain(buf, events, _KINDS, _KIND_KEYS, by_line)
    return _plain_json_twin(buf, events), bytes(buf).count(b"\n")


def _plain_json_twin(buf: bytes | memoryview, events: list[Event]) -> bool:
    """_plain_json in plain Python, for a build without rewardcore._scan. It may call more
    batches plain than the compiled tally (a redeem line with one colon more is decoded on
    its own here); neither calls plain a batch with a duplicate key or a nested value."""
    a = np.frombuffer(buf, np.uint8)
    types = list(map(type, events))  # a tally in C: list.count is the cheapest found
    placed, redeems = types.count(Placed), types.count(Redeem)
    expected = (_REQUIRED_KEYS[Placed] * placed + _REQUIRED_KEYS[Redeem] * redeems
                + _REQUIRED_KEYS[Closed] * (len(types) - placed - redeems))
    extra = int(np.count_nonzero(a == _COLON)) - expected
    if extra == 0:
        return True
    if not 0 < extra <= redeems:
        return False
    # Some redeems give their qty: look at the redeem lines alone, when lines and events
    # are one to one (no blank line).
    ends = np.flatnonzero(a == _NEWLINE)
    closed = bool(len(a)) and a[-1] == _NEWLINE
    if len(ends) != len(events) - (not closed):
        return False
    bounds = [0, *(ends + 1).tolist()]
    if not closed:
        bounds.append(len(a) + 1)
    for i in [i for i, t in enumerate(types) if t is Redeem]:
        line = bytes(buf[bounds[i]:bounds[i + 1] - 1])
        colons = line.count(b":")
        if colons == _REQUIRED_KEYS[Redeem]:
            continue
        if colons != _REQUIRED_KEYS[Redeem] + 1:
            return False
        try:
            _json_one(line)  # the exact checks: a qty, or a duplicate key?
        except _Rejected:
            return False
        extra -= 1
    return extra == 0


def json_depth_over(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests deeper than `limit` (brackets inside strings aside).
    C-speed byte operations in bounded memory, no recursion."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    a = np.frombuffer(_JSON_STRING.sub(b"", raw).translate(_TO_SQUARE, _NOT_BRACKETS),
                      np.uint8)
    depth = 0
    for at in range(0, len(a), _CHUNK):
        levels = np.cumsum(np.where(a[at:at + _CHUNK] == _OPEN, 1, -1), dtype=np.int64) + depth
        if levels.max() > limit:
            return True
        depth = int(levels[-1])
    return False


_CHUNK = 1 << 20
_OPEN = ord("[")


def _duplicate_key(raw: bytes | str) -> str | None:
    """The first key given twice in an object of this (depth-checked) JSON text."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> None:
        if not found:
            seen: set[str] = set()
            for k, _ in items:
                if k in seen:
                    found.append(k)
                    break
                seen.add(k)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None  # msgspec accepted it; nothing more to say
    return found[0] if found else None


def decode_json_event(raw: bytes) -> Event:
    """One JSON event with every check of this module; raises EventError with the reason."""
    try:
        return _json_one(raw)
    except _Rejected as exc:
        from .errors import EventError

        raise EventError(str(exc)) from None


def _json_one(raw: bytes) -> Event:
    if json_depth_over(raw):
        raise _Rejected(f"nested deeper than {MAX_DEPTH} levels (an event is a flat object)")
    try:
        ev: Event = _json_event.decode(raw)
    except Exception as exc:  # whatever hostile bytes make the decoder raise
        raise _Rejected(_reason(exc, raw)) from None
    if raw.count(b":") > _REQUIRED_KEYS[type(ev)]:
        dup = _duplicate_key(raw)
        if dup is not None:
            raise _Rejected(f"duplicate key `{dup}`: each key of an event is given once")
    return ev


def decode_jsonl(buf: bytes | memoryview, first_line: int = 1, base_offset: int = 0) -> Batch:
    """Decode newline-delimited JSON events; blank lines are skipped."""
    return _decode_jsonl(buf, first_line, base_offset)[0]


def _decode_jsonl(buf: bytes | memoryview, first_line: int, base_offset: int
                  ) -> tuple[Batch, int]:
    """decode_jsonl and the newlines of buf (which the fast path's tally counts anyway)."""
    try:
        events = _json_event.decode_lines(buf)
    except Exception:  # any failure: find the bad events one by one
        data = bytes(buf)
        return _jsonl_one_by_one(data, first_line, base_offset), data.count(b"\n")
    plain, newlines = _plain_json(buf, events, True)
    if plain:
        return (events, []), newlines
    return _jsonl_one_by_one(bytes(buf), first_line, base_offset), newlines


def _jsonl_one_by_one(data: bytes, first_line: int, base_offset: int) -> Batch:
    a = np.frombuffer(data, np.uint8)
    ends = np.append(np.flatnonzero(a == _NEWLINE), len(data))
    starts = np.insert(ends[:-1] + 1, 0, 0)
    filled = starts < ends
    heads = np.zeros(len(starts), np.uint8)
    heads[filled] = a[starts[filled]]
    # Lines that cannot be JSON at all are found without a Python step each: a body of
    # millions of garbage lines costs numpy passes, not millions of decode attempts.
    garbage = filled & _NOT_JSON_START[heads]
    events: list[Event] = []
    dead: list[tuple[int, DeadLetter | None]] = []  # None: a garbage line, made on demand
    at, to = starts.tolist(), ends.tolist()
    for i in np.flatnonzero(filled & ~garbage).tolist():
        raw = data[at[i]:to[i]]
        if raw.isspace():
            continue
        try:
            events.append(_json_one(raw))
        except _Rejected as exc:
            dead.append((i, DeadLetter(str(exc), raw, line=first_line + i,
                                       offset=base_offset + at[i])))
    bad = np.flatnonzero(garbage)
    if not len(bad) and len(dead) <= MAX_DEAD_PER_BATCH:
        return events, [d for _, d in dead]

    def garbage_letter(i: int) -> DeadLetter:
        raw = data[at[i]:to[i]]
        return DeadLetter(_reason(_MALFORMED, raw), raw, line=first_line + i,
                          offset=base_offset + at[i])

    order = np.sort(np.concatenate((bad, np.array([i for i, _ in dead], np.int64))))
    known = dict(dead)
    letters = [known.get(i) or garbage_letter(i) for i in order[:MAX_DEAD_PER_BATCH].tolist()]
    if len(order) <= MAX_DEAD_PER_BATCH:
        return events, letters
    rest = order[MAX_DEAD_PER_BATCH:]
    first = int(rest[0])
    fold = np.zeros(len(starts), bool)
    fold[rest] = True
    raw = a[np.repeat(fold, ends - starts + 1)[:len(a)]].tobytes().rstrip(b"\n")
    reason = (known.get(first) or garbage_letter(first)).reason
    letters.append(DeadLetter(
        f"{len(rest)} more rejected events after the first {MAX_DEAD_PER_BATCH} of this "
        f"batch, one per line of raw (the first of them: {reason})", raw,
        line=first_line + first, offset=base_offset + at[first], count=len(rest)))
    return events, letters


_NEWLINE = ord("\n")
_MALFORMED = msgspec.DecodeError("JSON is malformed: invalid character (byte 0)")


def _json_array_items(buf: bytes) -> list[bytes]:
    """The items of a JSON array, split without recursion (for arrays msgspec cannot split
    because an item nests too deep); raises _Rejected when it is not an array."""
    # Blank out strings (their length kept), then find the commas at depth 1.
    masked = _JSON_STRING.sub(lambda m: b'"' + b" " * (len(m[0]) - 2) + b'"', buf)
    a = np.frombuffer(masked, np.uint8)
    step = (((a == ord("[")) | (a == ord("{"))).astype(np.int8)
            - ((a == ord("]")) | (a == ord("}"))).astype(np.int8))
    depth = np.cumsum(step, dtype=np.int32)
    opened = np.flatnonzero(step == 1)
    if not len(opened) or masked[:opened[0]].strip() or masked[opened[0]] != ord("["):
        raise _Rejected("the batch is not an array")
    first = int(opened[0])
    closed = np.flatnonzero((depth == 0) & (step == -1))
    if not len(closed) or masked[closed[0] + 1:].strip():
        raise _Rejected("the array is not closed where the batch ends")
    last = int(closed[0])
    commas = np.flatnonzero((a == ord(",")) & (depth == 1))
    bounds = [first, *commas[(commas > first) & (commas < last)].tolist(), last]
    items = [buf[a + 1:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return [] if len(items) == 1 and not items[0].strip() else items


def decode_json_array(buf: bytes) -> Batch:
    """Decode a JSON array of events."""
    try:
        events = _json_events.decode(buf)
    except Exception:
        pass
    else:
        if _plain_json(buf, events, False)[0]:
            return events, []
    return _array_one_by_one(buf, "a JSON array of events", _json_raws.decode,
                             _json_array_items, _json_one)


def _array_one_by_one(buf: bytes | memoryview, what: str, raws: Callable[[bytes], list[Any]],
                      split: Callable[[bytes], list[bytes]],
                      one: Callable[[bytes], Event]) -> Batch:
    """The slow path of an array batch (JSON or MessagePack): the array is cut into its
    items' bytes (`split`, without recursion, when the decoder hits the depth limit) and each
    item is decoded alone, so a bad one is its own dead letter."""
    buf = bytes(buf)
    try:
        items = raws(buf)
    except RecursionError:
        try:
            items = split(buf)
        except _Rejected as exc:
            return [], [DeadLetter(f"the batch is not {what}: {exc}", buf)]
    except Exception as exc:
        return [], [DeadLetter(f"the batch is not {what}: {_reason(exc)}", buf)]
    events = []
    dead = _DeadList()
    for i, item in enumerate(items):
        raw = bytes(item)
        try:
            events.append(one(raw))
        except _Rejected as exc:
            dead.add(DeadLetter(str(exc), raw, index=i))
    return events, dead.result()


def _mp_skip(buf: bytes, pos: int, limit: int | None = MAX_DEPTH) -> int:
    """Where the MessagePack value at `pos` ends, without recursion; raises _Rejected when
    it nests deeper than `limit` or is cut short."""
    todo = [1]  # values still to read at each open level
    n = len(buf)
    while todo:
        if todo[-1] == 0:
            todo.pop()
            continue
        todo[-1] -= 1
        if pos >= n:
            raise _Rejected("MessagePack data is truncated")
        b = buf[pos]
        pos += 1
        items = 0
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            continue
        if 0x80 <= b <= 0x8F:
            items = 2 * (b & 0x0F)
        elif 0x90 <= b <= 0x9F:
            items = b & 0x0F
        elif 0xA0 <= b <= 0xBF:
            pos += b & 0x1F
        elif b in _MP_FIXED:
            pos += _MP_FIXED[b]
        elif b in _MP_EXT:
            width = _MP_EXT[b]
            pos += width + 1 + int.from_bytes(buf[pos:pos + width], "big")
        elif b in _MP_SIZED:
            width, per = _MP_SIZED[b]
            count = int.from_bytes(buf[pos:pos + width], "big")
            pos += width
            if per:
                items = count * per
            else:
                pos += count
        else:
            raise _Rejected(f"MessagePack data is malformed: invalid type byte 0x{b:02x}")
        if items:
            if limit is not None and len(todo) > limit:
                raise _Rejected(f"nested deeper than {limit} levels (an event is a flat map)")
            todo.append(items)
    if pos > n:
        raise _Rejected("MessagePack data is truncated")
    return pos


# type byte -> bytes that follow (fixed-size values)
_MP_FIXED = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4,
             0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
# type byte -> (width of the length, values per counted item: 0 for bytes, 1 array, 2 map);
# ext types carry one more byte (the type) after their length
_MP_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xD9: (1, 0), 0xDA: (2, 0),
             0xDB: (4, 0), 0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
_MP_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}


def _mp_map_size(raw: bytes | memoryview) -> int:
    b = raw[0] if len(raw) else 0
    if 0x80 <= b <= 0x8F:
        return b & 0x0F
    if b in (0xDE, 0xDF):
        return int.from_bytes(raw[1:3 if b == 0xDE else 5], "big")
    return -1


def _mp_duplicate_key(raw: bytes) -> str | None:
    """The first key given twice in this (depth-checked) top-level map."""
    size = _mp_map_size(raw)
    pos = 1 if raw[0] <= 0x8F else (3 if raw[0] == 0xDE else 5)
    seen: set[bytes] = set()
    for _ in range(max(size, 0)):
        end = _mp_skip(raw, pos)
        key = raw[pos:end]
        if key in seen:
            return msgspec.msgpack.decode(key, type=str) if 0xA0 <= key[0] <= 0xBF or \
                key[0] in (0xD9, 0xDA, 0xDB) else repr(key)
        seen.add(key)
        pos = _mp_skip(raw, end)
    return None


def _mp_plain(raw: memoryview, t: type) -> bool:
    """The event's map has its required keys only, or a redeem's optional qty besides."""
    size = _mp_map_size(raw)
    if size == _REQUIRED_KEYS[t]:
        return True
    return (t is Redeem and size == _REQUIRED_KEYS[t] + 1
            and _mp_duplicate_key(bytes(raw)) is None)


def _mp_one(raw: bytes) -> Event:
    try:
        if _mp_skip(raw, 0) != len(raw):
            raise _Rejected("MessagePack data has bytes after the event")
    except IndexError:
        raise _Rejected("MessagePack data is truncated") from None
    try:
        ev: Event = _mp_event.decode(raw)
    except Exception as exc:
        raise _Rejected(_reason(exc)) from None
    if _mp_map_size(raw) > _REQUIRED_KEYS[type(ev)]:
        dup = _mp_duplicate_key(raw)
        if dup is not None:
            raise _Rejected(f"duplicate key `{dup}`: each key of an event is given once")
    return ev


def _mp_array_items(buf: bytes) -> list[bytes]:
    """The items of a MessagePack array, split without recursion (for arrays msgspec cannot
    split because an item nests too deep); a cut-short item and the rest come back as one."""
    b = buf[0] if buf else 0
    if 0x90 <= b <= 0x9F:
        count, pos = b & 0x0F, 1
    elif b in (0xDC, 0xDD):
        width = 2 if b == 0xDC else 4
        count, pos = int.from_bytes(buf[1:1 + width], "big"), 1 + width
    else:
        raise _Rejected("the batch is not an array")
    items = []
    for _ in range(count):
        try:
            end = _mp_skip(buf, pos, None)
        except _Rejected:
            items.append(buf[pos:])
            break
        items.append(buf[pos:end])
        pos = end
    return items


def decode_msgpack(buf: bytes) -> Batch:
    """Decode a MessagePack array of events."""
    try:
        events = _mp_events.decode(buf)
        raws = _mp_raws.decode(buf)
    except Exception:
        pass
    else:
        if all(_mp_plain(memoryview(r), type(e)) for r, e in zip(raws, events, strict=True)):
            return events, []
    return _array_one_by_one(buf, "a MessagePack array of events", _mp_raws.decode,
                             _mp_array_items, _mp_one)


class JsonlBlocks:
    """(data, offset of data in the stream) for a binary stream read `block` bytes at a
    time and cut at the last newline: blocks of whole lines (the last may lack its newline),
    so the stream is never held whole and no per-line Python objects are made. `block` may
    be changed between blocks."""

    def __init__(self, stream: BinaryIO, block: int) -> None:
        self.stream = stream
        self.block = block

    def __iter__(self) -> Iterator[tuple[memoryview, int]]:
        carry = b""
        offset = 0
        while True:
            data = self.stream.read(self.block)
            if not data:
                break
            buf = carry + data if carry else data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                carry = buf
                continue
            yield memoryview(buf)[:cut], offset
            carry = buf[cut:]
            offset += cut
        if carry.strip():
            yield memoryview(carry), offset


def read_jsonl(stream: BinaryIO, batch: int = DEFAULT_BATCH) -> Iterator[Batch]:
    """Stream JSON lines from a binary file in batches of about `batch` events."""
    # the first guess at bytes per event is adjusted as lines are seen
    blocks = JsonlBlocks(stream, max(batch, 1) * 160)
    line = 1
    for body, offset in blocks:
        decoded, lines = _decode_jsonl(body, line, offset)
        yield decoded
        line += lines
        blocks.block = max(4096, batch * len(body) // max(lines, 1))

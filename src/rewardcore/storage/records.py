"""Log records: the framing of one batch in a write-ahead log (magic, length, sequence
number, CRC-32C), its msgpack payload (the events, or the JSON lines they were decoded from,
and the replay position), and the header record that opens each log file."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .. import _scan
from ..codec import decode_jsonl
from ..engine import Position
from ..errors import BackendError
from ..events import Closed, Completed, Event, Placed, Redeem

# -- log records -------------------------------------------------------------------------
# magic, payload length, sequence number, CRC-32C of payload + sequence (little-endian)
_REC = struct.Struct("<4sIQI")
_REC_MAGIC = b"RCW1"
_MAX_PAYLOAD = 1 << 30


class _Record(msgspec.Struct, array_like=True):
    pos: Position | None
    events: list[Event]
    # A CLI replay logs its batch as the JSON lines it decoded them from (no re-encoding:
    # a third of the cost of a durable replay); `events` is then empty.
    jsonl: bytes | None = None


class _WalHeader(msgspec.Struct):
    format: int
    gen: int
    owner: str
    campaign_fp: int
    campaign_id: str


# The engines accept Structs built in Python, which msgspec does not validate (an empty id,
# say); the log must replay exactly what was applied, so records that fail the strict
# decoder are read with these and turned back into the real events.
class _LPlaced(msgspec.Struct, tag="placed", tag_field="type"):
    order_id: Any
    merchant_id: Any
    agent_id: Any
    region: Any
    paid_cents: Any
    ts: Any


class _LClosed(msgspec.Struct, tag="closed", tag_field="type"):
    order_id: Any
    ts: Any


class _LCompleted(msgspec.Struct, tag="completed", tag_field="type"):
    order_id: Any
    ts: Any


class _LRedeem(msgspec.Struct, tag="redeem", tag_field="type"):
    redemption_id: Any
    beneficiary: Any
    prize: Any
    ts: Any
    qty: Any = 1


class _LRecord(msgspec.Struct, array_like=True):
    pos: Any
    events: list[_LPlaced | _LClosed | _LCompleted | _LRedeem]
    jsonl: Any = None


_LENIENT = {_LPlaced: Placed, _LClosed: Closed, _LCompleted: Completed, _LRedeem: Redeem}
_enc = msgspec.msgpack.Encoder()
_dec_record = msgspec.msgpack.Decoder(_Record)
_dec_lenient = msgspec.msgpack.Decoder(_LRecord)
_dec_header = msgspec.msgpack.Decoder(_WalHeader)


def encode_record(events: Sequence[Event], pos: Position | None,
                  jsonl: bytes | memoryview | None = None) -> bytes:
    """The payload of one log record (raises TypeError for something that is not an event).
    With `jsonl`, the JSON lines `events` were decoded from are logged instead of them."""
    if jsonl is not None:
        return _enc.encode(_Record(pos, [], jsonl))  # type: ignore[arg-type]  # a view is fine
    return _enc.encode(_Record(pos, list(events)))


def decode_record(payload: bytes) -> tuple[Position | None, list[Event]]:
    try:
        rec = _dec_record.decode(payload)
        pos, events, jsonl = rec.pos, rec.events, rec.jsonl
    except msgspec.ValidationError:
        loose = _dec_lenient.decode(payload)
        events = [_LENIENT[type(e)](**msgspec.structs.asdict(e)) for e in loose.events]
        pos = tuple(loose.pos) if loose.pos is not None else None  # type: ignore[assignment]
        jsonl = loose.jsonl
    if jsonl is not None:
        # the same decoder as the replay that logged it: the same events (its dead letters
        # were not applied then and are dropped again)
        events = decode_jsonl(jsonl)[0]
    return pos, events


def _checksum(payload: bytes, seq: int) -> int:
    # CRC-32C (the SSE4.2 instruction, several GB/s) of the payload, then of the sequence
    return _scan.crc32c(seq.to_bytes(8, "little"), _scan.crc32c(payload))


def record_header(payload: bytes, seq: int) -> bytes:
    """The header written before a record's payload."""
    if len(payload) > _MAX_PAYLOAD:
        raise BackendError(f"a batch of {len(payload):,} bytes is too large for one log record")
    return _REC.pack(_REC_MAGIC, len(payload), seq, _checksum(payload, seq))


def frame(payload: bytes, seq: int) -> bytes:
    """A record as written: header then payload."""
    return record_header(payload, seq) + payload


@dataclass
class _Parsed:
    offset: int
    end: int
    seq: int
    payload: bytes


def _parse_at(buf: bytes | memoryview, at: int) -> _Parsed | str:
    """The record at `at`, or why there is none."""
    if at + _REC.size > len(buf):
        return "a record header cut short"
    magic, n, seq, crc = _REC.unpack_from(buf, at)
    if magic != _REC_MAGIC:
        return "bad record magic"
    end = at + _REC.size + n
    if n > _MAX_PAYLOAD or end > len(buf):
        return "a record cut short"
    payload = bytes(buf[at + _REC.size:end])
    if _checksum(payload, seq) != crc:
        return "checksum mismatch"
    return _Parsed(at, end, seq, payload)


def _valid_record_after(buf: bytes, at: int) -> int | None:
    """Offset of a valid record somewhere after `at` (then the damage is not a torn tail)."""
    i = buf.find(_REC_MAGIC, at + 1)
    while i >= 0:
        if isinstance(_parse_at(buf, i), _Parsed):
            return i
        i = buf.find(_REC_MAGIC, i + 1)
    return None


def iter_records(path: Path) -> Iterator[tuple[int, int, Position | None, list[Event]]]:
    """(offset, seq, position, events) of each valid record of one log file (for tools and
    tests); stops at the first damaged one."""
    buf = path.read_bytes()
    head = _parse_at(buf, 0)
    if not isinstance(head, _Parsed):
        return
    at = head.end
    while True:
        rec = _parse_at(buf, at)
        if not isinstance(rec, _Parsed):
            return
        pos, events = decode_record(rec.payload)
        yield at, rec.seq, pos, events
        at = rec.end

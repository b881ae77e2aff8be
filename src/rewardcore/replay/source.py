"""Where a replay's bytes come from and how they are cut: the input (a file, mapped; stdin,
streamed or kept in a file), blocks of whole lines, and the routing of lines to workers.

Routing: a line belongs to partition hash(order_id) % P (redemptions and lines without an
order id to partition 0) and partition j to worker j % N, so all events of one order reach
one worker, in input order. Finding the order id needs no decoding (ext/shm_route.h), so the
scan costs little next to the decoding each worker then does on its own lines only.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import msgspec
import numpy as np

from .. import _scan, _shm
from .._url import BackendURL
from ..codec import DeadLetter, decode_jsonl
from ..errors import RewardcoreError
from ..events import Event

#: Most partitions (and so workers) a replay can route to (a segment keeps a position each).
MAX_PARTS: int = _shm.MAX_PARTS
#: Bytes scanned per step at least.
BLOCK = 1 << 20
#: Mapped input bytes given back to the system at a time, once read.
DROP_AT_LEAST = 4 << 20
#: Input bytes per order guessed from a file's size when pre-sizing the order table: a placed
#: event is ~130-150 bytes, and an order has one (its other events, ~60 bytes, add to this).
#: An input of shorter placed lines than this grows the table once, near its end.
BYTES_PER_ORDER_GUESS = 150

crc32c = _scan.crc32c
lines_end = _scan.lines_end
route = _scan.route


@dataclass
class Input:
    """The events to replay: a file `path` (mapped by whoever reads it), or `stream` (stdin,
    read in blocks) when nothing needs the input as a file."""

    path: str | None
    stream: BinaryIO | None = None

    def size(self) -> int | None:
        return os.path.getsize(self.path) if self.path is not None else None


@contextlib.contextmanager
def open_input(name: str, need_file: bool) -> Iterator[Input]:
    """The input `name` ("-" for stdin). Stdin is kept in a temporary file when `need_file`
    (workers map the input, a resume checks its beginning), and streamed otherwise."""
    if name != "-":
        if not os.path.isfile(name):
            why = "no such file" if not os.path.exists(name) else "not a file"
            raise RewardcoreError(f"{name}: cannot read events: {why}")
        if not os.access(name, os.R_OK):
            raise RewardcoreError(f"{name}: cannot read events: permission denied")
        yield Input(name)
        return
    if not need_file:
        yield Input(None, sys.stdin.buffer)
        return
    with tempfile.NamedTemporaryFile(prefix="rewardcore-stdin-", suffix=".jsonl",
                                     delete=False) as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
    try:
        yield Input(spool.name)
    finally:
        os.unlink(spool.name)


@contextlib.contextmanager
def mapped(path: str) -> Iterator[memoryview]:
    """The whole file as a read-only view (empty for an empty file)."""
    with mapped_once(path) as (view, _):
        yield view


@contextlib.contextmanager
def mapped_once(path: str) -> Iterator[tuple[memoryview, Callable[[int], None]]]:
    """The whole file as a read-only view, and `done(upto)`: the bytes before `upto` will
    not be read again, so their pages leave this process (they stay in the page cache).
    Without it a replay's resident memory would grow by the size of its input."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield memoryview(b""), lambda upto: None
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            given = 0  # bytes before this are given back already

            def done(upto: int) -> None:
                nonlocal given
                end = upto - upto % mmap.PAGESIZE
                if end - given >= DROP_AT_LEAST:
                    mm.madvise(mmap.MADV_DONTNEED, given, end - given)
                    given = end

            try:
                yield view, done
            finally:
                view.release()


def presized(url: str, inp: Input) -> str:
    """memory:// (plain or durable) sized for a file's orders up front unless the URL says:
    growing the order table costs as much as filling it (every entry is rehashed into
    memory that is not in cache)."""
    u = BackendURL(url)
    size = inp.size()
    if u.scheme != "memory" or size is None or "orders" in u.query:
        return url
    return f"{url}{'&' if '?' in url else '?'}orders={size // BYTES_PER_ORDER_GUESS}"


def slow_partition(parts: int) -> Callable[[bytes], int]:
    """The partition of a line the scanner cannot route alone: decode it and hash its
    order id (0 when it has none or does not parse: it becomes a dead letter there)."""

    def slow(line: bytes) -> int:
        try:
            obj = msgspec.json.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return 0
        oid = obj.get("order_id") if isinstance(obj, dict) else None
        if not isinstance(oid, str):
            return 0
        return _scan.route_hash(oid.encode("utf-8", "surrogatepass"), parts)

    return slow


def decode_selected(buf: memoryview, offsets: np.ndarray, idxs: np.ndarray,
                    base_line: int) -> tuple[list[Event], list[DeadLetter]]:
    """Decode the lines `route` selected; a dead letter names its line in the whole input."""
    events, dead = decode_jsonl(buf)
    if not dead:
        return events, dead
    # a bad line: decode line by line again, so each dead letter names its real line
    events, dead = [], []
    lines = bytes(buf).split(b"\n")
    for raw, off, idx in zip(lines, offsets.tolist(), idxs.tolist(), strict=False):
        ev, dl = decode_jsonl(raw, base_line + idx + 1, off)
        events += ev
        dead += dl
    return events, dead

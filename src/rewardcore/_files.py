"""Writing files the way every command does: state and reports replaced atomically, dead
letters appended to a file made only when there is something to put in it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` (its folder made if need be) so that a reader sees the old
    file or the new one, never half of one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def write_output(path: str, data: bytes) -> None:
    """`write_atomic`, or standard output for "-"."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    write_atomic(path, data)


class DeadLetterFile:
    """A JSON-lines file of rejected events, one row a line. Created on the first row (no
    empty files); each `write` is one O_APPEND write, so processes can share the file and
    a row is on disk (in the page cache) once written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = -1

    def write(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append rows (`DeadLetter.to_dict()` forms, and whatever a caller adds); how many."""
        data = [orjson.dumps(r) + b"\n" for r in rows]
        if not data:
            return 0
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, b"".join(data))
        return len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DeadLetterFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

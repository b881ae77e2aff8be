"""Progress bars for long commands, on stderr, only for a person watching a terminal.

One helper for every command (generate, replay, simulate, review, loadtest): a tqdm bar when
stderr is a terminal and `--quiet` was not given, else a no-op, so pipes, logs and tests
see nothing but the command's own output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> Any: ...


class _Off:
    def update(self, n: int = 1) -> None:
        pass


def enabled(quiet: bool = False) -> bool:
    """Whether to draw: not asked to be quiet, and stderr is a terminal."""
    if quiet:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def add_quiet(p: argparse.ArgumentParser) -> None:
    """The `--quiet` option of a long command."""
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")


@contextmanager
def progress(total: float | None = None, *, desc: str, unit: str = "it",
             quiet: bool = False, scale: bool = True) -> Iterator[Bar]:
    """A bar to `update(n)` as work is done; a no-op when it would not be seen."""
    if not enabled(quiet):
        yield _Off()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, file=sys.stderr,
               dynamic_ncols=True, leave=False, mininterval=0.25)
    try:
        yield bar
    finally:
        bar.close()


class CountingReader:
    """A binary stream that reports the bytes read through it to a bar (for replay)."""

    def __init__(self, stream: BinaryIO, bar: Bar) -> None:
        self._stream = stream
        self._bar = bar

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._bar.update(len(data))
        return data

    def readinto(self, b: Any) -> int:
        n = self._stream.readinto(b)  # type: ignore[attr-defined]
        self._bar.update(n or 0)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

"""What the `rewardcore` command does for the person at the terminal, in one place.

- progress bars for long commands: a tqdm bar on stderr when stderr is a terminal and
  `--quiet` was not given, else a no-op, so pipes, logs and tests see only the output;
- `--help` that shows every option's default (`Parser`, `DefaultsFormatter`);
- a quiet exit when the reader of stdout goes away (`rewardcore winners ... | head`);
- warnings for inputs and backends that hold nothing, and a hint for a JSON array given
  where JSON lines are read.
"""

from __future__ import annotations

import argparse
import os
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


# -- help -----------------------------------------------------------------------------------

class DefaultsFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help unless it says its default already or has
    none worth showing (None, False, an empty string)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, "") or default is argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction | argparse._VersionAction)):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            shown = f"{default:,}" if isinstance(default, int) and not isinstance(
                default, bool) and abs(default) >= 10_000 else "%(default)s"
            return f"{text} (default: {shown})" if text else f"(default: {shown})"
        return text


class Parser(argparse.ArgumentParser):
    """The parser of `rewardcore` and of each subcommand: defaults shown in `--help`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


# -- broken pipes, empty inputs -------------------------------------------------------------

#: exit status after the reader of stdout went away: 128 + SIGPIPE, as a shell reports it
BROKEN_PIPE_EXIT = 141


def quiet_broken_pipe() -> int:
    """Call from `except BrokenPipeError`: point stdout at /dev/null so the interpreter's
    final flush cannot fail again (and print a traceback), and give the exit status."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a descriptor
        pass
    return BROKEN_PIPE_EXIT


def warn(message: str) -> None:
    print(f"rewardcore: warning: {message}", file=sys.stderr)


def looks_like_json_array(path: str) -> bool:
    """Whether a file's first non-blank byte opens a JSON array."""
    if path == "-" or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    return head[:1] == b"["


def no_valid_event(path: str, dead: int) -> int:
    """Warn about an input that gave nothing to apply; the exit status (1: nothing done)."""
    what = "stdin" if path == "-" else path
    if dead:
        warn(f"{what}: no valid event, {dead:,} line(s) rejected (see the dead letters)")
    else:
        warn(f"{what}: no event in the input")
    if looks_like_json_array(path):
        warn(f"{what} looks like a JSON array; replay reads JSON lines, one event per line: "
             f"convert it with  jq -c '.[]' {what} > events.jsonl")
    return 1


def holds_nothing(engine: Any) -> bool:
    """Whether a backend holds no event of its campaign (an empty or fresh backend, or an
    in-process one such as memory:// that keeps nothing between runs)."""
    counts = engine.outcome_counts()
    return not any(counts.values()) and not engine.redemptions()


def empty_backend(url: str, campaign_id: str) -> str:
    return (f"{url} holds no events for campaign {campaign_id} (an in-process backend such "
            "as memory:// keeps nothing between runs)")

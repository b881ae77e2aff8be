"""Example campaign files shipped with rewardcore (`rewardcore example NAME > my.toml`).

`d11-2026` is shaped like a real Double-Eleven campaign (the one the demo, the benchmark and
the load test use); `broken-2025` is one that failed, kept for `rewardcore lint` to explain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import RewardcoreError

_HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """The example campaigns, by name (the file name without .toml)."""
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def example_path(name: str) -> Path:
    """The file of example `name`; a unique prefix will do ("d11" is "d11-2026")."""
    found = [n for n in names() if n == name] or [n for n in names() if n.startswith(name)]
    if len(found) != 1:
        what = "matches several" if found else "is not one"
        raise RewardcoreError(f"example {name!r} {what} of the examples: {', '.join(names())}")
    return _HERE / f"{found[0]}.toml"


def summary(name: str) -> str:
    """The first line of the example's opening comment."""
    first = example_path(name).read_text().splitlines()[0]
    return first.lstrip("# ").strip().rstrip(":")


def register(sub: Any) -> None:
    """Add `example` (listed in rewardcore.cli._COMMAND_MODULES)."""
    p = sub.add_parser("example", help="print an example campaign file to start from",
                       description="Print an example campaign (TOML) to stdout, e.g. "
                                   "`rewardcore example d11 > my.toml`, to edit into your own.")
    p.add_argument("name", nargs="?",
                   help=f"example name or a unique prefix ({', '.join(names())})")
    p.add_argument("--list", action="store_true", help="list the examples with one line each")
    p.set_defaults(func=cmd_example)


def cmd_example(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        for n in names():
            print(f"{n:<14} {summary(n)}")
        return 0
    sys.stdout.write(example_path(args.name).read_text())
    return 0

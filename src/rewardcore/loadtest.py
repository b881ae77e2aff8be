"""`rewardcore loadtest`: the Double-Eleven Locust load test (loadtests/run.py).

The runner and the locustfile live in the source tree's loadtests/ (they are tools, not part
of the library), so this command works from a checkout (pip install -e ".[serve,load]").
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import RewardcoreError

RUNNER = Path(__file__).resolve().parent.parent.parent / "loadtests" / "run.py"


def _runner() -> ModuleType | None:
    if not RUNNER.is_file():
        return None
    spec = importlib.util.spec_from_file_location("rewardcore_loadtests_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def register(sub: Any) -> None:
    """Add `loadtest` (listed in rewardcore.cli._COMMAND_MODULES)."""
    runner = _runner()
    if runner is not None:
        runner.register(sub)
        return
    p = sub.add_parser("loadtest", help="Double-Eleven Locust load test (needs a source "
                                        "checkout with loadtests/)")
    p.set_defaults(func=_missing)


def _missing(args: argparse.Namespace) -> int:
    raise RewardcoreError(f"loadtest: {RUNNER} is not here; the load test runs from a source "
                          "checkout of rewardcore (pip install -e '.[serve,load]')")

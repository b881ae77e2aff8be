"""Capacity tools: the throughput harness (`rewardcore bench`, `bench.py`) and the
Double-Eleven Locust load test of the daemon (`rewardcore loadtest`, `loadtest.py` with
`locustfile.py`).

Nothing here is imported by the library or by building the command line: `commands.py`
declares the arguments and loads a tool only when its command runs.
"""

from __future__ import annotations


def source_version() -> str:
    """What made a figure, for the reports: the rewardcore release that ran."""
    from .. import __version__

    return f"rewardcore {__version__}"

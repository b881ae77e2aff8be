"""The standalone ingest daemon: `rewardcore serve`.

An HTTP API (Starlette on uvicorn with uvloop and httptools) and an optional Redis Streams
consumer group feed one engine. The engine is not thread-safe, so a single `EngineWorker`
owns it and runs every engine call, merging concurrent batches into one `apply`.

Importing this package costs nothing; the server's dependencies (the `serve` extra) load
only when the daemon starts.
"""

from __future__ import annotations

__all__ = ["register"]


def register(subparsers: object) -> None:
    """Add `rewardcore serve` to the CLI (see rewardcore.cli._COMMAND_MODULES)."""
    from .cli import register as _register

    _register(subparsers)

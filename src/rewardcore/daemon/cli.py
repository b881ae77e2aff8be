"""`rewardcore serve`: the argument parser. The server itself loads only when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..errors import RewardcoreError
from .config import (
    DaemonConfig,
    apply_env,
    check_env,
    parse_http,
    parse_size,
    parse_stream_url,
)

_DESCRIPTION = ("Run the ingest daemon (docs/daemon.md). Every flag can also be set by a "
                "REWARDCORE_* environment variable (--max-batch: REWARDCORE_MAX_BATCH; "
                "docs/operations.md); a flag given on the command line wins.")


def register(subparsers: Any) -> None:
    """Add the `serve` subcommand (listed in rewardcore.cli._COMMAND_MODULES)."""
    p = subparsers.add_parser(
        "serve", help="run the ingest daemon: HTTP API and Redis Streams consumer",
        description=_DESCRIPTION)
    add_arguments(p)
    apply_env(p)
    p.set_defaults(func=cmd_serve)


def serve_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The `serve` flags in a parser of their own (for the environment table); `environ`
    given: with its REWARDCORE_* variables applied."""
    p = argparse.ArgumentParser(prog="rewardcore serve", description=_DESCRIPTION)
    add_arguments(p)
    if environ is not None:
        apply_env(p, environ)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--campaign", required=True, help="campaign TOML file")
    p.add_argument("--backend", default="memory://",
                   help="engine URL: memory:// (default), redis://host:port/0, ...")
    p.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where the HTTP API listens (default 127.0.0.1:8080; port 0: any)")
    p.add_argument("--source", metavar="URL",
                   help="also consume redis-stream://host:port/STREAM?group=G[&consumer=C...]")
    p.add_argument("--token", default=None,
                   help="bearer token for /v1 (better set as REWARDCORE_TOKEN, which keeps it "
                        "out of the process list)")
    p.add_argument("--max-body", default="16MiB",
                   help="largest request body; larger ones get 413 (default 16MiB)")
    p.add_argument("--max-batch", type=int, default=8192,
                   help="most events merged into one engine call (default 8192)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds to finish in-flight work on SIGTERM/SIGINT (default 10)")
    p.add_argument("--dead-letters", default="dead-letters.jsonl",
                   help="JSON-lines file rejected events are appended to, created on the "
                        "first (default dead-letters.jsonl)")
    p.add_argument("--state-out", help="write the exported state here on a clean stop")
    p.add_argument("--engine-thread", choices=("auto", "on", "off"), default="auto",
                   help="run engine calls on a dedicated thread (auto: for engines that can "
                        "wait on network, fsync or locks: all but plain memory:// and "
                        "reference://)")
    p.add_argument("--log-every", type=float, default=0.0, metavar="SECONDS",
                   help="write a JSON stats line this often: events/s, outcomes, requests, "
                        "dead letters, stream lag (default 0: none)")
    p.add_argument("--access-log", action="store_true",
                   help="write one JSON line per HTTP request (method, path, status, time)")


def config_from_args(args: argparse.Namespace) -> DaemonConfig:
    check_env(args)
    token = args.token or ""
    if not token:
        raise RewardcoreError("serve: a bearer token is required for /v1: set REWARDCORE_TOKEN "
                              "or pass --token")
    if args.max_batch < 1:
        raise RewardcoreError("serve: --max-batch must be at least 1")
    if args.grace < 0:
        raise RewardcoreError("serve: --grace must be >= 0")
    if args.log_every < 0:
        raise RewardcoreError("serve: --log-every must be >= 0 (0: no stats lines)")
    host, port = parse_http(args.http)
    return DaemonConfig(
        campaign=args.campaign, backend=args.backend, host=host, port=port, token=token,
        source=parse_stream_url(args.source) if args.source else None,
        max_body=parse_size(args.max_body), max_batch=args.max_batch, grace=args.grace,
        dead_letters=args.dead_letters, state_out=args.state_out,
        engine_thread=args.engine_thread, log_every=args.log_every,
        access_log=args.access_log,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from .logs import log, setup_logging

    setup_logging()
    try:
        cfg = config_from_args(args)
        try:
            from .server import run
        except ImportError as exc:
            raise RewardcoreError(f"serve needs the serve extra ({exc.name} is missing): "
                                  "pip install 'rewardcore[serve]'") from None
    except RewardcoreError as exc:
        log.error("error", extra={"fields": {"error": str(exc), "exit": 2}})
        return 2
    return run(cfg)

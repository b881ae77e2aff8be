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
    p.add_argument("--token-file", metavar="FILE",
                   help="read the bearer token from this file (its first line) instead")
    p.add_argument("--read-token", default=None,
                   help="a second token that may only read: the GET views of /v1 (better set "
                        "as REWARDCORE_READ_TOKEN)")
    p.add_argument("--public-winners", action="store_true",
                   help="serve GET /v1/winners without any token (ids are masked)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a connection must deliver a request's headers within this; else 408 "
                        "and closed (default 10)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a request body must arrive whole within this; else 408 and closed "
                        "(default 30)")
    p.add_argument("--keep-alive", type=float, default=5.0, metavar="SECONDS",
                   help="an idle keep-alive connection is closed after this (default 5)")
    p.add_argument("--max-header", default="16KiB",
                   help="largest request line plus headers; larger gets 431 (default 16KiB)")
    p.add_argument("--max-connections", type=int, default=1000,
                   help="open connections at most; past it a new one gets 503 and is closed "
                        "(default 1000)")
    p.add_argument("--max-rejects-shown", type=int, default=20, metavar="N",
                   help="rejected events an answer lists in full; the rest are counted "
                        "(default 20)")
    p.add_argument("--dead-letter-raw", default="1MiB", metavar="SIZE",
                   help="bytes of each rejected event kept in the --dead-letters file; what is "
                        "cut is said (default 1MiB)")
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
    if args.token_file:
        if token:
            raise RewardcoreError("serve: give the token once: --token (REWARDCORE_TOKEN) or "
                                  "--token-file, not both")
        token = _read_token_file(args.token_file)
    if not token:
        raise RewardcoreError("serve: a bearer token is required for /v1: set REWARDCORE_TOKEN "
                              "or pass --token or --token-file")
    _check_token(token, "the token (--token, REWARDCORE_TOKEN or --token-file)")
    read_token = args.read_token or ""
    if read_token:
        _check_token(read_token, "--read-token (REWARDCORE_READ_TOKEN)")
        if read_token == token:
            raise RewardcoreError("serve: --read-token must differ from the write token")
    for flag in ("header_timeout", "body_timeout", "keep_alive"):
        if getattr(args, flag) <= 0:
            raise RewardcoreError(f"serve: --{flag.replace('_', '-')} must be > 0 seconds")
    if args.max_connections < 1:
        raise RewardcoreError("serve: --max-connections must be at least 1")
    if args.max_rejects_shown < 0:
        raise RewardcoreError("serve: --max-rejects-shown must be >= 0")
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
        access_log=args.access_log, read_token=read_token,
        public_winners=args.public_winners, header_timeout=args.header_timeout,
        body_timeout=args.body_timeout, keep_alive=args.keep_alive,
        max_header=parse_size(args.max_header), max_connections=args.max_connections,
        max_rejects_shown=args.max_rejects_shown,
        dead_letter_raw=parse_size(args.dead_letter_raw),
    )


MIN_TOKEN = 16


def _check_token(token: str, what: str) -> None:
    # A short token can be guessed over the network; 16 characters of hex is 64 bits.
    if len(token) < MIN_TOKEN:
        raise RewardcoreError(f"serve: {what} has {len(token)} characters; use at least "
                              f"{MIN_TOKEN} (e.g. openssl rand -hex 24)")
    if token != token.strip() or any(not c.isprintable() for c in token):
        raise RewardcoreError(f"serve: {what} has spaces or control characters at its ends "
                              "or inside; a header cannot carry them reliably")


def _read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RewardcoreError(f"serve: --token-file {path}: cannot read it: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None


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

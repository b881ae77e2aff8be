"""Daemon settings: the parsing of its addresses (`--http HOST:PORT`, the `redis-stream://`
source URL) and the REWARDCORE_* environment variable behind every `serve` flag."""

from __future__ import annotations

import argparse
import os
import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .._url import redact_url
from ..errors import ConfigError

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """A byte count such as "16MiB", "512k" or "1048576" (units are powers of 1024)."""
    s = text.strip().lower()
    digits = s.rstrip("abgikm")
    unit = s[len(digits):]
    try:
        value = int(digits.strip())
    except ValueError:
        raise ConfigError(f"size {text!r}: expected a number of bytes such as 16MiB") from None
    if unit not in _SIZE_UNITS or value <= 0:
        raise ConfigError(f"size {text!r}: expected a positive number of bytes such as 16MiB")
    return value * _SIZE_UNITS[unit]


def parse_http(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets); port 0 lets the OS pick one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


@dataclass(frozen=True)
class StreamSource:
    """Where the stream consumer reads, writes and dead-letters (see docs/daemon.md)."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    stream: str
    group: str
    consumer: str
    out: str  # decisions stream
    dead: str  # dead-letter stream
    batch: int  # entries per XREADGROUP / XAUTOCLAIM
    block_ms: int  # XREADGROUP BLOCK; also bounds how long a stop waits for a read
    claim_idle_ms: int  # an entry pending this long belongs to a dead consumer
    claim_every_ms: int  # how often XAUTOCLAIM runs
    max_deliveries: int  # an entry delivered more often than this is dead-lettered
    start: str  # where a new group starts: "0" (the whole stream) or "$" (new entries)
    maxlen: int  # approximate cap on the decisions and dead-letter streams; 0 = none
    url: str = ""  # as given

    def redacted(self) -> str:
        """The URL as given, without its secrets, for logs."""
        return redact_url(self.url)


_STREAM_INTS = {"db": 0, "batch": 256, "block": 1000, "claim_idle": 30_000, "claim_every": 5_000,
                "max_deliveries": 5, "maxlen": 0}


def parse_stream_url(url: str) -> StreamSource:
    """`redis-stream://[user:pass@]host:port/STREAM?group=G[&consumer=C&...]`."""
    shown = redact_url(url)  # every message below names the URL without its secrets
    parts = urlsplit(url)
    if parts.scheme != "redis-stream":
        raise ConfigError(f"--source {shown!r}: expected redis-stream://host:port/STREAM?group=G")
    stream = unquote(parts.path.lstrip("/"))
    if not stream:
        raise ConfigError(f"--source {shown!r}: the stream name (the URL's path) is missing")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"group", "consumer", "out", "dead", "start", *_STREAM_INTS}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigError(f"--source {shown!r}: unknown parameter {unknown[0]!r}; "
                          f"expected {', '.join(sorted(known))}")
    group = query.get("group")
    if not group:
        raise ConfigError(f"--source {shown!r}: group=NAME is required (the consumer group)")
    ints: dict[str, int] = {}
    for name, default in _STREAM_INTS.items():
        try:
            ints[name] = int(query.get(name, default))
        except ValueError:
            raise ConfigError(f"--source {shown!r}: {name} must be an integer") from None
        if ints[name] < 0 or (ints[name] == 0 and name in ("batch", "max_deliveries")):
            raise ConfigError(f"--source {shown!r}: {name} must be positive")
    start = query.get("start", "0")
    if start not in ("0", "$"):
        raise ConfigError(f"--source {shown!r}: start must be 0 (whole stream) or $ (new entries)")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigError(f"--source {shown!r}: the port is not a number") from None
    return StreamSource(
        host=parts.hostname or "127.0.0.1", port=port, db=ints["db"],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        stream=stream, group=group,
        consumer=query.get("consumer") or f"{socket.gethostname()}-{os.getpid()}",
        out=query.get("out") or f"{stream}:decisions",
        dead=query.get("dead") or f"{stream}:dead",
        batch=ints["batch"], block_ms=ints["block"], claim_idle_ms=ints["claim_idle"],
        claim_every_ms=ints["claim_every"], max_deliveries=ints["max_deliveries"],
        start=start, maxlen=ints["maxlen"], url=url,
    )


@dataclass(frozen=True)
class DaemonConfig:
    campaign: str
    backend: str = "memory://"
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""
    source: StreamSource | None = None
    max_body: int = 16 * 1024**2
    max_batch: int = 8192  # events merged into one engine call
    grace: float = 10.0  # seconds to finish in-flight work on SIGTERM
    dead_letters: str = "dead-letters.jsonl"
    dead_letters_kept: int = 1000  # recent dead letters kept in memory for GET /v1/dead-letters
    state_out: str | None = None
    engine_thread: str = "auto"  # auto | on | off: run engine calls in a dedicated thread
    log_every: float = 0.0  # seconds between stats lines; 0 = none
    access_log: bool = False  # one JSON line per HTTP request
    read_token: str = ""  # may only read the views; "" = none
    public_winners: bool = False  # GET /v1/winners without a token
    header_timeout: float = 10.0  # seconds to deliver a request's headers
    body_timeout: float = 30.0  # seconds to deliver a request's whole body
    keep_alive: float = 5.0  # seconds an idle keep-alive connection stays open
    max_header: int = 16 * 1024  # bytes of request line and headers
    max_connections: int = 1000  # open connections at most
    max_rejects_shown: int = 20  # rejected events an answer lists in full
    dead_letter_raw: int = 1024**2  # bytes of each rejected event kept in the file


# -- the environment ------------------------------------------------------------------------
ENV_PREFIX = "REWARDCORE_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class BadEnv:
    """An environment variable that does not parse as its flag: reported when the command
    runs (and only if the flag was not given, since flags win)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"BadEnv({self.message!r})"


def env_name(action: argparse.Action) -> str | None:
    """REWARDCORE_MAX_BATCH for --max-batch; None for actions with no long flag (help)."""
    longs = [o for o in action.option_strings if o.startswith("--")]
    if not longs or isinstance(action, argparse._HelpAction):
        return None
    return ENV_PREFIX + longs[0][2:].upper().replace("-", "_")


def apply_env(parser: argparse.ArgumentParser, environ: Mapping[str, str] = os.environ) -> None:
    """Let every long flag of `parser` be set by its REWARDCORE_* variable: a variable that
    is set becomes the flag's default (so a flag on the command line wins) and a required
    flag is no longer required. One mechanism over the parser's own actions, so every flag
    added to the parser has its variable."""
    for action in parser._actions:
        name = env_name(action)
        if name is None or name not in environ:
            continue
        action.default = _env_value(action, name, environ[name])
        action.required = False


def _env_value(action: argparse.Action, name: str, raw: str) -> Any:
    flag = action.option_strings[-1] if action.nargs == 0 else action.option_strings[0]
    where = f"{name}={raw!r} (the variable of {flag})"
    if action.nargs == 0:  # a switch: store_true, store_const, --x/--no-x
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            return BadEnv(f"{where}: expected 1/true/yes/on or 0/false/no/off")
        on = word in _TRUE
        if isinstance(action, argparse.BooleanOptionalAction):
            return on
        return action.const if on else action.default
    many = action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction)
    values = shlex.split(raw) if many else [raw]
    out = []
    for text in values:
        try:
            value = action.type(text) if callable(action.type) else text
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            return BadEnv(f"{where}: {exc or 'not a valid value'}")
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            return BadEnv(f"{where}: expected one of {choices}")
        out.append(value)
    return out if many else out[0]


def check_env(args: argparse.Namespace) -> None:
    """Raise ConfigError for the first REWARDCORE_* variable that did not parse and that no
    flag overrode."""
    for value in vars(args).values():
        if isinstance(value, BadEnv):
            raise ConfigError(value.message)


def env_table(parser: argparse.ArgumentParser) -> str:
    """The Markdown table of every flag and its variable (docs/operations.md holds it; a test
    checks it is up to date: `python -m rewardcore.daemon.config` prints it)."""
    rows = ["| variable | flag | default | meaning |", "| --- | --- | --- | --- |"]
    for action in parser._actions:
        name = env_name(action)
        if name is None:
            continue
        flag = action.option_strings[0]
        if action.choices is not None:
            flag += " " + "\\|".join(map(str, action.choices))
        elif action.nargs != 0:
            flag += f" {action.metavar or action.dest.upper()}"
        if action.required:
            default = "(required)"
        elif action.default is None or action.default is False:
            default = "none" if action.nargs != 0 else "off"
        else:
            default = f"`{action.default}`"
        meaning = (action.help or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | `{flag}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    from .cli import serve_parser

    print(env_table(serve_parser()), end="")  # without this process's variables

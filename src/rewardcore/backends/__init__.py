"""Backend registry: a URL picks the engine.

    memory://                   the compiled in-process engine (default)
    memory:///path/to/dir       the same, durable: a write-ahead log and snapshots in dir
    reference://                the pure-Python executable spec
    shm://NAME                  claim state in shared memory, for worker processes on a host
    redis://host:port/db        Lua-script claims in Redis (rediss:// for TLS)
    redis+cluster://host:port   the same on a Redis Cluster

Entries are "module:Class" strings so a backend's dependencies load only when its URL is
used; a scheme may name a second class for its URLs with a path (`memory:///dir`). Later
backends join with `register_backend`.
"""

from __future__ import annotations

import importlib
import os

from .._url import BackendURL, redact_url
from ..campaign import Campaign, load_campaign
from ..engine import Engine
from ..errors import ConfigError

_BACKENDS: dict[str, str] = {
    "memory": "rewardcore.backends.memory:MemoryEngine",
    "reference": "rewardcore.backends.reference:ReferenceEngine",
    "redis": "rewardcore.backends.redis:RedisEngine",
    "rediss": "rewardcore.backends.redis:RedisEngine",
    "redis+cluster": "rewardcore.backends.redis:RedisClusterEngine",
    "rediss+cluster": "rewardcore.backends.redis:RedisClusterEngine",
    "shm": "rewardcore.backends.shm:ShmEngine",
}
#: scheme -> the engine of its URLs with a path and no host (scheme:///path)
_WITH_PATH: dict[str, str] = {
    "memory": "rewardcore.backends.durable:DurableEngine",
}


def register_backend(scheme: str, target: str, *, with_path: str | None = None) -> None:
    """Make `scheme://...` URLs open `target` ("package.module:Class"), and `scheme:///path`
    URLs `with_path` if given."""
    _BACKENDS[scheme] = target
    if with_path is not None:
        _WITH_PATH[scheme] = with_path


def backend_schemes() -> list[str]:
    return sorted(_BACKENDS)


def engine_class(url: str) -> type[Engine]:
    """The engine class a backend URL names (imported on first use)."""
    parts = BackendURL(url) if "://" in url else None
    scheme = parts.scheme if parts is not None else ""
    target = _BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"backend URL {redact_url(url)!r}: unknown scheme {scheme!r}; "
            f"expected one of {', '.join(s + '://' for s in backend_schemes())}"
        )
    if parts is not None and not parts.netloc and parts.has_path:
        target = _WITH_PATH.get(scheme, target)
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _as_campaign(campaign: Campaign | str | os.PathLike[str]) -> Campaign:
    if isinstance(campaign, Campaign):
        return campaign
    if isinstance(campaign, str | os.PathLike):
        return load_campaign(os.fspath(campaign))
    raise ConfigError(f"open_engine: the campaign must be a Campaign or the path of a "
                      f"campaign TOML file, not {type(campaign).__name__} {campaign!r:.60}")


def open_engine(campaign: Campaign | str | os.PathLike[str],
                url: str = "memory://") -> Engine:
    """Open the engine the backend URL names, for `campaign` (a Campaign, or the path of
    its TOML file).

    URLs and their parameters (query string):

    ``memory://``
        ``orders=N``: pre-size the order table for N orders (default: grow as needed).
    ``memory:///path/to/dir``
        durable: every batch is logged to dir before its decisions return. ``orders=N`` as
        above; ``fsync=batch|interval|none`` (default batch), ``ms=N`` (the interval, 50),
        ``snapshot_mb=N`` (log written between snapshots, 64). A directory holding another
        campaign's state is refused at open (ConfigError; `reset_backend` clears it).
    ``reference://``
        the executable specification (slow, exact); no parameters.
    ``shm://NAME`` (``shm://`` for a private segment)
        ``orders``, ``claims``, ``beneficiaries``, ``redemptions``, ``arena`` (capacities,
        fixed when the segment is created), ``reserve=1|0``, ``transient=1``, ``dir=/path``
        (durable, with ``fsync``, ``ms``, ``snapshot_mb``). A segment of another campaign is
        refused.
    ``redis://host:port/db``, ``rediss://...``, ``redis+cluster://host:port``
        ``prefix=rc`` (key prefix) and the engine's tuning options (rewardcore.backends.
        redis), plus a listed set of redis-py's (``socket_timeout``, ``password``, ``db``;
        TLS options with ``rediss://``); docs/redis.md has the list.

    An unknown scheme or parameter, or a bad value, raises ConfigError naming it; a backend
    that cannot be reached raises BackendError. The engine is a context manager (close it).
    """
    campaign = _as_campaign(campaign)
    engine = engine_class(url).from_url(campaign, url)
    engine._opened_url = url
    return engine


def reset_backend(campaign: Campaign | str | os.PathLike[str], url: str) -> None:
    """Delete the campaign's state from the backend URL names (`rewardcore reset`).

    Unlike open_engine it takes a durable directory (``memory:///dir``) holding another
    campaign's state: that is how such a directory is started afresh for `campaign`."""
    campaign = _as_campaign(campaign)
    engine = engine_class(url).open_to_reset(campaign, url)
    engine._opened_url = url
    with engine:
        engine.reset()

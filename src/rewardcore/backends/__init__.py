"""Backend registry: a URL picks the engine.

    memory://               the compiled in-process engine (default)
    reference://            the pure-Python executable spec
    redis://host:port/db    Lua-script claims in Redis (rediss:// for TLS)
    redis+cluster://host:port   the same on a Redis Cluster

Later backends join with `register_backend`; entries are "module:Class" strings so a
backend's dependencies load only when its URL is used.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from .._url import redact_url
from ..campaign import Campaign
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


def register_backend(scheme: str, target: str) -> None:
    """Make `scheme://...` URLs open `target` ("package.module:Class")."""
    _BACKENDS[scheme] = target


def backend_schemes() -> list[str]:
    return sorted(_BACKENDS)


def engine_class(url: str) -> type[Engine]:
    scheme = urlsplit(url).scheme if "://" in url else ""
    target = _BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"backend URL {redact_url(url)!r}: unknown scheme {scheme!r}; "
            f"expected one of {', '.join(s + '://' for s in backend_schemes())}"
        )
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def open_engine(campaign: Campaign, url: str = "memory://") -> Engine:
    """Open the engine the backend URL names, for this campaign."""
    return engine_class(url).from_url(campaign, url)

"""The URL options of durable mode (memory:///dir, and shm://NAME?dir=/path)."""

from __future__ import annotations

from dataclasses import dataclass

from .._url import BackendURL

FSYNC_POLICIES = ("batch", "interval", "none")
DEFAULT_SNAPSHOT_MB = 64
DEFAULT_INTERVAL_MS = 50


@dataclass(frozen=True)
class DurableOptions:
    fsync: str = "batch"
    interval_ms: int = DEFAULT_INTERVAL_MS
    snapshot_bytes: int = DEFAULT_SNAPSHOT_MB << 20


#: the URL parameters of durable mode (memory:///dir, and shm://...?dir=)
DURABLE_PARAMS = ("fsync", "ms", "snapshot_mb")


def durable_options(u: BackendURL) -> DurableOptions:
    policy = u.text("fsync", "batch")
    if policy not in FSYNC_POLICIES:
        raise u.error(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {policy!r}")
    return DurableOptions(
        fsync=policy,
        interval_ms=u.int("ms", DEFAULT_INTERVAL_MS, 1),
        snapshot_bytes=u.int("snapshot_mb", DEFAULT_SNAPSHOT_MB, 1) << 20,
    )

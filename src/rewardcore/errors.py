"""One root error; every message says what was wrong and where (field, line, key)."""

from __future__ import annotations


class RewardcoreError(Exception):
    """Root of every error rewardcore raises on purpose."""


class ConfigError(RewardcoreError):
    """The campaign file (or a backend URL) is invalid."""


class EventError(RewardcoreError):
    """An event does not decode or validate."""


class BackendError(RewardcoreError):
    """A backend (Redis, shared memory, disk) failed; wraps the underlying error."""

"""One root error; every message says what was wrong and where (field, line, key)."""

from __future__ import annotations


class RewardcoreError(Exception):
    """Root of every error rewardcore raises on purpose."""


class ConfigError(RewardcoreError):
    """The campaign file (or a backend URL) is invalid."""


class EventError(RewardcoreError):
    """An event does not decode or validate. `index` and `field` say where, when known (the
    event's index in its batch, the field's name; None for an event that is no event)."""

    index: int | None = None
    field: str | None = None


class BackendError(RewardcoreError):
    """A backend (Redis, shared memory, disk) failed; wraps the underlying error."""

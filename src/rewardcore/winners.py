"""The published list of winners, shared by the daemon and the CLI.

Participants of the real campaigns could not tell whether they were within the first N of a
region. Publishing every winning claim (region, slot, order time, points) lets them check;
ids are masked so the list can be public without naming anyone in full.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from .engine import Engine


def mask_id(s: str) -> str:
    """Mask the middle of an id, keeping its length: "a1029384" -> "a1****84".

    A quarter of the characters (at least one) stay visible at each end, so a participant
    can recognise their own id while the list names no one in full. Ids of up to three
    characters keep only the first.
    """
    n = len(s)
    if n == 0:
        return ""
    if n <= 3:
        return s[0] + "*" * (n - 1)
    keep = max(1, n // 4)
    return s[:keep] + "*" * (n - 2 * keep) + s[-keep:]


def _tz(engine: Engine) -> timezone:
    offset = engine.campaign.info.starts_at.utcoffset()
    return timezone(offset if offset is not None else timedelta(0))


def winner_rows(engine: Engine, region: int | None = None) -> list[dict[str, Any]]:
    """Every non-revoked claim (of one region, or all), by region then slot, with masked ids.

    Each row: region, slot, rank (the order's place among the region's orders that reached
    slot choice; 0 when the engine does not keep it), beneficiary (masked), order_id
    (masked), ts (the order's epoch ms), placed_at (ISO 8601 in the campaign's time zone),
    points, state.
    """
    tz = _tz(engine)
    return [
        {
            "region": c.region,
            "slot": c.slot,
            "rank": c.rank,
            "beneficiary": mask_id(c.beneficiary),
            "order_id": mask_id(c.order_id),
            "ts": c.ts,
            "placed_at": datetime.fromtimestamp(c.ts / 1000, tz).isoformat(timespec="milliseconds"),
            "points": c.points,
            "state": c.state,
        }
        for c in engine.winners(region)
    ]

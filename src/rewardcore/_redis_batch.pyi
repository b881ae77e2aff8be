"""Stubs for rewardcore._redis_batch (ext/redis_batch.pyx): the Redis client's per-event work."""

from typing import Any

import numpy as np

def check_batch(events: list[Any], pays_merchant: bool) -> None: ...
def bucket_items(
    events: list[Any], lo: int, hi: int, nb: int, starts: int, ends: int, min_paid: int,
    regions: dict[int, tuple[str, int, str]], pays_merchant: bool,
) -> tuple[list[list[Any]], np.ndarray, np.ndarray]: ...
def core_items(
    events: list[Any], lo: int, bucket: np.ndarray, pos: np.ndarray, replies: list[Any],
    regions: dict[int, tuple[str, int, str]], prizes: dict[str, tuple[int, int]],
    pays_merchant: bool, outcome: np.ndarray,
) -> tuple[tuple[list[Any], list[str], bytes, list[int]], list[int], list[Any]]: ...
def fill(
    reply: list[Any], rows: list[int], outcome: np.ndarray, slot: np.ndarray,
    points: np.ndarray, rank: np.ndarray | None,
) -> None: ...

"""Type stub for the compiled engine (ext/engine.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

from .campaign import Campaign
from .events import Event

OUTCOME_CODES: dict[str, int]
CLAIM_STATE_NAMES: tuple[str, str, str]

Decided = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32], npt.NDArray[np.int32],
                npt.NDArray[np.int64]]
ClaimRows = tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.int32],
                  npt.NDArray[np.int32], list[str], list[str], npt.NDArray[np.int64],
                  npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]

class MemoryCore:
    a_used: npt.NDArray[np.int32]
    a_taken: npt.NDArray[np.int32]
    a_heap_len: npt.NDArray[np.int32]
    a_ranked: npt.NDArray[np.int64]
    a_heap: npt.NDArray[np.int32]
    a_orders: npt.NDArray[np.uint64]
    a_btab: npt.NDArray[np.uint64]
    a_pairs: npt.NDArray[np.uint64]
    a_bfp: npt.NDArray[np.uint64]
    a_held: npt.NDArray[np.int32]
    a_pending: npt.NDArray[np.int64]
    a_confirmed: npt.NDArray[np.int64]
    a_redeemed: npt.NDArray[np.int64]
    a_c_row: npt.NDArray[np.int32]
    a_c_slot: npt.NDArray[np.int32]
    a_c_points: npt.NDArray[np.int32]
    a_c_bene: npt.NDArray[np.int32]
    a_c_state: npt.NDArray[np.uint8]
    a_c_ts: npt.NDArray[np.int64]
    a_c_rank: npt.NDArray[np.int64]
    a_c_settled: npt.NDArray[np.int64]
    a_c_revoked: npt.NDArray[np.int64]
    a_stock: npt.NDArray[np.int64]
    def __init__(self, campaign: Campaign, expected_orders: int = 0) -> None: ...
    def reset(self, expected_orders: int = 0) -> None: ...
    def apply(self, events: list[Event]) -> Decided: ...
    def prepare(self, events: list[Event]) -> None: ...
    def commit(self) -> Decided: ...
    @property
    def orders_remembered(self) -> int: ...
    @property
    def order_table_bytes(self) -> int: ...
    @property
    def awarded_points_total(self) -> int: ...
    def claim_rows(self) -> ClaimRows: ...
    def balance_rows(
        self,
    ) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
    def balance_of(self, who: str) -> tuple[int, int, int]: ...
    def outcome_count_array(self) -> npt.NDArray[np.int64]: ...
    def redemption_items(self) -> dict[str, int]: ...
    def stock_array(self) -> npt.NDArray[np.int64]: ...
    def region_counts(self, code: int) -> tuple[int, int, int] | None: ...
    def snapshot(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]: ...
    def restore(self, arrays: dict[str, npt.NDArray[Any]], scalars: dict[str, Any]) -> None: ...

"""Type stub for the compiled scanning module (ext/scan.pyx)."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

Buffer = bytes | bytearray | memoryview | Any

MAY_GIVE_QTY: int

def json_plain(
    data: Buffer, events: list[Any], kinds: tuple[type, ...], kind_keys: bytes, by_line: bool,
) -> tuple[bool, int]: ...
def hash_probe() -> str: ...
def crc32c(data: Buffer, crc: int = 0) -> int: ...
def route_hash(order_id_utf8: bytes, parts: int) -> int: ...
def lines_end(data: Buffer, start: int, limit: int, target: int) -> tuple[int, int]: ...
def route(
    data: Buffer, start: int, limit: int, parts: int, workers: int, worker: int,
    skip: npt.NDArray[np.int64], out: bytearray, offsets: npt.NDArray[np.int64],
    lines: npt.NDArray[np.int64], slow: Callable[[bytes], int] | None,
) -> tuple[int, int, int, int]: ...

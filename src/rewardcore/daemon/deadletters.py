"""Where rejected events go: a JSON-lines file (every one, appended and flushed) and the most
recent ones in memory for GET /v1/dead-letters. Their count is a metric."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._files import DeadLetterFile
from ..codec import DeadLetter
from .metrics import Metrics


class DeadLetterSink:
    def __init__(self, path: str | None, keep: int, metrics: Metrics) -> None:
        self.path = Path(path) if path else None
        self.recent: deque[dict[str, Any]] = deque(maxlen=max(keep, 1))
        self.metrics = metrics
        self.total = 0
        self._file = DeadLetterFile(self.path) if self.path is not None else None

    def add(self, source: str, letters: Iterable[DeadLetter | dict[str, Any]]) -> None:
        """Keep rejected events from `source` ("http", "stream"); the file is flushed so a
        killed daemon loses none it has answered for."""
        now = int(time.time() * 1000)
        rows = []
        for d in letters:
            row = d.to_dict() if isinstance(d, DeadLetter) else dict(d)
            row["source"] = source
            row["received_ms"] = now
            rows.append(row)
        if not rows:
            return
        self.recent.extend(rows)
        self.total += len(rows)
        self.metrics.count_dead_letters(source, [str(r.get("reason", "")) for r in rows])
        if self._file is not None:
            self._file.write(rows)  # one unbuffered write: on disk once answered for

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

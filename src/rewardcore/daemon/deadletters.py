"""Where rejected events go: a JSON-lines file (every one, appended and flushed) and the most
recent ones in memory for GET /v1/dead-letters. Their count is a metric.

Both keep bounded prefixes of the raw bytes: the file up to `raw_limit` bytes of each event
(so one hostile body cannot grow it without bound, and the bytes stay recoverable up to
that size), the in-memory view `VIEW_RAW` bytes; a row that was cut says so (`raw_size`,
`raw_cut`). Each row has a `seq`, the cursor of GET /v1/dead-letters.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._files import DeadLetterFile
from ..codec import DeadLetter, raw_fields
from .metrics import Metrics, reason_class

#: Bytes of raw each row of the in-memory view keeps.
VIEW_RAW = 1024


class DeadLetterSink:
    def __init__(self, path: str | None, keep: int, metrics: Metrics,
                 raw_limit: int = 1024**2) -> None:
        self.path = Path(path) if path else None
        self.recent: deque[dict[str, Any]] = deque(maxlen=max(keep, 1))
        self.metrics = metrics
        self.raw_limit = raw_limit
        self.total = 0  # rejected events, a fold of many counting as many
        self.seq = 0  # rows written
        self._file = DeadLetterFile(self.path) if self.path is not None else None

    def add(self, source: str, letters: Iterable[DeadLetter | dict[str, Any]]) -> None:
        """Keep rejected events from `source` ("http", "stream"); the file is flushed so a
        killed daemon loses none it has answered for."""
        now = int(time.time() * 1000)
        rows = []
        views = []
        for d in letters:
            if isinstance(d, DeadLetter):
                row = d.to_dict(self.raw_limit)
                raw = d.raw
            else:
                row = dict(d)
                raw = row.pop("raw_bytes", None)
                if raw is not None:
                    row.update(raw_fields(raw, self.raw_limit))
            self.seq += 1
            row["seq"] = self.seq
            row["source"] = source
            row["received_ms"] = now
            rows.append(row)
            view = row
            if raw is not None and len(raw) > VIEW_RAW:
                view = {k: v for k, v in row.items() if not k.startswith("raw")}
                view.update(raw_fields(raw, VIEW_RAW))
            views.append(view)
        if not rows:
            return
        self.recent.extend(views)
        self.total += sum(r.get("count", 1) for r in rows)
        self.metrics.count_dead_letters(source, [str(r.get("reason", "")) for r in rows])
        for r in rows:
            if r.get("count", 1) > 1:  # a fold of many rejected events counts as many
                self.metrics.dead_letters.labels(
                    source, reason_class(str(r["reason"]))).inc(r["count"] - 1)
        if self._file is not None:
            self._file.write(rows)  # one unbuffered write: on disk once answered for

    def page(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """The kept rows with seq > `after`, oldest first, at most `limit`; and the cursor
        of the next page (None when this is the last)."""
        rows = [r for r in self.recent if r["seq"] > after]
        page = rows[:limit]
        return page, (page[-1]["seq"] if len(rows) > limit else None)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

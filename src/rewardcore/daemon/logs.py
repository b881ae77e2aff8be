"""Structured logs: one JSON object per line on stderr, one line per start, stop and
error (never per event). uvicorn's own warnings and errors go through the same formatter."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

log = logging.getLogger("rewardcore.daemon")


class JsonLines(logging.Formatter):
    """One JSON object per log record: ts, level, event, then the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        if record.name == log.name:
            out["event"] = record.getMessage()
        else:  # uvicorn's own warnings and errors
            out["event"] = "server"
            out["logger"] = record.name
            out["message"] = record.getMessage()
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(logging.WARNING)  # its per-start chatter is ours to say, once
        lg.propagate = False
    logging.getLogger("uvicorn.access").disabled = True

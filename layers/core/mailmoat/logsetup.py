"""Logging for the CLI: JSON lines when stderr is not a terminal (journald, a file, a pipe), the
familiar text line when an operator watches it."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Attributes every LogRecord has: whatever else is on a record came from `extra=` (message_id,
# stage, tenant, action …) and goes into the JSON line as its own key.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def wants_json(stream: IO[str]) -> bool:
    """JSON unless the stream is a terminal (a stream without isatty counts as not one)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return not (isatty is not None and isatty())
    except (ValueError, OSError):  # a closed or odd stream: machine output is the safe guess
        return True


def setup_logging(level: int, stream: IO[str] | None = None) -> None:
    """Replace logging.basicConfig: one handler on the root logger, JSON or text by `stream`."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if wants_json(stream) else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.setLevel(level)
    if not root.handlers:  # as basicConfig: a caller's handlers (pytest's capture) stay
        root.addHandler(handler)

"""Logging set-up. Report content must never reach a log, at any level."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO

#: Libraries that log statement parameters or message bodies at DEBUG level (aiosqlite logs every
#: query with its parameters, i.e. the report itself). They are held at WARNING whatever the
#: configured level is.
CONTENT_LEAKING_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg", "aiohttp.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The attributes every LogRecord has; anything else on a record came from `extra=` and is logged
#: as a field of its own in JSON.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                                      "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the record's `extra`
    fields, and the traceback of an exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class _MeldbotHandler(logging.StreamHandler):
    """The handler configure_logging installs (found again, and replaced, by the next call)."""


def configure_logging(level: int | str = logging.INFO, format: str = "text",
                      stream: IO[str] | None = None) -> logging.Handler | None:
    """Log to `stream` at `level` as `text` lines or `json` lines, keeping content-leaking libraries
    at WARNING. Calling it again replaces the handler it installed. Without `stream` it writes to
    stderr, and (like `logging.basicConfig`) adds no handler when someone else configured logging
    already. Returns the handler installed (None when none was)."""
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    if format not in ("text", "json"):
        raise ValueError(f"unknown log format {format!r} (text or json)")
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _MeldbotHandler)]
    for old in ours:
        root.removeHandler(old)
    handler = None
    if stream is not None or not root.handlers:
        handler = _MeldbotHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    silence_content_loggers()
    return handler


def silence_content_loggers() -> None:
    """Hold the libraries that would log report content at WARNING."""
    for name in CONTENT_LEAKING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

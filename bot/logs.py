"""Logging set-up. Report content must never reach a log, at any level."""

from __future__ import annotations

import logging
import sys

#: Libraries that log statement parameters or message bodies at DEBUG level (aiosqlite logs every
#: query with its parameters, i.e. the report itself). They are held at WARNING whatever the
#: configured level is.
CONTENT_LEAKING_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg", "aiohttp.access")


def configure_logging(level: int | str = logging.INFO) -> None:
    """Log to stderr at `level`, keeping content-leaking libraries at WARNING."""
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
    silence_content_loggers()


def silence_content_loggers() -> None:
    """Hold the libraries that would log report content at WARNING."""
    for name in CONTENT_LEAKING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

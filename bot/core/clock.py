"""The clock: one source of "now" that every part is given (tests pass one they move by hand)."""

from __future__ import annotations

import datetime as dt
from typing import Callable

#: Returns the current time, aware.
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)

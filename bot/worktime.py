"""Working time: "4 working hours" and "2 working days" in the organisation's time zone.

Public holidays are not known here; a deadline that falls on one is simply a working day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class WorkingTime:
    """Working days (ISO weekdays) and daily hours, in a time zone."""

    timezone: dt.tzinfo
    start: dt.time
    end: dt.time
    days: frozenset[int]

    @classmethod
    def parse(cls, timezone: str | dt.tzinfo, hours: str, days: list[int]) -> "WorkingTime":
        """From config values: `"09:00-17:00"` and ISO weekdays."""
        start_text, end_text = hours.split("-")
        tz = ZoneInfo(timezone) if isinstance(timezone, str) else timezone

        def clock(text: str) -> dt.time:
            h, m = (int(part) for part in text.split(":"))
            return dt.time.max if (h, m) == (24, 0) else dt.time(h, m)

        return cls(tz, clock(start_text), clock(end_text), frozenset(days))

    def _window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
        if day.isoweekday() not in self.days:
            return None
        return (dt.datetime.combine(day, self.start, self.timezone), dt.datetime.combine(day, self.end, self.timezone))

    def add_hours(self, moment: dt.datetime, hours: float) -> dt.datetime:
        """The moment `hours` working hours after `moment` (aware, UTC)."""
        remaining = dt.timedelta(hours=hours)
        local = moment.astimezone(self.timezone)
        day = local.date()
        for _ in range(3660):  # ten years of days: a safety net, never reached with sane settings
            window = self._window(day)
            if window is not None:
                begin = max(window[0], local)
                if begin < window[1]:
                    available = window[1] - begin
                    if remaining <= available:
                        return (begin + remaining).astimezone(dt.timezone.utc)
                    remaining -= available
            day += dt.timedelta(days=1)
            local = dt.datetime.combine(day, dt.time.min, self.timezone)
        raise ValueError("no working time configured")

    def add_days(self, moment: dt.datetime, days: int) -> dt.datetime:
        """The end of the `days`-th working day after the day of `moment` (aware, UTC)."""
        day = moment.astimezone(self.timezone).date()
        counted = 0
        for _ in range(3660):
            day += dt.timedelta(days=1)
            if day.isoweekday() in self.days:
                counted += 1
                if counted == days:
                    return dt.datetime.combine(day, self.end, self.timezone).astimezone(dt.timezone.utc)
        raise ValueError("no working days configured")

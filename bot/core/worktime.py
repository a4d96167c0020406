"""Working time: "4 working hours" and "2 working days" in the organisation's time zone.

Public holidays (the `holidays` package, by country) are not working days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Container
from zoneinfo import ZoneInfo

import holidays


@dataclass(frozen=True)
class WorkingTime:
    """Working days (ISO weekdays) and daily hours, in a time zone.

    Hours are counted as elapsed time inside the windows (so a window holding a DST change counts
    its real length), and every computation is done on UTC instants."""

    timezone: dt.tzinfo
    start: dt.timedelta  # from local midnight
    end: dt.timedelta  # from local midnight; 24:00 is the next midnight
    days: frozenset[int]
    #: Days off besides the weekly ones (anything supporting `date in closed`).
    closed: Container[dt.date] = field(default=frozenset(), compare=False)

    @classmethod
    def parse(cls, timezone: str | dt.tzinfo, hours: str, days: list[int],
              holidays_country: str | None = None) -> "WorkingTime":
        """From config values: `"09:00-17:00"`, ISO weekdays and a country whose public holidays are off."""
        start_text, end_text = hours.split("-")
        tz = ZoneInfo(timezone) if isinstance(timezone, str) else timezone

        def offset(text: str) -> dt.timedelta:
            h, m = (int(part) for part in text.split(":"))
            return dt.timedelta(hours=h, minutes=m)

        closed = holidays.country_holidays(holidays_country) if holidays_country else frozenset()
        return cls(tz, offset(start_text), offset(end_text), frozenset(days), closed)

    def is_working_day(self, day: dt.date) -> bool:
        return day.isoweekday() in self.days and day not in self.closed

    def _local(self, day: dt.date, offset: dt.timedelta) -> dt.datetime:
        """The UTC instant of a local wall-clock time on `day` (24:00 is the next day's midnight)."""
        extra_days, rest = divmod(offset, dt.timedelta(days=1))
        wall = dt.datetime.combine(day + dt.timedelta(days=extra_days), dt.time.min) + rest
        return wall.replace(tzinfo=self.timezone).astimezone(dt.timezone.utc)

    def _window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
        if not self.is_working_day(day):
            return None
        return self._local(day, self.start), self._local(day, self.end)

    def add_hours(self, moment: dt.datetime, hours: float) -> dt.datetime:
        """The moment `hours` working hours after `moment` (aware, UTC)."""
        remaining = dt.timedelta(hours=hours)
        instant = moment.astimezone(dt.timezone.utc)
        day = instant.astimezone(self.timezone).date() - dt.timedelta(days=1)  # a window may span midnight
        for _ in range(3660):  # ten years of days: a safety net, never reached with sane settings
            window = self._window(day)
            if window is not None and window[1] > instant:
                begin = max(window[0], instant)
                available = window[1] - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
            day += dt.timedelta(days=1)
        raise ValueError("no working time configured")

    def add_days(self, moment: dt.datetime, days: int) -> dt.datetime:
        """The end of the `days`-th working day after the day of `moment` (aware, UTC)."""
        day = moment.astimezone(self.timezone).date()
        counted = 0
        for _ in range(3660):
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                counted += 1
                if counted == days:
                    return self._local(day, self.end)
        raise ValueError("no working days configured")

    def hours_between(self, start: dt.datetime, end: dt.datetime) -> float:
        """Working hours from `start` to `end` (0 when `end` is not later)."""
        start, end = start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)
        if end <= start:
            return 0.0
        total = dt.timedelta()
        day = start.astimezone(self.timezone).date() - dt.timedelta(days=1)  # a window may span midnight
        last = end.astimezone(self.timezone).date()
        while day <= last:
            window = self._window(day)
            if window is not None:
                begin, finish = max(window[0], start), min(window[1], end)
                if finish > begin:
                    total += finish - begin
            day += dt.timedelta(days=1)
        return total.total_seconds() / 3600

    @property
    def hours_per_day(self) -> float:
        """The length of one working day in hours (as configured, ignoring DST)."""
        return (self.end - self.start).total_seconds() / 3600

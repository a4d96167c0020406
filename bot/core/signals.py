"""Signals and the overview for the coordinators: what stands out in this month's reports.

At the end of every hour with new reports (a durable caseless timer) the reports of the current
month are compared per kind of incident, kind of place and department with their usual: the average
of the three months before.
One that has `[stats] signal_factor` times its usual and at least `signal_min_reports` reports gets
one short signal in the coordinator room/channel, once per month. Once a month the month before is
summed up the same way. Never by perpetrator: there is no count across cases by who did it (a list
of "difficult citizens" is a black list in the eyes of the Dutch DPA).

Signals and the `overzicht` answer carry counts, codes and the link to /stats only."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from babel.dates import format_date
from sqlalchemy.ext.asyncio import AsyncSession

from dialogs import Reply, Translator
from storage import repo
from storage.models import Timer
from storage.repo import stats as q
from storage.repo.stats import Scope

from bot.config import StatsSettings
from bot.core import payloads
from bot.core.payloads import RoomMessage
from bot.core.stats import LONG_OPEN_DAYS, count, shift_months

log = logging.getLogger(__name__)

#: Caseless timer kinds (fired by the TimerWorker's `jobs`).
HOURLY, MONTHLY = "stats_signals", "stats_monthly"
#: What signals compare; never the perpetrator.
DIMENSIONS = ("kind", "place", "department")
#: Months the usual is averaged over.
USUAL_MONTHS = 3
#: Everything: a scope over all report months.
ALL_TIME = Scope("0000-01", "9999-12")


@dataclass(frozen=True)
class Signal:
    """A kind, kind of place or department with clearly more reports in `month` than usual."""

    dimension: str
    code: str
    month: str
    count: int
    usual: float


async def standing_out(session: AsyncSession, month: str, settings: StatsSettings) -> list[Signal]:
    """What has clearly more reports in `month` than its usual (largest first)."""
    first = shift_months(month, -USUAL_MONTHS)
    # Never below the suppression threshold: a signal's count is shown as it is.
    least = max(settings.signal_min_reports, settings.min_count)
    found = []
    for dimension in DIMENSIONS:
        counts = await q.count_per_month(session=session, first_month=first, last_month=month, dimension=dimension)
        for code in sorted({value for value, _ in counts}):
            current = counts.get((code, month), 0)
            usual = sum(counts.get((code, shift_months(month, -n)), 0) for n in range(1, USUAL_MONTHS + 1))
            usual /= USUAL_MONTHS
            if current >= least and current >= settings.signal_factor * usual:
                found.append(Signal(dimension, code, month, current, usual))
    return sorted(found, key=lambda s: (-s.count, s.dimension, s.code))


def month_name(month: str, language: str) -> str:
    """`2026-11` as "november 2026" / "November 2026"."""
    return format_date(dt.date(int(month[:4]), int(month[5:]), 1), "LLLL y", locale=language)


class Signals:
    """The hourly and monthly signal jobs, and the coordinators' `overzicht`."""

    def __init__(self, *, settings: StatsSettings, language: str, timezone: dt.tzinfo, public_url: str,
                 coordinator_targets: Callable[[], Sequence[tuple[str, str | None]]],
                 departments: dict[str, str] | None = None):
        self.settings = settings
        self.language = language
        self.timezone = timezone
        self.link = public_url.rstrip("/") + "/stats"
        self.coordinator_targets = coordinator_targets
        self.departments = dict(departments or {})

    # -- timers ---------------------------------------------------------------------------------------

    def _month(self, moment: dt.datetime) -> str:
        return moment.astimezone(self.timezone).strftime("%Y-%m")

    def next_hour(self, now: dt.datetime) -> dt.datetime:
        return now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)

    def monthly_due(self, month: str) -> dt.datetime:
        """When the summary of the month before `month` is posted: `[stats] monthly_day` and `monthly_time`."""
        hour, minute = (int(part) for part in self.settings.monthly_time.split(":"))
        local = dt.datetime(int(month[:4]), int(month[5:]), self.settings.monthly_day, hour, minute,
                            tzinfo=self.timezone)
        return local.astimezone(dt.timezone.utc)

    async def schedule_check(self, session: AsyncSession, now: dt.datetime) -> None:
        """After a new report: the check at the end of this hour (one per hour, however many reports)."""
        hour = self.next_hour(now)
        await repo.schedule_timer(session=session, key=f"{HOURLY}:{hour.strftime('%Y-%m-%dT%H')}", kind=HOURLY,
                                  case_id=None, due_at=hour, now=now)

    async def ensure_monthly(self, session: AsyncSession, now: dt.datetime) -> None:
        """The next monthly summary (idempotent: one timer per month)."""
        month = self._month(now)
        if self.monthly_due(month) <= now:
            month = shift_months(month, 1)
        await repo.schedule_timer(session=session, key=f"{MONTHLY}:{month}", kind=MONTHLY, case_id=None,
                                  due_at=self.monthly_due(month), now=now)

    async def hourly(self, session: AsyncSession, timer: Timer, now: dt.datetime) -> str:
        """The check after new reports: a signal for each new stand-out of this month (once per month
        each); it also keeps the next monthly summary scheduled."""
        month = self._month(now)
        sent = 0
        for signal in await standing_out(session, month, self.settings):
            reply = Reply(self._signal_text(signal), title=Translator(self.language)("signal.title"))
            sent += await self._post(session, reply, f"signal:{month}:{signal.dimension}:{signal.code}", now)
        await self.ensure_monthly(session, now)
        return f"signals={sent}"

    async def monthly(self, session: AsyncSession, timer: Timer, now: dt.datetime) -> str:
        """The month before, summed up: its reports against the months before, and what stood out."""
        month = shift_months(self._month(timer.due_at), -1)
        t = Translator(self.language)
        flags = await q.count_flags(session=session, scope=Scope(month, month))
        usual = [await q.count_flags(session=session, scope=Scope(shift_months(month, -n), shift_months(month, -n)))
                 for n in range(1, USUAL_MONTHS + 1)]
        average = sum(u["total"] for u in usual) / USUAL_MONTHS
        lines = [t("signal.monthly", month=month_name(month, self.language),
                   count=count(flags["total"], self.settings.min_count).shown, usual=_rounded(average))]
        stand_outs = await standing_out(session, month, self.settings)
        lines += [self._signal_text(s) for s in stand_outs] if stand_outs else [t("signal.nothing_stands_out")]
        lines.append(t("signal.link", link=self.link))
        reply = Reply("\n\n".join(lines), title=t("signal.monthly_title", month=month_name(month, self.language)))
        await self._post(session, reply, f"signal-monthly:{month}", now)
        await self.ensure_monthly(session, now)
        return f"monthly={len(stand_outs)}"

    async def _post(self, session: AsyncSession, reply: Reply, key: str, now: dt.datetime) -> int:
        """Queue `reply` for every coordinator room/channel, once per key."""
        queued = 0
        for platform, destination in self.coordinator_targets():
            await payloads.enqueue(session, RoomMessage(reply), platform=platform, destination=destination, now=now,
                                   idempotency_key=f"{key}:{platform}")
            queued += 1
        return queued

    def _label(self, signal: Signal) -> str:
        t = Translator(self.language)
        if signal.dimension == "department":
            return self.departments.get(signal.code, signal.code)
        return t(f"{signal.dimension}.{signal.code}")

    def _signal_text(self, signal: Signal) -> str:
        t = Translator(self.language)
        return t(f"signal.more_{signal.dimension}", label=self._label(signal), count=signal.count,
                 usual=_rounded(signal.usual), month=month_name(signal.month, self.language), link=self.link)

    # -- the coordinators' overview -------------------------------------------------------------------

    async def overview(self, session: AsyncSession, now: dt.datetime, language: str) -> Reply:
        """This month's and this year's numbers (against the month before and the same months last
        year), the open cases and the link to /stats."""
        t = Translator(language)
        month = self._month(now)
        year = month[:4]
        last_year = f"{int(year) - 1:04d}"

        # Totals of the whole organisation, for the people who see every case anyway: exact (the
        # "<5" rule is for breakdowns, where a small group can point at a person).
        async def total(scope: Scope) -> int:
            return (await q.count_flags(session=session, scope=scope))["total"]

        open_now = await q.count_open_since(session=session, scope=ALL_TIME, before=now + dt.timedelta(seconds=1))
        long_open = await q.count_open_since(session=session, scope=ALL_TIME,
                                             before=now - dt.timedelta(days=LONG_OPEN_DAYS))
        text = t("overview.body",
                 month=month_name(month, language), month_count=await total(Scope(month, month)),
                 previous_month=month_name(shift_months(month, -1), language),
                 previous_month_count=await total(Scope(shift_months(month, -1), shift_months(month, -1))),
                 year=year, year_count=await total(Scope(f"{year}-01", month)),
                 last_year=last_year, last_year_count=await total(Scope(f"{last_year}-01", f"{last_year}{month[4:]}")),
                 open=open_now, long_open=long_open, days=LONG_OPEN_DAYS)
        return Reply(text + "\n\n" + t("signal.link", link=self.link), title=t("overview.title"))


def _rounded(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")

"""The daily retention purge: cases whose retention is over go, the case threads hear 14 days before.

The job is a durable timer (`timers` table, kind `retention_purge`, key `retention_purge:<date>`):
scheduling is idempotent by key and a due timer is leased by one worker, so however many processes
run, each day's purge runs once. `TimerWorker` fires it (its `jobs`); each run schedules the next day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage import repo, transaction
from storage.models import Timer
from storage.repo.retention import DuePurge, RetentionRules

from bot.config import PrivacySettings
from bot.core.casework import CaseWork
from bot.core.clock import utc_now
from bot.core.errors import DATABASE_ERRORS
from bot.core.payloads import ThreadLine

log = logging.getLogger(__name__)

#: The timer kind of the daily purge.
KIND = "retention_purge"


def rules_of(privacy: PrivacySettings) -> RetentionRules:
    """The retention rules of the `[privacy]` configuration."""
    return RetentionRules(closed_years=privacy.closed_years, withdrawn_days=privacy.withdrawn_days,
                          notice_days=privacy.purge_notice_days,
                          idle_conversation_days=privacy.idle_conversation_days)


async def purge_due(session: AsyncSession, *, rules: RetentionRules, now: dt.datetime,
                    actor: str) -> list[DuePurge]:
    """Purge every case whose retention is over (none under legal hold), each with an audit entry
    without content; returns what was purged. The daily job and `meldbot retention purge` both use it."""
    purged = []
    for item in await repo.list_due_purges(session=session, now=now, rules=rules):
        case = await repo.lock_for_purge(session=session, case=item.case)
        # Checked again under the lock: a hold set (or the case purged) meanwhile wins.
        due = rules.due(case) if case is not None and case.legal_hold_since is None else None
        if due is None or due[1] > now:
            continue
        rule, _ = due
        reference = case.reference
        await repo.purge_case(session=session, case=case, outcome=rule, now=now)
        await repo.add_audit(session=session, actor=actor, action="purged", case_reference=reference, now=now,
                             detail={"outcome": rule, "rule": rules.describe(rule)})
        log.info("purged case %s (%s)", reference, rules.describe(rule))
        purged.append(DuePurge(case=case, rule=rule, due_at=item.due_at))
    return purged


class RetentionWorker:
    """Schedules the daily purge and does it when its timer fires (`fire`, called by TimerWorker)."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], casework: CaseWork,
                 privacy: PrivacySettings, timezone: dt.tzinfo, clock: Callable[[], dt.datetime] = utc_now,
                 poll: float = 3600.0):
        self.sessions = sessions
        self.casework = casework
        self.rules = rules_of(privacy)
        hours, minutes = privacy.purge_time.split(":")
        self.purge_time = dt.time(int(hours), int(minutes))
        self.timezone = timezone
        self.clock = clock
        self.poll = poll

    def run_at(self, day: dt.date) -> dt.datetime:
        """When the purge of `day` runs: `[privacy] purge_time` in the organisation's time zone."""
        return dt.datetime.combine(day, self.purge_time, tzinfo=self.timezone).astimezone(dt.timezone.utc)

    def next_run_after(self, now: dt.datetime) -> dt.date:
        """The first day whose purge time is after `now`."""
        today = now.astimezone(self.timezone).date()
        return today if self.run_at(today) > now else today + dt.timedelta(days=1)

    async def _schedule(self, session: AsyncSession, day: dt.date, now: dt.datetime) -> bool:
        return await repo.schedule_timer(session=session, key=f"{KIND}:{day.isoformat()}", kind=KIND, case_id=None,
                                         due_at=self.run_at(day), now=now)

    async def ensure_scheduled(self) -> bool:
        """Schedule today's purge (idempotent by key: done or pending, it stays as it is). When today's
        purge time has passed without a run (a first start, or a chain broken by an outage), it runs
        at once; after that every run schedules the next."""
        now = self.clock()
        async with transaction(self.sessions) as session:
            return await self._schedule(session, now.astimezone(self.timezone).date(), now)

    async def fire(self, session: AsyncSession, timer: Timer, now: dt.datetime) -> str:
        """The daily job, in the timer's transaction: purge, tell the threads, schedule the next day."""
        purged = await purge_due(session, rules=self.rules, now=now, actor="meldbot")
        notices = await self.send_notices(session, now)
        swept = await repo.sweep_leftovers(session=session, now=now, rules=self.rules)
        await self._schedule(session, self.next_run_after(now), now)
        log.info("retention: %d case(s) purged, %d notice(s), %d audit entries and %s conversation(s) swept",
                 len(purged), notices, swept.audit_entries, swept.conversations)
        return f"purged={len(purged)} notices={notices}"  # Timer.outcome holds 40 characters

    async def send_notices(self, session: AsyncSession, now: dt.datetime) -> int:
        """Tell each case thread, once, the day its case will be removed (no content, just the date
        and that a legal hold prevents it)."""
        sent = 0
        for item in await repo.list_due_notices(session=session, now=now, rules=self.rules):
            day = item.due_at.astimezone(self.timezone).date()
            await self.casework.post_to_thread(session, item.case.id,
                                               ThreadLine("purge_notice", item.case.reference, date=day), now)
            await repo.mark_purge_notice(session=session, case=item.case, now=now)
            sent += 1
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Keep today's purge scheduled (hourly) until `stop` is set; the TimerWorker fires it."""
        while not stop.is_set():
            try:
                await self.ensure_scheduled()
            except DATABASE_ERRORS as error:
                log.warning("retention: database unavailable (%s); retrying", type(error).__name__)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.poll)
            except asyncio.TimeoutError:
                pass

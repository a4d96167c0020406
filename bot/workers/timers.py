"""Durable timers: reminders, escalation, aftercare check-ins and unfinished reports.

Every timer lives in the database (table `timers`, and two columns of `conversations` for drafts),
so a restart loses none. A due timer is leased, its action written with its outbox messages in one
transaction, and marked done in that same transaction: it fires once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import dialogs
from dialogs import Reply, State
from storage import repo, transaction
from storage.models import Case, Conversation, Timer

from bot.core import payloads
from bot.core.casework import CaseWork
from bot.core.clock import utc_now
from bot.core.errors import DATABASE_ERRORS
from bot.core.notifications import payload_for_case
from bot.core.payloads import ReporterMessage, ThreadLine

log = logging.getLogger(__name__)

#: How long a handled event ID is remembered (platforms redeliver within minutes, Teams after 15 s).
HANDLED_EVENTS_KEPT = dt.timedelta(days=30)


class TimerWorker:
    """Fires due timers; `run_due()` is what tests call with a controlled clock."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        casework: CaseWork,
        language: str,
        clock: Callable[[], dt.datetime] = utc_now,
        on_outbox: Callable[[], None] | None = None,
        poll: float = 30.0,
        lease: dt.timedelta = dt.timedelta(minutes=2),
        is_room: Callable[[str, str], bool] = lambda platform, target: False,
    ):
        self.sessions = sessions
        #: Whether a `platform:target` backup names a room (the platform's adapter knows its ID formats).
        self.is_room = is_room
        self.casework = casework
        self.language = language
        self.clock = clock
        self.on_outbox = on_outbox
        self.poll = poll
        self.lease = lease
        self._housekept: dt.datetime | None = None
        #: Timers without a case, by kind: (session, timer, now) -> outcome (the daily retention purge).
        self.jobs: dict[str, Callable[[AsyncSession, Timer, dt.datetime], Awaitable[str]]] = {}

    async def run_due(self, limit: int = 100) -> int:
        """Fire everything due now; returns how many timers fired (including ones with nothing to do)."""
        async with self.sessions() as session:
            # A read first: with nothing due, no write transaction (and no write lock) is taken.
            due = await repo.next_timer_due(session=session)
        if due is None or due > self.clock():
            return 0
        fired = 0
        for _ in range(limit):
            now = self.clock()
            async with transaction(self.sessions) as session:
                timer = await repo.claim_due_timer(session=session, now=now, lease=self.lease)
            if timer is None:
                break
            async with transaction(self.sessions) as session:
                outcome = await self._fire(session, timer, now)
                if not await repo.finish_timer(session=session, timer_id=timer.id, now=now, outcome=outcome):
                    raise _AlreadyDone()
            log.info("timer fired id=%s kind=%s outcome=%s", timer.id, timer.kind, outcome)
            fired += 1
        for _ in range(limit):
            now = self.clock()
            async with transaction(self.sessions) as session:
                conversation = await repo.due_draft_conversation(session=session, now=now)
                if conversation is None:
                    break
                outcome = await self._draft(session, conversation, now)
            log.info("draft timer fired conversation=%s outcome=%s", conversation.id, outcome)
            fired += 1
        if fired and self.on_outbox:
            self.on_outbox()
        return fired

    async def housekeeping(self) -> int:
        """Forget what is no longer needed: handled event IDs after 30 days (platforms redeliver
        within minutes), login links, sessions and claim codes a day after they expired, daily file
        counts once their day is over. Returns rows removed."""
        now = self.clock()
        async with transaction(self.sessions) as session:
            removed = await repo.prune_handled_events(session=session, before=now - HANDLED_EVENTS_KEPT)
            removed += await repo.prune_logins(session=session, before=now - dt.timedelta(days=1))
            removed += await repo.prune_claim_codes(session=session, before=now - dt.timedelta(days=1))
            # Two days back: a day in the organisation's time zone is over by then wherever it is.
            removed += await repo.prune_file_usage(session=session,
                                                   before_day=(now - dt.timedelta(days=2)).date().isoformat())
        self._housekept = now
        if removed:
            log.info("housekeeping removed %s rows", removed)
        return removed

    async def run(self, stop: asyncio.Event) -> None:
        """Fire timers until `stop` is set, sleeping until the next one is due (at most `poll` s)."""
        while not stop.is_set():
            timeout = self.poll
            try:
                if self._housekept is None or self.clock() - self._housekept > dt.timedelta(hours=1):
                    await self.housekeeping()
                await self.run_due()
                async with self.sessions() as session:
                    due = await repo.next_timer_due(session=session)
                if due is not None:
                    timeout = min(self.poll, max(0.5, (due - self.clock()).total_seconds()))
            except _AlreadyDone:
                timeout = 0.5
            except DATABASE_ERRORS as error:
                log.warning("timers: database unavailable (%s); retrying", type(error).__name__)
            except Exception as error:  # a bug in one timer must not stop all others: its lease runs out, retried
                log.error("timers: a timer failed (%s); retrying after its lease", type(error).__name__)
            try:
                await asyncio.wait_for(stop.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass

    # -- case timers --------------------------------------------------------------------------------

    async def _fire(self, session: AsyncSession, timer: Timer, now: dt.datetime) -> str:
        if timer.kind in self.jobs:
            return await self.jobs[timer.kind](session, timer, now)
        case = await session.get(Case, timer.case_id) if timer.case_id else None
        if case is None:
            return "no_case"
        case = await repo.lock_case(session=session, case=case)
        handler = getattr(self, f"_{timer.kind}", None)
        if handler is None:
            log.error("unknown timer kind %s", timer.kind)
            return "unknown_kind"
        return await handler(session, case, now)

    async def _claim_reminder(self, session: AsyncSession, case: Case, now: dt.datetime) -> str:
        if case.assigned_to_id is not None or case.status == "closed":
            return "not_needed"
        await repo.add_case_event(session=session, case=case, kind="claim_reminder", actor="meldbot", data={},
                                  now=now)
        await self.casework.post_to_thread(session, case.id, ThreadLine("claim_reminder", case.reference), now)
        await repo.schedule_timer(session=session, key=f"claim_escalation:{case.id}", kind="claim_escalation",
                                  case_id=case.id, due_at=self.casework.claim_interval_end(now, case.urgent),
                                  now=now)
        return "reminded"

    async def _claim_escalation(self, session: AsyncSession, case: Case, now: dt.datetime) -> str:
        if case.assigned_to_id is not None or case.status == "closed":
            return "not_needed"
        backup = self.casework.settings.backup
        if not backup:
            log.warning("case %s not taken in time and no [followup] backup is configured", case.reference)
            await self.casework.post_to_thread(session, case.id, ThreadLine("claim_no_backup", case.reference), now)
            return "no_backup"
        platform, _, target = backup.partition(":")
        if not self.is_room(platform, target):
            # A person: their direct chat with the bot.
            conversation = await repo.find_conversation(session=session, platform=platform, sender=target)
            if conversation is None:
                log.error("escalation of %s: backup %s has never talked to the bot", case.reference, backup)
                await self.casework.post_to_thread(session, case.id, ThreadLine("claim_no_backup", case.reference),
                                                   now)
                return "backup_unreachable"
            reply = dialogs.escalation_to_person(self.language, case.reference, self.casework.case_link(case.reference))
            await payloads.enqueue(session, ReporterMessage.to_conversation(conversation, reply), platform=platform,
                                   case_id=case.id, now=now)
        else:
            notification = payload_for_case(case, link=self.casework.case_link(case.reference), evidence=False,
                                            extra_flags=("escalation",))
            await payloads.enqueue(session, notification, platform=platform, destination=target, now=now,
                                   case_id=case.id)
        await repo.add_case_event(session=session, case=case, kind="escalated", actor="meldbot",
                                  data={"to": backup}, now=now)
        await self.casework.post_to_thread(session, case.id, ThreadLine("escalated", case.reference), now)
        return "escalated"

    async def _aftercare_checkin(self, session: AsyncSession, case: Case, now: dt.datetime) -> str:
        return await self._aftercare_message(session, case, now, "aftercare_checkin",
                                             dialogs.aftercare_checkin(case.language, case.reference))

    async def _aftercare_reoffer(self, session: AsyncSession, case: Case, now: dt.datetime) -> str:
        return await self._aftercare_message(session, case, now, "aftercare_reoffer",
                                             dialogs.aftercare_reoffer(case.language, case.reference))

    async def _aftercare_message(self, session: AsyncSession, case: Case, now: dt.datetime, kind: str,
                                 reply: Reply) -> str:
        if "aftercare_accepted" in (case.followup or {}):
            return "not_needed"  # aftercare is under way
        if not await self.casework.to_reporter(session, case, reply, now, relay=True):
            return "unreachable"
        await repo.add_case_event(session=session, case=case, kind=kind, actor="meldbot", data={}, now=now)
        await self.casework.post_to_thread(session, case.id, ThreadLine(kind, case.reference), now)
        return "sent"

    # -- unfinished reports ---------------------------------------------------------------------------

    async def _draft(self, session: AsyncSession, conversation: Conversation, now: dt.datetime) -> str:
        state = State.from_dict(conversation.state, conversation.language)
        if state.draft is None or state.step == "idle":
            await repo.set_draft_timers(session=session, conversation=conversation, reminder_at=None,
                                        expires_at=None)
            return "no_draft"
        expires = conversation.draft_expires_at
        if expires is not None and expires <= now:
            draft_id = state.draft.draft_id
            await repo.delete_draft_attachments(session=session, conversation_id=conversation.id, draft_id=draft_id)
            new_state = dialogs.discard_draft(state)
            await repo.save_conversation_state(session=session, conversation=conversation, state=new_state.to_dict(),
                                               language=new_state.language, now=now, draft_timers=(None, None))
            await self._tell(session, conversation, dialogs.draft_expired(state.language, self._draft_days()), now)
            return "expired"
        state.draft.reminded = True
        await repo.save_conversation_state(session=session, conversation=conversation, state=state.to_dict(),
                                           language=state.language, now=conversation.updated_at,
                                           draft_timers=(None, expires))
        await self._tell(session, conversation, dialogs.draft_reminder(state.language), now)
        return "reminded"

    def _draft_days(self) -> int:
        return self.casework.settings.draft_days

    async def _tell(self, session: AsyncSession, conversation: Conversation, reply: Reply, now: dt.datetime) -> None:
        await payloads.enqueue(session, ReporterMessage.to_conversation(conversation, reply),
                               platform=conversation.platform, now=now)



class _AlreadyDone(Exception):
    """Another worker finished the timer first; this transaction's work is rolled back."""

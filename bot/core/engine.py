"""The glue between adapters, the pure dialogue and storage.

One inbound message is one turn: load the conversation, run `dialogs.step`, and write everything
the turn changes (state, case, events, attachments, outbox rows) in ONE transaction. Only after
that commit does the reporter hear "saved".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import logging
import secrets
import time
import weakref
from dataclasses import dataclass, replace
from typing import Awaitable, Callable, Sequence

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import dialogs
from dialogs import (
    AddEvidence,
    RelayToCoordinator,
    AttachmentInfo,
    Context,
    DiscardDraft,
    ListMyReports,
    Reply,
    State,
    SubmitReport,
    UserInput,
)
from dialogs.categories import is_urgent
from dialogs.coordinator import is_login_command, parse_coordinator_command, thread_reply
from dialogs.text import clean_name
from storage import repo, transaction

from bot.core.casework import CaseError, CaseWork, Coordinator, address_of, payload_of
from bot.config import FollowupSettings, LimitsSettings
from bot.core.notifications import payload_for_case
from bot.adapters.contract import CoordinatorMessage, InboundAttachment, InboundMessage

log = logging.getLogger(__name__)

#: Errors that mean "the database could not do it now": the user is told to try again.
DATABASE_ERRORS = (SQLAlchemyError, OSError, ConnectionError, asyncio.TimeoutError)
#: Longest wait for a platform to say whether someone is a coordinator (Teams asks its service).
COORDINATOR_CHECK_TIMEOUT_S = 5.0
#: Most turns that share one transaction.
MAX_BATCH = 32
#: Longest time one turn may wait for the database before the user hears "not saved".
TURN_TIMEOUT_S = 10.0


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


class Engine:
    """Handles inbound messages for every platform."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        context: Context,
        public_url: str,
        coordinator_targets: Callable[[], Sequence[tuple[str, str | None]]],
        clock: Callable[[], dt.datetime] = utc_now,
        on_outbox: Callable[[], None] | None = None,
        delivery_healthy: Callable[[], bool] = lambda: True,
        followup: FollowupSettings | None = None,
        is_coordinator: Callable[[str, str], Awaitable[bool]] | None = None,
        open_direct_chat: Callable[[str, dict], Awaitable[dict]] | None = None,
        limits: LimitsSettings | None = None,
        login_link_minutes: int = 10,
    ):
        self.sessions = sessions
        self.context = context
        self.coordinator_targets = coordinator_targets
        self.clock = clock
        self.on_outbox = on_outbox
        self.delivery_healthy = delivery_healthy
        self.followup = followup or FollowupSettings()
        self.casework = CaseWork(public_url=public_url, coordinator_targets=coordinator_targets,
                                 timezone=context.timezone, followup=self.followup)
        self._is_coordinator = is_coordinator
        self._open_direct_chat = open_direct_chat
        self.limits = limits or LimitsSettings()
        self.throttle = Throttle(self.limits.messages_per_minute)
        self.login_link_minutes = login_link_minutes
        self._locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task | None = None

    def _lock(self, message: InboundMessage) -> asyncio.Lock:
        key = (message.platform, message.conversation, message.sender)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def handle(self, message: InboundMessage) -> list[Reply]:
        """Run one turn and return the replies for the sender (empty for a duplicate event)."""
        language = self.context.default_language
        allowed = self.throttle.admit((message.platform, message.sender))
        if allowed is not True:
            log.warning("message refused: over the rate limit platform=%s event=%s", message.platform,
                        message.event_id)
            return [Reply(dialogs.translator(language)("limits.slow_down"))] if allowed is None else []
        message = _cleaned(message)
        error_reference = secrets.token_hex(3).upper()
        if message.form is None and not message.attachments and is_login_command(message.text):
            return await self._login(message)
        try:
            # Turns of one conversation run one after the other (a double click is two turns), so
            # a batch never holds two turns of the same conversation.
            async with self._lock(message):
                result = await self._batched(message)
        except IntegrityError:
            log.error("turn not saved error=%s platform=%s event=%s cause=IntegrityError", error_reference,
                      message.platform, message.event_id)
            return list(dialogs.not_saved(language, error_reference))
        except _TurnFailed as failed:
            log.error("turn not saved error=%s platform=%s event=%s cause=%s", error_reference, message.platform,
                      message.event_id, type(failed.__cause__).__name__)
            return list(dialogs.not_saved(failed.language, error_reference))
        except DATABASE_ERRORS as error:
            log.error("turn not saved error=%s platform=%s event=%s cause=%s", error_reference, message.platform,
                      message.event_id, type(error).__name__)
            return list(dialogs.not_saved(language, error_reference))
        if result is None:
            # The event ID was handled before (or by a concurrent transaction): answered once only.
            log.info("duplicate event ignored platform=%s event=%s", message.platform, message.event_id)
            return []
        replies, queued = result
        if queued and self.on_outbox:
            self.on_outbox()
        return replies

    # -- group commit -------------------------------------------------------------------------------
    #
    # Turns that arrive while a transaction is running wait for the next one and then share it:
    # one BEGIN/COMMIT, one INSERT of their event IDs, one SELECT of their conversations and one
    # executemany UPDATE of their states. Alone, a turn still runs at once in its own transaction.
    # Nobody hears "saved" before the shared commit; if a batch fails, its turns are retried one by
    # one, so a turn that breaks only fails itself.

    async def _batched(self, message: InboundMessage) -> tuple[list[Reply], bool] | None:
        loop = asyncio.get_running_loop()
        entry = _Pending(message, loop.create_future(), deadline=loop.time() + TURN_TIMEOUT_S)
        entry.future.add_done_callback(_retrieve)
        self._queue.append(entry)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="turns")
        try:
            # The drainer settles every entry by its deadline (dropped unstarted, or its batch timed out).
            return await asyncio.shield(entry.future)
        except asyncio.CancelledError:
            if not entry.started:
                with contextlib.suppress(ValueError):
                    self._queue.remove(entry)  # never ran: nothing of it is saved
                _settle(entry.future, error=_TurnFailed(self.context.default_language))
            else:
                # Keep this conversation's lock until the turn has ended: the next turn of the same
                # conversation must not share its batch (it would not see this turn's state).
                with contextlib.suppress(BaseException):
                    await asyncio.shield(entry.future)
            raise

    async def _drain(self) -> None:
        batch: list[_Pending] = []
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = []
                while self._queue and len(batch) < MAX_BATCH:
                    entry = self._queue.pop(0)
                    if entry.deadline <= loop.time():  # waited too long: answered "not saved", never run
                        _settle(entry.future, error=_TurnFailed(self.context.default_language))
                        continue
                    entry.started = True
                    batch.append(entry)
                if batch:
                    await self._run_batch(batch)
        finally:
            # Stopped (shutdown): nobody may wait for an answer that will not come, and nothing
            # answered "not saved" may run later.
            pending, self._queue = batch + self._queue, []
            for entry in pending:
                _settle(entry.future, error=_TurnFailed(self.context.default_language))

    async def _run_batch(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        # Turns in one order in every process: locks on reporters and cases never cross (no deadlock).
        batch.sort(key=lambda e: (e.message.platform, e.message.sender, e.message.conversation))
        try:
            async with asyncio.timeout(max(0.1, max(e.deadline for e in batch) - loop.time())):
                results = await self._turns([entry.message for entry in batch])
        except Exception as error:  # noqa: BLE001 - handed to the waiting turns
            if len(batch) == 1 or not _turn_specific(error):
                # The database is down, locked or too slow: retrying turn by turn would only make
                # everyone wait longer for the same answer.
                for entry in batch:
                    _settle(entry.future, error=error)
                return
            for entry in batch:  # find the turn that broke the batch: each on its own
                remaining = entry.deadline - loop.time()
                if remaining <= 0:
                    _settle(entry.future, error=_TurnFailed(self.context.default_language))
                    continue
                try:
                    async with asyncio.timeout(remaining):
                        (result,) = await self._turns([entry.message])
                except Exception as single:  # noqa: BLE001
                    _settle(entry.future, error=single)
                else:
                    _settle(entry.future, result=result)
            return
        for entry, result in zip(batch, results):
            _settle(entry.future, result=result)

    async def _turns(self, messages: list[InboundMessage]) -> list[tuple[list[Reply], bool] | None]:
        """Run turns of different conversations in ONE transaction; None for a duplicate event."""
        now = self.clock()
        language = self.context.default_language
        try:
            async with transaction(self.sessions) as session:
                new = await repo.mark_events_handled(
                    session=session, events=[(m.platform, m.event_id) for m in messages], now=now)
                fresh: dict[tuple[str, str], InboundMessage] = {}
                for m in messages:
                    if (m.platform, m.event_id) in new:
                        fresh.setdefault((m.platform, m.event_id), m)
                conversations = await repo.get_or_create_conversations(
                    session=session, keys=[(m.platform, m.conversation, m.sender) for m in fresh.values()],
                    language=language, now=now)
                results: dict[int, tuple[list[Reply], bool]] = {}
                rows = []
                for m in fresh.values():
                    conversation = conversations[(m.platform, m.conversation, m.sender)]
                    replies, queued, row = await self._apply(session, m, conversation, now)
                    results[id(m)] = (replies, queued)
                    rows.append(row)
                await repo.save_conversation_states(session=session, rows=rows,
                                                    conversations={c.id: c for c in conversations.values()})
            return [results.get(id(m)) for m in messages]
        except (IntegrityError, DataError):
            raise  # one turn's data: the batch is retried turn by turn
        except DATABASE_ERRORS as error:
            raise _TurnFailed(language) from error

    async def _apply(self, session: AsyncSession, message: InboundMessage, conversation,
                     now: dt.datetime) -> tuple[list[Reply], bool, dict]:
        """One turn inside a batch: the dialogue step and its effects; returns the replies, whether
        the outbox got work, and the conversation's new column values."""
        state = State.from_dict(conversation.state, self.context.default_language)
        files, too_large = _accepted_files(message.attachments)
        files, over_quota = await self._within_file_quota(session, message, state, files, now)
        user_input = UserInput(
            text=message.text, now=now,
            attachments=tuple(AttachmentInfo(f.filename, f.media_type, len(f.content)) for f in files),
            form=message.form,
        )
        turn = dialogs.step(state, user_input, self.context)
        submitting = any(isinstance(e, SubmitReport) for e in turn.effects)
        if submitting and await self._over_report_quota(session, message, now):
            # Kept as it was before this turn (at its summary): it can be sent once the day is over.
            log.warning("report not sent: over the daily report limit platform=%s event=%s", message.platform,
                        message.event_id)
            turn = dialogs.Turn(replies=(Reply(dialogs.translator(state.language)(
                "limits.reports_per_day", limit=self.limits.reports_per_day)),), state=state, effects=())
        replies = [Reply(dialogs.translator(turn.state.language)("evidence.too_large", files=too_large))] \
            if too_large else []
        replies += [Reply(dialogs.translator(turn.state.language)(key, files=names, limit=limit))
                    for key, names, limit in over_quota]
        replies += list(turn.replies)
        new_state = turn.state
        queued = False
        draft_id = _draft_for_files(state_after=new_state, effects=turn.effects)
        evidence_case = next((e.reference for e in turn.effects if isinstance(e, AddEvidence)), None)
        if files and not evidence_case and draft_id:
            for f in files:
                await repo.add_attachment(session=session, filename=f.filename, media_type=f.media_type,
                                          content=f.content, now=now, conversation_id=conversation.id,
                                          draft_id=draft_id)
        for effect in turn.effects:
            if isinstance(effect, SubmitReport):
                reference, deferred = await self._submit(session, message, conversation.id, effect,
                                                         new_state.language, now)
                new_state = dialogs.record_submission(new_state, reference, now, effect.form_id)
                replies += dialogs.submitted(new_state.language, reference, effect.draft, self.context,
                                             deferred=deferred)
                queued = True
            elif isinstance(effect, ListMyReports):
                cases = await repo.list_cases_for_reporter(session=session, platform=message.platform,
                                                           platform_user_id=message.sender)
                listing = [{"reference": c.reference, "status": c.status, "created_at": c.created_at,
                            "kinds": c.kind_codes} for c in cases]
                shown = list(dialogs.my_reports(new_state.language, listing))
                if new_state.step != "idle" and replies:
                    replies[-1:-1] = shown  # before the question that is asked again
                else:
                    replies += shown
            elif isinstance(effect, AddEvidence):
                queued |= await self._add_evidence(session, effect.reference, files, now)
            elif isinstance(effect, RelayToCoordinator):
                queued |= await self._relay_to_coordinator(session, message, effect, now)
            elif isinstance(effect, DiscardDraft):
                await repo.delete_draft_attachments(session=session, conversation_id=conversation.id,
                                                    draft_id=effect.draft_id)
        reminder_at, expires_at = self._draft_timers(new_state, now)
        row = {"id": conversation.id, "state": new_state.to_dict(), "language": new_state.language,
               "updated_at": now, "address": message.address or conversation.address,
               "draft_reminder_at": reminder_at, "draft_expires_at": expires_at}
        log.info("turn platform=%s event=%s step=%s->%s effects=%s", message.platform, message.event_id,
                 state.step, new_state.step, ",".join(type(e).__name__ for e in turn.effects) or "-")
        return replies, queued, row

    async def _within_file_quota(self, session: AsyncSession, message: InboundMessage, state: State,
                                 files: list[InboundAttachment], now: dt.datetime
                                 ) -> tuple[list[InboundAttachment], list[tuple[str, str, int]]]:
        """The files of this message that fit the `[limits]`, and for the others which limit (catalog
        key), their names and the limit. Checked before the dialogue sees the files, so it never
        confirms a file that is not kept."""
        if not files:
            return files, []
        limits = self.limits
        refused: list[tuple[str, str, int]] = []

        def refuse(key: str, dropped: list[InboundAttachment], limit: int) -> None:
            if dropped:
                refused.append((key, ", ".join(f.filename for f in dropped), limit))

        kept = files[:limits.files_per_message]
        refuse("limits.files_per_message", files[limits.files_per_message:], limits.files_per_message)
        evidence_for = dialogs.late_evidence_case(state, now)
        if evidence_for:
            case = await repo.get_case(session=session, reference=evidence_for)
            in_report = await repo.count_case_files(session=session, case_id=case.id) if case else 0
        else:
            in_report = len(state.draft.attachments) if state.draft and state.step != "idle" else 0
        room = max(0, limits.files_per_report - in_report)
        refuse("limits.files_per_report", kept[room:], limits.files_per_report)
        kept = kept[:room]
        day = now.astimezone(self.context.timezone).date().isoformat()
        count, size = await repo.get_file_usage(session=session, platform=message.platform, sender=message.sender,
                                                day=day)
        budget = limits.megabytes_per_day * 1024 * 1024
        accepted, by_count, by_size = [], [], []
        for f in kept:
            if count >= limits.files_per_day:
                by_count.append(f)
            elif size + len(f.content) > budget:
                by_size.append(f)
            else:
                accepted.append(f)
                count += 1
                size += len(f.content)
        refuse("limits.files_per_day", by_count, limits.files_per_day)
        refuse("limits.megabytes_per_day", by_size, limits.megabytes_per_day)
        if accepted:
            await repo.add_file_usage(session=session, platform=message.platform, sender=message.sender, day=day,
                                      files=len(accepted), size=sum(len(f.content) for f in accepted))
        if refused:
            log.warning("files refused: over a file limit platform=%s event=%s count=%d", message.platform,
                        message.event_id, len(files) - len(accepted))
        return accepted, refused

    async def _over_report_quota(self, session: AsyncSession, message: InboundMessage, now: dt.datetime) -> bool:
        """Whether this person already sent `[limits] reports_per_day` reports in the last 24 hours."""
        recent = await repo.count_recent_reports(session=session, platform=message.platform,
                                                 platform_user_id=message.sender,
                                                 since=now - dt.timedelta(days=1))
        return recent >= self.limits.reports_per_day

    def _draft_timers(self, state: State, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
        """An unfinished report gets one reminder after a quiet while, and expires after some days."""
        if state.draft is None or state.step == "idle":
            return None, None
        reminder = None if state.draft.reminded else now + dt.timedelta(minutes=self.followup.draft_reminder_minutes)
        return reminder, now + dt.timedelta(days=self.followup.draft_days)

    async def _submit(self, session: AsyncSession, message: InboundMessage, conversation_id: int,
                      effect: SubmitReport, language: str, now: dt.datetime) -> tuple[str, bool]:
        draft = effect.draft
        reporter_id = await repo.upsert_reporter(
            session=session, platform=message.platform, platform_user_id=message.sender,
            display_name=message.sender_name, conversation_id=conversation_id, now=now,
        )
        kinds = list(draft.kinds or [])
        occurred_at = dt.datetime.fromisoformat(draft.occurred_at) if draft.occurred_at else now
        answers = draft.to_dict()
        answers.pop("story", None)
        urgent = is_urgent(kinds)
        new = repo.NewCase(
            story=draft.story, kinds=kinds, occurred_at=occurred_at, place=draft.place, urgent=urgent,
            contact_wanted=draft.contact, aftercare=draft.aftercare, police_came=draft.police_came,
            police_report_wanted=draft.police_report, language=language, answers=answers,
            anonymous=draft.anonymous, claim_due_at=self.casework.claim_interval_end(now, urgent),
        )
        case = await repo.create_case(session=session, new=new, reporter_id=reporter_id,
                                      conversation_id=conversation_id, now=now)
        await self.casework.schedule_new_case(session, case, now)
        linked = await repo.link_draft_attachments(session=session, conversation_id=conversation_id,
                                                   draft_id=draft.draft_id, case_id=case.id) \
            if draft.attachments else 0
        payload = payload_for_case(case, link=self.case_link(case.reference), evidence=linked > 0)
        for platform, destination in self.coordinator_targets():
            await repo.enqueue_message(session=session, kind="case_notification", platform=platform,
                                       destination=destination, payload=payload, now=now, case_id=case.id)
        log.info("case created reference=%s kinds=%s urgent=%s", case.reference, ",".join(kinds), case.urgent)
        return case.reference, not self.delivery_healthy()

    async def _add_evidence(self, session: AsyncSession, reference: str, files: Sequence[InboundAttachment],
                            now: dt.datetime) -> bool:
        case = await repo.get_case(session=session, reference=reference)
        if case is None or not files:
            return False
        for f in files:
            await repo.add_attachment(session=session, filename=f.filename, media_type=f.media_type,
                                      content=f.content, now=now, case_id=case.id)
        await repo.add_case_event(session=session, case=case, kind="evidence_added", actor="reporter",
                                  data={"count": len(files)}, now=now)
        await self.casework.post_to_thread(session, case.id, {"event": "evidence_added", "reference": case.reference,
                                                              "count": len(files)}, now)
        return True

    async def _relay_to_coordinator(self, session: AsyncSession, message: InboundMessage,
                                    effect: RelayToCoordinator, now: dt.datetime) -> bool:
        case = await repo.get_case(session=session, reference=effect.reference)
        reporter = await repo.get_reporter(session=session, reporter_id=case.reporter_id) if case else None
        if case is None or reporter is None or (reporter.platform, reporter.platform_user_id) != (
                message.platform, message.sender):
            log.warning("relay refused: not the reporter of the case event=%s", message.event_id)
            return False
        await repo.add_case_event(session=session, case=case, kind="reporter_message", actor="reporter",
                                  data={"text": effect.text}, now=now)
        await self.casework.post_to_thread(session, case.id, {"event": "reporter_message",
                                                              "reference": case.reference, "text": effect.text}, now)
        return True

    async def handle_coordinator(self, message: CoordinatorMessage) -> list[Reply]:
        """A message in the coordinator room/channel: `login` anywhere, and `claim` or `reply <text>`
        in a case thread; returns the answers for the room or thread."""
        login = is_login_command(message.text)
        command = None if login else parse_coordinator_command(message.text)
        if not login and (command is None or not message.thread_root):
            return []  # coordinators talking among themselves
        language = self.context.default_language
        allowed_now = self.throttle.admit((message.platform, message.sender))
        if allowed_now is not True:
            log.warning("coordinator command refused: over the rate limit platform=%s", message.platform)
            return [Reply(dialogs.translator(language)("limits.slow_down"))] if allowed_now is None else []
        message = replace(message, sender_name=clean_name(message.sender_name) or None)
        who = Coordinator(f"{message.platform}:{message.sender}", message.sender_name or message.sender)
        # Asked of the platform before the transaction: it may take seconds, and the transaction
        # holds the database's write lock.
        allowed = True if not login or message.is_coordinator else \
            await self.coordinator_allowed(message.platform, message.sender)
        address = await self._direct_chat_for(message) if login and allowed else None
        now = self.clock()
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                async with transaction(self.sessions) as session:
                    await repo.mark_event_handled(session=session, platform=message.platform,
                                                  event_id=message.event_id, now=now)
                    if login:
                        answer = await self._login_from_room(session, message, who, allowed, now, address)
                    else:
                        answer = await self._thread_command(session, message, command, who, now)
        except IntegrityError as error:
            if _is_duplicate_event(error):
                return []
            reference = secrets.token_hex(3).upper()
            log.error("coordinator command not saved error=%s event=%s cause=IntegrityError", reference,
                      message.event_id)
            return list(dialogs.not_saved(language, reference))
        except DATABASE_ERRORS as error:
            reference = secrets.token_hex(3).upper()
            log.error("coordinator command not saved error=%s event=%s cause=%s", reference, message.event_id,
                      type(error).__name__)
            return list(dialogs.not_saved(language, reference))
        log.info("coordinator command=%s platform=%s event=%s", "login" if login else command.name,
                 message.platform, message.event_id)
        if answer is not None and self.on_outbox:
            self.on_outbox()
        return [answer] if answer is not None else []

    async def _thread_command(self, session: AsyncSession, message: CoordinatorMessage, command,
                              who: Coordinator, now: dt.datetime) -> Reply | None:
        language = self.context.default_language
        case = await repo.get_case_by_thread(session=session, platform=message.platform,
                                             destination=message.destination, root_id=message.thread_root)
        if case is None:
            return None
        case = await repo.lock_case(session=session, case=case)
        if not message.is_coordinator and f"{message.platform}:{message.sender}" not in self.followup.coordinators:
            log.warning("coordinator command refused: not a member platform=%s event=%s", message.platform,
                        message.event_id)
            return thread_reply(language, "not_allowed")
        if command.name == "help":
            return thread_reply(language, "help")
        try:
            if command.name == "claim":
                await self.casework.take(session, case, who, now, via=(message.platform, message.destination))
                await repo.add_audit(session=session, actor=who.identity, action="take", now=now,
                                     case_reference=case.reference, detail={"via": message.platform})
                return thread_reply(language, "claimed", reference=case.reference, name=who.name)
            if not command.text:
                return thread_reply(language, "reply_empty")
            await self.casework.message_reporter(session, case, who, command.text, now,
                                                 via=(message.platform, message.destination))
            await repo.add_audit(session=session, actor=who.identity, action="message", now=now,
                                 case_reference=case.reference, detail={"via": message.platform})
            return thread_reply(language, "relayed", reference=case.reference)
        except CaseError as error:
            if error.code in ("already_taken", "already_yours"):
                return thread_reply(language, "already_claimed", reference=case.reference,
                                    name=case.assigned_to or who.name)
            return Reply(dialogs.translator(language)(f"case.error_{error.code}", **error.values))

    async def coordinator_allowed(self, platform: str, user: str) -> bool | None:
        """True for the configured extra coordinators and for whom the platform says is one;
        None when the platform cannot tell right now."""
        if f"{platform}:{user}" in self.followup.coordinators:
            return True
        if self._is_coordinator is None:
            return False
        try:
            async with asyncio.timeout(COORDINATOR_CHECK_TIMEOUT_S):
                return await self._is_coordinator(platform, user)
        except Exception as error:  # a platform that cannot tell right now: no link rather than a crash
            # The error's text may hold the user's ID (a URL): its type only.
            log.warning("coordinator check failed on %s: %s", platform, type(error).__name__)
            return None

    async def _login(self, message: InboundMessage) -> list[Reply]:
        """`login` in a direct chat: a single-use link to the case pages, for coordinators only."""
        t = dialogs.translator(self.context.default_language)
        allowed = await self.coordinator_allowed(message.platform, message.sender)
        if allowed is None:
            return [Reply(t("login.check_failed"))]
        if not allowed:
            log.info("login refused: not a coordinator platform=%s", message.platform)
            return [Reply(t("login.not_coordinator"))]
        now = self.clock()
        who = Coordinator(f"{message.platform}:{message.sender}", message.sender_name or message.sender)
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                async with transaction(self.sessions) as session:
                    await repo.mark_event_handled(session=session, platform=message.platform,
                                                  event_id=message.event_id, now=now)
                    link = await self.casework.issue_login_link(session, who, self.login_link_minutes, now)
                    await repo.add_audit(session=session, actor=who.identity, action="login_link", now=now,
                                         detail={"via": message.platform})
        except IntegrityError as error:
            if _is_duplicate_event(error):
                return []
            raise
        except DATABASE_ERRORS as error:
            reference = secrets.token_hex(3).upper()
            log.error("login link not saved error=%s cause=%s", reference, type(error).__name__)
            return list(dialogs.not_saved(self.context.default_language, reference))
        log.info("login link issued platform=%s", message.platform)
        return [login_reply(self.context.default_language, link, self.login_link_minutes)]

    async def _login_from_room(self, session: AsyncSession, message: CoordinatorMessage, who: Coordinator,
                               allowed: bool | None, now: dt.datetime, address: dict | None) -> Reply:
        """`login` in the coordinator room: the link goes to the coordinator's direct chat, never the room.

        `address`: the direct chat the adapter opened, when the coordinator had none with the bot."""
        t = dialogs.translator(self.context.default_language)
        if not allowed:
            return Reply(t("login.check_failed" if allowed is None else "login.not_coordinator"))
        if address is None:
            conversation = await repo.find_conversation(session=session, platform=message.platform,
                                                        sender=message.sender)
            address = address_of(conversation) if conversation is not None else None
        if not address:
            return Reply(t("login.need_direct_chat"))
        link = await self.casework.issue_login_link(session, who, self.login_link_minutes, now)
        await repo.enqueue_message(
            session=session, kind="reporter_message", platform=message.platform, destination=None, now=now,
            payload={"address": address, "secret": True,
                     "replies": [payload_of(login_reply(self.context.default_language, link,
                                                         self.login_link_minutes))]},
        )
        await repo.add_audit(session=session, actor=who.identity, action="login_link", now=now,
                             detail={"via": message.platform})
        return Reply(t("login.sent_to_direct_chat"))

    async def _direct_chat_for(self, message: CoordinatorMessage) -> dict | None:
        """The address of a direct chat with the sender of a room message: None when they already
        have one with the bot (it is used), or when the platform could not open one."""
        async with self.sessions() as session:
            if await repo.find_conversation(session=session, platform=message.platform, sender=message.sender):
                return None
        if self._open_direct_chat is None or not message.address:
            return None
        try:
            async with asyncio.timeout(COORDINATOR_CHECK_TIMEOUT_S * 2):
                return await self._open_direct_chat(message.platform, message.address)
        except Exception as error:  # noqa: BLE001 - answered "write me privately" instead
            log.warning("could not open a direct chat on %s: %s", message.platform, type(error).__name__)
            return None

    async def redeem_claim_code(self, platform: str, code: str) -> bool | None:
        """Spend a claim code of `platform` (see `meldbot teams claim-code`); None when the database
        cannot tell now. Every attempt is audited, never with the code."""
        digest = claim_digest(code)
        now = self.clock()
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                async with transaction(self.sessions) as session:
                    used = bool(code) and await repo.use_claim_code(session=session, platform=platform,
                                                                    digest=digest, now=now)
                    await repo.add_audit(session=session, actor=f"{platform}:channel",
                                         action="channel_claimed" if used else "channel_claim_refused", now=now)
        except DATABASE_ERRORS as error:
            log.error("claim code not checked: database unavailable (%s)", type(error).__name__)
            return None
        return used

    async def defer_replies(self, platform: str, address: dict, replies: Sequence[Reply]) -> None:
        """Replies an adapter could not send right now: the outbox delivers them when it can."""
        now = self.clock()
        async with transaction(self.sessions) as session:
            payload = {"address": address, "replies": [payload_of(r) for r in replies]}
            if any(r.secret for r in replies):
                payload["secret"] = True
            await repo.enqueue_message(session=session, kind="reporter_message", platform=platform, destination=None,
                                       payload=payload, now=now)
        if self.on_outbox:
            self.on_outbox()

    def case_link(self, reference: str) -> str:
        """The protected case page of a case."""
        return self.casework.case_link(reference)


@dataclass
class _Pending:
    """A turn waiting for (or in) a shared transaction."""

    message: InboundMessage
    future: asyncio.Future
    deadline: float
    started: bool = False


def _retrieve(future: asyncio.Future) -> None:
    # A turn whose caller went away still ends; its error must not be reported as never retrieved.
    if not future.cancelled():
        future.exception()


def _turn_specific(error: BaseException) -> bool:
    """Whether one turn can have caused this error (a bug, a constraint), so that the others of its
    batch should be tried without it; not for a database that is down, locked or slow."""
    if isinstance(error, (IntegrityError, DataError)):
        return True
    return not isinstance(error, (*DATABASE_ERRORS, TimeoutError, _TurnFailed))


def _settle(future: asyncio.Future, *, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _TurnFailed(Exception):
    """The database failed during a turn; carries the conversation's language for the answer."""

    def __init__(self, language: str):
        super().__init__(language)
        self.language = language


def _is_duplicate_event(error: IntegrityError) -> bool:
    """True when the unique constraint on handled event IDs fired (a redelivered event)."""
    return "handled_events" in str(error.orig)


#: How long a code from `meldbot teams claim-code` can be used.
CLAIM_CODE_VALIDITY = dt.timedelta(minutes=30)


def new_claim_code() -> str:
    """A single-use claim code such as `K7QM-4XPT-9HRC` (no look-alike characters; 30^12 ≈ 5·10^17)."""
    chars = "".join(secrets.choice(repo.REFERENCE_ALPHABET) for _ in range(12))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def claim_digest(code: str) -> str:
    """What the database keeps of a claim code: a digest of its letters, however it was typed."""
    letters = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(f"claim:{letters}".encode()).hexdigest()


def login_reply(language: str, link: str, minutes: int) -> Reply:
    """The message holding a single-use login link."""
    t = dialogs.translator(language)
    return Reply(t("login.link", link=link, minutes=minutes), title=t("login.title"), secret=True)


class Throttle:
    """At most `per_minute` messages per sender in any 60 seconds (a sliding window, per process).

    `admit` answers True (go on), None (over the limit: answer once "slow down") or False (over
    the limit and already told: stay silent until the window has room again)."""

    WINDOW_S = 60.0
    #: Senders remembered at most; the oldest quiet ones are forgotten first.
    MAX_SENDERS = 50_000

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[tuple[str, str], collections.deque] = {}
        self._told: dict[tuple[str, str], float] = {}

    def admit(self, sender: tuple[str, str]) -> bool | None:
        now = self.clock()
        seen = self._seen.get(sender)
        if seen is None:
            if len(self._seen) >= self.MAX_SENDERS:
                self._forget(now)
            seen = self._seen[sender] = collections.deque()
        while seen and now - seen[0] >= self.WINDOW_S:
            seen.popleft()
        if len(seen) < self.per_minute:
            seen.append(now)
            self._told.pop(sender, None)
            return True
        if sender in self._told:
            return False
        self._told[sender] = now
        return None

    def _forget(self, now: float) -> None:
        for key in [k for k, q in self._seen.items() if not q or now - q[-1] >= self.WINDOW_S]:
            self._seen.pop(key, None)
            self._told.pop(key, None)
        while len(self._seen) >= self.MAX_SENDERS:
            key = next(iter(self._seen))
            self._seen.pop(key)
            self._told.pop(key, None)


def _cleaned(message: InboundMessage) -> InboundMessage:
    """File names and display names cleaned like message text (they reach coordinators and pages)."""
    attachments = tuple(replace(f, filename=clean_name(f.filename) or "bestand") for f in message.attachments)
    return replace(message, attachments=attachments, sender_name=clean_name(message.sender_name) or None)


def _accepted_files(files: Sequence[InboundAttachment]) -> tuple[list[InboundAttachment], str]:
    accepted = [f for f in files if 0 < len(f.content) <= repo.MAX_INLINE_ATTACHMENT]
    refused = ", ".join(f.filename for f in files if len(f.content) > repo.MAX_INLINE_ATTACHMENT)
    return accepted, refused


def _draft_for_files(*, state_after: State, effects: Sequence[object]) -> str | None:
    for effect in effects:
        if isinstance(effect, SubmitReport):
            return effect.draft.draft_id
    return state_after.draft.draft_id if state_after.draft else None

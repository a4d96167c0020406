"""Reporter turns: the dialogue step of each message and its effects (submit a report, add
evidence, relay to the coordinator, list or discard reports), all in the caller's ONE transaction."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from typing import Callable, Sequence

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import dialogs
from dialogs import (
    AddEvidence,
    AttachmentInfo,
    Context,
    DiscardDraft,
    ListMyReports,
    RelayToCoordinator,
    Reply,
    ShowMyData,
    State,
    SubmitReport,
    UserInput,
    WithdrawReport,
)
from dialogs.categories import is_urgent
from dialogs.text import clean_name
from storage import repo, transaction

from bot.adapters.contract import InboundAttachment, InboundMessage
from bot.config import FollowupSettings
from bot.core import reporter_rights
from bot.core.casework import CaseWork
from bot.core.clock import Clock
from bot.core.errors import DATABASE_ERRORS, TurnFailed
from bot.core.limits import Quotas
from bot.core.metrics import Metrics
from bot.core.payloads import ThreadLine, payload_of, reply_of

log = logging.getLogger(__name__)

#: How long a report's confirmation is given again to its message redelivered: Synapse drops a resend
#: under the same transaction ID for about half an hour, so within this window it is never shown twice.
REPLAY_WINDOW = dt.timedelta(minutes=20)

#: What one turn gives back: the replies for the sender and whether the outbox got work.
TurnResult = tuple[list[Reply], bool]


class ReporterTurns:
    """Runs reporters' turns; several turns of different conversations share one transaction."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        context: Context,
        casework: CaseWork,
        quotas: Quotas,
        followup: FollowupSettings,
        coordinator_targets: Callable[[], Sequence[tuple[str, str | None]]],
        delivery_healthy: Callable[[], bool],
        clock: Clock,
        metrics: Metrics | None = None,
        replay_platforms: frozenset[str] = frozenset(),
    ):
        self.sessions = sessions
        #: Where a report's confirmation is kept for a redelivered message (see `Engine._replay`).
        self.replay_platforms = replay_platforms
        self.context = context
        self.casework = casework
        self.quotas = quotas
        self.followup = followup
        self.coordinator_targets = coordinator_targets
        self.delivery_healthy = delivery_healthy
        self.clock = clock
        self.metrics = metrics or Metrics()

    async def run(self, messages: list[InboundMessage]) -> list[TurnResult | None]:
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
                results: dict[int, TurnResult] = {}
                rows = []
                for m in fresh.values():
                    conversation = conversations[(m.platform, m.conversation, m.sender)]
                    replies, queued, row = await self._apply(session, m, conversation, now)
                    results[id(m)] = (replies, queued)
                    rows.append(row)
                await repo.save_conversation_states(session=session, rows=rows,
                                                    conversations={c.id: c for c in conversations.values()})
            self.metrics.reports_created(session.info.get("reports_created", ()))  # counted once committed
            return [results.get(id(m)) for m in messages]
        except (IntegrityError, DataError):
            raise  # one turn's data: the batch is retried turn by turn
        except DATABASE_ERRORS as error:
            raise TurnFailed(language) from error

    async def _apply(self, session: AsyncSession, message: InboundMessage, conversation,
                     now: dt.datetime) -> tuple[list[Reply], bool, dict]:
        """One turn inside a batch: the dialogue step and its effects; returns the replies, whether
        the outbox got work, and the conversation's new column values."""
        state = State.from_dict(conversation.state, self.context.default_language)
        files, too_large = _accepted_files(message.attachments)
        files, over_quota = await self.quotas.within_file_quota(session, message, state, files, now)
        user_input = UserInput(
            text=message.text, now=now,
            attachments=tuple(AttachmentInfo(f.filename, f.media_type, len(f.content)) for f in files),
            form=message.form,
        )
        turn = dialogs.step(state, user_input, self.context)
        submitting = any(isinstance(e, SubmitReport) for e in turn.effects)
        if submitting and await self.quotas.over_report_quota(session, message, now):
            # Kept as it was before this turn (at its summary): it can be sent once the day is over.
            log.warning("report not sent: over the daily report limit platform=%s event=%s", message.platform,
                        message.event_id)
            turn = dialogs.Turn(replies=(dialogs.limit_notice(state.language, "reports_per_day",
                                                              limit=self.quotas.limits.reports_per_day),),
                                state=state, effects=())
        replies = [dialogs.files_too_large(turn.state.language, too_large)] if too_large else []
        replies += [dialogs.limit_notice(turn.state.language, limit_name, files=names, limit=limit)
                    for limit_name, names, limit in over_quota]
        replies += list(turn.replies)
        new_state = turn.state
        queued = submitted = False
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
                queued = submitted = True
            elif isinstance(effect, ListMyReports):
                cases = await repo.list_cases_for_reporter(session=session, platform=message.platform,
                                                           platform_user_id=message.sender)
                listing = [{"reference": c.reference, "status": c.status, "created_at": c.created_at,
                            "kinds": c.kind_codes} for c in cases]
                _before_question(replies, list(dialogs.my_reports(new_state.language, listing)), new_state)
            elif isinstance(effect, ShowMyData):
                _before_question(replies, await reporter_rights.my_data(session, message, new_state, self.context),
                                 new_state)
            elif isinstance(effect, WithdrawReport):
                answer, withdrawn = await reporter_rights.withdraw(
                    session, self.casework, message, effect.reference, new_state.language,
                    self.context.withdrawn_days, now)
                _before_question(replies, [answer], new_state)
                queued |= withdrawn
                if withdrawn and new_state.relay_reference == effect.reference:
                    new_state = replace(new_state, relay_reference=None, relay_until=None)
            elif isinstance(effect, AddEvidence):
                queued |= await self._add_evidence(session, effect.reference, files, now)
            elif isinstance(effect, RelayToCoordinator):
                relayed = await self._relay_to_coordinator(session, message, effect, now)
                queued |= relayed
                if not relayed:
                    # The case is gone (erased or purged) or not theirs: say so instead of "passed on",
                    # and their next message is no answer to it any more.
                    replies[-1:] = [dialogs.relay_failed(new_state.language, effect.reference)]
                    new_state = replace(new_state, relay_reference=None, relay_until=None)
            elif isinstance(effect, DiscardDraft):
                await repo.delete_draft_attachments(session=session, conversation_id=conversation.id,
                                                    draft_id=effect.draft_id)
        reminder_at, expires_at = self._draft_timers(new_state, now)
        # The confirmation of a report is kept until the next turn: a message redelivered after a
        # crash between this commit and its answer gets it again (never the story: only replies).
        row = {"id": conversation.id, "state": new_state.to_dict(), "language": new_state.language,
               "updated_at": now, "address": message.address or conversation.address,
               "draft_reminder_at": reminder_at, "draft_expires_at": expires_at,
               "last_answer": kept_answer(message, replies, now)
               if submitted and message.platform in self.replay_platforms else None}
        log.info("turn platform=%s event=%s step=%s->%s effects=%s", message.platform, message.event_id,
                 state.step, new_state.step, ",".join(type(e).__name__ for e in turn.effects) or "-")
        return replies, queued, row

    def _draft_timers(self, state: State, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
        """An unfinished report gets one reminder after a quiet while, and expires after some days."""
        if state.draft is None or state.step == "idle":
            return None, None
        reminder = None if state.draft.reminded else now + dt.timedelta(minutes=self.followup.draft_reminder_minutes)
        return reminder, now + dt.timedelta(days=self.followup.draft_days)

    async def _submit(self, session: AsyncSession, message: InboundMessage, conversation_id: int,
                      effect: SubmitReport, language: str, now: dt.datetime) -> tuple[str, bool]:
        draft = effect.draft
        # An anonymous report leaves no reporter row: only a sealed link to the conversation.
        reporter_id = None if draft.anonymous else await repo.upsert_reporter(
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
                                      conversation_id=conversation_id, now=now,
                                      reporter=(message.platform, message.sender))
        await self.casework.schedule_new_case(session, case, now)
        linked = await repo.link_draft_attachments(session=session, conversation_id=conversation_id,
                                                   draft_id=draft.draft_id, case_id=case.id) \
            if draft.attachments else 0
        await self.casework.announce_new_case(session, case, now, evidence=linked > 0,
                                              targets=self.coordinator_targets())
        session.info.setdefault("reports_created", []).append((message.platform, kinds))
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
        await self.casework.post_to_thread(session, case.id, ThreadLine("evidence_added", case.reference,
                                                                        count=len(files)), now)
        return True

    async def _relay_to_coordinator(self, session: AsyncSession, message: InboundMessage,
                                    effect: RelayToCoordinator, now: dt.datetime) -> bool:
        case = await repo.get_case(session=session, reference=effect.reference)
        if case is None or not await repo.is_reporter_of(session=session, case=case, platform=message.platform,
                                                         platform_user_id=message.sender):
            log.warning("relay refused: not the reporter of the case event=%s", message.event_id)
            return False
        await repo.add_case_event(session=session, case=case, kind="reporter_message", actor="reporter",
                                  data={"text": effect.text}, now=now)
        await self.casework.post_to_thread(session, case.id, ThreadLine("reporter_message", case.reference,
                                                                        text=effect.text), now)
        return True


def cleaned(message: InboundMessage) -> InboundMessage:
    """File names and display names cleaned like message text (they reach coordinators and pages)."""
    attachments = tuple(replace(f, filename=clean_name(f.filename) or "bestand") for f in message.attachments)
    return replace(message, attachments=attachments, sender_name=clean_name(message.sender_name) or None)


def _accepted_files(files: Sequence[InboundAttachment]) -> tuple[list[InboundAttachment], str]:
    accepted = [f for f in files if 0 < len(f.content) <= repo.MAX_INLINE_ATTACHMENT]
    refused = ", ".join(f.filename for f in files if len(f.content) > repo.MAX_INLINE_ATTACHMENT)
    return accepted, refused


def _before_question(replies: list[Reply], shown: list[Reply], state: State) -> None:
    """Adds a command's answer to the turn's replies: before the question that is asked again when
    a report is being made, else at the end."""
    if state.step != "idle" and replies:
        replies[-1:-1] = shown
    else:
        replies += shown


def _draft_for_files(*, state_after: State, effects: Sequence[object]) -> str | None:
    for effect in effects:
        if isinstance(effect, SubmitReport):
            return effect.draft.draft_id
    return state_after.draft.draft_id if state_after.draft else None


def kept_answer(message: InboundMessage, replies: Sequence[Reply], now: dt.datetime) -> dict:
    """What a conversation keeps of a turn that submitted a report (`Conversation.last_answer`)."""
    return {"event": message.event_id, "at": now.isoformat(), "replies": [payload_of(r) for r in replies]}


def replayed_answer(conversation, message: InboundMessage, now: dt.datetime) -> list[Reply]:
    """The answer to send again for a redelivered message: the confirmation of the report that message
    submitted, when it is still the conversation's last turn and recent (empty otherwise)."""
    kept = conversation.last_answer if conversation is not None else None
    if not kept or kept.get("event") != message.event_id:
        return []
    if now - dt.datetime.fromisoformat(kept["at"]) > REPLAY_WINDOW:
        return []
    return [reply_of(data) for data in kept.get("replies", ())]


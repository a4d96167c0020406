"""The glue between adapters, the pure dialogue and storage.

One inbound message is one turn: load the conversation, run `dialogs.step`, and write everything
the turn changes (state, case, events, attachments, outbox rows) in ONE transaction. Only after
that commit does the reporter hear "saved".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import weakref
from typing import Callable, Sequence

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import dialogs
from dialogs import (
    AddEvidence,
    RelayToCoordinator,
    AttachmentInfo,
    Context,
    DiscardDraft,
    ListMyReports,
    Option,
    Reply,
    State,
    SubmitReport,
    UserInput,
)
from dialogs.categories import is_urgent
from dialogs.coordinator import claimed_for_reporter, message_for_reporter, parse_coordinator_command, thread_reply
from storage import repo, transaction

from .notifications import case_flags, case_notification_payload
from .platform import CoordinatorMessage, InboundAttachment, InboundMessage

log = logging.getLogger(__name__)

#: Errors that mean "the database could not do it now": the user is told to try again.
DATABASE_ERRORS = (SQLAlchemyError, OSError, ConnectionError, asyncio.TimeoutError)
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
    ):
        self.sessions = sessions
        self.context = context
        self.public_url = public_url.rstrip("/")
        self.coordinator_targets = coordinator_targets
        self.clock = clock
        self.on_outbox = on_outbox
        self.delivery_healthy = delivery_healthy
        self._locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def _lock(self, message: InboundMessage) -> asyncio.Lock:
        key = (message.platform, message.conversation, message.sender)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def handle(self, message: InboundMessage) -> list[Reply]:
        """Run one turn and return the replies for the sender (empty for a duplicate event)."""
        language = self.context.default_language
        error_reference = secrets.token_hex(3).upper()
        try:
            # Turns of one conversation run one after the other (a double click is two turns).
            async with asyncio.timeout(TURN_TIMEOUT_S), self._lock(message):
                replies, queued = await self._turn(message)
        except IntegrityError as error:
            if _is_duplicate_event(error):
                # The event ID was handled before (or is being handled right now): answered once only.
                log.info("duplicate event ignored platform=%s event=%s", message.platform, message.event_id)
                return []
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
        if queued and self.on_outbox:
            self.on_outbox()
        return replies

    async def _turn(self, message: InboundMessage) -> tuple[list[Reply], bool]:
        now = self.clock()
        language = self.context.default_language
        try:
            async with transaction(self.sessions) as session:
                # The unique event ID fails this flush for a redelivered event, before any work.
                await repo.mark_event_handled(session=session, platform=message.platform,
                                              event_id=message.event_id, now=now)
                conversation = await repo.get_or_create_conversation(
                    session=session, platform=message.platform, conversation_key=message.conversation,
                    sender=message.sender, language=language, now=now,
                )
                state = State.from_dict(conversation.state, language)
                language = state.language
                files, too_large = _accepted_files(message.attachments)
                user_input = UserInput(
                    text=message.text, now=now,
                    attachments=tuple(AttachmentInfo(f.filename, f.media_type, len(f.content)) for f in files),
                    form=message.form,
                )
                turn = dialogs.step(state, user_input, self.context)
                replies = [Reply(dialogs.translator(turn.state.language)("evidence.too_large", files=too_large))] \
                    if too_large else []
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
                await repo.save_conversation_state(
                    session=session, conversation=conversation, state=new_state.to_dict(),
                    language=new_state.language, now=now, address=message.address or None,
                )
                log.info("turn platform=%s event=%s step=%s->%s effects=%s", message.platform, message.event_id,
                         state.step, new_state.step, ",".join(type(e).__name__ for e in turn.effects) or "-")
            return replies, queued
        except IntegrityError:
            raise
        except DATABASE_ERRORS as error:
            raise _TurnFailed(language) from error

    async def _submit(self, session: AsyncSession, message: InboundMessage, conversation_id: int,
                      effect: SubmitReport, language: str, now: dt.datetime) -> tuple[str, bool]:
        draft = effect.draft
        reporter = await repo.get_or_create_reporter(
            session=session, platform=message.platform, platform_user_id=message.sender,
            display_name=message.sender_name, conversation_id=conversation_id, now=now,
        )
        kinds = list(draft.kinds or [])
        occurred_at = dt.datetime.fromisoformat(draft.occurred_at) if draft.occurred_at else now
        answers = draft.to_dict()
        answers.pop("story", None)
        new = repo.NewCase(
            story=draft.story, kinds=kinds, occurred_at=occurred_at, place=draft.place, urgent=is_urgent(kinds),
            contact_wanted=draft.contact, aftercare=draft.aftercare, police_came=draft.police_came,
            police_report_wanted=draft.police_report, language=language, answers=answers,
        )
        case = await repo.create_case(session=session, new=new, reporter=reporter,
                                      conversation_id=conversation_id, now=now)
        linked = await repo.link_draft_attachments(session=session, conversation_id=conversation_id,
                                                   draft_id=draft.draft_id, case_id=case.id) \
            if draft.attachments else 0
        flags = case_flags(kinds=kinds, contact=draft.contact, aftercare=draft.aftercare,
                           police_came=draft.police_came, police_report=draft.police_report,
                           injury="injury" in (draft.consequences or []), evidence=linked > 0)
        payload = case_notification_payload(reference=case.reference, kinds=kinds, occurred_at=occurred_at,
                                            place=draft.place, flags=flags, link=self.case_link(case.reference))
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
        await self.post_to_thread(session, case.id, {"event": "evidence_added", "reference": case.reference,
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
        await self.post_to_thread(session, case.id, {"event": "reporter_message", "reference": case.reference,
                                                     "text": effect.text}, now)
        return True

    async def handle_coordinator(self, message: CoordinatorMessage) -> list[Reply]:
        """A message in a case thread: `claim` or `reply <text>`; returns the answers for the thread."""
        command = parse_coordinator_command(message.text)
        if command is None:
            return []  # coordinators talking among themselves
        language = self.context.default_language
        now = self.clock()
        name = message.sender_name or message.sender
        queued = False
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                async with transaction(self.sessions) as session:
                    await repo.mark_event_handled(session=session, platform=message.platform,
                                                  event_id=message.event_id, now=now)
                    case = await repo.get_case_by_thread(session=session, platform=message.platform,
                                                         destination=message.destination,
                                                         root_id=message.thread_root)
                    if case is None:
                        return []
                    if not message.is_coordinator:
                        log.warning("coordinator command refused: not a member platform=%s event=%s",
                                    message.platform, message.event_id)
                        return [thread_reply(language, "not_allowed")]
                    if command.name == "help":
                        return [thread_reply(language, "help")]
                    if command.name == "claim":
                        if not await repo.claim_case(session=session, case=case, name=name, now=now):
                            return [thread_reply(language, "already_claimed", reference=case.reference,
                                                 name=case.assigned_to)]
                        await repo.add_case_event(session=session, case=case, kind="claimed",
                                                  actor=f"coordinator:{message.sender}", data={"name": name},
                                                  now=now)
                        await self._to_reporter(session, case, claimed_for_reporter(case.language, case.reference,
                                                                                    name), now)
                        queued = True
                        answer = thread_reply(language, "claimed", reference=case.reference, name=name)
                    else:
                        if not command.text:
                            return [thread_reply(language, "reply_empty")]
                        await repo.add_case_event(session=session, case=case, kind="coordinator_message",
                                                  actor=f"coordinator:{message.sender}",
                                                  data={"name": name, "text": command.text}, now=now)
                        await self._to_reporter(session, case, message_for_reporter(
                            case.language, case.reference, name, command.text), now, relay=True)
                        queued = True
                        answer = thread_reply(language, "relayed", reference=case.reference)
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
        log.info("coordinator command=%s platform=%s event=%s", command.name, message.platform, message.event_id)
        if queued and self.on_outbox:
            self.on_outbox()
        return [answer]

    async def _to_reporter(self, session: AsyncSession, case, reply: Reply, now: dt.datetime,
                           relay: bool = False) -> None:
        """Queue a message to the reporter in their own chat; with `relay`, their answer comes back."""
        conversation = await repo.get_conversation(session=session, conversation_id=case.conversation_id,
                                                   for_update=relay) if case.conversation_id else None
        if conversation is None:
            log.warning("reporter of %s cannot be reached: no conversation", case.reference)
            return
        await repo.enqueue_message(
            session=session, kind="reporter_message", platform=conversation.platform, destination=None,
            payload={"address": conversation.address or {}, "replies": [reply_payload(reply)]}, now=now,
            case_id=case.id,
        )
        if relay:
            state = dialogs.open_relay(State.from_dict(conversation.state, conversation.language), case.reference,
                                       now)
            await repo.save_conversation_state(session=session, conversation=conversation, state=state.to_dict(),
                                               language=state.language, now=now)

    async def defer_replies(self, platform: str, address: dict, replies: Sequence[Reply]) -> None:
        """Replies an adapter could not send right now: the outbox delivers them when it can."""
        now = self.clock()
        async with transaction(self.sessions) as session:
            await repo.enqueue_message(session=session, kind="reporter_message", platform=platform, destination=None,
                                       payload={"address": address, "replies": [reply_payload(r) for r in replies]},
                                       now=now)
        if self.on_outbox:
            self.on_outbox()

    async def post_to_thread(self, session: AsyncSession, case_id: int, payload: dict, now: dt.datetime) -> None:
        """Queue a line in the case's own thread(s); before the first post exists, where it will be."""
        threads = [(t.platform, t.destination) for t in await repo.list_case_threads(session=session,
                                                                                       case_id=case_id)]
        for platform, destination in threads or list(self.coordinator_targets()):
            await repo.enqueue_message(session=session, kind="case_thread", platform=platform,
                                       destination=destination, payload=payload, now=now, case_id=case_id)

    def case_link(self, reference: str) -> str:
        """The protected case page of a case."""
        return f"{self.public_url}/cases/{reference}"


class _TurnFailed(Exception):
    """The database failed during a turn; carries the conversation's language for the answer."""

    def __init__(self, language: str):
        super().__init__(language)
        self.language = language


def _is_duplicate_event(error: IntegrityError) -> bool:
    """True when the unique constraint on handled event IDs fired (a redelivered event)."""
    return "handled_events" in str(error.orig)


def reply_payload(reply: Reply) -> dict:
    """A reply in the form the outbox stores (plain values)."""
    return {"text": reply.text, "title": reply.title, "hint": reply.hint,
            "options": [[o.number, o.label, o.selected] for o in reply.options]}


def payload_reply(data: dict) -> Reply:
    """The reply an outbox payload holds."""
    return Reply(text=data.get("text", ""), title=data.get("title", ""), hint=data.get("hint", ""),
                 options=tuple(Option(n, label, bool(sel)) for n, label, sel in data.get("options", [])))


def _accepted_files(files: Sequence[InboundAttachment]) -> tuple[list[InboundAttachment], str]:
    accepted = [f for f in files if 0 < len(f.content) <= repo.MAX_INLINE_ATTACHMENT]
    refused = ", ".join(f.filename for f in files if len(f.content) > repo.MAX_INLINE_ATTACHMENT)
    return accepted, refused


def _draft_for_files(*, state_after: State, effects: Sequence[object]) -> str | None:
    for effect in effects:
        if isinstance(effect, SubmitReport):
            return effect.draft.draft_id
    return state_after.draft.draft_id if state_after.draft else None

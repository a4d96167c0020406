"""Case follow-up: every coordinator action, whether taken in a case thread or on the case page.

Each action is one function that changes the case, appends ONE timeline event, posts a line in
the case thread and (where it concerns them) tells the reporter in their own chat, all in the
caller's transaction: the chat command and the web form are the same operation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

import dialogs
from dialogs import Draft, Reply, State
from dialogs.categories import is_urgent
from dialogs.coordinator import MAX_RELAY_CHARS, claimed_for_reporter, message_for_reporter
from dialogs.text import clean
from storage import repo
from storage.models import Case
from storage.repo.facts import MEASURES

from bot.config import FollowupSettings
from bot.core import payloads
from bot.core.notifications import payload_for_case
from bot.core.payloads import ReporterMessage, ThreadLine
from bot.core.worktime import WorkingTime

log = logging.getLogger(__name__)

STATUSES = ("new", "in_progress", "closed")
#: Follow-up steps a coordinator records, in the order they usually happen.
STEPS = ("contact_made", "aftercare_offered", "aftercare_accepted", "aftercare_declined", "police_report_filed",
         "police_notified", "damage_recovery", "aggressor_response")
MAX_NOTE_CHARS = 4000
#: A police report should be filed within this many working days.
POLICE_REPORT_WORKING_DAYS = 2
#: What was learned from a case, at most (free text, sealed with the case).
MAX_LESSON_CHARS = 1000
#: How a report a coordinator records for someone else was made.
RECORDED_HOW = ("phone", "in_person", "other")


@dataclass(frozen=True)
class Coordinator:
    """Someone who follows cases up: `identity` is `platform:user id`, `name` is for display."""

    identity: str
    name: str

    @property
    def actor(self) -> str:
        return f"coordinator:{self.identity}"


@dataclass(frozen=True)
class RecordedReport:
    """A report a coordinator records for someone else (by phone, in person): already checked
    against the answer sets; `recorded_for` is the name of whom it is about."""

    recorded_for: str
    recorded_how: str
    story: str
    kinds: list[str]
    occurred_at: dt.datetime
    place: str | None = None
    department: str | None = None
    perpetrator: str | None = None
    consequences: list[str] = field(default_factory=list)
    police_came: bool = False
    police_report: bool = False
    aftercare: str = "no"
    contact: bool = False


class CaseError(Exception):
    """An action that cannot be done; `code` names the message (`case.error_<code>`)."""

    def __init__(self, code: str, **values: Any):
        super().__init__(code)
        self.code = code
        self.values = values


def evaluation(who: Coordinator, measures: Sequence[str], lesson: str, now: dt.datetime) -> dict[str, Any]:
    """The evaluation of a closed case: the measures taken (codes of `MEASURES`, at least one; `none`
    only on its own) and what was learned (free text, cleaned and cut like a note)."""
    chosen = list(dict.fromkeys(m for m in measures if m))
    if not chosen:
        raise CaseError("measures_required")
    if any(m not in MEASURES for m in chosen):
        raise CaseError("unknown_measure")
    if "none" in chosen and len(chosen) > 1:
        raise CaseError("measures_none_alone")
    return {"measures": [m for m in MEASURES if m in chosen], "lesson": clean(lesson, MAX_LESSON_CHARS).text,
            "by": who.name, "at": now.isoformat()}


def login_digest(token: str) -> str:
    """What the database keeps of a login link or session cookie: never the secret itself."""
    return hashlib.sha256(token.encode()).hexdigest()


class CaseWork:
    """The follow-up operations; stateless apart from its settings."""

    def __init__(
        self,
        *,
        public_url: str,
        coordinator_targets: Callable[[], Sequence[tuple[str, str | None]]],
        timezone: dt.tzinfo,
        followup: FollowupSettings | None = None,
    ):
        self.public_url = public_url.rstrip("/")
        self.coordinator_targets = coordinator_targets
        self.timezone = timezone
        self.settings = followup or FollowupSettings()
        self.working_time = WorkingTime.parse(timezone, self.settings.working_hours, self.settings.working_days,
                                              self.settings.holidays or None)
        #: Called in the transaction of every new case (the statistics' signal check is scheduled so).
        self.new_case_hooks: list[Callable[[AsyncSession, dt.datetime], Awaitable[None]]] = []

    def case_link(self, reference: str) -> str:
        """The protected case page of a case."""
        return f"{self.public_url}/cases/{reference}"

    # -- deadlines --------------------------------------------------------------------------------

    def claim_interval_end(self, start: dt.datetime, urgent: bool) -> dt.datetime:
        """When a case untaken since `start` is due for a reminder (or, after one, for escalation)."""
        if urgent:
            return start + dt.timedelta(minutes=self.settings.urgent_claim_minutes)
        return self.working_time.add_hours(start, self.settings.claim_working_hours)

    def police_report_due(self, case: Case) -> dt.datetime:
        """By when the police report should be filed (2 working days after the report)."""
        return self.working_time.add_days(case.created_at, POLICE_REPORT_WORKING_DAYS)

    def overdue(self, case: Case, now: dt.datetime) -> list[str]:
        """What is late on a case: `claim`, `police_report`, `aftercare` (empty when nothing is)."""
        if case.status == "closed":
            return []
        late = []
        if case.assigned_to_id is None and case.claim_due_at is not None and now > case.claim_due_at:
            late.append("claim")
        steps = case.followup or {}
        if case.police_report_wanted and not ({"police_report_filed", "police_notified"} & set(steps)) \
                and now > self.police_report_due(case):
            late.append("police_report")
        if case.aftercare in ("yes", "later") and not ({"aftercare_offered", "aftercare_accepted",
                                                         "aftercare_declined"} & set(steps)) \
                and now > case.created_at + dt.timedelta(hours=self.settings.aftercare_checkin_hours):
            late.append("aftercare")
        return late

    async def schedule_new_case(self, session: AsyncSession, case: Case, now: dt.datetime) -> None:
        """The timers of a new case: the claim reminder and the aftercare check-in or re-offer."""
        if case.claim_due_at is None:
            case.claim_due_at = self.claim_interval_end(now, case.urgent)
        await repo.schedule_timer(session=session, key=f"claim_reminder:{case.id}", kind="claim_reminder",
                                  case_id=case.id, due_at=case.claim_due_at, now=now)
        if case.aftercare == "no":
            await repo.schedule_timer(session=session, key=f"aftercare_reoffer:{case.id}", kind="aftercare_reoffer",
                                      case_id=case.id, now=now,
                                      due_at=now + dt.timedelta(days=self.settings.aftercare_reoffer_days))
        else:
            await repo.schedule_timer(session=session, key=f"aftercare_checkin:{case.id}", kind="aftercare_checkin",
                                      case_id=case.id, now=now,
                                      due_at=now + dt.timedelta(hours=self.settings.aftercare_checkin_hours))

    async def announce_new_case(self, session: AsyncSession, case: Case, now: dt.datetime, *, evidence: bool,
                                targets: Sequence[tuple[str, str | None]] | None = None) -> None:
        """Queue the coordinator notification of a new case (codes and the link only) for every
        coordinator room or channel (`targets`, by default this CaseWork's)."""
        notification = payload_for_case(case, link=self.case_link(case.reference), evidence=evidence)
        for platform, destination in (self.coordinator_targets() if targets is None else targets):
            await payloads.enqueue(session, notification, platform=platform, destination=destination, now=now,
                                   case_id=case.id)
        for hook in self.new_case_hooks:
            await hook(session, now)

    async def record_report(self, session: AsyncSession, who: Coordinator, report: RecordedReport, language: str,
                            now: dt.datetime) -> Case:
        """Create the case of a report `who` took down for someone else, like a chat report (sealed,
        timers, the coordinators' notification) but with no reporter row and no conversation: there
        is nobody to message in the chat."""
        draft = Draft(
            draft_id=secrets.token_hex(8), story=report.story, kinds=list(report.kinds),
            occurred_at=report.occurred_at.isoformat(), occurred_just_now=False, place=report.place,
            perpetrator=report.perpetrator, consequences=list(report.consequences), contact=report.contact,
            aftercare=report.aftercare, police_came=report.police_came, police_report=report.police_report,
        )
        # The same answers a chat report has, plus who took it down, for whom and how.
        answers = draft.to_dict()
        answers.pop("story", None)
        answers.update(department=report.department, recorded_by=who.name, recorded_by_id=who.identity,
                       recorded_for=report.recorded_for, recorded_how=report.recorded_how)
        urgent = is_urgent(report.kinds)
        new = repo.NewCase(
            story=report.story, kinds=list(report.kinds), occurred_at=report.occurred_at, place=report.place,
            urgent=urgent, contact_wanted=report.contact, aftercare=report.aftercare,
            police_came=report.police_came, police_report_wanted=report.police_report, language=language,
            answers=answers, claim_due_at=self.claim_interval_end(now, urgent),
        )
        case = await repo.create_case(session=session, new=new, reporter_id=None, conversation_id=None, now=now)
        session.info.setdefault("reports_created", []).append(("web", list(report.kinds)))
        await repo.add_case_event(session=session, case=case, kind="recorded", actor=who.actor,
                                  data={"name": who.name, "how": report.recorded_how}, now=now)
        await self.schedule_new_case(session, case, now)
        await self.announce_new_case(session, case, now, evidence=False)
        log.info("case recorded reference=%s kinds=%s urgent=%s", case.reference, ",".join(report.kinds),
                 case.urgent)
        return case

    # -- actions ----------------------------------------------------------------------------------

    async def take(self, session: AsyncSession, case: Case, who: Coordinator, now: dt.datetime,
                   expected: str | None = None, take_over: bool = False, via: tuple[str, str] | None = None) -> None:
        """Assign the case to `who`. Without `take_over` only an untaken case; with it, only when the
        case is still assigned to `expected` (what the coordinator saw), so two people never both win."""
        if case.status == "closed":
            raise CaseError("closed", reference=case.reference)
        if case.assigned_to_id == who.identity:
            raise CaseError("already_yours", reference=case.reference)
        if not await repo.assign_case(session=session, case=case, identity=who.identity, name=who.name, now=now,
                                      expected=expected if take_over else None):
            raise CaseError("already_taken", reference=case.reference, name=case.assigned_to or "?")
        await repo.add_case_event(session=session, case=case, kind="claimed", actor=who.actor,
                                  data={"name": who.name}, now=now)
        await self.post_to_thread(session, case.id, ThreadLine("claimed", case.reference, name=who.name), now,
                                  skip=via)
        await self.to_reporter(session, case, claimed_for_reporter(case.language, case.reference, who.name), now)

    async def set_status(self, session: AsyncSession, case: Case, who: Coordinator, status: str,
                         summary: str, now: dt.datetime, measures: Sequence[str] = (), lesson: str = "") -> None:
        """Move the case to `status`; closing needs a summary, which the reporter receives, and the
        evaluation (`measures`, `lesson`; see `evaluation`), which stays with the coordinators."""
        if status not in STATUSES:
            raise CaseError("unknown_status")
        if status == case.status:
            raise CaseError("same_status")
        summary = clean(summary, MAX_NOTE_CHARS).text
        if status == "closed" and not summary:
            raise CaseError("summary_required")
        evaluated = evaluation(who, measures, lesson, now) if status == "closed" else None
        previous = case.status
        case.status = status
        case.closed_at = now if status == "closed" else None
        case.closing_summary = summary if status == "closed" else case.closing_summary
        if evaluated is not None:
            # Before the event: the event refreshes the statistics fact, which counts the measures.
            case.evaluation = evaluated
        await repo.add_case_event(session=session, case=case, kind="status", actor=who.actor,
                                  data={"name": who.name, "from": previous, "to": status}, now=now)
        await self.post_to_thread(session, case.id, ThreadLine(f"status_{status}", case.reference, name=who.name),
                                  now)
        if status == "closed":
            await self.to_reporter(session, case, dialogs.case_closed(case.language, case.reference, summary), now,
                                   relay=True)
        else:
            await self.to_reporter(session, case, dialogs.status_changed(case.language, case.reference, status), now)

    async def evaluate(self, session: AsyncSession, case: Case, who: Coordinator, measures: Sequence[str],
                       lesson: str, now: dt.datetime) -> None:
        """Record or change the evaluation of a closed case. The thread hears that it was recorded,
        never what it says; the reporter is not told (it is the organisation's own learning)."""
        if case.status != "closed":
            raise CaseError("not_closed", reference=case.reference)
        evaluated = evaluation(who, measures, lesson, now)
        case.evaluation = evaluated
        await repo.add_case_event(session=session, case=case, kind="evaluated", actor=who.actor,
                                  data={"name": who.name, "measures": evaluated["measures"]}, now=now)
        await self.post_to_thread(session, case.id, ThreadLine("evaluated", case.reference, name=who.name), now)

    async def record_step(self, session: AsyncSession, case: Case, who: Coordinator, step: str,
                          on: dt.date | None, now: dt.datetime) -> None:
        """Record a follow-up step (contact, aftercare, police report, damage, response to the aggressor)."""
        if step not in STEPS:
            raise CaseError("unknown_step")
        today = now.astimezone(self.timezone).date()
        on = on or today
        if on > today:
            raise CaseError("future_date")
        followup = dict(case.followup or {})
        followup[step] = {"at": now.isoformat(), "date": on.isoformat(), "by": who.name}
        case.followup = followup
        await repo.add_case_event(session=session, case=case, kind="step", actor=who.actor,
                                  data={"name": who.name, "step": step, "date": on.isoformat()}, now=now)
        await self.post_to_thread(session, case.id, ThreadLine(f"step_{step}", case.reference, name=who.name,
                                                               date=on), now)
        await self.to_reporter(session, case, dialogs.step_recorded(case.language, case.reference, step, on), now)
        if step == "aftercare_declined":
            # Offered again two weeks after THIS decline (an earlier pending offer is replaced).
            await repo.cancel_timers(session=session, case_id=case.id, kind="aftercare_reoffer", now=now)
            await repo.schedule_timer(session=session, key=f"aftercare_reoffer:{case.id}:{now.isoformat()}",
                                      kind="aftercare_reoffer", case_id=case.id, now=now,
                                      due_at=now + dt.timedelta(days=self.settings.aftercare_reoffer_days))

    async def add_note(self, session: AsyncSession, case: Case, who: Coordinator, text: str,
                       now: dt.datetime) -> None:
        """An internal note: its text is in the timeline only, never shown to the reporter nor posted
        in the chat (the thread is told a note was added)."""
        text = clean(text, MAX_NOTE_CHARS).text
        if not text:
            raise CaseError("empty_note")
        await repo.add_case_event(session=session, case=case, kind="note", actor=who.actor,
                                  data={"name": who.name, "text": text}, now=now)
        # The thread hears that there is a note, never what it says.
        await self.post_to_thread(session, case.id, ThreadLine("note_added", case.reference, name=who.name), now)

    async def message_reporter(self, session: AsyncSession, case: Case, who: Coordinator, text: str,
                               now: dt.datetime, via: tuple[str, str] | None = None) -> None:
        """A message to the reporter, in their chat; their answer comes back to the case.

        `via`: the thread (platform, room/channel) the command came from, which already has the answer."""
        text = clean(text, MAX_RELAY_CHARS).text
        if not text:
            raise CaseError("empty_message")
        if case.conversation_id is None and case.contact is None:
            raise CaseError("unreachable")
        await repo.add_case_event(session=session, case=case, kind="coordinator_message", actor=who.actor,
                                  data={"name": who.name, "text": text}, now=now)
        await self.to_reporter(session, case, message_for_reporter(case.language, case.reference, who.name, text),
                               now, relay=True)
        await self.post_to_thread(session, case.id, ThreadLine("coordinator_message", case.reference, name=who.name),
                                  now, skip=via)

    # -- delivery ---------------------------------------------------------------------------------

    async def to_reporter(self, session: AsyncSession, case: Case, reply: Reply, now: dt.datetime,
                          relay: bool = False) -> bool:
        """Queue a message to the reporter in their own chat; with `relay`, their answer comes back."""
        if case.anonymous and case.contact is not None:
            # Who that is stays sealed here: the sending worker finds the chat (and opens the relay).
            await payloads.enqueue(session, ReporterMessage.to_reporter_of(case.id, reply, relay=relay),
                                   platform=case.platform or "", now=now, case_id=case.id)
            return True
        conversation_id = case.conversation_id
        conversation = await repo.get_conversation(session=session, conversation_id=conversation_id,
                                                   for_update=relay) if conversation_id else None
        if conversation is None:
            log.warning("reporter of %s cannot be reached: no conversation", case.reference)
            return False
        await payloads.enqueue(session, ReporterMessage.to_conversation(conversation, reply),
                               platform=conversation.platform, now=now, case_id=case.id)
        if relay:
            state = dialogs.open_relay(State.from_dict(conversation.state, conversation.language), case.reference,
                                       now)
            await repo.save_conversation_state(session=session, conversation=conversation, state=state.to_dict(),
                                               language=state.language, now=now)
        return True

    async def post_to_thread(self, session: AsyncSession, case_id: int, line: ThreadLine, now: dt.datetime,
                             skip: tuple[str, str] | None = None) -> None:
        """Queue a line in the case's own thread(s) (but `skip`); before the first post exists, where it will be."""
        threads = [(t.platform, t.destination) for t in await repo.list_case_threads(session=session,
                                                                                       case_id=case_id)]
        for platform, destination in threads or list(self.coordinator_targets()):
            if (platform, destination) == skip:
                continue
            await payloads.enqueue(session, line, platform=platform, destination=destination, now=now,
                                   case_id=case_id)

    async def issue_login_link(self, session: AsyncSession, who: Coordinator, minutes: int,
                               now: dt.datetime) -> str:
        """A single-use login link for the case pages; only its digest is stored."""
        token = secrets.token_urlsafe(32)
        await repo.add_login_link(session=session, digest=login_digest(token), coordinator=who.identity,
                                  name=who.name, now=now, expires_at=now + dt.timedelta(minutes=minutes))
        return f"{self.public_url}/login/{token}"

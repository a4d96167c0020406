"""The reporter's rights from their own chat, inside their turn's transaction: what is stored about
them (`mijn gegevens`) and withdrawing a report (`intrekken MB-...`).

Only the sender's own data is read: their reporter record by the keyed hash of their platform ID and
their anonymous cases by their anonymous tag (the turn's vault has the anonymous key)."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncSession

import dialogs
from dialogs import Context, Reply, State, StoredData, StoredMessage, StoredReport
from dialogs.rights import MAX_CASES_SHOWN
from storage import repo
from storage.models import Case

from bot.adapters.contract import InboundMessage
from bot.core.casework import CaseWork
from bot.core.payloads import ThreadLine

log = logging.getLogger(__name__)

#: The timeline events that are messages between coordinator and reporter.
_MESSAGES = {"coordinator_message": False, "reporter_message": True}
#: The timers a withdrawn report no longer needs (claim reminders, aftercare messages).
_CASE_TIMERS = ("claim_reminder", "claim_escalation", "aftercare_checkin", "aftercare_reoffer")


async def stored_data(session: AsyncSession, message: InboundMessage, state: State, context: Context) -> StoredData:
    """Everything stored about the sender of `message`, decrypted, newest report first."""
    reporter = await repo.find_reporter(session=session, platform=message.platform,
                                        platform_user_id=message.sender)
    cases = await repo.list_cases_for_reporter(session=session, platform=message.platform,
                                               platform_user_id=message.sender)
    reports = []
    for case in cases[:MAX_CASES_SHOWN]:
        reports.append(await _stored_report(session, case))
    # The cases past the shown ones are only counted: placeholders keep the count right.
    reports += [StoredReport(reference=c.reference, created_at=c.created_at, status=c.status)
                for c in cases[MAX_CASES_SHOWN:]]
    return StoredData(
        name=reporter.display_name if reporter else None,
        address=reporter.platform_user_id if reporter else None,
        platform=message.platform, reports=tuple(reports),
        draft=state.draft is not None and state.step != "idle",
        department=dict(context.departments).get(state.department) if state.department else None,
        closed_years=context.closed_years, withdrawn_days=context.withdrawn_days,
    )


async def _stored_report(session: AsyncSession, case: Case) -> StoredReport:
    events = await repo.list_case_events(session=session, case=case)
    messages = tuple(
        StoredMessage(at=e.created_at, by_reporter=_MESSAGES[e.kind], text=(e.data or {}).get("text", ""),
                      name=(e.data or {}).get("name", ""))
        for e in events if e.kind in _MESSAGES)
    files = await repo.count_case_files(session=session, case_id=case.id)
    return StoredReport(reference=case.reference, created_at=case.created_at, status=case.status,
                        kinds=tuple(case.kind_codes or ()), place=case.place, story=case.story or "",
                        anonymous=bool(case.anonymous), withdrawn_at=case.withdrawn_at, files=files,
                        messages=messages)


async def my_data(session: AsyncSession, message: InboundMessage, state: State, context: Context) -> list[Reply]:
    """The answer to `mijn gegevens` / `my data`."""
    data = await stored_data(session, message, state, context)
    log.info("reporter data shown platform=%s event=%s reports=%d", message.platform, message.event_id,
             len(data.reports))
    return list(dialogs.my_data(state.language, data, context.timezone))


async def withdraw(session: AsyncSession, casework: CaseWork, message: InboundMessage, reference: str,
                   language: str, withdrawn_days: int, now: dt.datetime) -> tuple[Reply, bool]:
    """Withdraw the sender's report `reference`: it is closed without a closing message, its timers
    stop, the coordinators' thread hears it, and the retention purge removes it after
    `withdrawn_days` (unless it is on legal hold). Returns the answer and whether the outbox got work.

    Someone else's report gets the same answer as one that does not exist."""
    case = await repo.get_case(session=session, reference=reference)
    if case is None or not await repo.is_reporter_of(session=session, case=case, platform=message.platform,
                                                     platform_user_id=message.sender):
        log.info("withdrawal refused: no such report of the sender event=%s", message.event_id)
        return dialogs.withdraw_answer(language, "not_found", reference, withdrawn_days), False
    case = await repo.lock_case(session=session, case=case)
    if case.withdrawn_at is not None:
        return dialogs.withdraw_answer(language, "already", case.reference, withdrawn_days), False
    case.withdrawn_at = case.updated_at = now
    if case.status != "closed":
        case.status, case.closed_at = "closed", now
    for kind in _CASE_TIMERS:
        await repo.cancel_timers(session=session, case_id=case.id, kind=kind, now=now)
    await repo.add_case_event(session=session, case=case, kind="withdrawn", actor="reporter", data={}, now=now)
    await casework.post_to_thread(session, case.id, ThreadLine("withdrawn", case.reference, count=withdrawn_days),
                                  now)
    log.info("case withdrawn by its reporter reference=%s", case.reference)
    return dialogs.withdraw_answer(language, "withdrawn", case.reference, withdrawn_days), True

"""The privacy actions of the case page: legal hold, the export for a reporter's formal access
request, and erasure on request. The callers (case pages) check who may act and write the audit
entries of holds and exports; erasure writes its own, since it must follow the purge.

Audit entries never hold a reason typed by a coordinator: that is content (it may name people);
the reason of a hold is kept in the case's sealed timeline, the reason of an erasure as a code."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.casework import CaseError, Coordinator
from dialogs.text import clean
from storage import repo
from storage.models import Case

#: The most characters of a legal hold's reason (kept, sealed, in the timeline).
MAX_HOLD_REASON = 1000
#: Why a case is erased, as a code: never free text in the audit log.
ERASE_REASONS = ("request", "other")
#: How long the confirmation page of an erasure stays valid.
ERASE_CONFIRM_FOR = dt.timedelta(minutes=15)
#: Identifies the export's layout for whoever reads it later.
EXPORT_FORMAT = "meldbot-reporter-export/1"


# -- legal hold ---------------------------------------------------------------------------------------


async def place_legal_hold(session: AsyncSession, case: Case, who: Coordinator, reason: str,
                           now: dt.datetime) -> None:
    """Keep the case from being purged until the hold is lifted (police report or proceedings)."""
    text = clean(reason, MAX_HOLD_REASON).text
    if not text:
        raise CaseError("hold_reason_required")
    if case.legal_hold_since is not None:
        raise CaseError("already_held")
    case.legal_hold_since = now
    await repo.add_case_event(session=session, case=case, kind="legal_hold", actor=who.actor,
                              data={"name": who.name, "text": text}, now=now)


async def lift_legal_hold(session: AsyncSession, case: Case, who: Coordinator, reason: str,
                          now: dt.datetime) -> None:
    """End a legal hold: from now on the case's retention period applies again."""
    text = clean(reason, MAX_HOLD_REASON).text
    if not text:
        raise CaseError("hold_reason_required")
    if case.legal_hold_since is None:
        raise CaseError("not_held")
    since = case.legal_hold_since
    case.legal_hold_since = None
    await repo.add_case_event(session=session, case=case, kind="legal_hold_lifted", actor=who.actor,
                              data={"name": who.name, "text": text, "since": since.isoformat()}, now=now)


# -- export ---------------------------------------------------------------------------------------------


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _cases_of(session: AsyncSession, reporter_id: int) -> list[Case]:
    query = select(Case).where(Case.reporter_id == reporter_id).order_by(Case.created_at, Case.id)
    return list(await session.scalars(query))


async def _case_record(session: AsyncSession, case: Case) -> dict[str, Any]:
    events = await repo.list_case_events(session=session, case=case)
    files = await repo.list_attachments(session=session, case_id=case.id)
    return {
        "reference": case.reference, "status": case.status, "language": case.language,
        "created_at": _iso(case.created_at), "updated_at": _iso(case.updated_at),
        "occurred_at": _iso(case.occurred_at), "closed_at": _iso(case.closed_at),
        "withdrawn_at": _iso(case.withdrawn_at), "legal_hold_since": _iso(case.legal_hold_since),
        "kinds": case.kind_codes, "place": case.place, "urgent": bool(case.urgent),
        "contact_wanted": case.contact_wanted, "aftercare": case.aftercare, "police_came": case.police_came,
        "police_report_wanted": case.police_report_wanted, "assigned_to": case.assigned_to,
        "followup": case.followup or {}, "story": case.story, "answers": case.answers or {},
        "closing_summary": case.closing_summary,
        "timeline": [{"at": _iso(e.created_at), "kind": e.kind, "actor": e.actor, "data": e.data} for e in events],
        # What was received, not the bytes: the files themselves are handed over on request.
        "attachments": [{"name": a.filename, "media_type": a.media_type, "size": a.size, "sha256": a.sha256,
                         "received_at": _iso(a.received_at)} for a in files],
    }


async def reporter_export(session: AsyncSession, case: Case, now: dt.datetime) -> dict[str, Any]:
    """Everything stored about the reporter of `case`: every case in their name, in full.

    Anonymous cases are refused: the case pages never hold the key that links them to a person
    (the reporter gets their data in their own chat with `mijn gegevens`)."""
    if case.anonymous or case.reporter_id is None:
        raise CaseError("export_anonymous")
    reporter = await repo.get_reporter(session=session, reporter_id=case.reporter_id)
    if reporter is None:
        raise CaseError("export_anonymous")
    cases = await _cases_of(session, case.reporter_id)
    return {
        "format": EXPORT_FORMAT, "exported_at": _iso(now), "requested_for": case.reference,
        "reporter": {"platform": reporter.platform, "user_id": reporter.platform_user_id,
                     "name": reporter.display_name, "first_report_at": _iso(reporter.created_at)},
        "cases": [await _case_record(session, c) for c in cases],
    }


def export_json(export: dict[str, Any]) -> bytes:
    """The export as a UTF-8 JSON document (readable: indented, not ASCII-escaped)."""
    return json.dumps(export, ensure_ascii=False, indent=2, default=str).encode("utf-8")


# -- erasure --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasureScope:
    """What erasing a case removes, for the confirmation page."""

    events: int
    files: int
    #: The reporter's own record (name, platform ID) goes too: no other case is in their name.
    reporter_too: bool


async def erasure_scope(session: AsyncSession, case: Case) -> ErasureScope:
    events = await repo.list_case_events(session=session, case=case)
    files = await repo.count_case_files(session=session, case_id=case.id)
    others = 0
    if case.reporter_id is not None:
        others = int(await session.scalar(select(func.count(Case.id)).where(
            Case.reporter_id == case.reporter_id, Case.id != case.id)) or 0)
    return ErasureScope(events=len(events), files=files, reporter_too=case.reporter_id is not None and not others)


def erase_token(secret: str, case: Case, reason_code: str, issued: dt.datetime) -> str:
    """The token of one erasure confirmation: bound to the session (its secret), the case as it was
    shown (a change since needs a new confirmation), the reason and the time it was issued. It is
    single-use by nature: once it has been used, the case it names no longer exists."""
    stamp = str(int(issued.timestamp()))
    message = "\x1f".join(("erase", str(case.id), case.reference, _iso(case.updated_at) or "", reason_code, stamp))
    mac = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"{stamp}.{mac}"


def check_erase_token(token: str, secret: str, case: Case, reason_code: str, now: dt.datetime) -> None:
    """Raises CaseError unless `token` confirms erasing `case` for `reason_code`, and is still valid."""
    stamp, _, _mac = token.partition(".")
    if not stamp.isdigit() or len(stamp) > 12:
        raise CaseError("erase_confirm_invalid")
    issued = dt.datetime.fromtimestamp(int(stamp), dt.timezone.utc)
    expected = erase_token(secret, case, reason_code, issued)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise CaseError("erase_confirm_invalid")
    if not issued - dt.timedelta(minutes=1) <= now <= issued + ERASE_CONFIRM_FOR:
        raise CaseError("erase_confirm_expired")


def check_erasable(case: Case, reason_code: str) -> None:
    """Raises CaseError when `case` may not be erased now (no reason given, or under legal hold)."""
    if reason_code not in ERASE_REASONS:
        raise CaseError("erase_reason_required")
    if case.legal_hold_since is not None:
        raise CaseError("erase_legal_hold")


async def erase_case(session: AsyncSession, case: Case, who: Coordinator, reason_code: str,
                     now: dt.datetime) -> str:
    """Remove the case with everything of it (a de-identified fact stays) and audit it; returns the
    reference. The audit entry has the reason as a code only."""
    check_erasable(case, reason_code)
    reference = case.reference
    await repo.purge_case(session=session, case=case, outcome="erased", now=now)
    # After the purge, which removes the case's own audit entries: this one records the erasure.
    await repo.add_audit(session=session, actor=who.identity, action="erased", now=now, case_reference=reference,
                         detail={"reason_code": reason_code})
    return reference

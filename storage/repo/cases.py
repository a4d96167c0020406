"""Cases: references, creation, the timeline, assignment, lists."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case as case_when
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import (
    Case,
    CaseEvent,
    CaseKind,
    Conversation,
    Reporter,
)
from ._common import _prebuilt_insert

# No 0/O, 1/I/L or U: a reference must survive being read out over the phone.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


REFERENCE_PREFIX = "MB"


def new_reference() -> str:
    """A random case reference such as `MB-7KQ-4XP` (30^6 ≈ 7·10^8 possibilities)."""
    chars = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(6))
    return f"{REFERENCE_PREFIX}-{chars[:3]}-{chars[3:]}"


def normalise_reference(text: str) -> str:
    """Accept `mb7kq4xp`, `MB-7KQ-4XP` or `7kq 4xp` as the same reference."""
    chars = "".join(ch for ch in text.upper() if ch.isalnum())
    if chars.startswith(REFERENCE_PREFIX):
        chars = chars[len(REFERENCE_PREFIX):]
    return f"{REFERENCE_PREFIX}-{chars[:3]}-{chars[3:]}" if len(chars) == 6 else text.strip().upper()


async def assign_case(*, session: AsyncSession, case: Case, identity: str, name: str, now: dt.datetime,
                      expected: str | None = None) -> bool:
    """Assign a case to `identity` if it is still assigned to `expected` (None: untaken).

    One conditional UPDATE, so of two coordinators taking the same case at once only one wins."""
    result = await session.execute(
        update(Case).where(Case.id == case.id, Case.assigned_to_id.is_not_distinct_from(expected),
                           Case.status != "closed")
        .values(assigned_to_id=identity, assigned_to=name, updated_at=now,
                # Decided by the database, not from a status read earlier (it may have changed since).
                status=case_when((Case.status == "new", "in_progress"), else_=Case.status))
        .execution_options(synchronize_session=False)
    )
    await session.refresh(case)
    return result.rowcount == 1


@dataclass(frozen=True)
class NewCase:
    """What a submitted report holds, as the engine hands it to `create_case`."""

    story: str
    kinds: list[str]
    occurred_at: dt.datetime
    place: str | None
    urgent: bool
    contact_wanted: bool | None
    aftercare: str | None
    police_came: bool | None
    police_report_wanted: bool | None
    language: str
    answers: dict[str, Any]
    anonymous: bool = False
    #: When the case is overdue if nobody has taken it.
    claim_due_at: dt.datetime | None = None


async def create_case(
    *, session: AsyncSession, new: NewCase, reporter_id: int, conversation_id: int | None,
    now: dt.datetime, reference: str | None = None,
) -> Case:
    """Insert a case with a fresh unique reference and its first timeline event."""
    for attempt in range(10):
        case = Case(
            reference=reference if reference and attempt == 0 else new_reference(),
            status="new", story=new.story, answers=new.answers, occurred_at=new.occurred_at,
            place=new.place, urgent=new.urgent, contact_wanted=new.contact_wanted, aftercare=new.aftercare,
            police_came=new.police_came, police_report_wanted=new.police_report_wanted,
            anonymous=new.anonymous, language=new.language, claim_due_at=new.claim_due_at,
            reporter_id=reporter_id,
            conversation_id=conversation_id, created_at=now, updated_at=now,
            kinds=[CaseKind(kind=kind, position=i) for i, kind in enumerate(new.kinds)],
        )
        try:
            async with session.begin_nested():
                session.add(case)
        except IntegrityError as error:  # reference taken: the savepoint rolled back and dropped `case`
            if "reference" not in str(error.orig).lower():
                raise
            continue
        await add_case_event(session=session, case=case, kind="submitted", actor="reporter", data={}, now=now)
        return case
    raise IntegrityError("INSERT INTO cases", None, Exception("no free case reference found"))


async def add_case_event(
    *, session: AsyncSession, case: Case, kind: str, actor: str, data: dict[str, Any], now: dt.datetime
) -> None:
    """Append an event to a case's timeline (one plain INSERT)."""
    if case.id is None:
        await session.flush()
    await session.execute(_ADD_EVENT, {"case_id": case.id, "kind": kind, "actor": actor, "data": data,
                                       "created_at": now})
    if case.updated_at != now:  # a new case already has it: no UPDATE for nothing
        case.updated_at = now


async def get_case(*, session: AsyncSession, reference: str) -> Case | None:
    """A case by its reference (any spelling `normalise_reference` accepts)."""
    return await session.scalar(select(Case).where(Case.reference == normalise_reference(reference)))


async def lock_case(*, session: AsyncSession, case: Case) -> Case:
    """Lock a case for a change (PostgreSQL; SQLite's write transaction already excludes others) and
    reload it. The reporter's conversation is locked first: a reporter's turn takes the same two
    locks in that order, so the two never deadlock."""
    if case.conversation_id is not None:
        await session.get(Conversation, case.conversation_id, with_for_update=True)
    locked = await session.get(Case, case.id, with_for_update=True, populate_existing=True)
    assert locked is not None
    return locked


async def list_cases(
    *, session: AsyncSession, status: str | None = None, kind: str | None = None,
    since: dt.datetime | None = None, until: dt.datetime | None = None, limit: int = 500,
    assigned_to_id: str | None = None, reference: str | None = None,
) -> list[Case]:
    """Cases, newest first, optionally filtered by status, kind, creation period, assignee and
    (part of) the reference."""
    query = select(Case).order_by(Case.created_at.desc(), Case.id.desc()).limit(limit)
    if assigned_to_id:
        query = query.where(Case.assigned_to_id == assigned_to_id)
    if reference:
        query = query.where(Case.reference.contains(normalise_reference(reference), autoescape=True))
    if status:
        query = query.where(Case.status == status)
    if kind:
        query = query.where(Case.id.in_(select(CaseKind.case_id).where(CaseKind.kind == kind)))
    if since:
        query = query.where(Case.created_at >= since)
    if until:
        query = query.where(Case.created_at < until)
    return list(await session.scalars(query))


async def list_cases_for_reporter(*, session: AsyncSession, platform: str, platform_user_id: str) -> list[Case]:
    """A reporter's own cases, newest first."""
    query = (
        select(Case)
        .join(Reporter, Case.reporter_id == Reporter.id)
        .where(Reporter.platform == platform, Reporter.platform_user_id == platform_user_id)
        .order_by(Case.created_at.desc(), Case.id.desc())
    )
    return list(await session.scalars(query))


async def list_case_events(*, session: AsyncSession, case: Case) -> list[CaseEvent]:
    """A case's timeline, oldest first."""
    query = select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.created_at, CaseEvent.id)
    return list(await session.scalars(query))


_ADD_EVENT = _prebuilt_insert(CaseEvent.__table__, ("case_id", "kind", "actor", "data", "created_at"))


async def get_case_by_id(*, session: AsyncSession, case_id: int) -> Case | None:
    """A case by its row ID."""
    return await session.get(Case, case_id)


async def count_recent_reports(*, session: AsyncSession, platform: str, platform_user_id: str,
                               since: dt.datetime) -> int:
    """Reports one person made since `since`."""
    query = (select(func.count(Case.id)).join(Reporter, Reporter.id == Case.reporter_id)
             .where(Reporter.platform == platform, Reporter.platform_user_id == platform_user_id,
                    Case.created_at >= since))
    return int(await session.scalar(query) or 0)

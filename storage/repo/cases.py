"""Cases: references, creation, the timeline, assignment, lists."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case as case_when
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .. import crypto
from ..db import vault_of
from ..models import (
    Case,
    CaseEvent,
    CaseKind,
    Conversation,
    Reporter,
)
from ._common import _prebuilt_insert, sender_hash
from .facts import FACT_EVENTS, refresh_fact

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
    *, session: AsyncSession, new: NewCase, reporter_id: int | None, conversation_id: int | None,
    now: dt.datetime, reference: str | None = None, reporter: tuple[str, str] | None = None,
) -> Case:
    """Insert a case with a fresh unique reference, its own data key and its first timeline event.

    An anonymous case (`new.anonymous`) keeps no reporter row and no conversation in the clear: the
    conversation is sealed under the anonymous key and `reporter` (platform, user ID) only leaves a
    keyed hash under that key, by which the reporter's own commands find it."""
    vault = vault_of(session)
    contact = tag = None
    if new.anonymous:
        contact = vault.seal_json("anonymous", {"conversation_id": conversation_id}, "contact")
        tag = vault.anonymous_tag(*reporter) if reporter else None
        reporter_id = conversation_id = None
    for attempt in range(10):
        cipher, wrapped = vault.new_data_key(Case._sealed_purpose)
        case = Case(
            reference=reference if reference and attempt == 0 else new_reference(),
            status="new", occurred_at=new.occurred_at, wrapped_key=wrapped, key_master=vault.master_id,
            sealed=crypto.seal_with(cipher, {"story": new.story, "answers": new.answers, "closing_summary": None},
                                    Case._sealed_purpose),
            place=new.place, urgent=new.urgent, contact_wanted=new.contact_wanted, aftercare=new.aftercare,
            police_came=new.police_came, police_report_wanted=new.police_report_wanted,
            anonymous=new.anonymous, language=new.language, claim_due_at=new.claim_due_at,
            reporter_id=reporter_id, contact=contact, reporter_tag=tag, platform=reporter[0] if reporter else None,
            conversation_id=conversation_id, created_at=now, updated_at=now,
            kinds=[CaseKind(kind=kind, position=i) for i, kind in enumerate(new.kinds)],
        )
        case.bind_vault(vault)
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
    sealed = crypto.seal_with(case._cipher(), data, "event")
    await session.execute(_ADD_EVENT, {"case_id": case.id, "kind": kind, "actor": actor, "sealed": sealed,
                                       "created_at": now})
    if case.updated_at != now:  # a new case already has it: no UPDATE for nothing
        case.updated_at = now
    if kind in FACT_EVENTS:
        await refresh_fact(session=session, case=case, now=now)


async def get_case(*, session: AsyncSession, reference: str) -> Case | None:
    """A case by its reference (any spelling `normalise_reference` accepts)."""
    return await session.scalar(select(Case).where(Case.reference == normalise_reference(reference)))


async def lock_case(*, session: AsyncSession, case: Case) -> Case:
    """Lock a case for a change (PostgreSQL; SQLite's write transaction already excludes others) and
    reload it. The reporter's conversation is locked first: a reporter's turn takes the same two
    locks in that order, so the two never deadlock."""
    conversation_id = case.conversation_id
    if conversation_id is None and case.contact is not None and vault_of(session).has_anonymous:
        conversation_id = reporter_conversation_id(session=session, case=case)
    if conversation_id is not None:
        await session.get(Conversation, conversation_id, with_for_update=True)
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


def _own_cases(session: AsyncSession, platform: str, platform_user_id: str):
    """Whether a case is this person's: reported in their name, or anonymously by them."""
    vault = vault_of(session)
    named = Case.reporter_id.in_(select(Reporter.id).where(
        Reporter.platform == platform, Reporter.identity_hash == sender_hash(vault, platform, platform_user_id)))
    return or_(named, Case.reporter_tag == vault.anonymous_tag(platform, platform_user_id))


async def list_cases_for_reporter(*, session: AsyncSession, platform: str, platform_user_id: str) -> list[Case]:
    """A reporter's own cases (anonymous ones included), newest first."""
    query = (select(Case).where(_own_cases(session, platform, platform_user_id))
             .order_by(Case.created_at.desc(), Case.id.desc()))
    return list(await session.scalars(query))


async def is_reporter_of(*, session: AsyncSession, case: Case, platform: str, platform_user_id: str) -> bool:
    """Whether this person reported the case (in their name or anonymously)."""
    vault = vault_of(session)
    if case.anonymous:
        return case.reporter_tag is not None and case.reporter_tag == vault.anonymous_tag(platform, platform_user_id)
    reporter = await session.get(Reporter, case.reporter_id) if case.reporter_id else None
    return reporter is not None and reporter.platform == platform and \
        reporter.identity_hash == sender_hash(vault, platform, platform_user_id)


def reporter_conversation_id(*, session: AsyncSession, case: Case) -> int | None:
    """The conversation the reporter of a case is reached in. For an anonymous case this opens its
    sealed contact with the anonymous key (NoAccess in a vault without it)."""
    if case.conversation_id is not None or case.contact is None:
        return case.conversation_id
    return vault_of(session).open_json("anonymous", case.contact, "contact").get("conversation_id")


async def list_case_events(*, session: AsyncSession, case: Case) -> list[CaseEvent]:
    """A case's timeline, oldest first, with each event's data opened."""
    query = select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.created_at, CaseEvent.id)
    events = list(await session.scalars(query))
    cipher = case._cipher() if events else None
    for event in events:
        event.__dict__["_data"] = crypto.open_with(cipher, event.sealed, "event")
    return events


_ADD_EVENT = _prebuilt_insert(CaseEvent.__table__, ("case_id", "kind", "actor", "sealed", "created_at"))


async def get_case_by_id(*, session: AsyncSession, case_id: int) -> Case | None:
    """A case by its row ID."""
    return await session.get(Case, case_id)


async def count_recent_reports(*, session: AsyncSession, platform: str, platform_user_id: str,
                               since: dt.datetime) -> int:
    """Reports one person made since `since` (anonymous ones included)."""
    query = (select(func.count(Case.id))
             .where(_own_cases(session, platform, platform_user_id), Case.created_at >= since))
    return int(await session.scalar(query) or 0)

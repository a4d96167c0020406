"""Removing a case for good (retention purge, erasure on request), leaving a de-identified fact."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import vault_of
from ..models import (
    Attachment,
    AuditEntry,
    Case,
    CaseEvent,
    CaseFact,
    CaseThread,
    OutboxMessage,
    Reporter,
    Timer,
)

#: Answer codes of a report that identify nobody and that the yearly overview counts.
FACT_CODES = ("consequences", "perpetrator_kind", "department", "place_kind")


def _month(moment: dt.datetime | None, zone: dt.tzinfo) -> str | None:
    return moment.astimezone(zone).strftime("%Y-%m") if moment else None


def fact_of(case: Case, *, outcome: str, now: dt.datetime, zone: dt.tzinfo) -> dict[str, Any]:
    """What survives a purge of `case`: codes and months, no free text, no identity, no reference."""
    answers = case.answers or {}
    codes = {key: answers[key] for key in FACT_CODES if isinstance(answers.get(key), (str, list)) and key in answers}
    # Only codes (short strings of letters, digits, _ and -), never anything someone typed.
    codes = {key: value for key, value in codes.items()
             if all(isinstance(v, str) and len(v) <= 40 and v.replace("_", "").replace("-", "").isalnum()
                    for v in (value if isinstance(value, list) else [value]))}
    milestones: dict[str, Any] = {}
    for step, record in (case.followup or {}).items():
        at = record.get("at") if isinstance(record, dict) else None
        try:
            done = dt.datetime.fromisoformat(at) if at else None
        except ValueError:
            done = None
        milestones[step] = round((done - case.created_at).total_seconds() / 3600, 1) if done else None
    ended = case.closed_at if outcome == "closed" else case.withdrawn_at if outcome == "withdrawn" else now
    return {"occurred_month": _month(case.occurred_at, zone), "reported_month": _month(case.created_at, zone),
            "kinds": list(case.kind_codes), "place": case.place, "urgent": bool(case.urgent),
            "anonymous": bool(case.anonymous), "codes": codes, "milestones": milestones, "outcome": outcome,
            "ended_month": _month(ended, zone), "purged_at": now}


async def purge_case(*, session: AsyncSession, case: Case, outcome: str, now: dt.datetime,
                     zone: dt.tzinfo) -> None:
    """Delete a case with everything that belongs to it (files, timeline, threads, timers, queued
    messages, its audit entries, its data key, and the reporter row when no other case has it) and
    keep one de-identified fact. The caller writes the audit entry of the purge itself."""
    session.add(CaseFact(**fact_of(case, outcome=outcome, now=now, zone=zone)))
    for model in (Attachment, CaseEvent, CaseThread, Timer, OutboxMessage):
        await session.execute(delete(model).where(model.case_id == case.id))
    await session.execute(delete(AuditEntry).where(AuditEntry.case_reference == case.reference))
    reporter_id = case.reporter_id
    await session.execute(delete(Case).where(Case.id == case.id))
    if reporter_id is not None:
        others = await session.scalar(select(func.count(Case.id)).where(Case.reporter_id == reporter_id))
        if not others:
            await session.execute(delete(Reporter).where(Reporter.id == reporter_id))
    vault_of(session).forget(case.wrapped_key)
    session.expunge(case) if case in session else None

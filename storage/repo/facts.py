"""The de-identified fact of every case (`CaseFact`), kept up to date as the case changes.

The statistics and the exports count facts, never cases: a fact holds codes, months and follow-up
milestones only, so it can stay when its case is purged. `add_case_event` refreshes the fact
whenever an event changes what it holds; `sync_facts` repairs facts that are missing or older than
their case (a case changed by an older version, or a database restored from a backup)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..models import Case, CaseFact

#: Where a sessionmaker keeps its `FactRules` (in its `info`).
FACT_RULES = "meldbot_fact_rules"
#: Timeline events after which a case's fact is refreshed (the others change nothing it holds).
FACT_EVENTS = frozenset({"submitted", "status", "step", "withdrawn", "evaluated"})
#: Follow-up steps that count as the first contact with the reporter.
CONTACT_STEPS = ("contact_made",)
#: Measures a coordinator can record when a case is evaluated (prevention), as codes.
MEASURES = ("house_rules", "training", "workplace", "procedure", "aggressor_response", "none")
#: Consequence codes a report can hold.
CONSEQUENCES = ("injury", "damage", "absence")
#: Kind codes by bit (`CaseFact.kind_bits`): append only, a bit never changes its meaning.
KIND_BITS = ("verbal", "threat", "intimidation", "physical", "discrimination", "sexual", "vandalism", "online",
             "bribery", "other")
#: Measure codes by bit (`CaseFact.measure_bits`): the order of `MEASURES`, append only.
MEASURE_BITS = MEASURES


def bit_of(codes: tuple[str, ...], code: str) -> int:
    """The bit of one code (0 for a code without one)."""
    return 1 << codes.index(code) if code in codes else 0


def bits_of(codes: tuple[str, ...], chosen) -> int:
    """The bits of several codes."""
    return sum(bit_of(codes, code) for code in set(chosen))


def codes_of(codes: tuple[str, ...], bits: int) -> list[str]:
    """The codes whose bits are set, in the order of `codes`."""
    return [code for index, code in enumerate(codes) if bits & (1 << index)]


@dataclass(frozen=True)
class FactRules:
    """How facts are dated: the organisation's time zone, and working hours between two moments
    (None: first-contact times are not recorded)."""

    zone: dt.tzinfo = dt.timezone.utc
    working_hours: Callable[[dt.datetime, dt.datetime], float] | None = None


def set_fact_rules(*sessionmakers: async_sessionmaker, rules: FactRules) -> None:
    """Give sessionmakers the rules their sessions date facts by."""
    for sessions in sessionmakers:
        sessions.kw.setdefault("info", {})[FACT_RULES] = rules


def _rules(session: AsyncSession) -> FactRules:
    return session.info.get(FACT_RULES) or FactRules()


def _month(moment: dt.datetime | None, zone: dt.tzinfo) -> str | None:
    return moment.astimezone(zone).strftime("%Y-%m") if moment else None


def _is_code(value: Any) -> bool:
    """A short code (letters, digits, _ and -), never anything someone typed."""
    return isinstance(value, str) and 0 < len(value) <= 40 and value.replace("_", "").replace("-", "").isalnum()


def _step_moment(record: Any, zone: dt.tzinfo) -> dt.datetime | None:
    """When a follow-up step happened: when it was recorded, or, when the coordinator gave an earlier
    day, the end of that day (never earlier than sure)."""
    if not isinstance(record, dict):
        return None
    try:
        at = dt.datetime.fromisoformat(record["at"]) if record.get("at") else None
        day = dt.date.fromisoformat(record["date"]) if record.get("date") else None
    except (ValueError, TypeError):
        return None
    if at is not None and day is not None and day < at.astimezone(zone).date():
        return dt.datetime.combine(day, dt.time(23, 59), zone).astimezone(dt.timezone.utc)
    return at


def fact_values(case: Case, rules: FactRules) -> dict[str, Any]:
    """The plain columns of the fact of `case` (and `measures`, the measure codes, for reading)."""
    zone = rules.zone
    answers = case.answers or {}
    consequences = answers.get("consequences") or []
    steps = case.followup or {}
    milestones: dict[str, Any] = {}
    first_contact = None
    for step, record in steps.items():
        moment = _step_moment(record, zone)
        hours = None
        if moment is not None and rules.working_hours is not None:
            hours = round(max(0.0, rules.working_hours(case.created_at, moment)), 2)
        milestones[step] = hours
        if step in CONTACT_STEPS and moment is not None and (first_contact is None or hours < first_contact):
            first_contact = hours
    evaluation = case.evaluation or {}
    measures = [m for m in dict.fromkeys(evaluation.get("measures") or []) if m in MEASURES]
    department = answers.get("department")
    perpetrator = answers.get("perpetrator")
    status = "withdrawn" if case.withdrawn_at is not None else case.status
    ended = case.closed_at if case.status == "closed" else case.withdrawn_at
    kinds = [k for k in dict.fromkeys(case.kind_codes) if _is_code(k)]
    return {
        "occurred_month": _month(case.occurred_at, zone), "reported_month": _month(case.created_at, zone),
        "kinds": kinds, "kind_bits": bits_of(KIND_BITS, kinds), "measure_bits": bits_of(MEASURE_BITS, measures),
        "open_since": case.created_at if status in ("new", "in_progress") else None, "place": case.place,
        "department": department if _is_code(department) else None,
        "perpetrator": perpetrator if _is_code(perpetrator) else None,
        **{code: code in consequences for code in CONSEQUENCES},
        "urgent": bool(case.urgent), "anonymous": bool(case.anonymous),
        "recorded": bool(answers.get("recorded_by")),
        "police_wanted": bool(case.police_report_wanted),
        "police_filed": "police_report_filed" in steps,
        "aftercare_offered": bool({"aftercare_offered", "aftercare_accepted", "aftercare_declined"} & set(steps)),
        "aftercare_accepted": "aftercare_accepted" in steps,
        "aggressor_response": "aggressor_response" in steps,
        "first_contact_hours": first_contact, "status": status, "milestones": milestones,
        "ended_month": _month(ended, zone), "measures": measures,
    }


async def refresh_fact(*, session: AsyncSession, case: Case, now: dt.datetime) -> CaseFact:
    """Write the fact of `case` as it is now (insert on the first call)."""
    if case.id is None:
        await session.flush()
    values = fact_values(case, _rules(session))
    values.pop("measures")
    fact = await session.scalar(select(CaseFact).where(CaseFact.case_id == case.id))
    if fact is None:
        fact = CaseFact(case_id=case.id, updated_at=now, **values)
        session.add(fact)
    else:
        for name, value in values.items():
            setattr(fact, name, value)
        fact.updated_at = now
    await session.flush()
    return fact


async def detach_fact(*, session: AsyncSession, case: Case, outcome: str, now: dt.datetime) -> None:
    """Before a purge: the fact as the case ends, then cut loose from it (it keeps counting)."""
    fact = await refresh_fact(session=session, case=case, now=now)
    fact.outcome = outcome
    if fact.status in ("new", "in_progress"):  # erased while open: it ended here
        fact.status = "closed"
    fact.open_since = None
    if fact.ended_month is None:
        fact.ended_month = _month(now, _rules(session).zone)
    fact.case_id, fact.purged_at = None, now
    await session.flush()


async def sync_facts(*, session: AsyncSession, now: dt.datetime, batch: int = 500) -> int:
    """Write the facts of cases that have none or an older one; returns how many were written."""
    stale = (select(Case).outerjoin(CaseFact, CaseFact.case_id == Case.id)
             .where(or_(CaseFact.id.is_(None), CaseFact.updated_at.is_(None), CaseFact.updated_at < Case.updated_at))
             .order_by(Case.id).limit(batch))
    written = 0
    for case in list(await session.scalars(stale)):
        await refresh_fact(session=session, case=case, now=max(now, case.updated_at))
        written += 1
    return written


__all__ = ["CONSEQUENCES", "FACT_EVENTS", "FACT_RULES", "KIND_BITS", "MEASURE_BITS", "MEASURES", "bit_of", "bits_of",
           "codes_of", "FactRules", "detach_fact", "fact_values",
           "refresh_fact", "set_fact_rules", "sync_facts"]

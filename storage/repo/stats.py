"""The aggregates behind the statistics: counts over case facts (live and purged cases alike).

Every function counts facts in a `Scope` (a range of report months, optionally one kind and one
department) with one SQL aggregate; nothing here loads a case or opens a sealed field. There is no
count by anything that identifies a perpetrator beyond the perpetrator's kind (citizen, colleague)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case as case_when, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import CaseFact
from .facts import KIND_BITS, MEASURE_BITS, bit_of, codes_of

#: Flags counted by `count_flags` (boolean columns of `CaseFact`).
FLAGS = ("injury", "damage", "absence", "urgent", "anonymous", "recorded", "police_wanted", "police_filed",
         "aftercare_offered", "aftercare_accepted", "aggressor_response")

@dataclass(frozen=True)
class Scope:
    """Which facts count: reported from `first_month` to `last_month` (`YYYY-MM`, both included),
    optionally of one kind and from one department."""

    first_month: str
    last_month: str
    kind: str | None = None
    department: str | None = None

    @classmethod
    def year(cls, year: int, kind: str | None = None, department: str | None = None) -> "Scope":
        return cls(f"{year:04d}-01", f"{year:04d}-12", kind, department)


def _where(query: Select, scope: Scope) -> Select:
    query = query.where(CaseFact.reported_month >= scope.first_month, CaseFact.reported_month <= scope.last_month)
    if scope.department is not None:
        query = query.where(CaseFact.department == scope.department)
    if scope.kind is not None:
        query = query.where(CaseFact.kind_bits.op("&")(bit_of(KIND_BITS, scope.kind)) != 0)
    return query


#: The breakdowns `breakdown_counts` counts per period.
BREAKDOWNS = ("place", "department", "perpetrator")


def _sum_where(condition, label: str):
    return func.coalesce(func.sum(case_when((condition, 1), else_=0)), 0).label(label)


def _has_bit(column, bit: int):
    return column.op("&")(bit) != 0


async def monthly_counts(*, session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
    """Per report month (one scan, a row a month): the facts (`total`), those with each flag of
    `FLAGS`, with each kind (`kind_<code>`) and with each measure (`measure_<code>`)."""
    sums = [_sum_where(getattr(CaseFact, flag).is_(True), flag) for flag in FLAGS]
    sums += [_sum_where(_has_bit(CaseFact.kind_bits, 1 << i), f"kind_{code}") for i, code in enumerate(KIND_BITS)]
    sums += [_sum_where(_has_bit(CaseFact.measure_bits, 1 << i), f"measure_{code}")
             for i, code in enumerate(MEASURE_BITS)]
    query = _where(select(CaseFact.reported_month, func.count().label("total"), *sums).select_from(CaseFact), scope)
    return [dict(row._mapping) for row in await session.execute(query.group_by(CaseFact.reported_month))]


async def breakdown_counts(*, session: AsyncSession, scope: Scope, current_from: str) -> list[dict[str, Any]]:
    """Facts per (period, place, department, perpetrator kind) in one scan: `current` is True for
    report months from `current_from` on (the period shown), False before it (the one compared)."""
    current = (CaseFact.reported_month >= current_from).label("current")
    columns = [current, *(getattr(CaseFact, name) for name in BREAKDOWNS)]
    query = _where(select(*columns, func.count().label("total")).select_from(CaseFact), scope)
    return [dict(row._mapping) for row in await session.execute(query.group_by(*columns))]


async def measure_pairs(*, session: AsyncSession, scope: Scope) -> dict[tuple[int, int], int]:
    """Evaluated facts per (kind bits, measure bits): the measures per kind (a few hundred rows at
    most; decode with `facts.codes_of`)."""
    columns = (CaseFact.kind_bits, CaseFact.measure_bits)
    query = _where(select(*columns, func.count()).select_from(CaseFact).where(CaseFact.measure_bits != 0), scope)
    return {(kinds, measures): count for kinds, measures, count in await session.execute(query.group_by(*columns))}


async def count_flags(*, session: AsyncSession, scope: Scope) -> dict[str, int]:
    """The number of facts in scope (`total`) and of those with each flag of `FLAGS` set."""
    columns = [func.count().label("total")]
    columns += [func.coalesce(func.sum(case_when((getattr(CaseFact, flag).is_(True), 1), else_=0)), 0).label(flag)
                for flag in FLAGS]
    row = (await session.execute(_where(select(*columns).select_from(CaseFact), scope))).one()
    return dict(row._mapping)


@dataclass(frozen=True)
class ContactTimes:
    """First contact: how many cases had one, the median working hours to it, and how many within
    `within` working hours."""

    contacted: int
    median_hours: float | None
    within: int


async def contact_times(*, session: AsyncSession, scope: Scope, within_hours: float) -> ContactTimes:
    """Time to first contact in working hours (the median by offset: the same SQL on both databases)."""
    hours = CaseFact.first_contact_hours
    base = _where(select(func.count(), func.coalesce(func.sum(case_when((hours <= within_hours, 1), else_=0)), 0))
                  .select_from(CaseFact).where(hours.is_not(None)), scope)
    contacted, within = (await session.execute(base)).one()
    median = None
    if contacted:
        ordered = _where(select(hours).select_from(CaseFact).where(hours.is_not(None)), scope).order_by(hours)
        middle = list(await session.scalars(ordered.offset((contacted - 1) // 2).limit(2 - contacted % 2)))
        median = sum(middle) / len(middle)
    return ContactTimes(contacted=int(contacted), median_hours=median, within=int(within))


async def count_open_since(*, session: AsyncSession, scope: Scope, before: dt.datetime) -> int:
    """Cases in scope still open (not closed, not withdrawn) that were reported before `before`."""
    query = select(func.count()).select_from(CaseFact).where(CaseFact.open_since < before)
    return int(await session.scalar(_where(query, scope)) or 0)


async def fact_years(*, session: AsyncSession) -> list[int]:
    """The years in which cases were reported (that have a fact), newest first."""
    year = func.substr(CaseFact.reported_month, 1, 4)
    rows = await session.scalars(select(year).group_by(year).order_by(year.desc()))
    return [int(value) for value in rows if value and value.isdigit()]


async def count_unevaluated(*, session: AsyncSession, scope: Scope) -> int:
    """Closed cases in scope with no evaluation yet: no measure recorded (an evaluation always
    records at least one, "none" included)."""
    query = select(func.count()).select_from(CaseFact).where(CaseFact.status == "closed", CaseFact.measure_bits == 0)
    return int(await session.scalar(_where(query, scope)) or 0)


async def count_per_month(*, session: AsyncSession, first_month: str, last_month: str, dimension: str
                          ) -> dict[tuple[Any, str], int]:
    """Facts per (value, report month) of `place`, `department` or `kind`: what the signals compare."""
    scope = Scope(first_month, last_month)
    if dimension == "kind":
        query = (select(CaseFact.kind_bits, CaseFact.reported_month, func.count()).select_from(CaseFact)
                 .group_by(CaseFact.kind_bits, CaseFact.reported_month))
        counts: dict[tuple[Any, str], int] = {}
        for bits, month, count in await session.execute(_where(query, scope)):
            for kind in codes_of(KIND_BITS, bits or 0):
                counts[(kind, month)] = counts.get((kind, month), 0) + count
        return counts
    if dimension in ("place", "department"):
        column = getattr(CaseFact, dimension)
        query = (select(column, CaseFact.reported_month, func.count()).select_from(CaseFact)
                 .where(column.is_not(None)).group_by(column, CaseFact.reported_month))
    else:
        raise ValueError(f"no signals by {dimension!r}")
    rows = await session.execute(_where(query, scope))
    return {(value, month): count for value, month, count in rows}


__all__ = ["BREAKDOWNS", "FLAGS", "ContactTimes", "Scope", "breakdown_counts", "contact_times", "count_flags",
           "count_open_since", "count_per_month", "count_unevaluated", "fact_years", "measure_pairs", "monthly_counts"]

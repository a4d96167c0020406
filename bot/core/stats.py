"""What the organisation learns from its reports: the figures of a period against the one before,
with small counts suppressed so that nobody can be recognised in them.

One `figures(...)` call gives everything the statistics page, the yearly overview (page and PDF)
and the coordinators' `overzicht` show; they differ only in how they render it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from dialogs import categories
from storage.repo import facts as fact_codes
from storage.repo import stats as q
from storage.repo.stats import Scope

#: Cases open longer than this count as "long open".
LONG_OPEN_DAYS = 30


@dataclass(frozen=True)
class Count:
    """A count as it may be shown: `value` is exact; `suppressed` when it is below the threshold
    (or hidden so that another hidden count cannot be worked out from a total)."""

    value: int
    suppressed: bool = False
    threshold: int = 5

    @property
    def shown(self) -> str:
        """The count for display: the number, or "<5" (with the configured threshold)."""
        return f"<{self.threshold}" if self.suppressed else str(self.value)

    @property
    def chart_value(self) -> int:
        """What a chart may draw (0 for a hidden count: its bar is never drawn)."""
        return 0 if self.suppressed else self.value


def suppress(counts: dict[Any, int], threshold: int, codes: Iterable[Any] | None = None) -> dict[Any, Count]:
    """Counts in `codes` order (missing ones are 0) with every count from 1 to threshold-1 hidden.

    A zero is shown (it describes nobody). When exactly one count is hidden, the smallest shown
    non-zero count is hidden as well: otherwise the total would give the hidden one away."""
    keys = list(codes) if codes is not None else sorted(counts, key=lambda k: (k is None, str(k)))
    values = {key: int(counts.get(key, 0)) for key in keys}
    hidden = {key for key, value in values.items() if 0 < value < threshold}
    if len(hidden) == 1:
        shown = sorted((value, str(key)) for key, value in values.items() if value and key not in hidden)
        if shown:
            smallest = shown[0][1]
            hidden |= {key for key in values if str(key) == smallest}
    return {key: Count(values[key], key in hidden, threshold) for key in keys}


def count(value: int, threshold: int) -> Count:
    """One count on its own (a total): hidden when it is small but not zero."""
    return Count(int(value), 0 < value < threshold, threshold)


@dataclass(frozen=True)
class Row:
    """One line of a breakdown: this period and the one compared with."""

    code: Any
    current: Count
    previous: Count


@dataclass(frozen=True)
class Breakdown:
    """Counts per code (kind, place, department, ...), in the order the codes are listed."""

    name: str
    rows: tuple[Row, ...]

    @property
    def largest(self) -> int:
        """The longest bar a chart of it draws (at least 1)."""
        return max([1] + [r.current.chart_value for r in self.rows] + [r.previous.chart_value for r in self.rows])


@dataclass(frozen=True)
class FollowUp:
    """How the cases of a period were followed up."""

    total: Count
    contacted: Count
    median_contact_hours: float | None
    contacted_within_day: Count
    #: Share of the contacted cases contacted within one working day (None when hidden or none).
    within_day_share: float | None
    aftercare_offered: Count
    aftercare_accepted: Count
    police_wanted: Count
    police_filed: Count
    aggressor_response: Count
    long_open: Count


@dataclass(frozen=True)
class Figures:
    """Everything shown of one period (`scope`) against the one before (`previous`)."""

    scope: Scope
    previous: Scope
    threshold: int
    total: Count
    previous_total: Count
    months: Breakdown
    kinds: Breakdown
    places: Breakdown
    departments: Breakdown
    perpetrators: Breakdown
    consequences: Breakdown
    followup: FollowUp
    previous_followup: FollowUp
    measures: Breakdown
    #: Measures per kind: kind -> counts per measure (this period).
    measures_by_kind: dict[str, dict[str, Count]] = field(default_factory=dict)


def months_of(scope: Scope) -> list[str]:
    """Every month of a scope, in order (`YYYY-MM`)."""
    year, month = int(scope.first_month[:4]), int(scope.first_month[5:])
    months = []
    while f"{year:04d}-{month:02d}" <= scope.last_month and len(months) < 1200:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def shift_months(month: str, by: int) -> str:
    """`YYYY-MM` moved by `by` months."""
    index = int(month[:4]) * 12 + int(month[5:]) - 1 + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def previous_scope(scope: Scope) -> Scope:
    """What `scope` is compared with: the same months a year before (January to November against
    January to November of last year: seasons and holidays line up); a period longer than a year
    against the whole years before it."""
    years = -(-len(months_of(scope)) // 12)
    return Scope(shift_months(scope.first_month, -12 * years), shift_months(scope.last_month, -12 * years),
                 scope.kind, scope.department)


def _breakdown(name: str, current: dict, previous: dict, threshold: int, codes: Iterable[Any]) -> Breakdown:
    codes = list(codes)
    now, before = suppress(current, threshold, codes), suppress(previous, threshold, codes)
    return Breakdown(name, tuple(Row(code, now[code], before[code]) for code in codes))


def _codes(fixed: Iterable[str], *seen: dict) -> list[Any]:
    """The fixed codes, then any other value found (an older code), then None (not given) if found."""
    codes = list(fixed)
    extra = sorted({k for counts in seen for k in counts if k is not None and k not in codes})
    nones = [None] if any(None in counts for counts in seen) else []
    return codes + extra + nones


def _in(period: Scope, month: str) -> bool:
    return period.first_month <= month <= period.last_month


def _monthly_sums(rows: list[dict], period: Scope) -> tuple[dict[str, int], dict[str, int], dict[str, int],
                                                         dict[str, int]]:
    """Of one period: flags (with `total`), facts per month, per kind and per measure."""
    flags = {name: 0 for name in ("total", *q.FLAGS)}
    months: dict[str, int] = {}
    kinds = {code: 0 for code in fact_codes.KIND_BITS}
    measures = {code: 0 for code in fact_codes.MEASURE_BITS}
    for row in rows:
        if not _in(period, row["reported_month"]):
            continue
        months[row["reported_month"]] = int(row["total"])
        for name in flags:
            flags[name] += int(row[name] or 0)
        for code in kinds:
            kinds[code] += int(row[f"kind_{code}"] or 0)
        for code in measures:
            measures[code] += int(row[f"measure_{code}"] or 0)
    return flags, months, kinds, measures


def _breakdown_sums(rows: list[dict], current: bool) -> dict[str, dict]:
    """Of one period: facts per value of each breakdown column."""
    groups: dict[str, dict] = {name: {} for name in q.BREAKDOWNS}
    for row in rows:
        if bool(row["current"]) != current:
            continue
        for name in q.BREAKDOWNS:
            groups[name][row[name]] = groups[name].get(row[name], 0) + int(row["total"])
    return groups


async def _followup(session: AsyncSession, scope: Scope, flags: dict[str, int], threshold: int,
                    hours_per_day: float, now: dt.datetime) -> FollowUp:
    contact = await q.contact_times(session=session, scope=scope, within_hours=hours_per_day)
    long_open = await q.count_open_since(session=session, scope=scope, before=now - dt.timedelta(days=LONG_OPEN_DAYS))
    c = lambda value: count(value, threshold)  # noqa: E731
    hidden_contacts = 0 < contact.contacted < threshold
    share = None if hidden_contacts or not contact.contacted else contact.within / contact.contacted
    return FollowUp(
        total=c(flags["total"]), contacted=c(contact.contacted),
        median_contact_hours=None if hidden_contacts else contact.median_hours,
        contacted_within_day=c(contact.within), within_day_share=share,
        aftercare_offered=c(flags["aftercare_offered"]), aftercare_accepted=c(flags["aftercare_accepted"]),
        police_wanted=c(flags["police_wanted"]), police_filed=c(flags["police_filed"]),
        aggressor_response=c(flags["aggressor_response"]), long_open=c(long_open),
    )


async def figures(session: AsyncSession, scope: Scope, *, threshold: int, hours_per_day: float, now: dt.datetime,
                  departments: Iterable[str] = ()) -> Figures:
    """The figures of `scope` against the same months a year earlier (`previous_scope`).

    Both periods come from the same scans of the facts over their months together (one a row per
    month with the flags, kinds and measures; one per period and place, department and perpetrator
    kind), split here; the measures per kind, the median time to contact and the long-open cases are
    asked per period."""
    before = previous_scope(scope)
    both = Scope(before.first_month, scope.last_month, scope.kind, scope.department)
    monthly = await q.monthly_counts(session=session, scope=both)
    breakdown_rows = await q.breakdown_counts(session=session, scope=both, current_from=scope.first_month)
    pairs = await q.measure_pairs(session=session, scope=scope)
    flags, per_month, kinds_now, measures_now = _monthly_sums(monthly, scope)
    previous_flags, per_month_before, kinds_before, measures_before = _monthly_sums(monthly, before)
    groups, previous_groups = _breakdown_sums(breakdown_rows, True), _breakdown_sums(breakdown_rows, False)
    followup = await _followup(session, scope, flags, threshold, hours_per_day, now)
    previous_followup = await _followup(session, before, previous_flags, threshold, hours_per_day, now)
    months, before_months = months_of(scope), months_of(before)
    now_counts = suppress(per_month, threshold, months)
    before_counts = suppress(per_month_before, threshold, before_months)
    month_rows = tuple(Row(month, now_counts[month], before_counts[earlier])
                       for month, earlier in zip(months, before_months))
    breakdowns: dict[str, Breakdown] = {}
    for name, dimension, fixed in (("places", "place", categories.PLACES),
                                   ("departments", "department", tuple(departments)),
                                   ("perpetrators", "perpetrator", categories.PERPETRATORS)):
        current, previous = groups[dimension], previous_groups[dimension]
        breakdowns[name] = _breakdown(name, current, previous, threshold, _codes(fixed, current, previous))
    kinds_now = {code: n for code, n in kinds_now.items() if n}
    kinds_before = {code: n for code, n in kinds_before.items() if n}
    by_kind: dict[tuple[str, str], int] = {}
    for (kind_bits, measure_bits), n in pairs.items():
        for kind in fact_codes.codes_of(fact_codes.KIND_BITS, kind_bits or 0):
            for measure in fact_codes.codes_of(fact_codes.MEASURE_BITS, measure_bits or 0):
                by_kind[(kind, measure)] = by_kind.get((kind, measure), 0) + n
    measures_by_kind = {}
    for kind in categories.KINDS:
        counts = {measure: n for (k, measure), n in by_kind.items() if k == kind}
        if counts:
            measures_by_kind[kind] = suppress(counts, threshold, fact_codes.MEASURES)
    consequence_codes = fact_codes.CONSEQUENCES
    return Figures(
        scope=scope, previous=before, threshold=threshold,
        total=count(flags["total"], threshold), previous_total=count(previous_flags["total"], threshold),
        months=Breakdown("months", month_rows),
        kinds=_breakdown("kinds", kinds_now, kinds_before, threshold, _codes(categories.KINDS, kinds_now, kinds_before)),
        places=breakdowns["places"], departments=breakdowns["departments"], perpetrators=breakdowns["perpetrators"],
        consequences=_breakdown("consequences", {c: flags[c] for c in consequence_codes},
                                {c: previous_flags[c] for c in consequence_codes}, threshold, consequence_codes),
        followup=followup, previous_followup=previous_followup,
        measures=_breakdown("measures", measures_now, measures_before, threshold, fact_codes.MEASURES),
        measures_by_kind=measures_by_kind,
    )

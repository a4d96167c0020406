"""The statistics pages: /stats (figures of a period) and /stats/year/{year} (the yearly overview).

Both count case facts only (`bot.core.stats.figures`), live and purged cases alike, with every
small count hidden ("<5"). Each figure is an inline SVG chart (bot.web.charts) with a table beside
it holding the exact shown values. The yearly overview is the same template as a page and, through
`meldbot report yearly`, as a PDF (`yearly_html`)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web
from babel.dates import format_date
from babel.numbers import format_decimal, format_percent
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import yearly
from bot.core.stats import Breakdown, Figures, figures, months_of
from bot.web.charts import Bar, bar_chart, column_chart
from bot.web.sessions import SessionPages
from dialogs import Translator, categories
from storage import repo, transaction
from storage.repo import stats as stats_repo
from storage.repo.stats import Scope

#: A month in a filter: `YYYY-MM`.
MONTH = re.compile(r"^(\d{4})-(\d{2})$")
#: The longest period /stats shows (a longer one is ignored, like any bad filter).
MAX_MONTHS = 120
#: Formats of the case export offered on /stats (the download itself is bot.web.exports).
EXPORT_FORMATS = ("csv", "xlsx")


@dataclass(frozen=True)
class Figure:
    """One chart with the table beside it: `columns` head the table, each row starts with its label."""

    id: str
    title: str
    chart: Markup
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _month(value: str | None, latest_year: int) -> str | None:
    """A `YYYY-MM` from a filter, or None for anything else."""
    found = MONTH.match(value or "")
    if not found:
        return None
    year, month = int(found.group(1)), int(found.group(2))
    return value if yearly.FIRST_YEAR <= year <= latest_year and 1 <= month <= 12 else None


def _valid_year(value: str, latest: int) -> int | None:
    """The year of /stats/year/{year}: four digits, from 2000 up to next year."""
    if not re.fullmatch(r"\d{4}", value):
        return None
    year = int(value)
    return year if yearly.FIRST_YEAR <= year <= latest else None


class _Labels:
    """Catalog labels of codes, formatting of months, hours and shares in one language."""

    def __init__(self, t: Translator, departments: dict[str, str]):
        self.t = t
        self.departments = departments

    def code(self, prefix: str, code: Any) -> str:
        if code is None:
            return self.t("stats.not_given")
        if prefix == "department":
            return self.departments.get(code, str(code))
        key = f"{prefix}.{code}"
        text = self.t(key)
        return str(code) if text == key else text  # an older code no catalog names any more

    def month(self, month: str, with_year: bool = True) -> str:
        day = dt.date(int(month[:4]), int(month[5:]), 1)
        return format_date(day, "LLL y" if with_year else "LLL", locale=self.t.language)

    def period(self, scope: Scope) -> str:
        if scope.first_month.endswith("-01") and scope.last_month == scope.first_month[:4] + "-12":
            return scope.first_month[:4]
        if scope.first_month == scope.last_month:
            return self.month(scope.first_month)
        return f"{self.month(scope.first_month)} – {self.month(scope.last_month)}"

    def hours(self, value: float | None) -> str:
        if value is None:
            return "—"
        return self.t("stats.hours", hours=format_decimal(value, format="#,##0.#", locale=self.t.language))

    def share(self, value: float | None) -> str:
        return "—" if value is None else format_percent(value, locale=self.t.language)


class StatsPages(SessionPages):
    """Routes of this part of the case pages (CasePages includes them)."""

    def stats_routes(self) -> list[web.RouteDef]:
        """The routes to add to the web application."""
        return [
            web.get("/stats", self.stats_page),
            web.get("/stats/year/{year}", self.yearly_page),
        ]

    # -- /stats -------------------------------------------------------------------------------------

    def _filters(self, query) -> dict[str, str]:
        """The filters of /stats; a bad value is ignored (its default is used), never an error."""
        today = self.clock().astimezone(self.timezone).date()
        default_from, default_to = f"{today.year:04d}-01", f"{today.year:04d}-{today.month:02d}"
        first = _month(query.get("from"), today.year + 1) or default_from
        last = _month(query.get("to"), today.year + 1) or default_to
        if first > last or len(months_of(Scope(first, last))) > MAX_MONTHS:
            first, last = default_from, default_to
        kind = query.get("kind") if query.get("kind") in categories.KINDS else ""
        department = query.get("department") if query.get("department") in self.departments else ""
        return {"from": first, "to": last, "kind": kind, "department": department}

    async def _figures(self, session: AsyncSession, scope: Scope) -> Figures:
        return await figures(session, scope, threshold=self.stats.min_count,
                             hours_per_day=self.casework.working_time.hours_per_day, now=self.clock(),
                             departments=list(self.departments))

    async def stats_page(self, request: web.Request) -> web.Response:
        await self._recheck(request)
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            filters = self._filters(request.query)
            scope = Scope(filters["from"], filters["to"], filters["kind"] or None, filters["department"] or None)
            found = await self._figures(session, scope)
            years = await stats_repo.fact_years(session=session)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_stats",
                                 now=self.clock(), detail={"filters": {k: v for k, v in filters.items() if v}})
        labels = _Labels(Translator(viewer.language), self.departments)
        show_departments = bool(self.departments) or any(r.code is not None for r in found.departments.rows)
        this_year = self.clock().astimezone(self.timezone).year
        return self.render(
            "stats.html", viewer.language, viewer=viewer, filters=filters, kinds=categories.KINDS,
            departments=self.departments, figures=found, current_label=labels.period(found.scope),
            previous_label=labels.period(found.previous), sections=self._sections(found, labels, show_departments),
            followup=self._followup(found, labels), export_years=years, export_formats=EXPORT_FORMATS,
            this_year=this_year,
        )

    # -- the yearly overview ------------------------------------------------------------------------

    async def yearly_page(self, request: web.Request) -> web.Response:
        await self._recheck(request)
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            raw = request.match_info["year"]
            year = _valid_year(raw, self.clock().astimezone(self.timezone).year + 1)
            if year is None:
                await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_missing",
                                     now=self.clock(), detail={"request": "yearly", "year": raw[:16]})
                return self.render("not_found.html", viewer.language, status=404, viewer=viewer)
            values = await self.yearly_values(session, year, viewer.language)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_yearly",
                                 now=self.clock(), detail={"year": year})
        return self.render("yearly.html", viewer.language, viewer=viewer, pdf=False, **values)

    async def yearly_values(self, session: AsyncSession, year: int, language: str) -> dict[str, Any]:
        """What yearly.html shows of `year` (the page and the PDF alike)."""
        scope = Scope.year(year)
        found = await self._figures(session, scope)
        extra = await yearly.extra_figures(session, scope, threshold=self.stats.min_count)
        labels = _Labels(Translator(language), self.departments)
        sections = self._sections(found, labels, show_departments=False)
        t = labels.t
        measures = self._figure("measures", t("stats.measures"), t("stats.measure"), found.measures,
                                lambda code: labels.code("measure", code), labels, found)
        points = [self._point(point, labels) for point in yearly.discussion_points(found, extra, year=year)]
        measure_codes = [r.code for r in found.measures.rows]
        by_kind = [(labels.code("kind", kind), [counts[m].shown for m in measure_codes])
                   for kind, counts in found.measures_by_kind.items()]
        return {
            "year": year, "figures": found, "current_label": labels.period(found.scope),
            "previous_label": labels.period(found.previous), "nature": [s for s in sections if s.id != "months"],
            "months": next(s for s in sections if s.id == "months"), "followup": self._followup(found, labels),
            "measures": measures, "measure_labels": [labels.code("measure", m) for m in measure_codes],
            "measures_by_kind": by_kind, "points": points,
            "made_on": self.clock().astimezone(self.timezone).date(), "this_year": year,
        }

    def yearly_html(self, values: dict[str, Any], language: str) -> str:
        """The yearly overview as a whole HTML document for the PDF (no session, no navigation)."""
        return self.render("yearly.html", language, viewer=None, pdf=True, **values).text

    # -- building the figures -----------------------------------------------------------------------

    def _figure(self, key: str, title: str, column: str, breakdown: Breakdown, label: Callable[[Any], str],
                labels: _Labels, found: Figures, columns: bool = False) -> Figure:
        current, previous = labels.period(found.scope), labels.period(found.previous)
        bars = [Bar(label(r.code), r.current, r.previous) for r in breakdown.rows]
        draw = column_chart if columns else bar_chart
        chart = draw(bars, title=title, chart_id=f"chart-{key}", current_label=current, previous_label=previous,
                     summary=labels.t("stats.chart_summary"))
        rows = tuple((b.label, b.current.shown, b.previous.shown) for b in bars)
        return Figure(key, title, chart, (column, current, previous), rows)

    def _sections(self, found: Figures, labels: _Labels, show_departments: bool) -> list[Figure]:
        t = labels.t
        many_years = found.scope.first_month[:4] != found.scope.last_month[:4]
        months = self._figure("months", t("stats.per_month"), t("stats.month"), found.months,
                              lambda m: labels.month(m, with_year=many_years), labels, found, columns=True)
        # The month compared with is a different one when the period is not a whole year: say which.
        month_rows = tuple((labels.month(r.code), r.current.shown, r.previous.shown)
                           for r in found.months.rows)
        previous_months = months_of(found.previous)
        if found.previous.first_month[5:] != found.scope.first_month[5:] or many_years:
            month_rows = tuple((labels.month(r.code), r.current.shown, f"{r.previous.shown} ({labels.month(m)})")
                               for r, m in zip(found.months.rows, previous_months))
        months = Figure(months.id, months.title, months.chart, months.columns, month_rows)
        figures_ = [
            months,
            self._figure("kinds", t("stats.per_kind"), t("stats.kind"), found.kinds,
                         lambda c: labels.code("kind", c), labels, found),
            self._figure("places", t("stats.per_place"), t("stats.place"), found.places,
                         lambda c: labels.code("place", c), labels, found),
        ]
        if show_departments:
            figures_.append(self._figure("departments", t("stats.per_department"), t("stats.department"),
                                         found.departments, lambda c: labels.code("department", c), labels, found))
        figures_ += [
            self._figure("perpetrators", t("stats.per_perpetrator"), t("stats.perpetrator"), found.perpetrators,
                         lambda c: labels.code("perpetrator", c), labels, found),
            self._figure("consequences", t("stats.consequences"), t("stats.consequence"), found.consequences,
                         lambda c: labels.code("consequence", c), labels, found),
        ]
        return figures_

    def _followup(self, found: Figures, labels: _Labels) -> Figure:
        """The follow-up: counts as a chart, and in the table also the median time and the share."""
        t = labels.t
        now, before = found.followup, found.previous_followup
        counted = [("contacted", "stats.fu_contacted"), ("contacted_within_day", "stats.fu_within_day"),
                   ("aftercare_offered", "stats.fu_aftercare_offered"),
                   ("aftercare_accepted", "stats.fu_aftercare_accepted"),
                   ("police_wanted", "stats.fu_police_wanted"), ("police_filed", "stats.fu_police_filed"),
                   ("aggressor_response", "stats.fu_aggressor_response"), ("long_open", "stats.fu_long_open")]
        bars = [Bar(t(key), getattr(now, name), getattr(before, name)) for name, key in counted]
        current, previous = labels.period(found.scope), labels.period(found.previous)
        title = t("stats.followup_figures")
        chart = bar_chart(bars, title=title, chart_id="chart-followup", current_label=current,
                          previous_label=previous, summary=t("stats.chart_summary"))

        def within(f) -> str:
            share = yearly.safe_share(f.contacted_within_day, f.contacted)
            shown = f.contacted_within_day.shown
            return f"{shown} ({labels.share(share)})" if share is not None else shown

        rows = [(t("stats.fu_total"), now.total.shown, before.total.shown),
                (t("stats.fu_contacted"), now.contacted.shown, before.contacted.shown),
                (t("stats.fu_median"), labels.hours(now.median_contact_hours),
                 labels.hours(before.median_contact_hours)),
                (t("stats.fu_within_day"), within(now), within(before))]
        rows += [(bar.label, bar.current.shown, bar.previous.shown) for bar in bars[2:]]
        return Figure("followup", title, chart, (t("stats.followup_item"), current, previous), tuple(rows))

    @staticmethod
    def _point(point: yearly.Point, labels: _Labels) -> str:
        t = labels.t
        values: dict[str, str] = dict(point.counts)
        values |= {name: t(key) for name, key in point.labels.items()}
        values |= {name: labels.share(share) for name, share in point.shares.items()}
        return t(point.key, **values)


__all__ = ["EXPORT_FORMATS", "Figure", "StatsPages"]

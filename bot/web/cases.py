"""The coordinators' case pages: the case list and the case page with its actions (evidence and
the privacy actions are in bot.web.evidence and bot.web.privacy).

Server-rendered (Jinja2, autoescaped), no script at all. Every page view, download, change and
refusal is written to the audit log; the images a case page shows inline are recorded in that
page view's entry, so that loading them needs no write (on SQLite, no wait for the single write lock).
"""

from __future__ import annotations

import datetime as dt
import logging
from importlib import resources

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.casework import MAX_LESSON_CHARS, RECORDED_HOW, STATUSES, STEPS, CaseError
from bot.core.privacy_actions import ERASE_REASONS, MAX_HOLD_REASON
from bot.web.evidence import shown_images
from bot.web.pages import (
    _NOTICES,
    AUDIT_INPUT,
    EARLIEST,
    INLINE_TYPES,
    LATEST,
    LIST_LIMIT,
    Viewer,
)
from bot.web.exports import ExportPages
from bot.web.privacy import PrivacyPages, erased_notice
from bot.web.recorded import RecordPages
from bot.web.stats import StatsPages
from dialogs import Translator, categories
from storage import repo, transaction
from storage.models import Case, CaseFact

log = logging.getLogger(__name__)

#: Notices the case page shows after an action (the shared ones plus this module's own).
NOTICES = _NOTICES | {"evaluate", "recorded"}


class CasePages(StatsPages, ExportPages, RecordPages, PrivacyPages):
    """Routes and handlers of the case pages (login and sessions come from SessionPages, files and the
    privacy actions from EvidencePages and PrivacyPages)."""

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the web application."""
        return [
            web.get("/cases", self.list_page),
            # Before /cases/{reference}: `new` is no reference.
            *self.record_routes(),
            web.get("/cases/{reference}", self.case_page),
            web.post("/cases/{reference}", self.case_action),
            *self.privacy_routes(),
            *self.stats_routes(),
            *self.export_routes(),
            web.get("/login/{token}", self.login_page),
            web.post("/login", self.login),
            web.post("/logout", self.logout),
            web.get("/static/meldbot.css", self.stylesheet),
            web.get("/", self.home),
        ]

    # -- pages ----------------------------------------------------------------------------------------

    async def list_page(self, request: web.Request) -> web.Response:
        await self._recheck(request)
        now = self.clock()
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            query = request.query
            filters = {
                "status": query.get("status") if query.get("status") in STATUSES else "",
                "kind": query.get("kind") if query.get("kind") in categories.KINDS else "",
                "since": _date(query.get("since")), "until": _date(query.get("until")),
                "mine": query.get("mine") == "1", "overdue": query.get("overdue") == "1",
                "reference": (query.get("reference") or "").strip()[:20],
            }
            since = _start_of(filters["since"], self.timezone)
            until = _start_of(filters["until"] + dt.timedelta(days=1), self.timezone) if filters["until"] else None
            cases = await repo.list_cases(
                session=session, status=filters["status"] or None, kind=filters["kind"] or None, since=since,
                until=until, assigned_to_id=viewer.coordinator.identity if filters["mine"] else None,
                reference=filters["reference"] or None, limit=LIST_LIMIT + 1,
            )
            truncated = len(cases) > LIST_LIMIT
            cases = cases[:LIST_LIMIT]
            recorded = await _recorded(session, cases)
            rows = [(case, self.casework.overdue(case, now), recorded.get(case.id)) for case in cases]
            if filters["overdue"]:
                rows = [row for row in rows if row[1]]
            # The filters used, never free text: the reference filter is the only typed input.
            used = {"status": filters["status"], "kind": filters["kind"],
                    "since": filters["since"].isoformat() if filters["since"] else "",
                    "until": filters["until"].isoformat() if filters["until"] else "",
                    "mine": filters["mine"], "overdue": filters["overdue"], "reference": filters["reference"]}
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_list", now=now,
                                 detail={"results": len(rows), "filters": {k: v for k, v in used.items() if v}})
        return self.render("cases.html", viewer.language, viewer=viewer, rows=rows, filters=filters,
                           statuses=STATUSES, kinds=categories.KINDS, truncated=truncated, limit=LIST_LIMIT,
                           erased=erased_notice(query.get("erased")))

    async def case_page(self, request: web.Request) -> web.Response:
        await self._recheck(request)
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            case = await self._case(request, session)
            if case is None:
                await self._audit_missing(session, request, viewer, "page")
                return self.render("not_found.html", viewer.language, status=404, viewer=viewer)
            if case.reference != request.match_info["reference"]:
                raise web.HTTPSeeOther(f"/cases/{case.reference}")
            # Without the bytes (a deferred column): 30 photos cost 30 small rows here.
            attachments = await repo.list_attachments(session=session, case_id=case.id)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_case",
                                 case_reference=case.reference, now=self.clock(), detail=shown_images(attachments))
            return await self._render_case(session, case, viewer, attachments, notice=request.query.get("done"))

    async def _render_case(self, session: AsyncSession, case: Case, viewer: Viewer, attachments: list,
                           notice: str | None = None, error: str | None = None, status: int = 200) -> web.Response:
        now = self.clock()
        # No reporter row: an anonymous case, or one a coordinator recorded for someone else.
        reporter = None if case.anonymous or case.reporter_id is None else \
            await repo.get_reporter(session=session, reporter_id=case.reporter_id)
        events = await repo.list_case_events(session=session, case=case)
        audit = await repo.list_audit(session=session, case_reference=case.reference, limit=30)
        evaluation = case.evaluation or {}
        return self.render(
            "case.html", viewer.language, status=status, viewer=viewer, case=case, reporter=reporter, events=events,
            attachments=attachments, audit=audit, overdue=self.casework.overdue(case, now),
            police_due=self.casework.police_report_due(case) if case.police_report_wanted else None,
            statuses=STATUSES, steps=STEPS, notice=notice if notice in NOTICES else None,
            error=error, today=now.astimezone(self.timezone).date().isoformat(), answers=case.answers or {},
            inline_types=INLINE_TYPES, erase_reasons=ERASE_REASONS, hold_reason_chars=MAX_HOLD_REASON,
            measures=repo.MEASURES, evaluation=evaluation, evaluated_at=_moment(evaluation.get("at")),
            lesson_chars=MAX_LESSON_CHARS, departments=self.departments, recorded_how=RECORDED_HOW,
        )

    async def case_action(self, request: web.Request) -> web.Response:
        """Every change on the case page: one form field `action` names it."""
        await self._recheck(request)
        now = self.clock()
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            form = await self._form(request, viewer, session)
            if isinstance(form, web.Response):
                return form
            case = await self._case(request, session)
            if case is None:
                await self._audit_missing(session, request, viewer, "action")
                return self.render("not_found.html", viewer.language, status=404, viewer=viewer)
            case = await repo.lock_case(session=session, case=case)
            action = form.get("action", "")
            # Checkboxes: one field per ticked measure (the form dict keeps only the last).
            measures = [m for m in (await request.post()).getall("measures", []) if isinstance(m, str)]
            who = viewer.coordinator
            try:
                async with session.begin_nested():
                    if action == "take":
                        await self.casework.take(session, case, who, now, expected=form.get("expected") or None,
                                                 take_over=bool(form.get("expected")))
                    elif action == "status":
                        await self.casework.set_status(session, case, who, form.get("status", ""),
                                                       form.get("summary", ""), now, measures=measures,
                                                       lesson=form.get("lesson", ""))
                    elif action == "evaluate":
                        await self.casework.evaluate(session, case, who, measures, form.get("lesson", ""), now)
                    elif action == "step":
                        await self.casework.record_step(session, case, who, form.get("step", ""),
                                                        _date(form.get("date")), now)
                    elif action == "note":
                        await self.casework.add_note(session, case, who, form.get("text", ""), now)
                    elif action == "message":
                        await self.casework.message_reporter(session, case, who, form.get("text", ""), now)
                    else:
                        raise CaseError("unknown_action")
                    await repo.add_audit(session=session, actor=who.identity, action=action, now=now,
                                         case_reference=case.reference,
                                         detail={k: form[k] for k in ("status", "step") if form.get(k) and
                                                 k == action})
            except CaseError as failure:
                await session.refresh(case)
                attachments = await repo.list_attachments(session=session, case_id=case.id)
                await repo.add_audit(session=session, actor=who.identity, action="refused", now=now,
                                     case_reference=case.reference,
                                     detail={"action": action[:AUDIT_INPUT], "error": failure.code,
                                             **shown_images(attachments)})
                message = Translator(viewer.language)(f"case.error_{failure.code}", **failure.values)
                return await self._render_case(session, case, viewer, attachments, error=message, status=409)
        log.info("case action=%s", action)
        if self.on_outbox:
            self.on_outbox()
        raise web.HTTPSeeOther(f"/cases/{case.reference}?done={action}#timeline")

    async def stylesheet(self, request: web.Request) -> web.Response:
        css = resources.files("bot.web").joinpath("static", "meldbot.css").read_text("utf-8")
        response = web.Response(text=css, content_type="text/css")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


async def _recorded(session: AsyncSession, cases: list[Case]) -> dict[int, dict]:
    """Of the listed cases, those a coordinator recorded for someone else: case ID -> their answers.
    The plain `recorded` flag of the facts finds them, so only those few cases are opened."""
    ids = [case.id for case in cases]
    if not ids:
        return {}
    found = set(await session.scalars(select(CaseFact.case_id).where(CaseFact.case_id.in_(ids),
                                                                     CaseFact.recorded.is_(True))))
    return {case.id: case.answers for case in cases if case.id in found}


def _date(value: str | None) -> dt.date | None:
    """A date from a form, or None for anything else (including dates no case can have)."""
    try:
        day = dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None
    return day if day is not None and EARLIEST <= day <= LATEST else None


def _moment(value: str | None) -> dt.datetime | None:
    """A stored ISO moment, or None."""
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def _start_of(day: dt.date | None, tz: dt.tzinfo) -> dt.datetime | None:
    return dt.datetime.combine(day, dt.time.min, tz) if day else None


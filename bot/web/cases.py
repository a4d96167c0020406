"""The coordinators' case pages: the case list, the case page with its actions, and evidence.

Server-rendered (Jinja2, autoescaped), no script at all. Every page view, download, change and
refusal is written to the audit log; the images a case page shows inline are recorded in that
page view's entry, so that loading them needs no write (on SQLite, no wait for the single write lock).
"""

from __future__ import annotations

import datetime as dt
import logging
from importlib import resources
from urllib.parse import quote

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.casework import STATUSES, STEPS, CaseError
from bot.core.errors import DATABASE_ERRORS
from bot.web.pages import (
    _NOTICES,
    AUDIT_INPUT,
    CHUNK_BYTES,
    EARLIEST,
    INLINE_TYPES,
    LATEST,
    LIST_LIMIT,
    Viewer,
)
from bot.web.sessions import SessionPages
from dialogs import Translator, categories
from storage import repo, transaction
from storage.models import Case

log = logging.getLogger(__name__)


class CasePages(SessionPages):
    """Routes and handlers of the case pages (login and sessions come from SessionPages)."""

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the web application."""
        return [
            web.get("/cases", self.list_page),
            web.get("/cases/{reference}", self.case_page),
            web.post("/cases/{reference}", self.case_action),
            web.get("/cases/{reference}/attachments/{attachment_id:\\d+}", self.attachment),
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
            rows = [(case, self.casework.overdue(case, now)) for case in cases]
            if filters["overdue"]:
                rows = [(case, late) for case, late in rows if late]
            # The filters used, never free text: the reference filter is the only typed input.
            used = {"status": filters["status"], "kind": filters["kind"],
                    "since": filters["since"].isoformat() if filters["since"] else "",
                    "until": filters["until"].isoformat() if filters["until"] else "",
                    "mine": filters["mine"], "overdue": filters["overdue"], "reference": filters["reference"]}
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_list", now=now,
                                 detail={"results": len(rows), "filters": {k: v for k, v in used.items() if v}})
        return self.render("cases.html", viewer.language, viewer=viewer, rows=rows, filters=filters,
                           statuses=STATUSES, kinds=categories.KINDS, truncated=truncated, limit=LIST_LIMIT)

    async def _case(self, request: web.Request, session: AsyncSession) -> Case | None:
        reference = request.match_info["reference"]
        if len(reference) > 20:
            return None
        return await repo.get_case(session=session, reference=reference)

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
                                 case_reference=case.reference, now=self.clock(), detail=_shown(attachments))
            return await self._render_case(session, case, viewer, attachments, notice=request.query.get("done"))

    async def _audit_missing(self, session: AsyncSession, request: web.Request, viewer: Viewer, kind: str,
                             case_reference: str | None = None) -> None:
        """Audits a request for a case or file that does not exist (cut: it is arbitrary input)."""
        detail = {"request": kind}
        if case_reference is None:
            detail["reference"] = request.match_info["reference"][:AUDIT_INPUT]
        if kind == "attachment":
            detail["attachment"] = request.match_info["attachment_id"][:AUDIT_INPUT]
        await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_missing",
                             now=self.clock(), case_reference=case_reference, detail=detail)

    async def _render_case(self, session: AsyncSession, case: Case, viewer: Viewer, attachments: list,
                           notice: str | None = None, error: str | None = None, status: int = 200) -> web.Response:
        now = self.clock()
        reporter = None if case.anonymous else await repo.get_reporter(session=session, reporter_id=case.reporter_id)
        events = await repo.list_case_events(session=session, case=case)
        audit = await repo.list_audit(session=session, case_reference=case.reference, limit=30)
        return self.render(
            "case.html", viewer.language, status=status, viewer=viewer, case=case, reporter=reporter, events=events,
            attachments=attachments, audit=audit, overdue=self.casework.overdue(case, now),
            police_due=self.casework.police_report_due(case) if case.police_report_wanted else None,
            statuses=STATUSES, steps=STEPS, notice=notice if notice in _NOTICES else None,
            error=error, today=now.astimezone(self.timezone).date().isoformat(), answers=case.answers or {},
            inline_types=INLINE_TYPES,
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
            who = viewer.coordinator
            try:
                async with session.begin_nested():
                    if action == "take":
                        await self.casework.take(session, case, who, now, expected=form.get("expected") or None,
                                                 take_over=bool(form.get("expected")))
                    elif action == "status":
                        await self.casework.set_status(session, case, who, form.get("status", ""),
                                                       form.get("summary", ""), now)
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
                                             **_shown(attachments)})
                message = Translator(viewer.language)(f"case.error_{failure.code}", **failure.values)
                return await self._render_case(session, case, viewer, attachments, error=message, status=409)
        log.info("case action=%s", action)
        if self.on_outbox:
            self.on_outbox()
        raise web.HTTPSeeOther(f"/cases/{case.reference}?done={action}#timeline")

    async def attachment(self, request: web.Request) -> web.StreamResponse:
        """One file of a case, streamed from the database in chunks.

        An image shown inline only reads: the case page's own audit entry records the images it
        shows, so thirty thumbnails take no write lock. (The platform recheck still writes when it
        is due, once per RECHECK_EVERY; the case page the images are on has usually just done it.)
        A download writes its own audit entry, in a short transaction before any bytes are read."""
        await self._recheck(request)
        raw_id = request.match_info["attachment_id"]
        async with self.sessions() as session:
            viewer = await self._viewer(request, session, touch=False)
            if viewer is None:
                return self._login_needed(request)
            case = await self._case(request, session)
            # More digits than any ID: not a number to give the database (nor to int() unbounded).
            found = await repo.get_case_attachment(session=session, case_id=case.id, attachment_id=int(raw_id)) \
                if case is not None and len(raw_id) <= 9 else None
        if found is None or found[1] is None:
            async with transaction(self.sessions) as session:
                await self._audit_missing(session, request, viewer, "attachment",
                                          case_reference=case.reference if case is not None else None)
            return self.render("not_found.html", viewer.language, status=404, viewer=viewer)
        attachment, length = found
        inline = attachment.media_type in INLINE_TYPES and request.query.get("download") != "1"
        if not inline:
            async with transaction(self.sessions) as session:
                await repo.touch_web_session(session=session, digest=viewer.digest, now=self.clock())
                await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_attachment",
                                     case_reference=case.reference, now=self.clock(),
                                     detail={"attachment": attachment.id})
        response = web.StreamResponse()
        response.content_type = attachment.media_type if inline else "application/octet-stream"
        response.content_length = length
        response.headers["Content-Disposition"] = \
            f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{quote(attachment.filename)}"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        await response.prepare(request)
        if request.method != "HEAD":
            await self._send_bytes(response, attachment)
        return response

    async def _send_bytes(self, response: web.StreamResponse, attachment) -> None:
        """Writes the file chunk by chunk, each read and opened in its own short read (no connection
        is held while a slow browser receives)."""
        try:
            for index in range(repo.attachment_chunks(attachment)):
                async with self.sessions() as session:
                    chunk = await repo.read_attachment_chunk(session=session, attachment=attachment, index=index)
                if chunk is None:
                    raise LookupError("attachment removed while being sent")
                await response.write(chunk)
        except (*DATABASE_ERRORS, LookupError) as error:
            # The headers are sent, a 503 page cannot follow: closing the connection short of
            # Content-Length tells the browser the file is incomplete.
            log.warning("case pages: attachment not sent in full cause=%s", type(error).__name__)
            response.force_close()

    async def stylesheet(self, request: web.Request) -> web.Response:
        css = resources.files("bot.web").joinpath("static", "meldbot.css").read_text("utf-8")
        response = web.Response(text=css, content_type="text/css")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


def _shown(attachments) -> dict[str, list[int]]:
    """Audit detail: the files a case page shows inline (their bytes are fetched without an entry)."""
    images = [a.id for a in attachments if a.media_type in INLINE_TYPES]
    return {"attachments_shown": images} if images else {}


def _date(value: str | None) -> dt.date | None:
    """A date from a form, or None for anything else (including dates no case can have)."""
    try:
        day = dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None
    return day if day is not None and EARLIEST <= day <= LATEST else None


def _start_of(day: dt.date | None, tz: dt.tzinfo) -> dt.datetime | None:
    return dt.datetime.combine(day, dt.time.min, tz) if day else None


"""The coordinators' case pages: login through the chat, the case list and the case page.

Server-rendered (Jinja2, autoescaped), no script at all. A session starts only from a single-use
link the bot sent a coordinator in a direct chat; the cookie holds a random token of which the
database keeps a digest. Every page view and every change is written to the audit log.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from babel.dates import format_date, format_datetime
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dialogs import Translator, categories
from dialogs.i18n import LANGUAGES
from storage import repo, transaction
from storage.models import Case

from .casework import STATUSES, STEPS, CaseError, CaseWork, Coordinator, login_digest
from .config import WebSettings
from .engine import utc_now

log = logging.getLogger(__name__)

SESSION_COOKIE = "meldbot_session"
#: Where to go after logging in (set on the "please log in" page; not a secret).
NEXT_COOKIE = "meldbot_next"
#: "This browser has logged in before": lets the login page retry once as a same-site request.
KNOWN_COOKIE = "meldbot_known"
#: Images a browser may show inline; everything else is offered as a download.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
MAX_FORM_BYTES = 64 * 1024
#: How often a session's owner is checked again with the platform.
RECHECK_EVERY = dt.timedelta(minutes=5)
#: Rows on one list page; a longer result says so and asks for a narrower filter.
LIST_LIMIT = 500
#: Dates outside these are ignored in filters and forms.
EARLIEST, LATEST = dt.date(2000, 1, 1), dt.date(2100, 1, 1)


@dataclass(frozen=True)
class Viewer:
    """The coordinator behind a request."""

    coordinator: Coordinator
    csrf: str
    language: str
    digest: str


class CasePages:
    """Routes and handlers of the case pages."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        casework: CaseWork,
        web_settings: WebSettings,
        organisation: str,
        language: str,
        timezone: dt.tzinfo,
        clock: Callable[[], dt.datetime] = utc_now,
        on_outbox: Callable[[], None] | None = None,
        is_coordinator: Callable[[str, str], Awaitable[bool | None]] | None = None,
    ):
        self.sessions = sessions
        self.casework = casework
        self.settings = web_settings
        self.organisation = organisation
        self.language = language
        self.timezone = timezone
        self.clock = clock
        self.on_outbox = on_outbox
        self.is_coordinator = is_coordinator
        self.secure = web_settings.public_url.startswith("https://")
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("bot", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
        )

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

    # -- rendering ----------------------------------------------------------------------------------

    def render(self, template: str, language: str, status: int = 200, viewer: Viewer | None = None,
               **values: Any) -> web.Response:
        t = Translator(language)
        tz = self.timezone

        def when(moment: dt.datetime | None) -> str:
            return format_datetime(moment.astimezone(tz), "d MMM y HH:mm", locale=t.language) if moment else "—"

        def day(value: dt.date | str | None) -> str:
            if not value:
                return "—"
            return format_date(dt.date.fromisoformat(value) if isinstance(value, str) else value, "d MMM y",
                               locale=t.language)

        html = self.templates.get_template(template).render(
            t=t, when=when, day=day, viewer=viewer, organisation=self.organisation, language=t.language,
            languages=LANGUAGES, **values,
        )
        response = web.Response(text=html, content_type="text/html", status=status)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    def _page_language(self, request: web.Request, viewer: Viewer | None = None) -> str:
        wanted = request.query.get("lang")
        if wanted in LANGUAGES:
            return wanted
        return viewer.language if viewer else self.language

    # -- sessions -----------------------------------------------------------------------------------

    async def _viewer(self, request: web.Request, session: AsyncSession) -> Viewer | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token or len(token) > 200:
            return None
        digest = login_digest(token)
        row = await repo.get_web_session(session=session, digest=digest)
        now = self.clock()
        if row is None or row.ended_at is not None or row.expires_at <= now or \
                row.last_seen_at + dt.timedelta(minutes=self.settings.session_idle_minutes) <= now:
            return None
        language = request.query.get("lang") if request.query.get("lang") in LANGUAGES else None
        await repo.touch_web_session(session=session, digest=digest, now=now, language=language)
        return Viewer(Coordinator(row.coordinator, row.name), row.csrf_token, language or row.language, digest)

    async def _recheck(self, request: web.Request) -> None:
        """Every few minutes, ask the platform again whether the session's owner is still a
        coordinator (someone who left the room or team loses access within minutes, not hours).
        Outside the page's transaction: the platform may take seconds to answer."""
        token = request.cookies.get(SESSION_COOKIE)
        if self.is_coordinator is None or not token or len(token) > 200:
            return
        digest = login_digest(token)
        now = self.clock()
        async with self.sessions() as session:
            row = await repo.get_web_session(session=session, digest=digest)
        if row is None or row.ended_at is not None or now - row.checked_at < RECHECK_EVERY:
            return
        platform, _, user = row.coordinator.partition(":")
        allowed = await self.is_coordinator(platform, user)
        if allowed is None:
            return  # the platform cannot tell now: ask again at the next request
        async with transaction(self.sessions) as session:
            if allowed:
                await repo.mark_web_session_checked(session=session, digest=digest, now=now)
            else:
                await repo.end_web_session(session=session, digest=digest, now=now)
                await repo.add_audit(session=session, actor=row.coordinator, action="no_longer_coordinator",
                                     now=now)
                log.info("case pages: session ended, no longer a coordinator")

    def _login_needed(self, request: web.Request) -> web.Response:
        language = self._page_language(request)
        retry = None
        if request.cookies.get(KNOWN_COOKIE) and "via" not in request.query:
            # A link opened from the chat app is a cross-site request, which never carries the
            # SameSite=Strict session cookie: retry once from this page, as a same-site request.
            retry = request.path + "?" + urlencode({**request.query, "via": "1"})
        response = self.render("login_needed.html", language, status=401, retry=retry)
        if request.method == "GET" and request.path.startswith("/cases"):
            response.set_cookie(NEXT_COOKIE, request.path, max_age=1800, httponly=True, samesite="Lax",
                                secure=self.secure, path="/")
        return response

    async def _form(self, request: web.Request, viewer: Viewer, session: AsyncSession
                    ) -> dict[str, str] | web.Response:
        """The posted form, or the answer to a missing/wrong CSRF token (audited in `session`)."""
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return self.render("error.html", viewer.language, status=413, viewer=viewer, message_key="web.too_large")
        data = await request.post()
        form = {k: v for k, v in data.items() if isinstance(v, str)}
        if not hmac.compare_digest(form.get("csrf", "").encode(), viewer.csrf.encode()):
            log.warning("case pages: CSRF token missing or wrong")
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="csrf_refused",
                                 now=self.clock(), case_reference=request.match_info.get("reference", "")[:16] or None)
            return self.render("error.html", viewer.language, status=403, viewer=viewer, message_key="web.csrf")
        return form

    # -- login and logout ---------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/cases")

    async def login_page(self, request: web.Request) -> web.Response:
        """Shows who is logging in; the link is spent only by the button (chat link previews fetch GETs)."""
        token = request.match_info["token"]
        language = self._page_language(request)
        async with self.sessions() as session:
            link = await repo.get_login_link(session=session, digest=login_digest(token)) if len(token) < 100 else None
        now = self.clock()
        if link is None or link.used_at is not None or link.expires_at <= now:
            return self.render("login_invalid.html", language, status=410)
        response = self.render("login_confirm.html", language, name=link.name, token=token)
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def login(self, request: web.Request) -> web.Response:
        # Only the login page itself may post here: another site cannot log this browser in to
        # someone else's session (login CSRF). Browsers that do not send the header are let through.
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            log.warning("login refused: cross-site post")
            return self.render("login_invalid.html", self._page_language(request), status=403)
        data = await request.post()
        token = str(data.get("token", ""))
        language = self._page_language(request)
        now = self.clock()
        digest = login_digest(token)
        cookie = secrets.token_urlsafe(32)
        async with transaction(self.sessions) as session:
            link = await repo.get_login_link(session=session, digest=digest) if 0 < len(token) < 100 else None
            if link is None or not await repo.use_login_link(session=session, digest=digest, now=now):
                log.info("login refused: link unknown, used or expired")
                return self.render("login_invalid.html", language, status=410)
            await repo.create_web_session(
                session=session, digest=login_digest(cookie), coordinator=link.coordinator, name=link.name,
                csrf_token=secrets.token_urlsafe(24), language=language, now=now,
                expires_at=now + dt.timedelta(hours=self.settings.session_hours),
            )
            await repo.add_audit(session=session, actor=link.coordinator, action="login", now=now)
        target = request.cookies.get(NEXT_COOKIE, "")
        if not target.startswith("/cases") or "//" in target:
            target = "/cases"
        response = web.HTTPSeeOther(target)
        response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="Strict", secure=self.secure, path="/",
                            max_age=self.settings.session_hours * 3600)
        response.set_cookie(KNOWN_COOKIE, "1", httponly=True, samesite="Lax", secure=self.secure, path="/",
                            max_age=self.settings.session_hours * 3600)
        response.del_cookie(NEXT_COOKIE, path="/")
        log.info("coordinator logged in")
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._logged_out(request)
            form = await self._form(request, viewer, session)
            if isinstance(form, web.Response):
                return form
            await repo.end_web_session(session=session, digest=viewer.digest, now=self.clock())
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="logout",
                                 now=self.clock())
        return self._logged_out(request, viewer.language)

    def _logged_out(self, request: web.Request, language: str | None = None) -> web.Response:
        response = self.render("logged_out.html", language or self._page_language(request))
        response.del_cookie(SESSION_COOKIE, path="/")
        response.del_cookie(KNOWN_COOKIE, path="/")
        return response

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
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_list", now=now,
                                 detail={"results": len(rows)})
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
                await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_missing",
                                     now=self.clock())
                return self.render("not_found.html", viewer.language, status=404, viewer=viewer)
            if case.reference != request.match_info["reference"]:
                raise web.HTTPSeeOther(f"/cases/{case.reference}")
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_case",
                                 case_reference=case.reference, now=self.clock())
            return await self._render_case(session, case, viewer, notice=request.query.get("done"))

    async def _render_case(self, session: AsyncSession, case: Case, viewer: Viewer, notice: str | None = None,
                           error: str | None = None, status: int = 200) -> web.Response:
        now = self.clock()
        reporter = None if case.anonymous else await repo.get_reporter(session=session, reporter_id=case.reporter_id)
        events = await repo.list_case_events(session=session, case=case)
        attachments = await repo.list_attachments(session=session, case_id=case.id)
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
                message = Translator(viewer.language)(f"case.error_{failure.code}", **failure.values)
                return await self._render_case(session, case, viewer, error=message, status=409)
        log.info("case action=%s", action)
        if self.on_outbox:
            self.on_outbox()
        raise web.HTTPSeeOther(f"/cases/{case.reference}?done={action}#timeline")

    async def attachment(self, request: web.Request) -> web.StreamResponse:
        await self._recheck(request)
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            case = await self._case(request, session)
            attachment_id = int(request.match_info["attachment_id"])
            found = None
            if case is not None:
                found = next((a for a in await repo.list_attachments(session=session, case_id=case.id)
                              if a.id == attachment_id), None)
            if case is None or found is None or found.content is None:
                return self.render("not_found.html", viewer.language, status=404, viewer=viewer)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="view_attachment",
                                 case_reference=case.reference, now=self.clock(), detail={"attachment": found.id})
        inline = found.media_type in INLINE_TYPES and request.query.get("download") != "1"
        disposition = "inline" if inline else "attachment"
        response = web.Response(body=found.content, content_type=found.media_type if inline else
                                "application/octet-stream")
        response.headers["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(found.filename)}"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def stylesheet(self, request: web.Request) -> web.Response:
        css = resources.files("bot").joinpath("static", "meldbot.css").read_text("utf-8")
        response = web.Response(text=css, content_type="text/css")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


_NOTICES = frozenset({"take", "status", "step", "note", "message"})


def _date(value: str | None) -> dt.date | None:
    """A date from a form, or None for anything else (including dates no case can have)."""
    try:
        day = dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None
    return day if day is not None and EARLIEST <= day <= LATEST else None


def _start_of(day: dt.date | None, tz: dt.tzinfo) -> dt.datetime | None:
    return dt.datetime.combine(day, dt.time.min, tz) if day else None


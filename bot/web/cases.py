"""The coordinators' case pages: login through the chat, the case list and the case page.

Server-rendered (Jinja2, autoescaped), no script at all. A session starts only from a single-use
link the bot sent a coordinator in a direct chat; the cookie holds a random token of which the
database keeps a digest. Every page view, download, change and refusal is written to the audit
log; the images a case page shows inline are recorded in that page view's entry, so that loading
them needs no write (on SQLite, no wait for the single write lock).
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

from bot.core.casework import STATUSES, STEPS, CaseError, CaseWork, Coordinator, login_digest
from bot.config import WebSettings
from bot.core.clock import utc_now
from bot.core.errors import DATABASE_ERRORS
from bot.core.limits import Throttle

log = logging.getLogger(__name__)

#: Cookie names; with an https public URL they get the `__Host-` prefix (see CasePages.__init__).
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
#: Refusals of unknown login links written to the audit log per minute at most (the rest is logged once).
UNKNOWN_LINKS_AUDITED_PER_MINUTE = 60
#: How often a session's owner is checked again with the platform.
RECHECK_EVERY = dt.timedelta(minutes=5)
#: How long a session lasts while the platform cannot confirm its owner (fail closed after that).
RECHECK_GRACE = dt.timedelta(minutes=15)
#: Bytes of a file read from the database at a time: a download never holds a whole file in memory.
CHUNK_BYTES = 1024 * 1024
#: The most characters of request input (a reference, an ID) an audit entry keeps.
AUDIT_INPUT = 16
#: The actor of audit entries about a login link nobody can be named for.
UNKNOWN_ACTOR = "unknown"
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
        self._unknown_links = Throttle(UNKNOWN_LINKS_AUDITED_PER_MINUTE)
        self.secure = web_settings.public_url.startswith("https://")
        # `__Host-`: the browser accepts the cookie only Secure, for this host and path / (no
        # Domain), so neither a sibling subdomain nor a plain-http page can plant or widen it.
        prefix = "__Host-" if self.secure else ""
        self.session_cookie, self.next_cookie, self.known_cookie = (
            prefix + name for name in (SESSION_COOKIE, NEXT_COOKIE, KNOWN_COOKIE))
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("bot.web", "templates"),
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

        def audit_text(entry) -> str:
            if entry.action == "refused":
                action = entry.detail.get("action")
                return t("web.audit_refused", action=t(f"audit.{action}") if action in _NOTICES else "—")
            return t(f"audit.{entry.action}")

        html = self.templates.get_template(template).render(
            t=t, when=when, day=day, viewer=viewer, organisation=self.organisation, language=t.language,
            languages=LANGUAGES, audit_text=audit_text, **values,
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

    def _session_digest(self, request: web.Request) -> str | None:
        token = request.cookies.get(self.session_cookie)
        return login_digest(token) if token and len(token) <= 200 else None

    async def _viewer(self, request: web.Request, session: AsyncSession, *, touch: bool = True) -> Viewer | None:
        """The coordinator of the request's session, if it is valid. `touch` records the activity
        (a write); without it this only reads."""
        digest = self._session_digest(request)
        if digest is None:
            return None
        row = await repo.get_web_session(session=session, digest=digest)
        now = self.clock()
        if row is None or row.ended_at is not None or row.expires_at <= now or \
                row.last_seen_at + dt.timedelta(minutes=self.settings.session_idle_minutes) <= now:
            return None
        language = request.query.get("lang") if request.query.get("lang") in LANGUAGES else None
        if touch:
            await repo.touch_web_session(session=session, digest=digest, now=now, language=language)
        return Viewer(Coordinator(row.coordinator, row.name), row.csrf_token, language or row.language, digest)

    async def _still_coordinator(self, identity: str) -> bool | None:
        """Whether the platform says `platform:user` is a coordinator; None when it cannot tell now."""
        if self.is_coordinator is None:
            return True  # nothing to ask: the login link was only sent to a coordinator
        platform, _, user = identity.partition(":")
        return await self.is_coordinator(platform, user)

    async def _recheck(self, request: web.Request) -> None:
        """Every few minutes, ask the platform again whether the session's owner is still a
        coordinator (someone who left the room or team loses access within minutes, not hours).
        Fails closed: a session the platform has not confirmed for RECHECK_GRACE ends.
        Outside the page's transaction: the platform may take seconds to answer."""
        digest = self._session_digest(request)
        if self.is_coordinator is None or digest is None:
            return
        now = self.clock()
        async with self.sessions() as session:
            row = await repo.get_web_session(session=session, digest=digest)
        if row is None or row.ended_at is not None or now - row.checked_at < RECHECK_EVERY:
            return
        allowed = await self._still_coordinator(row.coordinator)
        if allowed is None and now - row.checked_at <= RECHECK_GRACE:
            return  # the platform cannot tell now: ask again at the next request
        async with transaction(self.sessions) as session:
            if allowed:
                await repo.mark_web_session_checked(session=session, digest=digest, now=now)
                return
            await repo.end_web_session(session=session, digest=digest, now=now)
            action = "no_longer_coordinator" if allowed is False else "recheck_failed"
            await repo.add_audit(session=session, actor=row.coordinator, action=action, now=now,
                                 detail={"checked_at": row.checked_at.isoformat()})
        log.info("case pages: session ended reason=%s", action)

    async def _audit(self, actor: str, action: str, case_reference: str | None = None,
                     detail: dict[str, Any] | None = None) -> None:
        """One audit entry in its own short transaction (for requests that otherwise only read)."""
        async with transaction(self.sessions) as session:
            await repo.add_audit(session=session, actor=actor, action=action, now=self.clock(),
                                 case_reference=case_reference, detail=detail)

    def _login_needed(self, request: web.Request) -> web.Response:
        language = self._page_language(request)
        retry = None
        if request.cookies.get(self.known_cookie) and "via" not in request.query:
            # A link opened from the chat app is a cross-site request, which never carries the
            # SameSite=Strict session cookie: retry once from this page, as a same-site request.
            retry = request.path + "?" + urlencode({**request.query, "via": "1"})
        response = self.render("login_needed.html", language, status=401, retry=retry)
        # Back to the list or a case after logging in; never to a file (an image on a page whose
        # session ended would otherwise become the landing page).
        if request.method == "GET" and request.path.startswith("/cases") and "/attachments/" not in request.path:
            response.set_cookie(self.next_cookie, request.path, max_age=1800, httponly=True, samesite="Lax",
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
                                 now=self.clock(),
                                 case_reference=request.match_info.get("reference", "")[:AUDIT_INPUT] or None)
            return self.render("error.html", viewer.language, status=403, viewer=viewer, message_key="web.csrf")
        return form

    # -- login and logout ---------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/cases")

    async def _usable_link(self, token: str, request_kind: str):
        """The login link of `token` if it can still be used; otherwise audits the refusal
        (never the token) and returns None."""
        async with self.sessions() as session:
            link = await repo.get_login_link(session=session, digest=login_digest(token)) \
                if 0 < len(token) < 100 else None
        if link is not None and link.used_at is None and link.expires_at > self.clock():
            return link
        reason = "unknown" if link is None else "used" if link.used_at is not None else "expired"
        # Anyone can ask for /login/<anything>: unknown links are audited up to a rate, so that a
        # flood of guesses cannot fill the audit log or hold the database's write lock.
        admitted = True if link is not None else self._unknown_links.admit(("login", "unknown"))
        if admitted is True:
            await self._audit(link.coordinator if link else UNKNOWN_ACTOR, "login_link_refused",
                              detail={"reason": reason, "request": request_kind})
        elif admitted is None:
            log.warning("login links: more than %d unknown links a minute; the rest is not audited one by one",
                        self._unknown_links.per_minute)
        log.info("login refused: link %s", reason)
        return None

    async def login_page(self, request: web.Request) -> web.Response:
        """Shows who is logging in; the link is spent only by the button (chat link previews fetch GETs)."""
        token = request.match_info["token"]
        language = self._page_language(request)
        link = await self._usable_link(token, "open")
        if link is None:
            return self.render("login_invalid.html", language, status=410)
        await self._audit(link.coordinator, "login_link_opened")
        return self._login_confirm(language, link.name, token)

    def _login_confirm(self, language: str, name: str, token: str, unconfirmed: bool = False) -> web.Response:
        response = self.render("login_confirm.html", language, status=503 if unconfirmed else 200, name=name,
                               token=token, unconfirmed=unconfirmed)
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def login(self, request: web.Request) -> web.Response:
        """Spends a login link and starts a session, after asking the platform whether the link's
        owner is still a coordinator (a link may have waited minutes in the chat)."""
        # Only the login page itself may post here: another site cannot log this browser in to
        # someone else's session (login CSRF). Browsers that do not send the header are let through.
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            log.warning("login refused: cross-site post")
            return self.render("login_invalid.html", self._page_language(request), status=403)
        data = await request.post()
        token = str(data.get("token", ""))
        language = self._page_language(request)
        link = await self._usable_link(token, "login")
        if link is None:
            return self.render("login_invalid.html", language, status=410)
        # Outside any transaction: the platform may take seconds to answer.
        allowed = await self._still_coordinator(link.coordinator)
        digest = login_digest(token)
        now = self.clock()
        if allowed is None:
            # Not spent: the same link works once the platform answers again.
            await self._audit(link.coordinator, "login_refused", detail={"reason": "unconfirmed"})
            log.info("login refused: coordinator status unconfirmed")
            return self._login_confirm(language, link.name, token, unconfirmed=True)
        cookie = secrets.token_urlsafe(32)
        async with transaction(self.sessions) as session:
            # The conditional UPDATE decides between two posts of the same link at once.
            if not await repo.use_login_link(session=session, digest=digest, now=now):
                await repo.add_audit(session=session, actor=link.coordinator, action="login_link_refused", now=now,
                                     detail={"reason": "used", "request": "login"})
                log.info("login refused: link used")
                return self.render("login_invalid.html", language, status=410)
            if not allowed:
                await repo.add_audit(session=session, actor=link.coordinator, action="login_refused", now=now,
                                     detail={"reason": "not_coordinator"})
                log.info("login refused: no longer a coordinator")
                return self.render("login_refused.html", language, status=403)
            await repo.create_web_session(
                session=session, digest=login_digest(cookie), coordinator=link.coordinator, name=link.name,
                csrf_token=secrets.token_urlsafe(24), language=language, now=now,
                expires_at=now + dt.timedelta(hours=self.settings.session_hours),
            )
            await repo.add_audit(session=session, actor=link.coordinator, action="login", now=now)
        target = request.cookies.get(self.next_cookie, "")
        if not target.startswith("/cases") or "//" in target:
            target = "/cases"
        response = web.HTTPSeeOther(target)
        response.set_cookie(self.session_cookie, cookie, httponly=True, samesite="Strict", secure=self.secure,
                            path="/", max_age=self.settings.session_hours * 3600)
        response.set_cookie(self.known_cookie, "1", httponly=True, samesite="Lax", secure=self.secure, path="/",
                            max_age=self.settings.session_hours * 3600)
        response.del_cookie(self.next_cookie, path="/", secure=self.secure, httponly=True, samesite="Lax")
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
        # Deleted with the attributes they were set with: a browser ignores a `__Host-` cookie
        # (also an expired one) without Secure.
        response.del_cookie(self.session_cookie, path="/", secure=self.secure, httponly=True, samesite="Strict")
        response.del_cookie(self.known_cookie, path="/", secure=self.secure, httponly=True, samesite="Lax")
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
            await self._send_bytes(response, attachment.id, length)
        return response

    async def _send_bytes(self, response: web.StreamResponse, attachment_id: int, length: int) -> None:
        """Writes the file chunk by chunk, each read in its own short read (no connection is held
        while a slow browser receives)."""
        offset = 0
        try:
            while offset < length:
                async with self.sessions() as session:
                    chunk = await repo.read_attachment_chunk(session=session, attachment_id=attachment_id,
                                                             offset=offset, size=min(CHUNK_BYTES, length - offset))
                if not chunk:
                    raise LookupError("attachment removed while being sent")
                await response.write(chunk)
                offset += len(chunk)
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


_NOTICES = frozenset({"take", "status", "step", "note", "message"})


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


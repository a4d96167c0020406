"""Coordinator access to the pages: single-use login links from the chat, browser sessions (a
random cookie of which the database keeps a digest), CSRF, and the periodic re-check with the
platform that ends a session when its owner is no longer a coordinator, or cannot be confirmed
for 15 minutes (fail closed)."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from typing import Any, Callable
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.casework import Coordinator, login_digest
from bot.web.pages import (
    AUDIT_INPUT,
    MAX_FORM_BYTES,
    RECHECK_EVERY,
    RECHECK_GRACE,
    UNKNOWN_ACTOR,
    PageBase,
    Viewer,
)
from dialogs.i18n import LANGUAGES
from storage import repo, transaction

log = logging.getLogger(__name__)


class SessionPages(PageBase):
    """Login, logout and the session behind each request."""

    #: Called at every refused login (the wiring counts them in the metrics).
    on_login_refused: Callable[[], None] = staticmethod(lambda: None)

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
        if request.method == "GET" and request.path.startswith(("/cases", "/stats")) \
                and "/attachments/" not in request.path:
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
        self.on_login_refused()
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
            self.on_login_refused()
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
                self.on_login_refused()
                return self.render("login_invalid.html", language, status=410)
            if not allowed:
                await repo.add_audit(session=session, actor=link.coordinator, action="login_refused", now=now,
                                     detail={"reason": "not_coordinator"})
                log.info("login refused: no longer a coordinator")
                self.on_login_refused()
                return self.render("login_refused.html", language, status=403)
            await repo.create_web_session(
                session=session, digest=login_digest(cookie), coordinator=link.coordinator, name=link.name,
                csrf_token=secrets.token_urlsafe(24), language=language, now=now,
                expires_at=now + dt.timedelta(hours=self.settings.session_hours),
            )
            await repo.add_audit(session=session, actor=link.coordinator, action="login", now=now)
        target = request.cookies.get(self.next_cookie, "")
        if not target.startswith(("/cases", "/stats")) or "//" in target:
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

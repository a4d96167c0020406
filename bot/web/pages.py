"""What every coordinator page shares: settings, cookie names, templates and rendering with the
security headers (no script at all: the Content-Security-Policy allows only our stylesheet)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import jinja2
from aiohttp import web
from babel.dates import format_date, format_datetime
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import StatsSettings, WebSettings
from bot.core.casework import CaseWork, Coordinator
from bot.core.clock import utc_now
from bot.core.limits import Throttle
from dialogs import Translator
from dialogs.i18n import LANGUAGES

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



class PageBase:
    """Settings and rendering shared by the login/session pages and the case pages."""

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
        stats: StatsSettings | None = None,
        departments: dict[str, str] | None = None,
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
        #: `[stats]`, and the departments (code -> display name, in the configured order).
        self.stats = stats or StatsSettings()
        self.departments = dict(departments or {})
        #: Told (platform, kinds) of the reports a page created, once committed (metrics).
        self.on_reports_created: Callable[[list], None] | None = None
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
                return t("web.audit_refused", action=t(f"audit.{action}") if action in _REFUSABLE else "—")
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


_NOTICES = frozenset({"take", "status", "step", "note", "message", "legal_hold", "legal_hold_lifted", "evaluate",
                      "recorded"})
#: Actions whose refusal the case page's audit list names (a refusal's action is request input).
_REFUSABLE = _NOTICES | {"export_reporter", "erase"}

"""The "new report" form: a coordinator records a report made by phone or in person."""

from __future__ import annotations

from aiohttp import web

from bot.web.sessions import SessionPages


class RecordPages(SessionPages):
    """Routes of this part of the case pages (CasePages includes them)."""

    def record_routes(self) -> list[web.RouteDef]:
        """The routes to add to the web application."""
        return []

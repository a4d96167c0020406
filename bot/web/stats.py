"""The statistics pages: /stats (figures of a period) and /stats/year/{year} (the yearly overview)."""

from __future__ import annotations

from aiohttp import web

from bot.web.sessions import SessionPages


class StatsPages(SessionPages):
    """Routes of this part of the case pages (CasePages includes them)."""

    def stats_routes(self) -> list[web.RouteDef]:
        """The routes to add to the web application."""
        return []

"""The case export as a download from the statistics page (CSV or XLSX; audited)."""

from __future__ import annotations

from aiohttp import web

from bot.web.sessions import SessionPages


class ExportPages(SessionPages):
    """Routes of this part of the case pages (CasePages includes them)."""

    def export_routes(self) -> list[web.RouteDef]:
        """The routes to add to the web application."""
        return []

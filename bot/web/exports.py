"""The case export as a download from the statistics page (CSV or XLSX; audited).

`POST /stats/export` with the form fields `csrf`, `format` (csv|xlsx), `year` (YYYY, empty: every
year) and `personal` ("1": with the story, names and free text). Logged-in coordinators only. The
export is fixed and audited (`export`, via "web") in one short transaction before the first byte:
a download the browser breaks off still counts. The rows are then read in short reads (no
transaction is held while a slow browser receives). CSV is streamed in chunks; XLSX is written to
a temporary file first (a zip cannot be streamed row by row), which is deleted once sent.
See bot.core.exports for the columns, the formats and what an export never contains."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from aiohttp import web

from bot.core import exports
from bot.core.errors import DATABASE_ERRORS
from bot.web.pages import EARLIEST, LATEST
from bot.web.sessions import SessionPages
from storage import repo, transaction

log = logging.getLogger(__name__)

#: Bytes of the XLSX file sent at a time.
FILE_CHUNK = 256 * 1024


class ExportPages(SessionPages):
    """Routes of this part of the case pages (CasePages includes them)."""

    def export_routes(self) -> list[web.RouteDef]:
        """The routes to add to the web application."""
        return [web.post("/stats/export", self.export_download)]

    async def export_download(self, request: web.Request) -> web.StreamResponse:
        """The export as an attachment; 400 for a format or year that is not one."""
        await self._recheck(request)
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            form = await self._form(request, viewer, session)
            if isinstance(form, web.Response):
                return form
            fmt, year, problem = _parameters(form)
            if problem is not None:
                return self.render("error.html", viewer.language, status=400, viewer=viewer, message_key=problem)
            personal = form.get("personal") == "1"
            spec = exports.ExportSpec(language=self.language, zone=self.timezone, year=year, personal_data=personal,
                                      departments=self.departments)
            fixed = await exports.plan(session, spec)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="export",
                                 now=self.clock(), detail={"format": fmt, "year": year, "rows": fixed.rows,
                                                           "personal_data": personal, "via": "web"})
        log.info("case pages: export format=%s rows=%d personal_data=%s", fmt, fixed.rows, personal)
        source = exports.rows(self.sessions, spec, upto=fixed.last_id)
        if fmt == "csv":
            return await self._send_csv(request, spec, source, exports.filename(fmt, year))
        return await self._send_xlsx(request, spec, source, exports.filename(fmt, year))

    async def _send_csv(self, request: web.Request, spec: exports.ExportSpec, source,
                        name: str) -> web.StreamResponse:
        response = _attachment(exports.MEDIA_TYPES["csv"], name)
        await response.prepare(request)
        try:
            async for chunk in exports.csv_chunks(spec, source):
                await response.write(chunk)
        except DATABASE_ERRORS as error:
            # The headers are sent, an error page cannot follow: closing the connection without the
            # final chunk tells the browser the download is incomplete.
            log.warning("case pages: export not sent in full cause=%s", type(error).__name__)
            response.force_close()
            return response
        await response.write_eof()
        return response

    async def _send_xlsx(self, request: web.Request, spec: exports.ExportSpec, source,
                         name: str) -> web.StreamResponse:
        handle, temporary = tempfile.mkstemp(prefix="meldbot-export-", suffix=".xlsx")
        os.close(handle)
        path = Path(temporary)
        try:
            await exports.write_xlsx(path, spec, source)
            response = _attachment(exports.MEDIA_TYPES["xlsx"], name)
            response.content_length = path.stat().st_size
            await response.prepare(request)
            with path.open("rb") as file:
                while chunk := file.read(FILE_CHUNK):
                    await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            path.unlink(missing_ok=True)


def _parameters(form: dict[str, str]) -> tuple[str, int | None, str | None]:
    """(format, year, None), or the catalog key of what is wrong."""
    fmt = form.get("format", "")
    if fmt not in exports.FORMATS:
        return fmt, None, "export.bad_format"
    raw = form.get("year", "").strip()
    if not raw:
        return fmt, None, None
    if len(raw) != 4 or not (raw.isascii() and raw.isdigit()) or not EARLIEST.year <= int(raw) < LATEST.year:
        return fmt, None, "export.bad_year"
    return fmt, int(raw), None


def _attachment(media_type: str, name: str) -> web.StreamResponse:
    """A download that is never shown as a page, never embedded and never cached."""
    response = web.StreamResponse()
    response.content_type, _, charset = media_type.partition("; charset=")
    if charset:
        response.charset = charset
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response

"""Evidence on the case pages: the original file as a separate, audited download (streamed in
chunks, its SHA-256 on the page for the police), and for images a copy without EXIF, location
or any other metadata, re-encoded with Pillow, which is what the page shows.

The shown copy is made anew for each request from the decrypted original and never stored."""

from __future__ import annotations

import asyncio
import html
import io
import logging
from urllib.parse import quote

from aiohttp import web
from PIL import Image, ImageOps
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.errors import DATABASE_ERRORS
from bot.web.pages import AUDIT_INPUT, INLINE_TYPES, Viewer
from bot.web.sessions import SessionPages
from dialogs import Translator
from storage import repo, transaction
from storage.models import Case

log = logging.getLogger(__name__)

#: Images larger than this are not decoded (a small file can unpack into gigabytes): "no preview".
MAX_PREVIEW_PIXELS = 50_000_000
# Pillow refuses (DecompressionBombError) images past twice its cap; ours is checked before that.
Image.MAX_IMAGE_PIXELS = MAX_PREVIEW_PIXELS
#: The shown copy fits in this box (the original, at full size, is the download).
PREVIEW_BOX = (1600, 1600)
PREVIEW_QUALITY = 85
#: Images re-encoded at once per process (CPU work, done off the event loop).
PREVIEW_WORKERS = 2

#: Served when Pillow cannot read a file: an image saying so (the page's <img> still has its alt text).
NO_PREVIEW_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="240" height="90" viewBox="0 0 240 90">'
                  '<rect width="240" height="90" fill="#f3f5f8" stroke="#d5dae1"/>'
                  '<text x="120" y="50" font-family="sans-serif" font-size="15" fill="#5a6472" '
                  'text-anchor="middle">{text}</text></svg>')


def shown_copy(original: bytes) -> tuple[bytes, str] | None:
    """A copy of an image without any metadata (EXIF, GPS, XMP, ICC, comments), turned upright
    by its EXIF orientation first and scaled down to PREVIEW_BOX: (bytes, media type). None when
    Pillow cannot read the file or it has too many pixels.

    The pixels are copied into a new image, so nothing of the original's `info` can be written."""
    try:
        with Image.open(io.BytesIO(original)) as image:
            width, height = image.size
            if width * height > MAX_PREVIEW_PIXELS:
                return None
            image.draft("RGB", PREVIEW_BOX)  # JPEG: decode at a reduced scale (less memory and time)
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail(PREVIEW_BOX)
            transparent = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
            mode = "RGBA" if transparent else "RGB"
            pixels = upright.convert(mode)
            clean = Image.frombytes(mode, pixels.size, pixels.tobytes())
        out = io.BytesIO()
        if transparent:
            clean.save(out, format="PNG")
            return out.getvalue(), "image/png"
        clean.save(out, format="JPEG", quality=PREVIEW_QUALITY)
        return out.getvalue(), "image/jpeg"
    except Exception as error:  # noqa: BLE001 - any file Pillow cannot decode gets "no preview"
        log.info("case pages: no preview of an image cause=%s", type(error).__name__)
        return None


def shown_images(attachments) -> dict[str, list[int]]:
    """Audit detail: the images a case page shows (their shown copies are fetched without an entry)."""
    images = [a.id for a in attachments if a.media_type in INLINE_TYPES]
    return {"attachments_shown": images} if images else {}


class EvidencePages(SessionPages):
    """Files of a case: the original (audited download) and the shown copy of an image."""

    async def _case(self, request: web.Request, session: AsyncSession) -> Case | None:
        reference = request.match_info["reference"]
        if len(reference) > 20:
            return None
        return await repo.get_case(session=session, reference=reference)

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

    async def _find_file(self, request: web.Request):
        """(viewer, case, attachment, length) of the request, or the response to give instead.
        Only reads (the audit entry of a missing file aside)."""
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
        return viewer, case, found[0], found[1]

    async def attachment(self, request: web.Request) -> web.StreamResponse:
        """The original file, always as a download, audited (`download_original`) in a short
        transaction before any byte is read; streamed from the database in chunks."""
        await self._recheck(request)
        found = await self._find_file(request)
        if isinstance(found, web.Response):
            return found
        viewer, case, attachment, length = found
        async with transaction(self.sessions) as session:
            await repo.touch_web_session(session=session, digest=viewer.digest, now=self.clock())
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="download_original",
                                 case_reference=case.reference, now=self.clock(),
                                 detail={"attachment": attachment.id})
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        response.content_length = length
        response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(attachment.filename)}"
        _file_headers(response)
        await response.prepare(request)
        if request.method != "HEAD":
            await self._send_bytes(response, attachment)
        return response

    async def preview(self, request: web.Request) -> web.Response:
        """The shown copy of an image (never the original's bytes). Only reads: the case page's
        own audit entry records the images it shows."""
        await self._recheck(request)
        found = await self._find_file(request)
        if isinstance(found, web.Response):
            return found
        viewer, case, attachment, _length = found
        if attachment.media_type not in INLINE_TYPES:
            return self.render("not_found.html", viewer.language, status=404, viewer=viewer)
        async with self.sessions() as session:
            original = await repo.read_attachment(session=session, attachment=attachment)
        copy = None
        if original is not None:
            async with self._preview_slots():
                copy = await asyncio.to_thread(shown_copy, original)
            del original
        if copy is None:
            text = html.escape(Translator(viewer.language)("web.no_preview"))
            body, media_type = NO_PREVIEW_SVG.format(text=text).encode(), "image/svg+xml"
        else:
            body, media_type = copy
        response = web.Response(body=body, content_type=media_type)
        response.headers["Content-Disposition"] = "inline"
        _file_headers(response)
        return response

    def _preview_slots(self) -> asyncio.Semaphore:
        slots = self.__dict__.get("_previews")
        if slots is None:
            slots = self.__dict__["_previews"] = asyncio.Semaphore(PREVIEW_WORKERS)
        return slots

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


def _file_headers(response: web.StreamResponse) -> None:
    """A file is never run as a page, never embedded elsewhere and never kept in a cache."""
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"

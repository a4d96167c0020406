"""The privacy actions of the case page: legal hold, the export for a reporter's formal access
request, and erasure on request (two steps: a confirmation page, then the erasure).

Every action needs a coordinator's session and the session's CSRF token, like the other forms.
Audit entries hold codes and counts only, never a reason someone typed."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import privacy_actions as privacy
from bot.core.casework import CaseError
from bot.web.evidence import EvidencePages, shown_images
from bot.web.pages import AUDIT_INPUT, Viewer
from dialogs import Translator
from storage import repo, transaction
from storage.models import Case

log = logging.getLogger(__name__)

#: A reference as the case list's "erased" notice may name it.
REFERENCE = re.compile(r"^MB-[A-Z0-9]{3}-[A-Z0-9]{3}$")


class PrivacyPages(EvidencePages):
    """Routes of the privacy actions. `_render_case` is the case page (CasePages)."""

    def privacy_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/cases/{reference}/legal-hold", self.legal_hold),
            web.post("/cases/{reference}/export", self.export),
            web.post("/cases/{reference}/erase", self.erase),
            web.get("/cases/{reference}/attachments/{attachment_id:\\d+}/preview", self.preview),
            web.get("/cases/{reference}/attachments/{attachment_id:\\d+}", self.attachment),
        ]

    async def _posted(self, request: web.Request, session: AsyncSession
                      ) -> tuple[Viewer, dict[str, str], Case] | web.Response:
        """Viewer, form and locked case of a privacy action, or the response to give instead
        (log in, CSRF refused, no such case)."""
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
        return viewer, form, await repo.lock_case(session=session, case=case)

    async def _refused(self, session: AsyncSession, viewer: Viewer, case: Case, action: str,
                       failure: CaseError) -> web.Response:
        """The case page again, with why the action was refused (audited, without the input)."""
        attachments = await repo.list_attachments(session=session, case_id=case.id)
        await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="refused", now=self.clock(),
                             case_reference=case.reference,
                             detail={"action": action[:AUDIT_INPUT], "error": failure.code,
                                     **shown_images(attachments)})
        message = Translator(viewer.language)(f"case.error_{failure.code}", **failure.values)
        return await self._render_case(session, case, viewer, attachments, error=message, status=409)

    # -- legal hold -----------------------------------------------------------------------------------

    async def legal_hold(self, request: web.Request) -> web.Response:
        """Place (`change=place`) or lift (`change=lift`) a legal hold; both need a reason, which
        goes into the sealed timeline only."""
        await self._recheck(request)
        now = self.clock()
        async with transaction(self.sessions) as session:
            posted = await self._posted(request, session)
            if isinstance(posted, web.Response):
                return posted
            viewer, form, case = posted
            lifting = form.get("change") == "lift"
            action = "legal_hold_lifted" if lifting else "legal_hold"
            try:
                change = privacy.lift_legal_hold if lifting else privacy.place_legal_hold
                await change(session, case, viewer.coordinator, form.get("reason", ""), now)
            except CaseError as failure:
                return await self._refused(session, viewer, case, action, failure)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action=action, now=now,
                                 case_reference=case.reference)
        log.info("case action=%s", action)
        raise web.HTTPSeeOther(f"/cases/{case.reference}?done={action}#privacy")

    # -- export ---------------------------------------------------------------------------------------

    async def export(self, request: web.Request) -> web.Response:
        """Everything about the reporter of this case, as a JSON download (formal access request)."""
        await self._recheck(request)
        now = self.clock()
        async with transaction(self.sessions) as session:
            posted = await self._posted(request, session)
            if isinstance(posted, web.Response):
                return posted
            viewer, _form, case = posted
            try:
                export = await privacy.reporter_export(session, case, now)
            except CaseError as failure:
                return await self._refused(session, viewer, case, "export_reporter", failure)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="export_reporter",
                                 now=now, case_reference=case.reference, detail={"cases": len(export["cases"])})
        log.info("case action=export_reporter")
        response = web.Response(body=privacy.export_json(export), content_type="application/json", charset="utf-8")
        response.headers["Content-Disposition"] = f'attachment; filename="meldbot-export-{case.reference}.json"'
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- erasure --------------------------------------------------------------------------------------

    async def erase(self, request: web.Request) -> web.Response:
        """Step 1 (`step=confirm`): a page saying what goes and what stays, with a token to confirm.
        Step 2 (`step=erase`): with that token and the reference typed again, the case goes."""
        await self._recheck(request)
        now = self.clock()
        async with transaction(self.sessions) as session:
            posted = await self._posted(request, session)
            if isinstance(posted, web.Response):
                return posted
            viewer, form, case = posted
            reason = form.get("reason_code", "")
            try:
                privacy.check_erasable(case, reason)
            except CaseError as failure:
                return await self._refused(session, viewer, case, "erase", failure)
            if form.get("step") != "erase":
                return await self._confirm_erase(session, viewer, case, reason)
            try:
                privacy.check_erase_token(form.get("token", ""), viewer.csrf, case, reason, now)
                if repo.normalise_reference(form.get("confirm_reference", "")) != case.reference:
                    raise CaseError("erase_confirm_reference")
            except CaseError as failure:
                await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="refused",
                                     now=now, case_reference=case.reference,
                                     detail={"action": "erase", "error": failure.code})
                message = Translator(viewer.language)(f"case.error_{failure.code}")
                return await self._confirm_erase(session, viewer, case, reason, error=message)
            reference = await privacy.erase_case(session, case, viewer.coordinator, reason, now)
        log.info("case action=erased")
        raise web.HTTPSeeOther(f"/cases?erased={reference}")

    async def _confirm_erase(self, session: AsyncSession, viewer: Viewer, case: Case, reason: str,
                             error: str | None = None) -> web.Response:
        scope = await privacy.erasure_scope(session, case)
        token = privacy.erase_token(viewer.csrf, case, reason, self.clock())
        return self.render("erase_confirm.html", viewer.language, status=409 if error else 200, viewer=viewer,
                           case=case, scope=scope, reason=reason, token=token, error=error,
                           minutes=int(privacy.ERASE_CONFIRM_FOR.total_seconds() // 60))


def erased_notice(value: str | None) -> str | None:
    """The reference of the case list's "erased" notice, if the query names one."""
    return value if value and REFERENCE.match(value) else None

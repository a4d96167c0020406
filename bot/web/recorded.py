"""The "new report" form: a coordinator records a report made by phone or in person.

The case is made like a chat report (`CaseWork.record_report`), but has no reporter row and no
conversation. Invalid input shows the form again with what was entered and creates nothing."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from sqlalchemy.exc import IntegrityError

from bot.core.casework import RECORDED_HOW, RecordedReport
from bot.web.pages import EARLIEST, LATEST, Viewer
from bot.web.sessions import SessionPages
from dialogs import categories
from dialogs.text import MAX_MESSAGE_CHARS, clean, clean_name
from storage import repo, transaction

log = logging.getLogger(__name__)

#: The longest name of whom a recorded report is about.
MAX_FOR_CHARS = 120
AFTERCARE = ("yes", "later", "no")
#: Yes/no questions of the form: field name -> `RecordedReport` attribute.
FLAGS = {"police_came": "police_came", "police_report": "police_report", "contact": "contact"}


class RecordPages(SessionPages):
    """Routes of this part of the case pages (CasePages includes them)."""

    def record_routes(self) -> list[web.RouteDef]:
        """The routes to add to the web application."""
        return [web.get("/cases/new", self.new_case_page), web.post("/cases/new", self.new_case)]

    async def new_case_page(self, request: web.Request) -> web.Response:
        """The empty form (the incident's date and time preset to now)."""
        await self._recheck(request)
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="record_form",
                                 now=self.clock())
        local = self.clock().astimezone(self.timezone)
        values = {**_values(MultiDictProxy(MultiDict())), "date": local.date().isoformat(),
                  "time": local.strftime("%H:%M"), "form_id": secrets.token_urlsafe(16)}
        return self._record_form(viewer, values)

    async def new_case(self, request: web.Request) -> web.Response:
        """Create the case, or show the form again with the errors (status 400, nothing created)."""
        await self._recheck(request)
        now = self.clock()
        async with transaction(self.sessions) as session:
            viewer = await self._viewer(request, session)
            if viewer is None:
                return self._login_needed(request)
            form = await self._form(request, viewer, session)
            if isinstance(form, web.Response):
                return form
            values = _values(await request.post())
            report, errors = self._read(values, now)
            if report is None:
                # The error codes only: what was typed stays out of the audit log.
                await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="refused",
                                     now=now, detail={"action": "recorded", "errors": errors})
                return self._record_form(viewer, values, errors, status=400)
            if not await _first_submit(session, values["form_id"], now):
                await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="refused",
                                     now=now, detail={"action": "recorded", "errors": ["already_recorded"]})
                return self._record_form(viewer, values, ["already_recorded"], status=409)
            case = await self.casework.record_report(session, viewer.coordinator, report, self.language, now)
            await repo.add_audit(session=session, actor=viewer.coordinator.identity, action="recorded", now=now,
                                 case_reference=case.reference)
            reference = case.reference
        if self.on_reports_created:
            self.on_reports_created(session.info.get("reports_created", ()))  # counted once committed
        if self.on_outbox:
            self.on_outbox()
        raise web.HTTPSeeOther(f"/cases/{reference}?done=recorded")

    def _record_form(self, viewer: Viewer, values: dict[str, Any], errors: list[str] | tuple = (),
                     status: int = 200) -> web.Response:
        today = self.clock().astimezone(self.timezone).date().isoformat()
        return self.render(
            "new_case.html", viewer.language, status=status, viewer=viewer, values=values, errors=list(errors),
            kinds=categories.KINDS, places=categories.PLACES, perpetrators=categories.PERPETRATORS,
            consequences=categories.CONSEQUENCES, departments=self.departments, how=RECORDED_HOW,
            aftercare=AFTERCARE, today=today, story_chars=MAX_MESSAGE_CHARS, for_chars=MAX_FOR_CHARS,
        )

    def _read(self, values: dict[str, Any], now: dt.datetime) -> tuple[RecordedReport | None, list[str]]:
        """The report the form describes, or None and the error codes (`casework.error_<code>`)."""
        errors = []
        recorded_for = clean_name(values["recorded_for"], MAX_FOR_CHARS)
        if not recorded_for:
            errors.append("for_required")
        how = values["recorded_how"]
        if how not in RECORDED_HOW:
            errors.append("how_required")
        story = clean(values["story"], MAX_MESSAGE_CHARS).text
        if not story:
            errors.append("story_required")
        kinds = values["kinds"]
        if not kinds:
            errors.append("kinds_required")
        occurred_at = self._moment(values["date"], values["time"])
        if occurred_at is None:
            errors.append("when_invalid")
        elif occurred_at > now:
            errors.append("when_future")
        if values["aftercare"] not in AFTERCARE:
            errors.append("aftercare_required")
        departments = self.departments
        if (not set(kinds) <= set(categories.KINDS)
                or not set(values["consequences"]) <= set(categories.CONSEQUENCES)
                or values["place"] not in ("", *categories.PLACES)
                or values["perpetrator"] not in ("", *categories.PERPETRATORS)
                or values["department"] not in ("", *departments)):
            errors.append("unknown_choice")
        if errors:
            return None, errors
        assert occurred_at is not None
        return RecordedReport(
            recorded_for=recorded_for, recorded_how=how, story=story,
            kinds=[k for k in categories.KINDS if k in kinds], occurred_at=occurred_at,
            place=values["place"] or None, department=values["department"] or None,
            perpetrator=values["perpetrator"] or None,
            consequences=[c for c in categories.CONSEQUENCES if c in values["consequences"]],
            aftercare=values["aftercare"], **{attr: values[name] for name, attr in FLAGS.items()},
        ), []

    def _moment(self, day: str, time: str) -> dt.datetime | None:
        """The incident's date and time (the organisation's time zone), in UTC; None when invalid."""
        try:
            moment = dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(time), self.timezone)
        except ValueError:
            return None
        if not EARLIEST <= moment.date() <= LATEST:
            return None
        return moment.astimezone(dt.timezone.utc)


async def _first_submit(session, form_id: str, now: dt.datetime) -> bool:
    """Whether this is the first submit of this form (a double click or a resent POST files nothing
    twice). Remembered like a platform's event ID, for 30 days."""
    if not form_id:
        return True  # a form from before this guard: nothing to compare with
    try:
        async with session.begin_nested():
            await repo.mark_event_handled(session=session, platform="web", event_id=f"record:{form_id}", now=now)
    except IntegrityError:
        return False
    return True


def _values(data: MultiDictProxy) -> dict[str, Any]:
    """What the form holds, as entered (shown again when it has errors); lists for the checkboxes."""

    def text(name: str, limit: int) -> str:
        value = data.get(name, "")
        return value[:limit] if isinstance(value, str) else ""

    def ticked(name: str) -> list[str]:
        return list(dict.fromkeys(v for v in data.getall(name, []) if isinstance(v, str)))

    values: dict[str, Any] = {name: text(name, 40) for name in ("recorded_how", "date", "time", "place",
                                                                 "department", "perpetrator", "aftercare")}
    values["recorded_for"] = text("recorded_for", MAX_FOR_CHARS * 2)
    values["form_id"] = "".join(ch for ch in text("form_id", 40) if ch.isalnum() or ch in "-_")
    values["story"] = text("story", MAX_MESSAGE_CHARS * 2)
    values["kinds"], values["consequences"] = ticked("kinds"), ticked("consequences")
    values.update({name: data.get(name) == "1" for name in FLAGS})
    return values

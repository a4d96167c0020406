"""A report sent as one form (a card with every field): checked and submitted in a single turn."""

from __future__ import annotations

from . import categories as cat
from . import department as dep
from . import text as tx
from .model import Draft, SubmitReport
from .turn import TurnContext
from .understanding import read
from .when import FutureTime, parse_when


def submit_form(c: TurnContext, values: dict) -> None:
    form_id = str(values.get("form_id") or "")[:64]
    if form_id and form_id in c.state.submitted_forms:
        # A card sent twice (a double click, a platform retry) is one report.
        c.say("form.already_sent", reference=c.state.submitted_forms[form_id])
        return
    story = tx.clean(str(values.get("story") or ""), tx.MAX_STORY_CHARS).text
    if not tx.has_words(story):
        c.say("form.story_missing")
        return
    in_progress = c.state.draft if c.in_dialogue() else None
    # A form sent while a report is being typed replaces it: the files sent so far go with it.
    draft = Draft(draft_id=in_progress.draft_id if in_progress else f"form-{form_id or c.input.now.timestamp()}",
                  story=story, occurred_at=c.now.isoformat(),
                  attachments=list(in_progress.attachments) if in_progress else [])
    reading = read(story, c.ctx.vocabulary)
    chosen = _codes(values.get("kinds"), cat.KINDS)
    draft.kinds = chosen or list(reading.kinds) or None
    place = _codes(values.get("place"), cat.PLACES)
    draft.place = place[0] if place else reading.place
    draft.perpetrator = reading.perpetrator
    when_text = tx.clean(str(values.get("when") or ""), tx.MAX_SHORT_CHARS).text
    if when_text:
        try:
            found = parse_when(when_text, c.now, c.ctx.timezone)
        except FutureTime:
            c.say("error.when_future")
            return
        if found is None:
            c.say("form.when_unknown", text=when_text)
            return
        draft.occurred_at, draft.occurred_just_now, draft.occurred_text = (
            found.at.isoformat(), found.just_now, when_text)
    wishes = set(_codes(values.get("wishes"), cat.WISHES))
    draft.contact = "contact" in wishes
    draft.aftercare = "yes" if "aftercare_yes" in wishes else "later" if "aftercare_later" in wishes else None
    draft.police_report = "police_report" in wishes
    draft.police_came = "police_came" in wishes or reading.police_came
    draft.anonymous = "anonymous" in wishes
    if reading.injury:
        draft.consequences = ["injury"]
    draft.department = c.remembered_department()
    if c.ctx.departments:
        # The form showed the choice (pre-filled with the remembered one): what it holds, possibly
        # nothing, is the answer and is remembered; left out, the remembered one stays.
        if "department" in values:
            chosen = _codes(values.get("department"), dep.codes(c))
            dep.choose(c, chosen[0] if chosen else None)
            draft.department = c.state.department
        c.state.department_asked = True
    c.effects.append(SubmitReport(draft, form_id or None))
    if in_progress is not None:
        c.end_draft()


def _codes(value, allowed: tuple[str, ...]) -> list[str]:
    """Codes from a form field ("verbal,threat" or a list), keeping only known ones, in order."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    chosen = {str(item).strip() for item in items}
    return [code for code in allowed if code in chosen]

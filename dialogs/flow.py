"""The report conversation as a pure state machine: `step(state, user_input, context) -> Turn`.

Main path (a minimal report is 2 or 3 messages):
    story -> [details: kind and/or place, only what the story did not tell] -> summary -> send
Optional fields (when, perpetrator, consequences) are filled from the story where it names them,
and are offered as numbered lines on the summary ("wijzig 5" / "change 5"). The wishes (contact,
aftercare, police report, ...) are a tick list on the summary: "2" or "nazorg" ticks, "niet 2" or
"geen nazorg" unticks, "2 verzenden" ticks and sends in one message. The `wishes` step is only
reached by a conversation an older version saved there; it returns to the summary.

When the organisation has departments (`Context.departments`), the summary has a 7th line, the
reporter's department, remembered in the `State` and copied into every new draft. The first
report's summary asks for it once: a name answers it (one more message), sending or `overslaan`
skips it (none); it is not asked again. `wijzig 7` or `afdeling` / `department` (also outside a
report) shows the numbered list (`department` step); see `department.py`.

This module routes one message (command, form, files or an answer) and holds the small functions the
engine calls around a turn. The steps themselves live in `questions` (asking), `answers` (parsing the
answer), `summary`, `commands`, `form` and `evidence`, all sharing one `turn.TurnContext`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from babel.dates import format_datetime

from . import text as tx
from .answers import ANSWERS, answer_idle
from .commands import ANYTIME, answer_confirm_cancel, command, department_command_fits
from .evidence import EVIDENCE_WINDOW, recent_reference, take_attachments
from .form import submit_form
from .i18n import Translator
from .model import Context, Draft, Reply, State, Turn, UserInput
from .questions import ask
from .summary import SUMMARY_LINES
from .turn import QUESTION_STEPS, TurnContext

__all__ = [
    "EVIDENCE_WINDOW", "QUESTION_STEPS", "RELAY_WINDOW", "SUMMARY_LINES", "discard_draft", "late_evidence_case",
    "my_reports", "not_saved", "open_relay", "record_submission", "step", "submitted",
]

#: How long after a coordinator's message the reporter's free text still goes to them.
RELAY_WINDOW = dt.timedelta(days=3)

_HANDLERS = {**ANSWERS, "confirm_cancel": answer_confirm_cancel}


def step(state: State | None, user_input: UserInput, context: Context | None = None) -> Turn:
    """Advance the conversation by one inbound message. Pure: no I/O, never raises on input."""
    context = context or Context()
    state = state or State(language=context.default_language)
    c = TurnContext(state, user_input, context)
    _route(c)
    return c.result()


def _route(c: TurnContext) -> None:
    cleaned = tx.clean(c.input.text)
    text = cleaned.text
    if not c.state.language_chosen and not c.state.introduced and c.state.step == "idle":
        guessed = tx.guess_language(text)
        if guessed and guessed != c.state.language:
            c.set_language(guessed)
    if cleaned.truncated:
        c.say("notice.truncated", kept=tx.MAX_MESSAGE_CHARS, length=cleaned.original_length)

    cmd = tx.parse_command(text) if text and not c.input.attachments else None
    if cmd and c.state.step == "confirm_cancel" and cmd.name not in ANYTIME:
        cmd = None  # "stop", "terug", "overslaan" answer the confirmation itself
    if cmd and cmd.name == "department" and not department_command_fits(c, cmd):
        cmd = None  # no departments configured, or "afdeling ..." that names none: an ordinary message
    if cmd:
        command(c, cmd)
        return

    if c.input.form is not None:
        submit_form(c, c.input.form)
        return

    if c.input.attachments and take_attachments(c, c.input.attachments, has_text=bool(text)):
        return

    if (c.in_dialogue() and c.state.step not in ("story", "summary", "confirm_cancel", "department")
            and text and tx.fold(text) in tx.SEND_WORDS):
        # "verzenden" at a question: show the summary to confirm, keeping every answer.
        ask(c, "summary")
        return

    handler = _HANDLERS.get(c.state.step)
    if handler is None:  # unknown step from a newer version: start over safely
        c.state.step = "idle"
        handler = answer_idle
    handler(c, text)


def record_submission(state: State, reference: str, now: dt.datetime, form_id: str | None = None) -> State:
    """The state after the engine saved a report: remembers the reference for late evidence."""
    forms = dict(state.submitted_forms)
    if form_id:
        forms[form_id] = reference
        forms = dict(list(forms.items())[-20:])
    return replace(state, last_reference=reference, last_submitted_at=now.isoformat(), submitted_forms=forms)


def late_evidence_case(state: State, now: dt.datetime) -> str | None:
    """The case that files sent now would join as late evidence (None: they join a draft)."""
    if state.step != "idle" and state.draft is not None:
        return None
    return recent_reference(state, now)


def discard_draft(state: State) -> State:
    """The state once an unfinished report was discarded (e.g. expired): idle, nothing pending."""
    return replace(state, draft=None, step="idle", history=[], editing=False, before_cancel=None,
                   department_return=None)


def open_relay(state: State, reference: str, now: dt.datetime) -> State:
    """The state after a coordinator wrote to the reporter: their free text is an answer (for 3 days)."""
    return replace(state, relay_reference=reference, relay_until=(now + RELAY_WINDOW).isoformat())


def submitted(language: str, reference: str, draft: Draft, context: Context, deferred: bool = False) -> tuple[Reply, ...]:
    """The confirmation after a report was saved: reference, what happens next, 112, aftercare."""
    t = Translator(language)
    parts = [t("submitted.saved", reference=reference)]
    if deferred:
        parts.append(t("submitted.deferred"))
    promise = context.contact_promise.get(language) or t("submitted.contact_default")
    parts.append(promise if draft.contact is not False else t("submitted.no_contact"))
    if draft.police_report:
        parts.append(t("submitted.police"))
    aftercare = context.aftercare.get(language) or t("submitted.aftercare_default")
    parts.append(aftercare)
    parts.append(t("submitted.emergency"))
    parts.append(t("submitted.more"))
    return (Reply("\n\n".join(parts), title=t("submitted.title"), reference=reference),)


def my_reports(language: str, cases: list[dict]) -> tuple[Reply, ...]:
    """The reporter's own cases: reference, date, kinds and status."""
    t = Translator(language)
    if not cases:
        return (Reply(t("my_reports.none")),)
    lines = []
    for case in cases:
        created = format_datetime(case["created_at"], "d MMM y", locale=language)
        kinds = ", ".join(t(f"kind.{k}") for k in case.get("kinds") or ())
        lines.append(f"• {case['reference']} ({created}): {kinds or '—'} — {t('status.' + case['status'])}")
    return (Reply("\n".join(lines), title=t("my_reports.title")),)


def not_saved(language: str, error_reference: str) -> tuple[Reply, ...]:
    """The answer when the database could not save the turn: nothing was kept, try again."""
    return (Reply(Translator(language)("error.not_saved", error=error_reference)),)

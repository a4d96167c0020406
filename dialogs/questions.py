"""Asking: the question (text, options, hint) of every step, and moving to a step to ask it."""

from __future__ import annotations

from collections.abc import Callable

from . import categories as cat
from . import department as dep
from .labels import kind_labels, options, when_label, wish_selection
from .model import Option, Reply
from .summary import summary_reply
from .turn import QUESTION_STEPS, TurnContext


def details_wanted(c: TurnContext) -> tuple[bool, bool]:
    """(kinds, place): what the details step asks, i.e. what the story did not tell for sure."""
    draft = c.draft
    want_kinds = draft.kinds is None or not draft.kinds_suggested
    want_place = draft.place is None or not want_kinds
    return want_kinds, want_place


def question_confirm_cancel(c: TurnContext) -> Reply:
    return Reply(c.t("cancel.confirm"), hint=c.t("hint.yes_no"))


def question_story(c: TurnContext) -> Reply:
    return Reply(c.t("q.story"), hint=c.t("hint.story"))


def question_details(c: TurnContext) -> Reply:
    draft = c.draft
    want_kinds, want_place = details_wanted(c)
    if want_kinds and want_place:
        # One list: kinds first, then places numbered on after them.
        both = options(c, "kind", cat.KINDS, draft.kinds or ()) + options(
            c, "place", cat.PLACES, (draft.place,), start=len(cat.KINDS) + 1
        )
        return Reply(c.t("q.details_both"), both, c.t("hint.details_both"))
    if want_kinds:
        return Reply(c.t("q.kinds"), options(c, "kind", cat.KINDS, draft.kinds or ()), c.t("hint.kinds"))
    return Reply(c.t("q.where_after_kinds", kinds=kind_labels(c, draft.kinds)),
                 options(c, "place", cat.PLACES, (draft.place,)), c.t("hint.where"))


def question_kinds(c: TurnContext) -> Reply:
    draft = c.draft
    hint = c.t("hint.kinds_confirm") if draft.kinds else c.t("hint.kinds")
    return Reply(c.t("q.kinds"), options(c, "kind", cat.KINDS, draft.kinds or ()), hint)


def question_when(c: TurnContext) -> Reply:
    return Reply(c.t("q.when", current=when_label(c)), hint=c.t("hint.when"))


def question_where(c: TurnContext) -> Reply:
    return Reply(c.t("q.where"), options(c, "place", cat.PLACES, (c.draft.place,)), c.t("hint.where"))


def question_perpetrator(c: TurnContext) -> Reply:
    return Reply(c.t("q.perpetrator"), options(c, "perpetrator", cat.PERPETRATORS, (c.draft.perpetrator,)),
                 c.t("hint.perpetrator"))


def question_consequences(c: TurnContext) -> Reply:
    return Reply(c.t("q.consequences"),
                 options(c, "consequence", cat.CONSEQUENCES, c.draft.consequences or ()),
                 c.t("hint.consequences"))


def question_department(c: TurnContext) -> Reply:
    """The department as a numbered list (from `wijzig 7` or `afdeling`; also outside a report)."""
    choices = tuple(Option(number, name, code == c.state.department)
                    for number, (code, name) in enumerate(c.ctx.departments, start=1))
    return Reply(c.t("q.department"), choices, c.t("hint.department"))


def question_wishes(c: TurnContext) -> Reply:
    """The wishes as a question of their own: only for a conversation an older version saved there."""
    return Reply(c.t("q.wishes"), options(c, "wish", cat.WISHES, wish_selection(c)), c.t("hint.wishes"))


QUESTIONS: dict[str, Callable[[TurnContext], Reply]] = {
    "story": question_story,
    "details": question_details,
    "kinds": question_kinds,
    "when": question_when,
    "where": question_where,
    "perpetrator": question_perpetrator,
    "consequences": question_consequences,
    "wishes": question_wishes,
    "department": question_department,
    "summary": summary_reply,
    "confirm_cancel": question_confirm_cancel,
}


def question(c: TurnContext, step: str) -> Reply:
    return QUESTIONS[step](c)


# -- moving between steps -----------------------------------------------------------------------------

def next_step(c: TurnContext) -> str:
    draft = c.draft
    step = c.state.step
    if c.state.editing:
        return "summary"  # a changed line goes straight back to the summary
    if step == "story" and (draft.kinds is None or draft.place is None):
        return "details"
    # Everything else goes to the summary, where the wishes are ticked (a conversation saved at the
    # wishes question by an older version returns there too).
    return "summary"


def ask(c: TurnContext, step: str, repeat: bool = False, push: bool = True) -> None:
    """Move to `step` (recording history for `terug`) and send its question."""
    current = c.state.step
    if (push and not repeat and not c.state.editing and current != step
            and current in QUESTION_STEPS + ("summary",)):
        c.state.history.append(current)
    if step == "summary":
        c.state.editing = False
    c.state.step = step
    c.replies.append(question(c, step))


def advance(c: TurnContext) -> None:
    ask(c, next_step(c))


def finish_department(c: TurnContext) -> None:
    """After the department question: back to the step it interrupted, the summary, or idle."""
    back_to, c.state.department_return = c.state.department_return, None
    if not c.in_dialogue():
        c.state.step = "idle"
        repeat_question(c, after_effect=True)  # a pending "answer or new report?" is asked again
    elif back_to in QUESTION_STEPS and back_to != "department":
        ask(c, back_to, repeat=True)
    else:
        advance(c)  # `wijzig 7` (editing) returns to the summary, as any changed line does


def keep_department(c: TurnContext, skipped: bool) -> None:
    """`overslaan`, `ok`, `terug` at the department question: it stays as it was (`skipped`: and
    counts as asked)."""
    if skipped:
        c.state.department_asked = True
    current = dep.name(c, c.state.department)
    if current:
        c.say("department.kept", name=current)
    else:
        c.say("department.skipped")
    finish_department(c)


def question_relay_or_report(c: TurnContext) -> Reply:
    """Does the pending message answer the coordinator, or is it a new report?"""
    reference = c.state.relay_reference or c.state.last_reference or ""
    return Reply(c.t("relay.ask", reference=reference),
                 options=(Option(1, c.t("relay.option_answer", reference=reference)),
                          Option(2, c.t("relay.option_report"))),
                 hint=c.t("relay.hint"))



def repeat_question(c: TurnContext, after_effect: bool = False) -> None:
    """Ask the current question again after a side command (help, language, ...)."""
    if c.in_dialogue() or c.state.step == "department":  # the department is asked outside a report too
        ask(c, c.state.step, repeat=True)
    elif c.state.pending_relay is not None:
        c.replies.append(question_relay_or_report(c))
    elif not after_effect and not c.replies:
        c.say("idle.prompt")

"""Answering: parsing the reporter's answer at each step into the draft, then moving on.

A parser raises `Answer` when the text does not fit; `handle` then explains and asks again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from . import categories as cat
from . import department as dep
from . import text as tx
from .i18n import LANGUAGES, Translator
from .labels import wish_selection
from .model import Draft, RelayToCoordinator, SubmitReport
from .questions import (advance, ask, details_wanted, finish_department, keep_department, question,
                        question_relay_or_report)
from .summary import WISH_WORDS, apply_ticks, parse_ticks, settle_wishes, step_to_change, ticked_reply
from .turn import Answer, TurnContext
from .understanding import read
from .when import FutureTime, find_when_in_story, parse_when

# -- shared ---------------------------------------------------------------------------------------------

def handle(c: TurnContext, text: str, parse: Callable[[str], None]) -> None:
    """Run an answer parser; on success move on, otherwise explain and ask again."""
    if not text:
        c.say("error.empty")
        ask(c, c.state.step, repeat=True)
        return
    try:
        parse(text)
    except Answer as error:
        fail(c, error, text)
        return
    advance(c)


def fail(c: TurnContext, error: Answer, text: str) -> None:
    draft = c.draft
    # A long message at the wrong step is most likely more of the story: keep it there.
    if c.state.step != "story" and len(text.split()) >= 6 and tx.has_words(text):
        addition = tx.clean(text, tx.MAX_STORY_CHARS - len(draft.story) - 2).text
        if addition:
            draft.story = f"{draft.story}\n\n{addition}".strip()
            c.say("story.appended")
            ask(c, c.state.step, repeat=True)
            return
    c.say(error.key, **error.values)
    ask(c, c.state.step, repeat=True)


def match_labels(text: str, prefix: str, codes: tuple[str, ...]) -> list[str]:
    """The codes whose label (in any language) the text is or contains as whole words."""
    folded = tx.fold(text)
    found = []
    for code in codes:
        for language in LANGUAGES:
            label = tx.fold(Translator(language)(f"{prefix}.{code}"))
            if label and (label == folded or f" {label} " in f" {folded} "):
                found.append(code)
                break
    return found


# -- idle and the story -----------------------------------------------------------------------------------

def answer_idle(c: TurnContext, text: str) -> None:
    state = c.state
    if state.relay_reference and state.relay_until and c.input.now > dt.datetime.fromisoformat(state.relay_until):
        state.relay_reference = state.relay_until = None  # the conversation went quiet
    if state.pending_relay is not None:
        _answer_relay_or_report(c, text)
        return
    if state.relay_reference and text and tx.has_words(text) and not tx.is_greeting(text):
        if cat.suggest_kinds(text, c.ctx.vocabulary):
            # It reads like a new incident: a new report must never land in the coordinators' room.
            state.pending_relay = tx.clean(text, tx.MAX_STORY_CHARS).text
            c.replies.append(question_relay_or_report(c))
            return
        _relay(c, text)
        return
    if not text or tx.is_greeting(text) or not tx.has_words(text) or _too_short_for_a_story(c, text):
        introduce(c, greeting=bool(text) and tx.is_greeting(text))
        return
    c.start_draft()
    answer_story(c, text)


def _relay(c: TurnContext, text: str) -> None:
    assert c.state.relay_reference is not None
    c.effects.append(RelayToCoordinator(c.state.relay_reference, tx.clean(text, tx.MAX_MESSAGE_CHARS).text))
    c.say("relay.sent", reference=c.state.relay_reference)


_RELAY_WORDS = {"1", "antwoord", "een antwoord", "answer", "an answer", "reply", "doorsturen", "forward"}
_REPORT_WORDS = {"2", "nieuw", "nieuwe melding", "new", "new report", "melding", "een nieuwe melding"}


def _answer_relay_or_report(c: TurnContext, text: str) -> None:
    state = c.state
    pending = state.pending_relay or ""
    word = tx.fold(text)
    if word in _REPORT_WORDS:
        state.pending_relay = None
        c.start_draft()
        answer_story(c, pending)
    elif word in _RELAY_WORDS and state.relay_reference:
        state.pending_relay = None
        _relay(c, pending)
    elif word in _RELAY_WORDS:  # the relay window closed meanwhile: nobody is waiting for an answer
        state.pending_relay = None
        c.say("relay.closed")
        c.start_draft()
        answer_story(c, pending)
    else:
        c.say("relay.not_understood")
        c.replies.append(question_relay_or_report(c))


def introduce(c: TurnContext, greeting: bool) -> None:
    c.state.introduced = True
    if greeting or not c.replies:
        c.say("intro", organisation=c.ctx.organisation)
    c.start_draft()
    ask(c, "story", push=False)


def answer_story(c: TurnContext, text: str) -> None:
    draft = c.draft
    if not text:
        c.say("error.empty")
        ask(c, "story", repeat=True)
        return
    if not tx.has_words(text):
        c.say("error.story_no_words")
        ask(c, "story", repeat=True)
        return
    draft.story = tx.clean(text, tx.MAX_STORY_CHARS).text
    if not c.state.editing:
        infer_from_story(c, draft)
        c.say("story.thanks")
    advance(c)


def infer_from_story(c: TurnContext, draft: Draft) -> None:
    """Fill what the story tells (kind, place, perpetrator, time, police, injury), so it is not asked."""
    story = draft.story
    reading = read(story, c.ctx.vocabulary)
    if draft.kinds is None and reading.kinds:
        draft.kinds, draft.kinds_suggested = list(reading.kinds), True
    if draft.place is None:
        draft.place = reading.place
    if draft.perpetrator is None:
        draft.perpetrator = reading.perpetrator
    if not draft.occurred_text:
        found = find_when_in_story(story, c.now, c.ctx.timezone)
        if found:
            draft.occurred_at = found.at.isoformat()
            draft.occurred_just_now = found.just_now
            draft.occurred_text = "story"
    if draft.police_came is None and reading.police_came:
        draft.police_came = True
    if draft.consequences is None and reading.injury:
        draft.consequences = ["injury"]


# -- the field steps ------------------------------------------------------------------------------------

def answer_details(c: TurnContext, text: str) -> None:
    draft = c.draft
    want_kinds, want_place = details_wanted(c)

    def parse(answer: str) -> None:
        if want_kinds and not want_place:
            return parse_kinds(c, answer)
        if want_place and not want_kinds:
            return parse_where(c, answer)
        numbers, rest = _leading_numbers(answer)
        kinds: list[str] = []
        place = None
        if numbers:
            for number in numbers:
                if 1 <= number <= len(cat.KINDS):
                    kinds.append(cat.KINDS[number - 1])
                elif len(cat.KINDS) < number <= len(cat.KINDS) + len(cat.PLACES):
                    if place is not None:
                        raise Answer("error.one_place")
                    place = cat.PLACES[number - len(cat.KINDS) - 1]
                else:
                    raise Answer("error.number_range", low=1, high=len(cat.KINDS) + len(cat.PLACES))
        else:
            kinds = match_labels(answer, "kind", cat.KINDS) or cat.suggest_kinds(answer, c.ctx.vocabulary)
            place = cat.suggest_place(answer, c.ctx.vocabulary) or _first(match_labels(answer, "place", cat.PLACES))
            if not kinds and not place:
                if tx.is_yes(answer) and draft.kinds:
                    kinds = list(draft.kinds)
                else:
                    raise Answer("error.details")
        if kinds:
            draft.kinds = [k for k in cat.KINDS if k in kinds]
            draft.kinds_suggested = False
        if place:
            draft.place = place
            if place == "other" and rest:
                draft.place_text = tx.clean(rest, tx.MAX_SHORT_CHARS).text

    handle(c, text, parse)


def parse_kinds(c: TurnContext, answer: str) -> None:
    draft = c.draft
    numbers = tx.parse_numbers(answer)
    if numbers is not None:
        if any(not 1 <= n <= len(cat.KINDS) for n in numbers):
            raise Answer("error.number_range", low=1, high=len(cat.KINDS))
        draft.kinds = [cat.KINDS[n - 1] for n in sorted(numbers)]
    elif tx.is_yes(answer):
        if not draft.kinds:
            raise Answer("error.kinds_none_selected")
    else:
        # An exact label ("seksuele intimidatie") wins over keywords inside it ("intimidatie").
        kinds = match_labels(answer, "kind", cat.KINDS) or cat.suggest_kinds(answer, c.ctx.vocabulary)
        if not kinds:
            raise Answer("error.kinds")
        draft.kinds = [k for k in cat.KINDS if k in kinds]
    draft.kinds_suggested = False


def answer_kinds(c: TurnContext, text: str) -> None:
    handle(c, text, lambda answer: parse_kinds(c, answer))


def answer_when(c: TurnContext, text: str) -> None:
    draft = c.draft

    def parse(answer: str) -> None:
        if tx.is_yes(answer):
            draft.occurred_text = draft.occurred_text or "confirmed"
            return
        try:
            found = parse_when(answer, c.now, c.ctx.timezone)
        except FutureTime:
            raise Answer("error.when_future") from None
        if found is None:
            raise Answer("error.when")
        draft.occurred_at = found.at.isoformat()
        draft.occurred_just_now = found.just_now
        draft.occurred_text = tx.clean(answer, tx.MAX_SHORT_CHARS).text

    handle(c, text, parse)


def parse_where(c: TurnContext, answer: str) -> None:
    draft = c.draft
    number, rest = tx.split_leading_number(answer)
    if number is not None:
        if not 1 <= number <= len(cat.PLACES):
            raise Answer("error.number_range", low=1, high=len(cat.PLACES))
        if rest and tx.parse_numbers(rest) is not None:
            raise Answer("error.one_place")
        draft.place = cat.PLACES[number - 1]
        draft.place_text = tx.clean(rest, tx.MAX_SHORT_CHARS).text if rest else ""
        return
    if tx.is_yes(answer) and draft.place:
        return
    place = cat.suggest_place(answer, c.ctx.vocabulary) or _first(match_labels(answer, "place", cat.PLACES))
    if place:
        draft.place, draft.place_text = place, ""
    elif tx.has_words(answer) and len(answer) >= 3:
        # "in de lift", "bij de ingang": a place in their own words is a valid answer.
        draft.place, draft.place_text = "other", tx.clean(answer, tx.MAX_SHORT_CHARS).text
    else:
        raise Answer("error.where")


def answer_where(c: TurnContext, text: str) -> None:
    handle(c, text, lambda answer: parse_where(c, answer))


def answer_perpetrator(c: TurnContext, text: str) -> None:
    draft = c.draft

    def parse(answer: str) -> None:
        number, rest = tx.split_leading_number(answer)
        if number is not None:
            if not 1 <= number <= len(cat.PERPETRATORS):
                raise Answer("error.number_range", low=1, high=len(cat.PERPETRATORS))
            draft.perpetrator = cat.PERPETRATORS[number - 1]
            draft.perpetrator_text = tx.clean(rest, tx.MAX_SHORT_CHARS).text if rest else ""
            return
        if tx.is_yes(answer) and draft.perpetrator:
            return
        matched = _first(match_labels(answer, "perpetrator", cat.PERPETRATORS))
        if matched:
            draft.perpetrator = matched
        elif tx.has_words(answer):
            draft.perpetrator = draft.perpetrator or "other"
            draft.perpetrator_text = tx.clean(answer, tx.MAX_SHORT_CHARS).text
        else:
            raise Answer("error.perpetrator")

    handle(c, text, parse)


def answer_consequences(c: TurnContext, text: str) -> None:
    draft = c.draft

    def parse(answer: str) -> None:
        numbers = tx.parse_numbers(answer)
        if tx.is_no(answer):
            draft.consequences = []
        elif numbers is not None:
            if any(not 1 <= n <= len(cat.CONSEQUENCES) for n in numbers):
                raise Answer("error.number_range", low=0, high=len(cat.CONSEQUENCES))
            draft.consequences = [cat.CONSEQUENCES[n - 1] for n in sorted(numbers)]
        elif tx.is_yes(answer) and draft.consequences is not None:
            return
        else:
            found = match_labels(answer, "consequence", cat.CONSEQUENCES)
            if cat.suggest_injury(answer, c.ctx.vocabulary) and "injury" not in found:
                found.append("injury")
            if not found:
                raise Answer("error.consequences")
            draft.consequences = [code for code in cat.CONSEQUENCES if code in found]

    handle(c, text, parse)


def answer_wishes(c: TurnContext, text: str) -> None:
    draft = c.draft

    def parse(answer: str) -> None:
        if tx.is_yes(answer):
            selected = wish_selection(c)
        elif tx.is_no(answer):
            selected = set()
        else:
            numbers = tx.parse_numbers(answer)
            if numbers is None:
                folded = tx.fold(answer)
                selected = set(match_labels(answer, "wish", cat.WISHES))
                selected |= {w for w, words in WISH_WORDS.items() if any(x in folded for x in words)}
                if not selected:
                    raise Answer("error.wishes")
            elif any(not 1 <= n <= len(cat.WISHES) for n in numbers):
                raise Answer("error.number_range", low=0, high=len(cat.WISHES))
            else:
                selected = {cat.WISHES[n - 1] for n in numbers}
        draft.contact = "contact" in selected
        # Only an explicit "nothing" declines aftercare; not ticking it leaves the check-in open.
        explicit_none = not selected
        draft.aftercare = ("yes" if "aftercare_yes" in selected
                           else "later" if "aftercare_later" in selected
                           else "no" if explicit_none else None)
        draft.police_report = "police_report" in selected
        draft.police_came = "police_came" in selected
        draft.anonymous = "anonymous" in selected

    handle(c, text, parse)


# -- the summary: send, tick wishes, or `wijzig N` ----------------------------------------------------------

def answer_summary(c: TurnContext, text: str) -> None:
    draft = c.draft
    if not text:
        c.say("error.empty")
        ask(c, "summary", repeat=True)
        return
    if tx.is_send(text):
        _send(c)
        return
    try:
        ticks = parse_ticks(text)
        step = None if ticks else step_to_change(text, departments=bool(c.ctx.departments))
    except Answer as error:
        fail(c, error, text)
        return
    if ticks:
        before, aftercare_before = wish_selection(c), draft.aftercare
        apply_ticks(draft, ticks.changes)
        if ticks.send:
            _send(c)
        else:
            c.replies.append(ticked_reply(c, before, aftercare_before))
        return
    if step:
        # Not ask(): an edit records no history, and answering it returns to the summary.
        c.state.editing = True
        c.state.step = step
        c.replies.append(question(c, step))
        return
    code = dep.match(c, text, numbers=False)  # the department named on the summary (bare numbers tick)
    if code:
        dep.choose(c, code)
        c.say("department.saved", name=dep.name(c, code))
        ask(c, "summary", repeat=True)
        return
    fail(c, Answer("error.summary"), text)


def _send(c: TurnContext) -> None:
    if c.ctx.departments:
        c.state.department_asked = True  # sent without naming it: skipped, not asked again
    settle_wishes(c.draft)
    c.effects.append(SubmitReport(c.draft))
    c.state.relay_reference = c.state.relay_until = None  # a new report, a new follow-up
    c.end_draft()


# -- the department (`wijzig 7`, `afdeling`) ----------------------------------------------------------------

def answer_department(c: TurnContext, text: str) -> None:
    """A number, code or name; `geen` for none; a send word or `ja` keeps it as it is."""
    if not c.ctx.departments:  # no longer configured (a conversation saved at this step)
        leave_department(c, text)
        return
    if not text:
        c.say("error.empty")
        ask(c, "department", repeat=True)
        return
    folded = tx.fold(text)
    if folded in tx.SEND_WORDS or tx.is_yes(text):
        keep_department(c, skipped=True)
        return
    if tx.is_no(text):
        dep.choose(c, None)
        c.say("department.none")
        finish_department(c)
        return
    code = dep.match(c, text)
    if code:
        dep.choose(c, code)
        c.say("department.saved", name=dep.name(c, code))
        finish_department(c)
        return
    if c.in_dialogue():
        fail(c, Answer("error.department", high=len(c.ctx.departments)), text)
    elif len(text.split()) >= 3 or cat.suggest_kinds(text, c.ctx.vocabulary):
        leave_department(c, text)  # outside a report, more than a name is most likely a story
    else:
        c.say("error.department", high=len(c.ctx.departments))
        ask(c, "department", repeat=True)


def leave_department(c: TurnContext, text: str) -> None:
    """Drop the department question and read the message as if it had not been asked."""
    c.state.department_return = None
    if c.in_dialogue():
        ask(c, "summary", push=False)
        return
    c.state.step = "idle"
    answer_idle(c, text)


ANSWERS: dict[str, Callable[[TurnContext, str], None]] = {
    "idle": answer_idle,
    "story": answer_story,
    "details": answer_details,
    "kinds": answer_kinds,
    "when": answer_when,
    "where": answer_where,
    "perpetrator": answer_perpetrator,
    "consequences": answer_consequences,
    "wishes": answer_wishes,
    "department": answer_department,
    "summary": answer_summary,
}


def _too_short_for_a_story(c: TurnContext, text: str) -> bool:
    """One word that names no incident ("oppakken", "ok") opens the conversation, it is no story."""
    return len(text.split()) < 2 and not cat.suggest_kinds(text, c.ctx.vocabulary)


def _leading_numbers(text: str) -> tuple[list[int], str]:
    """`3 12 bij de ingang` -> ([3, 12], "bij de ingang")."""
    numbers: list[int] = []
    rest = text.strip()
    while True:
        number, remainder = tx.split_leading_number(rest.lstrip(",;&+ "))
        if number is None:
            break
        numbers.append(number)
        rest = remainder
        if rest.lower().startswith(("en ", "and ")):
            rest = rest.split(" ", 1)[1]
    return numbers, rest.strip(" ,;")


def _first(items: list[str]) -> str | None:
    return items[0] if items else None

"""The summary shown before sending: the numbered report lines, then the wishes as a tick list.

`wijzig N` / `change N` reopens report line N; a wish is ticked with its number or a word (`2`,
`nazorg`), unticked with a negation (`niet 2`, `geen nazorg`, `2 uit`), and a send word after the
ticks (`2 verzenden`) sends in the same message. With departments configured, line 7 is the
reporter's department, and the first report's summary asks for it once (a name answers it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from . import categories as cat
from . import department as dep
from . import labels
from . import text as tx
from .i18n import LANGUAGES, Translator
from .model import Draft, Option, Reply
from .turn import Answer, TurnContext

#: Summary line number -> the step that changes it. The wishes are the tick list below the lines.
SUMMARY_LINES = {1: "story", 2: "kinds", 3: "when", 4: "where", 5: "perpetrator", 6: "consequences"}
#: Longer stories are cut on the summary so the numbered lines stay in view.
_STORY_PREVIEW = 280

#: The label of each wish on the tick list; aftercare and police say what ticking them does.
_TICK_LABELS = {
    "contact": "wish.contact",
    "aftercare_yes": "summary.wish_aftercare_yes",
    "aftercare_later": "summary.wish_aftercare_later",
    "police_report": "summary.wish_police_report",
    "police_came": "wish.police_came",
    "anonymous": "wish.anonymous",
}

#: Words that pick a wish without its number or exact label.
WISH_WORDS = {
    "contact": ("contact", "bellen", "call me", "gesprek", "talk"),
    "aftercare_yes": ("nazorg", "aftercare", "opvang", "support"),
    "aftercare_later": ("nazorg later", "later nazorg", "misschien later", "aftercare later", "maybe later"),
    "police_report": ("aangifte", "police report", "report to the police"),
    "police_came": ("politie kwam", "police came", "politie was er", "politie was erbij", "police were there"),
    "anonymous": ("anoniem", "anonymous", "anonymously"),
}

# How a tick message reads: segments ("2, geen nazorg en 4") each ticked, or unticked by a negation.
_SEGMENTS = re.compile(r"[,;&+/]|\b(?:en|and|maar|but)\b")
#: A send word after the ticks ("2 verzenden", "nazorg en verzenden"); the longest one wins.
_SEND_AFTER = re.compile(r"(?:^|[\s,;&+])(?:%s)$" % "|".join(
    re.escape(word) for word in sorted(tx.SEND_WORDS, key=len, reverse=True)))
_TOKEN = re.compile(r"[a-z0-9']+")
#: Negations that decline (aftercare named and declined is "no", not merely "not asked").
_DECLINE = frozenset({"geen", "no", "zonder", "without", "don't", "dont", "nee"})
#: Negations that only untick.
_UNTICK = frozenset({"niet", "not", "uit", "off", "untick", "uncheck", "uitvinken", "uitgevinkt", "weg", "remove"})
#: Words a tick message may hold around the wishes ("ik wil graag nazorg", "tick 2 please").
_FILLERS = frozenset({
    "vink", "aan", "aanvinken", "aangevinkt", "tick", "check", "graag", "ook", "wel", "please", "also", "ja",
    "yes", "ok", "oke", "okay", "ik", "wil", "i", "want", "would", "like", "i'd", "id", "doen", "do", "file",
    "make", "de", "het", "een", "the", "a", "an", "nu", "now", "nodig", "need", "needed", "wanted", "gewenst",
    "blijven", "stay", "be", "to", "me", "mij", "nummer", "number", "optie", "option", "wens", "wish", "zijn",
    "is", "was", "er", "erbij",
})


@dataclass(frozen=True)
class Tick:
    """One change to the tick list: `code` ticked (`on`) or unticked; `declined` says so in words."""

    code: str
    on: bool
    declined: bool = False


@dataclass(frozen=True)
class Ticks:
    """A tick message: its changes in order, and whether it ends with the send word."""

    changes: tuple[Tick, ...]
    send: bool


def summary_reply(c: TurnContext) -> Reply:
    draft = c.draft
    t = c.t
    story = draft.story if len(draft.story) <= _STORY_PREVIEW else draft.story[:_STORY_PREVIEW - 3].rstrip() + "…"
    lines = [
        (1, t("summary.story"), f"“{story}”"),
        (2, t("summary.kinds"), labels.kind_labels(c, draft.kinds) if draft.kinds else t("summary.not_given")),
        (3, t("summary.when"), labels.when_label(c, assumed_mark=True)),
        (4, t("summary.where"), labels.place_label(c) or t("summary.not_given")),
        (5, t("summary.perpetrator"), labels.perpetrator_label(c) or t("summary.optional")),
        (6, t("summary.consequences"), labels.consequence_label(c) or t("summary.optional")),
    ]
    if c.ctx.departments:
        lines.append((dep.DEPARTMENT_LINE, t("summary.department"),
                      dep.name(c, draft.department) or t("summary.optional")))
    body = [t("summary.intro")]
    body.append("\n".join(f"{n}. {label}: {value}" for n, label, value in lines))
    if draft.attachments:
        body.append(t.plural("summary.evidence", "summary.evidence_plural", len(draft.attachments)))
    if dep.pending(c):
        body.append(department_prompt(c))
    body.append(t("summary.wishes_intro"))
    return Reply("\n\n".join(body), wish_options(c), hint=t("hint.summary"), title=t("summary.title"),
                 checklist=True)


def department_prompt(c: TurnContext) -> str:
    """The one-time question on the first report's summary: a name answers it, sending skips it."""
    number = dep.DEPARTMENT_LINE
    if len(c.ctx.departments) <= dep.NAMES_IN_PROMPT:
        names = ", ".join(name for _, name in c.ctx.departments)
        choose = c.t("summary.department_choose_names", names=names, number=number)
    else:
        choose = c.t("summary.department_choose", number=number)
    return c.t("summary.department_prompt", choose=choose)


def wish_options(c: TurnContext) -> tuple[Option, ...]:
    """The wishes as a tick list, numbered as `categories.WISHES`, ticked as the draft holds them."""
    selected = labels.wish_selection(c)
    return tuple(Option(number, c.t(_TICK_LABELS[code]), code in selected)
                 for number, code in enumerate(cat.WISHES, start=1))


def step_to_change(text: str, departments: bool = False) -> str | None:
    """The step a `wijzig N` answer reopens, or None when the text names no summary line.
    With `departments`, line 7 is the department.

    Raises `Answer` for a line number the summary does not have (`wijzig 9`)."""
    number = tx.parse_change(text)
    if number is None:
        return None
    if departments and number == dep.DEPARTMENT_LINE:
        return "department"
    if number not in SUMMARY_LINES:
        raise Answer("error.number_range", low=1, high=dep.DEPARTMENT_LINE if departments else len(SUMMARY_LINES))
    return SUMMARY_LINES[number]


# -- ticking wishes ---------------------------------------------------------------------------------------

def parse_ticks(text: str) -> Ticks | None:
    """The wish changes a summary answer asks for, or None when the text is not a tick message.

    Every word must be a number, a wish, a negation, a send word at the end or a filler, so a
    sentence that mentions "contact" is not taken for a tick. Raises `Answer` for a wish number
    out of range.
    """
    folded = tx.fold(text)
    send = False
    match = _SEND_AFTER.search(folded)
    if match and match.start() > 0:
        folded, send = folded[:match.start()], True
    changes: list[Tick] = []
    out_of_range = False
    for segment in _SEGMENTS.split(folded):
        tokens = _TOKEN.findall(segment)
        # Groups of wishes, each under the negation before it: "2 niet 1" is (None: 2), (untick: 1).
        groups: list[tuple[str | None, list[tuple[str, bool]]]] = [(None, [])]
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token.isdigit():
                number = int(token)
                if 1 <= number <= len(cat.WISHES):
                    groups[-1][1].append((cat.WISHES[number - 1], False))
                else:
                    out_of_range = True
            elif phrase := _match_phrase(tokens, index):
                groups[-1][1].append((phrase[0], True))
                index += phrase[1]
                continue
            elif token in _DECLINE or token in _UNTICK:
                negation = "decline" if token in _DECLINE else "untick"
                if groups[-1][1] or groups[-1][0] is None:
                    groups.append((negation, []))
                elif negation == "decline":  # "vink niet geen ..." : the stronger one counts
                    groups[-1] = (negation, groups[-1][1])
            elif token not in _FILLERS:
                return None
            index += 1
        negation, last = groups[-1]
        if negation and not last and len(groups) > 1:
            # A negation after the wishes ("2 uit", "contact niet nodig") unticks the ones before it.
            groups.pop()
            previous_negation, previous = groups.pop()
            if not previous and not out_of_range:
                return None  # a negation with nothing to untick ("niet verzenden") is no tick message
            groups.append((previous_negation or negation, previous))
        for negation, found in groups:
            for code, in_words in found:
                if negation is None:
                    changes.append(Tick(code, True))
                else:
                    changes.append(Tick(code, False, declined=negation == "decline" and in_words))
    if out_of_range:
        raise Answer("error.number_range", low=1, high=len(cat.WISHES))
    if not changes:
        return None
    return Ticks(tuple(changes), send)


def apply_ticks(draft: Draft, changes: tuple[Tick, ...]) -> None:
    """Tick and untick wishes on the draft, in order (aftercare now and later exclude each other)."""
    for change in changes:
        code, on = change.code, change.on
        if code == "contact":
            draft.contact = on
        elif code in ("aftercare_yes", "aftercare_later"):
            value = "yes" if code == "aftercare_yes" else "later"
            if on:
                draft.aftercare = value
            elif change.declined:
                draft.aftercare = "no"
            elif draft.aftercare == value:
                draft.aftercare = None  # unticked is not declined: the check-in still comes
        elif code == "police_report":
            draft.police_report = on
        elif code == "police_came":
            draft.police_came = on
        elif code == "anonymous":
            draft.anonymous = on


def settle_wishes(draft: Draft) -> None:
    """Before sending: the wishes as the tick list showed them (contact ticked unless unticked).

    Aftercare stays as it is: not ticked is "not asked" (the check-in still comes), not declined."""
    draft.contact = draft.contact is not False
    draft.police_report = bool(draft.police_report)
    draft.police_came = bool(draft.police_came)


def ticked_reply(c: TurnContext, before: set[str], aftercare_before: str | None) -> Reply:
    """The short answer to a tick: what changed, the tick list again and how to send."""
    t = c.t
    after = labels.wish_selection(c)
    lines = []
    for number, code in enumerate(cat.WISHES, start=1):
        wish = f"{number}. {t('wish.' + code)}"
        if code in after and code not in before:
            lines.append(t("summary.ticked", wish=wish))
        elif code in before and code not in after:
            lines.append(t("summary.unticked", wish=wish))
    if c.draft.aftercare == "no" and aftercare_before != "no":
        lines.append(t("summary.aftercare_declined"))
    if not lines:
        lines.append(t("summary.unchanged"))
    return Reply("\n".join(lines), wish_options(c), hint=t("hint.summary_ticked"), checklist=True)


@cache
def _phrases() -> tuple[tuple[tuple[str, ...], str], ...]:
    """Every way to name a wish in words (its labels in both languages and `WISH_WORDS`), longest first."""
    found: dict[tuple[str, ...], str] = {}
    for code in cat.WISHES:
        names = list(WISH_WORDS.get(code, ()))
        for language in LANGUAGES:
            translate = Translator(language)
            names += [translate(f"wish.{code}"), translate(_TICK_LABELS[code])]
        for name in names:
            tokens = tuple(_TOKEN.findall(tx.fold(name)))
            if tokens:
                found.setdefault(tokens, code)
    return tuple(sorted(found.items(), key=lambda item: -len(item[0])))


def _match_phrase(tokens: list[str], index: int) -> tuple[str, int] | None:
    """The wish named by the words at `index` (the longest name wins) and how many words it takes."""
    for phrase, code in _phrases():
        if tuple(tokens[index:index + len(phrase)]) == phrase:
            return code, len(phrase)
    return None

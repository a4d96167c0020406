"""The reporter's department (`[organisation] departments`): remembered in the conversation, copied
into every report, asked once (on the first report's summary), changeable at any time.

For the statistics: the answer lands in the case's answers (`answers["department"]`), which the
de-identified facts read. Nothing here is used when the organisation configured no departments."""

from __future__ import annotations

import re

from . import text as tx
from .turn import TurnContext

#: The summary line that shows the department (`wijzig 7`), after the six report lines.
DEPARTMENT_LINE = 7
#: Up to this many departments are named in the summary's one-time question; with more, the
#: reporter types `wijzig 7` for the numbered list.
NAMES_IN_PROMPT = 8

# Words around a department name in an answer ("ik werk bij Burgerzaken", "department: Finance").
_AROUND = frozenset({
    "afdeling", "department", "dept", "team", "ik", "i", "werk", "work", "bij", "op", "in", "at", "for", "de",
    "het", "the", "mijn", "my", "is", "dat", "its", "it's", "van", "of", "hoor", "graag",
})
_SEPARATORS = re.compile(r"[\s_\-:/,.&+]+")
#: Joining words, left out of names and answers alike ("Zorg & Welzijn" is "zorg en welzijn").
_JOINERS = frozenset({"en", "and"})


def codes(c: TurnContext) -> tuple[str, ...]:
    return tuple(code for code, _ in c.ctx.departments)


def name(c: TurnContext, code: str | None) -> str:
    """The display name of a department code ("" for None; an unknown code is shown as it is)."""
    if code is None:
        return ""
    return dict(c.ctx.departments).get(code, code)


def pending(c: TurnContext) -> bool:
    """The summary still asks for the department: configured, never asked, none remembered."""
    return bool(c.ctx.departments) and not c.state.department_asked and c.state.department is None


def choose(c: TurnContext, code: str | None) -> None:
    """Remember `code` (None: none) for this and every next report; asked, so not asked again."""
    c.state.department = code
    c.state.department_asked = True
    if c.state.draft is not None:
        c.state.draft.department = code


def _words(text: str) -> str:
    return " ".join(w for w in _SEPARATORS.split(tx.fold(text)) if w and w not in _JOINERS)


def match(c: TurnContext, text: str, numbers: bool = True) -> str | None:
    """The department an answer names: its number in the list (when `numbers`), its code or its
    display name (case and accents ignored), alone or with a few words around it ("ik werk bij
    Burgerzaken"). None when it names none, or more than one."""
    if not c.ctx.departments:
        return None
    folded = _words(text)
    if not folded:
        return None
    if numbers and folded.isdigit():
        number = int(folded)
        return c.ctx.departments[number - 1][0] if 1 <= number <= len(c.ctx.departments) else None
    tokens = folded.split()
    found: dict[str, int] = {}  # code -> the longest of its forms found ("team zorg" beats "zorg")
    for code, display in c.ctx.departments:
        for form in {_words(code), _words(display)}:
            if form and _names_with_words_around(tokens, form.split()):
                found[code] = max(found.get(code, 0), len(form.split()))
    if not found:
        return None
    longest = max(found.values())
    best = [code for code, size in found.items() if size == longest]
    return best[0] if len(best) == 1 else None


def _names_with_words_around(tokens: list[str], form: list[str]) -> bool:
    """`form` appears in `tokens`, and every other token is a word that may stand around a name."""
    size = len(form)
    for start in range(len(tokens) - size + 1):
        if tokens[start:start + size] == form:
            rest = tokens[:start] + tokens[start + size:]
            if all(word in _AROUND for word in rest):
                return True
    return False

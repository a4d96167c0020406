"""The fixed answer sets of a report and the keywords that pre-select them from a story.

Codes are stable identifiers stored in the database; labels come from the message catalogs
under `kind.<code>`, `place.<code>` and so on.
"""

from __future__ import annotations

from .understanding import Vocabulary, read

KINDS: tuple[str, ...] = (
    "verbal",
    "threat",
    "intimidation",
    "physical",
    "discrimination",
    "sexual",
    "vandalism",
    "online",
    "bribery",
    "other",
)

PLACES: tuple[str, ...] = (
    "counter",
    "phone",
    "online",
    "street",
    "home_visit",
    "meeting",
    "own_home",
    "other",
)

PERPETRATORS: tuple[str, ...] = ("unknown", "citizen", "colleague", "other")

CONSEQUENCES: tuple[str, ...] = ("injury", "damage", "absence")

#: What a reporter can ask for (multi-select).
WISHES: tuple[str, ...] = ("contact", "aftercare_yes", "aftercare_later", "police_report", "police_came", "anonymous")

#: Kinds that make a case urgent for the coordinator.
URGENT_KINDS = frozenset({"physical", "threat"})

# What a story suggests comes from `dialogs.understanding` (a lemmatiser and the vocabulary files in
# `dialogs/vocabulary/`); `vocabulary` is the organisation's extended one (`Context.vocabulary`).


def suggest_kinds(text: str, vocabulary: Vocabulary | None = None) -> list[str]:
    """Kinds of incident a story suggests, in the fixed order of `KINDS`."""
    return list(read(text, vocabulary).kinds)


def suggest_place(text: str, vocabulary: Vocabulary | None = None) -> str | None:
    """The kind of place a story names (the first one named; the reporter's own home wins)."""
    return read(text, vocabulary).place


def suggest_perpetrator(text: str, vocabulary: Vocabulary | None = None) -> str | None:
    """Who did it, when the story names them by role (citizen, colleague, unknown)."""
    return read(text, vocabulary).perpetrator


def suggest_police_came(text: str, vocabulary: Vocabulary | None = None) -> bool:
    """True when the story says the police came or were called."""
    return read(text, vocabulary).police_came


def suggest_injury(text: str, vocabulary: Vocabulary | None = None) -> bool:
    """True when the story mentions an injury (only the yes/no category is ever kept)."""
    return read(text, vocabulary).injury


def is_urgent(kinds: list[str] | tuple[str, ...]) -> bool:
    """Physical violence and threats are urgent for the coordinator."""
    return bool(URGENT_KINDS.intersection(kinds))

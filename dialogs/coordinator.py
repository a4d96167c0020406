"""What coordinators can write in a case thread, and the texts that follow from it. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .i18n import Translator
from .model import Reply
from .text import clean, fold

_CLAIM = ("oppakken", "ik pak hem op", "ik pak het op", "pak op", "claim", "take", "mine", "toewijzen aan mij")
_REPLY_RE = re.compile(r"^[!/]?\s*(antwoord|antwoorden|reply|answer|bericht|message)\b[:\s]*(.*)$", re.I | re.S)
_HELP = ("help", "hulp", "?", "commands")
#: What a coordinator writes to get a login link for the case pages.
_LOGIN = ("login", "log in", "inloggen", "log me in")
#: What a coordinator writes for the numbers of this month and this year.
_OVERVIEW = ("overzicht", "overview", "cijfers", "figures", "statistieken", "statistics", "stats")
#: Longest coordinator message relayed to a reporter.
MAX_RELAY_CHARS = 2000


@dataclass(frozen=True)
class CoordinatorCommand:
    """`claim`, `reply` (with its text) or `help`."""

    name: str
    text: str = ""


def parse_coordinator_command(text: str) -> CoordinatorCommand | None:
    """A command in a case thread, or None for ordinary talk between coordinators."""
    match = _REPLY_RE.match(text.strip())
    if match:
        return CoordinatorCommand("reply", clean(match.group(2), MAX_RELAY_CHARS).text)
    folded = fold(text)
    if folded in _CLAIM:
        return CoordinatorCommand("claim")
    if folded in _HELP:
        return CoordinatorCommand("help")
    return None


def is_overview_command(text: str) -> bool:
    """`overzicht` / `overview` (with or without ! or /): this month's and this year's numbers."""
    return fold(text or "") in _OVERVIEW


def is_login_command(text: str) -> bool:
    """`login` (with or without ! or /), in Dutch or English."""
    return fold(text or "") in _LOGIN


def claimed_for_reporter(language: str, reference: str, coordinator: str) -> Reply:
    """Told to the reporter: who picked up their report."""
    t = Translator(language)
    return Reply(t("coord.claimed_reporter", reference=reference, name=coordinator))


def message_for_reporter(language: str, reference: str, coordinator: str, text: str) -> Reply:
    """A coordinator's message, relayed to the reporter and marked as such."""
    t = Translator(language)
    return Reply(text, title=t("coord.message_title", reference=reference, name=coordinator),
                 hint=t("coord.message_hint"))


def thread_reply(language: str, key: str, **values: object) -> Reply:
    """A short answer in the case thread."""
    return Reply(Translator(language)(f"coord.{key}", **values))

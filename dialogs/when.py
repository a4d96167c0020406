"""When did it happen: everyday Dutch and English time phrases.

`dateparser` does the general work ("gisteren 14:30", "21-11 10:00", "yesterday afternoon",
"2 uur geleden"). It does not know the everyday words for "just now", the Dutch day parts,
"om 10 uur" (it returns 12:00) or numbers written as words, so a small table handles those first.
A time is never in the future.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import dateparser

from .text import fold

_JUST_NOW = (
    "net", "zojuist", "zonet", "daarnet", "daarstraks", "net nu", "nu", "nu net", "zo net", "zo-even",
    "zoeven", "just now", "right now", "now", "a moment ago", "a minute ago", "just", "vandaag",
    "today", "net nog", "eerder vandaag", "earlier today", "just happened", "het gebeurde net",
)

# Day parts: (offset in days, hour). Chosen to match dateparser's own day-part hours.
_DAY_PARTS = {
    "vanochtend": (0, 9), "vanmorgen": (0, 9), "vanmiddag": (0, 15), "vanavond": (0, 20),
    "vannacht": (0, 3), "this morning": (0, 9), "this afternoon": (0, 15), "this evening": (0, 20),
    "tonight": (0, 20), "last night": (-1, 23), "gisterochtend": (-1, 9), "gistermorgen": (-1, 9),
    "gistermiddag": (-1, 15), "gisteravond": (-1, 20), "gisternacht": (-1, 3),
    "gisteren ochtend": (-1, 9), "gisteren middag": (-1, 15), "gisteren avond": (-1, 20),
    "yesterday morning": (-1, 9), "yesterday afternoon": (-1, 15), "yesterday evening": (-1, 20),
}

_NUMBER_WORDS = {
    "een": 1, "één": 1, "twee": 2, "drie": 3, "vier": 4, "vijf": 5, "zes": 6, "zeven": 7, "acht": 8,
    "negen": 9, "tien": 10, "elf": 11, "twaalf": 12, "kwartier": 15, "half uur": 30, "halfuur": 30,
    "twintig": 20, "dertig": 30, "veertig": 40, "vijftig": 50, "one": 1, "two": 2, "three": 3,
    "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "twenty": 20,
    "thirty": 30, "an": 1, "a": 1, "half an": 30,
}

_AGO_RE = re.compile(
    r"^(?:ongeveer |about |zo'?n |een )?(?P<n>[a-zéë ]+?|\d+) ?"
    r"(?P<unit>minuten|minuut|min|minutes|minute|uur|uren|hours|hour|kwartier|half uur)"
    r" (?:geleden|ago)$"
)
_AT_HOUR_RE = re.compile(
    r"^(?:(?P<day>vandaag|gisteren|today|yesterday) )?(?:om |rond |around |at )?"
    r"(?P<h>\d{1,2})(?:[:.](?P<m>\d{2}))? ?(?:uur|u|h|o'?clock)?(?P<ampm> ?[ap]\.?m\.?)?$"
)
_WEEKDAYS = {
    "maandag": 0, "dinsdag": 1, "woensdag": 2, "donderdag": 3, "vrijdag": 4, "zaterdag": 5, "zondag": 6,
}
_LAST_WEEK_RE = re.compile(r"^(?:vorige week|afgelopen) (?P<day>" + "|".join(_WEEKDAYS) + r")$")

# Phrases that may stand in a story and date it; checked longest first.
_STORY_PHRASES = sorted(
    [p for p in _JUST_NOW if len(p) > 3 or p == "net"] + list(_DAY_PARTS) + ["gisteren", "yesterday"],
    key=len,
    reverse=True,
)
_STORY_RE = re.compile(
    r"\b(?P<phrase>" + "|".join(re.escape(p) for p in _STORY_PHRASES) + r")\b"
    r"(?:\s+(?:om|rond|at|around)\s+(?P<time>\d{1,2}[:.]\d{2}|\d{1,2}\s*(?:uur|u)))?",
    re.IGNORECASE,
)

_PARSER_SETTINGS = {"PREFER_DATES_FROM": "past", "DATE_ORDER": "DMY", "RETURN_AS_TIMEZONE_AWARE": False}


@dataclass(frozen=True)
class When:
    """A point in time (aware) and whether it is "just now" (the default)."""

    at: dt.datetime
    just_now: bool = False


class FutureTime(ValueError):
    """The phrase names a time after now."""


def _local(now: dt.datetime, tz: dt.tzinfo | None) -> dt.datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(tz) if tz else now


def _at_hour(base: dt.datetime, days: int, hour: int, minute: int = 0) -> dt.datetime:
    day = base + dt.timedelta(days=days)
    return day.replace(hour=hour, minute=minute, second=0, microsecond=0)


def _not_future(at: dt.datetime, now: dt.datetime, explicit_day: bool) -> dt.datetime:
    # A clock time later than now with no day means the same time yesterday ("om 16 uur" at 10:00).
    if at > now + dt.timedelta(minutes=2):
        if explicit_day:
            raise FutureTime(at.isoformat())
        at -= dt.timedelta(days=1)
    return at


def parse_when(text: str, now: dt.datetime, tz: dt.tzinfo | None = None) -> When | None:
    """Interpret a time phrase relative to `now` (aware). None when it is not understood.

    Raises FutureTime for a time that is after now.
    """
    local_now = _local(now, tz)
    phrase = fold(text)
    if not phrase:
        return None
    if phrase in _JUST_NOW:
        return When(local_now, just_now=True)
    if phrase in _DAY_PARTS:
        days, hour = _DAY_PARTS[phrase]
        at = _at_hour(local_now, days, hour)
        # "vanavond" said at 18:00 means earlier this evening: never later than now.
        return When(min(at, local_now))
    match = _AGO_RE.match(phrase)
    if match:
        raw, unit = match.group("n").strip(), match.group("unit")
        amount = int(raw) if raw.isdigit() else _NUMBER_WORDS.get(raw)
        if unit in ("kwartier", "half uur"):
            amount, unit = (amount or 1) * (15 if unit == "kwartier" else 30), "minuten"
        if amount is not None:
            minutes = amount * 60 if unit in ("uur", "uren", "hours", "hour") else amount
            return When(local_now - dt.timedelta(minutes=minutes))
    match = _AT_HOUR_RE.match(phrase)
    if match and (match.group("m") or match.group("ampm") is not None or "uur" in phrase or "om" in phrase
                  or match.group("day") or phrase.endswith(("u", "h", "clock"))):
        hour, minute = int(match.group("h")), int(match.group("m") or 0)
        ampm = (match.group("ampm") or "").strip().replace(".", "")
        if ampm == "pm" and hour < 12:
            hour += 12
        if ampm == "am" and hour == 12:
            hour = 0
        if hour > 23 or minute > 59:
            return None
        day = match.group("day")
        days = -1 if day in ("gisteren", "yesterday") else 0
        return When(_not_future(_at_hour(local_now, days, hour, minute), local_now, explicit_day=day is not None))
    match = _LAST_WEEK_RE.match(phrase)
    if match:
        weekday = _WEEKDAYS[match.group("day")]
        start_of_week = local_now - dt.timedelta(days=local_now.weekday())
        return When(_at_hour(start_of_week, weekday - 7, 12))
    # A bare number ("3") is an answer to another question, not a date.
    if not re.search(r"[a-z]", phrase) and not re.search(r"\d[-/:.]\d", phrase):
        return None
    settings = dict(_PARSER_SETTINGS, RELATIVE_BASE=local_now.replace(tzinfo=None))
    parsed = dateparser.parse(text, languages=["nl", "en"], settings=settings)
    if parsed is None:
        return None
    at = parsed.replace(tzinfo=local_now.tzinfo)
    # Only a time was given ("14:30"): dateparser puts it today, even when that is later than now.
    explicit_day = bool(re.search(r"[a-z]{3,}|\d[-/.]\d", phrase.replace(":", "")))
    return When(_not_future(at, local_now, explicit_day))


def find_when_in_story(story: str, now: dt.datetime, tz: dt.tzinfo | None = None) -> When | None:
    """A time named in a story ("ik werd net ...", "gisteren om 14:30 ..."), or None."""
    match = _STORY_RE.search(story)
    if not match:
        return None
    phrase = match.group("phrase")
    if match.group("time"):
        phrase = f"{phrase} om {match.group('time')}"
    try:
        return parse_when(phrase, now, tz)
    except FutureTime:
        return None

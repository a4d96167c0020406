"""Cleaning of user text and recognition of commands and answer words.

Everything here is pure string work: the dialogue calls it on every message before it
interprets the text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: Longest text kept from one message. Longer messages are cut and the user is told.
MAX_MESSAGE_CHARS = 4000
#: Longest story kept in a report (a story can be added to once).
MAX_STORY_CHARS = 8000
#: Longest short free-text answer (a place, a perpetrator description).
MAX_SHORT_CHARS = 300

# Bidirectional overrides and isolates can make a stored text display differently from what
# was typed (e.g. "Trojan Source"); zero-width characters hide text. They carry no meaning here.
_INVISIBLE = dict.fromkeys(
    [0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0xFEFF]
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A)),
    None,
)


@dataclass(frozen=True)
class CleanText:
    """A message after cleaning: the text and whether it had to be cut."""

    text: str
    truncated: bool = False
    original_length: int = 0


def clean(raw: str | None, limit: int = MAX_MESSAGE_CHARS) -> CleanText:
    """Normalise a message: NFC, no control or invisible characters, trimmed, cut at `limit`."""
    if not raw:
        return CleanText("", False, 0)
    text = unicodedata.normalize("NFC", raw).translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = []
    for ch in text:
        if ch in "\n\t":
            kept.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch != " ":
            continue
        else:
            kept.append(ch)
    text = "".join(kept).replace("\t", " ")
    text = re.sub(r"[ \u00a0]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    length = len(text)
    if length > limit:
        return CleanText(text[:limit].rstrip(), True, length)
    return CleanText(text, False, length)


def clean_name(raw: str | None, limit: int = 255) -> str:
    """A file name or display name: cleaned like a message (no control or text-direction
    characters), on one line, cut at `limit`."""
    return clean((raw or "").replace("\n", " ").replace("\r", " "), limit).text


def has_words(text: str) -> bool:
    """True when the text holds at least two letters (so not only emoji, digits or signs)."""
    return sum(1 for ch in text if unicodedata.category(ch).startswith("L")) >= 2


def fold(text: str) -> str:
    """Lower-case, accents removed, command prefix and outer punctuation stripped."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.strip()
    text = text.lstrip("!/").strip()
    text = text.strip(" .!?,;:'\"")
    return re.sub(r"\s+", " ", text)


# Command words, nl and en. Matched on the whole message (after `fold`), never inside a story.
_COMMANDS: dict[str, tuple[str, ...]] = {
    "help": ("help", "hulp", "?", "commands", "commando's", "commandos"),
    "report": ("melden", "melding", "report", "nieuwe melding", "new report", "melding maken", "start"),
    "house_rules": ("huisregels", "huisregel", "house rules", "houserules", "rules", "regels"),
    "norm": ("norm", "normkaart", "norm card", "normcard", "stop agressie samen"),
    "my_reports": ("mijn meldingen", "my reports", "meldingen", "reports", "status"),
    "my_data": ("mijn gegevens", "my data", "gegevens", "inzage", "mijn data", "my personal data",
                "mijn persoonsgegevens", "persoonsgegevens", "what do you store", "wat bewaren jullie"),
    "withdraw": ("intrekken", "withdraw", "melding intrekken", "withdraw report", "trek in"),
    "cancel": ("stop", "annuleer", "annuleren", "cancel", "afbreken", "abort"),
    "back": ("terug", "back", "vorige", "previous"),
    "department": ("afdeling", "department", "mijn afdeling", "my department", "afdeling wijzigen",
                   "wijzig afdeling", "change department", "andere afdeling", "other department"),
    "skip": ("overslaan", "sla over", "skip", "weet ik niet", "weet niet", "geen idee", "don't know",
             "dont know", "-", "pass"),
}
_COMMAND_LOOKUP = {word: name for name, words in _COMMANDS.items() for word in words}

_LANGUAGE_RE = re.compile(
    r"^(?:taal|language|lang|idioma)\s+(nl|en|nederlands|dutch|engels|english)$"
)
#: `intrekken MB-ABC-123`, `withdraw MB-ABC-123`, `trek MB-ABC-123 in` (after `fold`: lower case).
_REFERENCE = r"(mb-[a-z0-9]{3}-[a-z0-9]{3})"
_WITHDRAW_RE = re.compile(
    rf"^(?:(?:melding\s+)?intrekken|trek\s+in|withdraw(?:\s+report)?)\s*:?\s+{_REFERENCE}$"
    rf"|^(?:trek\s+(?:melding\s+)?{_REFERENCE}\s+in|{_REFERENCE}\s+(?:intrekken|withdraw))$"
)
#: `afdeling Burgerzaken`, `department: 2`: the department named at once (checked by the dialogue).
_DEPARTMENT_RE = re.compile(r"^(?:mijn\s+)?(?:afdeling|department|my\s+department)\s*[:=]?\s+(\S.{0,79})$")
_LANGUAGE_CODES = {"nl": "nl", "nederlands": "nl", "dutch": "nl", "en": "en", "engels": "en", "english": "en"}


@dataclass(frozen=True)
class Command:
    """A recognised command; `arg` carries the language code for `language`, the reference for
    `withdraw` and the folded words after `afdeling`/`department` (empty when none was given)."""

    name: str
    arg: str = ""


def parse_command(text: str) -> Command | None:
    """Recognise a whole-message command such as `!help`, `/taal en` or `Mijn meldingen`."""
    folded = fold(text)
    if not folded and text.strip() in ("?", "!?"):
        return Command("help")
    if not folded:
        return None
    match = _LANGUAGE_RE.match(folded)
    if match:
        return Command("language", _LANGUAGE_CODES[match.group(1)])
    if folded in ("english", "engels", "in english", "nederlands", "in het nederlands", "dutch"):
        return Command("language", "en" if folded in ("english", "engels", "in english") else "nl")
    match = _WITHDRAW_RE.match(folded)
    if match:
        return Command("withdraw", next(g for g in match.groups() if g).upper())
    name = _COMMAND_LOOKUP.get(folded)
    if name:
        return Command(name)
    match = _DEPARTMENT_RE.match(folded)
    return Command("department", match.group(1)) if match else None


_YES = {"ja", "j", "yes", "y", "ok", "oke", "okay", "oké", "klopt", "goed", "prima", "correct", "jep", "jawel",
        "ja hoor", "ja graag", "graag", "yes please", "sure", "that's right", "thats right", "right", "akkoord"}
_NO = {"nee", "n", "no", "nope", "neen", "nee hoor", "nee dank je", "no thanks", "niet", "liever niet",
       "geen", "none", "nothing", "niets", "nee bedankt"}
_SEND = {"verzenden", "verzend", "versturen", "verstuur", "send", "submit", "indienen", "send it",
         "ja verzenden", "ja, verzenden", "klaar", "done"}
#: The explicit send words (without yes/ok), recognised at any question.
SEND_WORDS = frozenset(_SEND)


def is_yes(text: str) -> bool:
    """True for a plain yes/ok in Dutch or English."""
    return fold(text) in _YES


def is_no(text: str) -> bool:
    """True for a plain no/none in Dutch or English."""
    return fold(text) in _NO or fold(text) == "0"


def is_send(text: str) -> bool:
    """True for the summary's send word (yes/ok count too)."""
    folded = fold(text)
    return folded in _SEND or folded in _YES


_CHANGE_RE = re.compile(r"^(?:wijzig|wijzigen|verander|aanpassen|pas aan|change|edit|fix)?\s*(\d{1,2})$")


def parse_change(text: str) -> int | None:
    """`wijzig 3`, `change 3` or just `3`: a line number to change. (On the summary a bare number
    ticks a wish: the summary reads ticks first, so only `wijzig 3` reaches this there.)"""
    match = _CHANGE_RE.match(fold(text))
    return int(match.group(1)) if match else None


def parse_numbers(text: str) -> list[int] | None:
    """Numbers of a multi-select answer such as `1 3`, `1,3`, `1 en 3` or `2 & 5`.

    Returns None when the text is not made of numbers and separators only.
    """
    folded = fold(text)
    if not folded:
        return None
    parts = [p for p in re.split(r"[\s,;+&/]+|\ben\b|\band\b", folded) if p]
    if not parts or not all(p.isdigit() for p in parts):
        return None
    numbers: list[int] = []
    for part in parts:
        value = int(part)
        if value not in numbers:
            numbers.append(value)
    return numbers


def split_leading_number(text: str) -> tuple[int | None, str]:
    """`8 in de lift` -> (8, "in de lift"); text without a leading number -> (None, text)."""
    match = re.match(r"^\s*(\d{1,2})(?:\s*[.):,-]\s*|\s+|$)(.*)$", text, re.S)
    if not match:
        return None, text.strip()
    return int(match.group(1)), match.group(2).strip()


_GREETINGS = {"hoi", "hallo", "hey", "hi", "hello", "goedemorgen", "goedemiddag", "goedenavond", "dag", "hee",
              "hai", "yo", "good morning", "good afternoon", "good evening", "hallo meldbot", "hoi meldbot",
              "hi meldbot", "hello meldbot", "test", "ping", "begin", "hulp nodig", "ik wil iets melden",
              "i want to report something", "ik wil een melding maken", "i want to make a report"}


def is_greeting(text: str) -> bool:
    """A greeting or an opening without content: the bot answers with its introduction."""
    return fold(text) in _GREETINGS


_EN_WORDS = {"the", "was", "i", "me", "my", "he", "she", "they", "at", "and", "is", "a", "an", "to", "of",
             "with", "just", "called", "yelled", "threatened", "someone", "desk", "this", "yesterday", "hit",
             "something", "happened", "there", "were", "got", "told", "said", "visitor", "customer", "him",
             "her", "by", "on", "in", "his", "who", "what", "today", "morning", "afternoon", "phone", "shouted"}
_NL_WORDS = {"de", "het", "een", "ik", "mij", "me", "mijn", "hij", "zij", "ze", "en", "is", "was", "aan", "bij",
             "van", "met", "net", "werd", "heeft", "niet", "op", "die", "dat", "gisteren", "balie", "er",
             "iets", "gebeurd", "gebeurde", "iemand", "kwam", "zei", "tegen", "klant", "bezoeker", "hem", "haar",
             "door", "in", "zijn", "wie", "wat", "vandaag", "vanochtend", "telefoon", "uitgescholden", "bij"}


def guess_language(text: str) -> str | None:
    """`en` or `nl` when the text clearly reads as one of them, else None."""
    words = re.findall(r"[a-z']+", fold(text))
    if len(words) < 3:
        return None
    en = sum(1 for w in words if w in _EN_WORDS)
    nl = sum(1 for w in words if w in _NL_WORDS)
    if en >= 2 and en > nl * 2:
        return "en"
    if nl >= 2 and nl > en * 2:
        return "nl"
    return None

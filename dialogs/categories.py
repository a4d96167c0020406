"""The fixed answer sets of a report and the keywords that pre-select them from a story.

Codes are stable identifiers stored in the database; labels come from the message catalogs
under `kind.<code>`, `place.<code>` and so on.
"""

from __future__ import annotations

import re
from functools import lru_cache

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

PERPETRATORS: tuple[str, ...] = ("unknown", "citizen", "other")

CONSEQUENCES: tuple[str, ...] = ("injury", "damage", "absence")

#: What a reporter can ask for (multi-select).
WISHES: tuple[str, ...] = ("contact", "aftercare_yes", "aftercare_later", "police_report", "police_came", "anonymous")

#: Kinds that make a case urgent for the coordinator.
URGENT_KINDS = frozenset({"physical", "threat"})

# A trailing "*" marks a stem (matches the start of a word); other entries match whole words or
# whole phrases. Keep entries specific: a wrong pre-selection costs the reporter a correction.
_KIND_KEYWORDS: dict[str, tuple[str, ...]] = {
    "verbal": (
        "uitgescholden", "uitschelden", "schold*", "scheld*", "geschreeuw*", "schreeuw*", "tier*", "getier*",
        "beledig*", "vernederd*", "vernederen*", "gevloekt", "vloekte*", "uitgemaakt", "kanker*", "tyfus*",
        "shout*", "yell*", "swore", "swearing", "sworn at", "insult*", "humiliat*", "screamed", "screaming",
        "called me", "verbal*", "verbaal", "verbale", "riep", "riepen", "roepen", "geroepen", "brulde*",
        "uitgejouwd",
    ),
    "threat": (
        "bedreig*", "dreig*", "gedreigd", "ik weet waar je woont", "weet waar je woont", "vermoord*",
        "threat*", "kill you", "i know where you live", "know where you live",
    ),
    "intimidation": (
        "intimid*", "achtervolg*", "gevolgd", "volgde me", "opgewacht", "opwachten", "stond te dicht",
        "te dichtbij", "heel dichtbij", "in mijn gezicht", "in my face", "too close",
        "followed me", "stalk*", "waited for me", "loomed",
    ),
    "physical": (
        "geslagen", "sloeg", "slaan", "geschopt", "schopte*", "geduwd", "duwde*", "bespuugd", "gespuugd",
        "spuugde*", "spuwde*", "vastgepakt", "greep me", "mishandel*", "aangevallen", "klap gegeven",
        "kopstoot", "gebeten", "hit me", "punch*", "kicked", "pushed me", "shoved", "spat", "spit at",
        "slapped", "assault*", "attacked", "grabbed me", "bit me", "fysiek*", "physical*",
    ),
    "discrimination": (
        "discrimin*", "racis*", "racist*", "antisemiet*", "antisemit*", "homofob*", "homophob*",
        "vanwege mijn afkomst", "because of my background",
    ),
    "sexual": (
        "seksu*", "sexual*", "aangerand", "betast", "ongewenst aangeraakt", "ongewenste intimiteit*",
        "groped", "touched me", "seksistisch*", "sexist*",
    ),
    "vandalism": (
        "vernield", "vernielde*", "vernieling*", "kapotgemaakt", "kapot gemaakt", "kapot gegooid",
        "ingegooid", "bekrast", "beschadigd", "vandal*", "smashed", "damaged", "broke the", "graffiti",
    ),
    "online": (
        "online", "sociale media", "social media", "facebook", "instagram", "tiktok", "twitter",
        "whatsapp", "doxx*", "gedoxt", "internet",
    ),
    "bribery": (
        "omkop*", "smeergeld", "steekpenning*", "geld aangeboden", "bribe*", "bribery", "offered me money",
    ),
}

_PLACE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "counter": (
        "balie", "loket", "receptie", "publieksbalie", "baliemedewerker", "wachtruimte", "wachtkamer",
        "counter", "front desk", "desk", "reception", "waiting room", "service desk",
    ),
    "phone": (
        "telefoon", "telefonisch", "aan de telefoon", "aan de lijn", "gebeld", "belde", "opgebeld",
        "phone", "on the phone", "phoned", "called in", "phone call",
    ),
    "online": (
        "mail", "e-mail", "email", "gemaild", "mailde", "sociale media", "social media", "facebook",
        "instagram", "tiktok", "twitter", "whatsapp", "online", "chat", "internet",
    ),
    "street": (
        "straat", "op straat", "buiten", "op pad", "surveillance", "handhaving", "handhaver", "markt",
        "parkeer*", "street", "outside", "on patrol", "patrol", "parking", "outdoor*", "op de weg",
    ),
    "home_visit": (
        "huisbezoek", "bij iemand thuis", "bij de klant thuis", "bij de cliënt thuis", "bij hem thuis",
        "bij haar thuis", "home visit", "at their home", "at his home", "at her home", "at their house",
    ),
    "meeting": (
        "vergadering", "raadzaal", "raadsvergadering", "commissievergadering", "inspreek*", "bijeenkomst",
        "informatieavond", "meeting", "council", "council chamber", "town hall meeting",
    ),
    "own_home": (
        "bij mij thuis", "mijn huis", "voor mijn deur", "voor de deur", "mijn voordeur", "bij mijn huis",
        "at my home", "my house", "at my door", "my front door", "near my home", "outside my house",
    ),
}

_POLICE_CAME = (
    "politie kwam", "politie gebeld", "politie erbij", "politie was er", "politie ter plaatse",
    "politie is gekomen", "agenten kwamen", "police came", "called the police", "police arrived",
    "police were called",
)
_INJURY = ("gewond", "verwond*", "blessure", "bloed*", "pijn", "injur*", "hurt", "bleeding", "bruise*")


@lru_cache(maxsize=None)
def _pattern(entries: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for entry in entries:
        if entry.endswith("*"):
            parts.append(r"\b" + re.escape(entry[:-1]) + r"\w*")
        else:
            parts.append(r"\b" + re.escape(entry) + r"\b")
    return re.compile("|".join(parts), re.IGNORECASE)


def _matches(text: str, entries: tuple[str, ...]) -> bool:
    return bool(_pattern(entries).search(text))


def suggest_kinds(text: str) -> list[str]:
    """Kinds of incident a story suggests, in the fixed order of `KINDS`."""
    return [kind for kind, words in _KIND_KEYWORDS.items() if _matches(text, words)]


def suggest_place(text: str) -> str | None:
    """The kind of place a story names, when exactly one place is named (own home beats others)."""
    found = [place for place, words in _PLACE_KEYWORDS.items() if _matches(text, words)]
    if "own_home" in found:
        return "own_home"
    if "online" in found and len(found) > 1:
        # "He shouted at me at the counter and then posted it on Facebook": the counter is the place.
        found.remove("online")
    return found[0] if len(found) == 1 else None


def suggest_police_came(text: str) -> bool:
    """True when the story says the police came or were called."""
    return _matches(text, _POLICE_CAME)


def suggest_injury(text: str) -> bool:
    """True when the story mentions an injury (only the yes/no category is ever kept)."""
    return _matches(text, _INJURY)


def is_urgent(kinds: list[str] | tuple[str, ...]) -> bool:
    """Physical violence and threats are urgent for the coordinator."""
    return bool(URGENT_KINDS.intersection(kinds))

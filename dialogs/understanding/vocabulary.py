"""The words Meldbot reads a story with: data files in `dialogs/vocabulary/`, extendable by the
organisation (`[organisation] vocabulary`), compiled once into lemma sets.

Entry syntax (the same in every file):
- `uitschelden`: a word; it matches every form with the same lemma ("schold ... uit", "gescholden").
- `op balie slaan`: several words; all of them in one clause, in any order, close together.
- `*balie`: a word ending in "balie" (compounds: "informatiebalie", "wmo-balie"); `facebook*`: a word
  starting with it ("facebookpost"). These are not lemmatised.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

import simplemma

from .tokens import fold

#: Words of this length or more also match with one typing error ("gescholde", "agressief").
FUZZY_MIN_LENGTH = 7
LANGUAGES = ("nl", "en")


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Word:
    """One word of an entry: the forms it matches, or a compound head / prefix."""

    forms: frozenset[str]
    suffix: str | None = None
    prefix: str | None = None

    @property
    def wildcard(self) -> bool:
        return self.suffix is not None or self.prefix is not None

    @property
    def keys(self) -> frozenset[str]:
        """What the word is looked up by: its forms, `*suffix` or `prefix*` (see `wildcard_keys`)."""
        if self.suffix is not None:
            return frozenset({"*" + self.suffix})
        if self.prefix is not None:
            return frozenset({self.prefix + "*"})
        return self.forms


def wildcard_keys(form: str) -> set[str]:
    """The lookup keys a word form offers to wildcard words: every `*ending` and `beginning*`."""
    return {"*" + form[i:] for i in range(len(form))} | {form[:i] + "*" for i in range(1, len(form) + 1)}


@dataclass(frozen=True)
class Entry:
    """A vocabulary entry: its words, what it counts as, and its section (for explaining a match)."""

    words: tuple[Word, ...]
    codes: tuple[str, ...]
    section: str
    text: str
    #: In direct speech or said as an intention ("ik sla je", "he'll hit me") it counts as this instead.
    intended: str | None = None
    #: Counts only when nothing else in the story does ("agressief" alone reads as verbal).
    weak: bool = False
    #: The language of the list it came from: English phrases match in order, word for word;
    #: Dutch ones in any order within a clause (Dutch moves its verbs around).
    language: str = "nl"
    #: Counts only with a person in its clause ("duwde me"); with only a thing there ("kicked the
    #: screen") it counts as `without_person` instead, or not at all.
    needs_person: bool = False
    without_person: str | None = None
    #: False for words that name rather than do ("hoofddoek", "facebook"): a "niet" near them
    #: ("mensen met een hoofddoek mogen niet werken") does not undo them.
    negatable: bool = True


@dataclass
class Vocabulary:
    """Compiled entries per area (`kinds`, `places`, `perpetrators`, `signals`) and language, and the
    grammar words (negation, intention) per language."""

    entries: dict[str, dict[str, list[Entry]]] = field(default_factory=dict)
    grammar: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    #: Single-word forms by their one-deletion variants, for typing errors.
    fuzzy: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    #: Entries by the lookup keys of one of their words (area -> language -> key -> entries): a story
    #: is only checked against entries one of its words can start.
    by_form: dict[str, dict[str, dict[str, list[Entry]]]] = field(default_factory=dict)
    #: Each entry's position in its files (matches are tried in file order).
    order: dict[int, int] = field(default_factory=dict)
    #: Recent readings with this vocabulary, by text (see `reading.read`).
    readings: dict[str, Any] = field(default_factory=dict)

    def area(self, name: str, languages: Iterable[str]) -> list[Entry]:
        found: list[Entry] = []
        for language in languages:
            found.extend(self.entries.get(name, {}).get(language, ()))
        return found

    def candidates(self, name: str, languages: Iterable[str], forms: Iterable[str]) -> list[Entry]:
        """The entries of an area that a text with these word forms may match, in file order."""
        seen: dict[int, Entry] = {}
        forms = set(forms)
        for language in languages:
            index = self.by_form.get(name, {}).get(language, {})
            for form in forms:
                for entry in index.get(form, ()):
                    seen[id(entry)] = entry
        return sorted(seen.values(), key=lambda entry: self.order[id(entry)])

    def words(self, name: str, languages: Iterable[str]) -> frozenset[str]:
        result: set[str] = set()
        for language in languages:
            result |= self.grammar.get(name, {}).get(language, frozenset())
        return frozenset(result)

    def typo_forms(self, word: str, language: str) -> set[str]:
        """The vocabulary forms `word` is one typing error away from (deletion, insertion,
        substitution, or two letters swapped)."""
        if len(word) < FUZZY_MIN_LENGTH:
            return set()
        index = self.fuzzy.get(language, {})
        found: set[str] = set(index.get(word, ()))
        for variant in _deletions(word):
            found |= index.get(variant, set())
        return found


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _lemma_forms(word: str, language: str) -> frozenset[str]:
    folded = fold(word)
    if language == "en" and folded.endswith("ing"):
        return frozenset({folded})  # "meeting" is not "meet", "shooting" not "shoot"
    return frozenset({folded, fold(simplemma.lemmatize(folded, lang=language))})


def _word(text: str, language: str, where: str) -> Word:
    if text.count("*") > 1 or text == "*" or ("*" in text and not (text.startswith("*") or text.endswith("*"))):
        raise VocabularyError(f"{where}: '*' may only start or end a word")
    if text.startswith("*"):
        return Word(frozenset(), suffix=fold(text[1:]))
    if text.endswith("*"):
        return Word(frozenset(), prefix=fold(text[:-1]))
    return Word(_lemma_forms(text, language))


def _entries(section: str, table: dict[str, Any], default_codes: tuple[str, ...], allowed: tuple[str, ...],
             code_key: str, source: str) -> dict[str, list[Entry]]:
    unknown_keys = set(table) - {"nl", "en", code_key, "intended", "weak", "needs", "without_person", "negatable"}
    if unknown_keys:
        raise VocabularyError(f"{source} [{section}]: unknown key {', '.join(sorted(unknown_keys))} "
                              f"(use nl, en, {code_key})")
    codes = table.get(code_key, list(default_codes))
    codes = [codes] if isinstance(codes, str) else list(codes)
    unknown = [code for code in codes if code not in allowed]
    # An explicit empty list marks words that look like an entry but mean nothing here ("alarm slaan").
    if unknown or (not codes and code_key not in table):
        raise VocabularyError(f"{source} [{section}]: {code_key} must be some of {', '.join(allowed)}"
                              f" (not {', '.join(unknown) or 'empty'})")
    intended = table.get("intended")
    without_person = table.get("without_person")
    for key, value in (("intended", intended), ("without_person", without_person)):
        if value is not None and value not in allowed:
            raise VocabularyError(f"{source} [{section}]: {key} must be one of {', '.join(allowed)}")
    found: dict[str, list[Entry]] = {}
    for language in LANGUAGES:
        items = table.get(language, [])
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise VocabularyError(f"{source} [{section}] {language}: a list of words or phrases in quotes")
        for item in items:
            parts = fold(item).split()
            if not parts:
                raise VocabularyError(f"{source} [{section}] {language}: an empty entry")
            where = f"{source} [{section}] {language} '{item}'"
            words = tuple(_word(part, language, where) for part in parts)
            found.setdefault(language, []).append(Entry(
                words, tuple(codes), section, item, intended, weak=bool(table.get("weak", False)),
                language=language, needs_person=bool(table.get("needs") == "person"),
                without_person=without_person, negatable=bool(table.get("negatable", True))))
    return found


#: Areas of the vocabulary: the file, the key naming what an entry counts as, and the allowed codes.
def _areas() -> dict[str, tuple[str, tuple[str, ...]]]:
    from .. import categories as cat  # the fixed answer sets live there

    return {
        "kinds": ("kinds", cat.KINDS),
        "places": ("place", cat.PLACES),
        "perpetrators": ("perpetrator", cat.PERPETRATORS),
        "signals": ("signal", ("police_came", "injury")),
    }


def _add(vocabulary: Vocabulary, area: str, sections: dict[str, Any], source: str) -> None:
    code_key, allowed = _areas()[area]
    for section, table in sections.items():
        if not isinstance(table, dict):
            raise VocabularyError(f"{source}: [{section}] must be a table with nl = [...] and/or en = [...]")
        default = (section,) if section in allowed else ()
        for language, entries in _entries(section, table, default, allowed, code_key, source).items():
            vocabulary.entries.setdefault(area, {}).setdefault(language, []).extend(entries)


def _index(vocabulary: Vocabulary) -> None:
    vocabulary.fuzzy, vocabulary.by_form, vocabulary.order = {}, {}, {}
    for area in vocabulary.entries.values():
        for entries in area.values():
            for entry in entries:
                vocabulary.order[id(entry)] = len(vocabulary.order)
    for name, area in vocabulary.entries.items():
        for language, entries in area.items():
            by_form = vocabulary.by_form.setdefault(name, {}).setdefault(language, {})
            for entry in entries:
                anchor = next((word for word in entry.words if not word.wildcard), entry.words[0])
                for key in anchor.keys:
                    by_form.setdefault(key, []).append(entry)
    for area in vocabulary.entries.values():
        for language, entries in area.items():
            index = vocabulary.fuzzy.setdefault(language, {})
            for entry in entries:
                for word in entry.words:
                    for form in word.forms:
                        if len(form) >= FUZZY_MIN_LENGTH:
                            index.setdefault(form, set()).add(form)
                            for variant in _deletions(form):
                                index.setdefault(variant, set()).add(form)


def _read_builtin(name: str) -> dict[str, Any]:
    text = resources.files("dialogs").joinpath("vocabulary", f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@lru_cache(maxsize=1)
def builtin() -> Vocabulary:
    """Meldbot's own vocabulary (the files in `dialogs/vocabulary/`)."""
    vocabulary = Vocabulary()
    for area in ("kinds", "places", "perpetrators", "signals"):
        _add(vocabulary, area, _read_builtin(area), f"dialogs/vocabulary/{area}.toml")
    grammar = _read_builtin("grammar")
    for name, table in grammar.items():
        vocabulary.grammar[name] = {language: frozenset(fold(w) for w in table.get(language, ()))
                                    for language in LANGUAGES}
    _index(vocabulary)
    return vocabulary


def extended(text: str, source: str) -> Vocabulary:
    """The built-in vocabulary with an organisation's own words added (a TOML text with tables such as
    `[kinds.verbal]`, `[places.counter]`, `[perpetrators.citizen]`, each with `nl`/`en` lists). Raises
    VocabularyError naming `source` when it cannot be used."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise VocabularyError(f"{source}: not valid TOML ({error})") from None
    base = builtin()
    vocabulary = Vocabulary(entries={area: {lang: list(items) for lang, items in langs.items()}
                                     for area, langs in base.entries.items()},
                            grammar=base.grammar)
    for area, sections in data.items():
        if area not in _areas() or area == "signals":
            raise VocabularyError(f"{source}: [{area}] is not known; use kinds, places or perpetrators")
        if not isinstance(sections, dict):
            raise VocabularyError(f"{source}: {area} must hold tables such as [{area}.name]")
        _add(vocabulary, area, sections, source)
    _index(vocabulary)
    return vocabulary

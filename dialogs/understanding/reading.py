"""Reading a story: which kinds of incident, which kind of place and which perpetrator it names.

A match is an entry whose words are found in one clause. A longer match wins over a shorter one on
the same words ("sloeg op de balie" is intimidation, not "slaan"), a negated match does not count
("hij sloeg me niet"), and a deed said as an intention or in direct speech counts as the threat it is
("hij zei dat hij me zou slaan", "ze riep: ik steek je neer").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import simplemma

from .tokens import Token, fold, tokenize
from .vocabulary import Entry, Vocabulary, Word, builtin, wildcard_keys

#: Words before a match that negate it ("geen klap", "niet geslagen", "didn't hit").
_BEFORE = 3
#: Words after a match that negate it ("hij sloeg me niet").
_AFTER = 3


@dataclass(frozen=True)
class Match:
    """An entry found in a story, on these token positions."""

    entry: Entry
    positions: frozenset[int]
    negated: bool = False
    intended: bool = False

    @property
    def start(self) -> int:
        return min(self.positions)


@dataclass(frozen=True)
class Reading:
    """What a story tells: kind codes (in `KINDS` order), a place code (or None), a perpetrator code
    (or None), whether the police came, whether someone was hurt, and the matches behind it."""

    kinds: tuple[str, ...]
    place: str | None
    perpetrator: str | None
    police_came: bool
    injury: bool
    matches: tuple[Match, ...] = ()

    def explain(self) -> list[str]:
        """One line per match ("physical <- slaan [physical]", negated ones marked), for the bench."""
        lines = []
        for m in self.matches:
            codes = (m.entry.intended,) if m.intended else m.entry.codes
            line = f"{'/'.join(codes) or '-'} <- {m.entry.text} [{m.entry.section}]" + (" (negated)" if m.negated else "")
            if line not in lines:
                lines.append(line)
        return lines


def _word_hits(word: Word, token: Token, typos: set[str], language: str) -> frozenset[int] | None:
    """The positions `word` (of an entry in `language`) takes when it matches `token` (with its
    particle for a joined reading of a Dutch separable verb)."""
    forms = token.forms_in(language)
    if word.suffix is not None:
        return frozenset({token.index}) if any(form.endswith(word.suffix) for form in forms) else None
    if word.prefix is not None:
        return frozenset({token.index}) if any(form.startswith(word.prefix) for form in forms) else None
    if word.forms.intersection(forms) or word.forms.intersection(typos):
        return frozenset({token.index})
    if language == "nl":
        for form, particle in token.joined.items():
            if form in word.forms:
                return frozenset({token.index, particle})
    return None


#: Dutch entries ending in a verb ("ruit inslaan", "op balie slaan") match in any order within a
#: clause (Dutch moves its verbs: "sloeg de ruit in"); other phrases in their order, with small gaps.
_VERB_ENDINGS = ("en", "aan", "gaan", "staan", "doen", "zien")
_GAP = 2


def _any_order(entry: Entry) -> bool:
    last = entry.words[-1]
    return entry.language == "nl" and any(form.endswith(_VERB_ENDINGS) for form in last.forms)


Lookup = dict[str, dict[str, list[int]]]


def _lookup(tokens: list[Token], typos: list[set[str]], languages: tuple[str, ...]) -> Lookup:
    """Per language, the tokens each form can be found on (its lemma, a typo's word, a joined verb),
    so that an entry is only tried where its word occurs."""
    found: Lookup = {}
    for language in languages:
        index = found.setdefault(language, {})
        for token in tokens:
            forms = set(token.forms_in(language)) | typos[token.index]
            if language == "nl":
                forms |= set(token.joined)
            for form in forms | {key for form in token.forms_in(language) for key in wildcard_keys(form)}:
                index.setdefault(form, []).append(token.index)
    return found


def _where(word: Word, tokens: list[Token], lookup: Lookup, language: str) -> list[Token]:
    """The tokens `word` may match on (every token for a wildcard)."""
    index = lookup.get(language, {})
    positions = sorted({p for key in word.keys for p in index.get(key, ())})
    return [tokens[p] for p in positions]


def _find(entry: Entry, tokens: list[Token], typos: list[set[str]], lookup: Lookup) -> list[frozenset[int]]:
    """Every place `entry` matches: an English phrase word for word in one clause; a Dutch one with
    each word on a token of one clause, in any order, within a short span."""
    if len(entry.words) > 1 and not _any_order(entry):
        return _find_in_order(entry, tokens, typos, lookup)
    span = 2 * len(entry.words) + 4
    found = []
    first, *rest = entry.words
    for token in _where(first, tokens, lookup, entry.language):
        start = _word_hits(first, token, typos[token.index], entry.language)
        if start is None:
            continue
        positions = set(start)
        for word in rest:
            hit = None
            # The nearest occurrence: "spuugde naar me en dreigde me op te wachten" takes the second "me".
            nearby = sorted(_where(word, tokens, lookup, entry.language), key=lambda t: abs(t.index - token.index))
            for other in nearby:
                if other.clause != token.clause or abs(other.index - token.index) > span or other.index in positions:
                    continue
                hit = _word_hits(word, other, typos[other.index], entry.language)
                if hit is not None:
                    break
            if hit is None:
                break
            positions |= hit
        else:
            found.append(frozenset(positions))
    return found


def _find_in_order(entry: Entry, tokens: list[Token], typos: list[set[str]], lookup: Lookup) -> list[frozenset[int]]:
    """An entry's words in their order in one clause: English word for word, Dutch with at most
    `_GAP` words between ("bij de informatiebalie", "uitgescholden voor rotte vis")."""
    gap = 0 if entry.language == "en" else _GAP
    found = []
    for token in _where(entry.words[0], tokens, lookup, entry.language):
        start = token.index
        hit = _word_hits(entry.words[0], token, typos[token.index], entry.language)
        if hit is None:
            continue
        positions, at, complete = set(hit), start, True
        for word in entry.words[1:]:
            found_at = None
            for following in tokens[at + 1:at + 2 + gap]:
                if following.clause != token.clause:
                    break
                hit = _word_hits(word, following, typos[following.index], entry.language)
                if hit is not None:
                    positions |= hit
                    found_at = following.index
                    break
            if found_at is None:
                complete = False
                break
            at = found_at
        if complete:
            found.append(frozenset(positions))
    return found


def _negated(positions: frozenset[int], tokens: list[Token], before: frozenset[str], after: frozenset[str]) -> bool:
    clause = tokens[min(positions)].part
    low, high = min(positions), max(positions)
    # Also between the words of a match: "raakte me niet aan", "heeft me niet geslagen".
    for token in tokens[max(0, low - _BEFORE):high]:
        if token.index in positions:
            continue
        if token.part == clause and (token.word in before or token.word.endswith("n't")):
            return True
    for token in tokens[high + 1:high + 1 + _AFTER]:
        if token.part == clause and (token.word in after or token.word.endswith("n't")):
            return True
    return False


#: A speaker addressing someone ("ik sla je", "I'll hit you"): in a report that is quoted speech.
_SPEAKER = frozenset({"ik", "wij", "we", "i"})
_ADDRESSED = frozenset({"je", "jou", "jij", "u", "jullie", "you"})


def _intended(positions: frozenset[int], tokens: list[Token], modals: frozenset[str],
              threat_verbs: frozenset[str] = frozenset()) -> bool:
    """Whether the deed is said rather than done: in direct speech, with a word of intention in its
    clause ("zou", "gaat", "will": "he'll come by and break my legs"), a threatening verb in its part
    ("dreigde me te slaan", not "gaf hem een duw en dreigde ..."), or spoken by "ik" to "je"."""
    if any(tokens[p].speech for p in positions):
        return True
    first = tokens[min(positions)]
    clause = {t.word for t in tokens if t.clause == first.clause}
    part = {t.word for t in tokens if t.part == first.part}
    return bool(modals & clause) or bool(threat_verbs & part) or bool(_SPEAKER & part and _ADDRESSED & part)


def _said(positions: frozenset[int], tokens: list[Token], modals: frozenset[str]) -> bool:
    """Whether a place lies in what someone said or intends ("'ik kom met een mes naar het loket'"
    said on the phone is a phone call)."""
    first = tokens[min(positions)]
    return any(tokens[p].speech for p in positions) or bool(
        modals & {t.word for t in tokens if t.part == first.part})


def _target(positions: frozenset[int], tokens: list[Token], people: frozenset[str], things: frozenset[str],
            passive: frozenset[str]) -> str:
    """What the deed in this clause is done to: "person", "thing" or "" (neither is named). A
    passive with no thing named ("ben net bespuugd", "got headbutted") is done to the reporter."""
    clause = tokens[min(positions)].clause
    words = [t for t in tokens if t.clause == clause]
    if any(people.intersection(t.forms) for t in words):
        return "person"
    if any(things.intersection(t.forms) for t in words):
        return "thing"
    if any(t.word in passive for t in words):
        return "person"
    return ""


def _matches(area: str, tokens: list[Token], typos: list[set[str]], vocabulary: Vocabulary,
             languages: tuple[str, ...], lookup: Lookup) -> list[Match]:
    before = vocabulary.words("negation_before", languages)
    after = vocabulary.words("negation_after", languages)
    modals = vocabulary.words("intention", languages)
    threat_verbs = vocabulary.words("threat_verbs", languages)
    people = vocabulary.words("person", languages)
    things = vocabulary.words("thing", languages)
    passive = vocabulary.words("passive", languages)
    # Places and people are named, not done: "hij heeft me op Instagram niet bedreigd" is online.
    negatable = area in ("kinds", "signals")
    forms = {form for index in lookup.values() for form in index}
    candidates: list[Match] = []
    for entry in vocabulary.candidates(area, languages, forms):
        for positions in _find(entry, tokens, typos, lookup):
            counted = entry
            if entry.needs_person:
                target = _target(positions, tokens, people, things, passive)
                if target == "thing" and entry.without_person:
                    counted = replace(entry, codes=(entry.without_person,), intended=None)
                elif target != "person":
                    continue
            candidates.append(Match(counted, positions,
                                    negated=negatable and counted.negatable
                                    and _negated(positions, tokens, before, after),
                                    intended=counted.intended is not None
                                    and _intended(positions, tokens, modals, threat_verbs)))
    # Longest first: a match whose words all belong to a longer one is part of it, not its own.
    candidates.sort(key=lambda m: (-len(m.positions), -len(m.entry.words), m.start))
    kept: list[Match] = []
    for match in candidates:
        if any(match.positions < other.positions or (match.positions == other.positions
                                                     and other.entry.codes != match.entry.codes
                                                     and len(other.entry.words) > len(match.entry.words))
               for other in kept):
            continue
        kept.append(match)
    return sorted(kept, key=lambda m: m.start)


def _codes(matches: list[Match]) -> list[str]:
    """The codes of the matches that count, in story order; weak ones only when nothing else counts."""
    codes: list[str] = []
    weak: list[str] = []
    for match in matches:
        if match.negated:
            continue
        found = (match.entry.intended,) if match.intended else match.entry.codes
        target = weak if match.entry.weak else codes
        target.extend(code for code in found if code and code not in target)
    return codes or weak


def _place(matches: list[Match], deeds: list[Match], tokens: list[Token]) -> str | None:
    """Where it happened: the first place named in a sentence that tells what was done ("shouted
    at me at the counter, then posted it online" is the counter; "a film of me on TikTok. They know
    where I live." is online); without such a sentence, the first place named."""
    named = [m for m in matches if m.entry.codes]
    if not named:
        return None
    told = {tokens[p].sentence for deed in deeds for p in deed.positions}
    in_deed = [m for m in named if tokens[m.start].sentence in told]
    if not in_deed and any("online" in deed.entry.codes for deed in deeds):
        in_deed = [m for m in named if m.entry.codes[0] == "online"]  # "berichten op X" before the deed
    chosen = in_deed or named
    own = [m for m in chosen if m.entry.codes[0] == "own_home"]
    if own:
        return "own_home"  # "op de stoep voor mijn deur" is at their own home
    return chosen[0].entry.codes[0]


#: Words between a colleague and the deed that make the colleague the one it happened to.
_PASSIVE = frozenset({"werd", "werden", "wordt", "is", "was", "waren", "got", "were", "get", "gets"})


def _perpetrator(matches: list[Match], deeds: list[Match], tokens: list[Token]) -> str | None:
    """The perpetrator a story names by role: the first one named. A colleague counts only as the
    subject of a deed right after it ("een collega schold me uit", not "mijn collega werd
    geslagen"); vague words ("iemand") only when nothing else is named."""
    strong, weak = [], []
    for match in matches:
        if match.negated:
            continue
        code = match.entry.codes[0]
        if code == "colleague":
            end = max(match.positions)
            clause = tokens[end].clause
            # A deed in its clause that goes on after it ("een collega schold me uit", "maakte een
            # collega me uit voor"), with no passive in between ("mijn collega werd geslagen").
            after = sorted(p for deed in deeds for p in deed.positions if p > end and tokens[p].clause == clause)
            if not after or any(t.word in _PASSIVE for t in tokens[end + 1:after[0] + 1]):
                continue
        (weak if match.entry.weak else strong).append(code)
    found = strong or weak
    return found[0] if found else None


def story_languages(text: str) -> tuple[str, ...]:
    """The languages whose entries a story is read with: the one it is clearly written in, or both."""
    from ..text import guess_language  # dialogs.text imports this package's users, not the reverse

    guessed = guess_language(text)
    return (guessed,) if guessed else ("nl", "en")


def read(text: str, vocabulary: Vocabulary | None = None) -> Reading:
    """What `text` tells (see `Reading`). Pure: one tokenisation, cached lemmas; readings are cached
    per vocabulary too (the dialogue asks several questions of one story)."""
    if vocabulary is None or vocabulary is builtin():
        return _read_builtin(text)
    cache = vocabulary.readings
    if text not in cache:
        if len(cache) >= _CACHED:
            cache.clear()
        cache[text] = _read_uncached(text, vocabulary)
    return cache[text]


_CACHED = 256


@lru_cache(maxsize=256)
def _read_builtin(text: str) -> Reading:
    return _read_uncached(text, builtin())


def _read_uncached(text: str, vocabulary: Vocabulary) -> Reading:
    languages = story_languages(text)
    tokens = tokenize(text, languages)
    typos = [set().union(*(vocabulary.typo_forms(t.word, lang) for lang in languages)) if not _known(t, languages) else set()
             for t in tokens]
    both = ("nl", "en")  # place names and roles are nouns that travel between languages ("burgerzaken")
    lookup = _lookup(tokens, typos, both)
    kinds = _matches("kinds", tokens, typos, vocabulary, languages, lookup)
    places = _matches("places", tokens, typos, vocabulary, both, lookup)
    people = _matches("perpetrators", tokens, typos, vocabulary, both, lookup)
    signals = _codes(_matches("signals", tokens, typos, vocabulary, languages, lookup))
    from ..categories import KINDS

    # A place in what someone intends is no place it happened ("he'll burn my house down").
    modals = vocabulary.words("intention", languages)
    places = [m for m in places if not _said(m.positions, tokens, modals)]
    found = set(_codes(kinds))
    counted = [m for m in kinds if not m.negated and m.entry.codes and not m.entry.weak]
    return Reading(kinds=tuple(k for k in KINDS if k in found), place=_place(places, counted, tokens),
                   perpetrator=_perpetrator(people, counted, tokens),
                   police_came="police_came" in signals, injury="injury" in signals,
                   matches=tuple(kinds + places + people))


def _known(token: Token, languages: tuple[str, ...]) -> bool:
    """A word the lemmatiser knows is no typing error ("vooruit" is not "voorruit")."""
    return any(simplemma.is_known(token.word, lang=language) for language in languages)


__all__ = ["Match", "Reading", "fold", "read", "story_languages"]

"""A story as the matcher reads it: words with their lemmas (simplemma, Dutch and English), cut into
clauses, with Dutch separable verbs joined ("schold me uit" also reads as "uitschelden").

Everything is folded to lower case without diacritics ("cliënt" = "client"), so that vocabulary
entries and stories meet whatever the reporter's keyboard did.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import simplemma

#: Words, with inner hyphens and apostrophes kept ("wmo-loket", "didn't"); quotes and other
#: punctuation are tokens of their own (they end clauses or open speech).
_TOKEN = re.compile(r"'[stn]\b|\w+(?:['’-]\w+)*|[.,;:!?\"“”‘'()…]|\s[-–—]\s", re.UNICODE)
#: Punctuation that ends a clause.
_CLAUSE_PUNCTUATION = frozenset(".,;:!?()…-–—")
_QUOTES = frozenset("\"“”‘'")

#: Words that start a new clause: phrases, negation and modality stop at them ("hij sloeg me niet,
#: maar schreeuwde").
CLAUSE_WORDS = frozenset({
    "dat", "omdat", "want", "toen", "terwijl", "nadat", "voordat", "waarna", "daarna", "dus",
    "als", "wanneer", "waarop", "hoewel", "ofschoon", "zodat", "tot", "totdat",
    "that", "because", "when", "while", "after", "before", "then", "so", "if", "although",
    "until", "since", "whereupon", "who", "which",
})
#: Words that only end a part of a clause (see `Token.part`).
PART_WORDS = frozenset({"en", "of", "maar", "waar", "and", "or", "but", "where"})

#: Particles of Dutch separable verbs, joined in front of a verb found earlier in the same clause.
PARTICLES = frozenset({
    "aan", "af", "achterna", "bij", "binnen", "buiten", "dicht", "door", "in", "kapot", "langs", "lastig",
    "mee", "na", "neer", "om", "omver", "onderuit", "op", "open", "over", "rond", "stuk", "tegen", "terug",
    "toe", "uit", "vast", "voor", "weg",
})


def fold(text: str) -> str:
    """Lower case without diacritics and with one kind of apostrophe."""
    decomposed = unicodedata.normalize("NFKD", text.lower().replace("’", "'"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=65536)
def lemmas(word: str, language: str) -> tuple[str, ...]:
    """The forms a folded word is matched by in `language`: itself and its lemma there. Kept per
    language, so that an English entry never meets a Dutch lemma ("met" is not "meet")."""
    lemma = fold(simplemma.lemmatize(word, lang=language))
    return (word,) if lemma == word else (word, lemma)


@dataclass
class Token:
    """One word of a story: its folded form, the forms it is matched by, its clause, and whether it
    lies in what someone said (direct speech, in quotes or after "zei:")."""

    index: int
    word: str
    #: The forms per language the story is read in (see `lemmas`), and all of them together.
    by_language: dict[str, tuple[str, ...]]
    clause: int
    #: A finer cut than `clause`: also at "en"/"and"/"of"/"or", where negation stops ("hij wilde niet
    #: weg en bleef schreeuwen") but a phrase may go on ("gooide zijn pas en papieren naar me").
    part: int = 0
    speech: bool = False
    #: The sentence it is in (cut at . ! ? and line breaks).
    sentence: int = 0
    #: Separable-verb readings ("uitschelden" for "schold ... uit"): form -> the particle's index.
    joined: dict[str, int] = field(default_factory=dict)

    @property
    def forms(self) -> tuple[str, ...]:
        seen: list[str] = []
        for forms in self.by_language.values():
            seen.extend(form for form in forms if form not in seen)
        return tuple(seen)

    def forms_in(self, language: str) -> tuple[str, ...]:
        return self.by_language.get(language) or (self.word,)


#: Speech verbs after which a colon opens direct speech ("ze zei: ik weet waar je woont").
_SPEECH_LEMMAS = frozenset({
    "zeggen", "roepen", "schreeuwen", "zei", "riep", "schreeuwde", "brullen", "schrijven", "appen", "sms'en",
    "say", "said", "shout", "shouted", "yell", "yelled", "scream", "screamed", "write", "wrote", "tell", "told",
    "go", "went",
})


def tokenize(text: str, languages: tuple[str, ...]) -> list[Token]:
    """The words of `text` with their forms, clauses and speech marks; separable verbs joined."""
    tokens: list[Token] = []
    clause = part = sentence = 0
    in_quotes = False
    after_colon = False
    previous_speech_verb = False
    folded = fold(text)
    for match in _TOKEN.finditer(folded):
        piece = match.group(0).strip()
        if piece in _QUOTES:
            before = folded[match.start() - 1] if match.start() else " "
            if piece == "'" and not in_quotes and before.isalnum():
                continue  # a possessive ("residents' meeting"), not a quote
            in_quotes = not in_quotes
            clause += 1
            part += 1
            continue
        if piece in _CLAUSE_PUNCTUATION or not piece:
            clause += 1
            part += 1
            if piece == ":" and previous_speech_verb:
                after_colon = True
            elif piece in ".!?":
                after_colon = False
                sentence += 1
            previous_speech_verb = False
            continue
        if piece in CLAUSE_WORDS:
            clause += 1
            part += 1
        elif piece in PART_WORDS:
            part += 1
        by_language = {language: lemmas(piece, language) for language in languages}
        token = Token(len(tokens), piece, by_language, clause, part, speech=in_quotes or after_colon,
                      sentence=sentence)
        previous_speech_verb = bool(_SPEECH_LEMMAS.intersection(token.forms))
        tokens.append(token)
    _join_particles(tokens)
    return tokens


#: Words that may stand between a particle and its verb at the end of a clause ("op te wachten",
#: "op komt wachten", "in elkaar zou slaan").
_BETWEEN = frozenset({"te", "komt", "kom", "komen", "zou", "zal", "ga", "gaat", "gaan", "wil", "wilde", "ging"})


def _join_particles(tokens: list[Token]) -> None:
    """Give each word the readings it has with a particle later in its clause: "maakte me uit voor"
    also reads "uitmaken"; "stopte me een envelop toe" also reads "toestoppen"; and with a particle
    just before it: "dreigde me op te wachten" also reads "opwachten"."""
    for position, token in enumerate(tokens):
        following = tokens[position + 1] if position + 1 < len(tokens) else None
        if following is not None and following.clause == token.clause and token.word.isalpha() \
                and following.word.isalpha():
            # Dutch writes compounds apart too: "plat gestoken", "kapot gemaakt", "dicht gegooid".
            together = token.word + following.word
            for form in {together, *lemmas(together, "nl")}:
                token.joined.setdefault(form, following.index)
        if token.word in PARTICLES:
            continue
        before = position - 1
        while before >= 0 and tokens[before].word in _BETWEEN and tokens[before].clause == token.clause:
            before -= 1
        if before >= 0 and before < position and tokens[before].word in PARTICLES \
                and tokens[before].clause == token.clause and before >= position - 3:
            forms = token.forms_in("nl")
            for form in forms[1:] or forms:
                token.joined.setdefault(tokens[before].word + form, before)
        for later in tokens[position + 1:position + 13]:
            if later.clause != token.clause:
                break
            if later.word in PARTICLES:
                forms = token.forms_in("nl")
                for form in forms[1:] or forms:
                    token.joined.setdefault(later.word + form, later.index)

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
_TOKEN = re.compile(r"\w+(?:['’-]\w+)*|[.,;:!?\"“”‘'()…]|\s[-–—]\s", re.UNICODE)
#: Punctuation that ends a clause.
_CLAUSE_PUNCTUATION = frozenset(".,;:!?()…-–—")
_QUOTES = frozenset("\"“”‘'")

#: Words that start a new clause: negation and modality stop at them ("hij sloeg me niet, maar
#: schreeuwde"; "hij wilde niet weg en bleef schreeuwen").
CLAUSE_WORDS = frozenset({
    "en", "maar", "dat", "omdat", "want", "toen", "terwijl", "nadat", "voordat", "waarna", "daarna", "dus",
    "of", "als", "wanneer", "waarop", "hoewel", "ofschoon", "zodat", "tot", "totdat",
    "and", "but", "that", "because", "when", "while", "after", "before", "then", "so", "or", "if", "although",
    "until", "since", "whereupon", "who", "which", "where",
})

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
def lemmas(word: str, languages: tuple[str, ...]) -> tuple[str, ...]:
    """The forms a folded word is matched by: itself and its lemma in each of `languages` (both for a
    story whose language is unclear), folded, without duplicates."""
    forms = [word]
    for lang in languages:
        lemma = fold(simplemma.lemmatize(word, lang=lang))
        if lemma not in forms:
            forms.append(lemma)
    return tuple(forms)


@dataclass
class Token:
    """One word of a story: its folded form, the forms it is matched by, its clause, and whether it
    lies in what someone said (direct speech, in quotes or after "zei:")."""

    index: int
    word: str
    forms: tuple[str, ...]
    clause: int
    speech: bool = False
    #: Separable-verb readings ("uitschelden" for "schold ... uit"): form -> the particle's index.
    joined: dict[str, int] = field(default_factory=dict)


#: Speech verbs after which a colon opens direct speech ("ze zei: ik weet waar je woont").
_SPEECH_LEMMAS = frozenset({
    "zeggen", "roepen", "schreeuwen", "zei", "riep", "schreeuwde", "brullen", "schrijven", "appen", "sms'en",
    "say", "said", "shout", "shouted", "yell", "yelled", "scream", "screamed", "write", "wrote", "tell", "told",
    "go", "went",
})


def tokenize(text: str, languages: tuple[str, ...]) -> list[Token]:
    """The words of `text` with their forms, clauses and speech marks; separable verbs joined."""
    tokens: list[Token] = []
    clause = 0
    in_quotes = False
    after_colon = False
    previous_speech_verb = False
    for match in _TOKEN.finditer(fold(text)):
        piece = match.group(0).strip()
        if piece in _QUOTES:
            in_quotes = not in_quotes
            clause += 1
            continue
        if piece in _CLAUSE_PUNCTUATION or not piece:
            clause += 1
            if piece == ":" and previous_speech_verb:
                after_colon = True
            elif piece in ".!?":
                after_colon = False
            previous_speech_verb = False
            continue
        if piece in CLAUSE_WORDS:
            clause += 1
        forms = lemmas(piece, languages)
        previous_speech_verb = bool(_SPEECH_LEMMAS.intersection(forms))
        tokens.append(Token(len(tokens), piece, forms, clause, speech=in_quotes or after_colon))
    _join_particles(tokens)
    return tokens


def _join_particles(tokens: list[Token]) -> None:
    """Give each word the readings it has with a particle later in its clause: "maakte me uit voor"
    also reads "uitmaken"; "stopte me een envelop toe" also reads "toestoppen"."""
    for position, token in enumerate(tokens):
        if token.word in PARTICLES:
            continue
        for later in tokens[position + 1:position + 9]:
            if later.clause != token.clause:
                break
            if later.word in PARTICLES:
                for form in token.forms[1:] or token.forms:
                    token.joined.setdefault(later.word + form, later.index)

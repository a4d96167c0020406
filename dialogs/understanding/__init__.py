"""Understanding a story: kinds, place and perpetrator pre-selected from the reporter's own words,
through a lemmatiser (simplemma) and the vocabulary files in `dialogs/vocabulary/`."""

from .reading import Match, Reading, read
from .vocabulary import Vocabulary, VocabularyError, builtin, extended

__all__ = ["Match", "Reading", "Vocabulary", "VocabularyError", "builtin", "extended", "read"]

"""Message catalogs (gettext `.po`, nl and en) and the translator the dialogue uses.

Messages are looked up by stable keys (`q.story`, `kind.threat`); the catalogs hold the text in
each language. The `.po` files are read with Babel and compiled in memory, so no build step is
needed and a changed catalog is used as soon as the process restarts.
"""

from __future__ import annotations

import gettext
import io
from functools import lru_cache
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LANGUAGES: tuple[str, ...] = ("nl", "en")
DEFAULT_LANGUAGE = "nl"
DOMAIN = "meldbot"


def catalog_path(language: str):
    """The packaged `.po` file of a language."""
    return resources.files("dialogs").joinpath("locale", language, "LC_MESSAGES", f"{DOMAIN}.po")


@lru_cache(maxsize=None)
def _translations(language: str) -> gettext.GNUTranslations:
    with catalog_path(language).open("rb") as handle:
        catalog = read_po(handle, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


class Translator:
    """Looks up catalog messages for one language and formats their `{placeholders}`."""

    def __init__(self, language: str):
        self.language = language if language in LANGUAGES else DEFAULT_LANGUAGE
        self._catalog = _translations(self.language)

    def __call__(self, key: str, **values: object) -> str:
        text = self._catalog.gettext(key)
        return text.format(**values) if values else text

    def plural(self, key: str, plural_key: str, count: int, **values: object) -> str:
        """A message with singular and plural forms; `{n}` is the count."""
        text = self._catalog.ngettext(key, plural_key, count)
        return text.format(n=count, **values)


def translator(language: str) -> Translator:
    """A translator for `language` (unknown languages fall back to Dutch)."""
    return Translator(language)

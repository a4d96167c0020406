"""Message catalogs (gettext `.po`, nl and en) and the translator the dialogue uses.

Messages are looked up by stable keys (`q.story`, `kind.threat`); the catalogs hold the text in
each language. Each language has one catalog per area (`meldbot.po` for the dialogue and the case
pages, `stats.po` for the statistics, ...): all `.po` files of a language are one catalog, and a key
may be in one file only. They are read with Babel and compiled in memory, so no build step is needed
and a changed catalog is used as soon as the process restarts.
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
    """The packaged main `.po` file of a language."""
    return resources.files("dialogs").joinpath("locale", language, "LC_MESSAGES", f"{DOMAIN}.po")


def catalog_paths(language: str) -> list:
    """Every packaged `.po` file of a language, the main one first."""
    folder = resources.files("dialogs").joinpath("locale", language, "LC_MESSAGES")
    others = sorted((p for p in folder.iterdir() if p.name.endswith(".po") and p.name != f"{DOMAIN}.po"),
                    key=lambda p: p.name)
    return [catalog_path(language), *others]


@lru_cache(maxsize=None)
def _translations(language: str) -> gettext.GNUTranslations:
    catalog = None
    for path in catalog_paths(language):
        with path.open("rb") as handle:
            part = read_po(handle, locale=language, domain=DOMAIN)
        if catalog is None:
            catalog = part
            continue
        for message in part:
            if message.id:
                catalog[message.id] = message
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

"""Every message the code uses exists in both catalogs, with the same placeholders."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from dialogs import categories
from dialogs.i18n import LANGUAGES, catalog_path

ROOT = Path(__file__).resolve().parents[1]
KEY = re.compile(r"^[a-z_]+\.[a-z_]+$")


def _catalog(language):
    with catalog_path(language).open("rb") as handle:
        return read_po(handle, locale=language)


def _messages(language) -> dict[str, str | tuple]:
    """Key -> text; a plural message is listed under its singular and its plural key."""
    messages = {}
    for m in _catalog(language):
        for key in ((m.id,) if isinstance(m.id, str) else m.id):
            if key:
                messages[key] = m.string
    return messages


def _used_keys() -> set[str]:
    """Literal keys passed to the translator in dialogs/ and bot/, plus the keys built from codes."""
    prefixes = {key.split(".")[0] for key in _messages("nl")}
    keys = set()
    for folder in ("dialogs", "bot"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and KEY.match(node.value):
                    if node.value.split(".")[0] in prefixes:
                        keys.add(node.value)
    keys |= {f"kind.{c}" for c in categories.KINDS} | {f"place.{c}" for c in categories.PLACES}
    keys |= {f"perpetrator.{c}" for c in categories.PERPETRATORS}
    keys |= {f"consequence.{c}" for c in categories.CONSEQUENCES} | {f"wish.{c}" for c in categories.WISHES}
    keys |= {f"status.{s}" for s in ("new", "in_progress", "closed")}
    keys |= {f"flag.{f}" for f in ("urgent", "contact", "aftercare", "aftercare_later", "police_came",
                                   "police_report", "injury", "evidence")}
    return keys


def _fields(text) -> set[str]:
    texts = text if isinstance(text, tuple) else (text,)
    return {name for t in texts for _, name, _, _ in string.Formatter().parse(t) if name}


def test_both_catalogs_hold_the_same_keys():
    assert set(_messages("nl")) == set(_messages("en"))


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_used_key_is_translated(language):
    messages = _messages(language)
    used = _used_keys()
    assert len(used) > 100
    missing = sorted(k for k in used if not messages.get(k))
    assert not missing, f"{language}: missing {missing}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_message_is_empty_or_fuzzy(language):
    for message in _catalog(language):
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(s.strip() for s in strings), message.id
        assert not message.fuzzy, message.id


def test_placeholders_match_between_languages():
    nl, en = _messages("nl"), _messages("en")
    for key in nl:
        assert _fields(nl[key]) == _fields(en[key]), key


def test_catalog_texts_differ_between_languages():
    nl, en = _messages("nl"), _messages("en")
    same = [k for k in nl if nl[k] == en[k] and len(str(nl[k])) > 12]
    assert not same, same

"""Every message the code uses exists in both catalogs, with the same placeholders."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from bot.core.casework import RECORDED_HOW, STATUSES, STEPS
from storage.repo.facts import MEASURES
from dialogs import categories
from dialogs.i18n import LANGUAGES, catalog_paths

ROOT = Path(__file__).resolve().parents[1]
KEY = re.compile(r"^[a-z_]+\.(?!html$)[a-z_]*[a-z]$")  # not a prefix ("case.error_"), not a template
#: Literal keys in templates: t("web.cases") or t('web.cases', ...).
TEMPLATE_KEY = re.compile(r"""\bt(?:\.plural)?\(\s*["']([a-z_]+\.[a-z_]*[a-z])["']""")
ACTIONS = ("take", "status", "step", "note", "message", "evaluate")
TIMELINE_KINDS = ("submitted", "claimed", "evidence_added", "reporter_message", "coordinator_message", "note",
                  "claim_reminder", "escalated", "aftercare_checkin", "aftercare_reoffer", "step", "status",
                  "evaluated", "recorded")
CASE_ERRORS = ("closed", "already_yours", "already_taken", "unknown_status", "same_status", "summary_required", "unknown_step",
               "future_date", "empty_note", "empty_message", "unreachable", "unknown_action", "measures_required",
               "unknown_measure", "measures_none_alone", "not_closed")


def _catalog(language):
    """All catalog files of a language as one list of messages."""
    messages = []
    for path in catalog_paths(language):
        with path.open("rb") as handle:
            messages.extend(m for m in read_po(handle, locale=language) if m.id)
    return messages


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
    for path in (ROOT / "bot" / "web" / "templates").glob("*.html"):
        keys |= set(TEMPLATE_KEY.findall(path.read_text("utf-8")))
    keys |= {f"status.{s}" for s in STATUSES} | {f"event.status_{s}" for s in STATUSES}
    keys |= {f"case.status_reporter_{s}" for s in STATUSES if s != "closed"}
    keys |= {f"{prefix}{s}" for s in STEPS for prefix in ("step.", "event.step_", "case.step_reporter_")}
    keys |= {f"web.done_{a}" for a in ACTIONS} | {f"audit.{a}" for a in ACTIONS}
    keys |= {f"audit.{a}" for a in ("login", "logout", "login_link", "view_list", "view_case", "view_attachment",
                                    "view_missing", "csrf_refused", "no_longer_coordinator", "recheck_failed",
                                    "login_refused", "login_link_opened", "login_link_refused", "refused",
                                    "cli_list", "claim_code_issued", "channel_claimed", "channel_claim_refused", "export")}
    keys |= {f"web.overdue_{x}{late}" for late in ("claim", "police_report", "aftercare") for x in ("", "long_")}
    keys |= {"event.note_added"} | {f"timeline.{kind}" for kind in TIMELINE_KINDS} | {f"web.language_{code}" for code in LANGUAGES}
    keys |= {f"web.aftercare_{a}" for a in ("yes", "later", "no", "unknown")}
    keys |= {f"web.actor_{a}" for a in ("reporter", "meldbot", "other")}
    keys |= {f"case.error_{code}" for code in CASE_ERRORS} | {"flag.escalation"}
    keys |= {f"flag.{f}" for f in ("urgent", "contact", "aftercare", "aftercare_later", "police_came",
                                   "police_report", "injury", "evidence")}
    keys |= {f"measure.{m}" for m in MEASURES} | {f"casework.how_{h}" for h in RECORDED_HOW}
    keys |= {f"audit.{a}" for a in ("view_stats", "view_yearly", "report_yearly")}
    keys |= {f"casework.error_{c}" for c in ("for_required", "how_required", "story_required", "kinds_required",
                                             "when_invalid", "when_future", "aftercare_required", "unknown_choice",
                                             "already_recorded")}
    keys |= {"event.evaluated", "web.done_recorded", "audit.recorded", "audit.record_form"}
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


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_key_is_in_one_catalog_file_only(language):
    seen: dict[str, str] = {}
    for path in catalog_paths(language):
        with path.open("rb") as handle:
            for message in read_po(handle, locale=language):
                key = message.id if isinstance(message.id, str) else message.id[0]
                if key:
                    assert key not in seen, f"{key} is in {seen[key]} and {path.name}"
                    seen[key] = path.name

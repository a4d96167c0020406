"""Adaptive Cards: the one-card report form, and the coordinator post with its button."""

from __future__ import annotations

import uuid

from dialogs import Translator
from dialogs.categories import KINDS, PLACES, WISHES

from bot.adapters.contract import Notification

CARD_VERSION = "1.5"
SUBMIT_VERB = "submitReport"
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"


def report_card(language: str, form_id: str | None = None, values: dict | None = None) -> dict:
    """Every field of a report on one card. `Action.Execute` with an `Action.Submit` fallback.
    `values` pre-fill it (a story typed before `melden`, with the kinds and place read from it), and
    bring the organisation's departments (`departments`: [code, name] pairs) with the reporter's
    remembered one (`department`): then the card has a department choice too."""
    t = Translator(language)
    form_id = form_id or uuid.uuid4().hex
    data = {"form_id": form_id, "meldbot": "report"}
    card = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": [
            {"type": "TextBlock", "text": t("card.title"), "weight": "Bolder", "size": "Medium", "wrap": True},
            {"type": "TextBlock", "text": t("card.intro"), "wrap": True, "isSubtle": True},
            {"type": "Input.Text", "id": "story", "label": t("card.story"), "isMultiline": True,
             "isRequired": True, "errorMessage": t("form.story_missing"), "maxLength": 8000},
            {"type": "Input.ChoiceSet", "id": "kinds", "label": t("card.kinds"), "isMultiSelect": True,
             "style": "expanded", "choices": [{"title": t(f"kind.{k}"), "value": k} for k in KINDS]},
            {"type": "Input.Text", "id": "when", "label": t("card.when"), "value": t("card.when_default"),
             "placeholder": t("card.when_placeholder")},
            {"type": "Input.ChoiceSet", "id": "place", "label": t("card.place"), "style": "compact",
             "choices": [{"title": t(f"place.{p}"), "value": p} for p in PLACES]},
            {"type": "Input.ChoiceSet", "id": "wishes", "label": t("card.wishes"), "isMultiSelect": True,
             "style": "expanded", "value": "contact",
             "choices": [{"title": t(f"wish.{w}"), "value": w} for w in WISHES]},
        ],
        "actions": [{
            "type": "Action.Execute", "verb": SUBMIT_VERB, "title": t("card.send"), "data": data,
            "fallback": {"type": "Action.Submit", "title": t("card.send"), "data": data},
        }],
    }
    departments = _departments(values)
    if departments:
        # After the place, before the wishes: about the reporter, not the incident.
        card["body"].insert(len(card["body"]) - 1, {
            "type": "Input.ChoiceSet", "id": "department", "label": t("card.department"), "style": "compact",
            "placeholder": t("card.department_placeholder"),
            "choices": [{"title": name, "value": code} for code, name in departments]})
    if values:
        codes = {code for code, _ in departments}
        prefill = {"story": values.get("story") or None,
                   "kinds": ",".join(k for k in values.get("kinds") or () if k in KINDS) or None,
                   "place": values.get("place") if values.get("place") in PLACES else None,
                   "department": values.get("department") if values.get("department") in codes else None}
        for element in card["body"]:
            if prefill.get(element.get("id")):
                element["value"] = prefill[element["id"]]
    return card


def _departments(values: dict | None) -> list[tuple[str, str]]:
    """The department choices the dialogue sent along: (code, display name) pairs, in order."""
    pairs = (values or {}).get("departments") or ()
    return [(str(pair[0]), str(pair[1])) for pair in pairs if isinstance(pair, (list, tuple)) and len(pair) == 2]


def sent_card(language: str, reference: str) -> dict:
    """What the form turns into after it was sent (Universal Actions replace the card)."""
    t = Translator(language)
    return {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": CARD_VERSION,
            "body": [{"type": "TextBlock", "text": t("card.sent", reference=reference), "wrap": True,
                      "weight": "Bolder"}]}


def notice_card(text: str) -> dict:
    """A card that only says something (the answer to a form that filed nothing)."""
    return {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": CARD_VERSION, "body": [{"type": "TextBlock", "text": text, "wrap": True}]}


def notification_card(notification: Notification) -> dict:
    """The coordinator channel post: the facts and a button that opens the case page."""
    return {
        "type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": [
            {"type": "TextBlock", "text": notification.title, "weight": "Bolder", "size": "Medium", "wrap": True,
             "color": "Attention" if notification.urgent else "Default"},
            {"type": "FactSet", "facts": [{"title": label, "value": value} for label, value in notification.lines]},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": notification.link_label, "url": notification.link}],
    }


def form_values(value: object) -> dict | None:
    """The report form's values from an `Action.Submit` message or an `Action.Execute` invoke."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("action"), dict):  # adaptiveCard/action: {"action": {"verb", "data"}}
        action = value["action"]
        if action.get("verb") != SUBMIT_VERB:
            return None
        value = action.get("data") or {}
    return value if value.get("meldbot") == "report" else None

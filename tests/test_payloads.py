"""Outbox payloads: each kind is stored as the JSON the outbox rows have always held, and read back
as the same value (rows written by an older version are delivered by a newer one)."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.core.payloads import CaseNotification, ReporterMessage, ThreadLine, UnknownPayloadKind, from_payload
from dialogs import Option, Reply

WHEN = dt.datetime(2026, 11, 23, 9, 15, tzinfo=dt.timezone.utc)

STORED = [
    (CaseNotification(reference="MB-7KQ-4XP", kinds=("verbal", "threat"), occurred_at=WHEN, place="counter",
                      flags=("urgent", "contact"), link="https://meldbot.test/cases/MB-7KQ-4XP"),
     {"reference": "MB-7KQ-4XP", "kinds": ["verbal", "threat"], "occurred_at": "2026-11-23T09:15:00+00:00",
      "place": "counter", "flags": ["urgent", "contact"], "link": "https://meldbot.test/cases/MB-7KQ-4XP"}),
    (ThreadLine(event="step_police_notified", reference="MB-7KQ-4XP", name="Coco", date=dt.date(2026, 11, 24)),
     {"event": "step_police_notified", "reference": "MB-7KQ-4XP", "name": "Coco", "date": "2026-11-24"}),
    (ThreadLine(event="evidence_added", reference="MB-7KQ-4XP", count=2),
     {"event": "evidence_added", "reference": "MB-7KQ-4XP", "count": 2}),
    (ReporterMessage.to({"room_id": "!dm", "user": "@anna:test"},
                        Reply("Kies", title="Vraag", hint="typ een nummer", options=(Option(1, "Ja", True),))),
     {"address": {"room_id": "!dm", "user": "@anna:test"},
      "replies": [{"text": "Kies", "title": "Vraag", "hint": "typ een nummer", "options": [[1, "Ja", True]]}]}),
    (ReporterMessage.to({"user": "anna"}, Reply("Wat heb je nodig?", options=(Option(1, "Contact"),), checklist=True)),
     {"address": {"user": "anna"},
      "replies": [{"text": "Wat heb je nodig?", "title": "", "hint": "", "options": [[1, "Contact", False]],
                   "checklist": True}]}),
    (ReporterMessage.to({"user": "coco"}, Reply("https://meldbot.test/login/x", secret=True)),
     {"address": {"user": "coco"}, "secret": True,
      "replies": [{"text": "https://meldbot.test/login/x", "title": "", "hint": "", "options": []}]}),
]


@pytest.mark.parametrize("value, stored", STORED, ids=lambda v: type(v).__name__ if not isinstance(v, dict) else "")
def test_each_kind_is_stored_as_before_and_read_back_the_same(value, stored):
    assert value.to_payload() == stored
    again = from_payload(value.KIND, stored)
    assert type(again) is type(value) and again.to_payload() == stored
    if not isinstance(value, ReporterMessage):  # replies compare by content, the secret flag is the message's
        assert again == value


def test_a_secret_message_stays_secret_after_a_round_trip():
    message = from_payload("reporter_message", STORED[-1][1])
    assert message.secret and "secret" in message.to_payload()


def test_an_unknown_kind_is_refused():
    with pytest.raises(UnknownPayloadKind):
        from_payload("carrier_pigeon", {})

"""A reporter's side, end to end, on every platform and both databases."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from support.world import ANONYMOUS_REPORT, REPORT, STORY

from storage.models import Case, HandledEvent

pytestmark = pytest.mark.both_databases


async def test_a_full_report_notifies_with_reference_and_link_never_the_story(world):
    reference = await world.report("anna")
    note = await world.notification(reference)
    assert reference in note.text and note.link.endswith(f"/cases/{reference}")
    for secret in ("oplichter", "bezoeker", "balie", *world.identities("anna")):
        assert secret not in note.text, secret
    assert (await world.case(reference)).story == STORY
    confirmations = [t for t in await world.heard("anna") if "opgeslagen onder nummer" in t]
    assert len(confirmations) == 1 and reference in confirmations[0]
    assert [n.reference for n in await world.notifications()] == [reference]


async def test_a_duplicate_event_is_answered_once_and_makes_one_case(world):
    await world.say("anna", STORY, until="Kijk even of dit klopt")
    first, again = await world.say_twice("anna", "verzenden", until="opgeslagen onder nummer")
    assert any("opgeslagen onder nummer" in text for text in first) and again == []
    assert await world.count(Case) == 1
    await world.deliver()
    assert sum("opgeslagen onder nummer" in t for t in await world.heard("anna")) == 1
    assert len(await world.notifications()) == 1


async def test_a_restart_mid_dialogue_keeps_the_draft(world):
    await world.say("anna", STORY, until="Kijk even of dit klopt")
    await world.restart()
    summary = await world.say("anna", "overslaan", until="Kijk even of dit klopt")
    assert any("oplichter" in text for text in summary)  # the story of before the restart
    reference = await world.report("anna", "verzenden")
    assert (await world.case(reference)).story == STORY
    heard = await world.heard("anna")
    assert sum("Kijk even of dit klopt" in t for t in heard) == 2  # before the restart and after it
    assert not any("Wat is er gebeurd?" in t for t in heard)  # the story was not asked again
    await world.notification(reference)


async def test_an_attachment_is_kept_as_evidence(world):
    screenshot = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes * 64
    await world.send_file("anna", "dreigbericht.png", screenshot, "image/png", until="dreigbericht.png")
    reference = await world.report("anna", *REPORT)
    (stored,) = await world.attachments(reference)
    assert stored.sha256 == hashlib.sha256(screenshot).hexdigest() and stored.size == len(screenshot)
    assert stored.filename == "dreigbericht.png" and stored.media_type == "image/png"
    note = await world.notification(reference)
    assert "bewijs bijgevoegd" in note.text


async def test_an_anonymous_report_shows_no_name_on_the_notification_or_the_case_page(world):
    named = await world.report("bob")
    assert world.display_name("bob") in await world.case_page(named)  # the control: a name is shown
    reference = await world.report("anna", *ANONYMOUS_REPORT)
    note = await world.notification(reference)
    page = await world.case_page(reference)
    assert "Anoniem" in page
    for name in world.identities("anna"):
        assert name not in note.text and name not in page, name


async def test_handled_events_are_recorded_once_per_message(world):
    before = await world.count(HandledEvent)
    await world.say("anna", "help", until="Wat ik kan")
    assert await world.count(HandledEvent) == before + 1

"""The coordinators' side and outages, end to end, on every platform and both databases."""

from __future__ import annotations

import pytest
from support.world import LOGIN_LINK_RE, STORY

from storage import repo
from storage.models import Case, CaseEvent, HandledEvent, OutboxMessage

pytestmark = pytest.mark.both_databases


async def test_claim_and_relay_both_ways_in_the_case_thread(world):
    reference = await world.report("anna")
    await world.coordinator_says(reference, "oppakken", until=f"{reference} is opgepakt door")
    told = await world.hears("anna", "heeft je melding")
    assert reference in told and world.display_name("coco") in told

    await world.coordinator_says(reference, "antwoord Ik bel je om drie uur.",
                                 until=f"Doorgestuurd naar de melder van {reference}")
    relayed = await world.hears("anna", "Ik bel je om drie uur.")
    assert "(coördinator)" in relayed and reference in relayed

    await world.say("anna", "Prima, tot straks.", until="Doorgestuurd naar de coördinator")
    if world.platform == "matrix":  # the world's coordinator room is not encrypted: never the words there
        notice = await world.in_thread(reference, f"{reference}: de melder heeft geantwoord")
        assert "Prima" not in notice and not [t for t in await world.thread(reference) if "Prima" in t]
    else:
        await world.in_thread(reference, "de melder schrijft: Prima, tot straks.")
    case = await world.case(reference)
    async with world.app.sessions() as session:
        kinds = [e.kind for e in await repo.list_case_events(session=session, case=case)]
    assert case.status == "in_progress" and case.assigned_to
    assert kinds == ["submitted", "claimed", "coordinator_message", "reporter_message"]


async def test_database_down_at_submit_saves_nothing_and_the_report_goes_through_later(world):
    await world.say("anna", STORY, until="Kijk even of dit klopt")
    handled, queued = await world.count(HandledEvent), await world.count(OutboxMessage)
    async with world.database_down(from_statement="INSERT INTO cases") as outage:
        said = await world.say("anna", "verzenden", until="Het lukte me niet om dit op te slaan")
    assert outage.refused >= 1 and outage.statements[0].upper().startswith("INSERT INTO CASES")
    assert not any("opgeslagen onder nummer" in s for s in said)
    # Nothing half-saved: no case, no event of it, no message queued, the event not marked handled.
    assert await world.count(Case) == 0 and await world.count(CaseEvent) == 0
    assert await world.count(OutboxMessage) == queued and await world.count(HandledEvent) == handled
    assert await world.notifications() == []
    # Back again: the draft was kept, and sending it now works.
    reference = await world.report("anna", "verzenden")
    assert (await world.case(reference)).story == STORY
    assert [n.reference for n in await world.notifications()] == [reference]


async def test_a_notification_is_delivered_once_after_a_platform_outage(world):
    await world.say("anna", STORY, until="Kijk even of dit klopt")
    async with world.platform_outage("anna"), world.app.sessions() as session:
        (case,) = await repo.list_cases(session=session)
        assert await repo.count_pending_messages(session=session) >= 1  # the notification waits
    note = await world.notification(case.reference)
    await world.hears("anna", "opgeslagen onder nummer")
    await world.deliver()
    assert [n.reference for n in await world.notifications()] == [note.reference]
    confirmations = [t for t in await world.heard("anna") if "opgeslagen onder nummer" in t]
    assert len(confirmations) == 1 and case.reference in confirmations[0]
    async with world.app.sessions() as session:
        assert await repo.count_pending_messages(session=session) == 0


async def test_a_login_link_goes_to_the_coordinators_direct_chat_never_the_room_and_works_once(world):
    await world.report("anna")
    in_room, direct = await world.login_from_room()
    assert in_room and not any("/login/" in text for text in in_room)
    (link,) = [m.group(0) for m in map(LOGIN_LINK_RE.search, direct) if m]
    room = await world.room_texts()
    assert any("privégesprek" in text for text in room)  # the room's answer is among what is searched
    assert not any("/login/" in text for text in room)
    assert await world.use_login_link(link) == 303
    status, _ = await world.http("GET", "/cases")
    assert status == 200
    token = link.rsplit("/login/", 1)[1]
    status, _ = await world.http("POST", "/login", data={"token": token}, allow_redirects=False)
    assert status == 410  # single use
    # A reporter asking for one gets none.
    refused = await world.say("anna", "login", until="alleen voor coördinatoren")
    assert not any("/login/" in text for text in refused)

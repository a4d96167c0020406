"""The reporter's rights in their own chat, through the whole stack: `mijn gegevens` / `my data`,
`intrekken MB-...` / `withdraw MB-...` (with the purge after seven days, hand-moved clock), and the
relay rules: a message that reads like a new incident is never relayed unasked, and on a platform
whose coordinator room may not hold it the reporter's answer stays on the case page."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from stack import Stack
from storage import repo
from storage.models import Case, CaseEvent, CaseFact, OutboxMessage, Timer

STORY = "Een man schold me net uit aan de balie en dreigde me te slaan"
NEW_INCIDENT = "Net stond er weer iemand te schreeuwen en hij dreigde me te slaan bij de ingang"
REFERENCE_RE = re.compile(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}")
UTC = dt.timezone.utc


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url)
    await stack.meldbot.retention.ensure_scheduled()
    yield stack
    await stack.close()


async def case_of(stack: Stack, reference: str) -> Case | None:
    async with stack.meldbot.sessions() as session:
        return await repo.get_case(session=session, reference=reference)


async def event_kinds(stack: Stack, reference: str) -> list[str]:
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        return list(await session.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == case.id)))


async def anonymous_report(stack: Stack, user: str) -> str:
    """A report with "anonymous" (wish 6) added to the proposed wishes."""
    reference = await stack.report(user, "Een bezoeker schold me net uit aan de balie en noemde me een oplichter",
                                   "1 2 6", "verzenden")
    case = await case_of(stack, reference)
    assert case.anonymous, "the report was meant to be anonymous"
    return reference


# -- my data ------------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_my_data_shows_the_reporter_what_is_stored_about_them_and_nothing_of_others(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    await stack.log_in()
    assert (await stack.act(reference, "message", text="Kun je me morgen bellen?")).status == 303
    await stack.deliver()
    await stack.say("anna", "Ja, na tienen ben ik bereikbaar")
    other = await stack.report("bert", "Een klant duwde me tegen de deur bij de receptie", "1 2", "verzenden")

    said = await stack.say("anna", "mijn gegevens", name="Anna de Vries")
    assert "Wat Meldbot over je bewaart" in said
    assert "Anna de Vries" not in said  # the stored name is the one of the first report
    assert "Je naam: Anna" in said and "Je chatadres (chat): anna" in said
    assert reference in said and other not in said
    assert "dreigde me te slaan" in said  # their own story
    assert "Kun je me morgen bellen?" in said and "Ja, na tienen ben ik bereikbaar" in said
    assert re.search(r"\d\d:\d\d jij: Ja, na tienen", said)
    assert "klant duwde me" not in said  # bert's story
    assert "intrekken" in said and "volledig afschrift" in said
    # The bot answered in the chat only: nothing of it went to the coordinators.
    assert not any("mijn gegevens" in line or "Wat Meldbot" in line for line in stack.thread_of(reference))

    await stack.say("bert", "language en")
    english = await stack.say("bert", "my data")
    assert "What Meldbot stores about you" in english and other in english and reference not in english


async def test_my_data_with_nothing_stored_and_during_a_report(stack):
    said = await stack.say("carla", "mijn gegevens")
    assert "Je hebt geen verstuurde meldingen" in said and "geen melding op je naam" in said
    await stack.say("carla", STORY)
    during = await stack.say("carla", "mijn gegevens")
    # The answer, then the question that was open, asked again; the report in progress is mentioned.
    assert "nog niet hebt verstuurd" in during
    assert during.index("Wat Meldbot over je bewaart") < during.rindex("?")


async def test_an_anonymous_report_is_in_my_data_but_not_the_name(stack):
    reference = await anonymous_report(stack, "dirk")
    said = await stack.say("dirk", "mijn gegevens", name="Dirk Jansen")
    assert reference in said and "Anoniem" in said and "noemde me een oplichter" in said
    assert "geen melding op je naam" in said and "Dirk" not in said


# -- withdraw -----------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_a_withdrawn_report_stops_its_follow_up_tells_the_thread_and_goes_after_seven_days(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    said = await stack.say("anna", f"intrekken {reference.lower()}")
    await stack.deliver()
    assert f"{reference} is ingetrokken" in said and "7 dagen" in said
    assert any("heeft de melding ingetrokken" in line for line in stack.thread_of(reference))
    case = await case_of(stack, reference)
    assert case.withdrawn_at == stack.clock.now and case.status == "closed"
    assert case.closing_summary is None  # no closing message goes to the reporter
    assert await event_kinds(stack, reference) == ["submitted", "withdrawn"]
    async with stack.meldbot.sessions() as session:
        pending = list(await session.scalars(select(Timer.kind).where(Timer.case_id == case.id,
                                                                      Timer.done_at.is_(None))))
    assert pending == []
    texts_before = len(stack.chat.texts_to("anna"))
    await stack.tick(hours=3)  # the claim reminder and aftercare check-in would have fired by now
    assert not any("niemand opgepakt" in line for line in stack.thread_of(reference))
    assert len(stack.chat.texts_to("anna")) == texts_before

    again = await stack.say("anna", f"withdraw {reference}")
    assert "al ingetrokken" in again

    # Seven days later the daily purge removes it; the de-identified fact stays.
    await stack.tick(days=6, hours=20)
    assert await case_of(stack, reference) is not None
    await stack.tick(days=1)
    assert await case_of(stack, reference) is None
    async with stack.meldbot.sessions() as session:
        facts = list(await session.scalars(select(CaseFact).where(CaseFact.purged_at.is_not(None))))
    assert [f.outcome for f in facts] == ["withdrawn"]


async def test_only_the_reporter_can_withdraw_and_the_answer_does_not_tell_whether_a_report_exists(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    someone_elses = await stack.say("bert", f"intrekken {reference}")
    missing = await stack.say("bert", "intrekken MB-ZZZ-999")
    assert "Ik vind geen melding" in someone_elses
    assert someone_elses.replace(reference, "X") == missing.replace("MB-ZZZ-999", "X")
    case = await case_of(stack, reference)
    assert case.withdrawn_at is None and case.status == "new"
    assert "Welke melding wil je intrekken" in await stack.say("anna", "intrekken")


async def test_an_anonymous_reporter_can_withdraw_their_report(stack):
    reference = await anonymous_report(stack, "dirk")
    assert "Ik vind geen melding" in await stack.say("anna", f"intrekken {reference}")
    assert f"{reference} is ingetrokken" in await stack.say("dirk", f"trek {reference} in")
    assert (await case_of(stack, reference)).withdrawn_at is not None


async def test_withdrawing_during_a_report_keeps_the_report_in_progress(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    await stack.say("anna", "Een vrouw gooide een stoel om bij de balie")
    said = await stack.say("anna", f"intrekken {reference}")
    assert f"{reference} is ingetrokken" in said
    async with stack.meldbot.sessions() as session:
        conversation = await repo.find_conversation(session=session, platform="chat", sender="anna")
    assert conversation.state["draft"]["story"] == "Een vrouw gooide een stoel om bij de balie"


# -- relays -------------------------------------------------------------------------------------------


async def coordinator_writes(stack: Stack, reference: str, text: str = "Hoe gaat het nu met je?") -> None:
    await stack.log_in()
    assert (await stack.act(reference, "message", text=text)).status == 303
    await stack.deliver()


async def thread_texts(stack: Stack) -> str:
    """Everything queued for or posted in any thread, plus the outbox rows as stored."""
    async with stack.meldbot.sessions() as session:
        rows = list(await session.scalars(select(OutboxMessage)))
    posted = "\n".join(line for lines in stack.chat.threads.values() for line in lines)
    return posted + "\n".join(repr(r.__dict__) for r in rows)


@pytest.mark.both_databases
async def test_a_message_that_reads_like_a_new_incident_is_never_relayed_unasked(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    await coordinator_writes(stack, reference)
    asked = await stack.say("anna", NEW_INCIDENT)
    await stack.deliver()
    assert "Is dit bericht een antwoord daarop" in asked and reference in asked
    assert "schreeuwen" not in await thread_texts(stack)

    started = await stack.say("anna", "2")
    await stack.deliver()
    assert "schreeuwen" not in await thread_texts(stack)
    async with stack.meldbot.sessions() as session:
        conversation = await repo.find_conversation(session=session, platform="chat", sender="anna")
    assert conversation.state["draft"]["story"] == NEW_INCIDENT and conversation.state["pending_relay"] is None
    assert "Doorgestuurd" not in started


async def test_the_reporter_can_say_the_incident_like_message_is_the_answer(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    await coordinator_writes(stack, reference, "Wat zei hij precies?")
    await stack.say("anna", "Hij zei dat hij me zou slaan als ik hem niet hielp")
    assert "niet weet" not in await stack.say("anna", "help")  # a command keeps the question open
    relayed = await stack.say("anna", "1")
    await stack.deliver()
    assert "Doorgestuurd" in relayed
    assert any("Hij zei dat hij me zou slaan" in line for line in stack.thread_of(reference))
    # A plain answer (no incident in it) is relayed at once, as before.
    await coordinator_writes(stack, reference, "Wil je nazorg?")
    assert "Doorgestuurd" in await stack.say("anna", "Ja graag, volgende week")


async def test_stop_drops_the_pending_message(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    await coordinator_writes(stack, reference)
    await stack.say("anna", NEW_INCIDENT)
    assert "niet doorgestuurd" in await stack.say("anna", "stop")
    await stack.deliver()
    assert "schreeuwen" not in await thread_texts(stack)
    assert await event_kinds(stack, reference) == ["submitted", "coordinator_message"]


async def test_a_new_report_started_with_melden_during_a_relay_is_not_relayed(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    await coordinator_writes(stack, reference)
    await stack.say("anna", "melden")
    await stack.say("anna", "Er werd tegen me gescholden op straat")
    await stack.deliver()
    assert "gescholden" not in await thread_texts(stack)


async def test_where_the_room_may_not_hold_it_the_answer_stays_on_the_case_page(stack):
    stack.chat.thread_content_allowed = lambda destination: False  # e.g. an unencrypted Matrix room
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    await coordinator_writes(stack, reference)
    await stack.say("anna", "Morgen ben ik er weer")
    await stack.deliver()
    lines = stack.thread_of(reference)
    assert not any("Morgen ben ik er weer" in line for line in lines)
    (answered,) = [line for line in lines if "heeft geantwoord" in line]
    assert f"http://meldbot.test/cases/{reference}" in answered
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "Morgen ben ik er weer" in page
    async with stack.meldbot.sessions() as session:
        assert int(await session.scalar(select(func.count()).select_from(CaseEvent).where(
            CaseEvent.kind == "reporter_message"))) == 1


async def test_my_data_names_the_department_i_gave(database_url):
    stack = await Stack.start(database_url, organisation={"departments": ["burgerzaken", "wijkteam"],
                                                          "department_names": {"wijkteam": "Wijkteam Noord"}})
    try:
        before = await stack.say("anna", "mijn gegevens")
        assert "Wijkteam Noord" not in before
        await stack.say("anna", "afdeling wijkteam")
        assert "Wijkteam Noord" in await stack.say("anna", "mijn gegevens")
    finally:
        await stack.close()

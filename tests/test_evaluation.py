"""The evaluation of a case: measures and what was learned, recorded when closing on the case page or
afterwards; sealed with the case, counted in the statistics facts, never in the chat or the logs."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from sqlalchemy import select

from bot.core.casework import CaseError, Coordinator, evaluation
from stack import Stack
from storage import repo
from storage.models import AuditEntry, CaseFact

LESSON = "Balie voortaan met twee collega's bezetten als de bezoeker vaker boos is geweest"
NOW = dt.datetime(2026, 11, 23, 9, 15, tzinfo=dt.timezone.utc)


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url, now=NOW)
    yield stack
    await stack.close()


async def case_of(stack: Stack, reference: str):
    async with stack.meldbot.sessions() as session:
        return await repo.get_case(session=session, reference=reference)


async def event_kinds(stack: Stack, reference: str) -> list[str]:
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        return [e.kind for e in await repo.list_case_events(session=session, case=case)]


async def fact_measures(stack: Stack, reference: str) -> set[str]:
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        fact = await session.scalar(select(CaseFact).where(CaseFact.case_id == case.id))
        return set(repo.codes_of(repo.MEASURE_BITS, fact.measure_bits))


async def audit_actions(stack: Stack, reference: str) -> list[tuple[str, dict]]:
    async with stack.meldbot.sessions() as session:
        rows = await session.scalars(select(AuditEntry).where(AuditEntry.case_reference == reference)
                                     .order_by(AuditEntry.id))
        return [(a.action, a.detail) for a in rows]


async def post(stack: Stack, reference: str, action: str, *fields: tuple[str, str]):
    """A case page form with repeated fields (the measure checkboxes)."""
    token = await stack.csrf(f"/cases/{reference}")
    return await stack.client.post(f"/cases/{reference}", data=[("csrf", token), ("action", action), *fields],
                                   allow_redirects=False)


def test_an_evaluation_needs_a_known_measure_and_none_stands_alone():
    who = Coordinator("chat:coco", "Coco")
    with pytest.raises(CaseError) as missing:
        evaluation(who, [], "iets geleerd", NOW)
    assert missing.value.code == "measures_required"
    with pytest.raises(CaseError) as unknown:
        evaluation(who, ["training", "camera"], "", NOW)
    assert unknown.value.code == "unknown_measure"
    with pytest.raises(CaseError) as mixed:
        evaluation(who, ["none", "training"], "", NOW)
    assert mixed.value.code == "measures_none_alone"
    # In the fixed order of MEASURES, each once; the lesson cleaned and cut at 1000 characters.
    done = evaluation(who, ["workplace", "house_rules", "workplace"], "  " + "x" * 1200 + "\u200b", NOW)
    assert done == {"measures": ["house_rules", "workplace"], "lesson": "x" * 1000, "by": "Coco",
                    "at": "2026-11-23T09:15:00+00:00"}
    assert evaluation(who, ["none"], "", NOW)["measures"] == ["none"]


@pytest.mark.both_databases
async def test_closing_without_a_measure_is_refused_and_changes_nothing(stack):
    reference = await stack.report()
    await stack.log_in()
    assert (await stack.act(reference, "take")).status == 303
    refused = await post(stack, reference, "status", ("status", "closed"), ("summary", "Afgehandeld."),
                         ("lesson", LESSON))
    assert refused.status == 409
    assert "Kies bij het afsluiten minstens één maatregel" in await refused.text()
    case = await case_of(stack, reference)
    assert case.status == "in_progress" and case.closed_at is None and case.closing_summary is None
    assert case.evaluation == {}
    assert "status" not in await event_kinds(stack, reference)
    assert await fact_measures(stack, reference) == set()
    assert (await audit_actions(stack, reference))[-1] == (
        "refused", {"action": "status", "error": "measures_required"})
    # "No measure needed" together with a measure is refused as well.
    mixed = await post(stack, reference, "status", ("status", "closed"), ("summary", "Afgehandeld."),
                       ("measures", "none"), ("measures", "training"))
    assert mixed.status == 409 and (await case_of(stack, reference)).status == "in_progress"


@pytest.mark.both_databases
async def test_closing_records_the_evaluation_sealed_and_counted_but_never_sent(stack, caplog):
    caplog.set_level(logging.DEBUG)
    reference = await stack.report()
    await stack.log_in()
    assert (await stack.act(reference, "take")).status == 303
    closed = await post(stack, reference, "status", ("status", "closed"), ("summary", "De man kreeg een brief."),
                        ("measures", "workplace"), ("measures", "training"), ("lesson", LESSON))
    assert closed.status == 303 and closed.headers["Location"].startswith(f"/cases/{reference}?done=status")
    await stack.deliver()

    case = await case_of(stack, reference)
    assert case.status == "closed"
    assert case.evaluation == {"measures": ["training", "workplace"], "lesson": LESSON, "by": "Coco",
                               "at": "2026-11-23T09:15:00+00:00"}
    assert await fact_measures(stack, reference) == {"training", "workplace"}
    # Sealed: the lesson is nowhere in the stored row in the clear.
    assert LESSON.encode() not in case.sealed
    # The reporter gets the summary, the thread its usual line; neither the lesson nor the measures.
    texts = stack.chat.texts_to("anna")
    assert "De man kreeg een brief." in texts[-1]
    assert not any("twee collega" in text for text in texts)
    assert stack.thread_of(reference)[-1] == f"{reference}: afgesloten door Coco."
    assert "twee collega" not in caplog.text

    page = await stack.client.get(f"/cases/{reference}")
    html = await page.text()
    assert "Evaluatie" in html and LESSON.replace("'", "&#39;") in html
    assert "Training of instructie voor medewerkers" in html and "Werkplek of gebouw aangepast" in html
    assert "Vastgelegd door Coco op 23 nov 2026 10:15" in html
    # On a closed case the page offers to change the evaluation, preset to what it holds.
    assert 'name="action" value="evaluate"' in html
    assert 'id="evaluate-measure-training" type="checkbox" name="measures" value="training" checked' in html
    assert 'id="evaluate-measure-none" type="checkbox" name="measures" value="none">' in html


@pytest.mark.both_databases
async def test_the_evaluation_can_be_changed_afterwards_with_a_timeline_event(stack, caplog):
    caplog.set_level(logging.DEBUG)
    reference = await stack.report()
    await stack.log_in()
    # Open: there is nothing to evaluate yet.
    early = await post(stack, reference, "evaluate", ("measures", "training"))
    assert early.status == 409 and f"{reference} is nog niet afgesloten" in await early.text()
    assert (await post(stack, reference, "status", ("status", "closed"), ("summary", "Klaar."),
                       ("measures", "none"))).status == 303
    assert await fact_measures(stack, reference) == {"none"}
    assert (await case_of(stack, reference)).evaluation["lesson"] == ""

    stack.clock.advance(days=3)
    await stack.log_in()  # the first session has run out meanwhile
    changed = await post(stack, reference, "evaluate", ("measures", "house_rules"),
                         ("measures", "aggressor_response"), ("lesson", "Huisregels bij de ingang opgehangen"))
    assert changed.status == 303 and changed.headers["Location"].startswith(f"/cases/{reference}?done=evaluate")
    await stack.deliver()
    case = await case_of(stack, reference)
    assert case.evaluation == {"measures": ["house_rules", "aggressor_response"],
                               "lesson": "Huisregels bij de ingang opgehangen", "by": "Coco",
                               "at": "2026-11-26T09:15:00+00:00"}
    # The "evaluated" event refreshed the statistics fact: "none" is gone.
    assert await fact_measures(stack, reference) == {"house_rules", "aggressor_response"}
    assert (await event_kinds(stack, reference))[-1] == "evaluated"
    assert ("evaluate", {}) in await audit_actions(stack, reference)
    assert stack.thread_of(reference)[-1] == f"{reference}: evaluatie vastgelegd door Coco."
    assert not any("ingang" in text for text in stack.chat.texts_to("anna"))
    assert "ingang" not in caplog.text

    page = await (await stack.client.get(f"/cases/{reference}?done=evaluate")).text()
    assert "De evaluatie is vastgelegd." in page
    assert "Evaluatie vastgelegd: Huisregels aangepast of gehandhaafd, Maatregel richting de pleger" in page

    # A refused change keeps the evaluation as it was.
    refused = await post(stack, reference, "evaluate", ("lesson", "zonder maatregel"))
    assert refused.status == 409
    assert (await case_of(stack, reference)).evaluation["measures"] == ["house_rules", "aggressor_response"]
    assert (await audit_actions(stack, reference))[-1] == (
        "refused", {"action": "evaluate", "error": "measures_required"})


async def test_the_case_page_shows_the_evaluation_in_english(stack):
    reference = await stack.report()
    await stack.log_in()
    assert (await post(stack, reference, "status", ("status", "closed"), ("summary", "Done."),
                       ("measures", "procedure"), ("lesson", "Check the rota"))).status == 303
    html = await (await stack.client.get(f"/cases/{reference}?lang=en")).text()
    assert "Measures taken" in html and "Way of working or procedure changed" in html and "Check the rota" in html
    assert "Change the evaluation" in html

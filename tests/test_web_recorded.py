"""A report a coordinator records for someone else (made by phone or in person): the form on the case
pages, the case it creates (like a chat report, without reporter or conversation), and its refusals."""

from __future__ import annotations

import datetime as dt
import logging
import re

import pytest
from sqlalchemy import func, select

from stack import Stack
from storage import repo
from storage.models import AuditEntry, Case, CaseFact, Timer

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 23, 9, 15, tzinfo=UTC)  # a Monday, 10:15 in the organisation's time zone
STORY = "Meneer belde en dreigde langs te komen om de medewerker op te wachten bij de uitgang"


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url, now=NOW, organisation={
        "departments": ["burgerzaken", "wijkteam"], "department_names": {"burgerzaken": "Burgerzaken"}})
    yield stack
    await stack.close()


def fields(**changes) -> list[tuple[str, str]]:
    """A complete, valid form (threat and verbal aggression by phone); `changes` replace fields, a
    list value gives a repeated field, None leaves it out."""
    values = {"recorded_for": "Piet Jansen", "recorded_how": "phone", "story": STORY, "kinds": ["verbal", "threat"],
              "date": "2026-11-22", "time": "14:30", "place": "phone", "department": "wijkteam",
              "perpetrator": "citizen", "consequences": ["absence"], "police_report": "1", "aftercare": "yes",
              "contact": "1", **changes}
    form = []
    for name, value in values.items():
        for one in (value if isinstance(value, list) else [] if value is None else [value]):
            form.append((name, one))
    return form


async def submit(stack: Stack, form: list[tuple[str, str]], token: str | None = None):
    token = token or await stack.csrf("/cases/new")
    return await stack.client.post("/cases/new", data=[("csrf", token), *form], allow_redirects=False)


async def count_cases(stack: Stack) -> int:
    async with stack.meldbot.sessions() as session:
        return int(await session.scalar(select(func.count(Case.id))))


async def audits(stack: Stack, action: str) -> list[AuditEntry]:
    async with stack.meldbot.sessions() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                          .order_by(AuditEntry.id)))


async def test_the_form_needs_a_login_and_is_linked_from_the_case_list(stack):
    assert (await stack.client.get("/cases/new")).status == 401
    await stack.log_in()
    listing = await (await stack.client.get("/cases")).text()
    assert 'href="/cases/new"' in listing and "Nieuwe melding opnemen" in listing
    page = await stack.client.get("/cases/new")
    html = await page.text()
    assert page.status == 200 and page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    # The incident's date and time start at now, in the organisation's time zone.
    assert 'name="date" value="2026-11-23" max="2026-11-23"' in html and 'name="time" value="10:15"' in html
    # The configured departments, by their names (a code without a name as it is).
    assert '<option value="burgerzaken">Burgerzaken</option>' in html
    assert '<option value="wijkteam">wijkteam</option>' in html
    assert "style=" not in html and "<script" not in html
    assert [a.actor for a in await audits(stack, "record_form")] == ["chat:coco"]
    english = await (await stack.client.get("/cases/new?lang=en")).text()
    assert "Record a new report" in english and "by phone" in english


async def test_without_departments_the_form_asks_for_none(database_url):
    stack = await Stack.start(database_url, now=NOW)
    try:
        await stack.log_in()
        html = await (await stack.client.get("/cases/new")).text()
        assert 'name="department"' not in html
        created = await submit(stack, fields(department=None))
        assert created.status == 303
        async with stack.meldbot.sessions() as session:
            case = (await repo.list_cases(session=session))[0]
            assert case.answers["department"] is None
    finally:
        await stack.close()


@pytest.mark.both_databases
async def test_a_recorded_report_becomes_a_case_like_a_chat_report(stack, caplog):
    caplog.set_level(logging.DEBUG)
    chat_reference = await stack.report()
    await stack.log_in()
    created = await submit(stack, fields())
    assert created.status == 303, await created.text()
    location = created.headers["Location"]
    found = re.fullmatch(r"/cases/(MB-[A-Z0-9]{3}-[A-Z0-9]{3})\?done=recorded", location)
    assert found, location
    reference = found.group(1)
    await stack.deliver()
    # Counted like a chat report, once per kind, under the platform "web".
    metrics = stack.meldbot.metrics.exposition().decode()
    for kind in ("verbal", "threat"):
        assert f'meldbot_reports_created_total{{kind="{kind}",platform="web"}} 1.0' in metrics

    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        chat_case = await repo.get_case(session=session, reference=chat_reference)
        # Nobody to message in the chat: no reporter row, no conversation, not anonymous.
        assert (case.reporter_id, case.conversation_id, case.contact, case.anonymous) == (None, None, None, False)
        assert case.story == STORY and STORY.encode() not in case.sealed
        assert case.kind_codes == ["verbal", "threat"] and case.urgent is True and case.place == "phone"
        assert case.occurred_at == dt.datetime(2026, 11, 22, 13, 30, tzinfo=UTC)  # 14:30 in Amsterdam
        assert (case.aftercare, case.contact_wanted, case.police_came, case.police_report_wanted) == (
            "yes", True, False, True)
        answers = case.answers
        assert {k: answers[k] for k in ("recorded_by", "recorded_by_id", "recorded_for", "recorded_how")} == {
            "recorded_by": "Coco", "recorded_by_id": "chat:coco", "recorded_for": "Piet Jansen",
            "recorded_how": "phone"}
        assert (answers["department"], answers["perpetrator"], answers["consequences"]) == (
            "wijkteam", "citizen", ["absence"])
        # Every key a chat report's answers have.
        assert set(chat_case.answers) - set(answers) == set()
        assert "story" not in answers
        # The same timers as a chat report: urgent, so the claim reminder in 30 minutes; aftercare after 72 h.
        timers = {t.kind: t.due_at for t in await session.scalars(select(Timer).where(Timer.case_id == case.id))}
        assert timers == {"claim_reminder": NOW + dt.timedelta(minutes=30),
                          "aftercare_checkin": NOW + dt.timedelta(hours=72)}
        assert case.claim_due_at == NOW + dt.timedelta(minutes=30)
        # Counted like any other case, marked as recorded.
        fact = await session.scalar(select(CaseFact).where(CaseFact.case_id == case.id))
        assert (fact.recorded, fact.department, fact.perpetrator, fact.absence, fact.urgent, fact.status) == (
            True, "wijkteam", "citizen", True, True, "new")
        chat_fact = await session.scalar(select(CaseFact).where(CaseFact.case_id == chat_case.id))
        assert chat_fact.recorded is False
        kinds = [e.kind for e in await repo.list_case_events(session=session, case=case)]
        assert kinds == ["submitted", "recorded"]

    # The coordinators' notification, exactly like a chat report's (codes and the link only).
    notification = next(n for _, n in stack.chat.room if n.reference == reference)
    chat_notification = next(n for _, n in stack.chat.room if n.reference == chat_reference)
    assert notification.urgent is True and notification.link == f"http://meldbot.test/cases/{reference}"
    assert notification.title.endswith(f"Nieuwe melding {reference}")
    assert notification.title.replace(reference, "") == chat_notification.title.replace(chat_reference, "")
    assert STORY not in str(notification) and "Piet" not in str(notification)
    assert [(a.actor, a.case_reference) for a in await audits(stack, "recorded")] == [("chat:coco", reference)]
    assert STORY not in caplog.text and "Piet Jansen" not in caplog.text

    page = await (await stack.client.get(location)).text()
    assert "opgenomen door Coco voor Piet Jansen" in page and "(telefonisch)" in page
    assert "De melding is opgeslagen en de coördinatoren hebben bericht gekregen." in page
    assert "Melding opgenomen (telefonisch)" in page and "wijkteam" in page
    listing = await (await stack.client.get("/cases")).text()
    rows = listing.split("<tr")
    assert "opgenomen door Coco voor Piet Jansen" in next(r for r in rows if reference in r)
    assert "opgenomen door" not in next(r for r in rows if chat_reference in r)
    # Messaging the reporter: there is no chat to reach them in.
    message = await stack.act(reference, "message", text="Ik bel je morgen terug")
    assert message.status == 409 and "De melder is niet via de chat bereikbaar." in await message.text()


@pytest.mark.both_databases
async def test_invalid_input_shows_the_form_again_and_creates_nothing(stack):
    await stack.log_in()
    refused = await submit(stack, fields(recorded_for="  ", kinds=None, date="2026-11-24", aftercare=None))
    assert refused.status == 400
    html = await refused.text()
    for message in ("Vul in voor wie je deze melding opneemt.", "Kies minstens één soort.",
                    "Het voorval kan niet in de toekomst liggen.", "Kies of de melder nazorg wil."):
        assert message in html, message
    assert "Beschrijf wat er gebeurde." not in html
    # What was entered is shown again.
    assert f">{STORY}</textarea>" in html and 'value="2026-11-24"' in html
    assert 'id="new-consequence-absence" type="checkbox" name="consequences" value="absence" checked' in html
    assert 'id="new-how-phone" type="radio" name="recorded_how" value="phone" required checked' in html
    assert '<option value="wijkteam" selected>' in html
    assert await count_cases(stack) == 0
    entry = (await audits(stack, "refused"))[-1]
    assert entry.case_reference is None and entry.detail == {
        "action": "recorded", "errors": ["for_required", "kinds_required", "when_future", "aftercare_required"]}
    assert STORY not in str(entry.detail)

    for form, error in ((fields(kinds=["verbal", "kidnapping"]), "unknown_choice"),
                        (fields(department="elders"), "unknown_choice"),
                        (fields(recorded_how="letter"), "how_required"),
                        (fields(story="\u200b  "), "story_required"),
                        (fields(time="25:00"), "when_invalid")):
        answer = await submit(stack, form)
        assert answer.status == 400, error
        assert (await audits(stack, "refused"))[-1].detail["errors"] == [error]
    assert await count_cases(stack) == 0


async def test_the_same_form_sent_twice_files_one_case(stack):
    await stack.log_in()
    page = await (await stack.client.get("/cases/new")).text()
    form_id = re.search(r'name="form_id" value="([^"]+)"', page).group(1)
    first = await submit(stack, fields(form_id=form_id))
    assert first.status == 303
    again = await submit(stack, fields(form_id=form_id))  # a double click, or the browser resending
    assert again.status == 409 and "al verzonden" in await again.text()
    assert await count_cases(stack) == 1
    # A new form (a fresh ID) files a new case.
    page = await (await stack.client.get("/cases/new")).text()
    other_id = re.search(r'name="form_id" value="([^"]+)"', page).group(1)
    assert other_id != form_id
    assert (await submit(stack, fields(form_id=other_id))).status == 303 and await count_cases(stack) == 2


async def test_a_post_without_the_csrf_token_is_refused(stack):
    await stack.log_in()
    refused = await submit(stack, fields(), token="wrong")
    assert refused.status == 403
    assert await count_cases(stack) == 0
    assert len(await audits(stack, "csrf_refused")) == 1
    # Logged out: the login page, nothing created.
    other = await stack.another_browser()
    anonymous = await other.post("/cases/new", data=fields(), allow_redirects=False)
    assert anonymous.status == 401 and await count_cases(stack) == 0


async def test_a_recorded_case_without_urgency_waits_four_working_hours(stack):
    await stack.log_in()
    created = await submit(stack, fields(kinds=["verbal"], aftercare="no", contact=None, recorded_how="in_person"))
    assert created.status == 303
    async with stack.meldbot.sessions() as session:
        case = (await repo.list_cases(session=session))[0]
        timers = {t.kind: t.due_at for t in await session.scalars(select(Timer).where(Timer.case_id == case.id))}
        assert case.urgent is False and case.contact_wanted is False and case.answers["recorded_how"] == "in_person"
    # 10:15 on a Monday plus four working hours: 14:15 in Amsterdam.
    assert timers == {"claim_reminder": dt.datetime(2026, 11, 23, 13, 15, tzinfo=UTC),
                      "aftercare_reoffer": NOW + dt.timedelta(days=14)}


async def test_recording_and_closing_in_a_real_browser(stack):
    """The form and the evaluation as a coordinator uses them: labelled fields, no script."""
    from browser import artifact_path, check_accessibility, launch_chromium

    link = await stack.login_link()
    base = str(stack.client.make_url("")).rstrip("/")
    async with launch_chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        await page.goto(base + "/login/" + link.rsplit("/login/", 1)[1])
        await page.get_by_role("button", name="Inloggen").click()
        await page.wait_for_url(re.compile(r"/cases$"))
        await page.get_by_role("link", name="Nieuwe melding opnemen (telefonisch of persoonlijk gedaan)").click()
        await page.wait_for_url(re.compile(r"/cases/new$"))
        await check_accessibility(page)

        # Sent half filled in: the form comes back with the errors and what was entered.
        await page.get_by_label("Voor wie (naam)").fill("Piet Jansen")
        await page.get_by_label("Wat er gebeurde").fill(STORY)
        await page.get_by_label("persoonlijk").check()
        await page.get_by_label("geen nazorg").check()
        await page.get_by_role("button", name="Melding opslaan").click()
        await page.wait_for_load_state()
        assert "Kies minstens één soort." in await page.locator(".error").inner_text()
        assert await page.get_by_label("Voor wie (naam)").input_value() == "Piet Jansen"
        await check_accessibility(page)
        await page.screenshot(path=str(artifact_path("new-case-form.png")), full_page=True)

        await page.get_by_label("Bedreiging").check()
        await page.get_by_label("Afdeling").select_option("burgerzaken")
        await page.get_by_role("button", name="Melding opslaan").click()
        await page.wait_for_url(re.compile(r"done=recorded"))
        assert "opgenomen door Coco voor Piet Jansen" in await page.locator(".summary-line").inner_text()
        assert "Burgerzaken" in await page.locator("dl.facts").first.inner_text()
        await check_accessibility(page)

        # Closing asks for the measures; then the evaluation can be changed.
        await page.get_by_label("Nieuwe status").select_option("closed")
        await page.get_by_label("Afsluitende samenvatting").fill("Gesprek gehad, brief gestuurd.")
        await page.get_by_role("button", name="Status wijzigen").click()
        await page.wait_for_load_state()
        assert "minstens één maatregel" in await page.locator(".error").inner_text()
        await page.get_by_label("Nieuwe status").select_option("closed")
        await page.get_by_label("Afsluitende samenvatting").fill("Gesprek gehad, brief gestuurd.")
        await page.get_by_label("Training of instructie voor medewerkers").check()
        await page.get_by_label("Wat hebben we geleerd?").fill("Vaker oefenen met dreigende bellers")
        await page.get_by_role("button", name="Status wijzigen").click()
        await page.wait_for_url(re.compile(r"done=status"))
        evaluation = await page.locator("section.box", has_text="Evaluatie").inner_text()
        assert "Training of instructie voor medewerkers" in evaluation and "dreigende bellers" in evaluation
        await check_accessibility(page)
        await page.get_by_label("Geen maatregel nodig").check()
        await page.get_by_label("Training of instructie voor medewerkers").uncheck()
        await page.get_by_role("button", name="Evaluatie opslaan").click()
        await page.wait_for_url(re.compile(r"done=evaluate"))
        assert "Geen maatregel nodig" in await page.locator("section.box", has_text="Evaluatie").inner_text()
        await page.screenshot(path=str(artifact_path("case-page-evaluated.png")), full_page=True)

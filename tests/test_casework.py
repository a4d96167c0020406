"""Case follow-up end to end: login through the chat, the case pages, every action and permission,
the reporter seeing each step in their own chat, and the durable timers with a hand-moved clock."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from bot.core.casework import STEPS
from stack import LINK_RE, Stack
from storage import repo
from storage.models import AuditEntry, CaseEvent, LoginLink, OutboxMessage, WebSession

STORY = "Een man schold me net uit aan de balie en dreigde me te slaan"


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url, followup={"backup": "chat:bert"})
    yield stack
    await stack.close()


async def events(stack: Stack, reference: str) -> list[CaseEvent]:
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        return await repo.list_case_events(session=session, case=case)


async def case_of(stack: Stack, reference: str):
    async with stack.meldbot.sessions() as session:
        return await repo.get_case(session=session, reference=reference)


# -- login through the chat -----------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_a_coordinator_logs_in_through_a_single_use_link_from_the_chat(stack):
    reference = await stack.report()
    link = await stack.login_link("coco")
    assert link.startswith("http://meldbot.test/login/")
    token = link.rsplit("/", 1)[1]
    # Opening the link (or a chat app's link preview fetching it) does not spend it.
    for _ in range(2):
        page = await stack.client.get(f"/login/{token}")
        assert page.status == 200 and "Coco" in await page.text()
    response = await stack.client.post("/login", data={"token": token}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/cases"
    cookie = next(c for c in response.headers.getall("Set-Cookie") if c.startswith("meldbot_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # http public_url
    listing = await stack.client.get("/cases")
    assert listing.status == 200 and reference in await listing.text()
    # The link works once; a second use gets a clear page, not a stack trace.
    again = await stack.client.post("/login", data={"token": token}, allow_redirects=False)
    assert again.status == 410 and "login" in (await again.text())
    page = await stack.client.get(f"/login/{token}")
    assert page.status == 410
    async with stack.meldbot.sessions() as session:
        stored = [row.token_digest for row in await session.scalars(select(LoginLink))]
        assert stored and token not in stored[0]  # only a digest is kept
        actions = [a.action for a in await repo.list_audit(session=session)]
    assert {"login_link", "login", "view_list"} <= set(actions)


async def test_a_login_link_expires_after_ten_minutes(stack):
    link = await stack.login_link()
    stack.clock.advance(minutes=10, seconds=1)
    token = link.rsplit("/", 1)[1]
    assert (await stack.client.get(f"/login/{token}")).status == 410
    response = await stack.client.post("/login", data={"token": token}, allow_redirects=False)
    assert response.status == 410 and "meldbot_session" not in response.headers.get("Set-Cookie", "")


async def test_only_coordinators_get_a_login_link_and_a_reporter_loses_nothing(stack):
    await stack.say("anna", "Een man schold me net uit aan de balie")
    answer = await stack.say("anna", "login")
    assert not LINK_RE.search(answer) and "coördinator" in answer
    # The report being written is still there: the dialogue goes on where it was.
    assert "Aangevinkt: 2." in await stack.say("anna", "1 2")  # the wishes ticked on the summary
    async with stack.meldbot.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LoginLink)) == 0
    # Extra coordinators come from the config list.
    other = await Stack.start(stack.meldbot.settings.database.url, coordinators=(),
                              followup={"coordinators": ["chat:dora"]})
    try:
        assert LINK_RE.search(await other.say("dora", "login"))
        assert not LINK_RE.search(await other.say("coco", "login"))
    finally:
        await other.close()


async def test_forged_or_malformed_login_tokens_get_a_clear_page(stack):
    for token in ("x", "a" * 43, "%00", "a" * 300):
        page = await stack.client.get(f"/login/{token}")
        assert page.status in (404, 410), token
    for data in ({}, {"token": ""}, {"token": "nope"}, {"token": "a" * 5000}):
        response = await stack.client.post("/login", data=data, allow_redirects=False)
        assert response.status == 410
        assert "meldbot_session" not in response.headers.get("Set-Cookie", "")


async def test_a_case_link_without_a_session_explains_login_and_returns_to_the_case(stack):
    reference = await stack.report()
    page = await stack.client.get(f"/cases/{reference}", allow_redirects=False)
    body = await page.text()
    assert page.status == 401 and "login" in body and STORY not in body and reference not in body
    # After logging in, the browser lands on the case it came for.
    link = await stack.login_link()
    response = await stack.client.post("/login", data={"token": link.rsplit("/", 1)[1]}, allow_redirects=False)
    assert response.headers["Location"] == f"/cases/{reference}"


async def test_a_statistics_link_without_a_session_returns_to_the_statistics(stack):
    page = await stack.client.get("/stats/year/2026?lang=en", allow_redirects=False)
    assert page.status == 401
    link = await stack.login_link()
    response = await stack.client.post("/login", data={"token": link.rsplit("/", 1)[1]}, allow_redirects=False)
    assert response.headers["Location"] == "/stats/year/2026"  # the page, not its query


async def test_sessions_end_when_idle_when_too_old_and_at_logout(stack):
    reference = await stack.report()
    await stack.log_in()
    assert (await stack.client.get("/cases")).status == 200
    stack.clock.advance(minutes=29)
    assert (await stack.client.get("/cases")).status == 200  # activity keeps it alive
    stack.clock.advance(minutes=30, seconds=1)
    assert (await stack.client.get("/cases")).status == 401  # idle too long
    await stack.log_in()
    for _ in range(25):  # active all day, but 12 hours is the limit
        stack.clock.advance(minutes=29)
        await stack.client.get("/cases")
    assert (await stack.client.get("/cases")).status == 401
    await stack.log_in()
    token = await stack.csrf("/cases")
    cookie = stack.client.session.cookie_jar.filter_cookies(stack.client.make_url("/"))["meldbot_session"].value
    response = await stack.client.post("/logout", data={"csrf": token})
    assert response.status == 200
    # The old cookie is useless even if the browser kept it.
    stack.client.session.cookie_jar.update_cookies({"meldbot_session": cookie})
    assert (await stack.client.get(f"/cases/{reference}")).status == 401


# -- the pages ------------------------------------------------------------------------------------------


async def test_case_page_shows_the_report_escaped_with_strict_headers(stack):
    story = 'Hij riep <script>alert("x")</script> en sloeg op de balie'
    reference = await stack.report("anna", story, "1 2", "verzenden")
    await stack.log_in()
    page = await stack.client.get(f"/cases/{reference}")
    body = await page.text()
    assert page.status == 200
    assert "<script>" not in body and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in body
    csp = page.headers["Content-Security-Policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert "Anna" in body  # not anonymous: the coordinator sees who reported
    assert "aangifte" in body.lower() or "Aangifte" in body


async def test_unknown_and_malformed_references_get_the_same_404(stack):
    await stack.report()
    await stack.log_in()
    bodies = set()
    for reference in ("MB-ZZZ-ZZZ", "nope", "MB-" + "X" * 40, "%3Cscript%3E"):
        page = await stack.client.get(f"/cases/{reference}")
        assert page.status == 404, reference
        bodies.add((await page.text()).replace(reference, ""))
    assert len(bodies) == 1


async def test_the_list_filters_by_status_kind_period_mine_overdue_and_reference(stack):
    first = await stack.report()
    second = await stack.report("bob", "Iemand bedreigde me telefonisch", "2", "verzenden")
    await stack.log_in()
    await stack.act(first, "take")

    async def listed(query: str) -> set[str]:
        page = await stack.client.get(f"/cases?{query}")
        assert page.status == 200
        return set(re.findall(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", await page.text()))

    assert await listed("") == {first, second}
    assert await listed("status=in_progress") == {first}
    assert await listed("status=new") == {second}
    assert await listed("mine=1") == {first}
    assert await listed(f"reference={second[-3:].lower()}") == {second}
    assert await listed("since=2026-11-24") == set()
    assert await listed("since=2026-11-23&until=2026-11-23") == {first, second}
    assert await listed("kind=threat") == {first, second}
    assert await listed("kind=discrimination") == set()
    assert await listed("overdue=1") == set()
    stack.clock.advance(minutes=29)
    assert await listed("overdue=1") == set()
    stack.clock.advance(minutes=2)  # the untaken threat (urgent) is past its 30 minutes
    assert await listed("overdue=1") == {second}
    assert await listed("status=bogus&kind=bogus&since=never") == {first, second}


async def test_an_anonymous_reporter_is_never_shown_but_still_reachable(stack):
    reference = await stack.report("anna", STORY, "1 2 6", "verzenden")
    await stack.log_in()
    body = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "Anoniem" in body and "Anna" not in body and "anna" not in body
    assert (await stack.act(reference, "message", text="Gaat het een beetje?")).status == 303
    await stack.deliver()
    assert any("Gaat het een beetje?" in text for text in stack.chat.texts_to("anna"))


# -- actions ----------------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_every_action_is_recorded_once_posted_to_the_thread_and_told_to_the_reporter(stack, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    reference = await stack.report()
    await stack.log_in()
    told = len(stack.chat.texts_to("anna"))

    assert (await stack.act(reference, "take")).status == 303
    await stack.deliver()
    assert "Coco" in stack.chat.texts_to("anna")[told] and reference in stack.chat.texts_to("anna")[told]
    assert any("opgepakt door Coco" in line for line in stack.thread_of(reference))

    assert (await stack.act(reference, "message", text="Ik bel je om drie uur.")).status == 303
    await stack.deliver()
    assert "Ik bel je om drie uur." in stack.chat.texts_to("anna")[-1]
    # The reporter's answer comes back into the timeline and the thread.
    await stack.say("anna", "Prima, dank je wel")
    await stack.deliver()
    assert any("Prima, dank je wel" in line for line in stack.thread_of(reference))

    for step in STEPS:
        fields = {"step": step, "date": "2026-11-23"}
        assert (await stack.act(reference, "step", **fields)).status == 303, step
    await stack.deliver()
    texts = stack.chat.texts_to("anna")
    assert any("aangifte gedaan" in text and "23 november 2026" in text for text in texts)
    assert any("twee weken" in text for text in texts)  # aftercare declined: offered again later

    assert (await stack.act(reference, "note", text="Beveiliging gevraagd om camerabeelden")).status == 303
    await stack.deliver()
    assert not any("camerabeelden" in text for text in stack.chat.texts_to("anna"))
    assert not any("camerabeelden" in line for line in stack.thread_of(reference))

    refused = await stack.act(reference, "status", status="closed", summary="  ")
    assert refused.status == 409 and "samenvatting" in await refused.text()
    assert (await case_of(stack, reference)).status == "in_progress"
    closed = await stack.act(reference, "status", status="closed",
                             summary="Aangifte gedaan, de man heeft een brief gekregen.", measures="aggressor_response")
    assert closed.status == 303
    await stack.deliver()
    assert "de man heeft een brief gekregen" in stack.chat.texts_to("anna")[-1]

    kinds = [e.kind for e in await events(stack, reference)]
    assert kinds.count("claimed") == 1 and kinds.count("coordinator_message") == 1
    assert kinds.count("step") == len(STEPS) and kinds.count("note") == 1 and kinds.count("status") == 1
    assert kinds.count("reporter_message") == 1
    case = await case_of(stack, reference)
    assert case.status == "closed" and case.closed_at is not None and set(case.followup) == set(STEPS)
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "Beveiliging gevraagd om camerabeelden" in page and "Prima, dank je wel" in page
    # The audit log names who did what, never the content.
    async with stack.meldbot.sessions() as session:
        audit = list(await session.scalars(select(AuditEntry)))
    assert {"take", "message", "step", "note", "status", "view_case"} <= {a.action for a in audit}
    assert all("camerabeelden" not in str(a.detail) and "drie uur" not in str(a.detail) for a in audit)
    # Nor do the logs: not the story, the note, the messages or the closing summary.
    for secret in ("dreigde me te slaan", "camerabeelden", "drie uur", "dank je wel", "een brief gekregen"):
        assert secret not in caplog.text, secret


async def test_claim_in_the_thread_and_take_on_the_page_are_the_same_operation(stack):
    from bot.adapters.contract import CoordinatorMessage

    reference = await stack.report()
    root = next(iter(stack.chat.threads))
    answers = await stack.meldbot.engine.handle_coordinator(CoordinatorMessage(
        platform="chat", destination="coordinators", thread_root=root, sender="bert", text="oppakken",
        event_id="thread-1", is_coordinator=True, sender_name="Bert"))
    assert "Bert" in answers[0].plain()
    await stack.deliver()
    assert any("Bert" in text for text in stack.chat.texts_to("anna"))
    # The thread already has the answer to the command: no second line about it.
    assert not any("Bert" in line for line in stack.thread_of(reference))
    await stack.log_in()
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "opgepakt door Bert" in page and "Overnemen van Bert" in page
    # Someone else changed the case between loading and submitting: no silent overwrite.
    token = await stack.csrf(f"/cases/{reference}")
    stale = await stack.client.post(f"/cases/{reference}", data={"csrf": token, "action": "take", "expected": ""},
                                    allow_redirects=False)
    assert stale.status == 409 and "Bert" in await stale.text()
    taken = await stack.act(reference, "take", expected="chat:bert")
    assert taken.status == 303
    await stack.deliver()
    assert any("opgepakt door Coco" in line for line in stack.thread_of(reference))
    kinds = [e.kind for e in await events(stack, reference)]
    assert kinds.count("claimed") == 2
    assert (await case_of(stack, reference)).assigned_to_id == "chat:coco"


async def test_forms_without_the_csrf_token_change_nothing(stack):
    reference = await stack.report()
    await stack.log_in()
    for data in ({"action": "take"}, {"action": "take", "csrf": "wrong"}):
        response = await stack.client.post(f"/cases/{reference}", data=data, allow_redirects=False)
        assert response.status == 403
    assert (await case_of(stack, reference)).assigned_to_id is None
    response = await stack.client.post("/logout", data={})
    assert response.status == 403
    assert (await stack.client.get("/cases")).status == 200


async def test_actions_without_a_session_change_nothing(stack):
    reference = await stack.report()
    response = await stack.client.post(f"/cases/{reference}", data={"action": "take", "csrf": "x"},
                                       allow_redirects=False)
    assert response.status == 401
    assert (await case_of(stack, reference)).assigned_to_id is None
    assert (await stack.client.get(f"/cases/{reference}/attachments/1")).status == 401


async def test_bad_form_input_gets_a_clear_answer(stack):
    reference = await stack.report()
    await stack.log_in()
    for fields, phrase in (
        ({"action": "step", "step": "teleport"}, "stap uit de lijst"),
        ({"action": "step", "step": "contact_made", "date": "2026-12-01"}, "toekomst"),
        ({"action": "status", "status": "archived"}, "geldige status"),
        ({"action": "note", "text": " \u200b "}, "leeg"),
        ({"action": "message", "text": ""}, "leeg"),
        ({"action": "explode"}, "Onbekende actie"),
    ):
        action = fields.pop("action")
        response = await stack.act(reference, action, **fields)
        assert response.status == 409, fields
        assert phrase in await response.text(), fields
    assert [e.kind for e in await events(stack, reference)] == ["submitted"]


async def test_evidence_is_served_safely(stack):
    from bot.adapters.contract import InboundAttachment

    await stack.say("anna", STORY)
    await stack.say("anna", "1 2")
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    html = b"<html><script>alert(1)</script></html>"
    await stack.say("anna", "", attachments=(InboundAttachment("foto.png", "image/png", png),
                                             InboundAttachment("page.html", "text/html", html)))
    said = await stack.say("anna", "verzenden")
    reference = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", said).group(0)
    await stack.log_in()
    body = await (await stack.client.get(f"/cases/{reference}")).text()
    ids = re.findall(rf"/cases/{reference}/attachments/(\d+)", body)
    assert len(set(ids)) == 2
    # The page shows a re-encoded copy (this "PNG" cannot be decoded: an image saying so), never the file.
    shown = await stack.client.get(f"/cases/{reference}/attachments/{ids[0]}/preview")
    assert shown.status == 200 and shown.content_type == "image/svg+xml" and png not in await shown.read()
    assert "sandbox" in shown.headers["Content-Security-Policy"]
    image = await stack.client.get(f"/cases/{reference}/attachments/{ids[0]}")
    assert image.status == 200 and await image.read() == png and image.content_type == "application/octet-stream"
    other = await stack.client.get(f"/cases/{reference}/attachments/{sorted(set(ids))[-1]}")
    assert other.headers["Content-Disposition"].startswith("attachment")
    assert other.content_type == "application/octet-stream"
    assert "sandbox" in other.headers["Content-Security-Policy"]
    assert (await stack.client.get(f"/cases/{reference}/attachments/999")).status == 404


# -- timers -----------------------------------------------------------------------------------------------


async def test_an_untaken_urgent_case_is_reminded_then_escalated_to_the_backup(stack):
    await stack.say("bert", "hallo")  # the backup person has talked to the bot before
    reference = await stack.report()  # a threat: urgent
    assert await stack.tick(minutes=29) == 0
    await stack.tick(minutes=2)
    assert any("nog door niemand opgepakt" in line for line in stack.thread_of(reference))
    assert not any(reference in text for text in stack.chat.texts_to("bert"))
    await stack.tick(minutes=31)
    assert any(reference in text and "http://meldbot.test/cases/" in text for text in stack.chat.texts_to("bert"))
    assert any("achtervang" in line for line in stack.thread_of(reference))
    # Nothing fires twice.
    assert await stack.tick(days=1) == 0
    kinds = [e.kind for e in await events(stack, reference)]
    assert kinds.count("claim_reminder") == 1 and kinds.count("escalated") == 1


async def test_a_taken_case_gets_no_reminder(stack):
    reference = await stack.report()
    await stack.log_in()
    await stack.act(reference, "take")
    await stack.deliver()
    before = list(stack.thread_of(reference))
    await stack.tick(hours=2)
    assert stack.thread_of(reference) == before


async def test_a_non_urgent_case_waits_four_working_hours(database_url):
    stack = await Stack.start(database_url)
    try:
        stack.clock.now = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)  # Friday 16:00 in NL
        reference = await stack.report("anna", "Een klant schold me uit aan de balie", "1 2", "verzenden")
        await stack.tick(hours=20)  # Saturday noon: not yet
        assert not any("niemand" in line for line in stack.thread_of(reference))
        stack.clock.now = dt.datetime(2026, 11, 30, 10, 59, tzinfo=dt.timezone.utc)  # Monday 11:59
        await stack.tick()
        assert not any("niemand" in line for line in stack.thread_of(reference))
        await stack.tick(minutes=1, seconds=1)  # Monday 12:00: 1 hour on Friday + 3 on Monday
        assert any("niemand" in line for line in stack.thread_of(reference))
    finally:
        await stack.close()


async def test_timers_survive_a_restart(database_url):
    first = await Stack.start(database_url)
    reference = await first.report()
    await first.close()
    second = await Stack.start(database_url)
    try:
        second.clock.now = first.clock.now
        await second.say("x", "hallo")
        await second.tick(minutes=31)
        # The new process has its own (recording) platform: the thread post is queued for it.
        async with second.meldbot.sessions() as session:
            kinds = [e.kind for e in await repo.list_case_events(
                session=session, case=await repo.get_case(session=session, reference=reference))]
        assert "claim_reminder" in kinds
    finally:
        await second.close()


async def test_aftercare_check_in_after_72_hours_and_again_after_14_days_when_declined(stack):
    wanted = await stack.report()  # aftercare ticked by default
    declined = await stack.report("bob", "Iemand bedreigde me telefonisch", "geen contact, geen nazorg", "verzenden")
    await stack.tick(hours=71)
    assert not any("Hoe gaat het" in t for t in stack.chat.texts_to("anna"))
    await stack.tick(hours=1, minutes=1)
    assert any("Hoe gaat het" in t and wanted in t for t in stack.chat.texts_to("anna"))
    assert not any("Hoe gaat het" in t for t in stack.chat.texts_to("bob"))
    # The reporter's answer lands in the case.
    await stack.say("anna", "Het gaat wel, maar ik slaap slecht")
    await stack.deliver()
    assert any("slaap slecht" in line for line in stack.thread_of(wanted))
    await stack.tick(days=11)
    assert any("Twee weken geleden" in t and declined in t for t in stack.chat.texts_to("bob"))
    assert [e.kind for e in await events(stack, declined)].count("aftercare_reoffer") == 1


async def test_an_unfinished_report_is_reminded_once_then_expires(stack):
    await stack.say("anna", "Een man schold me uit")
    await stack.tick(minutes=59)
    assert stack.chat.texts_to("anna") == []
    await stack.tick(minutes=2)
    (reminder,) = stack.chat.texts_to("anna")
    assert "nog niet verstuurd" in reminder and "annuleer" in reminder
    await stack.tick(hours=5)
    assert len(stack.chat.texts_to("anna")) == 1  # one reminder only
    await stack.tick(days=7)
    assert "verwijderd" in stack.chat.texts_to("anna")[-1]
    answer = await stack.say("anna", "verzenden")
    assert "MB-" not in answer  # nothing left to send
    async with stack.meldbot.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)
                                    .where(OutboxMessage.delivered_at.is_(None))) == 0


async def test_login_from_the_coordinator_room_goes_to_the_direct_chat(stack):
    from bot.adapters.contract import CoordinatorMessage

    def in_room(sender: str, event: str) -> CoordinatorMessage:
        return CoordinatorMessage(platform="chat", destination="coordinators", thread_root="", sender=sender,
                                  text="login", event_id=event, is_coordinator=True, sender_name="Coco",
                                  address={"user": sender})

    # No direct chat yet: the bot opens one itself, and the link goes only there.
    answers = await stack.meldbot.engine.handle_coordinator(in_room("coco", "room-1"))
    assert "privé" in answers[0].plain() and not LINK_RE.search(answers[0].plain())
    assert stack.chat.opened == ["coco"]
    await stack.deliver()
    assert LINK_RE.search(stack.chat.texts_to("coco")[-1])
    # With a direct chat, that chat is used (no new one is opened).
    await stack.say("coco", "hallo")
    answers = await stack.meldbot.engine.handle_coordinator(in_room("coco", "room-2"))
    assert not LINK_RE.search(answers[0].plain()) and stack.chat.opened == ["coco"]
    await stack.deliver()
    assert len([t for t in stack.chat.texts_to("coco") if LINK_RE.search(t)]) == 2
    async with stack.meldbot.sessions() as session:
        delivered = list(await session.scalars(select(OutboxMessage).where(OutboxMessage.delivered_at.is_not(None))))
    assert all("login/" not in str(m.payload) for m in delivered)  # the secret is not kept


async def test_login_from_the_room_when_no_direct_chat_can_be_opened_sends_no_link(stack):
    from bot.adapters.contract import CoordinatorMessage

    stack.chat.down = True  # the platform refuses to open a chat
    answers = await stack.meldbot.engine.handle_coordinator(CoordinatorMessage(
        platform="chat", destination="coordinators", thread_root="", sender="coco", text="login",
        event_id="room-1", is_coordinator=True, sender_name="Coco", address={"user": "coco"}))
    assert "kon geen privégesprek" in answers[0].plain() and not LINK_RE.search(answers[0].plain())
    stack.chat.down = False
    await stack.deliver()
    assert stack.chat.texts_to("coco") == [] and stack.chat.opened == []
    async with stack.meldbot.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LoginLink)) == 0


async def test_housekeeping_forgets_old_event_ids_and_expired_logins_only(stack):
    from storage.models import HandledEvent

    await stack.report()
    await stack.log_in()
    await stack.login_link()  # an unused link
    stack.clock.advance(hours=20)  # the session (12 h) and the links (10 min) expired less than a day ago
    assert await stack.meldbot.timers.housekeeping() == 0
    stack.clock.advance(hours=20)
    assert await stack.meldbot.timers.housekeeping() == 3  # the spent link, the unused one, the session
    async with stack.meldbot.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebSession)) == 0
        assert await session.scalar(select(func.count()).select_from(HandledEvent)) > 0
    stack.clock.advance(days=29)
    assert await stack.meldbot.timers.housekeeping() > 1
    async with stack.meldbot.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(HandledEvent)) == 0
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) > 0  # the audit log stays


async def test_escalation_to_a_backup_room_posts_a_pointer_to_the_case_there(database_url):
    stack = await Stack.start(database_url, followup={"backup": "chat:#achtervang"})
    try:
        reference = await stack.report()
        await stack.tick(minutes=31)
        await stack.tick(minutes=31)
        rooms = [(destination, n) for destination, n in stack.chat.room if n.reference == reference]
        assert [d for d, _ in rooms] == ["coordinators", "#achtervang"]
        escalation = rooms[1][1]
        assert escalation.title.startswith("ESCALATIE") and escalation.link.endswith(f"/cases/{reference}")
        assert STORY not in escalation.plain() and "Anna" not in escalation.plain()
    finally:
        await stack.close()


def test_a_matrix_backup_must_be_a_room_id_or_a_person():
    from pydantic import ValidationError

    from bot.config import FollowupSettings

    assert FollowupSettings(backup="matrix:!abc:gemeente.nl").backup == "matrix:!abc:gemeente.nl"
    assert FollowupSettings(backup="matrix:@piet:gemeente.nl").backup
    for wrong in ("matrix:#alias:gemeente.nl", "piet", "matrix:"):
        with pytest.raises(ValidationError):
            FollowupSettings(backup=wrong)


# -- found in review: concurrency, secrets, edge input ---------------------------------------------------


@pytest.mark.both_databases
async def test_two_coordinators_changing_a_case_at_once_lose_nothing(database_url):
    import asyncio

    stack = await Stack.start(database_url, coordinators=("coco", "dora"))
    try:
        reference = await stack.report()
        other = await stack.another_browser()
        await stack.log_in("coco")
        await stack.log_in("dora", client=other)
        for _ in range(3):
            first, second = await asyncio.gather(
                stack.act(reference, "step", step="contact_made"),
                stack.act(reference, "step", client=other, step="police_report_filed"))
            assert first.status == second.status == 303
        assert set((await case_of(stack, reference)).followup) == {"contact_made", "police_report_filed"}
        # Closing and taking at once: either order is fine, but a closed case is never reopened by a take.
        claims_before = [e.kind for e in await events(stack, reference)].count("claimed")
        closing, taking = await asyncio.gather(
            stack.act(reference, "status", status="closed", summary="Afgehandeld.", measures="none"),
            stack.act(reference, "take", client=other))
        case = await case_of(stack, reference)
        assert closing.status == 303 and case.status == "closed" and case.closed_at is not None
        # Which one won is the timeline's order; the take's answer must agree with it.
        kinds = [e.kind for e in await events(stack, reference)]
        closed_at = len(kinds) - 1 - kinds[::-1].index("status")
        taken_before_closing = "claimed" in kinds[:closed_at] and kinds.count("claimed") > claims_before
        if taken_before_closing:
            assert taking.status == 303
        else:
            assert taking.status == 409 and "afgesloten" in await taking.text()
            assert kinds.count("claimed") == claims_before  # the refused take left no trace
    finally:
        await stack.close()


async def test_a_login_link_that_had_to_wait_in_the_outbox_is_not_kept(stack):
    from bot.core.login import login_reply

    stack.chat.down = True
    await stack.meldbot.engine.defer_replies("chat", {"user": "coco"}, [
        login_reply("nl", "http://meldbot.test/login/secret-token-123", 10)])
    await stack.deliver()
    stack.chat.down = False
    stack.clock.advance(minutes=5)
    await stack.deliver()
    assert "secret-token-123" in stack.chat.texts_to("coco")[0]
    async with stack.meldbot.sessions() as session:
        (message,) = list(await session.scalars(select(OutboxMessage)))
    assert message.delivered_at is not None and "secret-token-123" not in str(message.payload)


async def test_odd_form_values_get_an_answer_not_a_crash(stack):
    first = await stack.report()
    second = await stack.report("bob", "Iemand bedreigde me telefonisch", "geen contact, geen nazorg", "verzenden")
    await stack.log_in()
    response = await stack.client.post(f"/cases/{first}", data={"csrf": "é€", "action": "take"},
                                       allow_redirects=False)
    assert response.status == 403
    for query in ("until=9999-12-31", "since=0001-01-01", "since=2026-02-30", "until=%00"):
        assert (await stack.client.get(f"/cases?{query}")).status == 200, query
    step = await stack.act(first, "step", step="contact_made", date="0001-01-01")
    assert step.status == 303  # an impossible date falls back to today
    # An attachment of one case cannot be fetched under another case's reference.
    from bot.adapters.contract import InboundAttachment

    await stack.say("anna", "", attachments=(InboundAttachment("foto.png", "image/png", b"\x89PNG-data"),))
    await stack.deliver()
    body = await (await stack.client.get(f"/cases/{first}")).text()
    (attachment_id,) = set(re.findall(rf"/cases/{first}/attachments/(\d+)", body))
    assert (await stack.client.get(f"/cases/{first}/attachments/{attachment_id}")).status == 200
    assert (await stack.client.get(f"/cases/{second}/attachments/{attachment_id}")).status == 404


async def test_a_second_decline_moves_the_aftercare_offer_two_weeks_after_it(stack):
    reference = await stack.report()
    await stack.log_in()
    await stack.act(reference, "step", step="aftercare_declined")
    await stack.tick(days=10)
    await stack.log_in()
    await stack.act(reference, "step", step="aftercare_declined")
    await stack.tick(days=5)  # 15 days after the first decline, 5 after the second: not yet
    assert [e.kind for e in await events(stack, reference)].count("aftercare_reoffer") == 0
    await stack.tick(days=10)
    assert [e.kind for e in await events(stack, reference)].count("aftercare_reoffer") == 1


async def test_the_session_ends_soon_after_someone_stops_being_a_coordinator(stack):
    reference = await stack.report()
    await stack.log_in()
    stack.chat.coordinators.discard("coco")
    assert (await stack.client.get(f"/cases/{reference}")).status == 200  # checked at login, minutes ago
    stack.clock.advance(minutes=6)
    assert (await stack.client.get(f"/cases/{reference}")).status == 401
    async with stack.meldbot.sessions() as session:
        assert "no_longer_coordinator" in [a.action for a in await repo.list_audit(session=session)]


async def test_https_sessions_are_secure_and_other_sites_cannot_post_a_login(database_url):
    stack = await Stack.start(database_url, web={"public_url": "https://meldbot.test"})
    try:
        link = await stack.login_link()
        token = link.rsplit("/", 1)[1]
        forged = await stack.client.post("/login", data={"token": token}, headers={"Sec-Fetch-Site": "cross-site"},
                                         allow_redirects=False)
        assert forged.status == 403 and "meldbot_session" not in forged.headers.get("Set-Cookie", "")
        response = await stack.client.post("/login", data={"token": token}, allow_redirects=False,
                                           headers={"Sec-Fetch-Site": "same-origin"})
        # `__Host-`: Secure, for this host only (no Domain) and path /, so no subdomain can set it.
        cookie = next(c for c in response.headers.getall("Set-Cookie") if c.startswith("__Host-meldbot_session="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Path=/" in cookie and "Domain" not in cookie
        assert not any(c.startswith("meldbot_") for c in response.headers.getall("Set-Cookie"))
    finally:
        await stack.close()


async def test_a_database_outage_on_the_login_page_logs_no_token(stack, monkeypatch, caplog):
    from sqlalchemy.exc import OperationalError

    link = await stack.login_link()
    token = link.rsplit("/", 1)[1]

    async def down(**kwargs):
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(repo, "get_login_link", down)
    page = await stack.client.get(f"/login/{token}")
    assert page.status == 503 and "database" in await page.text()
    assert "database unavailable" in caplog.text and token not in caplog.text


async def test_after_the_coordinator_room_moved_case_events_follow_it(stack):
    first = await stack.report()
    (old_room, _), = [(d, n) for d, n in stack.chat.room if n.reference == first]
    old_root = next(iter(stack.chat.threads))
    # A report whose notification is still queued when the room moves, and the move itself.
    stack.chat.down = True
    await stack.say("bert", "Een man schold me net uit aan de balie en dreigde me te slaan")
    await stack.say("bert", "1 2")
    queued = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", await stack.say("bert", "verzenden")).group(0)
    await stack.deliver()
    stack.chat.down = False
    stack.chat.destination = "new-room"
    stack.clock.advance(seconds=5)  # past the retry's backoff
    await stack.deliver()
    assert [(d, n.reference) for d, n in stack.chat.room] == [("coordinators", first), ("new-room", queued)]
    # A later event of the older case: the case is posted again in the new room, the line goes there.
    await stack.log_in()
    assert (await stack.act(first, "take")).status == 303
    await stack.deliver()
    assert [(d, n.reference) for d, n in stack.chat.room][-1] == ("new-room", first)
    new_root = list(stack.chat.threads)[-1]
    assert any("Coco" in line for line in stack.chat.threads[new_root])
    assert stack.chat.threads[old_root] == []
    assert (await stack.act(first, "note", text="gebeld")).status == 303
    await stack.deliver()
    assert len(stack.chat.room) == 3 and len(stack.chat.threads[new_root]) == 2  # no second re-post
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=first)
        threads = await repo.list_case_threads(session=session, case_id=case.id)
    assert [(t.destination, t.root_id) for t in threads] == [("new-room", new_root)]
    assert old_room == "coordinators"

"""Meldbot on Teams: the real aiohttp route and CloudAdapter, real JWT validation against keys served
on loopback, and a fake Bot Connector that speaks the REST protocol and records what the bot sends."""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest
from sqlalchemy import select

from bot.core.casework import login_digest
from bot.web.pages import SESSION_COOKIE
from bot.config import ConfigError, TeamsSettings
from bot.adapters.teams.adapter import TeamsAdapter
from storage import repo
from storage.models import Attachment, Case, ClaimCode, HandledEvent, LoginLink
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import (APP_ID, CHANNEL, CONNECTOR_TOKEN, STORY, TEAM, activity, json_body,
                           reference_in, shown)


async def test_full_text_report_in_personal_chat(world):
    await world.start()
    await world.set_channel()
    said = await world.say(STORY)
    # The story names kind and place: the summary follows at once, with the wishes to tick.
    assert any("Kijk even of dit klopt" in s and "Wat heb je nodig?" in s and "1. ☑ Contact met de coördinator" in s
               for s in said)
    reference = reference_in(await world.say("verzenden"))
    await world.app.worker.drain(timeout=10)
    posts = [r for r in world.connector.requests if r["kind"] == "create"]
    assert len(posts) == 1
    post = posts[0]["activity"]
    assert post["channelData"]["channel"]["id"] == CHANNEL if "channelData" in post else True
    card = post["attachments"][0]["content"]
    assert card["actions"][0] == {"type": "Action.OpenUrl", "title": "Openen",
                                  "url": f"https://meldbot.example.nl/cases/{reference}"}
    assert reference in post["text"] and "oplichter" not in str(post) and "Anna" not in str(post)
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        assert case.story == STORY


async def test_a_story_typed_before_melden_fills_the_card_and_the_card_replaces_the_draft(world):
    await world.start()
    story = "Een bezoeker schold me uit aan de balie en spuugde naar me"
    await world.say(story)
    await world.say("melden")
    cards = [r for r in world.connector.requests if r["activity"].get("attachments")]
    card = cards[-1]["activity"]["attachments"][0]["content"]
    fields = {element.get("id"): element for element in card["body"]}
    assert fields["story"]["value"] == story
    assert fields["kinds"]["value"] == "verbal,physical" and fields["place"]["value"] == "counter"
    # One submit files the report and ends the typed draft: "verzenden" afterwards sends nothing twice.
    data = dict(card["actions"][0]["data"], story=story, kinds="verbal,physical", place="counter", wishes="contact")
    reference = reference_in(await world.say(None, value=data))
    after = " ".join(await world.say("verzenden"))
    assert not re.search(r"MB-[0-9A-Z]{3}-[0-9A-Z]{3}", after), after
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        cases = await repo.list_cases(session=session)
    assert case.kind_codes == ["verbal", "physical"] and case.place == "counter" and len(cases) == 1


async def test_report_card_with_execute_and_with_submit_fallback(world):
    await world.start()
    said = await world.say("melden")
    cards = [r for r in world.connector.requests if r["activity"].get("attachments")]
    card = cards[-1]["activity"]["attachments"][0]["content"]
    action = card["actions"][0]
    assert action["type"] == "Action.Execute" and action["fallback"]["type"] == "Action.Submit"
    assert any("Wat is er gebeurd?" in s for s in said)
    data = dict(action["data"], story="Hij bedreigde me aan de telefoon", kinds="threat", when="gisteren 14:30",
                place="phone", wishes="contact,police_report")
    # Action.Execute: an invoke whose answer (a replacement card) is in the HTTP body.
    invoke = activity(world.connector.url, None, activity_type="invoke", name="adaptiveCard/action",
                      value={"action": {"type": "Action.Execute", "verb": "submitReport", "data": data},
                             "trigger": "manual"})
    async with world.http.post(f"http://127.0.0.1:{world.port}/api/messages", data=json_body(invoke),
                               headers={"Content-Type": "application/json", "Authorization":
                                        f"Bearer {world.keys.token(world.connector.url)}"}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["statusCode"] == 200 and body["type"] == "application/vnd.microsoft.card.adaptive"
    reference = reference_in([body["value"]["body"][0]["text"]])
    # Action.Submit: a message with the values and no text; a new form, a second report.
    submit_data = dict(data, form_id="second-form", story="Een man duwde me op straat", kinds="physical",
                       place="street", wishes="")
    said = await world.say(None, value=submit_data)
    second = reference_in(said)
    assert second != reference
    async with world.app.sessions() as session:
        first = await repo.get_case(session=session, reference=reference)
        other = await repo.get_case(session=session, reference=second)
    assert first.kind_codes == ["threat"] and first.place == "phone" and first.police_report_wanted
    assert first.occurred_at.astimezone().hour in (13, 14)  # 14:30 Amsterdam time
    assert other.kind_codes == ["physical"] and other.contact_wanted is False


async def test_a_card_submitted_twice_files_one_report(world):
    await world.start()
    data = {"meldbot": "report", "form_id": "form-1", "story": "Ik werd uitgescholden", "kinds": "verbal"}
    await asyncio.gather(world.say(None, value=data), world.say(None, value=data))
    texts = world.connector.texts("a:personal-anna")
    assert sum("opgeslagen onder nummer" in t for t in texts) == 1
    assert sum("al verstuurd" in t for t in texts) == 1
    assert await world.count(Case) == 1


async def test_duplicate_activity_is_answered_once(world):
    await world.start()
    body = activity(world.connector.url, STORY, activity_id="same-activity")
    first = await world.post(body)
    before = len(world.connector.requests)
    again = await world.post(body)
    assert first.status in (200, 201) and again.status in (200, 201)
    assert len(world.connector.requests) == before  # no second answer
    assert await world.count(HandledEvent) == 1


async def test_coordinator_thread_claim_and_relayed_replies(world):
    await world.start()
    await world.set_channel()
    await world.say(STORY)
    reference = reference_in(await world.say("verzenden"))
    await world.app.worker.drain(timeout=10)
    root = next(r["conversation"] for r in world.connector.requests if r["kind"] == "create")
    thread = dict(conversation=root, conversation_type="channel", channel=CHANNEL, team=TEAM, user="coco")
    world.connector.team_members[TEAM] = {"aad-coco"}  # the coordinator channel's (standard) team

    said = await world.say("<at>Meldbot</at> oppakken", **thread)
    assert any(f"{reference} is opgepakt door Coco" in s for s in said)
    said = await world.say("<at>Meldbot</at> antwoord Ik bel je om drie uur.", **thread)
    assert any("Doorgestuurd naar de melder" in s for s in said)
    await world.app.worker.drain(timeout=10)
    personal = world.connector.texts("a:personal-anna")
    assert any("Coco heeft je melding" in t for t in personal)
    assert any("Ik bel je om drie uur." in t and "(coördinator)" in t for t in map(shown, personal))

    said = await world.say("Prima, tot straks.")
    assert any("Doorgestuurd naar de coördinator" in s for s in said)
    await world.app.worker.drain(timeout=10)
    assert any("de melder schrijft: Prima, tot straks." in t for t in world.connector.texts(root))
    # Someone in another team's channel cannot claim or relay.
    said = await world.say("<at>Meldbot</at> oppakken", conversation=root, conversation_type="channel",
                           channel=CHANNEL, team="19:other-team@thread.tacv2", user="mallory")
    assert any("Alleen leden" in s for s in said)


@pytest.mark.parametrize("forgery", ["wrong audience", "wrong issuer", "expired", "bad signature", "unknown key",
                                     "alg none", "other service url", "no token", "garbage"])
async def test_forged_tokens_are_refused_with_401_and_nothing_stored(world, forgery):
    await world.start()
    keys, url = world.keys, world.connector.url
    token = {
        "wrong audience": lambda: keys.token(url, audience="someone-else"),
        "wrong issuer": lambda: keys.token(url, issuer="https://evil.example"),
        "expired": lambda: keys.token(url, expires_in=-3600),
        "bad signature": lambda: keys.token(url, key=keys.other_key),
        "unknown key": lambda: keys.token(url, kid="unknown-kid"),
        "alg none": lambda: keys.token(url, algorithm="none"),
        "other service url": lambda: keys.token("https://smba.evil.example/"),
        "no token": lambda: "",
        "garbage": lambda: "not.a.jwt",
    }[forgery]()
    response = await world.post(activity(url, STORY), token=token)
    assert response.status == 401
    assert await world.count(HandledEvent) == 0 and await world.count(Case) == 0
    assert world.connector.requests == []


async def test_other_tenant_is_refused(world):
    await world.start()
    response = await world.post(activity(world.connector.url, STORY, tenant="another-tenant"))
    assert response.status == 401
    assert await world.count(HandledEvent) == 0 and world.connector.requests == []


async def test_oversized_and_malformed_requests(world):
    await world.start()
    response = await world.post({}, raw=b'{"type": "message", "text": "' + b"x" * (1024 * 1024 + 10) + b'"}')
    assert response.status == 413
    response = await world.post({}, raw=b"{not json")
    assert response.status == 400
    response = await world.post({}, raw=b'["a list, not an activity"]')
    assert response.status == 400
    assert await world.count(HandledEvent) == 0


async def test_connector_throttling_and_outage_while_a_case_is_filed(world):
    await world.start()
    await world.set_channel()
    await world.say(STORY)
    world.connector.fail_next(3, status=429, retry_after=0.2)  # the confirmation and the channel post
    await world.say("verzenden")
    async with world.app.sessions() as session:
        (case,) = await repo.list_cases(session=session)
    assert await world.app.worker.drain(timeout=30)
    assert sum(f"opgeslagen onder nummer {case.reference}" in t
               for t in world.connector.texts("a:personal-anna")) == 1
    assert sum(1 for r in world.connector.requests if r["kind"] == "create") == 1
    # Down altogether: the next report is saved; its post is delivered once the connector is back.
    await world.say("Ik werd bedreigd aan de telefoon")
    await world.connector.stop()
    await world.say_while_down("verzenden")
    assert await world.count(Case) == 2
    await world.connector.start()
    assert await world.app.worker.drain(timeout=60)
    assert sum(1 for r in world.connector.requests if r["kind"] == "create") == 2
    confirmations = [t for t in world.connector.texts("a:personal-anna") if "opgeslagen onder nummer" in t]
    assert len(confirmations) == 2


async def test_attachments_in_personal_chat_are_stored(world):
    await world.start()
    world.connector.files["report.pdf"] = b"%PDF-1.7 screenshot export"
    world.connector.files["auth-inline.png"] = b"\x89PNG inline image"
    attachments = [
        {"contentType": "application/vnd.microsoft.teams.file.download.info", "name": "report.pdf",
         "content": {"downloadUrl": f"{world.connector.url}files/report.pdf", "fileType": "pdf"}},
        {"contentType": "image/png", "name": "inline.png", "contentUrl": f"{world.connector.url}files/auth-inline.png"},
    ]
    said = await world.say("", attachments=attachments)
    assert any("report.pdf" in s and "inline.png" in s for s in said)
    await world.say(STORY)
    reference = reference_in(await world.say("verzenden"))
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        stored = {a.filename: a for a in await repo.list_attachments(session=session, case_id=case.id)}
        sealed = await session.scalar(select(Attachment.content).where(Attachment.id == stored["inline.png"].id))
        assert b"PNG inline image" not in sealed  # encrypted at rest under the case's data key
        assert await repo.read_attachment(session=session, attachment=stored["inline.png"]) == b"\x89PNG inline image"
    assert stored["report.pdf"].sha256 == hashlib.sha256(b"%PDF-1.7 screenshot export").hexdigest()


async def test_installation_greets_once_and_keeps_the_reference(world):
    await world.start()
    body = activity(world.connector.url, None, activity_type="conversationUpdate")
    body["membersAdded"] = [{"id": f"28:{APP_ID}", "name": "Meldbot"}]
    response = await world.post(body)
    assert response.status in (200, 201)
    greetings = world.connector.texts("a:personal-anna")
    assert any("Meldbot" in t and "'help'" in t for t in greetings)
    assert any("Wat is er gebeurd?" in t for t in greetings)
    assert len(greetings) == 1  # the introduction with the story question, in one message, once
    response = await world.post(body)  # the same activity again: no second greeting
    assert len(world.connector.texts("a:personal-anna")) == 1


async def test_empty_app_id_refuses_to_start_unless_explicitly_allowed(world, caplog):
    with pytest.raises(ConfigError, match="app_id"):
        TeamsAdapter(settings=TeamsSettings(), store_dir=world.tmp, language="nl")
    adapter = TeamsAdapter(settings=TeamsSettings(allow_unauthenticated=True), store_dir=world.tmp, language="nl")
    await adapter.start(bot=None)
    await adapter.stop()
    assert "AUTHENTICATION IS OFF" in caplog.text


async def test_invoke_serialisation_defect_and_its_workaround(world):
    """4.17.1 answers every `adaptiveCard/action` invoke with 500; the workaround makes it 200."""
    from bot.adapters.teams import fixes

    await world.start()
    data = {"meldbot": "report", "form_id": "f-invoke", "story": "Ik werd uitgescholden aan de balie"}
    invoke = activity(world.connector.url, None, activity_type="invoke", name="adaptiveCard/action",
                      value={"action": {"type": "Action.Execute", "verb": "submitReport", "data": data}})
    fixes.revert()
    try:
        response = await world.post(invoke)
        assert response.status == 500  # the defect, reproduced
    finally:
        fixes.apply()
    invoke["id"] = "another-invoke"
    data["form_id"] = "f-invoke-2"
    response = await world.post(invoke)
    assert response.status == 200


def test_msrest_retry_list_workaround_keeps_the_same_retry_codes():
    """The CPU workaround changes how the list is built, never which codes are retried."""
    from msrest.universal_http.requests import ClientRetryPolicy

    from bot.adapters.teams import fixes

    fixes.revert()
    try:
        assert isinstance(ClientRetryPolicy.safe_codes, list)  # stock: a list scanned 999 times per policy
        stock = ClientRetryPolicy().policy.status_forcelist
    finally:
        fixes.apply()
    assert isinstance(ClientRetryPolicy.safe_codes, frozenset)
    assert ClientRetryPolicy().policy.status_forcelist == stock
    # msrest retries gateway errors itself; 429 is left to the outbox, which honours Retry-After.
    assert 502 in stock and 504 in stock and 429 not in stock and 200 not in stock


async def test_coordinator_channel_cannot_be_taken_over_without_a_code(world):
    await world.start()
    await world.set_channel()
    said = await world.say("<at>Meldbot</at> coordinatiekanaal", conversation="19:other@thread.tacv2",
                           conversation_type="channel", channel="19:other@thread.tacv2",
                           team="19:other-team@thread.tacv2", user="mallory")
    assert any("meldbot teams claim-code" in shown(s) for s in said)
    assert world.app.adapters["teams"].coordinator_destination() == CHANNEL


async def test_configured_channel_is_not_moved_and_tenant_is_required(world, keys):
    with pytest.raises(ConfigError, match="tenant_id"):
        TeamsAdapter(settings=TeamsSettings(app_id=APP_ID), store_dir=world.tmp, language="nl")
    await world.start(coordinator_channel=CHANNEL)
    code = await world.claim_code()
    said = await world.say(f"<at>Meldbot</at> coordinatiekanaal {code}", conversation="19:x@thread.tacv2",
                           conversation_type="channel", channel="19:x@thread.tacv2", team=TEAM)
    assert any("kan niet vanuit een bericht worden verplaatst" in s for s in said)
    assert world.app.adapters["teams"].coordinator_destination() == CHANNEL
    # Refused before the code was spent: it is still unused.
    async with world.app.sessions() as session:
        assert (await session.scalar(select(ClaimCode))).used_at is None


async def test_a_malformed_activity_with_a_forged_token_is_400_and_runs_nothing(world):
    await world.start()
    body = activity(world.connector.url, STORY)
    body["timestamp"] = "garbage"
    response = await world.post(body, token=world.keys.token(world.connector.url, key=world.keys.other_key))
    assert response.status in (400, 401)
    assert await world.count(HandledEvent) == 0 and world.connector.requests == []


async def test_large_files_are_read_whole_and_untrusted_hosts_are_not_fetched(world):
    await world.start()
    big = bytes(range(256)) * 20_000  # 5 MB
    world.connector.files["big.bin"] = big
    attachments = [
        {"contentType": "application/vnd.microsoft.teams.file.download.info", "name": "big.bin",
         "content": {"downloadUrl": f"{world.connector.url}files/big.bin"}},
        {"contentType": "application/vnd.microsoft.teams.file.download.info", "name": "evil.bin",
         "content": {"downloadUrl": "http://127.0.0.2:9/steal"}},  # another host (loopback only)
        {"contentType": "image/png", "name": "tracker.png", "contentUrl": "https://127.0.0.3:9/pixel.png"},
    ]
    said = await world.say("", attachments=attachments)
    assert any("big.bin" in s for s in said) and not any("evil.bin" in s or "tracker" in s for s in said)
    await world.say(STORY)
    reference = reference_in(await world.say("verzenden"))
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        (stored,) = await repo.list_attachments(session=session, case_id=case.id)
    assert stored.size == len(big) and stored.sha256 == hashlib.sha256(big).hexdigest()


async def test_a_report_before_the_channel_is_set_is_posted_once_it_is(world):
    await world.start()
    await world.say(STORY)
    reference = reference_in(await world.say("verzenden"))
    assert not await world.app.worker.drain(timeout=0.5)  # waits: no channel known yet
    assert not any(r["kind"] == "create" for r in world.connector.requests)
    await world.set_channel()
    assert await world.app.worker.drain(timeout=30)
    posts = [r for r in world.connector.requests if r["kind"] == "create"]
    assert len(posts) == 1 and reference in posts[0]["activity"]["text"]


# -- login through the personal chat: only members of the coordinator channel's team get a link -----------

LINK_RE = re.compile(r"https://meldbot\.example\.nl/login/([A-Za-z0-9_-]+)")


async def login_links(world) -> list:
    async with world.app.sessions() as session:
        return list((await session.scalars(select(LoginLink))).all())


def member_lookups(world) -> list[dict]:
    return [r for r in world.connector.requests if r["kind"] == "member"]


async def test_a_member_of_the_coordinator_team_gets_a_working_login_link(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-bob"}
    said = await world.say("login", user="bob")
    assert len(said) == 1, said
    (token,) = LINK_RE.findall(said[0])
    # Teams was asked about this user in the coordinator channel's team, with the connector's token.
    (lookup,) = member_lookups(world)
    assert lookup["conversation"] == TEAM and lookup["member"] == "aad-bob"
    assert lookup["authorization"] == f"Bearer {CONNECTOR_TOKEN}" and world.connector.unauthorised == 0
    (link,) = await login_links(world)
    assert link.token_digest == login_digest(token) and link.coordinator == "teams:aad-bob" and link.used_at is None
    assert token not in link.token_digest  # only the digest is stored
    # The link works once on the case pages.
    login = f"http://127.0.0.1:{world.port}/login"
    async with world.http.post(login, data={"token": token}, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/cases"
        # (`__Host-` prefixed with the https public URL)
        assert any(name.endswith(SESSION_COOKIE) and cookie.value for name, cookie in response.cookies.items())
    async with world.http.post(login, data={"token": token}, allow_redirects=False) as response:
        assert response.status == 410
    assert (await login_links(world))[0].used_at is not None


async def test_login_in_english_and_dutch_words_both_work_for_a_member(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-bob"}
    said = await world.say("inloggen", user="bob")
    assert len(said) == 1 and len(LINK_RE.findall(said[0])) == 1
    assert len(await login_links(world)) == 1


async def test_someone_outside_the_coordinator_team_gets_no_login_link(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-bob"}
    world.connector.team_members["19:other-team@thread.tacv2"] = {"aad-mallory"}  # a member elsewhere
    said = await world.say("login", user="mallory")
    assert len(said) == 1 and "/login/" not in said[0]
    assert "alleen voor coördinatoren" in said[0]
    (lookup,) = member_lookups(world)  # Teams was asked (and said 404)
    assert lookup["conversation"] == TEAM and lookup["member"] == "aad-mallory"
    assert lookup["authorization"] == f"Bearer {CONNECTOR_TOKEN}"
    assert await login_links(world) == []


async def test_no_login_link_before_a_coordinator_channel_is_known(world):
    await world.start()
    world.connector.team_members[TEAM] = {"aad-bob"}
    said = await world.say("login", user="bob")
    assert len(said) == 1 and "/login/" not in said[0]
    assert "alleen voor coördinatoren" in said[0]
    assert member_lookups(world) == []  # nothing to ask about: no team known
    assert await login_links(world) == []


async def test_a_single_500_on_the_member_lookup_is_retried_by_the_sdk(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-bob"}
    world.connector.fail_next(1, status=500, retry_after=None)
    said = await world.say("login", user="bob")
    # msrest retries a 5xx GET itself (up to 3 times): the second attempt finds the member.
    assert not world.connector.failures
    assert len(said) == 1 and len(LINK_RE.findall(said[0])) == 1
    assert len(await login_links(world)) == 1


async def test_a_failing_member_lookup_gives_no_link_and_an_answer(world, caplog):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-bob"}
    # 500 on the first try and on all 3 retries of the lookup; the answer itself then goes through.
    world.connector.fail_next(4, status=500, retry_after=None)
    said = await world.say("login", user="bob")
    assert not world.connector.failures  # all four were spent on the lookup
    assert len(said) == 1 and "/login/" not in said[0] and "niet nagaan" in said[0]
    assert member_lookups(world) == []  # no lookup was answered (failed ones are not recorded)
    assert await login_links(world) == []
    assert "coordinator check failed on teams" in caplog.text
    # Later, with Teams answering again, the same person does get a link.
    said = await world.say("login", user="bob")
    assert len(said) == 1 and len(LINK_RE.findall(said[0])) == 1


async def test_an_unreachable_connector_during_the_member_lookup_gives_no_link(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-bob"}
    await world.connector.stop()
    response = await world.post(activity(world.connector.url, "login", user="bob"))
    assert response.status in (200, 201)  # no crash: the turn is answered
    assert await login_links(world) == []
    await world.connector.start()
    assert await world.app.worker.drain(timeout=30)  # the answer was queued while Teams was down
    texts = world.connector.texts("a:personal-bob")
    assert len(texts) == 1 and "/login/" not in texts[0] and texts[0].strip()


async def test_with_a_configured_channel_the_team_is_learnt_from_a_message_there(world):
    await world.start(coordinator_channel=CHANNEL)
    world.connector.team_members[TEAM] = {"aad-bob"}
    said = await world.say("login", user="bob")
    assert "/login/" not in said[0]  # the team is not known yet
    # Any message in the configured channel tells its team.
    await world.say("<at>Meldbot</at> help", conversation=f"{CHANNEL};messageid=77", conversation_type="channel",
                    channel=CHANNEL, team=TEAM, user="bob")
    said = await world.say("login", user="bob")
    assert len(LINK_RE.findall(said[0])) == 1

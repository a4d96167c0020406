"""`@Meldbot login` in the coordinator channel: the bot opens a 1:1 chat with the coordinator (Bot
Connector `POST /v3/conversations`) and the single-use link goes there, never into the channel."""

from __future__ import annotations

import re

from botbuilder.schema import ConversationReference

from dialogs import Reply
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import APP_ID, CHANNEL, TEAM, TENANT

LINK_RE = re.compile(r"https://meldbot\.example\.nl/login/[A-Za-z0-9_-]+")


async def test_login_in_the_channel_opens_a_direct_chat_and_the_link_goes_only_there(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-coco"}
    said = await world.in_channel("login", user="coco")
    assert said == ["Ik heb je een inloglink gestuurd in ons privégesprek. Is dat gesprek nieuw, accepteer dan eerst de uitnodiging."]
    assert await world.app.worker.drain(timeout=30)
    (created,) = [r for r in world.connector.requests if r["kind"] == "create_chat"]
    chat = created["conversation"]
    assert chat.startswith("a:") and created["members"] == ["29:coco"]
    body = created["body"]
    # (botbuilder 4.17.1 writes the parameter's tenant as `tenantID`; Teams reads `channelData.tenant.id`.)
    assert body["isGroup"] is False and body["channelData"]["tenant"]["id"] == TENANT and body["tenantID"] == TENANT
    assert body["bot"]["id"] == f"28:{APP_ID}"
    (link_message,) = world.connector.texts(chat)
    assert len(LINK_RE.findall(link_message)) == 1
    # The link is nowhere else: not in the channel, not in any other conversation.
    elsewhere = [r for r in world.connector.requests if r.get("conversation") != chat]
    assert not any(LINK_RE.search(str(r["body"])) for r in elsewhere)
    assert not any(LINK_RE.search(t) for t in world.connector.texts(CHANNEL))


async def test_open_direct_chat_returns_an_address_send_replies_takes(world):
    await world.start()
    await world.set_channel()
    adapter = world.adapter
    address = await adapter.open_direct_chat({"teams_id": "29:dana", "aad_object_id": "aad-dana", "name": "Dana",
                                              "service_url": world.connector.url, "tenant_id": TENANT,
                                              "bot_id": f"28:{APP_ID}"})
    reference = ConversationReference().deserialize(address["reference"])
    assert reference.conversation.id.startswith("a:chat-") and reference.user.id == "29:dana"
    assert reference.service_url == world.connector.url
    await adapter.send_replies(address, [Reply("Hallo Dana")], "key-1")
    assert world.connector.texts(reference.conversation.id) == ["Hallo Dana"]


async def test_a_coordinator_with_a_direct_chat_gets_the_link_there_and_no_new_chat(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-coco"}
    await world.say("hallo", user="coco")  # coco has talked to the bot privately before
    said = await world.in_channel("login", user="coco")
    assert said == ["Ik heb je een inloglink gestuurd in ons privégesprek. Is dat gesprek nieuw, accepteer dan eerst de uitnodiging."]
    assert await world.app.worker.drain(timeout=30)
    assert not [r for r in world.connector.requests if r["kind"] == "create_chat"]
    assert any(LINK_RE.search(t) for t in world.connector.texts("a:personal-coco"))


async def test_no_direct_chat_no_link_for_someone_outside_the_channel(world):
    await world.start()
    await world.set_channel()
    said = await world.in_channel("login", user="mallory")
    assert len(said) == 1 and "alleen voor coördinatoren" in said[0]
    assert not [r for r in world.connector.requests if r["kind"] == "create_chat"]

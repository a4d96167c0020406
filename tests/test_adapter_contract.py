"""The adapter contract, one suite for every platform adapter.

Each platform registers a factory in ADAPTERS; the Matrix and Teams adapters join this list with
their own real back-ends (Synapse, the fake Bot Connector) when they are built.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import pytest

from bot.adapters.console import ConsoleAdapter
from bot.adapters.contract import Adapter, DeliveryError, InboundMessage, Notification
from dialogs import Reply


@dataclass
class Harness:
    adapter: Adapter
    address: dict  # where a known person can be reached
    _seen: Callable[[], str]  # everything that reached the people on the platform
    clients: list = field(default_factory=list)
    settle: Callable[[], Awaitable[None]] | None = None

    async def seen(self) -> str:
        if self.settle:
            await self.settle()
        return self._seen()


async def console_harness(request, bot) -> Harness:
    out = io.StringIO()
    adapter = ConsoleAdapter(user="anna", language="nl", stdin=io.StringIO(), stdout=out)
    await adapter.start(bot)
    return Harness(adapter, {"user": "anna"}, out.getvalue, [])


async def matrix_harness(request, bot) -> Harness:
    """The Matrix adapter on the test Synapse; what people see is read back from the rooms."""
    from bot.config import MatrixSettings
    from bot.adapters.matrix.adapter import MatrixAdapter
    from bot.devtools.chatclient import ChatClient

    synapse = request.getfixturevalue("synapse")
    tmp = request.getfixturevalue("tmp_path")
    tag = uuid.uuid4().hex[:8]
    account = synapse.register(f"contract-bot-{tag}")
    person = ChatClient(synapse.url, synapse.register(f"contract-anna-{tag}"), tmp / "anna")
    await person.start()
    room = await person.create_room("coordinators", invite=[account.user_id])
    settings = MatrixSettings(homeserver=synapse.url, user_id=account.user_id, access_token=account.access_token,
                              device_id=account.device_id, store_dir=tmp / "store", coordinator_room=room)
    adapter = MatrixAdapter(settings=settings, store_dir=settings.store_dir, language="nl")
    await adapter.start(bot)
    dm = await person.open_dm(account.user_id, encrypted=True)
    await person.wait_joined(room, account.user_id)

    async def bot_knows_the_room() -> None:
        while dm not in adapter.client.rooms:
            await asyncio.sleep(0.05)  # until the bot's own sync has the room, bounded by wait_for

    await asyncio.wait_for(bot_knows_the_room(), 30)

    def seen() -> str:
        return "\n".join(r.body for r in person.received)

    async def settle() -> None:
        # Everything sent so far has arrived once a fresh marker does.
        marker = f"marker-{uuid.uuid4().hex}"
        await adapter._send(dm, {"msgtype": "m.text", "body": marker})
        await person.wait_for(lambda r: r.body == marker, timeout=30)

    return Harness(adapter, {"room_id": dm}, seen, [person], settle)


async def teams_harness(request, bot) -> Harness:
    """The Teams adapter sending to the fake Bot Connector (the real service cannot run here)."""
    from botbuilder.schema import ChannelAccount, ConversationAccount, ConversationReference

    from bot.config import TeamsSettings
    from bot.adapters.teams.adapter import TeamsAdapter
    from teams_harness import APP_ID, TENANT, FakeConnector, LocalCredentialsFactory

    keys = request.getfixturevalue("keys")
    tmp = request.getfixturevalue("tmp_path")
    connector = FakeConnector()
    await connector.start()
    settings = TeamsSettings(app_id=APP_ID, tenant_id=TENANT, coordinator_channel="19:c@thread.tacv2",
                             openid_metadata_url=keys.metadata_url, store_dir=tmp / "teams")
    adapter = TeamsAdapter(settings=settings, store_dir=settings.store_dir, language="nl",
                           credentials_factory=LocalCredentialsFactory())
    await adapter.start(bot)
    adapter.state["service_url"] = connector.url  # what the first activity teaches it
    reference = ConversationReference(channel_id="msteams", service_url=connector.url, bot=ChannelAccount(id=APP_ID),
                                      user=ChannelAccount(id="29:anna"),
                                      conversation=ConversationAccount(id="a:personal-anna"))

    def seen() -> str:
        return "\n".join(str(r["activity"]) for r in connector.requests)

    return Harness(adapter, {"reference": reference.serialize()}, seen, [connector])


ADAPTERS = [pytest.param(console_harness, id="console"), pytest.param(matrix_harness, id="matrix"),
            pytest.param(teams_harness, id="teams")]

NOTIFICATION = Notification(reference="MB-ABC-DEF", title="Nieuwe melding MB-ABC-DEF",
                            lines=(("Soort", "Bedreiging"),), link="https://x.example/cases/MB-ABC-DEF",
                            link_label="Openen", urgent=True)


class RecordingBot:
    """Stands in for the engine: records what the adapter passes on."""

    def __init__(self):
        self.messages: list[InboundMessage] = []
        self.deferred: list[tuple] = []

    async def handle(self, message):
        self.messages.append(message)
        return [Reply("ok")]

    async def handle_coordinator(self, message):
        self.messages.append(message)
        return []

    async def defer_replies(self, platform, address, replies):
        self.deferred.append((platform, address, replies))


@pytest.fixture(params=ADAPTERS)
async def harness(request):
    harness = await request.param(request, RecordingBot())
    try:
        yield harness
    finally:
        await harness.adapter.stop()
        for client in harness.clients:
            await client.stop()


async def test_has_a_platform_name_and_a_coordinator_destination(harness):
    assert harness.adapter.platform
    assert harness.adapter.coordinator_destination()


async def test_case_notification_returns_a_thread_root_and_shows_the_link(harness):
    adapter = harness.adapter
    root = await adapter.post_case_notification(adapter.coordinator_destination(), NOTIFICATION, "key-1")
    assert isinstance(root, str) and root
    seen = await harness.seen()
    assert "MB-ABC-DEF" in seen and NOTIFICATION.link in seen


async def test_thread_reply_after_the_root(harness):
    adapter = harness.adapter
    destination = adapter.coordinator_destination()
    root = await adapter.post_case_notification(destination, NOTIFICATION, "key-2")
    reply_id = await adapter.post_in_case_thread(destination, root, "MB-ABC-DEF: opgepakt", "key-3")
    assert reply_id and reply_id != root
    assert "MB-ABC-DEF: opgepakt" in await harness.seen()


async def test_proactive_reply_to_a_known_person(harness):
    message_id = await harness.adapter.send_replies(harness.address, [Reply("Hoe gaat het met je?")], "key-4")
    assert message_id and "Hoe gaat het met je?" in await harness.seen()


async def test_proactive_reply_to_an_unknown_address_is_a_delivery_error(harness):
    with pytest.raises(DeliveryError):
        await harness.adapter.send_replies({"user": "nobody-here"}, [Reply("x")], "key-5")


async def test_a_resend_with_the_same_key_is_delivered_once(harness):
    adapter = harness.adapter
    if not adapter.idempotent_sends:
        pytest.skip(f"{adapter.platform} has no idempotency key (documented: a resend may deliver twice)")
    first = await adapter.send_replies(harness.address, [Reply("Eén keer, ook bij opnieuw proberen")], "key-6")
    again = await adapter.send_replies(harness.address, [Reply("Eén keer, ook bij opnieuw proberen")], "key-6")
    assert again == first
    assert (await harness.seen()).count("Eén keer, ook bij opnieuw proberen") == 1

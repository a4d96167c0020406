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
from bot.adapters.contract import Adapter, DeliveryError, InboundMessage, Notification, contract_problems
from dialogs import Reply


@dataclass
class Harness:
    adapter: Adapter
    address: dict  # where a known person can be reached
    _seen: Callable[[], str]  # everything that reached the people on the platform
    clients: list = field(default_factory=list)
    settle: Callable[[], Awaitable[None]] | None = None
    #: An address of the same shape as `address` for someone the platform does not know.
    unknown: dict = field(default_factory=dict)
    #: Whether `text` arrived in the room the coordinators are in, as the platform's people see it
    #: (found independently of the adapter's own `coordinator_destination`).
    in_coordinator_room: Callable[[str], Awaitable[bool]] | None = None

    async def seen(self) -> str:
        if self.settle:
            await self.settle()
        return self._seen()


async def console_harness(request, bot) -> Harness:
    out = io.StringIO()
    adapter = ConsoleAdapter(user="anna", language="nl", stdin=io.StringIO(), stdout=out)
    await adapter.start(bot)

    async def in_coordinator_room(text: str) -> bool:
        # The terminal's coordinator room is the framed block (notification) and the ↳ lines (threads).
        return any(line.startswith(("  │ ", "  ↳ ")) and text in line for line in out.getvalue().splitlines())

    return Harness(adapter, {"user": "anna"}, out.getvalue, [], unknown={"user": "nobody-here"},
                   in_coordinator_room=in_coordinator_room)


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

    async def in_coordinator_room(text: str) -> bool:
        try:
            await person.wait_for(lambda r: r.room_id == room and text in r.body, timeout=30)
        except (TimeoutError, asyncio.TimeoutError):
            return False
        return True

    # A user ID of the bot's own (allowed) server that nobody registered, and a room nobody created.
    server = account.user_id.split(":", 1)[1]
    unknown = {"room_id": f"!nosuchroom{tag}:{server}", "user": f"@nobody-{tag}:{server}"}
    return Harness(adapter, {"room_id": dm, "user": person.user_id}, seen, [person], settle, unknown=unknown,
                   in_coordinator_room=in_coordinator_room)


async def teams_harness(request, bot) -> Harness:
    """The Teams adapter sending to the fake Bot Connector (the real service cannot run here)."""
    from aiohttp import web
    from botbuilder.schema import ChannelAccount, ConversationAccount, ConversationReference

    from bot.config import TeamsSettings
    from bot.adapters.teams.adapter import TeamsAdapter
    from teams_harness import APP_ID, TENANT, FakeConnector, LocalCredentialsFactory

    class KnownChatsConnector(FakeConnector):
        """Like the real Bot Connector, refuses a send into a personal chat that does not exist."""

        known = {"a:personal-anna"}

        async def _handle(self, request):
            parts = request.path.strip("/").split("/")
            if (request.method == "POST" and len(parts) >= 4 and parts[:2] == ["v3", "conversations"]
                    and parts[2].startswith("a:") and parts[2] not in self.known | set(self.chats)):
                return web.json_response({"error": {"code": "ConversationNotFound", "message": "no such chat"}},
                                         status=404)
            return await super()._handle(request)

    keys = request.getfixturevalue("keys")
    tmp = request.getfixturevalue("tmp_path")
    connector = KnownChatsConnector()
    await connector.start()
    settings = TeamsSettings(app_id=APP_ID, tenant_id=TENANT, coordinator_channel="19:c@thread.tacv2",
                             openid_metadata_url=keys.metadata_url, store_dir=tmp / "teams")
    adapter = TeamsAdapter(settings=settings, store_dir=settings.store_dir, language="nl",
                           credentials_factory=LocalCredentialsFactory())
    await adapter.start(bot)
    adapter.state["service_url"] = connector.url  # what the first activity teaches it
    channel = settings.coordinator_channel

    def reference(user: str) -> dict:
        return ConversationReference(channel_id="msteams", service_url=connector.url, bot=ChannelAccount(id=APP_ID),
                                     user=ChannelAccount(id=f"29:{user}"),
                                     conversation=ConversationAccount(id=f"a:personal-{user}")).serialize()

    def seen() -> str:
        return "\n".join(str(r["activity"]) for r in connector.requests)

    async def in_coordinator_room(text: str) -> bool:
        # Posts created in the channel, and replies into its threads ("<channel>;messageid=<root>").
        return any(text in str(r["activity"]) for r in connector.requests
                   if ((r["body"].get("channelData") or {}).get("channel") or {}).get("id") == channel
                   or str(r.get("conversation", "")).startswith(f"{channel};messageid="))

    return Harness(adapter, {"reference": reference("anna")}, seen, [connector],
                   unknown={"reference": reference("nobody")}, in_coordinator_room=in_coordinator_room)


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

    async def redeem_claim_code(self, platform, code):
        return False


@pytest.fixture(params=ADAPTERS)
async def harness(request):
    harness = await request.param(request, RecordingBot())
    try:
        yield harness
    finally:
        await harness.adapter.stop()
        for client in harness.clients:
            await client.stop()


async def test_implements_the_whole_adapter_contract(harness):
    assert isinstance(harness.adapter, Adapter)
    assert contract_problems(harness.adapter) == []


def test_the_recording_platform_of_the_engine_tests_implements_the_contract_too():
    from stack import RecordingPlatform

    assert contract_problems(RecordingPlatform()) == []


def test_the_contract_check_names_what_is_missing_or_different():
    class Partial(ConsoleAdapter):
        idempotent_sends = None

        def stop(self):  # not a coroutine
            pass

        async def send_replies(self, address, replies):  # no idempotency key
            return ""

    problems = contract_problems(Partial(user="anna", language="nl", stdin=io.StringIO(), stdout=io.StringIO()))
    assert any(p.startswith("idempotent_sends") for p in problems)
    assert any(p.startswith("stop: must be async") for p in problems)
    assert any(p.startswith("send_replies: parameters") for p in problems)


async def test_notifications_go_where_the_coordinators_are(harness):
    adapter = harness.adapter
    destination = adapter.coordinator_destination()
    assert destination
    root = await adapter.post_case_notification(destination, NOTIFICATION, "key-0")
    await adapter.post_in_case_thread(destination, root, "MB-ABC-DEF: in de draad", "key-0b")
    assert await harness.in_coordinator_room(NOTIFICATION.link)
    assert await harness.in_coordinator_room("MB-ABC-DEF: in de draad")


async def test_a_message_of_its_own_goes_into_the_coordinator_room(harness):
    adapter = harness.adapter
    posted = await adapter.post_in_room(adapter.coordinator_destination(),
                                        Reply("Signaal: meer meldingen aan de balie dan gewoonlijk"), "key-room")
    assert isinstance(posted, str) and posted
    assert await harness.in_coordinator_room("meer meldingen aan de balie dan gewoonlijk")


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


async def test_proactive_reply_to_an_unknown_address_is_a_delivery_error(harness, request):
    # The address has every key a known person's has: only the person is unknown.
    assert set(harness.unknown) == set(harness.address) and harness.unknown != harness.address
    with pytest.raises(DeliveryError):
        await harness.adapter.send_replies(harness.unknown, [Reply("Voor niemand bedoeld")], "key-5")
    assert "Voor niemand bedoeld" not in await harness.seen()


async def test_a_resend_with_the_same_key_is_delivered_once(harness):
    adapter = harness.adapter
    if not adapter.idempotent_sends:
        pytest.skip(f"{adapter.platform} has no idempotency key (documented: a resend may deliver twice)")
    first = await adapter.send_replies(harness.address, [Reply("Eén keer, ook bij opnieuw proberen")], "key-6")
    again = await adapter.send_replies(harness.address, [Reply("Eén keer, ook bij opnieuw proberen")], "key-6")
    assert again == first
    assert (await harness.seen()).count("Eén keer, ook bij opnieuw proberen") == 1

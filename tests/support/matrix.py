"""The World on Matrix: the session's real Synapse, fresh accounts per test, real nio clients
(bot.devtools.chatclient.ChatClient) as reporters and coordinator, and Meldbot's MatrixAdapter."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid

import aiohttp
from nio import JoinResponse, RoomGetEventResponse, RoomMessagesResponse

from bot.adapters.matrix.adapter import MatrixAdapter
from bot.app import build
from bot.config import (
    DatabaseSettings,
    MatrixSettings,
    OrganisationSettings,
    PrivacySettings,
    Settings,
    WebSettings,
)
from bot.devtools.chatclient import ChatClient
from bot.devtools.localserver import free_port
from helpers import TEST_MASTER_KEY
from storage.crypto import encode_key
from support.world import COORDINATOR, REFERENCE_RE, Note, World, browser_request
from support.world import until as wait_until

LINK_RE = re.compile(r"https?://\S+/cases/MB-[A-Z0-9]{3}-[A-Z0-9]{3}")


class MatrixWorld(World):
    platform = "matrix"

    def __init__(self, synapse, tmp_path):
        self.synapse = synapse
        self.tmp = tmp_path
        self.tag = uuid.uuid4().hex[:8]
        self.bot_account = synapse.register(f"meldbot-{self.tag}")
        self.port = free_port()
        self.app = None
        self.users: dict[str, ChatClient] = {}
        self.rooms: dict[str, str] = {}  # person -> their direct chat with the bot
        self.coordinator_room = ""
        self.database_url = ""
        self.web: aiohttp.ClientSession | None = None
        self.cookies: dict[str, str] = {}

    # -- life cycle ------------------------------------------------------------------------------
    async def _client(self, user: str) -> ChatClient:
        if user not in self.users:
            account = self.synapse.register(f"{user}-{self.tag}")
            client = ChatClient(self.synapse.url, account, self.tmp / f"user-{user}")
            await client.start()
            self.users[user] = client
        return self.users[user]

    async def _dm(self, user: str) -> tuple[ChatClient, str]:
        client = await self._client(user)
        if user not in self.rooms:
            self.rooms[user] = await client.open_dm(self.bot_account.user_id, encrypted=False)
        return client, self.rooms[user]

    def display_name(self, user: str) -> str:
        return f"{user}-{self.tag}"

    def identities(self, user: str) -> list[str]:
        return [self.display_name(user), f"@{user}-{self.tag}:"]

    def settings(self) -> Settings:
        return Settings(
            organisation=OrganisationSettings(name="Gemeente Testdam"),
            database=DatabaseSettings(url=self.database_url),
            web=WebSettings(listen=f"127.0.0.1:{self.port}", public_url=f"http://127.0.0.1:{self.port}"),
            matrix=MatrixSettings(homeserver=self.synapse.url, user_id=self.bot_account.user_id,
                                  access_token=self.bot_account.access_token, device_id=self.bot_account.device_id,
                                  store_dir=self.tmp / "bot-store", coordinator_room=self.coordinator_room),
            privacy=PrivacySettings(key=encode_key(TEST_MASTER_KEY)),
        )

    async def _start_bot(self) -> None:
        settings = self.settings()
        adapter = MatrixAdapter(settings=settings.matrix, store_dir=settings.matrix.store_dir, language="nl")
        self.app = await build(settings, {"matrix": adapter})
        await self.app.start(web_server=True)

    async def start(self, database_url: str) -> MatrixWorld:
        self.database_url = database_url
        coordinator = await self._client(COORDINATOR)
        self.coordinator_room = await coordinator.create_room("Coördinatie agressie",
                                                              invite=[self.bot_account.user_id])
        await self._start_bot()
        await coordinator.wait_joined(self.coordinator_room, self.bot_account.user_id)
        self.web = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self

    async def close(self) -> None:
        if self.app:
            await self.app.stop()
        for client in self.users.values():
            await client.stop()
        if self.web:
            await self.web.close()

    async def restart(self) -> None:
        await self.app.stop()
        self.app = None
        await self._start_bot()

    # -- the reporter ----------------------------------------------------------------------------
    async def _wait_answer(self, client: ChatClient, room: str, start: int, until: str | None) -> list[str]:
        await client.wait_for_text(room, until or "", start=start)
        return [r.body for r in client.received[start:] if r.room_id == room]

    async def say(self, user, text, until=None):
        client, room = await self._dm(user)
        start = len(client.received)
        await client.send(room, text)
        return await self._wait_answer(client, room, start, until)

    async def say_twice(self, user, text, until=None):
        """The event arrives twice at the adapter, as when a sync is fetched again after a failure."""
        client, room = await self._dm(user)
        start = len(client.received)
        event_id = await client.send(room, text)
        first = await self._wait_answer(client, room, start, until)
        adapter = self.app.adapters["matrix"]
        response = await adapter.client.room_get_event(room, event_id)
        assert isinstance(response, RoomGetEventResponse), response
        before = await self._history(client, room)
        await adapter._on_event(adapter.client.rooms[room], response.event)
        # Whatever the second delivery sent, it sent before _on_event returned: the server has it.
        after = await self._history(client, room)
        return first, [m["body"] for m in after[len(before):]]

    async def send_file(self, user, name, data, media_type, until=None):
        client, room = await self._dm(user)
        start = len(client.received)
        await client.send_file(room, name, data, media_type, encrypt=False)
        return await self._wait_answer(client, room, start, until)

    async def heard(self, user):
        if user not in self.rooms:
            return []
        return [m["body"] for m in await self._history(self.users[user], self.rooms[user])]

    async def _history(self, client: ChatClient, room: str) -> list[dict]:
        """Every message the bot sent in a room, oldest first, from the server's own history."""
        response = await client.client.room_messages(room, start="", limit=500)
        assert isinstance(response, RoomMessagesResponse), response
        events = []
        for event in reversed(response.chunk):
            if getattr(event, "sender", None) == self.bot_account.user_id and hasattr(event, "body"):
                content = event.source.get("content", {})
                events.append({"body": event.body, "formatted": content.get("formatted_body", ""),
                               "relates": content.get("m.relates_to") or {}, "event_id": event.event_id,
                               "origin": len(events)})
        return events

    # -- the coordinators ------------------------------------------------------------------------
    async def _room_history(self) -> list[dict]:
        return await self._history(self.users[COORDINATOR], self.coordinator_room)

    async def notifications(self):
        await self.deliver()
        notes = []
        for message in await self._room_history():
            if message["relates"].get("rel_type") == "m.thread" or "Nieuwe melding" not in message["body"]:
                continue
            reference = REFERENCE_RE.search(message["body"])
            link = LINK_RE.search(message["body"])
            notes.append(Note(reference.group(0) if reference else "", message["body"] + "\n" + message["formatted"],
                              link.group(0) if link else ""))
        return notes

    async def _root(self, reference: str) -> str:
        for message in await self._room_history():
            if message["relates"].get("rel_type") != "m.thread" and f"Nieuwe melding {reference}" in message["body"]:
                return message["event_id"]
        raise AssertionError(f"no notification for {reference}")

    async def coordinator_says(self, reference, text, until=None):
        await self.deliver()
        root = await self._root(reference)
        coordinator = self.users[COORDINATOR]
        start = len(coordinator.received)
        await coordinator.send_in_thread(self.coordinator_room, root, text)
        await coordinator.wait_for(lambda r: r.room_id == self.coordinator_room and (until or "") in r.body
                                   and (r.content.get("m.relates_to") or {}).get("event_id") == root, start=start)
        return [r.body for r in coordinator.received[start:] if r.room_id == self.coordinator_room]

    async def thread(self, reference):
        await self.deliver()
        root = await self._root(reference)
        return [m["body"] for m in await self._room_history() if m["relates"].get("event_id") == root]

    async def login_from_room(self):
        coordinator = self.users[COORDINATOR]
        start = len(coordinator.received)
        await coordinator.send(self.coordinator_room, "login")
        answer = await coordinator.wait_for_text(self.coordinator_room, "privégesprek", start=start)
        if COORDINATOR not in self.rooms:
            self.rooms[COORDINATOR] = await _accept_invite(coordinator, self.bot_account.user_id)
        dm = self.rooms[COORDINATOR]
        await coordinator.wait_for_text(dm, "/login/", start=start)
        return [answer.body], [r.body for r in coordinator.received[start:] if r.room_id == dm]

    async def room_texts(self):
        return [m["body"] + m["formatted"] for m in await self._room_history()]

    # -- web -------------------------------------------------------------------------------------
    async def http(self, method, path, **kwargs):
        return await browser_request(self.web, self.cookies, method, f"http://127.0.0.1:{self.port}{path}", **kwargs)

    # -- outages ---------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def platform_outage(self, user):
        """The homeserver stops just after the turn that saved the report (as in test_matrix)."""
        client, room = await self._dm(user)
        engine = self.app.engine
        original = engine.handle
        stopped = asyncio.Event()

        async def handle_then_lose_the_server(message):
            replies = await original(message)
            if message.text == "verzenden":
                await asyncio.to_thread(self.synapse.stop)
                stopped.set()
            return replies

        engine.handle = handle_then_lose_the_server
        try:
            await client.send(room, "verzenden")
            await asyncio.wait_for(stopped.wait(), 30)
            engine.handle = original

            async def queued() -> bool:  # the notification and the confirmation wait in the outbox
                from storage import repo

                async with self.app.sessions() as session:
                    return await repo.count_pending_messages(session=session) >= 2

            await wait_until(queued, 60, "the confirmation and the notification to be queued")
            yield
        finally:
            engine.handle = original
            if self.synapse.process is None:
                await asyncio.to_thread(self.synapse.start)

    async def deliver(self) -> None:
        assert await self.app.worker.drain(timeout=90), "the outbox did not empty"


async def _accept_invite(client: ChatClient, inviter: str, timeout: float = 30) -> str:
    """Join the first room `inviter` invited `client` to; returns its ID once joined."""
    found: list[str] = []

    def invited() -> bool:
        found[:] = [r for r, room in client.client.invited_rooms.items() if room.inviter == inviter]
        return bool(found)

    await wait_until(invited, timeout, "an invitation")
    response = await client.client.join(found[0])
    assert isinstance(response, JoinResponse), response
    await client.wait_joined(found[0], client.user_id, timeout)
    return found[0]

"""Matrix access and abuse: downloads within limits, direct chats that gain members, escaped text.

Against the real test Synapse with real nio clients; media that misbehaves comes from a small
aiohttp server on loopback that the adapter is pointed at.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import aiohttp
import pytest
from aiohttp import web

from bot.devtools.chatclient import ChatClient
from bot.adapters.contract import DeliveryError
from dialogs import Reply
from test_matrix import World, accept_invite, world  # noqa: F401 - the `world` fixture

MB = 1024 * 1024


class MediaServer:
    """Serves `/<media id>` on loopback: `stall` sends a little and then nothing until released,
    `flood` streams 1 MB chunks until `total` (or the client goes away)."""

    def __init__(self, total: int = 100 * MB):
        self.total = total
        self.requests: list[str] = []
        self.open = 0
        self.sent = 0
        self.finished = asyncio.Event()
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> "MediaServer":
        app = web.Application()
        app.router.add_get("/{media_id}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        media_id = request.match_info["media_id"]
        self.requests.append(media_id)
        self.open += 1
        self.arrived.set()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        try:
            await response.prepare(request)
            if media_id.startswith("stall"):
                await response.write(b"\x89PNG")
                await self.release.wait()
                # Released: the connection breaks off mid-file.
                request.transport.close()
                return response
            chunk = b"x" * MB
            while self.sent < self.total:
                await response.write(chunk)
                self.sent += len(chunk)
            await response.write_eof()
            return response
        except (ConnectionError, asyncio.CancelledError):
            raise
        finally:
            self.open -= 1
            self.finished.set()


@pytest.fixture
async def media_server():
    server = await MediaServer().start()
    try:
        yield server
    finally:
        await server.stop()


def serve_media_from(world: World, server: MediaServer) -> None:
    """Point the bot's media downloads at `server` instead of the homeserver."""
    world.adapter._media_urls = lambda _server, media_id: [f"{server.url}/{media_id}"]


async def send_file_event(client: ChatClient, room: str, name: str, media_id: str, size: int) -> str:
    """A file message whose content lives at `mxc://meldbot.test/<media_id>` and announces `size`."""
    return await client.send(room, name, {"msgtype": "m.file", "filename": name,
                                          "url": f"mxc://meldbot.test/{media_id}",
                                          "info": {"mimetype": "application/pdf", "size": size}})


async def another_reporter(world: World, name: str) -> ChatClient:
    client = ChatClient(world.synapse.url, world.synapse.register(f"{name}-{uuid.uuid4().hex[:8]}"),
                        world.tmp / name)
    world.clients.append(client)
    await client.start()
    return client


# -- 2. downloads cannot exhaust or block ---------------------------------------------------------

async def test_a_stalled_download_holds_up_only_its_own_room_and_the_token_waits_for_it(world, media_server):
    await world.setup()
    serve_media_from(world, media_server)
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    await world.say(room, "help", "Wat ik kan")
    other = await another_reporter(world, "bram")
    other_room = await other.open_dm(world.bot_account.user_id, encrypted=False)
    start = len(world.reporter.received)
    await send_file_event(world.reporter, room, "traag.pdf", f"stall-{uuid.uuid4().hex}", 1000)
    await asyncio.wait_for(media_server.arrived.wait(), 30)
    # While that download hangs, another reporter in another room is answered at once.
    loop = asyncio.get_running_loop()
    began = loop.time()
    await other.send(other_room, "help")
    await other.wait_for_text(other_room, "Wat ik kan", timeout=10)
    assert loop.time() - began < 5
    assert media_server.open == 1, "the stalled download is still running"
    assert not [r for r in world.reporter.received[start:] if r.room_id == room]
    # Its batch is not handled yet: the saved token has not moved past it (a crash replays it).
    assert world.adapter._token_file().read_text() != world.adapter._since
    media_server.release.set()
    failed = await world.reporter.wait_for_text(room, "niet ophalen", start=start)
    assert failed

    async def token_caught_up() -> None:
        while world.adapter._token_file().read_text() != world.adapter._since:
            await asyncio.sleep(0.05)  # polls the adapter's saved token, bounded by wait_for

    await asyncio.wait_for(token_caught_up(), 30)


async def test_a_download_that_stops_sending_times_out(world, media_server):
    await world.setup()
    serve_media_from(world, media_server)
    world.adapter.download_stall = 1.0
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    start = len(world.reporter.received)
    media_id = f"stall-{uuid.uuid4().hex}"
    await send_file_event(world.reporter, room, "hangt.pdf", media_id, 1000)
    await asyncio.wait_for(media_server.arrived.wait(), 30)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await world.reporter.wait_for_text(room, "niet ophalen", start=start, timeout=20)
    assert media_server.requests == [media_id] and loop.time() - began >= 0.9  # given up after 1 s of silence
    assert not media_server.release.is_set()  # the server never finished: the bot stopped waiting
    await world.say(room, "help", "Wat ik kan")  # the room goes on


async def test_an_announced_oversized_file_is_refused_by_name_without_a_download(world, media_server):
    await world.setup()
    serve_media_from(world, media_server)
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    start = len(world.reporter.received)
    await send_file_event(world.reporter, room, "film.mov", "big", 25 * MB)
    refused = await world.reporter.wait_for_text(room, "te groot", start=start)
    assert "film.mov" in refused.body
    await world.say(room, "help", "Wat ik kan")
    assert media_server.requests == []


async def test_a_file_streaming_past_the_cap_is_cut_off(world, media_server):
    await world.setup()
    serve_media_from(world, media_server)
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    start = len(world.reporter.received)
    # It announces 1 kB, and then sends without end.
    await send_file_event(world.reporter, room, "klein.pdf", "flood", 1000)
    refused = await world.reporter.wait_for_text(room, "te groot", start=start, timeout=60)
    assert "klein.pdf" in refused.body
    await asyncio.wait_for(media_server.finished.wait(), 30)
    assert 20 * MB <= media_server.sent < media_server.total  # the bot hung up soon after 20 MB
    async with world.app.sessions() as session:
        from sqlalchemy import func, select

        from storage.models import Attachment
        assert await session.scalar(select(func.count()).select_from(Attachment)) == 0


# -- 3. a direct chat that gains members is no longer a direct chat --------------------------------

async def test_a_direct_chat_that_gains_a_member_is_left_for_a_new_one(world):
    await world.setup()
    await world.encrypt_coordinator_room()  # the reporter's answer is relayed into the thread
    bot = world.bot_account.user_id
    room = await world.reporter.open_dm(bot, encrypted=True)
    reference = await world.report(room)
    note = await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {reference}")
    bob = await another_reporter(world, "bob")
    start = len(world.reporter.received)
    await world.reporter.client.room_invite(room, bob.user_id)
    await bob.client.join(room)
    told = await world.reporter.wait_for_text(room, "Er is iemand bij dit gesprek gekomen", start=start)
    assert told
    # The coordinator's answer goes to a new direct chat with the reporter, not to the group.
    await world.coordinator.send_in_thread(world.coordinator_room, note.event_id, "antwoord Ik bel je om drie uur.")
    await world.coordinator.wait_for_text(world.coordinator_room, f"Doorgestuurd naar de melder van {reference}")
    new_room = await accept_invite(world.reporter, bot)
    assert new_room != room and world.reporter.client.rooms[new_room].encrypted
    relayed = await world.reporter.wait_for_text(new_room, "Ik bel je om drie uur.")
    assert reference in relayed.body
    # The reporter's answer there reaches the case: the conversation went on in the new chat.
    await world.say(new_room, "Prima, tot straks.", "Doorgestuurd naar de coördinator")
    await world.coordinator.wait_for_text(world.coordinator_room, "de melder schrijft: Prima, tot straks.")
    # In the old room: a message is no longer taken, and the room heard the reason exactly once.
    await world.reporter.send(room, "Nog een melding")
    await world.say(new_room, "help", "Wat ik kan")
    bodies = [m["body"] for m in await world.bot_messages(world.reporter, room)]
    assert sum("Er is iemand bij dit gesprek gekomen" in b for b in bodies) == 1
    assert "Er is iemand bij dit gesprek gekomen" in bodies[-1]  # "Nog een melding" got no answer there
    assert not any("drie uur" in b for b in bodies)
    assert not any("drie uur" in r.body for r in bob.received)
    # A restarted bot remembers it.
    await world.stop_bot()
    await world.start_bot()
    message_id = await world.adapter.send_replies({"room_id": room, "user": world.reporter.user_id},
                                                  [Reply("Nog een vraag van de coördinator")], "key-moved")
    arrived = await world.reporter.wait_for_text(new_room, "Nog een vraag van de coördinator")
    assert arrived.event_id == message_id


async def test_an_old_address_without_a_person_is_never_sent_into_a_group(world):
    await world.setup()
    group = await world.reporter.create_room("Team balie", invite=[world.bot_account.user_id,
                                                                   world.coordinator.user_id])
    await world.reporter.wait_joined(group, world.bot_account.user_id)
    await world.coordinator.client.join(group)

    async def bot_sees_everyone() -> None:
        while len(getattr(world.adapter.client.rooms.get(group), "users", {})) < 3:
            await asyncio.sleep(0.05)  # polls the bot's synced state, bounded by wait_for

    await asyncio.wait_for(bot_sees_everyone(), 30)
    with pytest.raises(DeliveryError) as raised:
        await world.adapter.send_replies({"room_id": group}, [Reply("Over je melding")], "key-old")
    assert raised.value.permanent
    assert not [m for m in await world.bot_messages(world.reporter, group) if "Over je melding" in m["body"]]


# -- 4. escaping for Matrix HTML -------------------------------------------------------------------

EVIL_LINK = '<a href="https://evil.example/login">Log opnieuw in</a>'
EVIL_NAME = '<b>Coco</b> <a href="https://evil.example/x">klik</a>'


def has_markup(body: str) -> bool:
    """Whether a plain body holds a tag or a Markdown link that a rendering client would honour."""
    return bool(re.search(r"(?<!\\)<[A-Za-z/]", body) or re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", body))


async def test_relayed_answers_and_display_names_are_escaped(world):
    await world.setup()
    await world.encrypt_coordinator_room()  # the reporter's answer is relayed into the thread
    await world.coordinator.client.set_displayname(EVIL_NAME)

    async def name_synced() -> None:
        while world.coordinator.client.rooms[world.coordinator_room].user_name(world.coordinator.user_id) \
                != EVIL_NAME:
            await asyncio.sleep(0.05)  # polls the coordinator's synced state, bounded by wait_for

    await asyncio.wait_for(name_synced(), 30)
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    reference = await world.report(room)
    note = await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {reference}")
    await world.coordinator.send_in_thread(world.coordinator_room, note.event_id, "oppakken")
    claimed = await world.coordinator.wait_for_text(world.coordinator_room, f"{reference} is opgepakt door")
    told = await world.reporter.wait_for_text(room, "heeft je melding")
    for message in (claimed, told):
        html = message.content["formatted_body"]
        assert "<a" not in html and "<b>" not in html and "&lt;b&gt;Coco&lt;/b&gt;" in html
        assert not has_markup(message.body)
    await world.coordinator.send_in_thread(world.coordinator_room, note.event_id, "antwoord Wil je de link sturen?")
    await world.reporter.wait_for_text(room, "Wil je de link sturen?")
    await world.say(room, f"Hier: {EVIL_LINK} en [Log opnieuw in](https://evil.example/login)",
                    "Doorgestuurd naar de coördinator")
    back = await world.coordinator.wait_for_text(world.coordinator_room, "de melder schrijft: Hier:")
    assert back.content["m.relates_to"]["event_id"] == note.event_id
    html = back.content["formatted_body"]
    assert "<a" not in html and "&lt;a href=&quot;https://evil.example/login&quot;&gt;" in html
    assert not has_markup(back.body)
    assert "Log opnieuw in" in back.body  # the words stay readable, as text


async def test_media_falls_back_to_the_old_path_and_keeps_the_token_at_home():
    """A homeserver without authenticated media; a redirect to another host gets no token."""
    from bot.adapters.matrix import media

    seen: list[tuple[str, str | None]] = []

    async def elsewhere(request):
        seen.append(("elsewhere", request.headers.get("Authorization")))
        return web.Response(body=b"from the cdn")

    async def home(request):
        seen.append((request.path, request.headers.get("Authorization")))
        if "/client/v1/" in request.path:
            return web.json_response({"errcode": "M_UNRECOGNIZED"}, status=404)
        if request.path.endswith("/moved"):
            raise web.HTTPTemporaryRedirect(f"{cdn_url}/file")
        return web.Response(body=b"hello")

    runners = []
    urls = []
    for handler in (home, elsewhere):
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")
    home_url, cdn_url = urls
    try:
        async with aiohttp.ClientSession() as session:
            body = await media.fetch(session, media.media_urls(home_url, "meldbot.test", "abc"), "secret-token")
            assert body == b"hello"
            assert [path for path, _ in seen] == ["/_matrix/client/v1/media/download/meldbot.test/abc",
                                                  "/_matrix/media/v3/download/meldbot.test/abc"]
            assert all(token == "Bearer secret-token" for _, token in seen)
            seen.clear()
            body = await media.fetch(session, media.media_urls(home_url, "meldbot.test", "moved"), "secret-token")
            assert body == b"from the cdn" and seen[-1] == ("elsewhere", None)
            with pytest.raises(media.TooLarge):
                await media.fetch(session, media.media_urls(home_url, "meldbot.test", "abc"), "t", limit=3)
    finally:
        for runner in runners:
            await runner.cleanup()
    assert media.parse_mxc("mxc://meldbot.test/abc") == ("meldbot.test", "abc")
    assert media.parse_mxc("mxc://meldbot.test/../../admin") is None and media.parse_mxc("https://x/y") is None

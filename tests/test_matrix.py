"""Meldbot on Matrix against a real Synapse, with real nio clients as reporter and coordinator."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from urllib.parse import quote

import aiohttp
import pytest
from nio import JoinResponse, RoomMessagesResponse

from bot.app import build
from bot.config import DatabaseSettings, MatrixSettings, OrganisationSettings, Settings, WebSettings
from bot.adapters.matrix.adapter import MatrixAdapter
from bot.devtools.chatclient import ChatClient
from bot.devtools.localserver import LocalSynapse
from storage import repo

STORY = "Een bezoeker schold me net uit aan de balie en noemde me een oplichter"


class World:
    """Fresh users, a coordinator room and a Meldbot connected to the shared Synapse."""

    #: Whether Meldbot also serves its web pages (the browser tests need them).
    web_server = False

    def __init__(self, synapse: LocalSynapse, tmp_path):
        self.synapse = synapse
        self.tmp = tmp_path
        tag = uuid.uuid4().hex[:8]
        self.bot_account = synapse.register(f"meldbot-{tag}")
        self.reporter = ChatClient(synapse.url, synapse.register(f"anna-{tag}"), tmp_path / "anna")
        self.coordinator = ChatClient(synapse.url, synapse.register(f"coco-{tag}"), tmp_path / "coco")
        self.app = None
        self.coordinator_room = ""
        self.clients = [self.reporter, self.coordinator]

    async def setup(self, allowed_servers=None, start_bot: bool = True) -> "World":
        for client in self.clients:
            await client.start()
        self.coordinator_room = await self.coordinator.create_room("Coördinatie agressie",
                                                                   invite=[self.bot_account.user_id])
        if start_bot:
            await self.start_bot(allowed_servers)
            await self.coordinator.wait_joined(self.coordinator_room, self.bot_account.user_id)
        return self

    def settings(self, allowed_servers=None) -> Settings:
        return Settings(
            organisation=OrganisationSettings(name="Gemeente Testdam"),
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{self.tmp / 'meldbot.db'}"),
            web=WebSettings(public_url="https://meldbot.example.nl"),
            matrix=MatrixSettings(homeserver=self.synapse.url, user_id=self.bot_account.user_id,
                                  access_token=self.bot_account.access_token,
                                  device_id=self.bot_account.device_id, store_dir=self.tmp / "bot-store",
                                  coordinator_room=self.coordinator_room,
                                  allowed_servers=allowed_servers or []),
        )

    async def start_bot(self, allowed_servers=None) -> None:
        settings = self.settings(allowed_servers)
        adapter = MatrixAdapter(settings=settings.matrix, store_dir=settings.matrix.store_dir, language="nl")
        self.app = await build(settings, {"matrix": adapter})
        await self.app.start(web_server=self.web_server)

    @property
    def adapter(self) -> MatrixAdapter:
        return self.app.adapters["matrix"]

    async def stop_bot(self) -> None:
        if self.app:
            await self.app.stop()
            self.app = None

    async def close(self) -> None:
        await self.stop_bot()
        for client in self.clients:
            await client.stop()

    async def say(self, room: str, text: str, expect: str, timeout: float = 30):
        start = len(self.reporter.received)
        await self.reporter.send(room, text)
        return await self.reporter.wait_for_text(room, expect, timeout, start)

    async def report(self, room: str) -> str:
        await self.say(room, STORY, "Kijk even of dit klopt")  # the story names kind and place
        confirmation = await self.say(room, "verzenden", "opgeslagen onder nummer")
        return confirmation.body.split("nummer ")[1].split(".")[0]

    async def encrypt_coordinator_room(self) -> None:
        """Turn encryption on in the coordinator room (only then is a reporter's text relayed into
        it), until both the coordinator's client and the bot have synced that."""
        await self.coordinator.client.room_put_state(self.coordinator_room, "m.room.encryption",
                                                     {"algorithm": "m.megolm.v1.aes-sha2"})

        async def synced() -> None:
            while not (self.coordinator.client.rooms[self.coordinator_room].encrypted
                       and self.adapter.thread_content_allowed(self.coordinator_room)):
                await asyncio.sleep(0.05)  # polls both clients' synced state, bounded by wait_for

        await asyncio.wait_for(synced(), 30)

    async def bot_messages(self, client: ChatClient, room: str) -> list[dict]:
        """Every message the bot sent in a room, from the server's own history."""
        response = await client.client.room_messages(room, start="", limit=200)
        assert isinstance(response, RoomMessagesResponse), response
        events = []
        for event in response.chunk:
            if getattr(event, "sender", None) == self.bot_account.user_id and hasattr(event, "body"):
                events.append({"body": event.body, "content": event.source.get("content", {}),
                               "event_id": event.event_id})
        return list(reversed(events))


@pytest.fixture
async def world(synapse, tmp_path):
    world = World(synapse, tmp_path)
    try:
        yield world
    finally:
        await world.close()


async def test_full_report_in_a_plain_dm_with_html_options_and_a_minimal_notification(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    question = await world.say(room, STORY, "Wat heb je nodig?")
    assert "<ol>" in question.content["formatted_body"] and "☑ Contact met de coördinator" in \
        question.content["formatted_body"]
    assert "[x] 1. Contact met de coördinator" in question.content["body"]
    assert "Kijk even of dit klopt" in question.body  # the wishes are ticked on the summary
    reference = (await world.say(room, "verzenden", "opgeslagen onder nummer")).body.split("nummer ")[1][:10]
    note = await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {reference}")
    assert f"https://meldbot.example.nl/cases/{reference}" in note.body
    assert "Verbale agressie" in note.body and "wil contact" in note.body
    assert "oplichter" not in note.body and "bezoeker" not in note.body and "anna" not in note.body.lower()
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        assert case.story == STORY


async def test_full_report_in_an_encrypted_dm_with_an_encrypted_attachment(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=True)
    assert world.reporter.client.rooms[room].encrypted
    screenshot = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes * 100
    start = len(world.reporter.received)
    await world.reporter.send_file(room, "dreigbericht.png", screenshot, "image/png", encrypt=True)
    await world.reporter.wait_for_text(room, "Ontvangen: dreigbericht.png", start=start)
    reference = await world.report(room)
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        (stored,) = await repo.list_attachments(session=session, case_id=case.id)
    assert stored.sha256 == hashlib.sha256(screenshot).hexdigest() and stored.size == len(screenshot)
    assert stored.media_type == "image/png"
    note = await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {reference}")
    assert "bewijs bijgevoegd" in note.body


async def test_plain_attachment_after_the_report_joins_the_case_and_its_thread(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    reference = await world.report(room)
    note = await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {reference}")
    start = len(world.reporter.received)
    await world.reporter.send_file(room, "foto.jpg", b"\xff\xd8\xff jpeg", "image/jpeg", encrypt=False)
    await world.reporter.wait_for_text(room, f"Toegevoegd aan melding {reference}", start=start)
    reply = await world.coordinator.wait_for_text(world.coordinator_room, "de melder heeft bewijs toegevoegd")
    assert reply.content["m.relates_to"]["rel_type"] == "m.thread"
    assert reply.content["m.relates_to"]["event_id"] == note.event_id


async def test_claim_and_relayed_replies_both_ways_in_the_case_thread(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=True)
    reference = await world.report(room)
    note = await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {reference}")
    coordinator_name = world.coordinator.user_id

    await world.coordinator.send_in_thread(world.coordinator_room, note.event_id, "oppakken")
    answer = await world.coordinator.wait_for_text(world.coordinator_room, f"{reference} is opgepakt door")
    assert answer.content["m.relates_to"]["event_id"] == note.event_id
    told = await world.reporter.wait_for_text(room, "heeft je melding")
    assert reference in told.body and coordinator_name.split(":")[0].lstrip("@") in told.body

    await world.coordinator.send_in_thread(world.coordinator_room, note.event_id, "antwoord Ik bel je om drie uur.")
    await world.coordinator.wait_for_text(world.coordinator_room, f"Doorgestuurd naar de melder van {reference}")
    relayed = await world.reporter.wait_for_text(room, "Ik bel je om drie uur.")
    assert "(coördinator)" in relayed.body and reference in relayed.body

    # The coordinator room is not encrypted: the thread hears that the reporter answered, not what.
    await world.say(room, "Prima, tot straks.", "Doorgestuurd naar de coördinator")
    notice = await world.coordinator.wait_for_text(world.coordinator_room, f"{reference}: de melder heeft geantwoord")
    assert "Prima" not in notice.body and f"/cases/{reference}" in notice.body
    assert not [r for r in world.coordinator.received if "Prima" in r.body]
    # Once the room is encrypted, the reporter's words go into the thread.
    await world.encrypt_coordinator_room()
    await world.coordinator.send_in_thread(world.coordinator_room, note.event_id, "antwoord Tot zo.")
    await world.reporter.wait_for_text(room, "Tot zo.")
    await world.say(room, "Ik wacht bij de balie.", "Doorgestuurd naar de coördinator")
    back = await world.coordinator.wait_for_text(world.coordinator_room, "de melder schrijft: Ik wacht bij de balie.")
    assert back.content["m.relates_to"]["event_id"] == note.event_id
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        kinds = [e.kind for e in await repo.list_case_events(session=session, case=case)]
    assert case.status == "in_progress" and case.assigned_to
    assert kinds == ["submitted", "claimed", "coordinator_message", "reporter_message", "coordinator_message",
                     "reporter_message"]


async def test_non_members_cannot_use_coordinator_commands_and_groups_get_one_hint(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    reference = await world.report(room)
    await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {reference}")
    # A reporter typing a coordinator command in their own chat just talks to the dialogue.
    said = await world.say(room, "oppakken", "Vertel het in je eigen woorden")
    assert said
    async with world.app.sessions() as session:
        assert (await repo.get_case(session=session, reference=reference)).assigned_to is None
    # In a group room the bot does not take reports: it says once to use a direct message.
    group = await world.reporter.create_room("Team balie", invite=[world.bot_account.user_id,
                                                                   world.coordinator.user_id])
    await world.reporter.wait_joined(group, world.bot_account.user_id)
    await world.coordinator.client.join(group)
    await world.reporter.wait_joined(group, world.coordinator.user_id)
    start = len(world.reporter.received)
    await world.reporter.send(group, "Ik werd uitgescholden")
    await world.reporter.wait_for_text(group, "privégesprek", start=start)
    await world.reporter.send(group, "Nog een keer")
    await world.say(room, "help", "Wat ik kan")  # the bot is alive and answered in the DM ...
    hints = [m for m in await world.bot_messages(world.reporter, group) if "privégesprek" in m["body"]]
    assert len(hints) == 1  # ... but told the group only once
    async with world.app.sessions() as session:
        assert len(await repo.list_cases(session=session)) == 1


async def test_edits_and_reactions_are_handled_deliberately(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    story_event = await world.reporter.send(room, STORY)
    await world.reporter.wait_for_text(room, "Wat heb je nodig?")
    start = len(world.reporter.received)
    await world.reporter.send(room, "* nieuw verhaal", {"m.new_content": {"msgtype": "m.text", "body": "nieuw"},
                                                       "m.relates_to": {"rel_type": "m.replace",
                                                                        "event_id": story_event}})
    await world.reporter.wait_for_text(room, "Aanpassingen neem ik niet over", start=start)
    await world.reporter.client.room_send(room, "m.reaction", {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": story_event, "key": "👍"}})
    await world.say(room, "overslaan", "Kijk even of dit klopt")  # the dialogue went on where it was
    bodies = [m["body"] for m in await world.bot_messages(world.reporter, room)]
    assert sum("Aanpassingen" in b for b in bodies) == 1


async def test_restart_mid_dialogue_keeps_the_device_and_resumes(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=True)
    await world.say(room, STORY, "Wat heb je nodig?")
    device = world.adapter.client.device_id
    identity = world.adapter.client.olm.account.identity_keys
    await world.stop_bot()
    await world.reporter.send(room, "2")  # arrives while the bot is down
    await world.start_bot()
    summary = await world.reporter.wait_for_text(room, "Aangevinkt: 2.")
    assert summary
    assert world.adapter.client.device_id == device
    assert world.adapter.client.olm.account.identity_keys == identity
    await world.say(room, "verzenden", "opgeslagen onder nummer")
    bodies = [m["body"] for m in await world.bot_messages(world.reporter, room)]
    assert sum("Kijk even of dit klopt" in b for b in bodies) == 1
    assert sum("Aangevinkt: 2." in b for b in bodies) == 1


async def test_homeserver_down_while_a_report_is_submitted(world, synapse):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    await world.say(room, STORY, "Kijk even of dit klopt")
    engine = world.app.engine
    original = engine.handle
    stopped = asyncio.Event()

    async def handle_then_lose_the_server(message):
        replies = await original(message)
        if message.text == "verzenden":
            await asyncio.to_thread(synapse.stop)  # the report is saved; now the homeserver goes away
            stopped.set()
        return replies

    engine.handle = handle_then_lose_the_server
    await world.reporter.send(room, "verzenden")
    try:
        await asyncio.wait_for(stopped.wait(), 30)

        async def both_queued() -> None:
            while True:  # the confirmation is queued once its send has failed
                async with world.app.sessions() as session:
                    if await repo.count_pending_messages(session=session) >= 2:
                        return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(both_queued(), 60)
        async with world.app.sessions() as session:
            (case,) = await repo.list_cases(session=session)
    finally:
        if synapse.process is None:
            await asyncio.to_thread(synapse.start)
    confirmation = await world.reporter.wait_for_text(room, "opgeslagen onder nummer", timeout=90)
    assert case.reference in confirmation.body
    await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {case.reference}", timeout=90)

    async def all_marked_delivered() -> None:
        while True:  # the worker marks a message delivered just after the server accepted it
            async with world.app.sessions() as session:
                if await repo.count_pending_messages(session=session) == 0:
                    return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(all_marked_delivered(), 30)
    notes = [m for m in await world.bot_messages(world.coordinator, world.coordinator_room)
             if f"Nieuwe melding {case.reference}" in m["body"]]
    assert len(notes) == 1
    confirmations = [m for m in await world.bot_messages(world.reporter, room) if "opgeslagen onder" in m["body"]]
    assert len(confirmations) == 1


async def test_invite_from_a_server_that_is_not_allowed_is_refused(world):
    await world.setup(allowed_servers=["gemeente.example"])
    response = await world.reporter.client.room_create(is_direct=True, invite=[world.bot_account.user_id])
    room = response.room_id

    async def bot_left() -> None:
        while True:
            state = await world.reporter.client.room_get_state_event(room, "m.room.member",
                                                                       world.bot_account.user_id)
            if getattr(state, "content", {}).get("membership") == "leave":
                return
            await asyncio.sleep(0.1)  # polls the server's room state, bounded by wait_for

    await asyncio.wait_for(bot_left(), 30)
    async with world.app.sessions() as session:
        assert await repo.list_cases(session=session) == []


def test_demo_runs_the_whole_chain_and_leaves_no_process(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MELDBOT_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "demo", "--data", str(tmp_path / "demo")], cwd=tmp_path,
        input="ik werd net uitgescholden aan de balie\nok\nverzenden\n/coordinator login\n", capture_output=True,
        text=True,
        timeout=180, env={**environment, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Homeserver:  http://127.0.0.1:" in out and "@melder:meldbot.demo" in out and "melder-demo" in out
    reference = out.split("opgeslagen onder nummer ")[1].split(".")[0]
    assert f"[coördinatorkanaal] Nieuwe melding {reference}" in out
    assert "[coördinator, privé] " in out and "http://127.0.0.1:" in out.split("[coördinator, privé] ")[1]
    assert "/login/" in out.split("[coördinator, privé] ")[1]
    pid_file = tmp_path / "demo" / "synapse" / "homeserver.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().strip())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_first_start_does_not_answer_history(world):
    await world.setup(start_bot=False)
    response = await world.reporter.client.room_create(is_direct=True, invite=[world.bot_account.user_id])
    room = response.room_id
    await world.reporter.send(room, "Dit schreef ik voordat de bot er was: ik werd bedreigd")
    await world.start_bot()
    await world.reporter.wait_joined(room, world.bot_account.user_id)
    await world.say(room, "help", "Wat ik kan")
    bodies = [m["body"] for m in await world.bot_messages(world.reporter, room)]
    assert not any("Dank je dat je dit meldt" in b for b in bodies)


async def test_messages_sent_while_the_bot_was_down_are_all_answered_after_a_limited_sync(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    await world.say(room, "help", "Wat ik kan")
    await world.stop_bot()
    for i in range(15):  # more than a sync's timeline holds: the next sync is `limited`
        await world.reporter.send(room, "!help")
    await world.start_bot()

    async def all_answered() -> None:
        while True:
            bodies = [m["body"] for m in await world.bot_messages(world.reporter, room)]
            if sum("Wat ik kan" in b for b in bodies) >= 16:
                return
            await asyncio.sleep(0.2)  # polls the room's history, bounded by wait_for

    await asyncio.wait_for(all_answered(), 60)
    bodies = [m["body"] for m in await world.bot_messages(world.reporter, room)]
    assert sum("Wat ik kan" in b for b in bodies) == 16  # each once, none skipped, none twice


async def test_oversized_message_and_redaction(world):
    await world.setup()
    room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    long_story = "Hij schold me uit aan de balie. " + "En toen ging hij door. " * 2000
    start = len(world.reporter.received)
    await world.say(room, long_story, "Wat heb je nodig?")  # the turn's last reply
    notice = await world.reporter.wait_for_text(room, "erg lang", start=start)
    assert "4000" in notice.body
    async with world.app.sessions() as session:
        # the story kept is cut at the documented limit; the rest of the 46 kB is not stored
        from sqlalchemy import select
        from storage.models import Conversation
        conversation = next(c for c in await session.scalars(select(Conversation)) if c.conversation_key == room)
        assert len(conversation.state["draft"]["story"]) <= 4000
    start = len(world.reporter.received)
    event = await world.reporter.send(room, "blauw")
    await world.reporter.wait_for_text(room, "Dat begreep ik niet", start=start)
    await world.reporter.wait_for_text(room, "Wat heb je nodig?", start=start)  # the turn's last reply
    before = len(await world.bot_messages(world.reporter, room))
    await world.reporter.client.room_redact(room, event, reason="vergissing")
    await world.say(room, "2", "Aangevinkt: 2.")  # the dialogue is where it was: at the summary
    # The redaction got no answer of its own: only the summary was added.
    after = await world.bot_messages(world.reporter, room)
    assert len(after) == before + 1, "|".join(m["body"][:25].replace("\n", " ") for m in after)


async def test_password_login_happens_once_and_the_device_is_kept(world):
    await world.setup(start_bot=False)
    base = world.settings()
    password_settings = base.matrix.model_copy(update={"access_token": None, "device_id": None,
                                                       "password": world.bot_account.password})
    devices = []
    for _ in range(2):
        adapter = MatrixAdapter(settings=password_settings, store_dir=password_settings.store_dir, language="nl")
        world.app = await build(base.model_copy(update={"matrix": password_settings}), {"matrix": adapter})
        await world.app.start(web_server=False)
        devices.append(adapter.client.device_id)
        await world.stop_bot()
    assert devices[0] == devices[1] and devices[0] != world.bot_account.device_id
    stored = password_settings.store_dir / "credentials.json"
    assert stored.exists() and oct(stored.stat().st_mode & 0o777) == "0o600"


async def test_rate_limited_bot_delivers_everything_once_later(tmp_path):
    """A homeserver answering 429: reports are saved and confirmed, nothing is lost or doubled."""
    with LocalSynapse(tmp_path / "strict", message_rate={"per_second": 1, "burst_count": 2}) as strict:
        admin = strict.register("admin", admin=True)
        world = World(strict, tmp_path)
        for user in (world.reporter.user_id, world.coordinator.user_id):
            strict.exempt_from_rate_limits(user, admin)
        try:
            await world.setup()
            room = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
            references = []
            for _ in range(3):
                references.append(await world.report(room))

            async def delivered() -> None:
                while True:
                    async with world.app.sessions() as session:
                        if await repo.count_pending_messages(session=session) == 0:
                            return
                    await asyncio.sleep(0.2)  # the outbox works through 429s at the server's pace

            await asyncio.wait_for(delivered(), 120)
            notes = [m["body"] for m in await world.bot_messages(world.coordinator, world.coordinator_room)]
            for reference in references:
                assert sum(f"Nieuwe melding {reference}" in n for n in notes) == 1
            confirmations = [m for m in await world.bot_messages(world.reporter, room)
                             if "opgeslagen onder nummer" in m["body"]]
            assert len(confirmations) == 3
            async with world.app.sessions() as session:
                from sqlalchemy import func, select
                from storage.models import OutboxMessage
                retried = await session.scalar(select(func.count()).select_from(OutboxMessage)
                                               .where(OutboxMessage.attempts > 1))
            assert retried >= 1, "the server's 429 was met with a later retry"
        finally:
            await world.close()


async def accept_invite(client: ChatClient, inviter: str, timeout: float = 30) -> str:
    """Join the first room `inviter` invited `client` to; returns its ID once joined."""
    async def invited() -> str:
        while True:
            for room_id, room in client.client.invited_rooms.items():
                if room.inviter == inviter:
                    return room_id
            await asyncio.sleep(0.05)  # polls the client's synced invites, bounded by wait_for

    room_id = await asyncio.wait_for(invited(), timeout)
    response = await client.client.join(room_id)
    assert isinstance(response, JoinResponse), response
    await client.wait_joined(room_id, client.user_id, timeout)
    return room_id


async def raw_event(synapse: LocalSynapse, client: ChatClient, room_id: str, event_id: str) -> dict:
    """An event as the server stores it (not decrypted)."""
    url = f"{synapse.url}/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(event_id)}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {client.account.access_token}"}) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def test_login_in_the_coordinator_room_opens_an_encrypted_direct_chat_for_the_link(world, synapse):
    await world.setup()
    bot = world.bot_account.user_id
    start = len(world.coordinator.received)
    await world.coordinator.send(world.coordinator_room, "login")
    answer = await world.coordinator.wait_for_text(world.coordinator_room, "privégesprek", start=start)
    assert "/login/" not in answer.body
    # No direct chat yet: the bot opens one, encrypted, and the link is readable once joined.
    dm = await accept_invite(world.coordinator, bot)
    room = world.coordinator.client.rooms[dm]
    assert room.encrypted and set(room.users) == {bot, world.coordinator.user_id}
    link = await world.coordinator.wait_for_text(dm, "https://meldbot.example.nl/login/", start=start)
    assert "10 minuten" in link.body
    assert (await raw_event(synapse, world.coordinator, dm, link.event_id))["type"] == "m.room.encrypted"
    async with aiohttp.ClientSession() as session:
        url = f"{synapse.url}/_matrix/client/v3/user/{quote(bot)}/account_data/m.direct"
        async with session.get(url, headers={"Authorization": f"Bearer {world.bot_account.access_token}"}) as r:
            assert (await r.json()).get(world.coordinator.user_id) == [dm]
    # A second login reuses that direct chat: no second invite.
    start = len(world.coordinator.received)
    await world.coordinator.send(world.coordinator_room, "login")
    await world.coordinator.wait_for_text(world.coordinator_room, "privégesprek", start=start)
    second = await world.coordinator.wait_for_text(dm, "https://meldbot.example.nl/login/", start=start)
    assert second.body != link.body and not world.coordinator.client.invited_rooms
    room_texts = [m["body"] for m in await world.bot_messages(world.coordinator, world.coordinator_room)]
    assert not any("/login/" in text for text in room_texts)
    # A reporter (not in the coordinator room) gets no link.
    reporter_dm = await world.reporter.open_dm(bot, encrypted=False)
    refused = await world.say(reporter_dm, "login", "alleen voor coördinatoren")
    assert "/login/" not in refused.body


async def test_login_in_the_room_uses_the_direct_chat_the_coordinator_already_has(world):
    await world.setup()
    dm = await world.coordinator.open_dm(world.bot_account.user_id, encrypted=False)
    start = len(world.coordinator.received)
    await world.coordinator.send(dm, "hallo")
    await world.coordinator.wait_for_text(dm, "", start=start)
    start = len(world.coordinator.received)
    await world.coordinator.send(world.coordinator_room, "login")
    await world.coordinator.wait_for_text(world.coordinator_room, "privégesprek", start=start)
    link = await world.coordinator.wait_for_text(dm, "https://meldbot.example.nl/login/", start=start)
    assert "10 minuten" in link.body
    assert not world.coordinator.client.invited_rooms
    room_texts = [m["body"] for m in await world.bot_messages(world.coordinator, world.coordinator_room)]
    assert not any("/login/" in text for text in room_texts)

"""The Matrix store in the database: only the leader runs Matrix, and when it goes another instance
takes the same device over (same device ID and keys, no new login) from the shared snapshot; a
standby answers who is a coordinator from the roster the leader published."""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
import aiohttp
import asyncpg
import pytest
from nio import RoomCreateResponse
from nio.api import RoomVisibility

from bot.adapters.common import JsonFile, StoreError, StoreSeal
from bot.adapters.contract import DeliveryError
from bot.adapters.matrix.adapter import MEMBERSHIP_STALE_S, MatrixAdapter
from bot.adapters.matrix.shared import MAGIC, SharedStore, StoreTakenOver, unpack
from bot.adapters.matrix.store import store_file
from bot.app import build
from bot.core.shared_state import SharedState
from bot.config import (
    DatabaseSettings,
    MatrixSettings,
    OrganisationSettings,
    PrivacySettings,
    Settings,
    WebSettings,
)
from bot.devtools.chatclient import ChatClient
from bot.workers.leader import PostgresLeadership
from storage.db import asyncpg_dsn
from helpers import TEST_MASTER_KEY
from storage.crypto import encode_key
from support.world import until
from test_leader import on_postgres

STORY = "Een bezoeker schold me net uit aan de balie en noemde me een oplichter"


async def devices(homeserver: str, token: str) -> set[str]:
    """The bot account's devices as the homeserver lists them."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{homeserver}/_matrix/client/v3/devices",
                            headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200, await response.text()
            return {device["device_id"] for device in (await response.json())["devices"]}


async def raw_row(database_url: str, name: str) -> tuple[bytes, int]:
    """A shared document as the database holds it (sealed) and its version."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await connection.fetchrow("SELECT sealed, version FROM platform_state WHERE platform = 'matrix' "
                                        "AND name = $1", name)
    finally:
        await connection.close()
    assert row is not None, name
    return bytes(row["sealed"]), int(row["version"])


class Instance:
    """One Meldbot instance (`meldbot run` wiring) with a Matrix store_dir of its own."""

    def __init__(self, settings: Settings, database_url: str):
        self.settings = settings
        self.adapter = MatrixAdapter(settings=settings.matrix, store_dir=settings.matrix.store_dir, language="nl")
        self.leadership = PostgresLeadership(database_url, poll=0.05)
        self.app = None

    async def start(self) -> "Instance":
        self.app = await build(self.settings, {"matrix": self.adapter}, leadership=self.leadership)
        await self.app.start(web_server=False)
        return self

    async def stop(self) -> None:
        if self.app is not None and not self.app.stop_event.is_set():
            await self.app.stop()


@on_postgres
async def test_a_standby_takes_the_device_over_from_the_database_and_keeps_the_encrypted_chat(
        synapse, tmp_path, database_url):
    tag = uuid.uuid4().hex[:8]
    bot = synapse.register(f"meldbot-{tag}")
    reporter = ChatClient(synapse.url, synapse.register(f"anna-{tag}"), tmp_path / "anna")
    coordinator = ChatClient(synapse.url, synapse.register(f"coco-{tag}"), tmp_path / "coco")
    instances: list[Instance] = []
    extra: list[ChatClient] = []
    try:
        for client in (reporter, coordinator):
            await client.start()
        # The room is configured by alias: a standby learns its ID only from what the leader published.
        created = await coordinator.client.room_create(visibility=RoomVisibility.private, name="Coördinatie",
                                                       alias=f"coordinatie-{tag}", invite=[bot.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        def settings(store: str) -> Settings:
            return Settings(
                organisation=OrganisationSettings(name="Gemeente Testdam"),
                database=DatabaseSettings(url=database_url),
                web=WebSettings(public_url="https://meldbot.example.nl"),
                # A password: the first instance logs in once; the other must never log in again.
                matrix=MatrixSettings(homeserver=synapse.url, user_id=bot.user_id, password=bot.password,
                                      store_dir=tmp_path / store,
                                      coordinator_room=f"#coordinatie-{tag}:{synapse.server_name}"),
                privacy=PrivacySettings(key=encode_key(TEST_MASTER_KEY)),
            )

        a = await Instance(settings("store-a"), database_url).start()
        instances.append(a)
        b = await Instance(settings("store-b"), database_url).start()
        instances.append(b)
        assert a.leadership.is_leading() and not b.leadership.is_leading()
        assert a.adapter.client is not None and b.adapter.client is None  # only the leader runs Matrix
        await coordinator.wait_joined(room_id, bot.user_id)
        device = a.adapter.client.device_id
        identity = dict(a.adapter.client.olm.account.identity_keys)
        known_devices = await devices(synapse.url, bot.access_token)
        assert device in known_devices

        room = await reporter.open_dm(bot.user_id, encrypted=True)
        start = len(reporter.received)
        await reporter.send(room, STORY)
        assert await reporter.wait_for_text(room, "Wat heb je nodig?", start=start)

        # The standby does not sync, yet knows the coordinator room and who is in it (once the
        # leader's sync has brought its own join and published the members).
        async def published() -> bool:
            return (await b.adapter._shared.roster() or {}).get("members") == [coordinator.user_id]

        await until(published, 30, "the roster to be published")
        assert await b.adapter.is_coordinator(coordinator.user_id) is True
        assert await b.adapter.is_coordinator(reporter.user_id) is False
        assert b.adapter.coordinator_destination() == room_id

        # The snapshot is sealed: the Olm account's identity keys are not in the row in clear.
        shared = a.adapter._shared
        await until(lambda: not shared.pending(), 30, "the writer to save the last changes")
        sealed, version = await raw_row(database_url, "store")
        for key in identity.values():
            assert key.encode() not in sealed
        assert MAGIC not in sealed and b"SQLite format 3" not in sealed
        print(f"\nMatrix store snapshot: {shared.size} bytes (sealed row {len(sealed)} bytes)")

        # An idle sync writes no new snapshot: a message nobody answers (the room itself) only moves
        # the sync token on.
        handled: list[str] = []
        on_event = a.adapter._on_event

        async def recording(room, event):
            await on_event(room, event)
            handled.append(getattr(event, "event_id", ""))

        a.adapter._on_event = recording
        _, token_version = await raw_row(database_url, "sync")
        event_id = await coordinator.send(room_id, "even iets anders")
        await until(lambda: event_id in handled and not shared.pending(), 30, "the message to be handled")
        assert (await raw_row(database_url, "sync"))[1] > token_version  # its token was shared
        assert (await raw_row(database_url, "store"))[1] == version

        # Membership changes reach the standby: invited is not enough, joined is.
        cleo = ChatClient(synapse.url, synapse.register(f"cleo-{tag}"), tmp_path / "cleo")
        extra.append(cleo)
        await cleo.start()
        invited = await coordinator.client.room_invite(room_id, cleo.user_id)
        assert type(invited).__name__ == "RoomInviteResponse", invited
        await until(lambda: cleo.user_id in a.adapter.client.rooms[room_id].invited_users, 30, "the invite")
        assert await b.adapter.is_coordinator(cleo.user_id) is False
        await cleo.client.join(room_id)

        async def cleo_coordinates() -> bool:
            return await b.adapter.is_coordinator(cleo.user_id)

        await until(cleo_coordinates, 30, "the new member to be published")

        # The leader's machine is lost: its store_dir is gone, and it never stopped cleanly.
        a.adapter._shared = None  # no last save at stop: only what it saved while running counts
        await a.app.stop()
        shutil.rmtree(a.settings.matrix.store_dir)
        await until(lambda: b.leadership.is_leading() and b.adapter._running, 30, "the standby to take over")
        assert b.adapter.client.device_id == device
        assert dict(b.adapter.client.olm.account.identity_keys) == identity
        assert await devices(synapse.url, bot.access_token) == known_devices  # no new login, no new device

        # B decrypts the reporter's next message (same Megolm session) and the reporter reads B's answer.
        start = len(reporter.received)
        await reporter.send(room, "2")
        summary = await reporter.wait_for_text(room, "Aangevinkt: 2.", start=start)
        assert summary.sender == bot.user_id
        assert not [r for r in reporter.received if "ontsleutelen" in r.body]  # nothing was undecryptable

        # Leadership lost and regained in one process: the same adapter stops and starts again.
        await b.app._follow()
        assert await b.adapter.is_coordinator(coordinator.user_id) is True  # from the roster now
        await b.app._lead()
        assert b.adapter.client.device_id == device
        start = len(reporter.received)
        await reporter.send(room, "verzenden")
        assert await reporter.wait_for_text(room, "opgeslagen onder nummer", start=start)
        assert await devices(synapse.url, bot.access_token) == known_devices
    finally:
        for instance in reversed(instances):
            await instance.stop()
        for client in (reporter, coordinator, *extra):
            await client.stop()


def _store(tmp_path, name: str, state) -> tuple[SharedStore, dict[str, JsonFile]]:
    seal = StoreSeal()
    seal.use_key(b"k" * 32)
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    documents = {n: JsonFile(folder / n, seal) for n in ("credentials.json", "told_groups.json", "direct_chats.json")}
    return SharedStore(state, folder, "@meldbot:test.local", documents), documents


def _nio_database(store: SharedStore, device: str, rows: int) -> None:
    connection = sqlite3.connect(store_file(store.store_dir, store.user_id, device))
    with connection:
        connection.execute("CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, account BLOB)")
        connection.executemany("INSERT INTO accounts (account) VALUES (?)", [(b"pickle",)] * rows)
    connection.close()


@pytest.mark.both_databases
async def test_an_unchanged_store_is_not_written_again_and_the_token_follows_the_store(tmp_path, sessions):
    state = SharedState(sessions, "matrix")
    first, documents = _store(tmp_path, "first", state)
    documents["credentials.json"].save({"user_id": first.user_id, "access_token": "t", "device_id": "DEV"})
    _nio_database(first, "DEV", 1)
    # An existing single-instance install: nothing is shared yet, the local store is uploaded.
    await first.restore(None)
    stored, version = await state.load("store")
    assert stored is not None and unpack(stored)[0]["device_id"] == "DEV"
    await first.flush()
    assert await state.version("store") == version  # nothing changed: nothing written
    first.committed("s1")
    await first.flush()
    assert (await state.load_json("sync"))["token"] == "s1" and await state.version("store") == version

    # Another store_dir restores the snapshot: the database, the documents and the token.
    second, second_documents = _store(tmp_path, "second", state)
    stale = store_file(second.store_dir, second.user_id, "DEV")
    stale.with_name(stale.name + "-journal").write_bytes(b"a journal of another database")
    await second.restore(None)
    assert not stale.with_name(stale.name + "-journal").exists()
    assert second_documents["credentials.json"].load()["device_id"] == "DEV"
    assert (second.store_dir / "sync_token").read_text() == "s1"
    rows = sqlite3.connect(stale).execute("SELECT COUNT(*) FROM accounts").fetchone()[0]
    assert rows == 1
    _nio_database(second, "DEV", 1)  # the new leader's store changes
    second.committed("s2")
    await second.flush()
    assert await state.version("store") != version

    # The first one no longer owns the store: it does not write over the new leader's snapshot.
    _nio_database(first, "DEV", 5)
    with pytest.raises(StoreTakenOver):
        await first.flush()
    # When it leads again, it restores what the other wrote first.
    await first.restore(None)
    assert sqlite3.connect(store_file(first.store_dir, first.user_id, "DEV")).execute(
        "SELECT COUNT(*) FROM accounts").fetchone()[0] == 2
    assert (first.store_dir / "sync_token").read_text() == "s2"


async def test_a_device_whose_store_is_lost_everywhere_gets_no_second_set_of_keys(synapse, tmp_path):
    """The store is gone from store_dir and the database (a new database, the same configured
    device): the start is refused by name rather than nio making new keys under the old device ID."""
    bot = synapse.register(f"meldbot-{uuid.uuid4().hex[:8]}")

    def settings(name: str) -> Settings:
        return Settings(database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / name}.db"),
                        matrix=MatrixSettings(homeserver=synapse.url, user_id=bot.user_id,
                                              access_token=bot.access_token, device_id=bot.device_id,
                                              store_dir=tmp_path / f"{name}-store"),
                        privacy=PrivacySettings(key=encode_key(TEST_MASTER_KEY)))

    first = settings("first")
    app = await build(first, {"matrix": MatrixAdapter(settings=first.matrix, store_dir=first.matrix.store_dir,
                                                      language="nl")})
    await app.start(web_server=False)  # a new device's first start: its keys are uploaded
    identity = app.adapters["matrix"].client.olm.account.identity_keys
    await app.stop()
    second = settings("second")
    app = await build(second, {"matrix": MatrixAdapter(settings=second.matrix, store_dir=second.matrix.store_dir,
                                                       language="nl")})
    try:
        with pytest.raises(StoreError, match=f"device {bot.device_id} is neither in .* nor in the database"):
            await app.start(web_server=False)
    finally:
        await app.stop()
    assert not store_file(second.matrix.store_dir, bot.user_id, bot.device_id).exists()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{synapse.url}/_matrix/client/v3/keys/query",
                             json={"device_keys": {bot.user_id: [bot.device_id]}},
                             headers={"Authorization": f"Bearer {bot.access_token}"}) as response:
            published = (await response.json())["device_keys"][bot.user_id][bot.device_id]["keys"]
    assert published[f"ed25519:{bot.device_id}"] == identity["ed25519"]  # the first keys stand


@pytest.mark.both_databases
async def test_a_standby_refuses_to_tell_coordinators_from_a_roster_nobody_checked_lately(tmp_path, sessions,
                                                                                          monkeypatch):
    """The leader writes the roster when it changes and at least every half minute; a standby asked
    who coordinates answers from it only while it is fresh (else it fails closed, as the leader does
    without a recent sync)."""
    leader, _ = _store(tmp_path, "leader", SharedState(sessions, "matrix"))
    await leader.publish_roster("!coord:test.local", {"@coco:test.local"})
    _, first = await SharedState(sessions, "matrix").load("roster")
    await leader.publish_roster("!coord:test.local", {"@coco:test.local"})  # unchanged, just written
    assert (await SharedState(sessions, "matrix").load("roster"))[1] == first
    standby = MatrixAdapter(settings=MatrixSettings(homeserver="http://127.0.0.1:9", user_id="@meldbot:test.local"),
                            store_dir=tmp_path / "standby", language="nl")
    standby.use_shared_state(SharedState(sessions, "matrix"))
    assert await standby.is_coordinator("@coco:test.local") is True
    assert await standby.is_coordinator("@anna:test.local") is False
    later = time.time() + MEMBERSHIP_STALE_S + 1
    monkeypatch.setattr(time, "time", lambda: later)  # the leader stopped syncing that long ago
    with pytest.raises(DeliveryError, match="not synced lately"):
        await standby.is_coordinator("@coco:test.local")
    await leader.publish_roster("!coord:test.local", {"@coco:test.local"})  # a sync again: the heartbeat
    assert (await SharedState(sessions, "matrix").load("roster"))[1] > first
    assert await standby.is_coordinator("@coco:test.local") is True

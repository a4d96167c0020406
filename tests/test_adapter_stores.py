"""The adapters' own stores (issue #11): state files sealed with the store key the app derives from
the master key, old plain files read and sealed, nothing replaced that cannot be opened; nio's
encryption store moved from nio's default pickle key to Meldbot's own on the real Synapse; and
whether a Matrix room may hold relayed text (only when it is encrypted)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import stat
import uuid
from pathlib import Path

import pytest
from nio.crypto import OlmAccount

from bot.adapters.common import JsonFile, StoreError, StoreSeal, prepare_store
from bot.adapters.console import ConsoleAdapter
from bot.adapters.matrix.adapter import MatrixAdapter
from bot.adapters.matrix.store import NIO_DEFAULT_PICKLE_KEY, migrate_pickles, store_file
from bot.adapters.teams.adapter import TeamsAdapter
from bot.config import MatrixSettings, TeamsSettings
from bot.devtools.chatclient import ChatClient
from dialogs import Reply

TOKEN = "syt_bWVsZGJvdA_secretaccesstoken_1a2b3c"
USER = "@meldbot-canary:gemeente.test"
SERVICE_URL = "https://smba.trafficmanager.net/emea/canary-tenant/"
CONVERSATION = "a:1canary-personal-conversation"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sealed_file(path: Path, key: bytes | None) -> JsonFile:
    seal = StoreSeal()
    if key is not None:
        seal.use_key(key)
    return JsonFile(path, seal)


# -- state files --------------------------------------------------------------------------------------


def test_a_state_file_saved_with_a_store_key_is_no_readable_json(tmp_path):
    key = os.urandom(32)
    path = tmp_path / "credentials.json"
    sealed_file(path, key).save({"user_id": USER, "access_token": TOKEN, "device_id": "CANARYDEV"})
    data = path.read_bytes()
    for fragment in (TOKEN, "secretaccesstoken", USER, "meldbot-canary", "CANARYDEV", "access_token"):
        assert fragment.encode() not in data
    with pytest.raises(ValueError):
        json.loads(data)
    assert mode(path) == 0o600
    # Another process with the same key (the next start) reads it back.
    assert sealed_file(path, key).load() == {"user_id": USER, "access_token": TOKEN, "device_id": "CANARYDEV"}


def test_an_old_plain_file_is_read_and_sealed_at_once(tmp_path, caplog):
    key = os.urandom(32)
    path = tmp_path / "teams-state.json"
    path.write_text(json.dumps({"service_url": SERVICE_URL, "channel_id": CONVERSATION}))
    os.chmod(path, 0o644)
    with caplog.at_level(logging.INFO):
        assert sealed_file(path, key).load({}) == {"service_url": SERVICE_URL, "channel_id": CONVERSATION}
    # Sealed without waiting for a save: a file such as the credentials is rarely written again.
    assert CONVERSATION.encode() not in path.read_bytes() and SERVICE_URL.encode() not in path.read_bytes()
    assert mode(path) == 0o600
    assert sealed_file(path, key).load({}) == {"service_url": SERVICE_URL, "channel_id": CONVERSATION}
    assert "sealed now" in caplog.text and CONVERSATION not in caplog.text


def test_a_sealed_file_under_another_key_is_refused_by_name_and_left_alone(tmp_path):
    path = tmp_path / "direct_chats.json"
    sealed_file(path, os.urandom(32)).save({"opened": {USER: "!room:gemeente.test"}})
    before = path.read_bytes()
    with pytest.raises(StoreError, match="direct_chats.json") as raised:
        sealed_file(path, os.urandom(32)).load({})
    assert "left unchanged" in str(raised.value)
    assert path.read_bytes() == before


def test_without_a_store_key_a_sealed_file_is_neither_read_nor_replaced(tmp_path):
    path = tmp_path / "told_groups.json"
    sealed_file(path, os.urandom(32)).save(["!group:gemeente.test"])
    before = path.read_bytes()
    plain = sealed_file(path, None)
    with pytest.raises(StoreError, match="told_groups.json"):
        plain.load([])  # never the default: a save of it would lose what the file holds
    with pytest.raises(StoreError, match="told_groups.json"):
        plain.save([])
    assert path.read_bytes() == before


def test_without_a_store_key_files_stay_plain_json_as_before(tmp_path):
    path = tmp_path / "told_groups.json"
    plain = sealed_file(path, None)
    plain.save(["!group:gemeente.test"])
    assert json.loads(path.read_text()) == ["!group:gemeente.test"]
    assert mode(path) == 0o600
    assert plain.load([]) == ["!group:gemeente.test"]


def test_a_sealed_file_cannot_be_passed_off_as_another(tmp_path):
    key = os.urandom(32)
    sealed_file(tmp_path / "credentials.json", key).save({"access_token": TOKEN})
    (tmp_path / "told_groups.json").write_bytes((tmp_path / "credentials.json").read_bytes())
    with pytest.raises(StoreError, match="told_groups.json"):
        sealed_file(tmp_path / "told_groups.json", key).load([])


def test_store_directories_are_closed_to_others(tmp_path):
    store = tmp_path / "store"
    store.mkdir(mode=0o755)
    os.chmod(store, 0o755)
    prepare_store(store)
    assert mode(store) == 0o700
    prepare_store(tmp_path / "new" / "store")
    assert mode(tmp_path / "new" / "store") == 0o700


class RecordingBot:
    """Stands in for the engine: records the messages and answers each with "ok <text>"."""

    def __init__(self):
        self.texts: list[str] = []
        self.arrived = asyncio.Event()

    async def handle(self, message):
        self.texts.append(message.text)
        self.arrived.set()
        return [Reply(f"ok {message.text}")]

    async def handle_coordinator(self, message):
        return []

    async def defer_replies(self, platform, address, replies):
        raise AssertionError("nothing should be deferred here")

    async def redeem_claim_code(self, platform, code):
        return False


async def test_teams_state_is_sealed_by_the_adapter_and_an_old_plain_one_kept(tmp_path):
    """Without the app's database the state is a sealed file in store_dir (`FileState`); an old plain
    `teams-state.json` is imported into it once, and sealed where it stays."""
    store = tmp_path / "teams"
    store.mkdir(mode=0o755)
    os.chmod(store, 0o755)
    old = store / "teams-state.json"
    old.write_text(json.dumps({"service_url": SERVICE_URL, "channel_id": "19:canary@thread.tacv2"}))
    state = store / "shared-state"
    key = os.urandom(32)
    adapter = TeamsAdapter(settings=TeamsSettings(allow_unauthenticated=True), store_dir=store, language="nl")
    adapter.use_store_key(key)
    await adapter.start(RecordingBot())
    try:
        assert adapter.state["channel_id"] == "19:canary@thread.tacv2"

        def add(value):
            value["references"] = {"anna": CONVERSATION}
            return True

        await adapter._update(add)
    finally:
        await adapter.stop()
    assert not old.exists()
    imported = old.with_name("teams-state.json.imported")
    for path in (state, imported):
        data = path.read_bytes()
        assert b"canary" not in data and SERVICE_URL.encode() not in data
        assert mode(path) == 0o600
    assert mode(store) == 0o700
    data = state.read_bytes()
    # The next start with the same key has everything back; another key is refused by name.
    again = TeamsAdapter(settings=TeamsSettings(allow_unauthenticated=True), store_dir=store, language="nl")
    again.use_store_key(key)
    await again.start(RecordingBot())
    await again.stop()
    assert again.state["references"] == {"anna": CONVERSATION}
    assert again.state["channel_id"] == "19:canary@thread.tacv2"
    other = TeamsAdapter(settings=TeamsSettings(allow_unauthenticated=True), store_dir=store, language="nl")
    other.use_store_key(os.urandom(32))
    with pytest.raises(StoreError, match="shared-state"):
        await other.start(RecordingBot())
    assert state.read_bytes() == data


async def test_an_old_teams_state_file_under_another_key_stops_the_start_and_is_left_alone(tmp_path):
    store = tmp_path / "teams"
    old = store / "teams-state.json"
    sealed_file(old, os.urandom(32)).save({"channel_id": "19:canary@thread.tacv2"})
    before = old.read_bytes()
    adapter = TeamsAdapter(settings=TeamsSettings(allow_unauthenticated=True), store_dir=store, language="nl")
    adapter.use_store_key(os.urandom(32))
    with pytest.raises(StoreError, match="teams-state.json"):
        await adapter.start(RecordingBot())
    assert old.read_bytes() == before and not (store / "shared-state").exists()


def test_console_and_teams_allow_thread_content():
    import io

    console = ConsoleAdapter(user="anna", language="nl", stdin=io.StringIO(), stdout=io.StringIO())
    console.use_store_key(os.urandom(32))
    assert console.thread_content_allowed("coordinator") is True
    teams = TeamsAdapter(settings=TeamsSettings(allow_unauthenticated=True), store_dir=Path("unused"), language="nl")
    assert teams.thread_content_allowed("19:any@thread.tacv2") is True


# -- Matrix: nio's store and encrypted rooms, on the real Synapse -------------------------------------

PICKLED = {"accounts": "account", "olmsessions": "session", "megolminboundsessions": "session"}


def pickled_rows(path: Path) -> dict[str, list[bytes]]:
    with sqlite3.connect(path) as connection:
        return {table: [bytes(row[0]) for row in connection.execute(f"SELECT {column} FROM {table}")]
                for table, column in PICKLED.items()}


def opens(blob: bytes, passphrase: str) -> bool:
    try:
        OlmAccount.from_pickle(blob, passphrase)
    except Exception:
        return False
    return True


async def until(predicate, timeout: float = 30) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)  # polls synced state, bounded by the timeout

    await asyncio.wait_for(poll(), timeout)


class MatrixStores:
    """A bot account that logs in with its password (so credentials.json is written), a person with
    an encrypted direct chat to it, and a plain coordinator room."""

    def __init__(self, synapse, tmp: Path):
        tag = uuid.uuid4().hex[:8]
        self.synapse = synapse
        self.account = synapse.register(f"store-bot-{tag}")
        self.person = ChatClient(synapse.url, synapse.register(f"store-anna-{tag}"), tmp / "anna")
        self.store = tmp / "bot-store"
        self.room = ""
        self.dm = ""

    def settings(self, configured_login: bool = False) -> MatrixSettings:
        if configured_login:  # no credentials.json: the access token and device come from the config
            return MatrixSettings(homeserver=self.synapse.url, user_id=self.account.user_id,
                                  access_token=self.account.access_token, device_id=self.account.device_id,
                                  store_dir=self.store, coordinator_room=self.room)
        return MatrixSettings(homeserver=self.synapse.url, user_id=self.account.user_id,
                              password=self.account.password, store_dir=self.store, coordinator_room=self.room)

    async def start(self, key: bytes | None, bot: RecordingBot, configured_login: bool = False) -> MatrixAdapter:
        adapter = MatrixAdapter(settings=self.settings(configured_login), store_dir=self.store, language="nl")
        if key is not None:
            adapter.use_store_key(key)
        await adapter.start(bot)
        return adapter

    async def exchange(self, adapter: MatrixAdapter, bot: RecordingBot, text: str) -> None:
        """The person writes `text` encrypted; the bot reads it and answers encrypted."""
        bot.arrived.clear()
        await self.person.send(self.dm, text)
        await asyncio.wait_for(bot.arrived.wait(), 30)
        assert bot.texts[-1] == text  # decrypted by the bot (an undecryptable event never gets here)
        # The person's client keeps only what it could decrypt.
        await self.person.wait_for_text(self.dm, f"ok {text}")


@pytest.fixture
async def matrix(synapse, tmp_path):
    world = MatrixStores(synapse, tmp_path)
    await world.person.start()
    world.room = await world.person.create_room("coordinators", invite=[world.account.user_id])
    try:
        yield world
    finally:
        await world.person.stop()


async def test_a_store_pickled_with_nios_default_key_moves_to_the_store_key(matrix, caplog):
    # First start as before there was a store key: nio's default pickle key, plain state files.
    bot = RecordingBot()
    adapter = await matrix.start(None, bot)
    try:
        matrix.dm = await matrix.person.open_dm(matrix.account.user_id, encrypted=True)
        await until(lambda: matrix.dm in adapter.client.rooms)
        await matrix.exchange(adapter, bot, "voor de sleutel")
        device = adapter.client.device_id
        identity = dict(adapter.client.olm.account.identity_keys)
    finally:
        await adapter.stop()
    credentials = matrix.store / "credentials.json"
    assert json.loads(credentials.read_text())["device_id"] == device  # plain, as before
    database = store_file(matrix.store, matrix.account.user_id, device)
    before = pickled_rows(database)
    assert len(before["accounts"]) == 1 and before["olmsessions"] and before["megolminboundsessions"]
    assert opens(before["accounts"][0], NIO_DEFAULT_PICKLE_KEY)

    # Second start with the store key: same device, same identity, everything re-pickled.
    key = os.urandom(32)
    bot = RecordingBot()
    with caplog.at_level(logging.INFO):
        adapter = await matrix.start(key, bot)
    try:
        assert adapter.client.device_id == device
        assert adapter.client.olm.account.identity_keys == identity
        after = pickled_rows(database)
        assert len(after["olmsessions"]) >= len(before["olmsessions"])
        assert not opens(after["accounts"][0], NIO_DEFAULT_PICKLE_KEY)
        assert opens(after["accounts"][0], adapter._pickle_key)
        # Every pickled row changed (none left under the default key); the migrated sessions still work.
        for table in ("olmsessions", "megolminboundsessions"):
            assert not set(before[table]) & set(after[table]), table
        await matrix.exchange(adapter, bot, "na de verhuizing")
    finally:
        await adapter.stop()
    moved = [r.getMessage() for r in caplog.records if "re-pickled under the store key" in r.getMessage()]
    assert len(moved) == 1 and "1 account" in moved[0]
    assert adapter._pickle_key not in caplog.text and TOKEN not in caplog.text
    # The state files were sealed on this start: no token, no user IDs in them.
    for path in (credentials, matrix.store / "direct_chats.json"):
        data = path.read_bytes()
        assert matrix.account.user_id.encode() not in data and matrix.person.user_id.encode() not in data, path
        assert b"access_token" not in data and mode(path) == 0o600, path
    assert mode(matrix.store) == 0o700 and mode(database) == 0o600

    # A third start with the same key finds nothing to move; with another key nothing is touched.
    bot = RecordingBot()
    adapter = await matrix.start(key, bot)
    try:
        assert adapter.client.olm.account.identity_keys == identity
        await matrix.exchange(adapter, bot, "derde keer")
    finally:
        await adapter.stop()
    unchanged = database.read_bytes()
    with pytest.raises(StoreError, match="credentials.json|direct_chats.json|told_groups.json"):
        await matrix.start(os.urandom(32), RecordingBot())
    with pytest.raises(StoreError, match=re.escape(database.name)):
        migrate_pickles(database, matrix.account.user_id, device, "another store key")
    assert database.read_bytes() == unchanged


async def test_relayed_text_may_go_only_into_an_encrypted_room(matrix):
    bot = RecordingBot()
    adapter = await matrix.start(os.urandom(32), bot)
    try:
        room = adapter.coordinator_destination()
        assert room == matrix.room
        assert adapter.thread_content_allowed(room) is False  # a plain room: the homeserver reads along
        matrix.dm = await matrix.person.open_dm(matrix.account.user_id, encrypted=True)
        await until(lambda: matrix.dm in adapter.client.rooms)
        assert adapter.thread_content_allowed(matrix.dm) is True
        server = matrix.account.user_id.split(":", 1)[1]
        assert adapter.thread_content_allowed(f"!unknown-room:{server}") is False
        # The coordinators turn encryption on in their room: from the bot's next sync on, text may go in.
        await matrix.person.client.room_put_state(room, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
        await until(lambda: adapter.client.rooms[room].encrypted)
        assert adapter.thread_content_allowed(room) is True
    finally:
        await adapter.stop()


async def test_an_encryption_store_is_never_opened_or_replaced_under_another_key(matrix):
    key = os.urandom(32)
    adapter = await matrix.start(key, RecordingBot(), configured_login=True)
    identity = dict(adapter.client.olm.account.identity_keys)
    await adapter.stop()
    database = store_file(matrix.store, matrix.account.user_id, matrix.account.device_id)
    unchanged = database.read_bytes()
    # Another store key (another master key): refused by name before nio opens the store.
    with pytest.raises(StoreError, match="opens neither with the store key"):
        await matrix.start(os.urandom(32), RecordingBot(), configured_login=True)
    # No store key at all (nio's default): nio cannot open it, and never makes a new account over it.
    with pytest.raises(StoreError, match=re.escape(database.name) + ".*cannot be opened with nio's default key"):
        await matrix.start(None, RecordingBot(), configured_login=True)
    assert database.read_bytes() == unchanged
    adapter = await matrix.start(key, RecordingBot(), configured_login=True)
    try:
        assert adapter.client.olm.account.identity_keys == identity
    finally:
        await adapter.stop()


def test_an_optional_capability_with_another_shape_is_a_contract_problem():
    import io

    from bot.adapters.contract import contract_problems

    class Odd(ConsoleAdapter):
        async def thread_content_allowed(self, destination):  # the outbox calls it without await
            return True

        def use_store_key(self, key, purpose):
            pass

    problems = contract_problems(Odd(user="anna", language="nl", stdin=io.StringIO(), stdout=io.StringIO()))
    assert any(p.startswith("thread_content_allowed: must not be async") for p in problems)
    assert any(p.startswith("use_store_key: parameters") for p in problems)
    assert contract_problems(ConsoleAdapter(user="anna", language="nl", stdin=io.StringIO(),
                                            stdout=io.StringIO())) == []

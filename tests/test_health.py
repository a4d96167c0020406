"""/livez and /readyz with the real aiohttp app: the database down (a closed port), a database not
migrated to head, platforms not connected (Matrix without a recent sync), leading or not; and the
web address from MELDBOT_WEB__LISTEN."""

from __future__ import annotations

import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from alembic.script import ScriptDirectory

import storage
from bot.adapters.matrix.adapter import MatrixAdapter
from bot.app import build
from bot.config import ConfigError, MatrixSettings, Settings, load_settings
from bot.devtools.localserver import free_port
from bot.web.health import Readiness
from bot.web.server import create_app
from helpers import TEST_MASTER_KEY
from stack import RecordingPlatform, Stack
from storage.crypto import encode_key
from storage.db import alembic_config
from teams_harness import world as teams_world  # noqa: F401 - the Teams `world` fixture, renamed below
from test_matrix import World as MatrixWorld


def settings_for(tmp_path, **values) -> Settings:
    return Settings(database={"url": f"sqlite+aiosqlite:///{tmp_path / 'meldbot.db'}"},
                    privacy={"key": encode_key(TEST_MASTER_KEY)}, **values)


def closed_port_engine():
    """A PostgreSQL URL on a loopback port nothing listens on: the database is down."""
    return storage.create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/meldbot")


@pytest.mark.both_databases
async def test_ready_when_migrated_and_every_platform_is_connected(database_url):
    stack = await Stack.start(database_url)
    try:
        async with TestClient(TestServer(stack.meldbot.web_app())) as client:
            response = await client.get("/readyz")
            assert response.status == 200
            assert await response.json() == {"status": "ready", "database": "ok", "migrations": "ok",
                                              "platforms": {"chat": "ok"}, "leader": True}
            assert (await client.get("/livez")).status == 200
            assert (await client.get("/healthz")).status == 200
    finally:
        await stack.close()


async def test_database_down_is_named_and_livez_stays_up():
    db = closed_port_engine()
    app = create_app(db_engine=db, readiness=Readiness(db=db, platforms={"console": lambda: True}))
    try:
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/readyz")
            assert response.status == 503
            body = await response.json()
            assert body["status"] == "unavailable" and body["failing"] == ["database"]
            assert body["database"] == "unavailable" and body["platforms"] == {"console": "ok"}
            assert "Traceback" not in await response.text()
            live = await client.get("/livez")  # no database call: the process is fine
            assert live.status == 200 and await live.json() == {"status": "alive"}
            assert (await client.get("/healthz")).status == 503  # as before
    finally:
        await db.dispose()


async def test_an_empty_database_is_not_ready(tmp_path):
    db = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        async with TestClient(TestServer(create_app(db_engine=db, readiness=Readiness(db=db)))) as client:
            response = await client.get("/readyz")
            assert response.status == 503
            body = await response.json()
            assert body["failing"] == ["migrations"] and body["database"] == "ok"
            assert "no revision" in body["migrations"] and "meldbot db upgrade" in body["migrations"]
    finally:
        await db.dispose()


@pytest.mark.both_databases
async def test_a_database_one_migration_behind_is_not_ready(database_url):
    head = storage.head_revision()
    previous = ScriptDirectory.from_config(alembic_config()).get_revision(head).down_revision
    assert isinstance(previous, str)
    db = storage.create_engine(database_url)
    try:
        await storage.upgrade(db, previous, master=TEST_MASTER_KEY)
        readiness = Readiness(db=db)
        ready, body = await readiness.check()
        assert not ready and body["failing"] == ["migrations"]
        assert f"database at {previous}" in body["migrations"] and f"code at {head}" in body["migrations"]
        await storage.upgrade(db, "head", master=TEST_MASTER_KEY)
        assert await readiness.check() == (True, {"status": "ready", "database": "ok", "migrations": "ok",
                                                  "platforms": {}, "leader": True})
    finally:
        await db.dispose()


async def test_a_matrix_account_that_has_not_synced_is_not_ready_and_not_leading_is_still_ready(tmp_path):
    matrix = MatrixAdapter(settings=MatrixSettings(homeserver="http://127.0.0.1:9", user_id="@meldbot:test.local"),
                           store_dir=tmp_path / "matrix", language="nl")
    chat = RecordingPlatform()
    leading = [True]
    app = await build(settings_for(tmp_path), {"matrix": matrix, "chat": chat}, leader=lambda: leading[0])
    try:
        async with TestClient(TestServer(app.web_app())) as client:
            # The leader runs Matrix (a single-instance adapter): not synced, not ready.
            response = await client.get("/readyz")
            assert response.status == 503
            body = await response.json()
            assert body["failing"] == ["platform:matrix"]
            assert body["platforms"] == {"matrix": "not connected", "chat": "ok"}
            assert body["leader"] is True
            # A standby does not run Matrix: its not having synced does not make it unready.
            leading[0] = False
            response = await client.get("/readyz")
            assert response.status == 200
            assert await response.json() == {"status": "ready", "database": "ok", "migrations": "ok",
                                              "platforms": {"matrix": "ok", "chat": "ok"}, "leader": False}
            leading[0] = True
            matrix.synced_at = time.monotonic()  # as the sync loop records a successful sync
            response = await client.get("/readyz")
            assert response.status == 200
            assert await response.json() == {"status": "ready", "database": "ok", "migrations": "ok",
                                              "platforms": {"matrix": "ok", "chat": "ok"}, "leader": True}
    finally:
        await app.db.dispose()


async def test_a_platform_whose_check_raises_is_named_without_a_trace(tmp_path):
    def broken() -> bool:
        raise RuntimeError("secret detail")

    db = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        await storage.upgrade(db, master=TEST_MASTER_KEY)
        ready, body = await Readiness(db=db, platforms={"teams": broken}).check()
        assert not ready and body["failing"] == ["platform:teams"] and "secret" not in str(body)
    finally:
        await db.dispose()


class _ServedMatrixWorld(MatrixWorld):
    web_server = True
    port = 0

    def settings(self, allowed_servers=None) -> Settings:
        settings = super().settings(allowed_servers)
        return settings.model_copy(update={"web": settings.web.model_copy(update={"listen": f"127.0.0.1:{self.port}"})})


async def test_matrix_connected_to_a_real_synapse_is_ready(synapse, tmp_path):
    world = _ServedMatrixWorld(synapse, tmp_path)
    world.port = free_port()
    try:
        await world.setup()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{world.port}/readyz") as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["platforms"] == {"matrix": "ok"}
    finally:
        await world.close()


async def test_teams_is_ready_once_its_endpoint_is_served(teams_world):
    await teams_world.start()
    async with teams_world.http.get(f"http://127.0.0.1:{teams_world.port}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["platforms"] == {"teams": "ok"}


# -- the web address of each instance -----------------------------------------------------------------

def test_web_listen_from_the_environment_wins_over_the_file(tmp_path, monkeypatch):
    config = tmp_path / "meldbot.toml"
    config.write_text('[web]\nlisten = "127.0.0.1:8080"\npublic_url = "https://meldbot.example.nl"\n')
    assert load_settings(config).web.listen == "127.0.0.1:8080"
    monkeypatch.setenv("MELDBOT_WEB__LISTEN", "0.0.0.0:8081")
    settings = load_settings(config)
    assert (settings.web.host, settings.web.port) == ("0.0.0.0", 8081)
    assert settings.web.public_url == "https://meldbot.example.nl"  # the rest of [web] stays the file's
    monkeypatch.setenv("MELDBOT_WEB__LISTEN", "8081")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "[web] listen" in str(error.value) and "MELDBOT_WEB__LISTEN" in str(error.value)


async def test_an_instance_serves_on_the_address_of_its_environment(tmp_path, monkeypatch):
    for attempt in range(5):
        port = free_port()
        monkeypatch.setenv("MELDBOT_WEB__LISTEN", f"127.0.0.1:{port}")
        monkeypatch.setenv("MELDBOT_DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path / 'env.db'}")
        monkeypatch.setenv("MELDBOT_PRIVACY__KEY", encode_key(TEST_MASTER_KEY))
        app = await build(load_settings(), {"chat": RecordingPlatform()})
        try:
            await app.start(web_server=True)
            break
        except OSError:
            await app.stop()
            if attempt == 4:
                raise
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/livez") as response:
                assert response.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
    finally:
        await app.stop()

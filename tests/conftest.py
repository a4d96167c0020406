"""Fixtures: a migrated database on SQLite and, when configured, on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))

import storage  # noqa: E402

PG_URL = os.environ.get("MELDBOT_TEST_POSTGRES_URL", "").strip()


def _database_params():
    params = [pytest.param("sqlite", id="sqlite")]
    if PG_URL:
        params.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    return params


async def _admin(sql: str) -> None:
    import asyncpg

    url = make_url(PG_URL)
    connection = await asyncpg.connect(
        host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username or "postgres",
        password=url.password, database=url.database or "postgres", timeout=5,
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    """Fails the run (not skips) when MELDBOT_TEST_POSTGRES_URL is set but unreachable."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any failure to reach the server fails the run
        pytest.fail(f"MELDBOT_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {error!r}", pytrace=False)
    return True


@pytest.fixture
def database_url(request, tmp_path):
    """A URL of an empty database of the parametrised kind; PostgreSQL gets a fresh database per test."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'meldbot.db'}"
        return
    request.getfixturevalue("postgres_available")
    name = f"meldbot_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def pytest_generate_tests(metafunc):
    if "database_url" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("both_databases")
        if marker is not None:
            metafunc.parametrize("database_url", _database_params(), indirect=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "both_databases: run the test on SQLite and on PostgreSQL")


from helpers import TEST_MASTER_KEY  # noqa: E402


@pytest.fixture
async def db(database_url):
    """A migrated async engine (its vault: the `vault` fixture)."""
    engine = storage.create_engine(database_url)
    _VAULTS[id(engine)] = await storage.prepare(engine, TEST_MASTER_KEY)
    try:
        yield engine
    finally:
        _VAULTS.pop(id(engine), None)
        await engine.dispose()


_VAULTS: dict = {}


@pytest.fixture
def vault(db):
    return _VAULTS[id(db)]


@pytest.fixture
def sessions(db, vault):
    return storage.create_sessionmaker(db, vault)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory):
    """One private Synapse for the whole test session; tests register fresh users."""
    from bot.devtools.localserver import LocalSynapse

    with LocalSynapse(tmp_path_factory.mktemp("synapse")) as server:
        yield server


@pytest.fixture(scope="session")
def keys():
    """The channel's signing key, its OpenID metadata and JWKS served on loopback (Teams tests)."""
    from teams_harness import ChannelKeys

    keys = ChannelKeys()
    yield keys
    keys.close()

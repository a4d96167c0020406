"""Engine and session set-up, and schema upgrades through Alembic."""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources
from typing import AsyncIterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from .models import VAULT

#: How long a SQLite writer waits for a lock before it reports the database as busy (ms).
SQLITE_BUSY_TIMEOUT_MS = 5000
#: How long a PostgreSQL connection attempt may take before the database counts as down (s).
POSTGRES_CONNECT_TIMEOUT_S = 5


def _sqlite_pragmas(busy_timeout_ms: int):
    def apply(dbapi_connection, _record) -> None:
        # Transactions are begun by us (see _sqlite_begin), not by the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return apply


#: Execution option set by `transaction()` on its connection: the transaction will write.
WRITING = "meldbot_writing"
#: Where a sessionmaker keeps its SQLite write lock (in its `info`).
WRITE_LOCK = "meldbot_write_lock"


def _sqlite_begin(connection) -> None:
    # Inside `transaction()`: BEGIN IMMEDIATE takes the write lock at the start, so a turn that read
    # first and writes later waits its turn instead of failing at once (SQLITE_BUSY_SNAPSHOT) when
    # another turn committed in between. Plain reads begin a normal (deferred) transaction.
    writing = connection.get_execution_options().get(WRITING)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def asyncpg_dsn(url: str) -> str:
    """The asyncpg DSN of a `postgresql+asyncpg://` SQLAlchemy URL (for a connection outside the pool:
    leadership's advisory lock, the outbox listener)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: str, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, **kwargs) -> AsyncEngine:
    """An async engine for `sqlite+aiosqlite://` or `postgresql+asyncpg://` URLs.

    Statement parameters are hidden from error messages: they hold report content, which must
    never reach a log.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": sqlite_busy_timeout_ms / 1000},
                                     hide_parameters=True, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(sqlite_busy_timeout_ms))
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        connect_args = {"timeout": POSTGRES_CONNECT_TIMEOUT_S, "command_timeout": 30}
        # A pool as large as the turns that run at once: the default (5) closes connections as they
        # come back under load, and opening one costs PostgreSQL more than the turn itself.
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 20)
        return create_async_engine(url, pool_pre_ping=True, connect_args=connect_args, hide_parameters=True,
                                   **kwargs)
    raise ValueError(f"unsupported database URL scheme: {parsed.drivername} (use sqlite+aiosqlite or postgresql+asyncpg)")


def create_sessionmaker(engine: AsyncEngine, vault, *, like: async_sessionmaker | None = None
                        ) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit and open sealed fields with `vault`
    (a `storage.crypto.Vault`). Build one per engine and share it: on SQLite it holds the
    in-process write lock that `transaction()` queues writers on. `like`: another sessionmaker of
    the same engine whose write lock to share (a second vault, e.g. one without the anonymous key)."""
    # SQLite has one writer at a time. Waiting in an asyncio queue is fair; waiting in SQLite's busy
    # handler is not (a writer can starve past the timeout under load).
    info: dict = {VAULT: vault}
    if like is not None and WRITE_LOCK in (like.kw.get("info") or {}):
        info[WRITE_LOCK] = like.kw["info"][WRITE_LOCK]
    elif engine.dialect.name == "sqlite":
        info[WRITE_LOCK] = asyncio.Lock()
    return async_sessionmaker(engine, expire_on_commit=False, info=info)


def vault_of(session: AsyncSession):
    """The vault of a session's sessionmaker."""
    vault = session.info.get(VAULT)
    if vault is None:
        raise LookupError("session without a vault: build sessionmakers with storage.db.create_sessionmaker")
    return vault


@contextlib.asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that commits on success; on SQLite, writers queue in-process."""
    lock = (sessions.kw.get("info") or {}).get(WRITE_LOCK)
    async with lock if lock is not None else contextlib.nullcontext():
        async with sessions() as session, session.begin():
            # Before the first statement: the BEGIN that follows sees that this transaction writes.
            await session.connection(execution_options={WRITING: True})
            yield session


#: The advisory lock migrations take on PostgreSQL ("MeldMig" in ASCII; not the leader's lock).
MIGRATION_LOCK_KEY = 0x4D656C644D6967


def alembic_config() -> Config:
    """Alembic configuration pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("storage").joinpath("migrations")))
    return config


def _upgrade(connection, revision: str, master: bytes | None) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes["master_key"] = master
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head", *, master: bytes | None = None) -> None:
    """Bring the schema to `revision` (default: the newest). `master`: the master key, which the
    migration that encrypts earlier plain-text data needs (and which creates the keyring)."""
    if engine.dialect.name == "sqlite":
        # Rebuilding a table that others reference (SQLite's way to drop a column) needs foreign keys
        # off, and that pragma only takes effect outside a transaction; checked again afterwards.
        async with engine.connect() as connection:
            await connection.run_sync(_sqlite_foreign_keys, False)
            try:
                async with connection.begin():
                    await connection.run_sync(_upgrade, revision, master)
                    await connection.run_sync(_check_foreign_keys)
            finally:
                await connection.run_sync(_sqlite_foreign_keys, True)
        return
    async with engine.begin() as connection:
        # Instances that start together on one database migrate one after the other: the next one
        # waits here until the first committed, then finds the schema at head and does nothing.
        await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        await connection.run_sync(_upgrade, revision, master)


def _sqlite_foreign_keys(connection, on: bool) -> None:
    cursor = connection.connection.dbapi_connection.cursor()
    cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    cursor.close()


def _check_foreign_keys(connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left {len(broken)} broken foreign keys (first: {broken[0]})")


def _current(connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def ping(engine: AsyncEngine) -> None:
    """Raise when the database cannot be reached."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

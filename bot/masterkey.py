"""Finding the master key, and opening the database with it: the one way every command starts."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import storage
from storage import crypto, keys, repo
from storage.crypto import Vault

from bot.config import ConfigError, Settings
from bot.core.worktime import WorkingTime

log = logging.getLogger(__name__)

ENV_KEY = "MELDBOT_PRIVACY__KEY"


@dataclass
class OpenStorage:
    """An engine, its vault and the sessionmakers: `sessions` with every key (the bot), `restricted`
    without the anonymous key (case pages, exports, the command line)."""

    db: AsyncEngine
    vault: Vault
    sessions: async_sessionmaker[AsyncSession]
    restricted: async_sessionmaker[AsyncSession]


def sqlite_path(settings: Settings) -> Path | None:
    """The database file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    url = make_url(settings.database.url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def key_location(settings: Settings) -> Path | None:
    """Where the master key file is (None when it comes from `[privacy] key`)."""
    privacy = settings.privacy
    if privacy.key is not None:
        return None
    if privacy.key_file is not None:
        path = privacy.key_file
        return path if path.is_absolute() else settings.config_dir / path
    database = sqlite_path(settings)
    if database is None:
        raise ConfigError("[privacy] key_file: PostgreSQL needs a master key: set [privacy] key_file (a file made "
                          f"with `meldbot keys create`) or the environment variable {ENV_KEY}")
    return database.with_name(database.name + ".key") if database.suffix != ".db" else database.with_suffix(".key")


def read_configured_key(settings: Settings) -> tuple[bytes | None, Path | None]:
    """The configured master key (None when its file does not exist yet) and its file."""
    if settings.privacy.key is not None:
        try:
            return crypto.decode_key(settings.privacy.key.get_secret_value()), None
        except ValueError as error:
            raise ConfigError(f"[privacy] key ({ENV_KEY}): {error}") from None
    path = key_location(settings)
    assert path is not None
    if not path.exists():
        return None, path
    try:
        return keys.read_key_file(path), path
    except (OSError, ValueError) as error:
        raise ConfigError(f"[privacy] key_file {path}: {error}") from None


def prepare_sqlite_file(settings: Settings) -> None:
    """Create the SQLite file (and its directory) private to this account before SQLite does: its
    WAL and shared-memory files take the same mode."""
    database = sqlite_path(settings)
    if database is None or database.exists():
        return
    if not database.parent.exists():
        database.parent.mkdir(parents=True, mode=0o700)
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


ROTATION_INTERRUPTED = ("a rotation of the master key was interrupted: run `meldbot keys rotate --config FILE` "
                        "again to finish it")


def next_key_opens(path: Path | None, rows) -> bool:
    """Whether the key a rotation writes beside the key file (`<key>.next`) is this database's key."""
    following = path.with_name(path.name + ".next") if path is not None else None
    if following is None or not following.exists():
        return False
    try:
        keys.check_master(keys.read_key_file(following), rows)
    except (OSError, ValueError, keys.MasterKeyError):
        return False
    return True


async def open_storage(settings: Settings, *, migrate: bool | None = None, create_key: bool = True) -> OpenStorage:
    """Connect, find (or on a fresh embedded install create) the master key, check it against the
    database's keyring BEFORE anything is written, migrate when configured, and build the vault.

    ConfigError (exit code 2) names the key when it is missing or wrong."""
    migrate = settings.database.auto_migrate if migrate is None else migrate
    master, path = read_configured_key(settings)
    if master is None and not create_key:
        raise ConfigError(f"[privacy] key_file: no master key at {path}")
    prepare_sqlite_file(settings)
    db = storage.create_engine(settings.database.url)
    try:
        rows = await keys.read_keyring(db)
        if master is None:
            if rows:
                raise ConfigError(f"[privacy] key_file: the master key of this database is missing ({path}). "
                                  "Restore it from your backup; without it the reports cannot be read.")
            assert path is not None
            master = crypto.new_key()
            keys.write_key_file(path, master)
            log.warning("created a new master key at %s. Back it up now, apart from the database backups: "
                        "without it nothing stored can be read.", path)
        try:
            keys.check_master(master, rows)
            if rows and await keys.unfinished_rotation(db, master):
                raise keys.RotationInterrupted(ROTATION_INTERRUPTED)
        except keys.RotationInterrupted as error:
            raise ConfigError(f"[privacy] key_file: {error}") from None
        except keys.WrongKey:
            if next_key_opens(path, rows):
                # Every key was rewrapped, but the run stopped before the new key file took the
                # old one's place.
                raise ConfigError(f"[privacy] key_file: {ROTATION_INTERRUPTED}") from None
            where = f"the key in {path}" if path else f"the key in {ENV_KEY}"
            raise ConfigError(f"[privacy] key_file: {where} is not the master key of this database "
                              f"({settings.database.url.split('@')[-1]}); nothing was written.") from None
        if migrate:
            await storage.upgrade(db, master=master)
        else:
            current = await storage.current_revision(db)
            if current != storage.head_revision():
                raise ConfigError(f"database schema is at {current}, expected {storage.head_revision()}: "
                                  "run `meldbot db upgrade`")
        vault = await keys.open_vault(db, master)
    except BaseException:
        await db.dispose()
        raise
    sessions = storage.create_sessionmaker(db, vault)
    restricted = storage.create_sessionmaker(db, vault.without_anonymous(), like=sessions)
    repo.set_fact_rules(sessions, restricted, rules=fact_rules(settings))
    return OpenStorage(db=db, vault=vault, sessions=sessions, restricted=restricted)


def fact_rules(settings: Settings) -> "repo.FactRules":
    """How this organisation's case facts are dated: its time zone and working hours."""
    followup = settings.followup
    working = WorkingTime.parse(settings.organisation.timezone, followup.working_hours, followup.working_days,
                                followup.holidays or None)
    return repo.FactRules(zone=working.timezone, working_hours=working.hours_between)

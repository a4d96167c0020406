"""The master key file, the keyring in the database, and rotating the master key."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from . import crypto
from .crypto import DecryptionError, Vault
from .models import Attachment, Case, KeyringEntry


class MasterKeyError(Exception):
    """The master key cannot be used; the message says which key and what to do."""


class WrongKey(MasterKeyError):
    """The master key does not open this database's keyring."""


class RotationInterrupted(MasterKeyError):
    """A key rotation stopped half-way; `meldbot keys rotate` finishes it."""


def read_key_file(path: Path) -> bytes:
    """The master key in a key file (ValueError when the file holds something else)."""
    return crypto.decode_key(path.read_text(encoding="ascii", errors="replace"))


def write_key_file(path: Path, key: bytes) -> None:
    """Create a key file readable by its owner only; never overwrites one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(crypto.encode_key(key) + "\n")
        file.flush()
        os.fsync(file.fileno())


def _keyring_rows(connection) -> list[tuple[str, bytes, str]] | None:
    if "keyring" not in inspect(connection).get_table_names():
        return None
    table = KeyringEntry.__table__
    return [tuple(row) for row in connection.execute(select(table.c.name, table.c.wrapped, table.c.key_master))]


async def read_keyring(engine: AsyncEngine) -> list[tuple[str, bytes, str]] | None:
    """The wrapped keyring (None when the database has no keyring table yet)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_keyring_rows)


def check_master(master: bytes, rows: list[tuple[str, bytes, str]] | None) -> None:
    """Raise WrongKey / RotationInterrupted when `master` is not the key of this keyring."""
    if not rows:
        return
    master_id = crypto.key_id(master)
    masters = {key_master for _, _, key_master in rows}
    if masters != {master_id}:
        if master_id in masters or len(masters) > 1:
            raise RotationInterrupted("a rotation of the master key was interrupted: run "
                                      "`meldbot keys rotate --config FILE` again to finish it")
        raise WrongKey("the master key does not belong to this database")
    try:
        for name, wrapped, _ in rows:
            crypto.unwrap_key(master, wrapped, name)
    except DecryptionError:
        raise WrongKey("the master key does not belong to this database") from None


def keyring_rows_for(master: bytes, now: dt.datetime) -> list[dict]:
    """A fresh keyring wrapped by `master` (as rows to insert)."""
    master_id = crypto.key_id(master)
    return [{"name": name, "wrapped": crypto.wrap_key(master, crypto.new_key(), name), "key_master": master_id,
             "created_at": now} for name in crypto.KEYRING_NAMES]


def ensure_keyring(connection, master: bytes, now: dt.datetime) -> None:
    """Create the keyring if the database has none (synchronous: migrations use it too)."""
    table = KeyringEntry.__table__
    present = {row[0] for row in connection.execute(select(table.c.name))}
    missing = [row for row in keyring_rows_for(master, now) if row["name"] not in present]
    if missing:
        connection.execute(table.insert(), missing)


def vault_from_rows(master: bytes, rows: list[tuple[str, bytes, str]]) -> Vault:
    """The vault of an unwrapped keyring."""
    check_master(master, rows)
    return Vault(master, {name: crypto.unwrap_key(master, wrapped, name) for name, wrapped, _ in rows})


async def open_vault(engine: AsyncEngine, master: bytes) -> Vault:
    """The vault of this database: its keyring is created on first use."""
    rows = await read_keyring(engine)
    if rows is None:
        raise MasterKeyError("the database has no keyring table: run the migrations first (meldbot migrate)")
    if not rows or len(rows) < len(crypto.KEYRING_NAMES):
        check_master(master, rows)
        async with engine.begin() as connection:
            await connection.run_sync(ensure_keyring, master, dt.datetime.now(dt.timezone.utc))
        rows = await read_keyring(engine)
    return vault_from_rows(master, rows or [])


# -- rotation -------------------------------------------------------------------------------------

#: Every table with wrapped keys: (table, key column, purpose column or fixed purpose, master column).
#: The keyring goes last: until it is rewrapped the configured (old) key still opens the database,
#: so start-up can see that case or file keys are under another key and say to finish the rotation.
_WRAPPED = (
    (Case.__table__, "id", "wrapped_key", "case"),
    (Attachment.__table__, "id", "wrapped_key", "file"),
    (KeyringEntry.__table__, "name", "wrapped", None),
)


async def unfinished_rotation(engine: AsyncEngine, master: bytes) -> bool:
    """Whether some case or file key is wrapped by another master key than `master` (the keyring's):
    a rotation was interrupted before it reached the keyring."""
    master_id = crypto.key_id(master)
    async with engine.connect() as connection:
        for table, _id, _wrapped, _purpose in _WRAPPED[:-1]:
            column = table.c["key_master"]
            other = await connection.scalar(
                select(column).where(column.is_not(None), column != master_id).limit(1))
            if other is not None:
                return True
    return False


@dataclass
class RotationProgress:
    rewrapped: int = 0
    remaining: int = 0


async def rotate(engine: AsyncEngine, old: bytes, new: bytes, *, batch: int = 500,
                 stop_after: int | None = None) -> RotationProgress:
    """Rewrap every wrapped key from `old` to `new`, `batch` rows per transaction, so that an
    interrupted run loses nothing and a second run finishes it (rows already under `new` are skipped).

    `stop_after` (tests) stops after that many rows, as an interruption would."""
    old_id, new_id = crypto.key_id(old), crypto.key_id(new)
    progress = RotationProgress()
    for table, id_column, wrapped_column, fixed_purpose in _WRAPPED:
        master_column = table.c["key_master"]
        while True:
            async with engine.begin() as connection:
                rows = (await connection.execute(
                    select(table.c[id_column], table.c[wrapped_column], master_column)
                    .where(master_column != new_id).order_by(table.c[id_column]).limit(batch))).all()
                if not rows:
                    break
                for row_id, wrapped, key_master in rows:
                    if key_master != old_id:
                        raise WrongKey(f"a key in {table.name} was wrapped by neither the old nor the new key")
                    purpose = fixed_purpose or row_id
                    key = crypto.unwrap_key(old, wrapped, purpose)
                    await connection.execute(
                        update(table).where(table.c[id_column] == row_id)
                        .values({wrapped_column: crypto.wrap_key(new, key, purpose), "key_master": new_id}))
                    progress.rewrapped += 1
                    if stop_after is not None and progress.rewrapped >= stop_after:
                        return progress
    return progress

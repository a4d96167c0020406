"""nio's encryption store under a pickle key of Meldbot's own (derived from the master key), and the
one-time move of a store that nio pickled with its library default.

nio keeps the bot's Olm account, its Olm sessions and the inbound Megolm sessions pickled (encrypted
with the pickle key) in an SQLite file in `store_dir`; device keys and encrypted-room IDs are public
and not pickled. nio never re-pickles under another key by itself: opened with a new key, an old
store would fail. So before nio opens it, every pickled row that the new key cannot open but nio's
default key can is re-pickled under the new key, in one transaction (an interruption leaves the old
store whole, and the next start does it again).
"""

from __future__ import annotations

import base64
import logging
import sqlite3
from datetime import datetime
from pathlib import Path

import vodozemac
from nio.crypto import InboundGroupSession, OlmAccount, Session

from bot.adapters.common import StoreError, store_subkey

log = logging.getLogger(__name__)

#: The pickle key nio uses when none is configured (`AsyncClientConfig.pickle_key`).
NIO_DEFAULT_PICKLE_KEY = "DEFAULT_KEY"


def pickle_key(store_key: bytes) -> str:
    """The passphrase nio pickles with (nio hashes it to the 32-byte key vodozemac takes)."""
    return base64.b64encode(store_subkey(store_key, "nio pickle")).decode()


def store_file(store_dir: Path, user_id: str, device_id: str) -> Path:
    """Where nio's default store keeps its database (`MatrixStore.database_name`)."""
    return Path(store_dir) / f"{user_id}_{device_id}.db"


def _opens(kind: str, blob: bytes, passphrase: str, row: sqlite3.Row) -> OlmAccount | Session | InboundGroupSession | None:
    """The row's object unpickled with `passphrase` (to be pickled again under another key), or None
    when `passphrase` does not open it."""
    try:
        if kind == "account":
            return OlmAccount.from_pickle(blob, passphrase)
        if kind == "olm session":
            return Session.from_pickle(blob, datetime.now(), passphrase)
        return InboundGroupSession.from_pickle(blob, row["fp_key"], row["sender_key"], row["room_id"], passphrase)
    except (vodozemac.PickleException, vodozemac.LibolmPickleException, UnicodeDecodeError):
        return None  # not under this key (or not a pickle at all)


#: The pickled columns of nio's store (nio.store.models, peewee's table names): kind, table, the
#: pickled column, the row's key, and how the rows of the bot's account are selected.
PICKLED = (("account", "accounts", "account", "id", "user_id = :user AND device_id = :device"),
           ("olm session", "olmsessions", "session", "session_id", "account_id = :account"),
           ("group session", "megolminboundsessions", "session", "session_id", "account_id = :account"))


def migrate_pickles(path: Path, user_id: str, device_id: str, new_key: str,
                    old_key: str = NIO_DEFAULT_PICKLE_KEY) -> dict[str, int] | None:
    """Re-pickle the store at `path` from `old_key` to `new_key` when its account is still under the
    old one. Returns how many rows of each kind moved (None: nothing to do). Raises StoreError when
    the account opens with neither key; the file is then left as it is."""
    if not path.exists():
        return None
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "accounts" not in tables:
            return None
        account = connection.execute("SELECT * FROM accounts WHERE user_id = ? AND device_id = ?",
                                     (user_id, device_id)).fetchone()
        if account is None:
            return None
        account_blob = bytes(account["account"])
        if _opens("account", account_blob, new_key, account) is not None:
            return None  # moved already (the move is one transaction: the sessions were moved with it)
        if _opens("account", account_blob, old_key, account) is None:
            raise StoreError(f"{path}: the Matrix encryption store opens neither with the store key nor "
                             "with nio's default key (is this the master key it was made with?); "
                             "it is left unchanged")
        moved = {kind: 0 for kind, *_ in PICKLED}
        selection = {"user": user_id, "device": device_id, "account": account["id"]}
        with connection:  # one transaction: all rows move, or none
            for kind, table, column, key, where in PICKLED:
                if table not in tables:
                    continue
                for row in connection.execute(f"SELECT * FROM {table} WHERE {where}", selection).fetchall():
                    blob = bytes(row[column])
                    if _opens(kind, blob, new_key, row) is not None:
                        continue
                    opened = _opens(kind, blob, old_key, row)
                    if opened is None:
                        raise StoreError(f"{path}: a pickled {kind} opens neither with the store key nor with "
                                         "nio's default key; the store is left unchanged")
                    connection.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                                       (opened.pickle(new_key), row[key]))
                    moved[kind] += 1
        return moved
    finally:
        connection.close()


def prepare_encryption_store(store_dir: Path, user_id: str, device_id: str, new_key: str) -> None:
    """Move a store nio pickled with its default key to `new_key`, saying so once in the log."""
    path = store_file(store_dir, user_id, device_id)
    moved = migrate_pickles(path, user_id, device_id, new_key)
    if moved is not None:
        log.info("matrix: encryption store %s re-pickled under the store key (%d account, %d olm sessions, "
                 "%d group sessions); nio's default key no longer opens it", path.name, moved["account"],
                 moved["olm session"], moved["group session"])

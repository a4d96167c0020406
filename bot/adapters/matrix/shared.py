"""The Matrix store shared through the database, so that another instance can take over the one
device (same device ID, same Olm and Megolm keys) when the leader goes.

Two documents of the platform's shared state (sealed rows, see `bot.core.shared_state`):

- `store`: nio's SQLite file (serialized through SQLite's backup API, never copied while nio writes
  it; compressed) and the JSON documents of `store_dir` (credentials, told groups, direct chats), in one
  document: a header and the database bytes.
- `sync`: the sync token of the last fully handled batch and the `store` version it was committed
  against.

They are written by one writer in a fixed order, the store first: a saved token is never newer than
the saved store, so a restore never combines a new token with an old Olm store. The sync loop also
saves the store before it queues a batch and before its next sync request (which acknowledges the
to-device events, their keys then exist only in the store). An unchanged store (same hash) is not
written again: an idle sync writes nothing.

A third document, `roster`, is the coordinator room's ID and joined members as the leader last saw
them: an instance that does not lead (does not sync) answers `is_coordinator` from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Protocol

from bot.adapters.common import JsonFile, StoreError, read_text, write_private
from bot.adapters.contract import StateConflict
from bot.adapters.matrix.store import store_file

log = logging.getLogger(__name__)

STORE = "store"
SYNC = "sync"
ROSTER = "roster"
#: The first bytes of a `store` document; then the header's length (4 bytes), header, database.
MAGIC = b"meldbot-matrix-store-v1\n"
#: Which `store`/`sync` versions this store_dir holds (so that an unchanged snapshot is not restored).
MARKER = "shared_version.json"
#: The JSON documents of store_dir that travel with the snapshot, by file name.
DOCUMENTS = ("credentials.json", "told_groups.json", "direct_chats.json")
#: Seconds a standby keeps the published roster before it asks the database for its version again.
ROSTER_REFRESH_S = 5.0
#: Seconds after which the leader writes an unchanged roster again (its time says it was checked).
ROSTER_HEARTBEAT_S = 30.0
#: Seconds the writer waits after a failed save before it tries again.
RETRY_S = 2.0


class State(Protocol):
    """`bot.core.shared_state.SharedState` or `bot.adapters.common.FileState`."""

    async def load(self, name: str) -> tuple[bytes | None, int]: ...
    async def version(self, name: str) -> int: ...
    async def save(self, name: str, data: bytes, expected_version: int | None = None) -> int: ...
    async def load_json(self, name: str, default: Any = None) -> Any: ...
    async def save_json(self, name: str, value: Any) -> int: ...


class StoreTakenOver(RuntimeError):
    """Another instance wrote the shared store since this one did: this one no longer owns it."""


def serialize_database(path: Path) -> bytes:
    """nio's SQLite database as bytes, through the backup API (a consistent copy, whatever the
    journal holds), never by reading the file."""
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    copy = sqlite3.connect(":memory:")
    try:
        source.backup(copy)
        return copy.serialize()
    finally:
        copy.close()
        source.close()


def pack(header: dict[str, Any], database: bytes) -> bytes:
    """Header and database in one document; the database compressed (mostly empty pages: about a
    tenth of its size), before the row is sealed."""
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(encoded)) + encoded + zlib.compress(database, 6)


def unpack(document: bytes) -> tuple[dict[str, Any], bytes]:
    if not document.startswith(MAGIC):
        raise StoreError("the shared Matrix store is not a Meldbot store snapshot; it is left unchanged")
    start = len(MAGIC) + 4
    (length,) = struct.unpack(">I", document[len(MAGIC):start])
    return json.loads(document[start:start + length]), zlib.decompress(document[start + length:])


class SharedStore:
    """Snapshot and restore of one Matrix adapter's `store_dir`, and its published roster."""

    def __init__(self, state: State, store_dir: Path, user_id: str, documents: dict[str, JsonFile]):
        self.state = state
        self.store_dir = Path(store_dir)
        self.user_id = user_id
        self.documents = documents
        #: The device whose nio database is snapshotted (known once logged in).
        self.device_id: str | None = None
        #: The sync token committed last (saved after the store, by `flush`).
        self.token: str | None = None
        self._versions = {STORE: 0, SYNC: 0}
        self._digest: str | None = None  # of the `store` document saved or restored last
        self._saved_token: str | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        #: The size in bytes of the last `store` document written or read (reported, measured).
        self.size = 0
        self._roster: dict[str, Any] | None = None
        self._roster_version = 0
        self._roster_checked = -1e9
        self._roster_task: asyncio.Task | None = None
        self._published: dict[str, Any] | None = None

    # -- this store_dir's record of what it holds -----------------------------------------------------

    def _marker(self) -> dict[str, Any]:
        text = read_text(self.store_dir / MARKER)
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return {}

    def _write_marker(self) -> None:
        write_private(self.store_dir / MARKER, json.dumps({**self._versions, "digest": self._digest,
                                                           "token": self._saved_token}))

    def _token_file(self) -> Path:
        return self.store_dir / "sync_token"

    def _local_token(self) -> str | None:
        return (read_text(self._token_file()) or "").strip() or None

    # -- restore (before nio opens its store) ---------------------------------------------------------

    async def restore(self, device_id: str | None) -> None:
        """Make store_dir hold the shared snapshot when it does not already (another instance wrote
        it since); upload what store_dir holds when nothing is shared yet (an existing install).
        `device_id`: the configured device, if any (a snapshot of another device is not used)."""
        store_version, sync_version = await self.state.version(STORE), await self.state.version(SYNC)
        marker = self._marker()
        # Nothing of an earlier run of this process counts: another instance may have led since.
        self._digest = self._saved_token = self.token = self._published = None
        if store_version == 0:
            self.device_id = device_id or self._stored_device()
            self._versions = {STORE: 0, SYNC: sync_version}
            if self.device_id and (store_file(self.store_dir, self.user_id, self.device_id).exists()
                                   or (self.store_dir / "credentials.json").exists()):
                self.token = self._local_token()
                await self.flush()
                log.info("matrix: the local encryption store is now shared through the database (%d bytes)",
                         self.size)
            return
        if marker.get(STORE) == store_version and marker.get(SYNC) == sync_version:
            # This store_dir wrote (or restored) the newest snapshot: what it holds is as new or newer.
            self._versions = {STORE: store_version, SYNC: sync_version}
            self._digest, self._saved_token = marker.get("digest"), marker.get("token")
            self.device_id = device_id or self._stored_device()
            self.token = self._local_token()
            return
        document, store_version = await self.state.load(STORE)
        token_document, sync_version = await self.state.load(SYNC)
        assert document is not None
        header, database = unpack(document)
        self._versions = {STORE: store_version, SYNC: sync_version}
        if header.get("user_id") != self.user_id or (device_id and header.get("device_id") != device_id):
            # Another account or device is configured now: its own store is used (and shared from now on).
            log.warning("matrix: the shared encryption store is of another account or device; not used")
            self.device_id = device_id or self._stored_device()
            self.token = self._local_token()
            return
        token = None
        if token_document is not None:
            sync = json.loads(token_document)
            if int(sync.get("store", 0)) > store_version:
                raise StoreError("the shared Matrix sync token is newer than the shared encryption store; "
                                 "neither is used")
            token = sync.get("token")
        self._write_files(header, database, token)
        self.device_id = header["device_id"]
        self.token = self._saved_token = token
        self._digest = hashlib.sha256(document).hexdigest()
        self.size = len(document)
        self._write_marker()
        log.info("matrix: encryption store restored from the database (version %d, %d bytes)",
                 store_version, len(document))

    def _stored_device(self) -> str | None:
        data = self.documents["credentials.json"].load()
        return data.get("device_id") if data and data.get("user_id") == self.user_id else None

    def _write_files(self, header: dict[str, Any], database: bytes, token: str | None) -> None:
        path = store_file(self.store_dir, self.user_id, header["device_id"])
        # A journal left by a crash would be rolled back into the new file: it goes first.
        for suffix in ("-journal", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        write_private(path, database)
        for name, file in self.documents.items():
            value = header.get("documents", {}).get(name)
            if value is not None:
                file.save(value)
            else:
                file.path.unlink(missing_ok=True)
        if token:
            write_private(self._token_file(), token)
        else:
            self._token_file().unlink(missing_ok=True)  # never a token of another store's history

    # -- snapshot -------------------------------------------------------------------------------------

    def document(self) -> bytes | None:
        """The `store` document of what store_dir holds now (None: no nio database yet)."""
        if not self.device_id:
            return None
        path = store_file(self.store_dir, self.user_id, self.device_id)
        if not path.exists():
            return None
        header = {"user_id": self.user_id, "device_id": self.device_id,
                  "documents": {name: file.load() for name, file in self.documents.items()}}
        return pack(header, serialize_database(path))

    def pending(self) -> bool:
        """Whether store_dir holds changes (store or committed token) not shared yet."""
        document = self.document()
        return ((document is not None and hashlib.sha256(document).hexdigest() != self._digest)
                or bool(self.token and self.token != self._saved_token))

    async def _save(self, name: str, data: bytes) -> int:
        """Write a document only over the version this instance wrote or read last (compare-and-set):
        a document another instance wrote meanwhile (it leads now) is never overwritten."""
        try:
            return await self.state.save(name, data, expected_version=self._versions[name])
        except StateConflict:
            raise StoreTakenOver(f"the shared Matrix {name} was written by another instance") from None

    async def flush(self) -> None:
        """Save the store when it changed, then the committed sync token when it changed (in this
        order: a saved token never acknowledges events whose keys are not saved)."""
        async with self._lock:
            document = self.document()
            if document is not None:
                digest = hashlib.sha256(document).hexdigest()
                if digest != self._digest:
                    self._versions[STORE] = await self._save(STORE, document)
                    self._digest = digest
                    self.size = len(document)
                    self._write_marker()
            token = self.token
            if token and token != self._saved_token and self._versions[STORE]:
                self._versions[SYNC] = await self._save(SYNC, json.dumps(
                    {"token": token, "store": self._versions[STORE]}, separators=(",", ":")).encode())
                self._saved_token = token
                self._write_marker()

    def touch(self) -> None:
        """Something in store_dir may have changed: the writer saves it soon."""
        self._wake.set()

    def committed(self, token: str) -> None:
        """A sync token was committed (its batch handled): it is shared after the store."""
        self.token = token
        self._wake.set()

    async def run_writer(self) -> None:
        """Save what changed whenever touched, one save at a time, retrying failures."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except StoreTakenOver as error:
                log.error("matrix: %s; this instance stops writing it", error)
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is away: the next touch (or this retry) saves it
                log.warning("matrix: saving the shared encryption store failed (%s); retrying",
                            type(error).__name__)
                await asyncio.sleep(RETRY_S)
                self._wake.set()

    # -- the coordinator roster -----------------------------------------------------------------------

    async def publish_roster(self, room_id: str | None, members: set[str]) -> None:
        """Share the coordinator room's ID and joined members, and when the leader saw them (after a
        sync): written when they changed, and at least every `ROSTER_HEARTBEAT_S`, so that a standby
        can tell a roster nobody has checked lately (the leader stopped syncing) from a quiet one."""
        roster = {"room_id": room_id, "members": sorted(members)}
        published = {k: v for k, v in (self._published or {}).items() if k != "at"}
        if roster == published and time.time() - (self._published or {}).get("at", 0) < ROSTER_HEARTBEAT_S:
            return
        roster["at"] = time.time()
        self._roster_version = await self.state.save_json(ROSTER, roster)
        self._published = self._roster = roster
        self._roster_checked = time.monotonic()

    async def roster(self) -> dict[str, Any] | None:
        """The roster the leader published last (re-read when its version changed)."""
        version = await self.state.version(ROSTER)
        if version != self._roster_version or self._roster is None:
            data, version = await self.state.load(ROSTER)
            self._roster = json.loads(data) if data is not None else None
            self._roster_version = version
        self._roster_checked = time.monotonic()
        return self._roster

    def published_room(self) -> str | None:
        """The coordinator room's ID as published (a synchronous answer: a re-read is started in the
        background when the last one is a few seconds old)."""
        if time.monotonic() - self._roster_checked > ROSTER_REFRESH_S and (
                self._roster_task is None or self._roster_task.done()):
            try:
                self._roster_task = asyncio.get_running_loop().create_task(self._refresh_roster())
            except RuntimeError:  # no running loop: the cached answer it is
                pass
        return (self._roster or {}).get("room_id")

    async def _refresh_roster(self) -> None:
        try:
            await self.roster()
        except Exception as error:  # the database is away: the cached roster stays
            log.warning("matrix: reading the shared coordinator roster failed (%s)", type(error).__name__)
            self._roster_checked = time.monotonic()

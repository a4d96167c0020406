"""The Matrix platform: reports in (encrypted) direct chats, case threads in the coordinator room.

Translates only: Matrix events become `InboundMessage`/`CoordinatorMessage` for the engine, and
neutral replies become Matrix messages. Its own state (login, encryption keys, sync token, rooms
already told to use a DM, the direct chats it knows) lives in `store_dir`, never in the case tables;
given the app's shared state (`use_shared_state`), a snapshot of it is kept in the database too, so
that only the leader runs Matrix and another instance takes the same device over (`shared.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path

import aiohttp
import vodozemac
from nio import AsyncClient, AsyncClientConfig, JoinError, JoinResponse, LoginResponse, SyncResponse

from bot.adapters.common import JsonFile, StoreError, StoreSeal, close_files, prepare_store, read_text
from bot.adapters.contract import Bot, DeliveryError
from bot.adapters.matrix import media
from bot.adapters.matrix.direct import DirectChatsMixin
from bot.adapters.matrix.inbound import InboundMixin
from bot.adapters.matrix.outbound import OutboundMixin
from bot.adapters.matrix.shared import SharedStore, State
from bot.adapters.matrix.store import NIO_DEFAULT_PICKLE_KEY, pickle_key, prepare_encryption_store, store_file
from bot.adapters.matrix.sync import SYNC_TIMEOUT_MS, SyncMixin, _Batch, maintain_keys
from bot.config import MatrixSettings

__all__ = ["MatrixAdapter", "maintain_keys"]

log = logging.getLogger(__name__)

#: A view of the coordinator room older than this (two long-polls and some) is not trusted to say
#: who is a member: the sync loop has been failing.
MEMBERSHIP_STALE_S = 2 * SYNC_TIMEOUT_MS / 1000 + 30

#: Files downloaded at the same time (each up to media.MAX_FILE_BYTES in memory).
PARALLEL_DOWNLOADS = 8


class MatrixAdapter(SyncMixin, DirectChatsMixin, InboundMixin, OutboundMixin):
    """A Matrix bot account, kept on one device for life. Its parts (sync loop, direct chats, inbound,
    outbound) are mixins in their own modules sharing the state set up here."""

    platform = "matrix"
    #: A resend with the same transaction ID is dropped by the homeserver.
    idempotent_sends = True
    #: One device, one sync, one encryption store: only the leading instance runs it (bot.app).
    single_instance = True

    def __init__(self, *, settings: MatrixSettings, store_dir: Path, language: str, files_per_message: int = 10):
        self.settings = settings
        self.store_dir = Path(store_dir)
        self.language = language
        #: Informative only: a Matrix message carries one file, so it never exceeds the limit.
        self.files_per_message = files_per_message
        self.bot: Bot | None = None
        self.client: AsyncClient | None = None
        self.coordinator_room_id: str | None = None
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._told_groups: set[str] = set()
        # Sealed, and nio's store pickled, with the store key once the app gives it (use_store_key).
        self._seal = StoreSeal()
        self._pickle_key: str | None = None
        self._told_file = JsonFile(self.store_dir / "told_groups.json", self._seal)
        self._credentials = JsonFile(self.store_dir / "credentials.json", self._seal)
        self._direct_file = JsonFile(self.store_dir / "direct_chats.json", self._seal)
        #: The store snapshot and roster in the database (None: store_dir only, one process).
        self._shared: SharedStore | None = None
        self._writer: asyncio.Task | None = None
        self._running = False
        self._ignore_before_ms = 0
        self._token: str | None = None  # the last token saved (all events up to it handled)
        self._since: str | None = None  # the last token fetched (the next sync starts there)
        #: When a sync last succeeded (monotonic seconds): how fresh the bot's view of the rooms is.
        self.synced_at = -MEMBERSHIP_STALE_S
        self._background: set[asyncio.Task] = set()
        self._batches: deque[_Batch] = deque()
        self._queues: dict[str, deque] = {}
        self._workers: dict[str, asyncio.Task] = {}
        self._synced = asyncio.Condition()
        self._http: aiohttp.ClientSession | None = None
        self._downloads = asyncio.Semaphore(PARALLEL_DOWNLOADS)
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._created: dict[str, float] = {}  # rooms this process created, by monotonic time
        self._account_data = asyncio.Lock()  # m.direct is read, changed and written back whole
        # Direct chats: the one the bot opened per person, the person of each direct chat, rooms
        # that gained members (told once, never direct again) and conversations moved out of them.
        self._opened: dict[str, str] = {}
        self._partners: dict[str, str] = {}
        self._demoted: set[str] = set()
        self._moved: dict[str, str] = {}
        #: Limits of one download (tests lower them).
        self.max_file_bytes = media.MAX_FILE_BYTES
        self.download_timeout = media.DOWNLOAD_TIMEOUT_S
        self.download_stall = media.STALL_TIMEOUT_S

    # -- start and stop ---------------------------------------------------------------------------

    def use_store_key(self, key: bytes) -> None:
        """Seal the state files and pickle nio's encryption store with (keys derived from) `key`;
        called by the app before `start()`."""
        self._seal.use_key(key)
        self._pickle_key = pickle_key(key)

    def use_shared_state(self, state: State) -> None:
        """Keep a snapshot of the store and the coordinator roster in `state` (the database), so
        that any instance can run this account; called by the app before `start()`."""
        self._shared = SharedStore(state, self.store_dir, self.settings.user_id,
                                   {"credentials.json": self._credentials, "told_groups.json": self._told_file,
                                    "direct_chats.json": self._direct_file})

    def _reset(self) -> None:
        """The running state of an earlier start (the leader's work stops and starts again)."""
        self._stopping = asyncio.Event()
        self._background = set()
        self._batches.clear()
        self._queues = {}
        self._workers = {}
        self._synced = asyncio.Condition()
        self._since = None
        self._task = self._writer = None

    def _touch(self) -> None:
        """Something in store_dir may have changed: the shared snapshot is saved soon."""
        if self._shared is not None:
            self._shared.touch()

    async def _share(self) -> None:
        """Save the store snapshot now when it changed (before events are queued or acknowledged)."""
        if self._shared is not None:
            await self._shared.flush()

    def _members(self) -> set[str] | None:
        room = self.client.rooms.get(self.coordinator_room_id) if self.client and self.coordinator_room_id else None
        if room is None:
            return None
        return {user for user in room.users if user not in room.invited_users and user != self.settings.user_id}

    async def _publish_roster(self) -> None:
        """Share the coordinator room and its joined members (for instances that do not sync)."""
        members = self._members()
        if self._shared is None or members is None:
            return
        try:
            await self._shared.publish_roster(self.coordinator_room_id, members)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # published again after the next sync
            log.warning("matrix: publishing the coordinator roster failed (%s)", type(error).__name__)

    async def _login(self) -> tuple[str, str]:
        """The access token and device ID: configured, stored from an earlier start, or a first login."""
        settings = self.settings
        if settings.access_token and settings.device_id:
            return settings.access_token, settings.device_id
        data = self._credentials.load()
        if data and data.get("user_id") == settings.user_id:
            return data["access_token"], data["device_id"]
        if not settings.password:
            raise RuntimeError("[matrix] needs access_token and device_id, or a password for the first login")
        client = AsyncClient(settings.homeserver, settings.user_id)
        try:
            response = await client.login(settings.password, device_name="Meldbot")
        finally:
            await client.close()
        if not isinstance(response, LoginResponse):
            raise RuntimeError(f"Matrix login failed: {getattr(response, 'message', response)}")
        self._credentials.save({"user_id": response.user_id, "access_token": response.access_token,
                                "device_id": response.device_id})
        log.info("matrix: first login, device %s stored", response.device_id)
        return response.access_token, response.device_id

    async def _refuse_second_keys(self, token: str, device_id: str) -> None:
        """No encryption store for this device here (nor in the database): nio would make new keys. For
        a device whose keys the homeserver already has, that is a second identity under one device ID
        (reporters' clients warn and refuse to encrypt to it), so this start is refused instead."""
        url = f"{self.settings.homeserver.rstrip('/')}/_matrix/client/v3/keys/query"
        body = {"device_keys": {self.settings.user_id: [device_id]}}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                data = await response.json(content_type=None) if response.status == 200 else {}
        if ((data.get("device_keys") or {}).get(self.settings.user_id) or {}).get(device_id):
            raise StoreError(
                f"[matrix] store_dir: the encryption store of device {device_id} is neither in {self.store_dir} nor "
                "in the database, but the homeserver already has keys for that device; new keys under the same "
                "device would not be trusted. Restore store_dir or the database from the backup, or log in anew "
                "(remove access_token and device_id, set password: a new device)")

    async def start(self, bot: Bot) -> None:
        """Restore the login, catch up without answering history on a first start, join the coordinator room."""
        self.bot = bot
        self._reset()
        prepare_store(self.store_dir)
        if self._shared is not None:
            # Before anything reads store_dir: it must hold the newest snapshot (another instance
            # may have led since), or be uploaded when nothing is shared yet.
            await self._shared.restore(self.settings.device_id if self.settings.access_token else None)
        self._told_groups = set(self._told_file.load([]))
        self._load_direct_chats()
        token, device_id = await self._login()
        user_id = self.settings.user_id
        if not store_file(self.store_dir, user_id, device_id).exists():
            await self._refuse_second_keys(token, device_id)
        if self._pickle_key:
            # A store nio pickled with its default key (before there was a store key) moves first.
            prepare_encryption_store(self.store_dir, user_id, device_id, self._pickle_key)
        # The sync token is saved by us, after a batch was handled (nio would save it before).
        config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=True, max_limit_exceeded=0,
                                   max_timeouts=1, request_timeout=20,
                                   pickle_key=self._pickle_key or NIO_DEFAULT_PICKLE_KEY)
        self.client = AsyncClient(self.settings.homeserver, user_id, device_id=device_id,
                                  store_path=str(self.store_dir), config=config)
        try:
            self.client.restore_login(user_id, device_id, token)  # opens (or creates) nio's store
        except (vodozemac.PickleException, vodozemac.LibolmPickleException) as error:  # another key
            await self.client.close()
            key = "the store key" if self._pickle_key else "nio's default key"
            raise StoreError(f"{store_file(self.store_dir, user_id, device_id)}: the Matrix encryption store "
                             f"cannot be opened with {key} ({type(error).__name__}); it is left unchanged") from None
        close_files(self.store_dir, f"{user_id}_")  # nio wrote its files with the process umask
        previous = (read_text(self._token_file()) or "").strip() or None
        self._token = previous
        if self._shared is not None:
            # A first login (or a new store) is shared before anything else: a standby taking over
            # must not log in again (a second device).
            self._shared.device_id = device_id
            self._shared.token = previous
            await self._shared.flush()
        first_start = not previous
        # On a first start everything already in the rooms is history: it is never answered.
        self._ignore_before_ms = int(time.time() * 1000) if first_start else 0
        response = await self.client.sync(timeout=0, full_state=True, since=previous)
        self.synced_at = time.monotonic() if isinstance(response, SyncResponse) else self.synced_at
        if not isinstance(response, SyncResponse):
            raise RuntimeError(f"Matrix sync failed: {getattr(response, 'message', response)}")
        await self._keys_safely()
        await self._share()  # the keys of this sync (to-device events), before anything is handled
        if self.settings.coordinator_room:
            joined = await self._join(self.settings.coordinator_room)
            if isinstance(joined, JoinError):
                raise RuntimeError(f"cannot join the coordinator room {self.settings.coordinator_room}: "
                                   f"{joined.message}")
            assert isinstance(joined, JoinResponse)
            self.coordinator_room_id = joined.room_id
        current = await self.client.get_displayname()
        if getattr(current, "displayname", None) != self.settings.display_name:
            # A new name is an event in every room the bot is in: only when it changed.
            await self.client.set_displayname(self.settings.display_name)
        # Media and account data are fetched by us (with limits), not by nio.
        self._http = aiohttp.ClientSession()
        await self._publish_roster()
        # From here its own view of the rooms answers (the events just queued may ask who coordinates).
        self._running = True
        try:
            # A first start only takes invites from the catch-up sync: old messages are history.
            await self._dispatch(response, handle_messages=not first_start, previous=previous)
        except BaseException:
            self._running = False
            raise
        self._since = response.next_batch
        if self._shared is not None:
            self._writer = asyncio.create_task(self._shared.run_writer(), name="matrix-store-writer")
        self._task = asyncio.create_task(self._sync_loop(), name="matrix-sync")
        log.info("matrix: running as %s device %s (first start: %s)", self.settings.user_id, device_id, first_start)

    async def stop(self) -> None:
        """Stop syncing and handling; events not handled yet come again at the next start."""
        self._stopping.set()
        self._running = False
        tasks = list(self._background) + list(self._workers.values()) + [t for t in (self._task, self._writer) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # already logged where it happened
                pass
        if self._shared is not None and self.client is not None:
            try:
                await self._shared.flush()  # what the last sends changed; the handled token
            except Exception as error:  # the next leader starts from the snapshot saved before
                log.warning("matrix: the store snapshot was not saved at stop (%s)", type(error).__name__)
        if self._http:
            await self._http.close()
            self._http = None
        if self.client:
            await self.client.close()

    def coordinator_destination(self) -> str | None:
        """The coordinator room's ID: as joined when this instance runs Matrix, else as the leader
        published it (or as configured, when that is a room ID)."""
        if self._running and self.coordinator_room_id:
            return self.coordinator_room_id
        published = self._shared.published_room() if self._shared is not None else None
        configured = self.settings.coordinator_room
        return (published or self.coordinator_room_id
                or (configured if configured and configured.startswith("!") else None))

    def thread_content_allowed(self, destination: str) -> bool:
        """Relayed text goes into a case thread only when the room is end-to-end encrypted (the
        homeserver then holds only ciphertext); a room the bot does not know counts as not."""
        room = self.client.rooms.get(destination) if self.client else None
        return bool(room is not None and room.encrypted)

    def is_room(self, target: str) -> bool:
        return target.startswith("!")  # room IDs; aliases (#...) are refused by the config

    def routes(self) -> list:
        return []  # Matrix is reached by syncing, not by a webhook

    async def is_coordinator(self, user_id: str) -> bool:
        """Coordinators are the joined members of the coordinator room (invited is not enough).
        Raises when the bot has not synced for a while: its view of the room may be out of date
        (someone removed since), so it cannot tell (and sessions fail closed). An instance that does
        not run Matrix (a standby) answers from the roster the leader published."""
        if not self._running and self._shared is not None:
            try:
                roster = await self._shared.roster()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                raise DeliveryError(f"the coordinator roster cannot be read ({type(error).__name__})") from error
            if roster is None:
                raise DeliveryError("the coordinator room's members are not known: not published yet")
            if time.time() - float(roster.get("at") or 0) > MEMBERSHIP_STALE_S:
                # The leader has not synced for a while (or there is none): someone may have left the
                # room since, so a standby cannot tell either (sessions fail closed).
                raise DeliveryError("the coordinator room's members are not known: the leader has not synced lately")
            return user_id in roster.get("members", ()) and user_id != self.settings.user_id
        if time.monotonic() - self.synced_at > MEMBERSHIP_STALE_S:
            raise DeliveryError("the coordinator room's members are not known: no sync for a while")
        room = self.client.rooms.get(self.coordinator_room_id) if self.client and self.coordinator_room_id else None
        return bool(room and user_id in room.users and user_id not in room.invited_users
                    and user_id != self.settings.user_id)

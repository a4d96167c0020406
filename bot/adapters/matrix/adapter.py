"""The Matrix platform: reports in (encrypted) direct chats, case threads in the coordinator room.

Translates only: Matrix events become `InboundMessage`/`CoordinatorMessage` for the engine, and
neutral replies become Matrix messages. Its own state (login, encryption keys, sync token, rooms
already told to use a DM, the direct chats it knows) lives in `store_dir`, never in the case database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinError,
    JoinResponse,
    LoginResponse,
    MatrixRoom,
    MegolmEvent,
    MessageDirection,
    RedactionEvent,
    RoomCreateResponse,
    RoomEncryptedMedia,
    RoomLeaveResponse,
    RoomMessageMedia,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.api import RoomPreset, RoomVisibility
from nio.crypto.attachments import decrypt_attachment

from dialogs import Reply, Translator
from dialogs.coordinator import is_login_command
from dialogs.text import clean

from bot.adapters.matrix import media
from bot.config import MatrixSettings
from bot.adapters.contract import Bot, CoordinatorMessage, DeliveryError, InboundAttachment, InboundMessage, Notification
from bot.adapters.matrix.format import notification_content, reply_content, thread_content

log = logging.getLogger(__name__)

SYNC_TIMEOUT_MS = 30_000
#: Errors that mean the homeserver refuses for good (retrying changes nothing).
PERMANENT_ERRORS = {"M_FORBIDDEN", "M_UNKNOWN_TOKEN", "M_NOT_FOUND", "M_TOO_LARGE", "M_BAD_JSON",
                    "M_INVALID_PARAM"}
MEDIA_EVENTS = (RoomMessageMedia, RoomEncryptedMedia)
USER_ID = re.compile(r"^@[^:\s]+:\S+$")
#: How long a send waits for a direct chat the bot just created to appear in its own sync.
NEW_ROOM_WAIT_S = 5.0
#: Files downloaded at the same time (each up to media.MAX_FILE_BYTES in memory).
PARALLEL_DOWNLOADS = 8
MEGOLM = "m.megolm.v1.aes-sha2"


async def maintain_keys(client: AsyncClient) -> None:
    """Upload, query and claim end-to-end keys as nio asks after a sync."""
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())


class _Batch:
    """The events of one sync response; its token is saved once they (and all before) are handled."""

    __slots__ = ("token", "pending", "dispatched")

    def __init__(self, token: str):
        self.token = token
        self.pending = 0
        self.dispatched = False


class MatrixAdapter:
    """A Matrix bot account, kept on one device for life."""

    platform = "matrix"
    #: A resend with the same transaction ID is dropped by the homeserver.
    idempotent_sends = True

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
        self._ignore_before_ms = 0
        self._token: str | None = None  # the last token saved (all events up to it handled)
        self._since: str | None = None  # the last token fetched (the next sync starts there)
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

    def _credentials_file(self) -> Path:
        return self.store_dir / "credentials.json"

    async def _login(self) -> tuple[str, str]:
        """The access token and device ID: configured, stored from an earlier start, or a first login."""
        settings = self.settings
        if settings.access_token and settings.device_id:
            return settings.access_token, settings.device_id
        stored = self._credentials_file()
        if stored.exists():
            data = json.loads(stored.read_text())
            if data.get("user_id") == settings.user_id:
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
        stored.write_text(json.dumps({"user_id": response.user_id, "access_token": response.access_token,
                                      "device_id": response.device_id}))
        os.chmod(stored, 0o600)
        log.info("matrix: first login, device %s stored", response.device_id)
        return response.access_token, response.device_id

    async def start(self, bot: Bot) -> None:
        """Restore the login, catch up without answering history on a first start, join the coordinator room."""
        self.bot = bot
        self.store_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.store_dir, 0o700)
        told = self.store_dir / "told_groups.json"
        self._told_groups = set(json.loads(told.read_text())) if told.exists() else set()
        self._load_direct_chats()
        token, device_id = await self._login()
        # The sync token is saved by us, after a batch was handled (nio would save it before).
        config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=True, max_limit_exceeded=0,
                                   max_timeouts=1, request_timeout=20)
        self.client = AsyncClient(self.settings.homeserver, self.settings.user_id, device_id=device_id,
                                  store_path=str(self.store_dir), config=config)
        self.client.restore_login(self.settings.user_id, device_id, token)
        previous = self._token_file().read_text().strip() if self._token_file().exists() else None
        self._token = previous
        first_start = not previous
        # On a first start everything already in the rooms is history: it is never answered.
        self._ignore_before_ms = int(time.time() * 1000) if first_start else 0
        response = await self.client.sync(timeout=0, full_state=True, since=previous)
        if not isinstance(response, SyncResponse):
            raise RuntimeError(f"Matrix sync failed: {getattr(response, 'message', response)}")
        await self._keys_safely()
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
        # A first start only takes invites from the catch-up sync: old messages are history.
        await self._dispatch(response, handle_messages=not first_start, previous=previous)
        self._since = response.next_batch
        self._task = asyncio.create_task(self._sync_loop(), name="matrix-sync")
        log.info("matrix: running as %s device %s (first start: %s)", self.settings.user_id, device_id, first_start)

    async def stop(self) -> None:
        """Stop syncing and handling; events not handled yet come again at the next start."""
        self._stopping.set()
        tasks = list(self._background) + list(self._workers.values()) + ([self._task] if self._task else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # already logged where it happened
                pass
        if self._http:
            await self._http.close()
        if self.client:
            await self.client.close()

    def coordinator_destination(self) -> str | None:
        return self.coordinator_room_id

    def routes(self) -> list:
        return []  # Matrix is reached by syncing, not by a webhook

    async def is_coordinator(self, user_id: str) -> bool:
        """Coordinators are the joined members of the coordinator room (invited is not enough)."""
        room = self.client.rooms.get(self.coordinator_room_id) if self.client and self.coordinator_room_id else None
        return bool(room and user_id in room.users and user_id not in room.invited_users
                    and user_id != self.settings.user_id)

    # -- sync -------------------------------------------------------------------------------------

    def _token_file(self) -> Path:
        return self.store_dir / "sync_token"

    def _save_token(self, token: str) -> None:
        """Persist the sync token once its batch has been handled (atomically)."""
        self._token = token
        temporary = self._token_file().with_suffix(".tmp")
        temporary.write_text(token)
        os.replace(temporary, self._token_file())

    async def _keys_safely(self) -> None:
        try:
            await self._keys()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # key upload/query can wait for the next sync; messages cannot
            log.warning("matrix: key maintenance failed (%s)", type(error).__name__)

    async def _keys(self) -> None:
        await maintain_keys(self.client)

    async def _sync_loop(self) -> None:
        client = self.client
        assert client is not None
        failures = 0
        while not self._stopping.is_set():
            previous = self._since
            try:
                # From the last token fetched: its events are queued already (and saved once handled).
                response = await client.sync(timeout=SYNC_TIMEOUT_MS, since=previous)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # connection refused, timeouts: the homeserver is away
                failures += 1
                delay = min(60.0, 0.5 * 2 ** min(failures, 7))
                log.warning("matrix: sync failed (%s), retrying in %.1fs", type(error).__name__, delay)
                await asyncio.sleep(delay)
                continue
            if not isinstance(response, SyncResponse):
                failures += 1
                retry = (getattr(response, "retry_after_ms", None) or 0) / 1000
                delay = max(retry, min(60.0, 0.5 * 2 ** min(failures, 7)))
                log.warning("matrix: sync error %s, retrying in %.1fs", getattr(response, "status_code", "?"), delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            async with self._synced:
                self._synced.notify_all()  # sends waiting for a new room to appear
            await self._keys_safely()
            try:
                await self._dispatch(response, handle_messages=True, previous=previous)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # nothing of it was queued: the same batch is fetched again
                log.warning("matrix: handling a sync failed (%s); it will be fetched again", type(error).__name__)
                await asyncio.sleep(1)
                continue
            self._since = response.next_batch

    async def _dispatch(self, response: SyncResponse, *, handle_messages: bool, previous: str | None) -> None:
        """Queue the events of a sync on their rooms' workers: a room's events stay in order, and a
        slow one (a large file) holds up only its own room."""
        for room_id, info in response.rooms.invite.items():
            try:
                await self._on_invite(room_id, info)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("matrix: handling an invite failed (%s)", type(error).__name__)
        queued: list[tuple[str, list]] = []
        if handle_messages:
            for room_id, info in response.rooms.join.items():
                events = list(info.timeline.events)
                if info.timeline.limited and previous:
                    events = await self._backfill(room_id, info.timeline.prev_batch, previous) + events
                queued.append((room_id, events))
        # Everything that can fail is done: only now is the batch queued, whole.
        batch = _Batch(response.next_batch)
        self._batches.append(batch)
        for room_id, events in queued:
            for event in events:
                batch.pending += 1
                self._enqueue(room_id, event, batch)
        batch.dispatched = True
        self._settle()

    def _enqueue(self, room_id: str, event, batch: _Batch) -> None:
        self._queues.setdefault(room_id, deque()).append((event, batch))
        if room_id not in self._workers:
            self._workers[room_id] = asyncio.create_task(self._room_worker(room_id), name="matrix-room")

    async def _room_worker(self, room_id: str) -> None:
        """Handle one room's events in order, until its queue is empty."""
        queue = self._queues[room_id]
        try:
            while queue:
                event, batch = queue[0]
                room = self.client.rooms.get(room_id)
                if room is not None:
                    try:
                        await self._on_event(room, event)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("matrix: handling event %s failed", getattr(event, "event_id", "?"))
                queue.popleft()
                batch.pending -= 1
                self._settle()
        finally:
            # No await from the last check of the queue to here: nothing is queued in between.
            if self._workers.get(room_id) is asyncio.current_task():
                del self._workers[room_id]
            if not queue:
                self._queues.pop(room_id, None)

    def _settle(self) -> None:
        """Save the token of the newest batch that, with all batches before it, is fully handled."""
        token = None
        while self._batches and self._batches[0].dispatched and self._batches[0].pending == 0:
            token = self._batches.popleft().token
        if token:
            self._save_token(token)

    async def _backfill(self, room_id: str, start: str, until: str) -> list:
        """Events a `limited` sync left out, oldest first, from `start` back to the previous sync."""
        events: list = []
        token = start
        for _ in range(20):
            response = await self.client.room_messages(room_id, start=token, end=until,
                                                       direction=MessageDirection.back, limit=100)
            if not isinstance(response, RoomMessagesResponse) or not response.chunk:
                break
            events.extend(response.chunk)
            if not response.end or response.end == token:
                break
            token = response.end
        decrypted = []
        for event in reversed(events):
            if isinstance(event, MegolmEvent):
                try:
                    event = self.client.decrypt_event(event)
                except Exception:  # left as undecryptable; handled like any such event
                    pass
            decrypted.append(event)
        log.info("matrix: backfilled %d events in a limited sync", len(decrypted))
        return decrypted

    # -- direct chats -----------------------------------------------------------------------------

    def _direct_file(self) -> Path:
        return self.store_dir / "direct_chats.json"

    def _load_direct_chats(self) -> None:
        path = self._direct_file()
        data = json.loads(path.read_text()) if path.exists() else {}
        self._opened = dict(data.get("opened", {}))
        self._partners = dict(data.get("partners", {}))
        self._demoted = set(data.get("demoted", []))
        self._moved = dict(data.get("moved", {}))

    def _save_direct_chats(self) -> None:
        data = {"opened": self._opened, "partners": self._partners, "demoted": sorted(self._demoted),
                "moved": self._moved}
        temporary = self._direct_file().with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        os.chmod(temporary, 0o600)
        os.replace(temporary, self._direct_file())

    def _others(self, room: MatrixRoom) -> set[str]:
        """Everyone in the room but the bot, invited members included (they can read along too)."""
        return set(room.users) - {self.settings.user_id}

    def _direct_with(self, room: MatrixRoom, user: str | None) -> bool:
        """Whether the room is a direct chat between the bot and `user` alone (None: with one person,
        whoever the room was a direct chat with). A room that once gained members never is again."""
        if room.room_id == self.coordinator_room_id or room.room_id in self._demoted:
            return False
        others = self._others(room)
        partner = self._partners.get(room.room_id) or user or (next(iter(others)) if len(others) == 1 else None)
        return partner is not None and (user is None or user == partner) and others == {partner}

    def _conversation_key(self, room_id: str) -> str:
        """The engine's conversation of a room: a direct chat that replaced one that gained members
        continues that conversation (its draft, its open relay)."""
        return self._moved.get(room_id, room_id)

    async def _check_membership(self, room: MatrixRoom) -> None:
        """A direct chat that gained a member is no longer direct: say so there, once, for good."""
        partner = self._partners.get(room.room_id)
        if partner is None or room.room_id in self._demoted or not (self._others(room) - {partner}):
            return
        self._demoted.add(room.room_id)
        self._told_groups.add(room.room_id)  # the one message this room gets; later ones are ignored
        self._save_direct_chats()
        self._save_told_groups()
        log.info("matrix: direct chat %s gained members; report matters move to a new direct chat", room.room_id)
        await self._post_notice(room.room_id, "matrix.no_longer_direct")

    def _user_lock(self, user: str) -> asyncio.Lock:
        lock = self._user_locks.get(user)
        if lock is None:
            lock = self._user_locks[user] = asyncio.Lock()
        return lock

    async def open_direct_chat(self, address: dict[str, Any]) -> dict[str, Any]:
        """A direct chat with the person of a coordinator-room message: the one the bot opened before
        when it is still direct, else a new encrypted one with them invited."""
        user = address.get("user")
        room_id = await self._direct_chat(user)
        return {"room_id": room_id, "user": user}

    async def _direct_chat(self, user: Any, replacing: str | None = None) -> str:
        if not isinstance(user, str) or not USER_ID.match(user) or user == self.settings.user_id:
            raise DeliveryError("not a Matrix user ID", permanent=True)
        if not self._allowed(user):
            raise DeliveryError("user of a server that is not allowed", permanent=True)
        if self.client is None:
            raise DeliveryError("not connected")
        async with self._user_lock(user):
            opened = self._opened.get(user)
            candidates = [opened] if opened else []
            candidates += [r for r, p in self._partners.items() if p == user and r != opened]
            for candidate in candidates:
                if candidate == replacing:
                    continue
                room = await self._room(candidate, wait=NEW_ROOM_WAIT_S if self._fresh(candidate) else 0)
                if room is not None and self._direct_with(room, user):
                    return candidate
            room_id = await self._create_direct_chat(user)
            if replacing:
                self._moved[room_id] = self._conversation_key(replacing)
                self._save_direct_chats()
            return room_id

    async def _create_direct_chat(self, user: str) -> str:
        initial_state = [
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}},
            # Whoever is added later cannot read what was said before they were invited.
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "invited"}},
            {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
        ]
        try:
            response = await self.client.room_create(visibility=RoomVisibility.private, is_direct=True,
                                                     preset=RoomPreset.trusted_private_chat, invite=[user],
                                                     initial_state=initial_state)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise DeliveryError(f"creating a direct chat failed ({type(error).__name__})") from error
        if not isinstance(response, RoomCreateResponse):
            code = getattr(response, "status_code", "") or ""
            retry = getattr(response, "retry_after_ms", None)
            raise DeliveryError(f"creating a direct chat failed: {code}", retry_after=retry / 1000 if retry else None,
                                permanent=code in PERMANENT_ERRORS)
        room_id = response.room_id
        self._created[room_id] = time.monotonic()
        self._opened[user] = room_id
        self._partners[room_id] = user
        self._save_direct_chats()
        log.info("matrix: opened direct chat %s", room_id)
        await self._mark_direct(user, room_id)
        await self._room(room_id, wait=NEW_ROOM_WAIT_S, member=user)
        return room_id

    def _fresh(self, room_id: str) -> bool:
        """Whether the bot created this room moments ago (its own sync may not have it yet)."""
        return time.monotonic() - self._created.get(room_id, -1e9) < 60

    async def _mark_direct(self, user: str, room_id: str) -> None:
        """Record the room in the bot's `m.direct` account data, as clients do (best effort)."""
        url = (f"{self.settings.homeserver}/_matrix/client/v3/user/{quote(self.settings.user_id, safe='')}"
               f"/account_data/m.direct")
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            async with self._account_data:
                async with self._http.get(url, headers=headers, timeout=timeout) as response:
                    current = await response.json() if response.status == 200 else {}
                if not isinstance(current, dict):
                    current = {}
                rooms = [r for r in current.get(user, []) if isinstance(r, str) and r != room_id]
                current[user] = rooms + [room_id]
                async with self._http.put(url, headers=headers, json=current, timeout=timeout) as response:
                    if response.status != 200:
                        log.warning("matrix: m.direct not updated (HTTP %s)", response.status)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # clients then show it as a room, not as a DM: nothing breaks
            log.warning("matrix: m.direct not updated (%s)", type(error).__name__)

    async def _room(self, room_id: str, wait: float = 0, member: str | None = None) -> MatrixRoom | None:
        """The room as synced (with `member` in it), waiting up to `wait` seconds for a sync that
        brings it (a room the bot just created is not in its state before that)."""
        def ready() -> bool:
            room = self.client.rooms.get(room_id)
            return room is not None and (member is None or member in room.users)

        if not ready() and wait > 0 and self._task is not None and not self._task.done():
            try:
                async with asyncio.timeout(wait):
                    async with self._synced:
                        await self._synced.wait_for(ready)
            except TimeoutError:
                pass
        return self.client.rooms.get(room_id)

    # -- inbound ----------------------------------------------------------------------------------

    def _allowed(self, user_id: str) -> bool:
        server = user_id.split(":", 1)[1] if ":" in user_id else ""
        return server in self.settings.servers

    async def _on_invite(self, room_id: str, info) -> None:
        inviter = None
        for event in info.invite_state:
            if isinstance(event, InviteMemberEvent) and event.state_key == self.settings.user_id:
                inviter = event.sender
        if inviter is None or not self._allowed(inviter):
            log.warning("matrix: invite to %s from a server that is not allowed: refused", room_id)
            self._in_background(self._leave(room_id))
            return
        # Joining can be rate limited; retrying must not hold up the messages of other rooms.
        self._in_background(self._join(room_id))

    def _in_background(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _leave(self, room_id: str, attempts: int = 6) -> None:
        """Refuse an invite, trying again when the homeserver fails or rate limits."""
        for attempt in range(attempts):
            try:
                response = await self.client.room_leave(room_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the homeserver is away for a moment
                response = None
                log.warning("matrix: refusing an invite failed (%s)", type(error).__name__)
            if isinstance(response, RoomLeaveResponse):
                return
            code = getattr(response, "status_code", None)
            if code in PERMANENT_ERRORS:
                log.warning("matrix: could not refuse the invite to %s: %s", room_id, code)
                return
            retry = getattr(response, "retry_after_ms", None) or 0
            await asyncio.sleep(max(retry / 1000, 0.5 * 2 ** attempt))

    async def _join(self, room: str, attempts: int = 8):
        """Join a room (ID or alias), waiting out rate limits as the server asks."""
        response = None
        for attempt in range(attempts):
            response = await self.client.join(room)
            if not isinstance(response, JoinError):
                return response
            retry = getattr(response, "retry_after_ms", None)
            if response.status_code != "M_LIMIT_EXCEEDED" and not retry:
                break
            await asyncio.sleep(max((retry or 0) / 1000, 0.5 * 2 ** attempt))
        log.warning("matrix: could not join %s: %s", room, getattr(response, "message", response))
        return response

    async def _on_event(self, room: MatrixRoom, event) -> None:
        if room.room_id != self.coordinator_room_id:
            await self._check_membership(room)
        sender = getattr(event, "sender", "")
        if sender == self.settings.user_id or isinstance(event, RedactionEvent):
            return  # our own messages; redactions change nothing already reported (the case keeps it)
        if getattr(event, "server_timestamp", 0) < self._ignore_before_ms:
            return  # history from before the bot's first start (e.g. a room it was invited to)
        if not self._allowed(sender):
            log.warning("matrix: message from a server that is not allowed ignored (room %s)", room.room_id)
            return
        if room.room_id == self.coordinator_room_id:
            await self._on_coordinator_event(room, event)
            return
        if not isinstance(event, (RoomMessageText, MegolmEvent) + MEDIA_EVENTS):
            return  # reactions, state, calls, ...: nothing to report
        if not self._direct_with(room, sender):
            await self._tell_group(room)
            return
        if room.room_id not in self._partners:
            self._partners[room.room_id] = sender  # whoever joins later makes it a group
            self._save_direct_chats()
        t = Translator(self.language)
        relates = (event.source.get("content") or {}).get("m.relates_to") or {}
        if relates.get("rel_type") == "m.replace":
            await self._reply(room.room_id, sender, [Reply(t("matrix.edit_ignored"))])
            return
        if isinstance(event, MegolmEvent):
            log.warning("matrix: undecryptable message in %s (session %s)", room.room_id, event.session_id)
            try:
                await self.client.request_room_key(event)
            except Exception:  # a request for this session is already out: just answer
                pass
            await self._reply(room.room_id, sender, [Reply(t("matrix.undecryptable"))])
            return
        text = event.body if isinstance(event, RoomMessageText) else ""
        attachments = ()
        if isinstance(event, MEDIA_EVENTS):
            outcome = await self._download(event)
            if isinstance(outcome, Reply):
                await self._reply(room.room_id, sender, [outcome])
                return
            attachments = (outcome,)
        message = InboundMessage(platform=self.platform, conversation=self._conversation_key(room.room_id),
                                 sender=sender, text=text, event_id=event.event_id, attachments=attachments,
                                 sender_name=room.user_name(sender),
                                 address={"room_id": room.room_id, "user": sender})
        replies = await self.bot.handle(message)
        await self._reply(room.room_id, sender, replies)

    def _media_urls(self, server: str, media_id: str) -> list[str]:
        """Where the bot's homeserver serves a file (tests point this at servers of their own)."""
        return media.media_urls(self.settings.homeserver, server, media_id)

    async def _download(self, event) -> InboundAttachment | Reply:
        """The file of a media event, or the answer for the reporter when it cannot be taken."""
        t = Translator(self.language)
        content = event.source.get("content") or {}
        info = content.get("info") if isinstance(content.get("info"), dict) else {}
        name = clean(str(content.get("filename") or content.get("body") or "bestand"), 255).text or "bestand"
        announced = media.announced_size(content)
        if announced is not None and announced > self.max_file_bytes:
            log.info("matrix: file of %d bytes refused unread (event %s)", announced, event.event_id)
            return Reply(t("evidence.too_large", files=name))
        location = media.parse_mxc(getattr(event, "url", None))
        if location is None:
            log.warning("matrix: media event %s without a valid mxc URL", event.event_id)
            return Reply(t("matrix.download_failed"))
        try:
            async with self._downloads:
                body = await media.fetch(self._http, self._media_urls(*location), self.client.access_token,
                                         limit=self.max_file_bytes, timeout=self.download_timeout,
                                         stall=self.download_stall)
        except media.TooLarge:
            log.info("matrix: file larger than allowed, download stopped (event %s)", event.event_id)
            return Reply(t("evidence.too_large", files=name))
        except media.DownloadFailed as error:
            log.warning("matrix: download failed for %s (%s)", event.event_id, error)
            return Reply(t("matrix.download_failed"))
        if isinstance(event, RoomEncryptedMedia):
            try:
                body = decrypt_attachment(body, event.key["k"], event.hashes["sha256"], event.iv)
            except Exception:
                log.warning("matrix: could not decrypt attachment %s", event.event_id)
                return Reply(t("matrix.download_failed"))
        media_type = info.get("mimetype") or getattr(event, "mimetype", None) or "application/octet-stream"
        return InboundAttachment(filename=name, media_type=str(media_type), content=bytes(body))

    def _save_told_groups(self) -> None:
        (self.store_dir / "told_groups.json").write_text(json.dumps(sorted(self._told_groups)))

    async def _tell_group(self, room: MatrixRoom) -> None:
        if room.room_id in self._told_groups:
            return
        self._told_groups.add(room.room_id)
        self._save_told_groups()
        await self._post_notice(room.room_id, "group.dm_only")

    async def _post_notice(self, room_id: str, key: str) -> None:
        """A hint about the room itself (not a report matter): best effort, never queued for later."""
        try:
            await self._send(room_id, reply_content(Reply(Translator(self.language)(key))))
        except DeliveryError as error:
            log.warning("matrix: notice not sent (%s)", error)

    async def _on_coordinator_event(self, room: MatrixRoom, event) -> None:
        if not isinstance(event, RoomMessageText):
            return
        relates = (event.source.get("content") or {}).get("m.relates_to") or {}
        in_thread = relates.get("rel_type") == "m.thread" and bool(relates.get("event_id"))
        if not in_thread and not is_login_command(event.body or ""):
            return  # talk in the room itself; case commands live in a case's thread
        root = relates["event_id"] if in_thread else ""
        message = CoordinatorMessage(platform=self.platform, destination=room.room_id, thread_root=root,
                                     sender=event.sender, text=event.body, event_id=event.event_id,
                                     is_coordinator=event.sender in room.users
                                     and event.sender not in room.invited_users,
                                     sender_name=room.user_name(event.sender), address={"user": event.sender})
        for answer in await self.bot.handle_coordinator(message):
            try:
                await self._send(room.room_id, thread_content(root, answer.plain()) if root
                                 else reply_content(answer))
            except DeliveryError as error:
                log.warning("matrix: thread answer not sent (%s)", error)

    # -- outbound ---------------------------------------------------------------------------------

    async def _send(self, room_id: str, content: dict[str, Any], txn_id: str | None = None) -> str:
        if self.client is None:
            raise DeliveryError("not connected")
        try:
            response = await self.client.room_send(room_id, "m.room.message", content, tx_id=txn_id,
                                                   ignore_unverified_devices=True)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise DeliveryError(f"send failed ({type(error).__name__})") from error
        if isinstance(response, RoomSendResponse):
            return response.event_id
        code = getattr(response, "status_code", "") or ""
        retry = getattr(response, "retry_after_ms", None)
        raise DeliveryError(f"{code} {getattr(response, 'message', '')}".strip(),
                            retry_after=retry / 1000 if retry else None, permanent=code in PERMANENT_ERRORS)

    async def _reply(self, room_id: str, user: str, replies: Sequence[Reply]) -> None:
        """Answer in the chat now; what cannot be sent (or no longer here) goes to the outbox, in order."""
        address = {"room_id": room_id, "user": user}
        room = self.client.rooms.get(room_id)
        for index, reply in enumerate(replies):
            try:
                if room is None or not self._direct_with(room, user):
                    raise DeliveryError("no longer a direct chat")  # the outbox finds the person's new one
                await self._send(room_id, reply_content(reply))
            except DeliveryError as error:
                log.warning("matrix: reply not sent now (%s); queued", error)
                await self.bot.defer_replies(self.platform, address, list(replies[index:]))
                return

    async def send_replies(self, address: dict[str, Any], replies: Sequence[Reply], idempotency_key: str) -> str:
        """Send to the person's direct chat; when it gained members, to a direct chat with them alone."""
        room_id, user = address.get("room_id"), address.get("user")
        if self.client is None:
            raise DeliveryError("not connected")
        target = None
        if room_id:
            room = await self._room(room_id, wait=NEW_ROOM_WAIT_S if self._fresh(room_id) else 0)
            if room is not None:
                await self._check_membership(room)
                if self._direct_with(room, user):
                    target = room_id
            elif self._fresh(room_id):
                raise DeliveryError("the new direct chat has not synced yet")  # retried: no second room
        if target is None:
            if not user:
                # An address from before direct chats were checked: never into a room with others.
                raise DeliveryError("no direct chat with this person", permanent=True)
            target = await self._direct_chat(user, replacing=room_id)
            await self._room(target, wait=NEW_ROOM_WAIT_S, member=user)
        event_id = ""
        for index, reply in enumerate(replies):
            event_id = await self._send(target, reply_content(reply), f"{idempotency_key}-{index}")
        return event_id

    async def post_case_notification(self, destination: str, notification: Notification, idempotency_key: str) -> str:
        return await self._send(destination, notification_content(notification), idempotency_key)

    async def post_in_case_thread(self, destination: str, root_id: str, text: str, idempotency_key: str) -> str:
        return await self._send(destination, thread_content(root_id, text), idempotency_key)

"""The Matrix platform: reports in (encrypted) direct chats, case threads in the coordinator room.

Translates only: Matrix events become `InboundMessage`/`CoordinatorMessage` for the engine, and
neutral replies become Matrix messages. Its own state (login, encryption keys, sync token, rooms
already told to use a DM) lives in `store_dir`, never in the case database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

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
    RoomEncryptedMedia,
    RoomMessageMedia,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.crypto.attachments import decrypt_attachment

from dialogs import Reply, Translator
from dialogs.coordinator import is_login_command

from ..config import MatrixSettings
from ..platform import Bot, CoordinatorMessage, DeliveryError, InboundAttachment, InboundMessage, Notification
from .format import notification_content, reply_content, thread_content

log = logging.getLogger(__name__)

SYNC_TIMEOUT_MS = 30_000
#: Errors that mean the homeserver refuses for good (retrying changes nothing).
PERMANENT_ERRORS = {"M_FORBIDDEN", "M_UNKNOWN_TOKEN", "M_NOT_FOUND", "M_TOO_LARGE", "M_BAD_JSON"}
MEDIA_EVENTS = (RoomMessageMedia, RoomEncryptedMedia)


async def maintain_keys(client: AsyncClient) -> None:
    """Upload, query and claim end-to-end keys as nio asks after a sync."""
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())


class MatrixAdapter:
    """A Matrix bot account, kept on one device for life."""

    platform = "matrix"
    #: A resend with the same transaction ID is dropped by the homeserver.
    idempotent_sends = True

    def __init__(self, *, settings: MatrixSettings, store_dir: Path, language: str):
        self.settings = settings
        self.store_dir = Path(store_dir)
        self.language = language
        self.bot: Bot | None = None
        self.client: AsyncClient | None = None
        self.coordinator_room_id: str | None = None
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._told_groups: set[str] = set()
        self._ignore_before_ms = 0
        self._token: str | None = None
        self._background: set[asyncio.Task] = set()

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
        token, device_id = await self._login()
        # The sync token is saved by us, after a batch was handled (nio would save it before).
        config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=True, max_limit_exceeded=0,
                                   max_timeouts=1, request_timeout=20)
        self.client = AsyncClient(self.settings.homeserver, self.settings.user_id, device_id=device_id,
                                  store_path=str(self.store_dir), config=config)
        self.client.restore_login(self.settings.user_id, device_id, token)
        previous = self._token_file().read_text().strip() if self._token_file().exists() else None
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
        # A first start only takes invites from the catch-up sync: old messages are history.
        await self._process(response, handle_messages=not first_start, previous=previous)
        self._save_token(response.next_batch)
        self._task = asyncio.create_task(self._sync_loop(), name="matrix-sync")
        log.info("matrix: running as %s device %s (first start: %s)", self.settings.user_id, device_id, first_start)

    async def stop(self) -> None:
        self._stopping.set()
        for task in list(self._background):
            task.cancel()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.client:
            await self.client.close()

    def coordinator_destination(self) -> str | None:
        return self.coordinator_room_id

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
            previous = self._token
            try:
                # From the last token whose batch was handled: a batch cut short is fetched again.
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
            await self._keys_safely()
            try:
                await self._process(response, handle_messages=True, previous=previous)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # not saving the token: the same batch comes again
                log.warning("matrix: handling a sync failed (%s); it will be fetched again", type(error).__name__)
                await asyncio.sleep(1)
                continue
            self._save_token(response.next_batch)

    async def _process(self, response: SyncResponse, *, handle_messages: bool, previous: str | None) -> None:
        for room_id, info in response.rooms.invite.items():
            try:
                await self._on_invite(room_id, info)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("matrix: handling an invite failed (%s)", type(error).__name__)
        if not handle_messages:
            return
        for room_id, info in response.rooms.join.items():
            events = list(info.timeline.events)
            if info.timeline.limited and previous:
                events = await self._backfill(room_id, info.timeline.prev_batch, previous) + events
            room = self.client.rooms.get(room_id)
            if room is None:
                continue
            for event in events:
                try:
                    await self._on_event(room, event)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("matrix: handling event %s failed", getattr(event, "event_id", "?"))

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
            await self.client.room_leave(room_id)
            return
        # Joining can be rate limited; retrying must not hold up the messages of other rooms.
        task = asyncio.create_task(self._join(room_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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

    def _is_direct(self, room: MatrixRoom) -> bool:
        return room.member_count <= 2

    async def _on_event(self, room: MatrixRoom, event) -> None:
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
        if not self._is_direct(room):
            await self._tell_group(room)
            return
        relates = (event.source.get("content") or {}).get("m.relates_to") or {}
        if relates.get("rel_type") == "m.replace":
            await self._send_replies(room.room_id, [Reply(Translator(self.language)("matrix.edit_ignored"))])
            return
        if isinstance(event, MegolmEvent):
            log.warning("matrix: undecryptable message in %s (session %s)", room.room_id, event.session_id)
            try:
                await self.client.request_room_key(event)
            except Exception:  # a request for this session is already out: just answer
                pass
            await self._send_replies(room.room_id, [Reply(Translator(self.language)("matrix.undecryptable"))])
            return
        text = event.body if isinstance(event, RoomMessageText) else ""
        attachments = ()
        if isinstance(event, MEDIA_EVENTS):
            attachment = await self._download(event)
            if attachment is None:
                await self._send_replies(room.room_id, [Reply(Translator(self.language)("matrix.download_failed"))])
                return
            attachments = (attachment,)
        message = InboundMessage(platform=self.platform, conversation=room.room_id, sender=sender, text=text,
                                 event_id=event.event_id, attachments=attachments,
                                 sender_name=room.user_name(sender), address={"room_id": room.room_id})
        replies = await self.bot.handle(message)
        await self._send_replies(room.room_id, replies)

    async def _download(self, event) -> InboundAttachment | None:
        try:
            response = await self.client.download(mxc=event.url)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("matrix: download failed for %s (%s)", event.event_id, type(error).__name__)
            return None
        body = getattr(response, "body", None)
        if not isinstance(body, (bytes, bytearray)):
            log.warning("matrix: download failed for %s", event.event_id)
            return None
        content = (event.source.get("content") or {})
        info = content.get("info") or {}
        if isinstance(event, RoomEncryptedMedia):
            try:
                body = decrypt_attachment(bytes(body), event.key["k"], event.hashes["sha256"], event.iv)
            except Exception:
                log.warning("matrix: could not decrypt attachment %s", event.event_id)
                return None
        name = content.get("filename") or content.get("body") or "bestand"
        media_type = info.get("mimetype") or getattr(event, "mimetype", None) or "application/octet-stream"
        return InboundAttachment(filename=str(name)[:255], media_type=str(media_type), content=bytes(body))

    async def _tell_group(self, room: MatrixRoom) -> None:
        if room.room_id in self._told_groups:
            return
        self._told_groups.add(room.room_id)
        (self.store_dir / "told_groups.json").write_text(json.dumps(sorted(self._told_groups)))
        await self._send_replies(room.room_id, [Reply(Translator(self.language)("group.dm_only"))])

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
                                     sender_name=room.user_name(event.sender))
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

    async def _send_replies(self, room_id: str, replies: Sequence[Reply]) -> None:
        """Answer in the chat now; what cannot be sent goes to the outbox, in order."""
        for index, reply in enumerate(replies):
            try:
                await self._send(room_id, reply_content(reply))
            except DeliveryError as error:
                log.warning("matrix: reply not sent now (%s); queued", error)
                await self.bot.defer_replies(self.platform, {"room_id": room_id}, list(replies[index:]))
                return

    async def send_replies(self, address: dict[str, Any], replies: Sequence[Reply], idempotency_key: str) -> str:
        room_id = address.get("room_id")
        if not room_id:
            raise DeliveryError("no room to reach this person in", permanent=True)
        event_id = ""
        for index, reply in enumerate(replies):
            event_id = await self._send(room_id, reply_content(reply), f"{idempotency_key}-{index}")
        return event_id

    async def post_case_notification(self, destination: str, notification: Notification, idempotency_key: str) -> str:
        return await self._send(destination, notification_content(notification), idempotency_key)

    async def post_in_case_thread(self, destination: str, root_id: str, text: str, idempotency_key: str) -> str:
        return await self._send(destination, thread_content(root_id, text), idempotency_key)

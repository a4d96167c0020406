"""Inbound: Matrix events (invites, reporters' messages and files, coordinator-room threads) become
`InboundMessage`s and `CoordinatorMessage`s for the engine."""

from __future__ import annotations

import asyncio
import logging

from nio import (
    InviteMemberEvent,
    JoinError,
    MatrixRoom,
    MegolmEvent,
    RedactionEvent,
    RoomEncryptedMedia,
    RoomLeaveResponse,
    RoomMessageMedia,
    RoomMessageText,
)
from nio.crypto.attachments import decrypt_attachment

from dialogs import Reply, Translator
from dialogs.coordinator import is_login_command
from dialogs.text import clean

from bot.adapters.common import PERMANENT_MATRIX_ERRORS
from bot.adapters.contract import CoordinatorMessage, DeliveryError, InboundAttachment, InboundMessage
from bot.adapters.matrix import media
from bot.adapters.matrix.format import reply_content, thread_content

log = logging.getLogger(__name__)

MEDIA_EVENTS = (RoomMessageMedia, RoomEncryptedMedia)


class InboundMixin:
    """Part of `MatrixAdapter`: what arrives in a sync, room by room."""

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
            if code in PERMANENT_MATRIX_ERRORS:
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
        await self._reply(room.room_id, sender, replies, answer_to=event.event_id)

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
        self._told_file.save(sorted(self._told_groups))
        self._touch()

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

"""Outbound: neutral replies, notifications and thread lines as Matrix messages, with the
homeserver's errors as `DeliveryError`s."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, Sequence

from nio import RoomSendResponse

from dialogs import Reply

from bot.adapters.common import matrix_delivery_error, send_or_defer
from bot.adapters.contract import DeliveryError, Notification
from bot.adapters.matrix.direct import NEW_ROOM_WAIT_S
from bot.adapters.matrix.format import notification_content, reply_content, thread_content

log = logging.getLogger(__name__)


def answer_txn(event_id: str, index: int) -> str:
    """The transaction ID of the `index`-th reply to an event: the same on every instance."""
    return f"answer-{hashlib.sha256(event_id.encode()).hexdigest()[:32]}-{index}"


class OutboundMixin:
    """Part of `MatrixAdapter`: sending, in the turn and from the outbox."""

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
        finally:
            self._touch()  # in an encrypted room, sharing the room key moved Olm sessions on
        if isinstance(response, RoomSendResponse):
            return response.event_id
        raise matrix_delivery_error(response)

    async def _reply(self, room_id: str, user: str, replies: Sequence[Reply], answer_to: str | None = None) -> None:
        """Answer in the chat now; what cannot be sent (or no longer here) goes to the outbox, in order.
        The answer to an event (`answer_to`) is sent under transaction IDs made from that event's ID,
        so that the same answer sent again (the event redelivered after a crash) is dropped by the
        homeserver when the first one went out."""
        room = self.client.rooms.get(room_id)
        groups = [[reply] for reply in replies]

        async def send(group: Sequence[Reply]) -> None:
            if room is None or not self._direct_with(room, user):
                raise DeliveryError("no longer a direct chat")  # the outbox finds the person's new one
            index = next(i for i, candidate in enumerate(groups) if candidate is group)
            await self._send(room_id, reply_content(group[0]), answer_txn(answer_to, index) if answer_to else None)

        # One Matrix message per reply: a failure keeps that reply and the later ones, in order.
        await send_or_defer(self.bot, self.platform, {"room_id": room_id, "user": user}, groups, send)

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

    async def post_in_room(self, destination: str, reply: Reply, idempotency_key: str) -> str:
        return await self._send(destination, reply_content(reply), idempotency_key)

"""Direct chats: which room is a direct chat with whom, opening new ones, the "no longer direct"
hand-over when a chat gains members, and their persistence in `store_dir`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any
from urllib.parse import quote

import aiohttp
from nio import MatrixRoom, ProfileGetError, RoomCreateResponse
from nio.api import RoomPreset, RoomVisibility

from bot.adapters.common import matrix_delivery_error
from bot.adapters.contract import DeliveryError

log = logging.getLogger(__name__)

USER_ID = re.compile(r"^@[^:\s]+:\S+$")
#: How long a send waits for a direct chat the bot just created to appear in its own sync.
NEW_ROOM_WAIT_S = 5.0
MEGOLM = "m.megolm.v1.aes-sha2"


class DirectChatsMixin:
    """Part of `MatrixAdapter`: the direct chats it knows, opens and gives up."""

    def _load_direct_chats(self) -> None:
        data = self._direct_file.load({})
        self._opened = dict(data.get("opened", {}))
        self._partners = dict(data.get("partners", {}))
        self._demoted = set(data.get("demoted", []))
        self._moved = dict(data.get("moved", {}))

    def _save_direct_chats(self) -> None:
        data = {"opened": self._opened, "partners": self._partners, "demoted": sorted(self._demoted),
                "moved": self._moved}
        self._direct_file.save(data)
        self._touch()

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
        # Synapse invites a user ID nobody registered without complaint: the message would go into
        # a room with nobody in it. Whoever does not exist is a final failure.
        try:
            profile = await self.client.get_profile(user)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise DeliveryError(f"looking up the person failed ({type(error).__name__})") from error
        http_status = getattr(getattr(profile, "transport_response", None), "status", None)
        if isinstance(profile, ProfileGetError) and (profile.status_code == "M_NOT_FOUND" or http_status == 404):
            raise DeliveryError("no such Matrix user", permanent=True)
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
            raise matrix_delivery_error(response, "creating a direct chat failed")
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

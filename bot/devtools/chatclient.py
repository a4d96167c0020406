"""A small Matrix user client: the reporter's side in `meldbot demo`, the tests and the benchmark.

A real nio client (with end-to-end encryption) that opens a direct chat with the bot, sends text
and files, and collects what arrives in its rooms.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path

from nio import (
    AsyncClient,
    AsyncClientConfig,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)
from nio.api import RoomVisibility

from bot.adapters.matrix.adapter import maintain_keys
from bot.devtools.localserver import Account


@dataclass(frozen=True)
class Received:
    """A message that arrived in one of the client's rooms."""

    room_id: str
    sender: str
    body: str
    event_id: str
    content: dict


class ChatClient:
    """One Matrix user, syncing in the background."""

    def __init__(self, homeserver: str, account: Account, store_dir: Path):
        self.account = account
        Path(store_dir).mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(store_sync_tokens=True, encryption_enabled=True, max_timeouts=2,
                                   request_timeout=15)
        self.client = AsyncClient(homeserver, account.user_id, device_id=account.device_id,
                                  store_path=str(store_dir), config=config)
        self.client.restore_login(account.user_id, account.device_id, account.access_token)
        self.received: list[Received] = []
        self._arrived = asyncio.Condition()
        self._task: asyncio.Task | None = None

    @property
    def user_id(self) -> str:
        return self.account.user_id

    async def start(self) -> None:
        response = await self.client.sync(timeout=0, full_state=True)
        if not isinstance(response, SyncResponse):
            raise RuntimeError(f"sync failed: {response}")
        await self._keys()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.client.close()

    async def _keys(self) -> None:
        await maintain_keys(self.client)

    async def _loop(self) -> None:
        while True:
            try:
                response = await self.client.sync(timeout=1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)  # the homeserver is away (tests stop it on purpose)
                continue
            if not isinstance(response, SyncResponse):
                await asyncio.sleep(0.5)
                continue
            await self._keys()
            new = []
            for room_id, info in response.rooms.join.items():
                for event in info.timeline.events:
                    if isinstance(event, MegolmEvent):
                        continue  # not decryptable (yet)
                    if isinstance(event, RoomMessageText) and event.sender != self.user_id:
                        new.append(Received(room_id, event.sender, event.body, event.event_id,
                                            event.source.get("content") or {}))
            if new:
                async with self._arrived:
                    self.received.extend(new)
                    self._arrived.notify_all()

    async def wait_for(self, predicate, timeout: float = 30.0, start: int = 0) -> Received:
        """The first received message (from index `start`) matching `predicate`."""
        async def find() -> Received:
            async with self._arrived:
                while True:
                    for item in self.received[start:]:
                        if predicate(item):
                            return item
                    await self._arrived.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait_for_text(self, room_id: str, fragment: str, timeout: float = 30.0, start: int = 0) -> Received:
        """The first message in `room_id` whose body contains `fragment`."""
        return await self.wait_for(lambda r: r.room_id == room_id and fragment in r.body, timeout, start)

    async def wait_joined(self, room_id: str, user_id: str, timeout: float = 30.0) -> None:
        """Until `user_id` has joined `room_id` (as this client sees it)."""
        async def joined() -> None:
            while True:
                room = self.client.rooms.get(room_id)
                if room and user_id in room.users and user_id not in room.invited_users:
                    return
                await asyncio.sleep(0.05)  # polls the client's synced state, bounded by the timeout

        await asyncio.wait_for(joined(), timeout)

    async def open_dm(self, bot_user_id: str, encrypted: bool = True) -> str:
        """Create a direct chat with the bot (encrypted like Element does) and wait until it joined."""
        initial_state = []
        if encrypted:
            initial_state.append({"type": "m.room.encryption", "state_key": "",
                                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}})
        response = await self.client.room_create(visibility=RoomVisibility.private, is_direct=True,
                                                 invite=[bot_user_id], initial_state=initial_state,
                                                 preset=None)
        if not isinstance(response, RoomCreateResponse):
            raise RuntimeError(f"room create failed: {response}")
        await self.wait_joined(response.room_id, bot_user_id)
        return response.room_id

    async def create_room(self, name: str, invite: list[str]) -> str:
        response = await self.client.room_create(visibility=RoomVisibility.private, name=name, invite=invite)
        if not isinstance(response, RoomCreateResponse):
            raise RuntimeError(f"room create failed: {response}")
        return response.room_id

    async def send(self, room_id: str, text: str, extra: dict | None = None) -> str:
        content = {"msgtype": "m.text", "body": text, **(extra or {})}
        response = await self.client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
        if not isinstance(response, RoomSendResponse):
            raise RuntimeError(f"send failed: {response}")
        return response.event_id

    async def send_in_thread(self, room_id: str, root: str, text: str) -> str:
        return await self.send(room_id, text, {"m.relates_to": {
            "rel_type": "m.thread", "event_id": root, "is_falling_back": True, "m.in_reply_to": {"event_id": root}}})

    async def send_file(self, room_id: str, name: str, data: bytes, mimetype: str, encrypt: bool) -> str:
        """Upload a file (encrypted for encrypted rooms) and send it as an image or file message."""
        response, keys = await self.client.upload(lambda *_: io.BytesIO(data), content_type=mimetype,
                                                  filename=name, encrypt=encrypt, filesize=len(data))
        if not isinstance(response, UploadResponse):
            raise RuntimeError(f"upload failed: {response}")
        msgtype = "m.image" if mimetype.startswith("image/") else "m.file"
        content = {"msgtype": msgtype, "body": name, "filename": name,
                   "info": {"mimetype": mimetype, "size": len(data)}}
        if encrypt:
            content["file"] = {"url": response.content_uri, "key": keys["key"], "iv": keys["iv"],
                               "hashes": keys["hashes"], "v": keys["v"]}
        else:
            content["url"] = response.content_uri
        sent = await self.client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
        if not isinstance(sent, RoomSendResponse):
            raise RuntimeError(f"send failed: {sent}")
        return sent.event_id

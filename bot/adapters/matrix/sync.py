"""The sync loop: per-room queues (a room's events in order, a slow room holding up only itself) and
the sync token, saved only once every event up to it has been handled (and, with a shared store, only
after the store snapshot holding the keys of those events)."""

from __future__ import annotations

import asyncio
import time
import logging
from collections import deque
from pathlib import Path

from nio import AsyncClient, MegolmEvent, MessageDirection, RoomMessagesResponse, SyncResponse

from bot.adapters.common import write_private
from bot.adapters.matrix.shared import StoreTakenOver

log = logging.getLogger(__name__)

#: Pages of 100 events fetched at most to fill one room's gap in a `limited` sync.
BACKFILL_PAGES = 20


class BackfillFailed(Exception):
    """The homeserver did not give the events a `limited` sync left out (the batch is fetched again)."""

SYNC_TIMEOUT_MS = 30_000
#: Ready (/readyz) while the last successful sync is at most this old: a long poll answers within
#: SYNC_TIMEOUT_MS, so this is two missed syncs and some slack.
READY_STALE_S = 2 * SYNC_TIMEOUT_MS / 1000 + 30


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


class SyncMixin:
    """Part of `MatrixAdapter`: fetching syncs and handing their events to the room workers."""

    def ready(self) -> bool:
        """Whether the sync loop has had a successful sync recently (readiness, /readyz)."""
        return time.monotonic() - self.synced_at <= READY_STALE_S

    def _token_file(self) -> Path:
        return self.store_dir / "sync_token"

    def _save_token(self, token: str) -> None:
        """Persist the sync token once its batch has been handled (atomically); the shared copy
        follows the store snapshot (`SharedStore.flush` saves them in that order)."""
        self._token = token
        write_private(self._token_file(), token)
        if self._shared is not None:
            self._shared.committed(token)

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
            self.synced_at = time.monotonic()
            async with self._synced:
                self._synced.notify_all()  # sends waiting for a new room to appear
            await self._keys_safely()
            try:
                # The keys this sync brought (to-device events) are saved before its events are
                # queued, and before the next sync request acknowledges them to the homeserver.
                await self._share()
            except asyncio.CancelledError:
                raise
            except StoreTakenOver as error:
                # Another instance runs this device now: this one must not handle or acknowledge anything.
                log.error("matrix: %s; this instance stops syncing", error)
                return
            except Exception as error:  # the database is away: nothing of this batch is handled
                log.warning("matrix: saving the store snapshot failed (%s); the sync is fetched again",
                            type(error).__name__)
                await asyncio.sleep(2)
                continue
            await self._publish_roster()
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
                self._touch()  # handling may have changed the store (sends, direct chats)
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
        for _ in range(BACKFILL_PAGES):
            response = await self.client.room_messages(room_id, start=token, end=until,
                                                       direction=MessageDirection.back, limit=100)
            if not isinstance(response, RoomMessagesResponse):
                # Never save the token past a gap: the whole batch is fetched again.
                raise BackfillFailed(getattr(response, "status_code", None) or type(response).__name__)
            if not response.chunk:
                break
            events.extend(response.chunk)
            if not response.end or response.end == token:
                break
            token = response.end
        else:
            log.warning("matrix: a limited sync left more than %d events out; the oldest are not answered",
                        BACKFILL_PAGES * 100)
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

"""Cross-instance wake-ups through PostgreSQL LISTEN/NOTIFY.

Every INSERT into the outbox notifies the channel `meldbot_outbox` when its transaction commits (a
trigger, migration 0007). Each instance keeps one connection of its own, outside the pool, that
listens on it and wakes the local outbox worker, so a message queued by a turn on one instance is
picked up at once by whichever worker gets it first (they claim rows with SKIP LOCKED).

A notification is a hint, not a delivery: one that arrives while the listener reconnects is lost,
so each (re)connection wakes the worker once, and the worker still looks at the outbox when its
next retry is due. SQLite runs one instance; its worker is woken in-process only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

import asyncpg

from .db import asyncpg_dsn

log = logging.getLogger(__name__)

#: The channel the outbox trigger notifies.
OUTBOX_CHANNEL = "meldbot_outbox"
#: Seconds between checks that the listening connection is still alive, and between reconnects.
CHECK_S = 5.0


class OutboxListener:
    """Calls `on_notify` for every outbox notification, on a dedicated connection that it reopens
    when it breaks. `listening` says whether notifications arrive now (the worker polls when not)."""

    def __init__(self, url: str, on_notify: Callable[[], None], *, channel: str = OUTBOX_CHANNEL,
                 check: float = CHECK_S, connect_timeout: float = 5.0):
        self.dsn = asyncpg_dsn(url)
        self.on_notify = on_notify
        self.channel = channel
        self.check = check
        self.connect_timeout = connect_timeout
        self.listening = False
        self._connection: asyncpg.Connection | None = None

    def _notified(self, connection, pid, channel, payload) -> None:
        self.on_notify()

    async def _connect(self) -> None:
        connection = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
        try:
            await connection.add_listener(self.channel, self._notified)
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
        self.listening = True
        self.on_notify()  # what was queued while nobody listened

    async def _alive(self) -> bool:
        connection = self._connection
        if connection is None or connection.is_closed():
            return False
        try:
            await asyncio.wait_for(connection.fetchval("SELECT 1"), self.check)
            return True
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop` is set, reconnecting after a lost connection."""
        try:
            while not stop.is_set():
                if not await self._alive():
                    if self.listening:
                        log.warning("outbox listener: connection lost; the outbox worker polls until it is back")
                    self.listening = False
                    await self._close()
                    try:
                        await self._connect()
                        log.info("outbox listener: listening on %s", self.channel)
                    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                        log.warning("outbox listener: database unavailable (%s); trying again",
                                    type(error).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.check)
        finally:
            self.listening = False
            await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None or connection.is_closed():
            return
        try:
            await asyncio.wait_for(connection.close(), self.connect_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            connection.terminate()

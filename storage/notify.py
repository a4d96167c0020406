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

from .dedicated import CONNECTION_ERRORS, DedicatedConnection

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
        self.link = DedicatedConnection(url, connect_timeout=connect_timeout)
        self.on_notify = on_notify
        self.channel = channel
        self.check = check
        self.listening = False

    def _notified(self, connection, pid, channel, payload) -> None:
        self.on_notify()

    async def _connect(self) -> None:
        connection = await self.link.open()
        try:
            await connection.add_listener(self.channel, self._notified)
        except BaseException:
            await self.link.close()
            raise
        self.listening = True
        self.on_notify()  # what was queued while nobody listened

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop` is set, reconnecting after a lost connection."""
        try:
            while not stop.is_set():
                if not await self.link.alive(self.check):
                    if self.listening:
                        log.warning("outbox listener: connection lost; the outbox worker polls until it is back")
                    self.listening = False
                    await self.link.close()
                    try:
                        await self._connect()
                        log.info("outbox listener: listening on %s", self.channel)
                    except CONNECTION_ERRORS as error:
                        log.warning("outbox listener: database unavailable (%s); trying again",
                                    type(error).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.check)
        finally:
            self.listening = False
            await self.link.close()

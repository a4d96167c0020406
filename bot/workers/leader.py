"""Leadership: which instance runs what must run once (the Matrix syncer, the timer worker).

On PostgreSQL every instance competes for one session-level advisory lock on a connection of its
own, outside the pool. Whoever holds it leads; the others try again every `poll` seconds. When the
leader dies its connection closes, PostgreSQL frees the lock at once and a standby takes it at its
next try. The leader checks its connection at every poll as well: when it breaks (the database
restarted, the network went), it stops leading straight away, before anyone else can have the lock,
so two instances never sync Matrix at the same time. Everything the leader does is also safe to do
twice (timers and outbox rows are leased, turns are deduplicated): the lock is about the one
Matrix device, whose encryption state must have one writer.

On SQLite there is one instance, and it leads; `InstanceLock` keeps a second one from starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable

import asyncpg
from sqlalchemy.engine import make_url

from storage.dedicated import CONNECTION_ERRORS, DedicatedConnection

from bot.config import ConfigError
from bot.core.errors import DATABASE_ERRORS

log = logging.getLogger(__name__)

#: The advisory lock's key: "Meldbot" in ASCII (advisory locks are per database).
LOCK_KEY = 0x4D656C64626F74
#: Seconds between a standby's tries and between the leader's checks of its connection.
POLL_S = 2.0
#: Seconds a failed start of the leader's work waits before this instance competes again.
RETRY_S = 10.0

Hook = Callable[[], Awaitable[None]]


class AlwaysLeader:
    """One instance (SQLite, tests, the demo): it leads from the start."""

    leading = True

    def is_leading(self) -> bool:
        return True

    async def begin(self, lead: Hook, follow: Hook) -> None:
        await lead()

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def end(self) -> None:
        return None


class PostgresLeadership:
    """Leadership through `pg_try_advisory_lock` on a dedicated connection."""

    def __init__(self, url: str, *, key: int = LOCK_KEY, poll: float = POLL_S, retry: float = RETRY_S,
                 connect_timeout: float = 5.0, on_change: Callable[[bool], None] | None = None):
        self._link = DedicatedConnection(url, connect_timeout=connect_timeout)
        self.key = key
        self.poll = poll
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.on_change = on_change
        self.leading = False
        self._lead: Hook | None = None
        self._follow: Hook | None = None

    def is_leading(self) -> bool:
        return self.leading

    @property
    def _connection(self) -> asyncpg.Connection | None:
        """The lock's connection (None between tries after it broke)."""
        return self._link.connection

    async def begin(self, lead: Hook, follow: Hook) -> None:
        """Remember what to do on gaining and losing the lead, and compete once now: when this
        instance leads at once, `lead` runs here and its errors reach the caller (a start that fails)."""
        self._lead, self._follow = lead, follow
        if await self._try():
            try:
                await lead()
            except BaseException:
                await self._release()
                raise
            self._set(True)

    async def run(self, stop: asyncio.Event) -> None:
        """Compete (standby) or watch the lock's connection (leader) until `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)
            if stop.is_set():
                break
            if self.leading:
                if not await self._alive():
                    log.warning("leadership: lost (the lock's database connection broke); stopping the "
                                "leader's work")
                    await self._step_down()
                continue
            if not await self._try():
                continue
            log.info("leadership: this instance leads now; starting the leader's work")
            try:
                assert self._lead is not None
                await self._lead()
            except DATABASE_ERRORS + (OSError, RuntimeError, TimeoutError, ConfigError) as error:
                log.error("leadership: the leader's work did not start (%s: %s); letting another instance "
                          "try, again in %.0f s", type(error).__name__, str(error)[:200], self.retry)
                await self._call_follow()
                await self._release()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.retry)
                continue
            self._set(True)

    async def end(self) -> None:
        """Stop leading (the leader's work stopped first) and close the lock's connection."""
        if self.leading:
            await self._step_down()
        await self._release()

    async def _step_down(self) -> None:
        self._set(False)
        await self._call_follow()
        await self._release()

    async def _call_follow(self) -> None:
        if self._follow is None:
            return
        try:
            await self._follow()
        except Exception:  # stopping must not leave the lock held
            log.exception("leadership: stopping the leader's work failed")

    def _set(self, leading: bool) -> None:
        self.leading = leading
        if self.on_change is not None:
            self.on_change(leading)

    async def _try(self) -> bool:
        """Take the lock if it is free (a standby keeps its connection between tries)."""
        try:
            connection = await self._link.open()
            return bool(await asyncio.wait_for(
                connection.fetchval("SELECT pg_try_advisory_lock($1)", self.key), self.connect_timeout))
        except CONNECTION_ERRORS as error:
            log.warning("leadership: database unavailable (%s); trying again", type(error).__name__)
            await self._release()
            return False

    async def _alive(self) -> bool:
        return await self._link.alive(self.poll)

    async def _release(self) -> None:
        """Close the lock's connection: PostgreSQL frees a session's advisory locks when it ends."""
        await self._link.close()


class InstanceRunning(Exception):
    """Another instance holds the SQLite database (the message says which and what to do)."""


class InstanceLock:
    """One instance per SQLite database: an exclusive lock on a file next to it, held while the
    process runs (the kernel frees it when the process ends, however it ends)."""

    def __init__(self, database_url: str):
        url = make_url(database_url)
        database = url.database or ""
        self.path = None if database in ("", ":memory:") else Path(f"{database}.instance")
        self._handle = None

    def acquire(self) -> None:
        """Take the lock, or raise InstanceRunning naming who holds it."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise InstanceRunning(
                f"[database] url: another Meldbot instance ({holder}) already runs on this SQLite database "
                f"({self.path.with_suffix('')}); SQLite takes one instance. Stop the other one, or use "
                "PostgreSQL (postgresql+asyncpg://...) to run several.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing frees the flock
            self._handle = None

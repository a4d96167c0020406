"""A PostgreSQL connection of its own, outside the pool: for what lives as long as a session does
(leadership's advisory lock, the outbox listener's LISTEN), which a pooled connection would lose."""

from __future__ import annotations

import asyncio

import asyncpg

from .db import asyncpg_dsn

#: What a dedicated connection raises when the database is away or the connection broke.
CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class DedicatedConnection:
    """One asyncpg connection, opened on demand and closed (or, when that hangs, dropped) on request."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0):
        self.dsn = asyncpg_dsn(url)
        self.connect_timeout = connect_timeout
        self.connection: asyncpg.Connection | None = None

    async def open(self) -> asyncpg.Connection:
        """The open connection, connecting first when there is none (raises CONNECTION_ERRORS)."""
        if self.connection is None or self.connection.is_closed():
            self.connection = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
        return self.connection

    async def alive(self, timeout: float) -> bool:
        """Whether the connection is open and answers within `timeout` seconds."""
        connection = self.connection
        if connection is None or connection.is_closed():
            return False
        try:
            await asyncio.wait_for(connection.fetchval("SELECT 1"), timeout)
            return True
        except CONNECTION_ERRORS:
            return False

    async def close(self) -> None:
        """Close it (PostgreSQL then frees the session's advisory locks and listeners)."""
        connection, self.connection = self.connection, None
        if connection is None or connection.is_closed():
            return
        try:
            await asyncio.wait_for(connection.close(), self.connect_timeout)
        except CONNECTION_ERRORS:
            connection.terminate()

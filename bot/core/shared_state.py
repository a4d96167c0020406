"""The chat platforms' shared state in the database: what every instance must see the same (the
Teams coordinator channel, the Matrix encryption store and coordinator roster).

Adapters never import storage: the app gives each adapter a `SharedState` bound to its platform
(see `use_shared_state`); an adapter built without one keeps the same documents in sealed files
(`bot.adapters.common.FileState`), which is what a single process in a test needs."""

from __future__ import annotations

import json
from typing import Any, Callable

import datetime as dt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage import repo, transaction
from storage.repo.platform_state import StateConflict as StoredConflict

from bot.adapters.contract import StateConflict

from bot.core.clock import utc_now


class SharedState:
    """Named documents (bytes or JSON) of one platform, sealed under the store key, versioned."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], platform: str,
                 clock: Callable[[], dt.datetime] = utc_now):
        self.sessions = sessions
        self.platform = platform
        self.clock = clock

    async def load(self, name: str) -> tuple[bytes | None, int]:
        """The document and its version (None, 0: never written)."""
        async with self.sessions() as session:
            return await repo.get_platform_state(session=session, platform=self.platform, name=name)

    async def version(self, name: str) -> int:
        """The document's current version (cheap: nothing is opened)."""
        async with self.sessions() as session:
            return await repo.get_platform_state_version(session=session, platform=self.platform, name=name)

    async def save(self, name: str, data: bytes, expected_version: int | None = None) -> int:
        """Write the document; returns its new version. With `expected_version` only if nobody wrote
        it since that version (`StateConflict` otherwise: reload and apply the change again)."""
        try:
            async with transaction(self.sessions) as session:
                return await repo.put_platform_state(session=session, platform=self.platform, name=name, data=data,
                                                     now=self.clock(), expected_version=expected_version)
        except StoredConflict as conflict:
            raise StateConflict(str(conflict)) from None

    async def load_json(self, name: str, default: Any = None) -> Any:
        data, _ = await self.load(name)
        return default if data is None else json.loads(data)

    async def save_json(self, name: str, value: Any, expected_version: int | None = None) -> int:
        return await self.save(name, json.dumps(value, separators=(",", ":"), sort_keys=True).encode(),
                               expected_version)

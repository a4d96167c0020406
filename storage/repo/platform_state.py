"""Shared platform state: one sealed document per (platform, name), versioned."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import vault_of
from ..models import PlatformState
from ._common import _insert


def _purpose(platform: str, name: str) -> str:
    return f"platform state:{platform}:{name}"


async def get_platform_state(*, session: AsyncSession, platform: str, name: str) -> tuple[bytes | None, int]:
    """The document and its version (None and 0 when it was never written)."""
    row = (await session.execute(select(PlatformState.sealed, PlatformState.version).where(
        PlatformState.platform == platform, PlatformState.name == name))).first()
    if row is None:
        return None, 0
    return vault_of(session).open_bytes("store", row.sealed, _purpose(platform, name)), int(row.version)


async def get_platform_state_version(*, session: AsyncSession, platform: str, name: str) -> int:
    """The document's version without opening it (0 when it was never written)."""
    version = await session.scalar(select(PlatformState.version).where(
        PlatformState.platform == platform, PlatformState.name == name))
    return int(version or 0)


class StateConflict(Exception):
    """The document was written by someone else since the version the writer read."""


async def put_platform_state(*, session: AsyncSession, platform: str, name: str, data: bytes, now: dt.datetime,
                             expected_version: int | None = None) -> int:
    """Write the document (sealed) in one statement; returns its new version. With `expected_version`
    (0: never written) the write happens only if the document is still at that version, else
    `StateConflict` (a compare-and-set: two instances' read-modify-writes never lose one another's)."""
    sealed = vault_of(session).seal_bytes("store", data, _purpose(platform, name))
    table = PlatformState.__table__
    if expected_version:
        version = await session.scalar(
            update(PlatformState)
            .where(PlatformState.platform == platform, PlatformState.name == name,
                   PlatformState.version == expected_version)
            .values(sealed=sealed, version=table.c.version + 1, updated_at=now)
            .returning(table.c.version).execution_options(synchronize_session=False))
        if version is None:
            raise StateConflict(f"{platform}/{name} is no longer at version {expected_version}")
        return int(version)
    statement = _insert(session, PlatformState).values(platform=platform, name=name, sealed=sealed, version=1,
                                                       updated_at=now)
    if expected_version == 0:
        version = await session.scalar(statement.on_conflict_do_nothing(index_elements=["platform", "name"])
                                       .returning(table.c.version))
        if version is None:
            raise StateConflict(f"{platform}/{name} was written meanwhile")
        return int(version)
    statement = statement.on_conflict_do_update(
        index_elements=["platform", "name"],
        set_={"sealed": sealed, "version": table.c.version + 1, "updated_at": now}).returning(table.c.version)
    return int(await session.scalar(statement))

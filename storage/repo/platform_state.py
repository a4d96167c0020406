"""Shared platform state: one sealed document per (platform, name), versioned."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
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


async def put_platform_state(*, session: AsyncSession, platform: str, name: str, data: bytes, now: dt.datetime
                             ) -> int:
    """Write the document (sealed) in one upsert; returns its new version."""
    sealed = vault_of(session).seal_bytes("store", data, _purpose(platform, name))
    table = PlatformState.__table__
    statement = _insert(session, PlatformState).values(platform=platform, name=name, sealed=sealed, version=1,
                                                       updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=["platform", "name"],
        set_={"sealed": sealed, "version": table.c.version + 1, "updated_at": now}).returning(table.c.version)
    return int(await session.scalar(statement))

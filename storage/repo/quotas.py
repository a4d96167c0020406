"""Daily file quotas per person (`[limits]`)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import vault_of
from ..models import FileUsage
from ._common import _insert, sender_hash


async def get_file_usage(*, session: AsyncSession, platform: str, sender: str, day: str) -> tuple[int, int]:
    """Files and bytes one person sent on `day` (ISO date in the organisation's time zone)."""
    sender = sender_hash(vault_of(session), platform, sender)
    row = (await session.execute(select(FileUsage.files, FileUsage.bytes).where(
        FileUsage.platform == platform, FileUsage.sender == sender, FileUsage.day == day))).first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def add_file_usage(*, session: AsyncSession, platform: str, sender: str, day: str, files: int,
                         size: int) -> None:
    """Count accepted files towards the day's quota (kept even when a draft is cancelled later).
    The person is stored as a keyed hash."""
    sender = sender_hash(vault_of(session), platform, sender)
    statement = _insert(session, FileUsage).values(platform=platform, sender=sender, day=day, files=files, bytes=size)
    statement = statement.on_conflict_do_update(
        index_elements=["platform", "sender", "day"],
        set_={"files": FileUsage.__table__.c.files + files, "bytes": FileUsage.__table__.c.bytes + size})
    await session.execute(statement)


async def prune_file_usage(*, session: AsyncSession, before_day: str) -> int:
    """Forget quota counts of days before `before_day`."""
    result = await session.execute(delete(FileUsage).where(FileUsage.day < before_day))
    return result.rowcount or 0

"""Case threads: where a case's notification was posted, per platform and room/channel."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import (
    Case,
    CaseThread,
)
from ._common import _insert


async def get_case_thread(*, session: AsyncSession, case_id: int, platform: str, destination: str) -> CaseThread | None:
    """Where a case's notification was posted on a platform, if it was."""
    return await session.get(CaseThread, (case_id, platform, destination))


async def set_case_thread(
    *, session: AsyncSession, case_id: int, platform: str, destination: str, root_id: str, now: dt.datetime
) -> None:
    """Remember the root of a case's thread (the posted notification); one upsert."""
    statement = _insert(session, CaseThread).values(case_id=case_id, platform=platform, destination=destination,
                                                    root_id=root_id, created_at=now)
    await session.execute(statement.on_conflict_do_update(
        index_elements=["case_id", "platform", "destination"], set_={"root_id": statement.excluded.root_id}))


async def delete_case_threads(*, session: AsyncSession, case_id: int, platform: str, keep: str) -> int:
    """Forget a case's threads on `platform` except the one in `keep` (its room/channel moved)."""
    result = await session.execute(delete(CaseThread).where(CaseThread.case_id == case_id,
                                                            CaseThread.platform == platform,
                                                            CaseThread.destination != keep))
    return result.rowcount or 0


async def get_case_by_thread(*, session: AsyncSession, platform: str, destination: str, root_id: str) -> Case | None:
    """The case whose coordinator notification is the root of this thread."""
    query = (
        select(Case).join(CaseThread, CaseThread.case_id == Case.id)
        .where(CaseThread.platform == platform, CaseThread.destination == destination, CaseThread.root_id == root_id)
    )
    return await session.scalar(query)


async def list_case_threads(*, session: AsyncSession, case_id: int) -> list[CaseThread]:
    """Where a case's notifications were posted (one thread per platform and room/channel)."""
    return list(await session.scalars(select(CaseThread).where(CaseThread.case_id == case_id)))

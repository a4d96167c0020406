"""Reporters: who reported, kept apart from their cases."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import Reporter
from ._common import _insert


async def upsert_reporter(
    *, session: AsyncSession, platform: str, platform_user_id: str, display_name: str | None,
    conversation_id: int | None, now: dt.datetime,
) -> int:
    """The ID of the reporter row for a platform identity, created or brought up to date (latest
    name and conversation) in one statement."""
    statement = _UPSERT_REPORTER.get(session.get_bind().dialect.name)
    if statement is None:
        # Built once per dialect: building an upsert (and its cache key) costs more than running it.
        table = Reporter.__table__
        statement = _insert(session, Reporter).values(
            platform=bindparam("platform"), platform_user_id=bindparam("platform_user_id"),
            display_name=bindparam("display_name"), conversation_id=bindparam("conversation_id"),
            created_at=bindparam("created_at", type_=Reporter.__table__.c.created_at.type))
        statement = _UPSERT_REPORTER[session.get_bind().dialect.name] = statement.on_conflict_do_update(
            index_elements=["platform", "platform_user_id"],
            set_={"display_name": func.coalesce(statement.excluded.display_name, table.c.display_name),
                  "conversation_id": func.coalesce(statement.excluded.conversation_id, table.c.conversation_id)},
        ).returning(table.c.id)
    return int(await session.scalar(statement, {
        "platform": platform, "platform_user_id": platform_user_id, "display_name": display_name,
        "conversation_id": conversation_id, "created_at": now}))


_UPSERT_REPORTER: dict[str, Any] = {}


async def get_reporter(*, session: AsyncSession, reporter_id: int) -> Reporter | None:
    """A reporter by ID."""
    return await session.get(Reporter, reporter_id)

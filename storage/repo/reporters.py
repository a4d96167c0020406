"""Reporters: who reported, kept apart from their cases."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import vault_of
from ..models import Reporter
from ._common import _insert, sender_hash


async def upsert_reporter(
    *, session: AsyncSession, platform: str, platform_user_id: str, display_name: str | None,
    conversation_id: int | None, now: dt.datetime,
) -> int:
    """The ID of the reporter row for a platform identity, created or brought up to date (latest
    name and conversation) in one statement. ID and name are stored sealed under the people key."""
    statement = _UPSERT_REPORTER.get(session.get_bind().dialect.name)
    if statement is None:
        # Built once per dialect: building an upsert (and its cache key) costs more than running it.
        table = Reporter.__table__
        statement = _insert(session, Reporter).values(
            platform=bindparam("platform"), identity_hash=bindparam("identity_hash"),
            sealed=bindparam("sealed", type_=table.c.sealed.type), conversation_id=bindparam("conversation_id"),
            created_at=bindparam("created_at", type_=table.c.created_at.type))
        statement = _UPSERT_REPORTER[session.get_bind().dialect.name] = statement.on_conflict_do_update(
            index_elements=["platform", "identity_hash"],
            # Without a name in this message the stored one (sealed with it) is kept.
            set_={"sealed": case((bindparam("named", type_=Boolean()), statement.excluded.sealed), else_=table.c.sealed),
                  "conversation_id": func.coalesce(statement.excluded.conversation_id, table.c.conversation_id)},
        ).returning(table.c.id)
    vault = vault_of(session)
    sealed = vault.seal_json(Reporter._sealed_key, {"platform_user_id": platform_user_id,
                                                    "display_name": display_name}, Reporter._sealed_purpose)
    return int(await session.scalar(statement, {
        "platform": platform, "identity_hash": sender_hash(vault, platform, platform_user_id), "sealed": sealed,
        "named": display_name is not None, "conversation_id": conversation_id, "created_at": now}))


async def find_reporter(*, session: AsyncSession, platform: str, platform_user_id: str) -> Reporter | None:
    """The reporter row of a platform identity (None when they never reported in their own name)."""
    return await session.scalar(select(Reporter).where(
        Reporter.platform == platform,
        Reporter.identity_hash == sender_hash(vault_of(session), platform, platform_user_id)))


_UPSERT_REPORTER: dict[str, Any] = {}


async def get_reporter(*, session: AsyncSession, reporter_id: int) -> Reporter | None:
    """A reporter by ID."""
    return await session.get(Reporter, reporter_id)

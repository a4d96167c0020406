"""Statement helpers shared by the repository modules."""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import bindparam, insert
from sqlalchemy.ext.asyncio import AsyncSession


def _insert(session: AsyncSession, model):
    """A plain (Core) INSERT into a model's table that knows ON CONFLICT DO NOTHING on both engines."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(model.__table__)


def _prebuilt_insert(table, columns: Iterable[str]):
    """An INSERT with a bind parameter per column, built once (building one per call costs more than
    running it)."""
    return insert(table).values({name: bindparam(name, type_=table.c[name].type) for name in columns})


def sender_hash(vault, platform: str, sender: str) -> str:
    """The keyed hash a person's platform user ID is looked up by (conversations, reporters, quotas)."""
    return vault.lookup("sender", platform, sender)


def conversation_hash(vault, platform: str, conversation_key: str) -> str:
    """The keyed hash a platform conversation (room, chat) is looked up by."""
    return vault.lookup("conversation", platform, conversation_key)

"""Conversations: one chat between the bot and one person, with the dialogue state and draft timers."""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from sqlalchemy import or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from ..db import vault_of
from ..models import Conversation
from ._common import _insert, conversation_hash, sender_hash


async def get_or_create_conversations(
    *, session: AsyncSession, keys: Iterable[tuple[str, str, str]], language: str, now: dt.datetime
) -> dict[tuple[str, str, str], Conversation]:
    """The conversation rows of many (platform, conversation key, sender), created on first contact,
    locked (PostgreSQL) against turns of the same conversations in other processes."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    vault = vault_of(session)
    hashed = {(p, conversation_hash(vault, p, k), sender_hash(vault, p, s)): (p, k, s) for p, k, s in wanted}
    identity = tuple_(Conversation.platform, Conversation.key_hash, Conversation.sender_hash)

    async def load(subset):
        # Locked in ID order, in every process: batches of other processes wait, never deadlock.
        query = select(Conversation).where(identity.in_(subset)).order_by(Conversation.id).with_for_update()
        return {hashed[(c.platform, c.key_hash, c.sender_hash)]: c for c in await session.scalars(query)}

    found = await load(list(hashed))
    missing = sorted(key for key, plain in hashed.items() if plain not in found)
    if missing:
        await session.execute(
            _insert(session, Conversation).values([
                {"platform": p, "key_hash": k, "sender_hash": s, "language": language, "created_at": now,
                 "updated_at": now,
                 "sealed": vault.seal_json("state", {"conversation_key": hashed[(p, k, s)][1],
                                                     "sender": hashed[(p, k, s)][2], "state": {}, "address": {}},
                                           Conversation._sealed_purpose)} for p, k, s in missing])
            .on_conflict_do_nothing(index_elements=["platform", "key_hash", "sender_hash"])
        )
        found.update(await load(missing))
    return found


def _sealed_values(conversation: Conversation, values: dict[str, Any]) -> dict[str, Any]:
    """Column values with `state`, `address` and `last_answer` folded into the conversation's sealed column."""
    plain = {name: values.pop(name) for name in ("state", "address", "last_answer") if name in values}
    if plain:
        values["sealed"] = conversation.resealed(**plain)
    return values


async def save_conversation_states(*, session: AsyncSession, rows: list[dict[str, Any]],
                                   conversations: dict[int, Conversation]) -> None:
    """Store the states of many conversations in one executemany UPDATE (rows hold `id` and the
    columns to set, the same columns in every row)."""
    if not rows:
        return
    rows = [_sealed_values(conversations[row["id"]], dict(row)) for row in rows]
    await session.execute(update(Conversation), rows)
    for row in rows:
        conversation = conversations[row["id"]]
        for name, value in row.items():
            if name != "id":
                set_committed_value(conversation, name, value)


async def save_conversation_state(
    *, session: AsyncSession, conversation: Conversation, state: dict[str, Any], language: str,
    now: dt.datetime, address: dict[str, Any] | None = None,
    draft_timers: tuple[dt.datetime | None, dt.datetime | None] | None = None,
) -> None:
    """Store the dialogue state (and the latest reply address) of a conversation; `draft_timers` sets
    the reminder and expiry of its unfinished report in the same statement."""
    values: dict[str, Any] = {"state": state, "language": language, "updated_at": now}
    if draft_timers is not None:
        values["draft_reminder_at"], values["draft_expires_at"] = draft_timers
    if address is not None and address != conversation.address:
        values["address"] = address
    values = _sealed_values(conversation, values)
    # A plain UPDATE (every turn does this); the loaded object is brought up to date without a flush.
    await session.execute(update(Conversation).where(Conversation.id == conversation.id).values(**values)
                          .execution_options(synchronize_session=False))
    for name, value in values.items():
        set_committed_value(conversation, name, value)


async def get_conversation(*, session: AsyncSession, conversation_id: int, for_update: bool = False
                           ) -> Conversation | None:
    """A conversation by its ID; `for_update` locks the row (PostgreSQL) against a concurrent turn."""
    return await session.get(Conversation, conversation_id, with_for_update=for_update or None)


async def find_conversation(*, session: AsyncSession, platform: str, sender: str) -> Conversation | None:
    """The most recent direct conversation of a person with the bot on a platform."""
    hashed = sender_hash(vault_of(session), platform, sender)
    query = (select(Conversation).where(Conversation.platform == platform, Conversation.sender_hash == hashed)
             .order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(1))
    return await session.scalar(query)


async def due_draft_conversation(*, session: AsyncSession, now: dt.datetime) -> Conversation | None:
    """A conversation whose unfinished report is due for its reminder or its expiry (row locked)."""
    query = (select(Conversation)
             .where(or_(Conversation.draft_reminder_at <= now, Conversation.draft_expires_at <= now))
             .order_by(Conversation.id).limit(1).with_for_update(skip_locked=True))
    return await session.scalar(query)


async def set_draft_timers(*, session: AsyncSession, conversation: Conversation, reminder_at: dt.datetime | None,
                           expires_at: dt.datetime | None) -> None:
    """Set (or clear) the reminder and expiry of a conversation's unfinished report."""
    await session.execute(update(Conversation).where(Conversation.id == conversation.id)
                          .values(draft_reminder_at=reminder_at, draft_expires_at=expires_at)
                          .execution_options(synchronize_session=False))
    set_committed_value(conversation, "draft_reminder_at", reminder_at)
    set_committed_value(conversation, "draft_expires_at", expires_at)

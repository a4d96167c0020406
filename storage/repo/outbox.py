"""The outbox: messages that must reach someone, leased and delivered once."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import vault_of
from ..models import OutboxMessage
from ._common import _prebuilt_insert


@dataclass(frozen=True)
class QueuedMessage:
    """What `enqueue_message` tells about the row it added."""

    id: int
    idempotency_key: str


async def enqueue_message(
    *, session: AsyncSession, kind: str, platform: str, destination: str | None, payload: dict[str, Any],
    now: dt.datetime, case_id: int | None = None, idempotency_key: str | None = None,
) -> QueuedMessage:
    """Add a message to the outbox, in the caller's transaction (one plain INSERT: no unit of work).
    The payload is sealed under the state key. A given `idempotency_key` already queued is not
    queued again (the earlier row is returned)."""
    if idempotency_key is not None:
        earlier = await session.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key == idempotency_key))
        if earlier is not None:
            return QueuedMessage(earlier, idempotency_key)
    key = idempotency_key or uuid.uuid4().hex
    sealed = vault_of(session).seal_json(OutboxMessage._sealed_key, {"payload": payload},
                                         OutboxMessage._sealed_purpose)
    message_id = await session.scalar(_ENQUEUE, {
        "kind": kind, "platform": platform, "destination": destination, "sealed": sealed, "case_id": case_id,
        "idempotency_key": key, "attempts": 0, "next_attempt_at": now, "created_at": now})
    return QueuedMessage(message_id, key)


_ENQUEUE = _prebuilt_insert(OutboxMessage.__table__, (
    "kind", "platform", "destination", "sealed", "case_id", "idempotency_key", "attempts", "next_attempt_at",
    "created_at")).returning(OutboxMessage.__table__.c.id)


#: How many of the next due rows a claim looks at before it looks at all of them.
CLAIM_WINDOW = 64


async def claim_due_messages(
    *, session: AsyncSession, now: dt.datetime, lease: dt.timedelta, limit: int = 20,
    platforms: Iterable[str] | None = None,
) -> list[OutboxMessage]:
    """Lease up to `limit` due, undelivered messages to this worker.

    A message whose case has an older undelivered message waits, so a case's thread replies never
    overtake its first notification. On PostgreSQL the due rows are locked with `FOR UPDATE SKIP
    LOCKED`: workers of several instances claiming at once each get other rows instead of queueing
    behind one another. The lease itself is a conditional UPDATE in the same transaction, so two
    workers never hold the same message (SQLite, which ignores FOR UPDATE, relies on it alone).
    """
    older = OutboxMessage.__table__.alias("older")
    blocked = (
        select(older.c.id)
        .where(older.c.case_id == OutboxMessage.case_id, older.c.id < OutboxMessage.id,
               older.c.delivered_at.is_(None), older.c.platform == OutboxMessage.platform,
               older.c.destination.is_not_distinct_from(OutboxMessage.destination))
        .exists()
    )
    free = or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until <= now)
    due = [OutboxMessage.delivered_at.is_(None), OutboxMessage.next_attempt_at <= now, free]
    if platforms is not None:
        due.append(OutboxMessage.platform.in_(list(platforms)))
    order = (OutboxMessage.next_attempt_at, OutboxMessage.id)
    # The next few due rows first (a plain ordered read), then the per-case check on those alone: in
    # one statement, with a large backlog whose statistics are stale, the planner checks every
    # undelivered row before it sorts. Only when all of them wait is every row looked at.
    window = list(await session.scalars(select(OutboxMessage.id).where(*due).order_by(*order).limit(CLAIM_WINDOW)))
    if not window:
        return []
    ids: list[int] = []
    for candidates in (OutboxMessage.id.in_(window), None):
        if candidates is None and len(window) < CLAIM_WINDOW:
            break  # the window held every due row
        query = select(OutboxMessage.id).where(*due, ~blocked).order_by(*order).limit(limit) \
            .with_for_update(skip_locked=True, of=OutboxMessage)
        ids = list(await session.scalars(query if candidates is None else query.where(candidates)))
        if ids:
            break
    if not ids:
        return []
    # The conditional UPDATE returns the leased rows themselves: no second SELECT.
    leased = await session.scalars(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), OutboxMessage.delivered_at.is_(None), free)
        .values(locked_until=now + lease, attempts=OutboxMessage.attempts + 1)
        .returning(OutboxMessage)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return sorted(leased, key=lambda message: ids.index(message.id))


async def has_due_messages(*, session: AsyncSession, now: dt.datetime, platforms: Iterable[str] | None = None
                           ) -> bool:
    """Whether any undelivered message is due and not leased (a read: takes no write lock)."""
    query = select(OutboxMessage.id).where(
        OutboxMessage.delivered_at.is_(None), OutboxMessage.next_attempt_at <= now,
        or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until <= now)).limit(1)
    if platforms is not None:
        query = query.where(OutboxMessage.platform.in_(list(platforms)))
    return await session.scalar(query) is not None


async def mark_message_delivered(
    *, session: AsyncSession, message_id: int, now: dt.datetime, result: str | None = None
) -> None:
    """Record a delivery; the message is never sent again, and its payload (which can hold relayed
    text or a login link) is emptied at once."""
    values: dict[str, Any] = {"delivered_at": now, "locked_until": None, "result": (result or "")[:255],
                              "last_error": None, "sealed": None}
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message_id).values(**values)
        .execution_options(synchronize_session=False)
    )


async def mark_message_failed(
    *, session: AsyncSession, message_id: int, retry_at: dt.datetime, error: str
) -> None:
    """Record a failed attempt and when to try again."""
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message_id)
        .values(next_attempt_at=retry_at, locked_until=None, last_error=error[:2000])
        .execution_options(synchronize_session=False)
    )


async def count_pending_messages(*, session: AsyncSession, platforms: Iterable[str] | None = None) -> int:
    """Undelivered outbox messages."""
    query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
    if platforms is not None:
        query = query.where(OutboxMessage.platform.in_(list(platforms)))
    return int(await session.scalar(query) or 0)


async def next_due_time(*, session: AsyncSession) -> dt.datetime | None:
    """When the earliest undelivered message is due (None when the outbox is empty)."""
    return await session.scalar(
        select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.delivered_at.is_(None))
    )

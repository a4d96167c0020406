"""Inbound platform event IDs: each event is handled once."""

from __future__ import annotations

import datetime as dt
from typing import Iterable

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import HandledEvent
from ._common import _insert


async def is_event_handled(*, session: AsyncSession, platform: str, event_id: str) -> bool:
    """True when this platform event was handled before."""
    found = await session.scalar(
        select(HandledEvent.id).where(HandledEvent.platform == platform, HandledEvent.event_id == event_id)
    )
    return found is not None


async def mark_event_handled(*, session: AsyncSession, platform: str, event_id: str, now: dt.datetime) -> None:
    """Record an event as handled; a duplicate fails here with IntegrityError (unique constraint).

    A plain INSERT rather than the ORM unit of work: this runs on every inbound message.
    """
    await session.execute(insert(HandledEvent).values(platform=platform, event_id=event_id, handled_at=now))


async def mark_events_handled(*, session: AsyncSession, events: Iterable[tuple[str, str]], now: dt.datetime
                              ) -> set[tuple[str, str]]:
    """Record many events as handled in one statement; returns those that were new (the others
    were handled before, or are being handled by another transaction that then committed)."""
    # Sorted: two processes inserting overlapping IDs then wait in the same order (no deadlock).
    rows = [{"platform": platform, "event_id": event_id, "handled_at": now}
            for platform, event_id in sorted(set(events))]
    if not rows:
        return set()
    statement = (_insert(session, HandledEvent).values(rows)
                 .on_conflict_do_nothing(index_elements=["platform", "event_id"])
                 .returning(HandledEvent.__table__.c.platform, HandledEvent.__table__.c.event_id))
    return {(platform, event_id) for platform, event_id in (await session.execute(statement)).all()}


async def prune_handled_events(*, session: AsyncSession, before: dt.datetime) -> int:
    """Forget handled event IDs older than `before` (platforms stop redelivering long before)."""
    result = await session.execute(delete(HandledEvent).where(HandledEvent.handled_at < before))
    return result.rowcount or 0

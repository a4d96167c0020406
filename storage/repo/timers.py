"""Durable follow-up timers of cases."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import (
    Conversation,
    Timer,
)
from ._common import _insert


async def schedule_timer(*, session: AsyncSession, key: str, kind: str, case_id: int | None, due_at: dt.datetime,
                         now: dt.datetime) -> bool:
    """Schedule a timer once per key (a second call with the same key changes nothing)."""
    result = await session.execute(
        _insert(session, Timer).values(key=key, kind=kind, case_id=case_id, due_at=due_at, created_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return result.rowcount == 1


async def cancel_timers(*, session: AsyncSession, case_id: int, kind: str, now: dt.datetime) -> int:
    """Mark a case's pending timers of one kind done without firing them (superseded)."""
    result = await session.execute(
        update(Timer).where(Timer.case_id == case_id, Timer.kind == kind, Timer.done_at.is_(None))
        .values(done_at=now, outcome="superseded").execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


async def claim_due_timer(*, session: AsyncSession, now: dt.datetime, lease: dt.timedelta) -> Timer | None:
    """Lease the earliest due timer (conditional UPDATE: two workers never fire the same one)."""
    candidates = await session.scalars(
        select(Timer).where(Timer.done_at.is_(None), Timer.due_at <= now,
                            or_(Timer.locked_until.is_(None), Timer.locked_until <= now))
        .order_by(Timer.due_at, Timer.id).limit(5)
    )
    for timer in list(candidates):
        result = await session.execute(
            update(Timer).where(Timer.id == timer.id, Timer.done_at.is_(None),
                                or_(Timer.locked_until.is_(None), Timer.locked_until <= now))
            .values(locked_until=now + lease).execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            await session.refresh(timer)
            return timer
    return None


async def finish_timer(*, session: AsyncSession, timer_id: int, now: dt.datetime, outcome: str) -> bool:
    """Mark a leased timer done; False when it was already done (then nothing else may happen)."""
    result = await session.execute(
        update(Timer).where(Timer.id == timer_id, Timer.done_at.is_(None))
        .values(done_at=now, locked_until=None, outcome=outcome[:40]).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def next_timer_due(*, session: AsyncSession) -> dt.datetime | None:
    """When the earliest pending timer (case or draft) is due."""
    times = [
        await session.scalar(select(func.min(Timer.due_at)).where(Timer.done_at.is_(None))),
        await session.scalar(select(func.min(Conversation.draft_reminder_at))),
        await session.scalar(select(func.min(Conversation.draft_expires_at))),
    ]
    return min((t for t in times if t is not None), default=None)


async def list_timers(*, session: AsyncSession, case_id: int) -> list[Timer]:
    """A case's timers, in due order."""
    return list(await session.scalars(select(Timer).where(Timer.case_id == case_id).order_by(Timer.due_at)))

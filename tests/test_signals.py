"""Signals to the coordinators when something stands out, and their `overzicht`."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import select

from bot.adapters.contract import CoordinatorMessage
from bot.config import StatsSettings
from bot.core.signals import Signal, standing_out
from stack import Stack
from storage import repo, transaction
from storage.models import AuditEntry, CaseFact, Timer

_events = itertools.count()


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url, now=dt.datetime(2026, 8, 10, 8, 0, tzinfo=dt.timezone.utc))
    try:
        yield stack
    finally:
        await stack.close()


async def add_facts(sessions, month: str, n: int, *, kinds=("verbal",), place="counter", department=None):
    """`n` facts of purged cases (no case behind them) reported in `month`."""
    async with transaction(sessions) as session:
        for _ in range(n):
            fact = CaseFact(occurred_month=month, reported_month=month, kinds=list(kinds), place=place,
                            kind_bits=repo.bits_of(repo.KIND_BITS, kinds), department=department,
                            status="closed", milestones={})
            session.add(fact)


def room_signals(stack) -> list[str]:
    return [text for _, text in stack.chat.room_posts if text.startswith("Meldbot-signaal")]


@pytest.mark.both_databases
async def test_what_stands_out_against_the_three_months_before(stack):
    sessions = stack.meldbot.sessions
    settings = StatsSettings()  # twice the usual and at least 5
    # Counter: 3 a month in the three months before (usual 3); 5 in November: not twice the usual.
    for month, n in (("2026-08", 3), ("2026-09", 3), ("2026-10", 3), ("2026-11", 5)):
        await add_facts(sessions, month, n, place="counter", department="burgerzaken")
    # Phone: 1, 0, 2 before (usual 1); 5 in November: stands out.
    for month, n in (("2026-08", 1), ("2026-10", 2), ("2026-11", 5)):
        await add_facts(sessions, month, n, kinds=("threat",), place="phone", department="handhaving")
    # Home visits: never before, 4 in November: fewer than 5, so nothing to signal.
    await add_facts(sessions, "2026-11", 4, kinds=("physical",), place="home_visit")
    async with sessions() as session:
        found = await standing_out(session, "2026-11", settings)
    assert found == [
        Signal("department", "handhaving", "2026-11", 5, 1.0),
        Signal("kind", "threat", "2026-11", 5, 1.0),
        Signal("place", "phone", "2026-11", 5, 1.0),
    ]
    # Five times the usual, or at least six reports: nothing stands out.
    async with sessions() as session:
        assert await standing_out(session, "2026-11", StatsSettings(signal_factor=5.5)) == []
        assert await standing_out(session, "2026-11", StatsSettings(signal_min_reports=6)) == []
        # Never below the "<5" threshold, whatever signal_min_reports says.
        assert await standing_out(session, "2026-11", StatsSettings(signal_min_reports=2, min_count=6)) == []


@pytest.mark.both_databases
async def test_a_signal_reaches_the_room_once_and_the_month_is_summed_up(stack):
    stack.chat.room_posts.clear()
    # One report a month at the counter in August, September and October: usually 1 a month.
    for day in (dt.datetime(2026, 8, 10, 9), dt.datetime(2026, 9, 10, 9), dt.datetime(2026, 10, 12, 9)):
        stack.clock.now = day.replace(tzinfo=dt.timezone.utc)
        await stack.report(f"user{day.month}")
    # Five in November, by five colleagues.
    stack.clock.now = dt.datetime(2026, 11, 16, 9, tzinfo=dt.timezone.utc)
    for n in range(5):
        await stack.report(f"colleague{n}")
    await stack.tick(hours=1)
    signals = room_signals(stack)
    # The story names verbal aggression and a threat at the counter: three signals, each once.
    assert len(signals) == 3, signals
    assert any("Balie of loket" in s and "al 5" in s and "gewoonlijk 1 per maand" in s for s in signals)
    assert all("http://meldbot.test/stats" in s for s in signals)
    for text in signals:  # counts, codes and a link: never the story or a name
        assert "schold" not in text and "colleague" not in text.lower()
    # The next hour, and after a sixth report: nothing new (once per month each).
    await stack.report("colleague9")
    await stack.tick(hours=1)
    assert len(room_signals(stack)) == 3
    # 1 December, 09:00 in the Netherlands: November summed up.
    stack.chat.room_posts.clear()
    stack.clock.now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)
    await stack.tick(seconds=1)
    (summary,) = [text for _, text in stack.chat.room_posts if text.startswith("Meldbot: de maand november 2026")]
    assert "Meldingen in november 2026: 6. Gewoonlijk zijn het er 1 per maand" in summary
    assert "Balie of loket" in summary
    async with stack.meldbot.sessions() as session:
        pending = [t.key for t in await session.scalars(select(Timer).where(Timer.kind == "stats_monthly",
                                                                              Timer.done_at.is_(None)))]
    assert pending == ["stats_monthly:2027-01"]


def room_message(text: str, sender: str = "coco", is_coordinator: bool = True) -> CoordinatorMessage:
    return CoordinatorMessage(platform="chat", destination="coordinators", thread_root="", sender=sender,
                              text=text, event_id=f"room-{next(_events)}", is_coordinator=is_coordinator,
                              sender_name=sender.title())


@pytest.mark.both_databases
async def test_overzicht_gives_this_month_and_this_year_to_coordinators_only(stack):
    stack.clock.now = dt.datetime(2025, 11, 5, 9, tzinfo=dt.timezone.utc)
    await stack.report("anna")  # last year, within the same months
    stack.clock.now = dt.datetime(2025, 12, 5, 9, tzinfo=dt.timezone.utc)
    await stack.report("anna")  # last year, after them
    stack.clock.now = dt.datetime(2026, 10, 5, 9, tzinfo=dt.timezone.utc)
    await stack.report("bob")
    stack.clock.now = dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc)
    await stack.report("carla")
    await stack.report("dirk")
    stack.clock.now = dt.datetime(2026, 12, 10, 9, tzinfo=dt.timezone.utc)
    await stack.report("eddy")
    stack.clock.now = dt.datetime(2026, 12, 20, 9, tzinfo=dt.timezone.utc)  # eddy's case: 10 days open
    (answer,) = await stack.meldbot.engine.handle_coordinator(room_message("Overzicht"))
    text = answer.plain()
    assert "Meldingen deze maand (december 2026): 1 (november 2026: 2)." in text
    assert "Dit jaar tot nu toe: 4 (2025 over dezelfde maanden: 2)." in text
    assert "Nu open: 6, waarvan 5 langer dan 30 dagen." in text
    assert "http://meldbot.test/stats" in text
    # Someone who is not a coordinator gets no figures.
    (refused,) = await stack.meldbot.engine.handle_coordinator(room_message("overzicht", "eve", False))
    assert "meldingen" not in refused.plain()
    async with stack.meldbot.sessions() as session:
        audited = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "view_overview")))
    assert [(e.actor, e.detail) for e in audited] == [("chat:coco", {"via": "chat"})]

"""Retention: the daily purge (a durable timer, once across processes) with a hand-moved clock, the
14-day notice in the case thread, legal hold, withdrawn reports, what a purge leaves (one
de-identified fact) and `meldbot retention purge [--dry-run]`."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from bot.adapters.contract import InboundAttachment
from bot.app import build
from bot.cli import main
from bot.config import Settings
from bot.core.clock import utc_now
from bot.web.server import create_app
from stack import Clock, RecordingPlatform, Stack
from storage import repo
from storage.models import (
    Attachment,
    AuditEntry,
    Case,
    CaseEvent,
    CaseFact,
    CaseThread,
    Conversation,
    OutboxMessage,
    Reporter,
    Timer,
)
from storage.repo.retention import RetentionRules, add_years

from aiohttp.test_utils import TestClient, TestServer

STORY = "Een man schold me net uit aan de balie en dreigde me te slaan"
UTC = dt.timezone.utc
#: The daily purge of the default config: 03:30 in Amsterdam, 02:30 UTC in winter.
RUN = dt.time(2, 30)


async def start(database_url: str, key_file: Path) -> Stack:
    """Stack.start with a master key file of the test (so PostgreSQL works too) and the daily purge
    scheduled as `meldbot run` does at start."""
    clock = Clock(dt.datetime(2026, 11, 23, 9, 15, tzinfo=UTC))  # a Monday, 10:15 in NL
    settings = Settings(organisation={"name": "Gemeente Testdam"}, database={"url": database_url},
                        web={"public_url": "http://meldbot.test"}, privacy={"key_file": str(key_file)})
    chat = RecordingPlatform(coordinators={"coco"})
    meldbot = await build(settings, {"chat": chat}, clock=clock)
    await chat.start(meldbot.engine)
    client = TestClient(TestServer(create_app(db_engine=meldbot.db, routes=meldbot.pages.routes(),
                                              public_url=settings.web.public_url)))
    await client.start_server()
    await meldbot.retention.ensure_scheduled()
    return Stack(meldbot, chat, clock, client)


@pytest.fixture
async def stack(database_url, tmp_path):
    stack = await start(database_url, tmp_path / "meldbot.key")
    yield stack
    await stack.close()


async def run_purge_on(stack: Stack, day: dt.date, at: dt.time = RUN) -> int:
    """Move the clock to `at` (UTC) on `day`, fire what is due and deliver it."""
    stack.clock.now = dt.datetime.combine(day, at, tzinfo=UTC)
    fired = await stack.meldbot.timers.run_due()
    await stack.deliver()
    return fired


async def set_case(stack: Stack, reference: str, **values) -> None:
    """Set what another feature (closing, withdrawal, legal hold) would set, directly in the database."""
    async with stack.meldbot.sessions() as session, session.begin():
        await session.execute(update(Case).where(Case.reference == reference).values(**values))


async def exists(stack: Stack, reference: str) -> bool:
    async with stack.meldbot.sessions() as session:
        return await repo.get_case(session=session, reference=reference) is not None


async def purged_audit(stack: Stack) -> list[AuditEntry]:
    async with stack.meldbot.sessions() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "purged")))


async def count(stack: Stack, model, *where) -> int:
    async with stack.meldbot.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


def notices(stack: Stack, reference: str) -> list[str]:
    return [line for line in stack.thread_of(reference) if "bewaartermijn" in line]


# -- the rules ----------------------------------------------------------------------------------------


def test_closed_cases_keep_calendar_years_and_a_leap_day_is_never_early():
    assert add_years(dt.datetime(2026, 11, 23, 9, 15, tzinfo=UTC), 5) == dt.datetime(2031, 11, 23, 9, 15, tzinfo=UTC)
    assert add_years(dt.datetime(2028, 2, 29, 12, tzinfo=UTC), 5) == dt.datetime(2033, 3, 1, 12, tzinfo=UTC)
    rules = RetentionRules(closed_years=5, withdrawn_days=7)
    closed = Case(status="closed", closed_at=dt.datetime(2026, 1, 1, tzinfo=UTC), withdrawn_at=None)
    assert rules.due(closed) == ("closed", dt.datetime(2031, 1, 1, tzinfo=UTC))
    closed.status = "new"  # reopened (casework clears closed_at too): no longer due
    assert rules.due(closed) is None
    withdrawn = Case(status="closed", closed_at=dt.datetime(2026, 1, 1, tzinfo=UTC),
                     withdrawn_at=dt.datetime(2026, 1, 2, tzinfo=UTC))
    assert rules.due(withdrawn) == ("withdrawn", dt.datetime(2026, 1, 9, tzinfo=UTC))  # the earlier rule wins
    assert rules.describe("closed") == "closed_years=5" and rules.describe("withdrawn") == "withdrawn_days=7"


def test_the_daily_run_is_at_purge_time_in_the_organisations_time_zone(tmp_path):
    from bot.config import PrivacySettings
    from bot.workers.retention import RetentionWorker

    worker = RetentionWorker(sessions=None, casework=None, privacy=PrivacySettings(purge_time="03:30"),
                             timezone=ZoneInfo("Europe/Amsterdam"))
    assert worker.run_at(dt.date(2026, 11, 23)) == dt.datetime(2026, 11, 23, 2, 30, tzinfo=UTC)  # CET
    assert worker.run_at(dt.date(2026, 7, 1)) == dt.datetime(2026, 7, 1, 1, 30, tzinfo=UTC)  # CEST
    assert worker.next_run_after(dt.datetime(2026, 11, 23, 2, 29, tzinfo=UTC)) == dt.date(2026, 11, 23)
    assert worker.next_run_after(dt.datetime(2026, 11, 23, 2, 30, tzinfo=UTC)) == dt.date(2026, 11, 24)


@pytest.mark.both_databases
async def test_due_at_the_exact_moment_and_never_under_legal_hold(stack):
    reference = await stack.report()
    closed_at = stack.clock.now
    await set_case(stack, reference, status="closed", closed_at=closed_at)
    rules = RetentionRules()
    due = add_years(closed_at, 5)
    async with stack.meldbot.sessions() as session:
        assert await repo.list_due_purges(session=session, now=due - dt.timedelta(seconds=1), rules=rules) == []
        (item,) = await repo.list_due_purges(session=session, now=due, rules=rules)
        assert (item.case.reference, item.rule, item.due_at) == (reference, "closed", due)
        # The notice window opens 14 days before, and closes when the purge is due.
        window = due - dt.timedelta(days=14)
        assert await repo.list_due_notices(session=session, now=window - dt.timedelta(seconds=1), rules=rules) == []
        assert [i.case.reference for i in await repo.list_due_notices(session=session, now=window, rules=rules)] \
            == [reference]
        assert await repo.list_due_notices(session=session, now=due, rules=rules) == []
    await set_case(stack, reference, legal_hold_since=closed_at)
    async with stack.meldbot.sessions() as session:
        assert await repo.list_due_purges(session=session, now=due + dt.timedelta(days=999), rules=rules) == []
        assert await repo.list_due_notices(session=session, now=due - dt.timedelta(days=1), rules=rules) == []


# -- the daily job ----------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_a_closed_case_is_noticed_once_kept_until_its_day_and_then_purged_with_everything(stack):
    reference = await stack.report()
    # Evidence sent after the report goes into it.
    await stack.say("anna", "", attachments=(InboundAttachment("foto.png", "image/png", b"\x89PNG-data"),))
    other = await stack.report("anna")  # anna's second case stays open
    bob = await stack.report("bob")  # bob's only case, purged with the first
    await stack.log_in()
    for ref in (reference, bob):
        assert (await stack.act(ref, "take")).status == 303
        assert (await stack.act(ref, "status", status="closed", summary="Afgerond met een gesprek.", measures="none")).status == 303
    await stack.deliver()
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        closed_at, case_id, reporter_id = case.closed_at, case.id, case.reporter_id
        bob_reporter = (await repo.get_case(session=session, reference=bob)).reporter_id
    assert await count(stack, Attachment, Attachment.case_id == case_id) == 1
    assert closed_at is not None
    await stack.tick(seconds=1)  # the first start's run: nothing due
    due_day = add_years(closed_at, 5).date()  # 2031-11-23 (closed at 10:15 NL; runs at 03:30)

    # 15 days before the run that purges: no notice yet.
    await run_purge_on(stack, due_day - dt.timedelta(days=14))
    assert notices(stack, reference) == []
    # The first run less than 14 days before the purge moment tells the thread, once, with the date.
    await run_purge_on(stack, due_day - dt.timedelta(days=13))
    (notice,) = notices(stack, reference)
    assert due_day.isoformat() in notice and "bewaarplicht" in notice and STORY not in notice
    await run_purge_on(stack, due_day - dt.timedelta(days=12))
    assert len(notices(stack, reference)) == 1 and len(notices(stack, other)) == 0

    # The day it ends, the run (03:30) is before the moment: kept. The next day: gone.
    await run_purge_on(stack, due_day)
    assert await exists(stack, reference)
    await run_purge_on(stack, due_day + dt.timedelta(days=1))
    assert not await exists(stack, reference) and not await exists(stack, bob) and await exists(stack, other)

    (entry, bob_entry) = sorted(await purged_audit(stack), key=lambda e: e.case_reference != reference)
    assert (entry.actor, entry.case_reference, entry.detail) == (
        "meldbot", reference, {"outcome": "closed", "rule": "closed_years=5"})
    assert bob_entry.case_reference == bob
    # Nothing of the case stays: files, timeline, threads, timers, queued messages, its audit trail.
    for model in (Attachment, CaseEvent, CaseThread, Timer, OutboxMessage):
        assert await count(stack, model, model.case_id == case_id) == 0, model.__name__
    assert await count(stack, AuditEntry, AuditEntry.case_reference == reference) == 1  # the purge itself
    # Anna still has a case: her reporter row stays; bob's goes with his only case.
    assert await count(stack, Reporter, Reporter.id == reporter_id) == 1
    assert await count(stack, Reporter, Reporter.id == bob_reporter) == 0
    async with stack.meldbot.sessions() as session:
        (conversation,) = [c for c in await session.scalars(select(Conversation)) if c.sender == "bob"]
        assert bob not in json.dumps(conversation.state)  # the dialogue forgot the reference too
        facts = list(await session.scalars(select(CaseFact).where(CaseFact.purged_at.is_not(None))))
    assert len(facts) == 2 and {f.outcome for f in facts} == {"closed"}
    fact = facts[0]
    assert fact.reported_month == "2026-11" and fact.ended_month == "2026-11" and fact.kinds
    stored = json.dumps({c: str(getattr(fact, c)) for c in CaseFact.__table__.columns.keys()})
    for leak in (reference, bob, "anna", "Anna", "bob", "Bob", "schold", "Afgerond", "foto"):
        assert leak not in stored, leak
    # The daily job keeps going: the next day's run is scheduled, one timer per day.
    async with stack.meldbot.sessions() as session:
        keys = [t.key for t in await session.scalars(select(Timer).where(Timer.kind == "retention_purge"))]
    assert len(keys) == len(set(keys)) and f"retention_purge:{(due_day + dt.timedelta(days=2)).isoformat()}" in keys


@pytest.mark.both_databases
async def test_legal_hold_prevents_the_purge_until_it_is_lifted(stack):
    reference = await stack.report()
    await set_case(stack, reference, status="closed", closed_at=stack.clock.now, legal_hold_since=stack.clock.now)
    due_day = add_years(stack.clock.now, 5).date()
    await run_purge_on(stack, due_day - dt.timedelta(days=10))
    await run_purge_on(stack, due_day + dt.timedelta(days=400))
    assert await exists(stack, reference) and notices(stack, reference) == [] and await purged_audit(stack) == []
    await set_case(stack, reference, legal_hold_since=None)  # proceedings over
    await run_purge_on(stack, due_day + dt.timedelta(days=401))
    assert not await exists(stack, reference) and len(await purged_audit(stack)) == 1


@pytest.mark.both_databases
async def test_a_withdrawn_report_goes_after_seven_days(stack):
    reference = await stack.report()
    withdrawn_at = stack.clock.now  # Monday 23 November, 10:15 NL
    await set_case(stack, reference, withdrawn_at=withdrawn_at)
    await run_purge_on(stack, dt.date(2026, 11, 24))
    (notice,) = notices(stack, reference)
    assert "2026-11-30" in notice
    await run_purge_on(stack, dt.date(2026, 11, 30))  # 03:30, before the moment (10:15)
    assert await exists(stack, reference)
    await run_purge_on(stack, dt.date(2026, 12, 1))
    assert not await exists(stack, reference)
    (entry,) = await purged_audit(stack)
    assert entry.detail == {"outcome": "withdrawn", "rule": "withdrawn_days=7"}
    async with stack.meldbot.sessions() as session:
        (fact,) = await session.scalars(select(CaseFact).where(CaseFact.purged_at.is_not(None)))
    assert fact.outcome == "withdrawn" and fact.ended_month == "2026-11"


@pytest.mark.both_databases
async def test_the_daily_job_runs_once_with_two_processes(database_url, tmp_path):
    first = await start(database_url, tmp_path / "meldbot.key")
    second = await start(database_url, tmp_path / "meldbot.key")
    try:
        references = [await first.report("anna"), await first.report("bob")]
        for reference in references:
            await set_case(first, reference, status="closed", closed_at=first.clock.now - dt.timedelta(days=2000))
        await second.meldbot.retention.ensure_scheduled()  # both processes schedule today's run
        assert await count(first, Timer, Timer.kind == "retention_purge") == 1
        first.clock.now = second.clock.now = first.clock.now + dt.timedelta(minutes=1)
        fired = await asyncio.gather(first.meldbot.timers.run_due(), second.meldbot.timers.run_due())
        assert sum(fired) >= 1
        assert sorted(e.case_reference for e in await purged_audit(first)) == sorted(references)
        assert await count(first, CaseFact, CaseFact.purged_at.is_not(None)) == 2
        runs = await count(first, Timer, Timer.kind == "retention_purge", Timer.done_at.is_not(None))
        assert runs == 1
        # Both again: the next run is tomorrow, once.
        assert await count(first, Timer, Timer.kind == "retention_purge", Timer.done_at.is_(None)) == 1
        assert await first.meldbot.timers.run_due() == 0 and await second.meldbot.timers.run_due() == 0
    finally:
        await second.close()
        await first.close()


# -- the command line -------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_the_command_lists_in_a_dry_run_and_then_purges(stack, tmp_path, capsys):
    due, recent, held = await stack.report("anna"), await stack.report("bob"), await stack.report("carla")
    now = utc_now()  # the command runs on the real clock
    closed_long_ago = add_years(now, -5) - dt.timedelta(days=3)
    await set_case(stack, due, status="closed", closed_at=closed_long_ago)
    await set_case(stack, recent, status="closed", closed_at=now - dt.timedelta(days=365))
    await set_case(stack, held, status="closed", closed_at=closed_long_ago, legal_hold_since=now)
    settings = stack.meldbot.settings
    config = tmp_path / "meldbot.toml"
    config.write_text(f'[organisation]\nname = "Gemeente Testdam"\n[database]\nurl = "{settings.database.url}"\n'
                      f'[privacy]\nkey_file = "{settings.privacy.key_file}"\n', encoding="utf-8")
    audit_before = await count(stack, AuditEntry)
    capsys.readouterr()

    assert await asyncio.to_thread(main, ["retention", "purge", "--config", str(config), "--dry-run"]) == 0
    listed = capsys.readouterr().out.splitlines()
    ended = add_years(closed_long_ago, 5).astimezone(ZoneInfo("Europe/Amsterdam")).date().isoformat()
    assert listed[0].split() == [due, "closed", "closed_years=5", ended], listed
    assert len(listed) == 2 and "nothing was purged" in listed[1]
    assert [await exists(stack, ref) for ref in (due, recent, held)] == [True, True, True]
    assert await count(stack, AuditEntry) == audit_before and await count(stack, CaseFact, CaseFact.purged_at.is_not(None)) == 0

    assert await asyncio.to_thread(main, ["retention", "purge", "--config", str(config)]) == 0
    output = capsys.readouterr().out
    assert f"purged {due}" in output and recent not in output and held not in output and "1 case(s) purged" in output
    assert not await exists(stack, due) and await exists(stack, recent) and await exists(stack, held)
    (entry,) = await purged_audit(stack)
    assert entry.actor == f"cli:{getpass.getuser()}" and entry.case_reference == due
    assert entry.detail == {"outcome": "closed", "rule": "closed_years=5"}
    assert await count(stack, CaseFact, CaseFact.purged_at.is_not(None)) == 1
    # Nothing more is due: a second run purges nothing.
    assert await asyncio.to_thread(main, ["retention", "purge", "--config", str(config)]) == 0
    assert "0 case(s) purged" in capsys.readouterr().out


# -- what outlives every case ---------------------------------------------------------------------------


async def conversation_users(stack: Stack) -> set[str]:
    async with stack.meldbot.sessions() as session:
        return {c.sender for c in await session.scalars(select(Conversation))}


@pytest.mark.both_databases
async def test_idle_conversations_without_a_case_and_audit_entries_about_no_case_are_swept(stack):
    named = await stack.report("anna")
    anonymous = await stack.report("hendrikje", "Een bezoeker schold me uit aan de balie", "1 2 6", "verzenden")
    await stack.say("bob", "hallo")  # a conversation that never became a report
    await stack.say("dave", "Iemand duwde me bij de balie")  # an unfinished draft
    assert await conversation_users(stack) == {"anna", "hendrikje", "bob", "dave"}
    start = stack.clock.now
    old, recent = add_years(start, -5) - dt.timedelta(days=1), add_years(start, -4)
    async with stack.meldbot.sessions() as session, session.begin():
        for at, reference, action in ((old, None, "login"), (recent, None, "login"), (old, named, "viewed"),
                                      (old, "MB-GON-E00", "purged")):
            await repo.add_audit(session=session, actor="coco", action=action, case_reference=reference, now=at)

    # The first run: the old entries about no case go; the case's own trail and the recent one stay.
    await run_purge_on(stack, start.date() + dt.timedelta(days=1))
    async with stack.meldbot.sessions() as session:
        left = {(e.action, e.case_reference, e.at) for e in await session.scalars(select(AuditEntry))}
    assert ("login", None, recent) in left and ("viewed", named, old) in left
    assert ("login", None, old) not in left and ("purged", "MB-GON-E00", old) not in left
    assert await conversation_users(stack) == {"anna", "hendrikje", "bob", "dave"}  # nobody idle for a year

    # A year on (the draft expired after 7 days): bob's and dave's conversations go; anna's and the
    # anonymous reporter's stay with their open cases, and the anonymous one still hears the coordinator.
    await run_purge_on(stack, start.date() + dt.timedelta(days=367))
    assert await conversation_users(stack) == {"anna", "hendrikje"}
    await stack.log_in()
    assert (await stack.act(anonymous, "message", text="Hoe gaat het nu met je?")).status == 303
    await stack.deliver()
    assert any("Hoe gaat het nu met je?" in t for t in stack.chat.texts_to("hendrikje"))
    # Bob writes again: a new conversation, as for anyone new.
    assert "ik ben meldbot" in (await stack.say("bob", "hallo")).lower()  # the first-contact greeting
    assert "bob" in await conversation_users(stack)


async def test_the_command_sweeps_old_audit_entries_but_leaves_conversations_to_the_bot(stack, tmp_path, capsys):
    await stack.say("bob", "hallo")
    now = utc_now()
    async with stack.meldbot.sessions() as session, session.begin():
        await session.execute(update(Conversation).values(updated_at=now - dt.timedelta(days=800)))
        await repo.add_audit(session=session, actor="coco", action="login", case_reference=None,
                             now=add_years(now, -6))
    settings = stack.meldbot.settings
    config = tmp_path / "meldbot.toml"
    config.write_text(f'[organisation]\nname = "Gemeente Testdam"\n[database]\nurl = "{settings.database.url}"\n'
                      f'[privacy]\nkey_file = "{settings.privacy.key_file}"\n', encoding="utf-8")
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["retention", "purge", "--config", str(config)]) == 0
    output = capsys.readouterr().out
    assert "1 audit entries about no case removed" in output and "left to the daily purge" in output
    assert await count(stack, AuditEntry, AuditEntry.action == "login") == 0
    assert await conversation_users(stack) == {"bob"}

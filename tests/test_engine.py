"""The engine with real storage and the real console adapter: turns, cases, outbox, failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import itertools
import logging

import pytest
from sqlalchemy import func, select, text

import storage
from helpers import TEST_MASTER_KEY
from storage.models import VAULT
from bot.adapters.console import ConsoleAdapter
from bot.core.engine import Engine
from bot.logs import silence_content_loggers
from bot.workers.outbox import OutboxWorker
from bot.adapters.contract import DeliveryError, InboundAttachment, InboundMessage
from helpers import AMS, CONTEXT
from storage import repo
from storage.models import Attachment, Case, CaseEvent, Conversation, OutboxMessage

STORY = "Een bezoeker schold me net uit aan de balie en noemde me een oplichter"
_ids = itertools.count()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += dt.timedelta(**delta)


class Flaky:
    """The console adapter behind a connection that fails the first `failures` sends."""

    def __init__(self, inner: ConsoleAdapter, failures: int, retry_after: float | None = None):
        self.inner = inner
        self.platform = inner.platform
        self.failures = failures
        self.retry_after = retry_after
        self.keys: list[str] = []

    def coordinator_destination(self):
        return self.inner.coordinator_destination()

    async def start(self, handler):
        await self.inner.start(handler)

    async def stop(self):
        await self.inner.stop()

    def _attempt(self, key: str) -> None:
        self.keys.append(key)
        if self.failures > 0:
            self.failures -= 1
            raise DeliveryError("homeserver unreachable", retry_after=self.retry_after)

    async def post_case_notification(self, destination, notification, idempotency_key):
        self._attempt(idempotency_key)
        return await self.inner.post_case_notification(destination, notification, idempotency_key)

    async def post_in_case_thread(self, destination, root_id, text, idempotency_key):
        self._attempt(idempotency_key)
        return await self.inner.post_in_case_thread(destination, root_id, text, idempotency_key)

    async def post_in_room(self, destination, reply, idempotency_key):
        self._attempt(idempotency_key)
        return await self.inner.post_in_room(destination, reply, idempotency_key)

    async def send_replies(self, address, replies, idempotency_key):
        self._attempt(idempotency_key)
        return await self.inner.send_replies(address, replies, idempotency_key)


def message(text: str, *, user: str = "anna", event_id: str | None = None, files=()) -> InboundMessage:
    return InboundMessage(platform="console", conversation=user, sender=user, text=text,
                          event_id=event_id or f"ev-{next(_ids)}", attachments=tuple(files), sender_name="Anna",
                          address={"user": user})


class Bot:
    """Engine + outbox worker + console adapter over one database, as `meldbot chat` wires them."""

    def __init__(self, sessions, adapter=None, clock=None):
        self.out = io.StringIO()
        self.console = ConsoleAdapter(user="anna", language="nl", stdin=io.StringIO(), stdout=self.out)
        self.adapter = adapter(self.console) if adapter else self.console
        self.clock = clock or Clock(dt.datetime(2026, 11, 23, 9, 15, tzinfo=dt.timezone.utc))
        self.sessions = sessions
        self.worker = OutboxWorker(sessions=sessions, adapters={"console": self.adapter}, language="nl",
                                   timezone=AMS, clock=self.clock)
        self.engine = Engine(sessions=sessions, context=CONTEXT, public_url="https://meldbot.example.nl/",
                             coordinator_targets=lambda: [("console", "coordinator")], clock=self.clock,
                             delivery_healthy=lambda: self.worker.healthy)

    async def say(self, text: str, **kwargs) -> str:
        replies = await self.engine.handle(message(text, **kwargs))
        return "\n\n".join(r.plain() for r in replies)

    async def report(self, *texts: str) -> str:
        said = ""
        for t in texts:
            said = await self.say(t)
        return said


async def count(sessions, model) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


@pytest.mark.both_databases
async def test_full_report_is_saved_and_the_coordinator_notified(sessions):
    bot = Bot(sessions)
    said = await bot.report(STORY, "1 2", "verzenden")
    assert "opgeslagen onder nummer MB-" in said and "112" in said
    async with sessions() as session:
        (case,) = await repo.list_cases(session=session)
        assert case.story == STORY and case.kind_codes == ["verbal"] and case.place == "counter"
        assert case.contact_wanted is True and case.aftercare == "yes"
        conversation = await session.scalar(select(Conversation))
        assert conversation.state["step"] == "idle" and conversation.state["last_reference"] == case.reference
    assert case.reference in said
    assert await bot.worker.run_once() == 1
    posted = bot.out.getvalue()
    assert f"Nieuwe melding {case.reference}" in posted
    assert f"https://meldbot.example.nl/cases/{case.reference}" in posted
    assert "wil contact" in posted and "wil nazorg" in posted
    # Privacy: the coordinator room never gets the story or the name.
    assert "oplichter" not in posted and "Anna" not in posted and "bezoeker" not in posted
    async with sessions() as session:
        thread = await repo.get_case_thread(session=session, case_id=case.id, platform="console",
                                            destination="coordinator")
        assert thread is not None


@pytest.mark.both_databases
async def test_duplicate_event_is_answered_once(sessions):
    bot = Bot(sessions)
    await bot.report(STORY)
    first = await bot.say("verzenden", event_id="same-event")
    again = await bot.say("verzenden", event_id="same-event")
    assert "MB-" in first and again == ""
    assert await count(sessions, Case) == 1


@pytest.mark.both_databases
async def test_concurrent_duplicates_make_one_case(sessions):
    bot = Bot(sessions)
    await bot.report(STORY)
    results = await asyncio.gather(*(bot.say("verzenden", event_id="twin") for _ in range(3)))
    assert sum(1 for r in results if "MB-" in r) == 1
    assert sum(1 for r in results if r == "") == 2
    assert await count(sessions, Case) == 1


async def test_evidence_in_the_draft_is_stored_and_linked(sessions):
    bot = Bot(sessions)
    png = b"\x89PNG screenshot of a threatening message"
    said = await bot.say("", files=[InboundAttachment("bericht.png", "image/png", png)])
    assert "bericht.png" in said
    await bot.report("Hij bedreigde me via facebook", "verzenden")
    async with sessions() as session:
        (case,) = await repo.list_cases(session=session)
        (stored,) = await repo.list_attachments(session=session, case_id=case.id)
    assert stored.sha256 == hashlib.sha256(png).hexdigest() and stored.size == len(png)
    await bot.worker.run_once()
    assert "bewijs bijgevoegd" in bot.out.getvalue()


async def test_evidence_after_submission_joins_the_case_and_its_thread(sessions):
    bot = Bot(sessions)
    said = await bot.report(STORY, "verzenden")
    reference = said.split("nummer ")[1].split(".")[0]
    said = await bot.say("", files=[InboundAttachment("foto.jpg", "image/jpeg", b"jpeg")])
    assert f"Toegevoegd aan melding {reference}" in said
    assert await bot.worker.run_once() == 2  # the notification, then (no longer waiting) the thread reply
    assert f"{reference}: de melder heeft bewijs toegevoegd (1)" in bot.out.getvalue()
    async with sessions() as session:
        kinds = [e.kind for e in await session.scalars(select(CaseEvent).order_by(CaseEvent.id))]
    assert kinds == ["submitted", "evidence_added"]


async def test_oversized_file_is_refused_with_a_clear_answer(sessions, monkeypatch):
    monkeypatch.setattr(repo, "MAX_INLINE_ATTACHMENT", 10)
    bot = Bot(sessions)
    said = await bot.say("Hij schold me uit", files=[InboundAttachment("film.mp4", "video/mp4", b"x" * 11)])
    assert "te groot" in said and "film.mp4" in said
    assert await count(sessions, Attachment) == 0


async def test_cancel_deletes_the_drafts_files(sessions):
    bot = Bot(sessions)
    await bot.say("", files=[InboundAttachment("a.png", "image/png", b"a")])
    assert await count(sessions, Attachment) == 1
    await bot.report("stop", "ja")
    assert await count(sessions, Attachment) == 0


async def test_my_reports_lists_only_own_cases(sessions):
    bot = Bot(sessions)
    await bot.report(STORY, "verzenden")
    await bot.engine.handle(message("Ik werd bedreigd op straat", user="bert"))
    said = await bot.say("mijn meldingen")
    assert "Je meldingen" in said and said.count("MB-") == 1 and "nieuw" in said
    said = await bot.engine.handle(message("mijn meldingen", user="carla"))
    assert "nog geen meldingen" in said[0].plain()


async def test_outbox_retries_until_delivered_once_with_the_same_key(sessions):
    clock = Clock(dt.datetime(2026, 11, 23, 9, 15, tzinfo=dt.timezone.utc))
    flaky = None

    def wrap(console):
        nonlocal flaky
        flaky = Flaky(console, failures=2, retry_after=30)
        return flaky

    bot = Bot(sessions, adapter=wrap, clock=clock)
    await bot.report(STORY, "verzenden")
    assert await bot.worker.run_once() == 0
    # The coordinator is not reachable: a later report hears so, and is still saved.
    said = await bot.report("Ik werd bedreigd aan de telefoon", "verzenden")
    assert "zodra de verbinding weer werkt" in said
    assert await count(sessions, Case) == 2
    clock.advance(seconds=29)
    assert await bot.worker.run_once() == 0  # retry-after is honoured
    clock.advance(seconds=2)
    assert await bot.worker.run_once() == 1  # one fails again, the other is delivered
    clock.advance(seconds=300)
    assert await bot.worker.run_once() == 1
    clock.advance(seconds=300)
    assert await bot.worker.run_once() == 0
    posted = bot.out.getvalue()
    assert posted.count("Nieuwe melding") == 2
    async with sessions() as session:
        rows = list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    first_key = rows[0].idempotency_key
    assert flaky.keys.count(first_key) == 2 and rows[0].attempts == 2  # same key on the retry
    assert all(r.delivered_at is not None for r in rows)


async def test_backoff_grows_with_jitter_and_respects_retry_after(sessions):
    worker = OutboxWorker(sessions=sessions, adapters={}, language="nl", timezone=AMS, base_delay=2,
                          max_delay=300)
    delays = [worker.backoff(n, None) for n in range(1, 12)]
    assert all(1 <= d <= 300 for d in delays)
    assert delays[-1] >= 150 and delays[0] <= 2
    assert worker.backoff(1, retry_after=42.5) >= 42.5


async def test_sqlite_locked_database_gives_not_saved_and_loses_nothing(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}"
    db = storage.create_engine(url, sqlite_busy_timeout_ms=200)
    sessions = storage.create_sessionmaker(db, await storage.prepare(db, TEST_MASTER_KEY))
    bot = Bot(sessions)
    await bot.report(STORY)
    blocker = storage.create_engine(url, sqlite_busy_timeout_ms=200)  # another process, as it were
    async with storage.transaction(storage.create_sessionmaker(blocker, sessions.kw["info"][VAULT])) as held:
        await held.execute(text("SELECT 1"))  # a writing transaction begins IMMEDIATE: it holds the lock
        said = await bot.say("verzenden")
        assert "lukte me niet om dit op te slaan" in said and "Foutcode" in said
        assert "MB-" not in said
    assert await count(sessions, Case) == 0
    said = await bot.say("verzenden")  # the same answer again: the summary was kept
    assert "opgeslagen onder nummer MB-" in said
    assert await count(sessions, Case) == 1
    await blocker.dispose()
    await db.dispose()


async def test_database_unreachable_gives_not_saved(tmp_path, vault):
    for url in (f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}",
                "postgresql+asyncpg://postgres@127.0.0.1:1/meldbot"):
        db = storage.create_engine(url)
        bot = Bot(storage.create_sessionmaker(db, vault))
        said = await bot.say(STORY)
        assert "Probeer het over een minuut opnieuw" in said
        await db.dispose()


async def test_logs_never_contain_report_content(sessions, vault, caplog, tmp_path):
    silence_content_loggers()  # what `meldbot` does at start: aiosqlite would log the parameters
    caplog.set_level(logging.DEBUG)
    bot = Bot(sessions)
    secret = "Jansen van de Dorpsstraat 12 sloeg me"
    said = await bot.report(secret, "1", "1 2 4", "wijzig 5", "2 lange man Pietersen", "verzenden")
    assert "opgeslagen" in said
    await bot.worker.run_once()
    db = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'nope' / 'x.db'}")
    broken = Bot(storage.create_sessionmaker(db, vault))
    await broken.say(secret)
    await db.dispose()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "case created" in logged and "turn not saved" in logged
    for fragment in ("Jansen", "Dorpsstraat", "Pietersen", "sloeg"):
        assert fragment not in logged


async def test_handled_events_table_grows_one_row_per_message(sessions):
    bot = Bot(sessions)
    await bot.report("hoi", "help", STORY)
    async with sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM handled_events")) == 3


async def _case_with_thread(bot) -> tuple[str, str]:
    said = await bot.report(STORY, "verzenden")
    reference = said.split("nummer ")[1].split(".")[0]
    await bot.worker.run_once()
    async with bot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        thread = await repo.get_case_thread(session=session, case_id=case.id, platform="console",
                                            destination="coordinator")
    return reference, thread.root_id


def coordinator_says(text: str, root: str, *, member: bool = True, event_id: str | None = None):
    from bot.adapters.contract import CoordinatorMessage

    return CoordinatorMessage(platform="console", destination="coordinator", thread_root=root, sender="@coco",
                              sender_name="Coco", text=text, event_id=event_id or f"co-{next(_ids)}",
                              is_coordinator=member)


async def test_coordinator_commands_claim_reply_and_refusals(sessions):
    bot = Bot(sessions)
    reference, root = await _case_with_thread(bot)
    refused = await bot.engine.handle_coordinator(coordinator_says("oppakken", root, member=False))
    assert "Alleen leden" in refused[0].plain()
    assert await bot.engine.handle_coordinator(coordinator_says("goedemorgen allemaal", root)) == []
    assert await bot.engine.handle_coordinator(coordinator_says("oppakken", "not-a-case-thread")) == []
    async with sessions() as session:
        assert (await repo.get_case(session=session, reference=reference)).assigned_to is None

    claimed = await bot.engine.handle_coordinator(coordinator_says("claim", root, event_id="claim-1"))
    assert f"{reference} is opgepakt door Coco" in claimed[0].plain()
    assert await bot.engine.handle_coordinator(coordinator_says("claim", root, event_id="claim-1")) == []
    again = await bot.engine.handle_coordinator(coordinator_says("oppakken", root))
    assert "al opgepakt door Coco" in again[0].plain()
    empty = await bot.engine.handle_coordinator(coordinator_says("antwoord", root))
    assert "Zet je bericht achter" in empty[0].plain()
    await bot.engine.handle_coordinator(coordinator_says("antwoord Ik bel je vanmiddag.", root))
    while await bot.worker.run_once():
        pass
    out = bot.out.getvalue()
    assert "Coco heeft je melding" in out and "Ik bel je vanmiddag." in out
    said = await bot.say("Dank je, ik ben er.")
    assert "Doorgestuurd naar de coördinator" in said
    await bot.worker.run_once()
    assert f"{reference}, de melder schrijft: Dank je, ik ben er." in bot.out.getvalue()
    async with sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        kinds = [e.kind for e in await repo.list_case_events(session=session, case=case)]
    assert case.status == "in_progress" and case.assigned_to == "Coco"
    assert kinds == ["submitted", "claimed", "coordinator_message", "reporter_message"]


async def test_relay_only_reaches_the_cases_own_reporter(sessions):
    bot = Bot(sessions)
    reference, root = await _case_with_thread(bot)
    from dialogs import State, open_relay

    # Someone else's conversation pointing at this case (e.g. a forged state) is refused.
    other = await bot.engine.handle(message("hallo", user="mallory"))
    assert other
    async with sessions() as session, session.begin():
        conversation = await repo.find_conversation(session=session, platform="console", sender="mallory")
        conversation.state = open_relay(State.from_dict(conversation.state), reference,
                                        bot.clock()).to_dict()
    await bot.engine.handle(message("Ik ben niet de melder", user="mallory"))
    async with sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        kinds = [e.kind for e in await repo.list_case_events(session=session, case=case)]
    assert "reporter_message" not in kinds


@pytest.mark.both_databases
async def test_two_coordinators_claiming_at_once_one_wins(sessions):
    bot = Bot(sessions)
    reference, root = await _case_with_thread(bot)
    from bot.adapters.contract import CoordinatorMessage

    def claim(name):
        return CoordinatorMessage(platform="console", destination="coordinator", thread_root=root, sender=f"@{name}",
                                  sender_name=name, text="oppakken", event_id=f"claim-{name}", is_coordinator=True)

    answers = await asyncio.gather(bot.engine.handle_coordinator(claim("Coco")),
                                   bot.engine.handle_coordinator(claim("Dirk")))
    texts = [a[0].plain() for a in answers]
    assert sum("is opgepakt door" in t for t in texts) == 1
    assert sum("al opgepakt door" in t for t in texts) == 1
    async with sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        claims = [e for e in await repo.list_case_events(session=session, case=case) if e.kind == "claimed"]
    assert len(claims) == 1 and case.assigned_to == claims[0].data["name"]


# -- group commit -------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_concurrent_turns_share_transactions_and_each_gets_its_own_answer(sessions, monkeypatch):
    bot = Bot(sessions)
    sizes: list[int] = []
    original = repo.mark_events_handled

    async def counting(**kwargs):
        sizes.append(len(list(kwargs["events"])))
        return await original(**{**kwargs, "events": [e for e in kwargs["events"]]})

    monkeypatch.setattr(repo, "mark_events_handled", counting)
    users = [f"user{n}" for n in range(20)]
    openings = await asyncio.gather(*(bot.engine.handle(message(STORY, user=u)) for u in users))
    assert all("Kijk even of dit klopt" in "\n".join(r.plain() for r in replies) for replies in openings)
    assert sum(sizes) == 20 and len(sizes) < 20  # shared: not one transaction per turn
    answers = await asyncio.gather(*(bot.engine.handle(message("1 2", user=u)) for u in users))
    sent = await asyncio.gather(*(bot.engine.handle(message("verzenden", user=u)) for u in users))
    assert all("Aangevinkt: 2." in "\n".join(r.plain() for r in replies) for replies in answers)
    references = {reference_of(replies) for replies in sent}
    assert len(references) == 20
    async with sessions() as session:
        for user in users:
            (case,) = await repo.list_cases_for_reporter(session=session, platform="console", platform_user_id=user)
            assert case.reference in references


@pytest.mark.both_databases
async def test_a_turn_that_breaks_fails_alone_and_a_duplicate_in_a_batch_is_answered_once(sessions, monkeypatch):
    import dialogs as dialogs_module

    bot = Bot(sessions)
    real_step = dialogs_module.step

    def step(state, user_input, context):
        if user_input.text == "breek":
            raise RuntimeError("a bug in one turn")
        return real_step(state, user_input, context)

    monkeypatch.setattr(dialogs_module, "step", step)
    twice = message(STORY, user="dora", event_id="same-event")
    results = await asyncio.gather(
        bot.engine.handle(message(STORY, user="anna")), bot.engine.handle(message("breek", user="bob")),
        bot.engine.handle(message(STORY, user="carl")), bot.engine.handle(twice), bot.engine.handle(twice),
        return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert results[0] and results[2] and not isinstance(results[0], Exception)
    assert sorted(bool(r) for r in results[3:]) == [False, True]  # the duplicate: one answer
    async with sessions() as session:
        states = {c.sender: c.state.get("step") for c in await session.scalars(select(Conversation))}
    assert states["anna"] == states["carl"] == states["dora"] == "summary" and "bob" not in states


def reference_of(replies) -> str:
    import re

    found = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", "\n".join(r.plain() for r in replies))
    assert found, replies
    return found.group(0)


async def _until(condition) -> None:
    """Let other tasks run until `condition()` holds (cooperative: no wall-clock waiting)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


@pytest.mark.both_databases
async def test_a_cancelled_turn_never_shares_a_batch_with_the_next_turn_of_its_conversation(sessions, monkeypatch):
    bot = Bot(sessions)
    await bot.report(STORY)  # the draft is ready to send
    busy, gate = asyncio.Event(), asyncio.Event()
    original = repo.mark_events_handled

    async def held(**kwargs):
        if any(event_id == "blocker" for _, event_id in kwargs["events"]):
            busy.set()
            await gate.wait()
        return await original(**kwargs)

    monkeypatch.setattr(repo, "mark_events_handled", held)
    blocker = asyncio.create_task(bot.engine.handle(message(STORY, user="zed", event_id="blocker")))
    await busy.wait()  # the shared transaction is busy with zed's turn
    first = asyncio.create_task(bot.engine.handle(message("verzenden", event_id="click-1")))
    await _until(lambda: any(e.item.event_id == "click-1" for e in bot.engine._queue))
    first.cancel()  # a shutdown, or a caller's own timeout
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not any(e.item.event_id == "click-1" for e in bot.engine._queue)
    second = asyncio.create_task(bot.engine.handle(message("verzenden", event_id="click-2")))
    await _until(lambda: any(e.item.event_id == "click-2" for e in bot.engine._queue))
    gate.set()
    await blocker
    said = "\n".join(r.plain() for r in await second)
    assert "opgeslagen onder nummer" in said
    assert await count(sessions, Case) == 1


async def test_a_locked_database_is_not_retried_turn_by_turn(tmp_path):
    db = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}", sqlite_busy_timeout_ms=200)
    sessions = storage.create_sessionmaker(db, await storage.prepare(db, TEST_MASTER_KEY))
    bot = Bot(sessions)
    transactions = []
    original = bot.engine._turns

    async def counting(messages):
        transactions.append(len(messages))
        return await original(messages)

    bot.engine._turns = counting
    # Another process holds the write lock for the whole test.
    import sqlite3

    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        results = await asyncio.gather(*(bot.engine.handle(message(STORY, user=f"u{n}")) for n in range(12)))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert all("niet om dit op te slaan" in "\n".join(r.plain() for r in replies) for replies in results)
    # A locked database is nobody's turn's fault: no retry one by one (each would wait out the lock again).
    assert sum(transactions) == 12 and len(transactions) <= 2
    assert await count(sessions, Conversation) == 0
    await db.dispose()

"""Quotas of `[limits]`: what one person may send. Over a limit they get a clear answer and nothing
they already gave is lost. Runs the whole engine (bot.app.build) on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from bot.core.limits import Throttle
from bot.adapters.contract import CoordinatorMessage, InboundAttachment
from dialogs import State
from storage import repo
from storage.models import Attachment, Case, Conversation, Reporter
from stack import Stack

pytestmark = pytest.mark.both_databases

STORY = "Een man schold me net uit aan de balie en dreigde me te slaan"


class FakeMonotonic:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def photo(name: str, size: int = 100) -> InboundAttachment:
    return InboundAttachment(name, "image/png", b"\x89PNG" + b"0" * (size - 4))


async def state_of(stack: Stack, user: str) -> State:
    async with stack.meldbot.sessions() as session:
        row = await repo.find_conversation(session=session, platform="chat", sender=user)
    return State.from_dict(row.state, "nl")


async def files_stored(stack: Stack) -> list[str]:
    async with stack.meldbot.sessions() as session:
        return [a.filename for a in await session.scalars(select(Attachment).order_by(Attachment.id))]


@pytest.fixture
async def make_stack(database_url):
    stacks = []

    async def make(**limits) -> Stack:
        stack = await Stack.start(database_url, limits=limits)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.close()


async def test_too_many_messages_get_one_slow_down_then_silence_and_nothing_given_is_lost(make_stack):
    stack = await make_stack(messages_per_minute=3)
    clock = stack.meldbot.engine.throttle.clock = FakeMonotonic()
    await stack.say("anna", STORY)
    await stack.say("anna", "help")
    third = await stack.say("anna", "1 2")
    assert "verzenden" in third and "Wacht een minuut" not in third  # at the summary
    slow = await stack.say("anna", "verzenden")
    assert "Wacht een minuut" in slow and "MB-" not in slow
    assert await stack.say("anna", "verzenden") == ""  # told once: silence for the window
    assert await stack.say("bert", "hallo")  # someone else is not held up
    state = await state_of(stack, "anna")
    assert state.draft is not None and "schold me net uit" in state.draft.story  # what was given is kept
    clock.now += 61
    answer = await stack.say("anna", "verzenden")
    found = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", answer)
    assert found, answer
    async with stack.meldbot.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Case)) == 1


async def test_rate_limit_covers_coordinator_commands_too(make_stack):
    stack = await make_stack(messages_per_minute=2)
    stack.meldbot.engine.throttle.clock = FakeMonotonic()

    def login(event: str) -> CoordinatorMessage:
        return CoordinatorMessage(platform="chat", destination="coordinators", thread_root="", sender="coco",
                                  text="login", event_id=event, is_coordinator=True, sender_name="Coco",
                                  address={"user": "coco"})

    engine = stack.meldbot.engine
    assert "privé" in (await engine.handle_coordinator(login("l1")))[0].plain()
    await engine.handle_coordinator(login("l2"))
    (slow,) = await engine.handle_coordinator(login("l3"))
    assert "Wacht een minuut" in slow.plain()
    assert await engine.handle_coordinator(login("l4")) == []


async def test_files_over_the_per_message_limit_are_refused_by_name(make_stack):
    stack = await make_stack(files_per_message=2)
    await stack.say("anna", STORY)
    answer = await stack.say("anna", "", attachments=tuple(photo(f"foto{i}.png") for i in range(1, 5)))
    assert "Niet bewaard: foto3.png, foto4.png" in answer
    received = answer.split("Ontvangen: ", 1)[1].split("\n")[0]
    assert "foto1.png" in received and "foto2.png" in received and "foto3.png" not in received
    assert await files_stored(stack) == ["foto1.png", "foto2.png"]
    assert len((await state_of(stack, "anna")).draft.attachments) == 2  # the dialogue counts only what is kept


async def test_a_report_holds_at_most_files_per_report_also_as_late_evidence(make_stack):
    stack = await make_stack(files_per_report=3)
    await stack.say("anna", STORY)
    await stack.say("anna", "1 2")
    await stack.say("anna", "", attachments=(photo("a.png"), photo("b.png")))
    answer = await stack.say("anna", "", attachments=(photo("c.png"), photo("d.png")))
    assert "hoogstens 3 bestanden" in answer and "d.png" in answer
    said = await stack.say("anna", "verzenden")
    reference = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", said).group(0)
    late = await stack.say("anna", "", attachments=(photo("e.png"),))  # late evidence joins the case
    assert "hoogstens 3 bestanden" in late and "e.png" in late and reference not in late
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        assert await repo.count_case_files(session=session, case_id=case.id) == 3
    assert await files_stored(stack) == ["a.png", "b.png", "c.png"]


async def test_the_daily_file_quota_survives_cancelling_the_draft(make_stack):
    stack = await make_stack(files_per_day=3)
    await stack.say("anna", STORY)
    await stack.say("anna", "", attachments=(photo("a.png"), photo("b.png"), photo("c.png")))
    await stack.say("anna", "annuleer")
    await stack.say("anna", "ja")
    assert await files_stored(stack) == []  # the cancelled draft's files are gone ...
    await stack.say("anna", STORY)
    answer = await stack.say("anna", "", attachments=(photo("d.png"),))
    assert "maximum van 3 bestanden" in answer and "d.png" in answer  # ... but they still count today
    assert await stack.say("bert", "", attachments=(photo("e.png"),))  # another person has their own quota
    assert await files_stored(stack) == ["e.png"]
    stack.clock.advance(days=1)
    answer = await stack.say("anna", "", attachments=(photo("d.png"),))
    assert "Ontvangen: d.png" in answer


async def test_the_daily_megabytes_count_every_file(make_stack):
    stack = await make_stack(megabytes_per_day=1)
    await stack.say("anna", STORY)
    answer = await stack.say("anna", "", attachments=(photo("groot.png", 700_000), photo("ook-groot.png", 700_000)))
    assert "maximum van 1 MB" in answer and "ook-groot.png" in answer
    assert await files_stored(stack) == ["groot.png"]


async def test_over_the_daily_report_limit_the_report_is_kept_and_can_be_sent_tomorrow(make_stack):
    stack = await make_stack(reports_per_day=1)
    await stack.report("anna")
    await stack.say("anna", STORY)
    await stack.say("anna", "1 2")
    answer = await stack.say("anna", "verzenden")
    assert "maximum" in answer and "MB-" not in answer
    state = await state_of(stack, "anna")
    assert state.draft is not None and state.step != "idle"  # kept at its summary
    async with stack.meldbot.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Case)) == 1
    assert len(stack.chat.room) == 1  # nothing reached the coordinators
    stack.clock.advance(days=1, minutes=1)
    answer = await stack.say("anna", "verzenden")
    assert re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", answer), answer
    await stack.deliver()
    assert len(stack.chat.room) == 2


async def test_file_names_and_display_names_lose_text_direction_characters(make_stack):
    stack = await make_stack()
    await stack.say("anna", STORY)
    await stack.say("anna", "1 2")
    await stack.say("anna", "", attachments=(photo("foto\u202egnp.exe"),))
    said = await stack.say("anna", "verzenden", name="Anna\u202e\nKlik hier")
    reference = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", said).group(0)
    await stack.deliver()
    assert await files_stored(stack) == ["fotognp.exe"]
    thread = CoordinatorMessage(platform="chat", destination="coordinators",
                                thread_root=next(iter(stack.chat.threads)), sender="coco", text="oppakken",
                                event_id="claim-1", is_coordinator=True, sender_name="Co\u202eco\nIT-beheer")
    await stack.meldbot.engine.handle_coordinator(thread)
    await stack.deliver()
    told = stack.chat.texts_to("anna")[-1]
    assert "Coco IT-beheer" in told and "\u202e" not in told and reference in told
    async with stack.meldbot.sessions() as session:
        names = [r.display_name for r in await session.scalars(select(Reporter))]
    assert names == ["Anna Klik hier"]


def test_the_throttle_forgets_quiet_senders_and_stays_bounded():
    clock = FakeMonotonic()
    throttle = Throttle(2, clock=clock)
    throttle.MAX_SENDERS = 100
    for i in range(250):
        assert throttle.admit(("chat", f"user{i}")) is True
    assert len(throttle._seen) <= 100
    assert throttle.admit(("chat", "x")) is True and throttle.admit(("chat", "x")) is True
    assert throttle.admit(("chat", "x")) is None and throttle.admit(("chat", "x")) is False
    clock.now += 60
    assert throttle.admit(("chat", "x")) is True


async def test_housekeeping_forgets_old_file_counts_and_expired_claim_codes(make_stack):
    from bot.core.login import claim_digest, new_claim_code
    from storage import transaction
    from storage.models import ClaimCode, FileUsage

    stack = await make_stack()
    await stack.say("anna", STORY)
    await stack.say("anna", "", attachments=(photo("a.png"),))
    async with transaction(stack.meldbot.sessions) as session:
        await repo.add_claim_code(session=session, platform="teams", digest=claim_digest(new_claim_code()),
                                  now=stack.clock.now, expires_at=stack.clock.now + dt.timedelta(minutes=30))

    async def rows(model) -> int:
        async with stack.meldbot.sessions() as session:
            return await session.scalar(select(func.count()).select_from(model))

    await stack.meldbot.timers.housekeeping()
    assert await rows(FileUsage) == 1 and await rows(ClaimCode) == 1  # today's count, a valid code
    stack.clock.advance(days=3)
    await stack.meldbot.timers.housekeeping()
    assert await rows(FileUsage) == 0 and await rows(ClaimCode) == 0

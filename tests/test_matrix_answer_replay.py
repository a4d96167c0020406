"""A report's confirmation survives a crash: when the process dies after the turn that saved the
report committed, the message comes again from the homeserver (its sync was not acknowledged), and
the confirmation is sent then, under transaction IDs made from the message's event ID, so that the
reporter sees it exactly once whether or not the first one went out."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select

from bot.adapters.contract import InboundMessage
from bot.core.turns import REPLAY_WINDOW, kept_answer, replayed_answer
from dialogs import Reply
from stack import Stack
from storage.models import Case, Conversation
from support.matrix import MatrixWorld
from support.world import STORY, until

pytestmark = pytest.mark.both_databases

CONFIRMED = "opgeslagen onder nummer"


async def crash_on_submit(world: MatrixWorld, user: str, *, answer_first: bool) -> str:
    """The reporter sends the report; the bot's process 'dies' in the turn's answer (before it, or
    right after it went out), then Meldbot starts again on the same store and database. Returns the
    room."""
    await world.say(user, STORY, until="Kijk even of dit klopt")
    client, room = await world._dm(user)
    adapter = world.app.adapters["matrix"]
    original = adapter._reply
    dying = asyncio.Event()

    async def answer_and_hang(room_id, sender, replies, answer_to=None):
        if any(CONFIRMED in reply.text for reply in replies):
            if answer_first:
                await original(room_id, sender, replies, answer_to)
            dying.set()
            await asyncio.Event().wait()  # never returns: the batch is never handled to its end
        await original(room_id, sender, replies, answer_to)

    adapter._reply = answer_and_hang
    await client.send(room, "verzenden")
    await asyncio.wait_for(dying.wait(), 30)
    await world.restart()  # the sync token of that message was never saved: it comes again
    return room


async def confirmations(world: MatrixWorld, user: str) -> list[str]:
    return [body for body in await world.heard(user) if CONFIRMED in body]


async def only_case(world: MatrixWorld) -> Case:
    assert await world.count(Case) == 1
    async with world.app.sessions() as session:
        return (await session.scalars(select(Case))).one()


async def test_a_confirmation_lost_in_a_crash_is_sent_when_the_message_comes_again(synapse, tmp_path, database_url):
    world = await MatrixWorld(synapse, tmp_path).start(database_url)
    try:
        await crash_on_submit(world, "anna", answer_first=False)
        texts: list[str] = []

        async def confirmed() -> bool:
            texts[:] = await confirmations(world, "anna")
            return bool(texts)

        await until(confirmed, 30, "the confirmation after the restart")
        case = await only_case(world)
        assert len(texts) == 1 and case.reference in texts[0]
        await world.deliver()
        assert len(await confirmations(world, "anna")) == 1
    finally:
        await world.close()


async def test_a_confirmation_sent_just_before_a_crash_is_not_shown_twice(synapse, tmp_path, database_url):
    world = await MatrixWorld(synapse, tmp_path).start(database_url)
    try:
        await crash_on_submit(world, "bram", answer_first=True)
        case = await only_case(world)
        # The restarted bot handles the redelivered message (it sends the confirmation again, which
        # the homeserver drops) and then answers the next message: once that answer is there, the
        # redelivered one was handled before it.
        await world.say("bram", "hallo", until="")
        await world.deliver()
        texts = await confirmations(world, "bram")
        assert len(texts) == 1 and case.reference in texts[0]
    finally:
        await world.close()


def test_only_the_recent_confirmation_of_that_very_message_is_given_again():
    now = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
    message = InboundMessage(platform="matrix", conversation="!dm", sender="@anna:example.org", text="verzenden",
                             event_id="$submit")

    class Row:
        last_answer = kept_answer(message, [Reply("Uw melding is opgeslagen onder nummer M-1")], now)

    assert [r.text for r in replayed_answer(Row, message, now + REPLAY_WINDOW)] == [
        "Uw melding is opgeslagen onder nummer M-1"]
    assert replayed_answer(Row, message, now + REPLAY_WINDOW + dt.timedelta(seconds=1)) == []
    other = InboundMessage(platform="matrix", conversation="!dm", sender="@anna:example.org", text="hallo",
                           event_id="$later")
    assert replayed_answer(Row, other, now) == []
    Row.last_answer = None
    assert replayed_answer(Row, message, now) == []


async def test_a_platform_that_cannot_drop_a_resend_keeps_no_confirmation(database_url):
    """The console (like Teams) has no transaction IDs: a confirmation would never be given again
    there, so none is kept."""
    stack = await Stack.start(database_url)
    try:
        await stack.report("anna")
        async with stack.meldbot.sessions() as session:
            conversations = (await session.scalars(select(Conversation))).all()
    finally:
        await stack.close()
    assert conversations and all(c.last_answer is None for c in conversations)

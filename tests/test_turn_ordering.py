"""A turn of one conversation never runs on two instances at once: the second instance's turn waits
for the first one's commit and then continues from the state it left (PostgreSQL row locks)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import func, select

from bot.adapters.contract import InboundMessage
from bot.app import build
from storage.db import asyncpg_dsn
from stack import RecordingPlatform
from storage import repo, transaction
from storage.models import Case
from test_leader import on_postgres, settings_for

_ids = iter(range(10_000))


def message(text: str) -> InboundMessage:
    return InboundMessage(platform="chat", conversation="dm-anna", sender="anna", text=text,
                          event_id=f"ev-{next(_ids)}", sender_name="Anna", address={"user": "anna"})


async def waiting_on_a_lock(database_url: str) -> int:
    """How many backends of this database wait for a row lock now."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
    finally:
        await connection.close()


@on_postgres
async def test_a_turn_waits_for_the_same_conversations_turn_on_another_instance(database_url):
    first = await build(settings_for(database_url), {"chat": RecordingPlatform(coordinators={"coco"})})
    second = await build(settings_for(database_url), {"chat": RecordingPlatform(coordinators={"coco"})})
    try:
        await first.engine.handle(message("Een man schold me net uit aan de balie en dreigde me te slaan"))
        await first.engine.handle(message("1 2"))
        key = ("chat", "dm-anna", "anna")
        # A turn of instance one in progress: it holds the conversation, and switches it to English.
        async with transaction(first.sessions) as session:
            conversation = (await repo.get_or_create_conversations(session=session, keys=[key], language="nl",
                                                                   now=first.clock()))[key]
            state = dict(conversation.state, language="en")
            turn = asyncio.create_task(second.engine.handle(message("verzenden")))
            deadline = time.monotonic() + 20
            while await waiting_on_a_lock(database_url) < 1:
                assert not turn.done(), "the second instance's turn did not wait"
                assert time.monotonic() < deadline, "the second instance's turn never reached the lock"
                await asyncio.sleep(0.02)
            assert not turn.done()
            await repo.save_conversation_state(session=session, conversation=conversation, state=state,
                                               language="en", now=first.clock())
        answer = "\n".join(reply.plain() for reply in await asyncio.wait_for(turn, 20))
        # It continued from the committed state of the other instance's turn: in English, and sent.
        assert "MB-" in answer and "report" in answer.lower() and "melding" not in answer.lower(), answer
        async with second.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Case)) == 1
    finally:
        await first.stop()
        await second.stop()

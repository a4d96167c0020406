"""The Matrix adapter never acts on what it cannot know: a gap it could not fill is fetched again,
and an old view of the coordinator room does not confirm anyone (sessions then fail closed)."""

from __future__ import annotations

import time

import pytest
from nio import AsyncClient, MatrixRoom, RoomMessagesError

from bot.adapters.contract import DeliveryError
from bot.adapters.matrix.adapter import MEMBERSHIP_STALE_S, MatrixAdapter
from bot.adapters.matrix.sync import BackfillFailed
from bot.config import MatrixSettings

BOT = "@meldbot:gemeente.test"


def adapter(tmp_path) -> MatrixAdapter:
    matrix = MatrixAdapter(settings=MatrixSettings(homeserver="http://127.0.0.1:9", user_id=BOT, password="x"),
                           store_dir=tmp_path, language="nl")
    matrix.client = AsyncClient("http://127.0.0.1:9", BOT)
    room = MatrixRoom("!coordinatie", BOT)
    room.add_member(BOT, "Meldbot", None)
    room.add_member("@coco:gemeente.test", "Coco", None)
    matrix.client.rooms[room.room_id] = room
    matrix.coordinator_room_id = room.room_id
    return matrix


async def test_a_fresh_view_of_the_room_answers_and_an_old_one_cannot_tell(tmp_path):
    matrix = adapter(tmp_path)
    matrix.synced_at = time.monotonic()
    assert await matrix.is_coordinator("@coco:gemeente.test") is True
    assert await matrix.is_coordinator("@mallory:gemeente.test") is False
    matrix.synced_at = time.monotonic() - MEMBERSHIP_STALE_S - 1  # the sync loop has been failing
    with pytest.raises(DeliveryError):
        await matrix.is_coordinator("@coco:gemeente.test")
    await matrix.client.close()


async def test_a_gap_the_homeserver_will_not_fill_is_not_skipped(tmp_path):
    matrix = adapter(tmp_path)

    async def refused(*args, **kwargs):
        return RoomMessagesError("Too many requests", "M_LIMIT_EXCEEDED", retry_after_ms=1000)

    matrix.client.room_messages = refused
    with pytest.raises(BackfillFailed):
        await matrix._backfill("!dm", "prev-batch", "since-token")
    await matrix.client.close()

"""The platforms' shared state: sealed at rest, versioned, the same for every instance; and its
file-backed stand-in for an adapter without a database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from bot.adapters.common import FileState, StoreError, StoreSeal
from bot.adapters.contract import StateConflict
from bot.core.shared_state import SharedState


@pytest.mark.both_databases
async def test_documents_are_versioned_and_sealed(sessions, db):
    state = SharedState(sessions, "teams")
    assert await state.load("channel") == (None, 0)
    assert await state.save_json("channel", {"channel_id": "19:geheim@thread.tacv2"}) == 1
    assert await state.save_json("channel", {"channel_id": "19:ander@thread.tacv2"}) == 2
    assert await state.load_json("channel") == {"channel_id": "19:ander@thread.tacv2"}
    assert await state.version("channel") == 2
    assert await SharedState(sessions, "matrix").load("channel") == (None, 0)  # per platform
    async with db.connect() as connection:
        raw = (await connection.execute(text("SELECT sealed FROM platform_state"))).scalar_one()
    assert b"19:" not in bytes(raw) and b"ander" not in bytes(raw)


@pytest.mark.both_databases
async def test_concurrent_writers_each_get_their_own_version(sessions):
    state = SharedState(sessions, "matrix")
    versions = await asyncio.gather(*(state.save("store", bytes([n]) * 100) for n in range(8)))
    assert sorted(versions) == list(range(1, 9))
    data, version = await state.load("store")
    assert version == 8 and len(data) == 100


@pytest.mark.both_databases
async def test_a_write_from_a_stale_version_is_refused_not_lost(sessions):
    """Two instances read version 1 and change it: the second write is refused, so it re-reads and
    keeps the first one's change (compare-and-set)."""
    first, second = SharedState(sessions, "teams"), SharedState(sessions, "teams")
    assert await first.save_json("state", {"service_url": "a"}, expected_version=0) == 1
    with pytest.raises(StateConflict):
        await second.save_json("state", {"service_url": "b"}, expected_version=0)
    assert await first.save_json("state", {"channel_id": "19:x@thread.tacv2"}, expected_version=1) == 2
    with pytest.raises(StateConflict):
        await second.save_json("state", {"service_url": "b"}, expected_version=1)
    assert await first.load_json("state") == {"channel_id": "19:x@thread.tacv2"}
    # Concurrent writers from one version: exactly one wins.
    outcomes = await asyncio.gather(*(SharedState(sessions, "teams").save(
        "state", bytes([n]), expected_version=2) for n in range(6)), return_exceptions=True)
    assert sorted(o for o in outcomes if isinstance(o, int)) == [3]
    assert sum(isinstance(o, StateConflict) for o in outcomes) == 5


async def test_a_file_state_refuses_a_stale_version_too(tmp_path):
    state = FileState(tmp_path)
    version = await state.save_json("state", {"a": 1}, expected_version=0)
    await state.save_json("state", {"a": 2}, expected_version=version)
    with pytest.raises(StateConflict):
        await state.save_json("state", {"a": 3}, expected_version=version)
    assert await state.load_json("state") == {"a": 2}


@pytest.mark.both_databases
async def test_a_document_cannot_pass_for_another(sessions, db):
    state = SharedState(sessions, "teams")
    await state.save("a", b"first")
    await state.save("b", b"second")
    async with db.begin() as connection:
        await connection.execute(text("UPDATE platform_state SET sealed = (SELECT sealed FROM platform_state "
                                      "WHERE name = 'a') WHERE name = 'b'"))
    with pytest.raises(Exception):
        await state.load("b")


async def test_file_state_seals_once_a_key_is_given(tmp_path):
    seal = StoreSeal()
    seal.use_key(b"k" * 32)
    files = FileState(tmp_path, seal)
    assert await files.load("roster") == (None, 0)
    version = await files.save_json("roster", {"members": ["@coco:test"]})
    assert version > 0 and await files.version("roster") == version
    assert await files.load_json("roster") == {"members": ["@coco:test"]}
    assert b"coco" not in (tmp_path / "shared-roster").read_bytes()
    with pytest.raises(StoreError):
        await FileState(tmp_path).load("roster")  # sealed, and no key given

"""The platforms' shared state: sealed at rest, versioned, the same for every instance; and its
file-backed stand-in for an adapter without a database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from bot.adapters.common import FileState, StoreError, StoreSeal
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

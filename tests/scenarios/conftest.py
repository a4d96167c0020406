"""The `world` fixture: every scenario runs on each platform (console, matrix, teams); the
`both_databases` marker (tests/conftest.py) runs it on SQLite and PostgreSQL too."""

from __future__ import annotations

import pytest
from support import PLATFORMS, make_world


@pytest.fixture(params=PLATFORMS)
async def world(request, database_url, tmp_path):
    platform = request.param
    synapse = request.getfixturevalue("synapse") if platform == "matrix" else None
    keys = request.getfixturevalue("keys") if platform == "teams" else None
    world = make_world(platform, tmp_path=tmp_path, synapse=synapse, keys=keys)
    try:
        await world.start(database_url)
        yield world
    finally:
        await world.close()

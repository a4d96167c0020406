"""The Teams adapter's state in the database (issue 14): several instances behind one endpoint share
it, so a channel claimed through one is where the others' outboxes post; the old `teams-state.json`
is imported once; the state is sealed at rest."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

import storage

from bot.adapters.common import JsonFile, StoreSeal
from bot.adapters.teams.adapter import STATE_DOCUMENT
from bot.core.shared_state import SharedState
from helpers import TEST_MASTER_KEY
from storage.models import OutboxMessage
from teams_harness import CHANNEL, TEAM, TeamsWorld

OTHER_CHANNEL = "19:andere-afdeling@thread.tacv2"
OTHER_TEAM = "19:team-andere-afdeling@thread.tacv2"


@pytest.fixture
async def instances(keys, tmp_path, database_url):
    """Two Meldbots (A and B) on one database and one Bot Connector, each with its own store_dir."""
    first = TeamsWorld(keys, tmp_path / "a", database_url=database_url)
    second = None
    try:
        await first.start()
        second = TeamsWorld(keys, tmp_path / "b", database_url=database_url, connector=first.connector)
        await second.start()
        # A's outbox sends nothing on Teams: whatever is delivered, B's worker delivered.
        first.app.worker.adapters.pop("teams")
        yield first, second
    finally:
        if second is not None:
            await second.close()
        await first.close()


def posts_into(world: TeamsWorld, reference: str) -> list[str]:
    """The channels the case notification of `reference` was posted into."""
    return [r["body"]["channelData"]["channel"]["id"] for r in world.channel_posts()
            if reference in (r["activity"].get("text") or "")]


@pytest.mark.both_databases
async def test_a_channel_claimed_on_one_instance_is_where_the_other_posts(instances):
    a, b = instances
    await b.in_channel("help")  # B has seen the service URL: nothing to write on its next activity
    assert b.adapter.coordinator_destination() is None
    await a.set_channel()  # the real botbuilder route on A, with a real JWT
    # B knows it from its next activity on (one version check per activity).
    said = await b.in_channel("coordinatiekanaal")
    assert len(said) == 1 and "al het coördinatiekanaal" in said[0]
    reference = await b.report()
    assert posts_into(a, reference) == [CHANNEL]
    async with b.app.sessions() as session:
        queued = (await session.scalars(select(OutboxMessage.destination).where(
            OutboxMessage.platform == "teams", OutboxMessage.kind == "case_notification"))).all()
    assert queued == [CHANNEL]  # B's turn queued it for the channel claimed on A
    assert b.adapter.coordinator_destination() == CHANNEL and b.adapter.state["team_id"] == TEAM


@pytest.mark.both_databases
async def test_a_notification_waiting_on_b_goes_to_the_channel_claimed_on_a(instances):
    """No activity reaches B after the claim: its outbox worker alone finds the channel."""
    a, b = instances
    reference = await b.report(drain=False)  # no channel known yet: it waits in the outbox
    await a.set_channel()
    assert await b.app.worker.drain(timeout=30)
    assert posts_into(a, reference) == [CHANNEL]


@pytest.mark.both_databases
async def test_a_move_on_a_is_followed_by_b_whose_copy_was_stale(instances):
    a, b = instances
    await a.set_channel()
    first = await b.report()
    assert posts_into(a, first) == [CHANNEL]
    held = b.app.worker.adapters.pop("teams")  # B queues the next notification for CHANNEL, sends later
    second = await b.report(drain=False)
    await a.set_channel(channel=OTHER_CHANNEL, team=OTHER_TEAM, user="olga")
    assert b.adapter.coordinator_destination() == CHANNEL  # B saw no activity since: its copy is stale
    b.app.worker.adapters["teams"] = held
    assert await b.app.worker.drain(timeout=30)
    # Neither refused for good (the old channel is retired) nor posted into the old channel.
    assert posts_into(a, second) == [OTHER_CHANNEL]
    assert b.adapter.coordinator_destination() == OTHER_CHANNEL
    assert CHANNEL in b.adapter.state["retired_channels"]


@pytest.mark.both_databases
async def test_the_old_state_file_is_imported_once_and_the_state_is_sealed_in_the_database(keys, tmp_path,
                                                                                        database_url):
    world = TeamsWorld(keys, tmp_path, database_url=database_url)
    store = world.settings().teams.store_dir
    store.mkdir(parents=True)
    # What an earlier version left: the state file sealed with the store key the app derives.
    engine = storage.create_engine(database_url)
    try:
        vault = await storage.prepare(engine, TEST_MASTER_KEY)
    finally:
        await engine.dispose()
    seal = StoreSeal()
    seal.use_key(vault.derive("store:teams"))
    old = store / "teams-state.json"
    JsonFile(old, seal).save({"channel_id": CHANNEL, "team_id": TEAM, "channel_type": "standard",
                              "service_url": "https://smba.trafficmanager.net/emea/"})
    try:
        await world.start()
        assert world.adapter.coordinator_destination() == CHANNEL
        assert world.adapter.state["team_id"] == TEAM
        assert not old.exists() and (store / "teams-state.json.imported").exists()
        shared = SharedState(world.app.sessions, "teams")
        assert await shared.version(STATE_DOCUMENT) == 1
        async with world.app.db.connect() as connection:
            rows = (await connection.execute(text(
                "SELECT name, sealed FROM platform_state WHERE platform = 'teams'"))).all()
        assert [name for name, _ in rows] == [STATE_DOCUMENT]
        raw = bytes(rows[0][1])
        for clear in (CHANNEL, "coordinatie", TEAM, "team-agressie", "smba.trafficmanager", "channel_id"):
            assert clear.encode() not in raw
        # The database is the truth from now on: a claim changes it, not the file.
        await world.set_channel(channel=OTHER_CHANNEL, team=OTHER_TEAM, user="olga")
        stored = await shared.load_json(STATE_DOCUMENT)
        assert stored["channel_id"] == OTHER_CHANNEL and CHANNEL in stored["retired_channels"]
        version = await shared.version(STATE_DOCUMENT)
    finally:
        await world.close()
    # A new start (the file back, say from a backup) imports nothing: the database already has the state.
    (store / "teams-state.json.imported").rename(old)
    again = TeamsWorld(keys, tmp_path, database_url=database_url)
    try:
        await again.start()
        assert again.adapter.coordinator_destination() == OTHER_CHANNEL
        assert await SharedState(again.app.sessions, "teams").version(STATE_DOCUMENT) == version
    finally:
        await again.close()

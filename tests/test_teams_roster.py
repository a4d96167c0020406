"""Who is a coordinator on Teams: the members of the coordinator *channel* (a standard channel's are
its team's, a private or shared channel has its own roster), never guests or people of another
tenant. Asked of the fake Bot Connector, for login links and for the thread commands alike."""

from __future__ import annotations

import re

from sqlalchemy import select

from storage import repo
from storage.models import LoginLink
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import CHANNEL, TEAM, shown

LINK_RE = re.compile(r"https://meldbot\.example\.nl/login/[A-Za-z0-9_-]+")


def lookups(world) -> list[tuple[str, str]]:
    return [(r["conversation"], r["member"]) for r in world.connector.requests if r["kind"] == "member"]


async def links(world) -> int:
    async with world.app.sessions() as session:
        return len((await session.scalars(select(LoginLink))).all())


async def test_a_private_channel_asks_its_own_roster_not_the_team(world):
    await world.start()
    await world.set_channel(channel_type="private")
    assert world.adapter.state["channel_type"] == "private"
    world.connector.team_members[TEAM] = {"aad-bob", "aad-carol"}  # both in the team
    world.connector.channel_members[CHANNEL] = {"aad-carol"}  # only Carol in the private channel
    said = await world.say("login", user="bob")
    assert not LINK_RE.search(said[0]) and "alleen voor coördinatoren" in said[0]
    said = await world.say("login", user="carol")
    assert LINK_RE.search(said[0])
    assert lookups(world) == [(CHANNEL, "aad-bob"), (CHANNEL, "aad-carol")]
    assert await links(world) == 1


async def test_a_shared_channel_given_as_membership_type_is_learnt_from_the_raw_channel_data(world):
    """botbuilder's ChannelInfo drops `membershipType`: the adapter reads the activity's raw channel data."""
    await world.start()
    code = await world.claim_code()
    body_kwargs = dict(conversation=CHANNEL, conversation_type="channel", channel=CHANNEL, team=TEAM, user="coco",
                       channel_type=None)
    from teams_harness import activity

    body = activity(world.connector.url, f"<at>Meldbot</at> coordinatiekanaal {code}", **body_kwargs)
    body["channelData"]["channel"]["membershipType"] = "shared"
    assert (await world.post(body)).status in (200, 201)
    assert world.adapter.state["channel_type"] == "shared"
    # Written through to the shared state (the database): read back the way another instance reads it.
    from bot.adapters.teams.adapter import STATE_DOCUMENT
    from bot.core.shared_state import SharedState

    stored = await SharedState(world.app.sessions, "teams").load_json(STATE_DOCUMENT)
    assert stored["channel_type"] == "shared" and stored["channel_id"] == CHANNEL


async def test_a_channel_of_unknown_type_asks_the_channel_roster(world):
    """Never a wider roster than the channel's: the team's is asked only for a standard channel."""
    await world.start()
    await world.set_channel(channel_type=None)
    assert world.adapter.state.get("channel_type") is None
    world.connector.team_members[TEAM] = {"aad-bob"}
    said = await world.say("login", user="bob")
    assert not LINK_RE.search(said[0])
    assert lookups(world) == [(CHANNEL, "aad-bob")]


async def test_guests_and_members_of_another_tenant_are_never_coordinators(world):
    await world.start()
    await world.set_channel(channel_type="shared")
    world.connector.channel_members[CHANNEL] = {"aad-gast", "aad-extern", "aad-carol"}
    world.connector.guests.add("aad-gast")
    world.connector.member_tenants["aad-extern"] = "99999999-0000-4000-8000-000000000000"
    for user in ("gast", "extern"):
        said = await world.say("login", user=user)
        assert not LINK_RE.search(said[0]) and "alleen voor coördinatoren" in said[0]
    assert LINK_RE.search((await world.say("login", user="carol"))[0])
    assert await links(world) == 1


async def test_thread_commands_need_the_roster_a_guest_in_the_channel_is_refused(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-gast", "aad-coco"}
    world.connector.guests.add("aad-gast")
    reference = await world.report()
    root = world.channel_posts()[0]["conversation"]
    # The guest posts in the coordinator channel's own thread of the case: same channel, same team.
    said = await world.in_channel("oppakken", conversation=root, user="gast")
    assert any("Alleen leden" in s for s in said)
    said = await world.in_channel("antwoord Log even opnieuw in via mijn link", conversation=root, user="gast")
    assert any("Alleen leden" in s for s in said)
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        assert case.assigned_to is None
    assert not any("Log even opnieuw in" in shown(t) for t in world.connector.texts("a:personal-anna"))
    # A member may.
    said = await world.in_channel("oppakken", conversation=root, user="coco")
    assert any(f"{reference} is opgepakt door Coco" in s for s in said)
    assert ("19:team-agressie@thread.tacv2", "aad-gast") in lookups(world)


async def test_a_thread_command_when_teams_cannot_tell_is_answered_and_does_nothing(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-coco"}
    reference = await world.report()
    root = world.channel_posts()[0]["conversation"]
    world.connector.fail_next(4, status=500, retry_after=None)  # the lookup and msrest's 3 retries
    said = await world.in_channel("oppakken", conversation=root, user="coco")
    assert any("niet nagaan" in s for s in said)
    async with world.app.sessions() as session:
        assert (await repo.get_case(session=session, reference=reference)).assigned_to is None


async def test_a_configured_channel_learns_its_type_and_team_from_a_message_there(world):
    await world.start(coordinator_channel=CHANNEL)
    world.connector.channel_members[CHANNEL] = {"aad-carol"}
    await world.in_channel("help", conversation=f"{CHANNEL};messageid=7", user="carol", channel_type="private")
    assert world.adapter.state["channel_type"] == "private" and world.adapter.state["team_id"] == TEAM
    assert LINK_RE.search((await world.say("login", user="carol"))[0])

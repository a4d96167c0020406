"""Which Teams channel is the coordinator channel: only a code from `meldbot teams claim-code` (run on
the server, so: proof of access to it) binds one. Any other team that installed the app gets an
explanation and nothing else."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

from sqlalchemy.exc import OperationalError

from helpers import TEST_MASTER_KEY
from storage import repo
from storage.crypto import encode_key
from storage.models import Case, Conversation
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import APP_ID, CHANNEL, TEAM, TENANT, TeamsWorld, activity, shown

OTHER_CHANNEL = "19:algemeen-andere-afdeling@thread.tacv2"
OTHER_TEAM = "19:team-andere-afdeling@thread.tacv2"
THIRD_CHANNEL = "19:nog-een-team@thread.tacv2"
THIRD_TEAM = "19:team-nog-een@thread.tacv2"
CLAIMED = "nu het coördinatiekanaal"
HOW_TO = "meldbot teams claim-code"


async def cli_claim_code(world: TeamsWorld) -> str:
    """`meldbot teams claim-code --config FILE`, the real command in its own process, on the bot's database."""
    config = world.tmp / "claim.toml"
    config.write_text(f'[database]\nurl = "{world.database_url}"\n\n'
                      f'[teams]\napp_id = "{APP_ID}"\ntenant_id = "{TENANT}"\n\n'
                      f'[privacy]\nkey = "{encode_key(TEST_MASTER_KEY)}"\n')
    meldbot = Path(sys.executable).with_name("meldbot")
    command = [str(meldbot)] if meldbot.exists() else [sys.executable, "-m", "bot.cli"]
    process = await asyncio.create_subprocess_exec(*command, "teams", "claim-code", "--config", str(config),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip().splitlines()[-1]


def posts_and_thread_lines(world: TeamsWorld) -> list[dict]:
    """Everything the bot sent into any channel (new posts, thread replies, answers there)."""
    return [r for r in world.connector.requests
            if r["kind"] == "create" or (r["kind"] == "send" and r["conversation"].startswith("19:"))]


def channel_of(record: dict) -> str:
    if record["kind"] == "create":
        return record["body"]["channelData"]["channel"]["id"]
    return record["conversation"].split(";messageid=")[0]


async def test_only_a_code_from_the_server_binds_the_coordinator_channel(world, caplog):
    caplog.set_level(logging.INFO)
    await world.start()
    world.connector.team_members[TEAM] = {"aad-coco"}
    outsider = dict(channel=OTHER_CHANNEL, team=OTHER_TEAM, user="mallory")

    # 1. Another team that installed the app: without a code, and with a made-up one, nothing is bound.
    said = await world.in_channel("coordinatiekanaal", **outsider)
    assert len(said) == 1 and HOW_TO in shown(said[0]) and CLAIMED not in said[0]
    wrong = "K7QM-4XPT-9HRC"
    said = await world.in_channel(f"coordinatiekanaal {wrong}", **outsider)
    assert len(said) == 1 and "klopt niet" in said[0] and HOW_TO in shown(said[0])
    assert world.adapter.coordinator_destination() is None
    assert "claim without a code refused" in caplog.text and "wrong, used or expired code" in caplog.text

    # 2. The real channel, with a code from the real command on the server.
    code = await cli_claim_code(world)
    said = await world.in_channel(f"coordinatiekanaal {code}")
    assert len(said) == 1 and CLAIMED in said[0]
    assert world.adapter.coordinator_destination() == CHANNEL and world.adapter.state["team_id"] == TEAM

    # 3. The same code again, by a third team (or anyone): it was used up.
    said = await world.in_channel(f"coordinatiekanaal {code}", channel=THIRD_CHANNEL, team=THIRD_TEAM, user="eve")
    assert len(said) == 1 and "klopt niet" in said[0]
    assert world.adapter.coordinator_destination() == CHANNEL
    for secret in (code, wrong, code.replace("-", "")):
        assert secret not in caplog.text and secret.lower() not in caplog.text

    # 4. A report: its post and every later line of its thread go to the real channel only.
    before = len(posts_and_thread_lines(world))
    reference = await world.report()
    root = world.channel_posts()[-1]["conversation"]
    await world.in_channel("oppakken", conversation=root, user="coco")
    await world.in_channel("antwoord Ik bel je zo.", conversation=root, user="coco")
    await world.say("Dank je, ik neem op.")
    assert await world.app.worker.drain(timeout=30)
    sent = posts_and_thread_lines(world)[before:]
    assert any(r["kind"] == "create" and reference in r["activity"]["text"] for r in sent)
    assert any("de melder schrijft: Dank je, ik neem op." in shown(r["activity"].get("text") or "") for r in sent)
    assert {channel_of(r) for r in sent} == {CHANNEL}
    assert not any(OTHER_CHANNEL in str(r) or THIRD_CHANNEL in str(r) for r in sent)


async def test_the_english_words_work_too(world):
    await world.start()
    said = await world.in_channel(f"coordinator channel {await world.claim_code()}")
    assert any(CLAIMED in s for s in said) and world.adapter.coordinator_destination() == CHANNEL


async def test_a_new_code_moves_the_role_and_the_old_channel_gets_nothing_more(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-coco"}
    world.connector.team_members[OTHER_TEAM] = {"aad-olga"}
    first = await world.report()
    old_root = world.channel_posts()[-1]["conversation"]
    await world.in_channel("oppakken", conversation=old_root, user="coco")
    await world.in_channel("antwoord Ik bel je zo.", conversation=old_root, user="coco")
    assert await world.app.worker.drain(timeout=30)
    # Moving needs a code too; with one, the other team's channel takes over.
    said = await world.in_channel("coordinatiekanaal", channel=OTHER_CHANNEL, team=OTHER_TEAM, user="olga")
    assert any(HOW_TO in shown(s) for s in said) and world.adapter.coordinator_destination() == CHANNEL
    await world.set_channel(channel=OTHER_CHANNEL, team=OTHER_TEAM, user="olga")
    assert world.adapter.coordinator_destination() == OTHER_CHANNEL
    assert world.adapter.state["team_id"] == OTHER_TEAM
    # The old team's members are no coordinators any more, the new team's are.
    assert "/login/" not in (await world.say("login", user="coco"))[0]
    assert "/login/" in (await world.say("login", user="olga"))[0]
    # The old channel's commands are not taken, and its thread gets no more lines (the reporter's
    # words included): the case is posted again in the new channel and its lines go there.
    said = await world.in_channel("antwoord Nog iets?", conversation=old_root, user="coco")
    assert not any("Doorgestuurd" in s for s in said)
    before = len(world.connector.requests)
    said = await world.say("Dank je, ik neem op.", user="anna")
    assert any("Doorgestuurd naar de coördinator" in s for s in said)
    assert await world.app.worker.drain(timeout=30)
    after = world.connector.requests[before:]
    assert not any(r["conversation"].startswith(CHANNEL) for r in after)
    (reposted,) = [r for r in after if r["kind"] == "create"]
    assert channel_of(reposted) == OTHER_CHANNEL and first in str(reposted["activity"])
    assert any("Dank je, ik neem op." in (r["activity"].get("text") or "") for r in after
               if r["kind"] == "send" and r["conversation"] == reposted["conversation"])
    # New reports go to the new channel.
    second = await world.report(story="Iemand bedreigde me bij de receptie met een stok", user="bram")
    assert second != first and channel_of(world.channel_posts()[-1]) == OTHER_CHANNEL


async def test_a_configured_channel_wins_and_the_code_is_not_spent(world):
    await world.start(coordinator_channel=CHANNEL)
    code = await world.claim_code()
    said = await world.in_channel(f"coordinatiekanaal {code}", channel=OTHER_CHANNEL, team=OTHER_TEAM)
    assert any("kan niet vanuit een bericht worden verplaatst" in s for s in said)
    assert world.adapter.coordinator_destination() == CHANNEL
    # Still unused: the engine takes it once (refused before it was spent).
    assert await world.app.engine.redeem_claim_code("teams", code) is True


async def test_when_the_database_cannot_tell_the_channel_is_told_to_try_again(world, monkeypatch, caplog):
    await world.start()
    code = await world.claim_code()

    async def unavailable(**kwargs):
        raise OperationalError("UPDATE claim_codes", {}, Exception("database is locked"))

    monkeypatch.setattr(repo, "use_claim_code", unavailable)
    said = await world.in_channel(f"coordinatiekanaal {code}")
    assert any("over een minuut" in s for s in said) and world.adapter.coordinator_destination() is None
    assert code not in caplog.text
    monkeypatch.undo()
    said = await world.in_channel(f"coordinatiekanaal {code}")  # another message: the code still works
    assert any(CLAIMED in s for s in said)


async def test_a_redelivered_claim_is_answered_once(world):
    await world.start()
    from teams_harness import activity

    body = activity(world.connector.url, f"<at>Meldbot</at> coordinatiekanaal {await world.claim_code()}",
                    conversation=CHANNEL, conversation_type="channel", channel=CHANNEL, team=TEAM,
                    activity_id="claim-1")
    await world.post(body)
    await world.post(body)  # Teams resends after a slow answer
    texts = world.connector.texts(CHANNEL)
    assert len(texts) == 1 and CLAIMED in texts[0]


async def test_a_claim_written_in_the_personal_chat_is_not_kept(world):
    await world.start()
    code = await world.claim_code()
    said = await world.say(f"coordinatiekanaal {code}")
    assert any("niet hier" in shown(s) for s in said)
    assert await world.count(Conversation) == 0  # the code did not land in a draft
    assert world.adapter.coordinator_destination() is None
    # A story that merely starts with the word is a story.
    said = await world.say("Coordinatiekanaal van de gemeente werd door een bezoeker volgescholden bij de balie")
    assert not any("niet hier" in shown(s) for s in said) and await world.count(Conversation) == 1


async def test_a_report_card_acted_on_outside_the_personal_chat_files_nothing(world):
    await world.start()
    await world.set_channel()
    data = {"meldbot": "report", "form_id": "f-group", "story": "Ik werd uitgescholden aan de balie"}
    invoke = activity(world.connector.url, None, activity_type="invoke", name="adaptiveCard/action",
                      conversation="19:groepschat@thread.v2", conversation_type="groupChat",
                      value={"action": {"type": "Action.Execute", "verb": "submitReport", "data": data}})
    async with world.http.post(f"http://127.0.0.1:{world.port}/api/messages", data=json.dumps(invoke).encode(),
                               headers={"Content-Type": "application/json", "Authorization":
                                        f"Bearer {world.keys.token(world.connector.url)}"}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["type"] == "application/vnd.microsoft.card.adaptive" and "privé" in str(body["value"])
    assert await world.count(Case) == 0 and await world.count(Conversation) == 0


async def test_a_form_that_files_nothing_is_answered_on_the_card(world):
    await world.start()
    data = {"meldbot": "report", "form_id": "f-empty", "story": ""}
    invoke = activity(world.connector.url, None, activity_type="invoke", name="adaptiveCard/action",
                      value={"action": {"type": "Action.Execute", "verb": "submitReport", "data": data}})
    async with world.http.post(f"http://127.0.0.1:{world.port}/api/messages", data=json.dumps(invoke).encode(),
                               headers={"Content-Type": "application/json", "Authorization":
                                        f"Bearer {world.keys.token(world.connector.url)}"}) as response:
        assert response.status == 200  # before: 500 (a plain string cannot be serialised as the body)
        body = await response.json()
    assert body["type"] == "application/vnd.microsoft.card.adaptive" and body["value"]["body"][0]["text"]
    assert await world.count(Case) == 0

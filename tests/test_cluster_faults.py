"""Faults of a real cluster (issue 14): real `meldbot run` processes (bot/devtools/cluster.py) on
PostgreSQL, SIGKILLed or cut off from their database in the middle of a report.

1. Matrix, three instances, one Synapse: the leader is killed mid-dialogue; another leads within
   30 s and the reporter's next message is answered once; one case, one coordinator notification.
2. Teams: an instance is killed after a report's commit, before its notification left the outbox;
   the notification reaches the coordinator channel exactly once.
3. A private PostgreSQL is stopped during a Teams dialogue: the reporter hears "not saved", nothing
   crashes; once it is back the same process answers and saves the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from nio import MegolmEvent, RoomMessagesResponse, RoomMessageText

from bot.devtools.chatclient import ChatClient
from bot.devtools.cluster import LocalCluster
from bot.devtools.localserver import free_port
from storage.db import asyncpg_dsn
from teams_harness import APP_ID, CHANNEL, CONNECTOR_TOKEN, STORY, TENANT, FakeConnector, activity
from support.world import until as poll_until
from test_leader import on_postgres

REFERENCE = re.compile(r"MB-[0-9A-Z]{3}-[0-9A-Z]{3}")
SUMMARY = "Kijk even of dit klopt"  # the story names kind and place: the summary follows it
SAVED = "opgeslagen onder nummer"
NOT_SAVED = "Het lukte me niet om dit op te slaan"  # error.not_saved (nl), the engine's database-down answer
#: A word of the story that appears in no log line of Meldbot's own.
STORY_WORD = "oplichter"
#: The issue's limit for another instance to lead after the leader died.
FAILOVER_LIMIT_S = 30.0
#: How long a wait may take before the test fails (generous: two shared cores).
DEADLINE_S = 60.0
#: Outbox lease of the instances (the default 120 s would make a fault test wait that long).
LEASE_S = 3.0


async def until(condition, timeout: float = DEADLINE_S, what: str = "a condition"):
    """`support.world.until` with this file's longer deadline (processes start and die here)."""
    return await poll_until(condition, timeout, what)


async def query(database_url: str, sql: str, *args):
    """Rows of one statement, on a connection of its own (outside every Meldbot process)."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


async def pending_outbox(database_url: str) -> int:
    return (await query(database_url, "SELECT count(*) AS n FROM outbox WHERE delivered_at IS NULL"))[0]["n"]


def assert_no_report_content_in_logs(cluster: LocalCluster) -> None:
    """Logs never carry report content (a database error must not print a statement's parameters)."""
    for instance in cluster.instances:
        assert STORY_WORD not in instance.log_text(), f"instance {instance.index} logged report content"


def dump_logs(cluster: LocalCluster) -> None:
    """Each instance's last lines, printed on failure (pytest shows captured output then)."""
    for instance in cluster.instances:
        print(f"--- instance {instance.index} (exits {instance.exits}, running {instance.running}) ---")
        print("\n".join(instance.log_text().splitlines()[-30:]))


# -- 1. Matrix: the leader dies mid-dialogue ------------------------------------------------------------

async def bot_events_after(client: ChatClient, room: str, bot_user: str, after_event: str) -> tuple[list[str], int]:
    """The bodies of the bot's messages in `room` after the event `after_event`, oldest first, from the
    server's history, and how many of them the reporter could not decrypt."""
    response = await client.client.room_messages(room, start="", limit=200)
    assert isinstance(response, RoomMessagesResponse), response
    events = list(reversed(response.chunk))
    ids = [event.event_id for event in events]
    assert after_event in ids, "the reporter's message is not in the room's history"
    bodies, undecryptable = [], 0
    for event in events[ids.index(after_event) + 1:]:
        if getattr(event, "sender", None) != bot_user:
            continue
        if isinstance(event, MegolmEvent):
            decrypted = client.client.decrypt_event(event)
            event = decrypted if not isinstance(decrypted, MegolmEvent) else event
        if isinstance(event, RoomMessageText):
            bodies.append(event.body)
        elif isinstance(event, MegolmEvent):
            undecryptable += 1
    return bodies, undecryptable


async def room_notifications(client: ChatClient, room: str, bot_user: str, reference: str) -> int:
    """How many top-level case notifications for `reference` the bot posted in `room`."""
    response = await client.client.room_messages(room, start="", limit=500)
    assert isinstance(response, RoomMessagesResponse), response
    return sum(1 for event in response.chunk
               if getattr(event, "sender", None) == bot_user and isinstance(event, RoomMessageText)
               and f"Nieuwe melding {reference}" in event.body
               and (event.source.get("content", {}).get("m.relates_to") or {}).get("rel_type") != "m.thread")


@on_postgres
async def test_matrix_leader_killed_mid_dialogue_another_leads_and_nothing_is_lost_or_doubled(
        database_url, synapse, tmp_path):
    tag = uuid.uuid4().hex[:8]
    account = synapse.register(f"meldbot-{tag}")
    reporter = ChatClient(synapse.url, synapse.register(f"anna-{tag}"), tmp_path / "anna")
    coordinator = ChatClient(synapse.url, synapse.register(f"coco-{tag}"), tmp_path / "coco")
    clients = [reporter, coordinator]
    cluster = None
    try:
        for client in clients:
            await client.start()
        coordinator_room = await coordinator.create_room("Coördinatie agressie", invite=[account.user_id])
        settings = {"organisation": {"name": "Gemeente Testdam"},
                    "matrix": {"homeserver": synapse.url, "user_id": account.user_id,
                               "access_token": account.access_token, "device_id": account.device_id,
                               "coordinator_room": coordinator_room}}
        cluster = LocalCluster(tmp_path / "cluster", database_url, settings=settings, instances=3,
                               outbox_lease=LEASE_S)
        await cluster.start_all()
        leader = await cluster.leader(DEADLINE_S, platform="matrix")
        await coordinator.wait_joined(coordinator_room, account.user_id, DEADLINE_S)
        room = await reporter.open_dm(account.user_id, encrypted=True)

        start = len(reporter.received)
        await reporter.send(room, STORY)
        await reporter.wait_for_text(room, SUMMARY, DEADLINE_S, start)

        killed_at = cluster.kill(leader)
        successor = await cluster.leader(DEADLINE_S * 2, platform="matrix")
        failover = time.monotonic() - killed_at
        print(f"\nMatrix leader fail-over: instance {leader} killed, instance {successor} leads with Matrix ok "
              f"after {failover:.2f} s (limit {FAILOVER_LIMIT_S:.0f} s)")
        assert successor != leader
        assert failover < FAILOVER_LIMIT_S

        start = len(reporter.received)
        sent = await reporter.send(room, "verzenden")
        confirmation = await reporter.wait_for_text(room, SAVED, DEADLINE_S, start)
        reference = REFERENCE.search(confirmation.body).group(0)

        # The killed instance comes back as a standby (as its supervisor would restart it): it must
        # not answer or notify a second time either.
        await cluster.start(leader)
        await until(lambda: _database_ok(cluster, leader), what="the restarted instance to answer /readyz")
        await until(lambda: _zero(pending_outbox(database_url)), what="the outbox to be empty")
        await until(lambda: room_notifications(coordinator, coordinator_room, account.user_id, reference),
                    what="the coordinator notification")

        bodies, undecryptable = await bot_events_after(reporter, room, account.user_id, sent)
        assert undecryptable == 0, f"{undecryptable} answers the reporter cannot decrypt"
        assert sum(SAVED in body for body in bodies) == 1, bodies
        assert all(n == 1 for n in Counter(bodies).values()), f"an answer was sent twice: {bodies}"
        cases = await query(database_url, "SELECT reference FROM cases")
        assert [row["reference"] for row in cases] == [reference]
        assert await room_notifications(coordinator, coordinator_room, account.user_id, reference) == 1
        assert_no_report_content_in_logs(cluster)
    except BaseException:
        if cluster is not None:
            dump_logs(cluster)
        raise
    finally:
        if cluster is not None:
            await cluster.stop_all()
        for client in clients:
            await client.stop()


async def _database_ok(cluster: LocalCluster, i: int) -> bool:
    return ((await cluster.readyz(i)) or {}).get("database") == "ok"


async def _zero(count) -> bool:
    return await count == 0


# -- 2. Teams: killed between a report's commit and its notification -----------------------------------

class HoldingConnector(FakeConnector):
    """The fake Bot Connector, able to hold the bot's answer to a reporter: while `hold` is set, a
    message whose text contains it is not answered (until `release`), and posts in the coordinator
    channel are refused with 503, so the notification certainly is still in the outbox then."""

    def __init__(self):
        super().__init__()
        self.hold: str | None = None
        self.held: list[dict] = []
        self.refused_channel_posts = 0
        self.release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        if self.hold and request.method == "POST" and request.path.startswith("/v3/conversations") \
                and request.can_read_body:
            body = await request.json()  # aiohttp keeps the body: the parent reads it again
            parts = request.path.strip("/").split("/")
            if parts == ["v3", "conversations"] and (body.get("channelData") or {}).get("channel"):
                self.refused_channel_posts += 1
                return web.json_response({"error": {"code": "ServiceError", "message": "try later"}}, status=503,
                                         headers={"Retry-After": "1"})
            if self.hold in (body.get("text") or ""):
                self.held.append({"path": request.path, "body": body})
                await self.release.wait()
                return web.json_response({"error": {"code": "ServiceError"}}, status=503)
        return await super()._handle(request)

    def channel_posts(self, reference: str) -> int:
        """Top-level posts in the coordinator channel that name `reference`."""
        return sum(1 for r in self.requests if r["kind"] == "create"
                   and ((r["body"].get("channelData") or {}).get("channel") or {}).get("id") == CHANNEL
                   and reference in json.dumps(r["body"]))

    def answers_to(self, user: str) -> list[str]:
        return [r["activity"].get("text") or "" for r in self.requests
                if r["kind"] == "send" and r["conversation"] == f"a:personal-{user}"]


def teams_settings(keys) -> dict:
    return {"organisation": {"name": "Gemeente Testdam"},
            "teams": {"app_id": APP_ID, "app_password": "unused", "tenant_id": TENANT,
                      "openid_metadata_url": keys.metadata_url, "coordinator_channel": CHANNEL}}


async def post_activity(http: aiohttp.ClientSession, keys, connector: FakeConnector, url: str, text: str,
                        user: str = "anna") -> int:
    """One personal-chat message, as Teams posts it (real JWT); the HTTP status of the bot's answer."""
    body = activity(connector.url, text, user=user)
    headers = {"Authorization": f"Bearer {keys.token(connector.url)}"}
    async with http.post(f"{url}/api/messages", json=body, headers=headers) as response:
        await response.read()
        return response.status


async def say(http, keys, connector, url: str, text: str, expect: str, user: str = "anna") -> str:
    """Send `text` and return the bot's answer in the turn, which must contain `expect`."""
    before = len(connector.answers_to(user))
    status = await post_activity(http, keys, connector, url, text, user)
    assert status in (200, 201), status
    answers = connector.answers_to(user)[before:]
    assert any(expect in answer for answer in answers), (expect, answers)
    return next(answer for answer in answers if expect in answer)


@on_postgres
async def test_teams_instance_killed_after_the_commit_the_notification_reaches_the_channel_once(
        database_url, keys, tmp_path):
    connector = HoldingConnector()
    await connector.start()
    cluster = LocalCluster(tmp_path / "cluster", database_url, settings=teams_settings(keys), instances=2,
                           connector_token=CONNECTOR_TOKEN, outbox_lease=LEASE_S)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    turn = None
    try:
        await cluster.start_all()
        for i in range(2):
            await cluster.wait_ready(i)
        # Instance 1 never sees an activity: the Bot Connector's address it posts to is the one
        # instance 0 learned, from the shared Teams state in the database.
        await say(http, keys, connector, cluster.instance(0).url, STORY, SUMMARY)

        connector.hold = SAVED
        turn = asyncio.create_task(post_activity(http, keys, connector, cluster.instance(0).url, "verzenden"))
        await until(lambda: connector.held or turn.done(), what="the answer that says the report is saved")
        assert connector.held, f"the turn ended without its answer being held: {turn.result()}"
        reference = REFERENCE.search(connector.held[0]["body"]["text"]).group(0)
        # This is the moment: the report is committed, its notification still waits in the outbox.
        cases = await query(database_url, "SELECT id, reference FROM cases")
        assert [row["reference"] for row in cases] == [reference]
        waiting = await query(database_url, "SELECT kind FROM outbox WHERE case_id = $1 AND delivered_at IS NULL",
                              cases[0]["id"])
        assert "case_notification" in [row["kind"] for row in waiting]
        assert connector.channel_posts(reference) == 0

        killed_at = cluster.kill(0)
        connector.hold = None  # the channel takes posts again
        connector.release.set()
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            await turn  # its connection died with the process

        await until(lambda: connector.channel_posts(reference), what="the notification in the channel")
        print(f"\nTeams: notification posted in the channel {time.monotonic() - killed_at:.2f} s after the kill "
              f"(by the surviving instance; {connector.refused_channel_posts} refused attempt(s) before)")
        await cluster.start(0)  # back after its supervisor restarts it: it must not post it again
        await cluster.wait_ready(0)
        await until(lambda: _zero(pending_outbox(database_url)), what="the outbox to be empty")
        assert connector.channel_posts(reference) == 1
        assert [row["reference"] for row in await query(database_url, "SELECT reference FROM cases")] == [reference]
        assert_no_report_content_in_logs(cluster)
    except BaseException:
        dump_logs(cluster)
        raise
    finally:
        connector.release.set()
        if turn is not None and not turn.done():
            turn.cancel()
        await http.close()
        await cluster.stop_all()
        await connector.stop()


# -- 3. PostgreSQL restarted during traffic ------------------------------------------------------------

class PrivatePostgres:
    """A PostgreSQL server of this test's own (initdb + pg_ctl, run as the `postgres` OS user because
    initdb refuses root), on a free loopback port, trusting local connections."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        # Not in tmp_path: pytest's directories are private to root, the server runs as `postgres`.
        self.root = Path(tempfile.mkdtemp(prefix="meldbot-faults-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, timeout: float = 60) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*as_postgres, *command], capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{command[0]} failed: {result.stdout}\n{result.stderr}\n{self.log()}"

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-3000:]
        except (FileNotFoundError, PermissionError):
            return ""

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-instructions")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres():
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.postgres
async def test_postgres_restarted_during_a_teams_dialogue_the_reporter_hears_not_saved_then_it_is_saved(
        private_postgres, keys, tmp_path):
    connector = HoldingConnector()
    await connector.start()
    cluster = LocalCluster(tmp_path / "cluster", private_postgres.url, settings=teams_settings(keys), instances=1,
                           connector_token=CONNECTOR_TOKEN, outbox_lease=LEASE_S)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    url = cluster.instance(0).url
    try:
        await cluster.start(0)
        await cluster.wait_ready(0)
        await say(http, keys, connector, url, STORY, SUMMARY)

        private_postgres.stop("fast")
        answer = await say(http, keys, connector, url, "verzenden", NOT_SAVED)
        assert not REFERENCE.search(answer)  # never a false confirmation
        # The answer's error code is the one the operator finds in the log.
        code = re.search(r"Foutcode (\w+)", answer)
        assert code and f"error={code.group(1)}" in cluster.instance(0).log_text(), answer
        await until(lambda: _not_ready(cluster, 0), what="/readyz to say the database is away")
        assert cluster.instance(0).running

        private_postgres.start()
        # The same process, not restarted: the next message is answered and the report saved.
        answer = await say(http, keys, connector, url, "verzenden", SAVED)
        reference = REFERENCE.search(answer).group(0)
        assert cluster.instance(0).running and cluster.instance(0).exits == []
        cases = await query(private_postgres.url, "SELECT reference FROM cases")
        assert [row["reference"] for row in cases] == [reference]
        await until(lambda: connector.channel_posts(reference), what="the notification in the channel")
        await until(lambda: _zero(pending_outbox(private_postgres.url)), what="the outbox to be empty")
        assert connector.channel_posts(reference) == 1
        await cluster.wait_ready(0)
        assert "Traceback" not in cluster.instance(0).log_text()
        assert_no_report_content_in_logs(cluster)
        assert await cluster.stop(0) == 0
    except BaseException:
        dump_logs(cluster)
        print("--- PostgreSQL ---\n" + private_postgres.log())
        raise
    finally:
        await http.close()
        await cluster.stop_all()
        await connector.stop()


async def _not_ready(cluster: LocalCluster, i: int) -> bool:
    body = await cluster.readyz(i)
    return body is not None and body.get("database") != "ok"

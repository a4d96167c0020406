"""The outbox with several workers on one PostgreSQL: rows claimed with SKIP LOCKED, workers woken by
NOTIFY across processes, a backlog delivered once and in case order when one worker is killed."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select

from bot.devtools.localserver import free_port
from bot.workers.outbox import OutboxWorker
from dialogs import Reply
from storage import repo
from storage.models import OutboxMessage
from storage.notify import OutboxListener
from test_leader import on_postgres, until
from test_storage import T0, make_case

pytestmark = on_postgres

ROOT = Path(__file__).resolve().parents[1]
PROCESS = ROOT / "tests" / "support" / "outbox_process.py"


def room_message(text: str) -> dict:
    return {"replies": [{"text": text}]}


class Homeserver:
    """An HTTP endpoint that takes messages like Matrix's `PUT /send/{txnId}`: a resend under a known
    transaction ID gets the first event ID back and is not shown twice. It can hold one request of a
    chosen sender unanswered (so that sender can be killed in the middle of a send)."""

    def __init__(self, hold_sender: str | None = None, hold_after: int = 0):
        self.arrivals: list[tuple[str, str, str]] = []  # (txn, text, sender), in arrival order
        self.events: dict[str, str] = {}
        self.sent: Counter[str] = Counter()
        self.hold_sender, self.hold_after = hold_sender, hold_after
        self.held = asyncio.Event()
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _send(self, request: web.Request) -> web.Response:
        txn, body = request.match_info["txn"], await request.json()
        self.arrivals.append((txn, body["text"], body["worker"]))
        event = self.events.setdefault(txn, f"$event{len(self.events)}")
        self.sent[body["worker"]] += 1
        sent = self.sent[body["worker"]]
        if body["worker"] == self.hold_sender and sent == self.hold_after and not self.held.is_set():
            self.held.set()
            await asyncio.Event().wait()  # never answered: its sender is killed meanwhile
        return web.json_response({"event_id": event})

    async def __aenter__(self) -> "Homeserver":
        app = web.Application()
        app.router.add_put("/send/{txn}", self._send)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_two_workers_claiming_at_once_take_different_rows_without_waiting(sessions):
    async with sessions() as session, session.begin():
        for n in range(2):
            await repo.enqueue_message(session=session, kind="room_message", platform="hook", destination="room",
                                       payload=room_message(f"m{n}"), now=T0)
    lease = dt.timedelta(seconds=60)
    async with sessions() as first, first.begin():
        mine = await repo.claim_due_messages(session=first, now=T0, lease=lease, limit=1)
        # The first claim's transaction is still open, its row locked: the second claim skips that
        # row instead of waiting for the first transaction to end.
        async with sessions() as second, second.begin():
            theirs = await asyncio.wait_for(
                repo.claim_due_messages(session=second, now=T0, lease=lease, limit=5), timeout=10)
    assert len(mine) == 1 and len(theirs) == 1 and mine[0].id != theirs[0].id


class Recording:
    platform = "hook"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def coordinator_destination(self) -> str:
        return "room"

    async def post_in_room(self, destination: str, reply: Reply, idempotency_key: str) -> str:
        self.sent.append(reply.text)
        return f"$e{len(self.sent)}"


async def test_a_message_queued_by_another_instance_wakes_a_listening_worker_at_once(sessions, database_url):
    recording = Recording()
    # Neither the worker's own poll (an hour) nor an in-process wake: only the notification can wake it.
    worker = OutboxWorker(sessions=sessions, adapters={"hook": recording}, language="nl", timezone=dt.timezone.utc,
                          idle_poll=3600, listen_poll=3600)
    worker.listener = OutboxListener(database_url, worker.wake)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.listener.run(stop)), asyncio.create_task(worker.run(stop))]
    try:
        await until(lambda: worker.listener.listening and worker.waiting and not worker._wake.is_set())
        async with sessions() as session, session.begin():
            await repo.enqueue_message(session=session, kind="room_message", platform="hook", destination="room",
                                       payload=room_message("nieuw"), now=dt.datetime.now(dt.timezone.utc))
        await until(lambda: recording.sent == ["nieuw"])
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert worker.listener.listening is False


CASES, PER_CASE = 100, 100


async def _start_worker(database_url: str, homeserver: Homeserver, name: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROCESS), database_url, homeserver.url, name, "3",
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    assert line.strip() == b"listening", f"worker {name} did not start: {line!r}"
    return process


async def test_a_backlog_of_ten_thousand_is_delivered_once_in_case_order_when_a_worker_is_killed(
        sessions, database_url):
    async with sessions() as session, session.begin():
        cases = [await make_case(session, user=f"@r{n}:example.org") for n in range(CASES)]
    async with Homeserver(hold_sender="w1", hold_after=300) as homeserver:
        workers = [await _start_worker(database_url, homeserver, f"w{n}") for n in range(3)]
        try:
            now = dt.datetime.now(dt.timezone.utc)
            keys: dict[str, tuple[int, int]] = {}
            # Queued while all three wait (an hour's poll): NOTIFY at this commit wakes them.
            async with sessions() as session, session.begin():
                for seq in range(PER_CASE):
                    for index, case in enumerate(cases):
                        queued = await repo.enqueue_message(
                            session=session, kind="room_message", platform="hook", destination="room",
                            payload=room_message(f"{index}:{seq}"), now=now, case_id=case.id)
                        keys[queued.idempotency_key] = (index, seq)
            try:
                await asyncio.wait_for(homeserver.held.wait(), timeout=120)
            except TimeoutError:
                raise AssertionError(f"no send to hold: {Counter(s for _, _, s in homeserver.arrivals)}") from None
            os.kill(workers[1].pid, signal.SIGKILL)  # in the middle of a send the homeserver received
            assert await workers[1].wait() == -signal.SIGKILL

            async def pending() -> int:
                async with sessions() as session:
                    return await repo.count_pending_messages(session=session)

            deadline = asyncio.get_running_loop().time() + 300
            while await pending():
                assert asyncio.get_running_loop().time() < deadline, "backlog not delivered in time"
                await asyncio.sleep(0.2)
        finally:
            for process in workers:
                if process.returncode is None:
                    process.kill()
                    await process.wait()

    arrivals = homeserver.arrivals
    assert set(txn for txn, _, _ in arrivals) == set(keys), "every message reached the homeserver"
    repeated = [txn for txn, count in Counter(txn for txn, _, _ in arrivals).items() if count > 1]
    # Only the send the killed worker had in flight was sent again, under its own transaction ID
    # (so the homeserver showed it once); nothing else twice.
    assert len(repeated) == 1 and {sender for txn, _, sender in arrivals if txn == repeated[0]} >= {"w1"}
    assert len(set(homeserver.events.values())) == CASES * PER_CASE
    shown: dict[int, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for txn, text, _ in arrivals:
        if txn not in seen:
            seen.add(txn)
            index, seq = map(int, text.split(":"))
            assert keys[txn] == (index, seq)
            shown[index].append(seq)
    assert all(shown[index] == list(range(PER_CASE)) for index in range(CASES)), "a case's messages kept their order"
    senders = Counter(sender for _, _, sender in arrivals)
    assert set(senders) == {"w0", "w1", "w2"}, f"all three workers delivered: {senders}"
    async with sessions() as session:
        delivered = await session.scalar(select(func.count()).select_from(OutboxMessage)
                                         .where(OutboxMessage.delivered_at.is_not(None)))
    assert delivered == CASES * PER_CASE

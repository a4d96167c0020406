"""Leadership: one instance on PostgreSQL runs the single-instance work, another takes over when it
goes; on SQLite a second instance refuses to start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import asyncpg
import pytest

from bot.app import build
from bot.config import Settings
from bot.workers.leader import InstanceLock, InstanceRunning, PostgresLeadership
from storage.db import asyncpg_dsn
from helpers import TEST_MASTER_KEY
from stack import RecordingPlatform
from storage.crypto import encode_key
from test_cli import ROOT, _free_port, write_config


async def until(condition, timeout: float = 20.0) -> None:
    """Wait for `condition()` to hold, checking often; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


#: Leadership by advisory lock is PostgreSQL's: these tests get a fresh PostgreSQL database.
on_postgres = pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                      indirect=True)


class Work:
    """What the leader's hooks did, in order."""

    def __init__(self, fail_first: int = 0):
        self.events: list[str] = []
        self.fail_first = fail_first

    async def lead(self) -> None:
        if self.fail_first:
            self.fail_first -= 1
            self.events.append("lead failed")
            raise RuntimeError("homeserver unreachable")
        self.events.append("lead")

    async def follow(self) -> None:
        self.events.append("follow")


@on_postgres
async def test_one_instance_leads_and_another_takes_over_when_it_ends(database_url):
    first, second = PostgresLeadership(database_url, poll=0.05), PostgresLeadership(database_url, poll=0.05)
    work_a, work_b = Work(), Work()
    await first.begin(work_a.lead, work_a.follow)
    await second.begin(work_b.lead, work_b.follow)
    assert (first.is_leading(), second.is_leading()) == (True, False)
    assert work_a.events == ["lead"] and work_b.events == []
    stop = asyncio.Event()
    runs = [asyncio.create_task(first.run(stop)), asyncio.create_task(second.run(stop))]
    try:
        await asyncio.sleep(0.3)  # several polls: the standby keeps trying, and keeps failing
        assert not second.is_leading() and work_b.events == []
        await first.end()
        await until(second.is_leading)
        assert work_a.events == ["lead", "follow"] and work_b.events == ["lead"]
    finally:
        stop.set()
        await asyncio.gather(*runs)
        await second.end()
    assert work_b.events == ["lead", "follow"]


@on_postgres
async def test_a_leader_whose_connection_breaks_stops_leading_before_another_leads(database_url):
    changes: list[tuple[str, bool]] = []
    first = PostgresLeadership(database_url, poll=0.05, on_change=lambda on: changes.append(("a", on)))
    second = PostgresLeadership(database_url, poll=0.05, on_change=lambda on: changes.append(("b", on)))
    work_a, work_b = Work(), Work()
    await first.begin(work_a.lead, work_a.follow)
    await second.begin(work_b.lead, work_b.follow)
    stop = asyncio.Event()
    runs = [asyncio.create_task(first.run(stop)), asyncio.create_task(second.run(stop))]
    try:
        leader_pid = first._connection.get_server_pid()
        admin = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", leader_pid)
        finally:
            await admin.close()
        await until(lambda: second.is_leading() and not first.is_leading())
        # The old leader stood down (its work stopped) before the new one started its own.
        assert changes.index(("a", False)) < changes.index(("b", True))
        assert work_a.events == ["lead", "follow"] and work_b.events == ["lead"]
        await until(lambda: first._connection is not None)  # a standby again, competing
        assert not first.is_leading()
    finally:
        stop.set()
        await asyncio.gather(*runs)
        await first.end()
        await second.end()


@on_postgres
async def test_leader_work_that_fails_to_start_lets_the_lock_go(database_url):
    holder = PostgresLeadership(database_url, poll=0.05)
    await holder.begin(Work().lead, Work().follow)
    flaky = PostgresLeadership(database_url, poll=0.05, retry=0.05)
    work = Work(fail_first=1)
    await flaky.begin(work.lead, work.follow)
    assert not flaky.is_leading()
    stop = asyncio.Event()
    run = asyncio.create_task(flaky.run(stop))
    try:
        await holder.end()
        await until(flaky.is_leading)
        # The failed start was cleaned up and the lock released; the next try succeeded.
        assert work.events == ["lead failed", "follow", "lead"]
    finally:
        stop.set()
        await run
        await flaky.end()


async def test_a_database_that_is_down_is_no_leadership_and_no_crash():
    leadership = PostgresLeadership(f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/nowhere", poll=0.05,
                                    connect_timeout=1)
    work = Work()
    await leadership.begin(work.lead, work.follow)
    assert not leadership.is_leading() and work.events == []
    await leadership.end()


@dataclass
class SingleInstancePlatform(RecordingPlatform):
    """A platform only the leader may run (as Matrix is)."""

    single_instance: bool = True
    running: bool = False
    starts: int = 0

    async def start(self, bot) -> None:
        self.bot, self.running = bot, True
        self.starts += 1

    async def stop(self) -> None:
        self.running = False


def settings_for(database_url: str) -> Settings:
    return Settings(organisation={"name": "Gemeente Testdam"}, database={"url": database_url},
                    web={"public_url": "http://meldbot.test"}, privacy={"key": encode_key(TEST_MASTER_KEY)})


@on_postgres
async def test_only_the_leader_runs_the_single_instance_platform_and_the_timers(database_url):
    apps, platforms = [], []
    for _ in range(2):
        platform, shared = SingleInstancePlatform(coordinators={"coco"}), RecordingPlatform(platform="web")
        app = await build(settings_for(database_url), {"chat": platform, "web": shared},
                          leadership=PostgresLeadership(database_url, poll=0.05))
        await app.start(web_server=False)
        apps.append(app)
        platforms.append((platform, shared))
    first, second = apps
    try:
        assert [p.running for p, _ in platforms] == [True, False]
        assert all(shared.bot is not None for _, shared in platforms)  # the rest runs everywhere
        assert "chat" in first.worker.adapters and "chat" not in second.worker.adapters
        assert len(first._leader_tasks) == 1 and not second._leader_tasks  # the timer worker
        assert (await second.readiness.check())[1]["leader"] is False
        # A report through the standby: its notification for the leader's platform waits for the leader.
        for text in ("Een man schold me net uit aan de balie en dreigde me te slaan", "1 2", "verzenden"):
            await second.engine.handle(inbound("anna", text))
        await until(lambda: len(platforms[0][0].room) == 1
                    and len(platforms[0][1].room) + len(platforms[1][1].room) == 1)
        await first.stop()
        await until(lambda: platforms[1][0].running)
        assert "chat" in second.worker.adapters and len(second._leader_tasks) == 1
        assert (await second.readiness.check())[1]["leader"] is True
    finally:
        for app in apps:
            if not app.stop_event.is_set():
                await app.stop()
    assert platforms[1][0].room == []  # the notification went out once, through the first leader
    assert len(platforms[0][1].room) + len(platforms[1][1].room) == 1  # elsewhere by either instance, once


def inbound(user: str, text: str):
    from bot.adapters.contract import InboundMessage

    return InboundMessage(platform="web", conversation=f"dm-{user}", sender=user, text=text,
                          event_id=f"{user}-{time.monotonic_ns()}", address={"user": user})


def test_a_second_instance_on_one_sqlite_database_refuses(tmp_path):
    database = tmp_path / "one.db"
    url = f"sqlite+aiosqlite:///{database}"
    first = InstanceLock(url)
    first.acquire()
    try:
        with pytest.raises(InstanceRunning, match=f"pid {os.getpid()}.*SQLite takes one instance"):
            InstanceLock(url).acquire()
    finally:
        first.release()
    again = InstanceLock(url)
    again.acquire()  # freed when the first one ended
    again.release()


def test_meldbot_run_twice_on_one_sqlite_file_exits_2_with_a_message(tmp_path):
    port = _free_port()
    config = write_config(tmp_path, f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path / 'run.db'}"
[web]
listen = "127.0.0.1:{port}"
public_url = "https://meldbot.example.nl"
""")
    environment = {**{k: v for k, v in os.environ.items() if not k.startswith("MELDBOT_")}, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bot.cli", "run", "--config", str(config)]
    process = subprocess.Popen(command, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=environment)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "first instance did not come up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)  # polling for readiness, not waiting out a race
        other_port = _free_port()
        second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                env={**environment, "MELDBOT_WEB__LISTEN": f"127.0.0.1:{other_port}"})
        assert second.returncode == 2
        assert "another Meldbot instance" in second.stderr and f"pid {process.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        process.terminate()
        process.wait(timeout=15)

"""One outbox worker in a process of its own, for tests/test_outbox_cluster.py.

`python tests/support/outbox_process.py DATABASE_URL HOMESERVER_URL NAME LEASE_S` runs an OutboxWorker
(with its PostgreSQL listener, as `meldbot run` has it) that delivers platform "hook" messages to a
homeserver-like HTTP endpoint: `PUT HOMESERVER_URL/send/<idempotency key>` with the message text,
answered with an event ID (a resend under the same key gets the first ID back, as a Matrix transaction
ID does). It prints "listening" once notifications arrive, and polls the outbox only once an hour:
only NOTIFY wakes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (helpers)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout

import storage  # noqa: E402
from bot.adapters.contract import DeliveryError  # noqa: E402
from bot.workers.outbox import OutboxWorker  # noqa: E402
from helpers import TEST_MASTER_KEY  # noqa: E402
from storage.keys import open_vault  # noqa: E402
from storage.notify import OutboxListener  # noqa: E402


class HookPlatform:
    """The part of the adapter contract the outbox uses for room messages."""

    platform = "hook"

    def __init__(self, url: str, name: str):
        self.url = url
        self.name = name
        self.http: aiohttp.ClientSession | None = None

    def coordinator_destination(self) -> str:
        return "room"

    async def post_in_room(self, destination: str, reply, idempotency_key: str) -> str:
        assert self.http is not None
        try:
            async with self.http.put(f"{self.url}/send/{idempotency_key}",
                                     json={"text": reply.text, "worker": self.name}) as response:
                response.raise_for_status()
                return (await response.json())["event_id"]
        except aiohttp.ClientError as error:
            raise DeliveryError(f"homeserver: {type(error).__name__}") from None


async def main(url: str, homeserver: str, name: str, lease: float) -> None:
    engine = storage.create_engine(url)
    vault = await open_vault(engine, TEST_MASTER_KEY)
    sessions = storage.create_sessionmaker(engine, vault)
    platform = HookPlatform(homeserver, name)
    worker = OutboxWorker(sessions=sessions, adapters={"hook": platform}, language="nl", timezone=dt.timezone.utc,
                          lease=dt.timedelta(seconds=lease), idle_poll=3600, listen_poll=3600)
    worker.listener = OutboxListener(url, worker.wake)
    worker.read_first = False  # as bot.app sets it up on PostgreSQL
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as platform.http:
        tasks = [asyncio.create_task(worker.listener.run(stop)), asyncio.create_task(worker.run(stop))]
        while not (worker.listener.listening and worker.waiting and not worker._wake.is_set()):
            await asyncio.sleep(0.01)
        print("listening", flush=True)  # and idle: from here only a notification wakes it
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))

"""Reporter message -> bot answer on one local Synapse: Meldbot next to a bare nio echo bot.

Both bots run against the same private Synapse in the same run; the reporter is a real nio client
in a plain direct chat with each. For Meldbot a turn is a step of a real report (story, ok,
verzenden, repeated); the time is taken to the first message of the answer, as for the echo bot.
Prints median and p95 of both and the ratio. Usage: python bench/matrix_latency.py [--turns N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nio import AsyncClient, RoomMessageText, SyncResponse  # noqa: E402

from bot.app import build  # noqa: E402
from bot.config import DatabaseSettings, MatrixSettings, Settings  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
from bot.adapters.matrix.adapter import MatrixAdapter  # noqa: E402
from bot.devtools.chatclient import ChatClient  # noqa: E402
from bot.devtools.localserver import LocalSynapse  # noqa: E402

DIALOGUE = ["ik werd net uitgescholden aan de balie", "2", "verzenden"]  # story, tick aftercare, send


class EchoBot:
    """The floor: a nio bot that sends every text message straight back."""

    def __init__(self, homeserver: str, account):
        self.client = AsyncClient(homeserver, account.user_id, device_id=account.device_id)
        self.client.restore_login(account.user_id, account.device_id, account.access_token)
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.client.sync(timeout=0, full_state=True)
        self.task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            response = await self.client.sync(timeout=30000)
            if not isinstance(response, SyncResponse):
                continue
            for room_id in response.rooms.invite:
                await self.client.join(room_id)
            for room_id, info in response.rooms.join.items():
                for event in info.timeline.events:
                    if isinstance(event, RoomMessageText) and event.sender != self.client.user_id:
                        await self.client.room_send(room_id, "m.room.message",
                                                    {"msgtype": "m.text", "body": event.body})

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        await self.client.close()


async def measure(reporter: ChatClient, room: str, lines: list[str]) -> list[float]:
    times = []
    for line in lines:
        start_index = len(reporter.received)
        start = time.perf_counter()
        await reporter.send(room, line)
        await reporter.wait_for(lambda r: r.room_id == room, timeout=30, start=start_index)
        times.append(time.perf_counter() - start)
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


async def main(turns: int) -> None:
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with LocalSynapse(root / "synapse") as synapse:
            echo_account = synapse.register("echo")
            bot_account = synapse.register("meldbot")
            reporter = ChatClient(synapse.url, synapse.register("melder"), root / "reporter")
            await reporter.start()
            echo = EchoBot(synapse.url, echo_account)
            await echo.start()
            settings = Settings(
                database=DatabaseSettings(url=f"sqlite+aiosqlite:///{root / 'meldbot.db'}"),
                # One person reporting as fast as the echo bot answers: the per-person limits are lifted.
                limits={"messages_per_minute": 1000, "reports_per_day": 1000},
                matrix=MatrixSettings(homeserver=synapse.url, user_id=bot_account.user_id,
                                      access_token=bot_account.access_token, device_id=bot_account.device_id,
                                      store_dir=root / "bot-store"),
            )
            app = await build(settings, {"matrix": MatrixAdapter(settings=settings.matrix,
                                                                 store_dir=settings.matrix.store_dir,
                                                                 language="nl")})
            await app.start(web_server=False)
            try:
                echo_room = await reporter.open_dm(echo_account.user_id, encrypted=False)
                bot_room = await reporter.open_dm(bot_account.user_id, encrypted=False)
                lines = [DIALOGUE[i % len(DIALOGUE)] for i in range(turns)]
                # Warm-up (first messages set up caches and connections on both sides).
                await measure(reporter, echo_room, ["warm-up"] * 3)
                await measure(reporter, bot_room, DIALOGUE)
                ours, echoed = [], []
                for line in lines:  # interleaved, so both see the same machine load
                    echoed += await measure(reporter, echo_room, [line])
                    ours += await measure(reporter, bot_room, [line])
            finally:
                await app.stop()
                await echo.stop()
                await reporter.stop()
    med_o, med_e = statistics.median(ours) * 1000, statistics.median(echoed) * 1000
    p95_o, p95_e = p95(ours) * 1000, p95(echoed) * 1000
    print(f"Matrix round trip, {turns} turns each, one local Synapse")
    print(f"  meldbot   median {med_o:7.1f} ms   p95 {p95_o:7.1f} ms")
    print(f"  echo bot  median {med_e:7.1f} ms   p95 {p95_e:7.1f} ms")
    print(f"  ratio (meldbot / echo)  median {med_o / med_e:4.2f}x   p95 {p95_o / p95_e:4.2f}x   (target median <= 1.2x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    asyncio.run(main(parser.parse_args().turns))

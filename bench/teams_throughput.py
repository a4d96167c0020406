"""Teams endpoint throughput: Meldbot doing real dialogue turns next to a stock botbuilder echo bot.

Both run the real CloudAdapter behind an aiohttp route with JWT validation on (keys served on
loopback) and answer through a local fake Bot Connector. Load: N activities, C concurrent.
Each bot runs in its own process (the load generator and the fake connector in this one): first the
stock echo bot without Meldbot's workarounds, then Meldbot (workarounds on, SQLite, outbox worker).
Prints activities/s, median and p95 latency for both, and the ratio.
Usage: python bench/teams_throughput.py [--activities 2000] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from botbuilder.core import ActivityHandler, MessageFactory  # noqa: E402
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication  # noqa: E402

from bot.app import build  # noqa: E402
from bot.config import DatabaseSettings, Settings, TeamsSettings, WebSettings  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
from bot.devtools.localserver import free_port  # noqa: E402
from bot.adapters.teams import fixes  # noqa: E402
from bot.adapters.teams.adapter import TeamsAdapter  # noqa: E402
from teams_harness import (  # noqa: E402
    APP_ID, CONNECTOR_TOKEN, TENANT, ChannelKeys, FakeConnector, LocalCredentialsFactory, activity)

DIALOGUE = ["ik werd net uitgescholden aan de balie", "2", "verzenden"]  # story, tick aftercare, send


class EchoBot(ActivityHandler):
    async def on_message_activity(self, turn_context):
        await turn_context.send_activity(MessageFactory.text(turn_context.activity.text))


async def load(url: str, connector: FakeConnector, keys: ChannelKeys, total: int, concurrency: int):
    token = keys.token(connector.url, expires_in=3600)
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker(number: int, session: aiohttp.ClientSession) -> None:
        turn = 0
        for _ in counter:
            text = DIALOGUE[turn % len(DIALOGUE)]
            turn += 1
            body = activity(connector.url, text, user=f"user{number}")
            start = time.perf_counter()
            async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                if response.status not in (200, 201):
                    raise RuntimeError(f"status {response.status}")
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(i, session) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    return total / elapsed, latencies


async def serve_stock(port: int, metadata_url: str, with_fixes: bool = False) -> None:
    """The stock echo bot, as any botbuilder sample runs it (optionally with Meldbot's two workarounds)."""
    fixes.apply() if with_fixes else fixes.revert()
    config = SimpleNamespace(APP_ID=APP_ID, APP_PASSWORD="", APP_TENANTID=TENANT, APP_TYPE="SingleTenant",
                             TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL=metadata_url,
                             TO_BOT_FROM_CHANNEL_TOKEN_ISSUER="https://api.botframework.com",
                             TO_CHANNEL_FROM_BOT_LOGIN_URL="https://login.microsoftonline.com/" + TENANT,
                             TO_CHANNEL_FROM_BOT_OAUTH_SCOPE="https://api.botframework.com",
                             OAUTH_URL="https://api.botframework.com")
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(
        config, credentials_factory=LocalCredentialsFactory()))
    bot = EchoBot()

    async def messages(request: web.Request) -> web.Response:
        return await adapter.process(request, bot)

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def serve_meldbot(port: int, metadata_url: str, folder: Path) -> None:
    """Meldbot with its Teams adapter, SQLite and the outbox worker."""
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{folder / 'bench.db'}"),
        web=WebSettings(listen=f"127.0.0.1:{port}"),
        teams=TeamsSettings(app_id=APP_ID, tenant_id=TENANT, openid_metadata_url=metadata_url,
                            store_dir=folder / "teams"),
        # Each load worker is one person sending as fast as it can: the per-person rate limit would
        # answer most turns with silence, which is cheaper than a turn and would flatter the figure.
        limits={"messages_per_minute": 1000, "reports_per_day": 1000},
    )
    adapter = TeamsAdapter(settings=settings.teams, store_dir=settings.teams.store_dir, language="nl",
                           credentials_factory=LocalCredentialsFactory())
    app = await build(settings, {"teams": adapter})
    await app.start(web_server=True)
    if os.environ.get("MELDBOT_BENCH_PROFILE"):  # where the CPU goes, written when stopped
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        profiler.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(15, stop.set)
        await stop.wait()
        profiler.stop()
        Path(os.environ["MELDBOT_BENCH_PROFILE"]).write_text(profiler.output_text(unicode=False, color=False, show_all=os.environ.get("MELDBOT_BENCH_PROFILE_ALL") == "1"))
        return
    await asyncio.Event().wait()


async def measure(kind: str, connector: FakeConnector, keys: ChannelKeys, total: int, concurrency: int,
                  folder: Path):
    """Run one bot in its own process (its own core) and load it from this one."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", kind, "--port", str(port), "--metadata", keys.metadata_url,
        "--folder", str(folder), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "MELDBOT_BENCH_CONNECTOR_TOKEN": CONNECTOR_TOKEN})
    try:
        url = f"http://127.0.0.1:{port}/api/messages"
        async with aiohttp.ClientSession() as session:
            for _ in range(600):  # wait until the bot listens (at most 60 s)
                try:
                    async with session.get(url) as response:
                        await response.read()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        await load(url, connector, keys, concurrency * 3, concurrency)  # warm-up
        return await load(url, connector, keys, total, concurrency)
    finally:
        process.terminate()
        await process.wait()


def row(name: str, rate: float, latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    median = statistics.median(ordered) * 1000
    p95 = ordered[int(0.95 * (len(ordered) - 1))] * 1000
    print(f"  {name:<28} {rate:7.1f} activities/s   median {median:6.1f} ms   p95 {p95:6.1f} ms")
    return rate, median, p95


async def main(total: int, concurrency: int) -> None:
    configure_logging("ERROR")
    keys = ChannelKeys()
    connector = FakeConnector()
    await connector.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            stock_result = await measure("stock", connector, keys, total, concurrency, Path(folder))
            fixed_result = await measure("stock-fixed", connector, keys, total, concurrency, Path(folder))
            ours_result = await measure("meldbot", connector, keys, total, concurrency, Path(folder))
    finally:
        await connector.stop()
        keys.close()
    print(f"Teams endpoint, {total} activities, {concurrency} concurrent, JWT validation on")
    s = row("stock botbuilder echo bot", *stock_result)
    row("echo bot + our workarounds", *fixed_result)
    o = row("meldbot (dialogue turns)", *ours_result)
    print(f"  ratio (meldbot / echo)       throughput {o[0] / s[0]:4.2f}x   median {o[1] / s[1]:4.2f}x"
          f"   (target throughput >= 2x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--serve", choices=["stock", "stock-fixed", "meldbot"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--metadata", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve in ("stock", "stock-fixed"):
        configure_logging("ERROR")
        asyncio.run(serve_stock(arguments.port, arguments.metadata, arguments.serve == "stock-fixed"))
    elif arguments.serve == "meldbot":
        configure_logging("ERROR")
        asyncio.run(serve_meldbot(arguments.port, arguments.metadata, Path(arguments.folder)))
    else:
        asyncio.run(main(arguments.activities, arguments.concurrency))

"""`meldbot demo`: a private Synapse, the bot, and the reporter's chat in the terminal.

Everything runs on 127.0.0.1 from one folder (`./demo-data` by default) and is reused on the next
run: the homeserver, the accounts, the coordinator room and the reporter's encrypted direct chat.
The reporter talks to the bot through a real Matrix client connection; the coordinator room's
messages are shown as they arrive. Element Desktop can log in with the printed accounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
from pathlib import Path

from bot.app import build
from bot.config import DatabaseSettings, MatrixSettings, OrganisationSettings, Settings, WebSettings
from bot.adapters.terminal import read_lines
from bot.adapters.matrix.adapter import MatrixAdapter
from bot.devtools.chatclient import ChatClient, Received
from bot.devtools.localserver import Account, LocalSynapse, free_port

SERVER_NAME = "meldbot.demo"
ACCOUNTS = {"bot": "meldbot", "reporter": "melder", "coordinator": "coordinator"}


def _port(preferred: int) -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


#: A demo line starting with one of these is written by the coordinator, in their direct chat.
COORDINATOR_COMMANDS = ("/coordinator", "/coördinator")


class Demo:
    """The demo's processes and clients; `run` drives it, `close` leaves nothing behind."""

    def __init__(self, folder: Path, out=None, stdin=None):
        self.folder = folder.resolve()
        self.out = out or sys.stdout
        self.stdin = stdin or sys.stdin
        self.state_file = self.folder / "demo.json"
        self.synapse: LocalSynapse | None = None
        self.app = None
        self.clients: list[ChatClient] = []

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _load(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def _save(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state, indent=1))
        self.state_file.chmod(0o600)

    async def setup(self) -> dict:
        """Start the homeserver and the bot; create accounts and rooms on the first run."""
        self.folder.mkdir(parents=True, exist_ok=True)
        state = self._load()
        port = state.get("port") or _port(8008)
        self.synapse = LocalSynapse(self.folder / "synapse", port=port, server_name=SERVER_NAME)
        await asyncio.to_thread(self.synapse.start)
        state["port"] = port
        if "accounts" not in state:
            state["accounts"] = {}
            for role, localpart in ACCOUNTS.items():
                account = self.synapse.register(localpart, password=f"{localpart}-demo")
                state["accounts"][role] = account.__dict__
            self._save(state)
        accounts = {role: Account(**data) for role, data in state["accounts"].items()}
        reporter = ChatClient(self.synapse.url, accounts["reporter"], self.folder / "reporter-store")
        coordinator = ChatClient(self.synapse.url, accounts["coordinator"], self.folder / "coordinator-store")
        self.clients = [reporter, coordinator]
        for client in self.clients:
            await client.start()
        if "coordinator_room" not in state:
            state["coordinator_room"] = await coordinator.create_room("Coördinatie agressie",
                                                                      invite=[accounts["bot"].user_id])
            self._save(state)
        web_port = state.get("web_port") or _port(8080)
        state["web_port"] = web_port
        settings = Settings(
            organisation=OrganisationSettings(name="Gemeente Demodam"),
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{self.folder / 'meldbot.db'}"),
            web=WebSettings(listen=f"127.0.0.1:{web_port}", public_url=f"http://127.0.0.1:{web_port}"),
            matrix=MatrixSettings(homeserver=self.synapse.url, user_id=accounts["bot"].user_id,
                                  access_token=accounts["bot"].access_token, device_id=accounts["bot"].device_id,
                                  store_dir=self.folder / "bot-store", coordinator_room=state["coordinator_room"]),
        )
        adapter = MatrixAdapter(settings=settings.matrix, store_dir=settings.matrix.store_dir, language="nl")
        self.app = await build(settings, {"matrix": adapter})
        await self.app.start(web_server=True)
        if "dm" not in state:
            state["dm"] = await reporter.open_dm(accounts["bot"].user_id, encrypted=True)
        if "coordinator_dm" not in state:
            state["coordinator_dm"] = await coordinator.open_dm(accounts["bot"].user_id, encrypted=True)
        self._save(state)
        self.reporter, self.coordinator = reporter, coordinator
        self.state = state
        return state

    def banner(self) -> None:
        accounts = self.state["accounts"]
        self.print("Meldbot demo")
        self.print(f"  Homeserver:  {self.synapse.url}   (server name {SERVER_NAME}, no federation)")
        self.print("  Accounts, for Element Desktop (set the homeserver above):")
        for role in ("reporter", "coordinator"):
            self.print(f"    {role:<12} {accounts[role]['user_id']}   password {accounts[role]['password']}")
        self.print(f"    {'bot':<12} {accounts['bot']['user_id']}")
        self.print(f"  Case pages:  http://127.0.0.1:{self.state['web_port']}/cases/<reference>")
        self.print(f"  Data:        {self.folder}")
        self.print()
        self.print("You are the reporter, in an encrypted direct chat with the bot. Tell it what happened,")
        self.print("for example: ik werd net uitgescholden aan de balie. 'help' lists the commands, Ctrl-C stops.")
        self.print("'/coordinator login' writes 'login' as the coordinator, in the coordinator's own direct chat")
        self.print("with the bot: open the link it answers with in a browser to follow the case up.")
        self.print()

    def show(self, item: Received) -> None:
        if item.room_id == self.state["coordinator_room"]:
            thread = (item.content.get("m.relates_to") or {}).get("rel_type") == "m.thread"
            prefix = "  [coördinatorkanaal, draad] " if thread else "  [coördinatorkanaal] "
            self.print("\n".join(prefix + line if i == 0 else " " * len(prefix) + line
                                 for i, line in enumerate(item.body.splitlines())))
        elif item.room_id == self.state.get("coordinator_dm"):
            self.print("\n".join(("  [coördinator, privé] " if i == 0 else "                       ") + line
                                 for i, line in enumerate(item.body.splitlines())))
        elif item.room_id == self.state["dm"]:
            self.print("\n".join(("meldbot> " if i == 0 else "         ") + line if line else ""
                                 for i, line in enumerate(item.body.splitlines())))
        self.print()

    async def _echo(self, client: ChatClient, rooms: set[str]) -> None:
        seen = 0
        while True:
            async with client._arrived:
                while len(client.received) == seen:
                    await client._arrived.wait()
                new, seen = client.received[seen:], len(client.received)
            for item in new:
                if item.room_id in rooms:
                    self.show(item)

    async def run(self) -> int:
        """The reporter's chat: each line is sent to the bot; answers and the coordinator room are shown."""
        await self.setup()
        self.banner()
        dm = self.state["dm"]
        coordinator_dm = self.state["coordinator_dm"]
        echoes = [asyncio.create_task(self._echo(self.reporter, {dm})),
                  asyncio.create_task(self._echo(self.coordinator, {self.state["coordinator_room"], coordinator_dm}))]
        try:
            async for line in read_lines(self.stdin):
                text = line.strip()
                if not text:
                    continue
                head, _, rest = text.partition(" ")
                if head.lower() in COORDINATOR_COMMANDS and rest.strip():
                    start = len(self.coordinator.received)
                    await self.coordinator.send(coordinator_dm, rest.strip())
                    with contextlib.suppress(asyncio.TimeoutError):
                        await self.coordinator.wait_for(lambda r: r.room_id == coordinator_dm, timeout=30,
                                                        start=start)
                    continue
                start = len(self.reporter.received)
                await self.reporter.send(dm, text)
                # Keep the conversation's pace: the next line goes after the bot answered.
                with contextlib.suppress(asyncio.TimeoutError):
                    await self.reporter.wait_for(lambda r: r.room_id == dm, timeout=30, start=start)
            # End of input: let the coordinator notification arrive before stopping.
            await self.app.worker.drain(timeout=20)
            with contextlib.suppress(asyncio.TimeoutError):
                await self.coordinator.wait_for(lambda r: r.room_id == self.state["coordinator_room"]
                                                and "MB-" in r.body, timeout=10)
            await asyncio.sleep(0)  # let the echo task print what just arrived
        finally:
            for task in echoes:
                task.cancel()
        return 0

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.stop()
        if self.app is not None:
            with contextlib.suppress(Exception):
                await self.app.stop()
        if self.synapse is not None:
            await asyncio.to_thread(self.synapse.stop)


async def run_demo(folder: Path, fresh: bool = False) -> int:
    """Run the demo until end of input or Ctrl-C; always stops the homeserver."""
    if fresh and folder.exists():
        shutil.rmtree(folder)
    demo = Demo(folder)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, main.cancel)
    try:
        return await demo.run()
    except asyncio.CancelledError:
        demo.print("\nStopping the demo ...")
        return 0
    finally:
        await demo.close()

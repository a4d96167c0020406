"""A whole Meldbot as `meldbot run` wires it (bot.app.build), with a recording chat platform,
a hand-moved clock and the case pages served on loopback. Used by the case-work and web tests."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from aiohttp.test_utils import TestClient, TestServer

from bot.app import Meldbot, build
from bot.config import Settings
from bot.adapters.contract import DeliveryError, InboundMessage, Notification
from bot.web.server import create_app
from dialogs import Reply
from helpers import TEST_MASTER_KEY
from storage.crypto import encode_key

_ids = itertools.count()
LINK_RE = re.compile(r"https?://\S+/login/[A-Za-z0-9_\-]+")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@dataclass
class RecordingPlatform:
    """A chat platform that records every delivery: per person, the coordinator room and its threads.

    It implements the adapter contract like the console, Matrix and Teams adapters (which have
    their own contract tests); here the point is what the case work sends, and to whom."""

    platform: str = "chat"
    coordinators: set[str] = field(default_factory=set)
    idempotent_sends: bool = False
    to_person: dict[str, list[Reply]] = field(default_factory=dict)
    room: list[tuple[str, Notification]] = field(default_factory=list)
    threads: dict[str, list[str]] = field(default_factory=dict)
    #: Messages of Meldbot's own in the room itself (signals): (destination, text).
    room_posts: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False
    #: The coordinators' room (a test may move it, as a Teams claim with a new code does).
    destination: str = "coordinators"
    #: The platform cannot say who is a coordinator (its membership service is unreachable).
    roster_down: bool = False
    #: People the bot opened a direct chat with (login from the coordinator room).
    opened: list[str] = field(default_factory=list)

    async def start(self, bot) -> None:
        self.bot = bot

    async def stop(self) -> None:
        pass

    def coordinator_destination(self) -> str | None:
        return self.destination

    def is_room(self, target: str) -> bool:
        return target.startswith("#")

    async def is_coordinator(self, user_id: str) -> bool:
        if self.roster_down:
            raise DeliveryError("roster unavailable")
        return user_id in self.coordinators

    async def open_direct_chat(self, address: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise DeliveryError("platform down")
        self.opened.append(address["user"])
        return {"user": address["user"]}

    def routes(self) -> list:
        return []

    async def send_replies(self, address: dict[str, Any], replies: Sequence[Reply], idempotency_key: str) -> str:
        if self.down:
            raise DeliveryError("platform down")
        self.to_person.setdefault(address["user"], []).extend(replies)
        return f"sent-{idempotency_key}"

    async def post_case_notification(self, destination: str, notification: Notification, idempotency_key: str) -> str:
        if self.down:
            raise DeliveryError("platform down")
        root = f"root-{next(_ids)}"
        self.room.append((destination, notification))
        self.threads[root] = []
        return root

    async def post_in_case_thread(self, destination: str, root_id: str, text: str, idempotency_key: str) -> str:
        if self.down:
            raise DeliveryError("platform down")
        self.threads[root_id].append(text)
        return f"thread-{idempotency_key}"

    async def post_in_room(self, destination: str, reply: Reply, idempotency_key: str) -> str:
        if self.down:
            raise DeliveryError("platform down")
        self.room_posts.append((destination, reply.plain()))
        return f"room-{idempotency_key}"

    def texts_to(self, user: str) -> list[str]:
        return [r.plain() for r in self.to_person.get(user, [])]


class Stack:
    """Meldbot (engine, outbox, timers, case pages) over one database, driven by the test."""

    def __init__(self, meldbot: Meldbot, chat: RecordingPlatform, clock: Clock, client: TestClient):
        self.meldbot = meldbot
        self.chat = chat
        self.clock = clock
        self.client = client
        self._clients: list[TestClient] = []

    @classmethod
    async def start(cls, database_url: str, *, followup: dict | None = None, web: dict | None = None,
                    coordinators: Sequence[str] = ("coco",), limits: dict | None = None,
                    organisation: dict | None = None, stats: dict | None = None,
                    now: dt.datetime | None = None) -> "Stack":
        clock = Clock(now or dt.datetime(2026, 11, 23, 9, 15, tzinfo=dt.timezone.utc))  # a Monday, 10:15 in NL
        settings = Settings(
            organisation={"name": "Gemeente Testdam", **(organisation or {})}, database={"url": database_url},
            stats=stats or {},
            web={"public_url": "http://meldbot.test", **(web or {})}, followup=followup or {},
            limits=limits or {}, privacy={"key": encode_key(TEST_MASTER_KEY)},
        )
        chat = RecordingPlatform(coordinators=set(coordinators))
        meldbot = await build(settings, {"chat": chat}, clock=clock)
        await chat.start(meldbot.engine)
        client = TestClient(TestServer(create_app(db_engine=meldbot.db, routes=meldbot.pages.routes(),
                                                  public_url=settings.web.public_url)))
        await client.start_server()
        return cls(meldbot, chat, clock, client)

    async def close(self) -> None:
        for extra in self._clients:
            await extra.session.close()
        await self.client.close()
        await self.meldbot.db.dispose()

    async def say(self, user: str, text: str, name: str | None = None, **extra: Any) -> str:
        """A person writes to the bot in their direct chat; returns the bot's answer."""
        message = InboundMessage(platform="chat", conversation=f"dm-{user}", sender=user, text=text,
                                 event_id=f"ev-{next(_ids)}", sender_name=name or user.title(),
                                 address={"user": user}, **extra)
        return "\n\n".join(r.plain() for r in await self.meldbot.engine.handle(message))

    async def report(self, user: str = "anna", *texts: str) -> str:
        """A whole report; returns its reference (the notification is delivered too)."""
        said = ""
        for text in texts or ("Een man schold me net uit aan de balie en dreigde me te slaan", "1 2", "verzenden"):
            said = await self.say(user, text)
        reference = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", said)
        assert reference, said
        await self.deliver()
        return reference.group(0)

    async def deliver(self) -> int:
        """Let the outbox deliver everything that is due."""
        delivered = 0
        while True:
            done = await self.meldbot.worker.run_once()
            delivered += done
            if not done:
                return delivered

    async def tick(self, **delta: float) -> int:
        """Move the clock, fire due timers and deliver what they queued; returns timers fired."""
        self.clock.advance(**delta)
        fired = await self.meldbot.timers.run_due()
        await self.deliver()
        return fired

    def thread_of(self, reference: str) -> list[str]:
        """The lines posted in a case's thread."""
        for (destination, notification), root in zip(self.chat.room, self.chat.threads):
            if notification.reference == reference:
                return self.chat.threads[root]
        raise AssertionError(f"no notification for {reference}")

    async def login_link(self, user: str = "coco") -> str:
        answer = await self.say(user, "login")
        found = LINK_RE.search(answer)
        assert found, answer
        return found.group(0)

    async def log_in(self, user: str = "coco", client=None) -> None:
        """Log a browser (the test client by default) in through a link from the chat."""
        client = client or self.client
        link = await self.login_link(user)
        path = "/login/" + link.rsplit("/login/", 1)[1]
        page = await client.get(path)
        assert page.status == 200, await page.text()
        token = path.rsplit("/", 1)[1]
        response = await client.post("/login", data={"token": token}, allow_redirects=False)
        assert response.status == 303, await response.text()

    async def another_browser(self) -> TestClient:
        """A second browser (its own cookies) on the same server."""
        client = TestClient(self.client.server)
        await client.start_server()  # already running: only opens the client session
        self._clients.append(client)
        return client

    async def csrf(self, path: str, client=None) -> str:
        page = await (client or self.client).get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert found, await page.text()
        return found.group(1)

    async def act(self, reference: str, action: str, client=None, **fields: str):
        """Post one action form of the case page, with its CSRF token."""
        client = client or self.client
        token = await self.csrf(f"/cases/{reference}", client)
        return await client.post(f"/cases/{reference}", data={"csrf": token, "action": action, **fields},
                                 allow_redirects=False)

"""The World on the recording platform: tests/stack.py's Stack (bot.app.build, hand-moved clock,
case pages on a loopback test server), talked to as the console adapter does (InboundMessage)."""

from __future__ import annotations

import contextlib
import itertools

from aiohttp.test_utils import TestClient, TestServer
from stack import Stack

from bot.adapters.contract import CoordinatorMessage, InboundAttachment, InboundMessage
from bot.app import build
from support.world import COORDINATOR, Note, World

_ids = itertools.count()


class ConsoleWorld(World):
    platform = "console"

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self._room_answers: list[str] = []
        self.stack: Stack | None = None
        #: Direct answers per person (what the console prints); outbox deliveries are in stack.chat.
        self._answers: dict[str, list[str]] = {}

    @property
    def app(self):
        return self.stack.meldbot

    async def start(self, database_url: str) -> ConsoleWorld:
        self.stack = await Stack.start(database_url, coordinators=(COORDINATOR,))
        return self

    async def close(self) -> None:
        if self.stack:
            await self.stack.close()

    async def restart(self) -> None:
        old = self.stack
        settings = old.meldbot.settings
        await old.close()
        meldbot = await build(settings, {"chat": old.chat}, clock=old.clock)
        await old.chat.start(meldbot.engine)
        client = TestClient(TestServer(_app(meldbot, settings)))
        await client.start_server()
        self.stack = Stack(meldbot, old.chat, old.clock, client)

    # -- the reporter ----------------------------------------------------------------------------
    def _message(self, user: str, text: str, event_id: str | None = None, attachments=()) -> InboundMessage:
        return InboundMessage(platform="chat", conversation=f"dm-{user}", sender=user, text=text,
                              event_id=event_id or f"ev-{next(_ids)}", sender_name=self.display_name(user),
                              address={"user": user}, attachments=tuple(attachments))

    async def _handle(self, user: str, message: InboundMessage, until: str | None) -> list[str]:
        said = [r.plain() for r in await self.app.engine.handle(message)]
        self._answers.setdefault(user, []).extend(said)
        if until is not None:
            assert any(until in s for s in said), (until, said)
        return said

    async def say(self, user: str, text: str, until: str | None = None) -> list[str]:
        return await self._handle(user, self._message(user, text), until)

    async def say_twice(self, user, text, until=None):
        message = self._message(user, text)
        return await self._handle(user, message, until), await self._handle(user, message, None)

    async def send_file(self, user, name, data, media_type, until=None):
        attachment = InboundAttachment(filename=name, media_type=media_type, content=data)
        return await self._handle(user, self._message(user, "", attachments=[attachment]), until)

    async def heard(self, user: str) -> list[str]:
        return self._answers.get(user, []) + self.stack.chat.texts_to(user)

    # -- the coordinators ------------------------------------------------------------------------
    async def deliver(self) -> None:
        await self.stack.deliver()

    async def notifications(self) -> list[Note]:
        await self.deliver()
        return [Note(n.reference, n.plain() + "\n" + repr(n), n.link) for _, n in self.stack.chat.room]

    def _root(self, reference: str) -> str:
        for (_, notification), root in zip(self.stack.chat.room, self.stack.chat.threads):
            if notification.reference == reference:
                return root
        raise AssertionError(f"no notification for {reference}")

    async def _coordinator(self, text: str, root: str) -> list[str]:
        message = CoordinatorMessage(platform="chat", destination=self.stack.chat.destination, thread_root=root,
                                     sender=COORDINATOR, text=text, event_id=f"co-{next(_ids)}",
                                     is_coordinator=True, sender_name=self.display_name(COORDINATOR),
                                     address={"user": COORDINATOR})
        answers = [r.plain() for r in await self.app.engine.handle_coordinator(message)]
        if root:
            self.stack.chat.threads[root].extend(answers)  # the adapter posts them in the thread
        else:
            self._room_answers.extend(answers)
        return answers

    async def coordinator_says(self, reference, text, until=None):
        await self.deliver()
        answers = await self._coordinator(text, self._root(reference))
        if until is not None:
            assert any(until in a for a in answers), (until, answers)
        return answers

    async def thread(self, reference: str) -> list[str]:
        await self.deliver()
        return list(self.stack.chat.threads[self._root(reference)])

    async def login_from_room(self):
        before = len(self.stack.chat.texts_to(COORDINATOR))
        answers = await self._coordinator("login", "")
        await self.deliver()
        return answers, self.stack.chat.texts_to(COORDINATOR)[before:]

    async def room_texts(self) -> list[str]:
        texts = [n.plain() for _, n in self.stack.chat.room] + list(self._room_answers)
        for lines in self.stack.chat.threads.values():
            texts.extend(lines)
        return texts

    # -- web -------------------------------------------------------------------------------------
    async def http(self, method, path, **kwargs):
        async with self.stack.client.request(method, path, **kwargs) as response:
            return response.status, await response.text()

    # -- outages ---------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def platform_outage(self, user: str):
        self.stack.chat.down = True
        try:
            await self.say(user, "verzenden", until="opgeslagen onder nummer")
            await self.stack.deliver()  # every attempt fails: the notification waits for a retry
            yield
        finally:
            self.stack.chat.down = False
        self.stack.clock.advance(minutes=10)  # past the retry's backoff (the clock is moved by hand)


def _app(meldbot, settings):
    from bot.web.server import create_app

    return create_app(db_engine=meldbot.db, routes=meldbot.pages.routes(), public_url=settings.web.public_url)

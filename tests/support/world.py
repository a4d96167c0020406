"""The one interface every platform's World implements, and what they share (database, web login).

A scenario speaks of people by short names ("anna", "bob"); "coco" is the coordinator. Each World
maps them to its platform's users (fresh Matrix accounts, Teams users, console senders)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

REFERENCE_RE = re.compile(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}")
LOGIN_LINK_RE = re.compile(r"https?://[^\s)\]]+/login/[A-Za-z0-9_\-]+")
STORY = "Een bezoeker schold me net uit aan de balie en noemde me een oplichter"
#: The answers of a whole report: the story (it names kind and place, so the summary follows), send.
REPORT = (STORY, "verzenden")
#: The same with aftercare and "anonymous" (wishes 2 and 6) ticked on the summary.
ANONYMOUS_REPORT = (STORY, "1 2 6", "verzenden")
COORDINATOR = "coco"


def reference_in(texts: list[str] | str) -> str:
    for text in [texts] if isinstance(texts, str) else texts:
        found = REFERENCE_RE.search(text)
        if found:
            return found.group(0)
    raise AssertionError(f"no reference in {texts!r}")


@dataclass(frozen=True)
class Note:
    """A case notification as the coordinators see it in their room or channel."""

    reference: str
    text: str  # everything posted (text, card, formatted body): what to search for leaks
    link: str


@dataclass
class Outage:
    """What a `database_down()` did: how many statements it refused."""

    refused: int = 0
    statements: list[str] = field(default_factory=list)


async def until(condition, timeout: float = 30.0, what: str = "condition"):
    """Wait until `condition()` (sync or async) is true, polling, bounded by `timeout`; returns its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline


async def browser_request(session, cookies: dict[str, str], method: str, url: str, **kwargs) -> tuple[int, str]:
    """A request with cookies kept by hand: aiohttp's jar keeps none from an IP address, nor sends a
    Secure one over http, and the loopback server stands in for an https public URL."""
    headers = dict(kwargs.pop("headers", {}))
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    async with session.request(method, url, headers=headers, **kwargs) as response:
        for name, morsel in response.cookies.items():
            cookies[name] = morsel.value
        return response.status, await response.text()


class World(abc.ABC):
    """Meldbot on one platform and one database, with a reporter side and a coordinator side."""

    platform: str
    app = None  # the running bot.app.Meldbot

    # -- life cycle ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def start(self, database_url: str) -> World: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def restart(self) -> None:
        """Stop the bot and start it again over the same database and platform state."""

    # -- the reporter ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def say(self, user: str, text: str, until: str | None = None) -> list[str]:
        """`user` writes `text` in their direct chat; returns what they see in answer. With `until`, waits
        until an answer containing it has arrived (platforms that answer asynchronously need it)."""

    @abc.abstractmethod
    async def say_twice(self, user: str, text: str, until: str | None = None) -> tuple[list[str], list[str]]:
        """The same platform event delivered twice (a retry, a redelivered sync); what each one got."""

    @abc.abstractmethod
    async def send_file(self, user: str, name: str, data: bytes, media_type: str,
                        until: str | None = None) -> list[str]:
        """`user` sends a file in their direct chat."""

    @abc.abstractmethod
    async def heard(self, user: str) -> list[str]:
        """Everything `user` has received from the bot so far, in their direct chat."""

    async def hears(self, user: str, fragment: str, timeout: float = 30) -> str:
        """Waits (delivering the outbox) until `user` received a message containing `fragment`."""
        found: list[str] = []

        async def arrived() -> bool:
            await self.deliver()
            found[:] = [t for t in await self.heard(user) if fragment in t]
            return bool(found)

        await until(arrived, timeout, f"{user} to hear {fragment!r}")
        return found[0]

    def display_name(self, user: str) -> str:
        """The name the platform gives the bot for `user` (what a case page shows when not anonymous)."""
        return user.title()

    def identities(self, user: str) -> list[str]:
        """Everything that names `user` (what must not leak when the report is anonymous)."""
        return [self.display_name(user)]

    async def report(self, user: str, *texts: str) -> str:
        """A whole report in `user`'s direct chat; returns its reference once the outbox is empty."""
        texts = texts or REPORT
        for index, text in enumerate(texts[:-1]):  # the story gives the summary; a tick gives the tick list
            await self.say(user, text, until="Kijk even of dit klopt" if index == 0 else "Aangevinkt:")
        reference = reference_in(await self.say(user, texts[-1], until="opgeslagen onder nummer"))
        await self.deliver()
        return reference

    # -- the coordinators ------------------------------------------------------------------------
    @abc.abstractmethod
    async def notifications(self) -> list[Note]:
        """Every case notification posted to the coordinators so far (after delivering what is due)."""

    async def notification(self, reference: str, timeout: float = 30) -> Note:
        found: list[Note] = []

        async def posted() -> bool:
            await self.deliver()
            found[:] = [n for n in await self.notifications() if n.reference == reference]
            return bool(found)

        await until(posted, timeout, f"the notification of {reference}")
        return found[0]

    @abc.abstractmethod
    async def coordinator_says(self, reference: str, text: str, until: str | None = None) -> list[str]:
        """The coordinator writes `text` in the thread of the case; returns the bot's answers there."""

    @abc.abstractmethod
    async def thread(self, reference: str) -> list[str]:
        """What the bot posted in the case's thread (after delivering what is due)."""

    async def in_thread(self, reference: str, fragment: str, timeout: float = 30) -> str:
        found: list[str] = []

        async def posted() -> bool:
            found[:] = [t for t in await self.thread(reference) if fragment in t]
            return bool(found)

        await until(posted, timeout, f"{fragment!r} in the thread of {reference}")
        return found[0]

    @abc.abstractmethod
    async def login_from_room(self) -> tuple[list[str], list[str]]:
        """The coordinator asks for a login link in the coordinator room; returns what the room got and
        what arrived in the coordinator's direct chat (once it arrived)."""

    @abc.abstractmethod
    async def room_texts(self) -> list[str]:
        """Everything the bot posted in the coordinator room, its threads included."""

    # -- the web pages ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def http(self, method: str, path: str, **kwargs) -> tuple[int, str]:
        """A request to Meldbot's web server in the coordinator's browser (cookies kept)."""

    async def use_login_link(self, link: str) -> int:
        token = link.rsplit("/login/", 1)[1]
        status, _ = await self.http("GET", f"/login/{token}")
        assert status == 200, status
        status, _ = await self.http("POST", "/login", data={"token": token}, allow_redirects=False)
        return status

    async def case_page(self, reference: str) -> str:
        """The case page as a logged-in coordinator sees it (logging in through the chat first)."""
        _, dm = await self.login_from_room()
        link = LOGIN_LINK_RE.search(dm[-1])
        assert link, dm
        assert await self.use_login_link(link.group(0)) == 303
        status, body = await self.http("GET", f"/cases/{reference}")
        assert status == 200, status
        return body

    # -- outages ---------------------------------------------------------------------------------
    async def deliver(self) -> None:
        """Let the outbox deliver everything that is due."""
        assert await self.app.worker.drain(timeout=60), "the outbox did not empty"

    @contextlib.asynccontextmanager
    async def database_down(self, from_statement: str | None = None) -> AsyncIterator[Outage]:
        """The database refuses every statement (from the first one starting with `from_statement`,
        e.g. "INSERT INTO cases": it goes away in the middle of a transaction) until the block ends."""
        outage = Outage()
        state = {"down": from_statement is None}
        sync_engine = self.app.db.sync_engine

        def refuse(conn, cursor, statement, parameters, context, executemany):
            if not state["down"] and from_statement and statement.lstrip().upper().startswith(from_statement.upper()):
                state["down"] = True
            if state["down"]:
                outage.refused += 1
                outage.statements.append(statement.split("\n", 1)[0][:80])
                raise OperationalError(statement, parameters, ConnectionRefusedError("database down (test)"))

        event.listen(sync_engine, "before_cursor_execute", refuse)
        try:
            yield outage
        finally:
            event.remove(sync_engine, "before_cursor_execute", refuse)

    @abc.abstractmethod
    def platform_outage(self, user: str) -> contextlib.AbstractAsyncContextManager:
        """`user` sends "verzenden" and, once the report is saved, the platform goes away; it is back
        when the block ends (the outbox has not delivered the notification yet)."""

    # -- the database ----------------------------------------------------------------------------
    async def case(self, reference: str):
        from storage import repo

        async with self.app.sessions() as session:
            return await repo.get_case(session=session, reference=reference)

    async def attachments(self, reference: str) -> list:
        from storage import repo

        async with self.app.sessions() as session:
            case = await repo.get_case(session=session, reference=reference)
            return list(await repo.list_attachments(session=session, case_id=case.id))

    async def count(self, model) -> int:
        async with self.app.sessions() as session:
            return await session.scalar(select(func.count()).select_from(model))

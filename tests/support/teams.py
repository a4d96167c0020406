"""The World on Teams: teams_harness.TeamsWorld (the real botbuilder route with JWT validation
against locally served keys, a fake Bot Connector on loopback) over the given database."""

from __future__ import annotations

import contextlib
import re
import uuid

import aiohttp
import teams_harness
from teams_harness import CHANNEL, TEAM, TeamsWorld, activity, shown

from support.world import COORDINATOR, Note, World, browser_request


class TeamsScenarioWorld(World):
    platform = "teams"

    def __init__(self, keys, tmp_path):
        self.teams = _Harness(keys, tmp_path)
        self.browser: aiohttp.ClientSession | None = None
        self.cookies: dict[str, str] = {}

    @property
    def app(self):
        return self.teams.app

    async def start(self, database_url: str) -> TeamsScenarioWorld:
        self.teams.url = database_url
        await self.teams.start()
        await self.teams.set_channel()
        self.teams.connector.team_members[TEAM] = {f"aad-{COORDINATOR}"}
        return self

    async def close(self) -> None:
        if self.browser:
            await self.browser.close()
        await self.teams.close()

    def identities(self, user: str) -> list[str]:
        return [self.display_name(user), f"29:{user}", f"aad-{user}"]

    async def restart(self) -> None:
        from bot.adapters.teams.adapter import TeamsAdapter
        from bot.app import build

        await self.teams.app.stop()
        settings = self.teams.app.settings
        adapter = TeamsAdapter(settings=settings.teams, store_dir=settings.teams.store_dir, language="nl",
                               credentials_factory=teams_harness.LocalCredentialsFactory())
        self.teams.app = await build(settings, {"teams": adapter})
        await self.teams.app.start(web_server=True)

    # -- the reporter ----------------------------------------------------------------------------
    @staticmethod
    def _check(said: list[str], until: str | None) -> list[str]:
        said = [shown(s) for s in said]
        if until is not None:
            assert any(until in s for s in said), (until, said)
        return said

    async def say(self, user, text, until=None):
        return self._check(await self.teams.say(text, user=user), until)

    async def say_twice(self, user, text, until=None):
        body = activity(self.teams.connector.url, text, user=user, activity_id=uuid.uuid4().hex)
        answers = []
        for _ in range(2):
            before = len(self.teams.connector.requests)
            response = await self.teams.post(body)
            assert response.status in (200, 201), response.status
            answers.append([r["activity"].get("text") or "" for r in self.teams.connector.requests[before:]
                            if r["kind"] == "send"])
        return self._check(answers[0], until), self._check(answers[1], None)

    async def send_file(self, user, name, data, media_type, until=None):
        stored = f"auth-{uuid.uuid4().hex}-{name}"
        self.teams.connector.files[stored] = data
        attachments = [{"contentType": media_type, "name": name,
                        "contentUrl": f"{self.teams.connector.url}files/{stored}"}]
        return self._check(await self.teams.say("", user=user, attachments=attachments), until)

    async def heard(self, user):
        return [shown(t) for t in self.teams.connector.texts(f"a:personal-{user}")]

    # -- the coordinators ------------------------------------------------------------------------
    def _posts(self) -> list[dict]:
        return self.teams.channel_posts()

    async def notifications(self):
        await self.deliver()
        notes = []
        for post in self._posts():
            card = (post["activity"].get("attachments") or [{}])[0].get("content") or {}
            urls = [a.get("url") for a in card.get("actions", []) if a.get("url")]
            text = post["activity"].get("text") or ""
            found = re.search(r"MB-[0-9A-Z]{3}-[0-9A-Z]{3}", text)
            notes.append(Note(found.group(0) if found else "", f"{text}\n{post['activity']}",
                              urls[0] if urls else ""))
        return notes

    def _root(self, reference: str) -> str:
        for post in self._posts():
            if reference in (post["activity"].get("text") or ""):
                return post["conversation"]
        raise AssertionError(f"no notification for {reference}")

    async def coordinator_says(self, reference, text, until=None):
        await self.deliver()
        said = await self.teams.say(f"<at>Meldbot</at> {text}", conversation=self._root(reference),
                                    conversation_type="channel", channel=CHANNEL, team=TEAM, user=COORDINATOR)
        return self._check(said, until)

    async def thread(self, reference):
        await self.deliver()
        return [shown(t) for t in self.teams.connector.texts(self._root(reference))]

    async def login_from_room(self):
        chats = set(self.teams.connector.chats)
        before = {c: len(self.teams.connector.texts(c)) for c in chats}
        personal = f"a:personal-{COORDINATOR}"
        before[personal] = len(self.teams.connector.texts(personal))
        said = [shown(s) for s in await self.teams.in_channel("login", user=COORDINATOR)]
        await self.deliver()
        direct = []
        for conversation in set(self.teams.connector.chats) | {personal}:
            direct += [shown(t) for t in self.teams.connector.texts(conversation)[before.get(conversation, 0):]]
        return said, direct

    async def room_texts(self):
        return [shown(r["activity"].get("text") or "") + str(r["activity"]) for r in self.teams.connector.requests
                if r["kind"] in ("create", "send") and r["conversation"].startswith(CHANNEL)]

    # -- web -------------------------------------------------------------------------------------
    async def http(self, method, path, **kwargs):
        if self.browser is None:
            self.browser = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return await browser_request(self.browser, self.cookies, method, f"http://127.0.0.1:{self.teams.port}{path}",
                                     **kwargs)

    # -- outages ---------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def platform_outage(self, user):
        await self.teams.connector.stop()
        try:
            response = await self.teams.post(activity(self.teams.connector.url, "verzenden", user=user))
            assert response.status in (200, 201), response.status
            yield
        finally:
            await self.teams.connector.start()


class _Harness(TeamsWorld):
    """TeamsWorld over a database URL of the test's choosing."""

    url = ""

    @property
    def database_url(self) -> str:
        return self.url

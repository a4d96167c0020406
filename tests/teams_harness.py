"""The Bot Framework's side, on loopback: signing keys, tokens and a Bot Connector that records.

- `ChannelKeys`: an RSA key whose OpenID metadata and JWKS are served by a thread (the SDK fetches
  them with synchronous `requests`), and `token(...)` to mint channel tokens, forged ones included.
- `FakeConnector`: the Bot Connector REST API the bot sends to (`/v3/conversations/...`), checking
  the bearer token, recording every request, and able to answer 429/5xx or be down. It also serves
  team and channel rosters (with guests and members of other tenants), creates personal chats, and
  serves files under `/files/` (recording who asked, with which token, and able to redirect).
"""

from __future__ import annotations

import errno

import base64
import datetime as dt
import html
import itertools
import json
import os
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from aiohttp import web
from botframework.connector.auth import ServiceClientCredentialsFactory
from cryptography.hazmat.primitives.asymmetric import rsa
from msrest.authentication import BasicTokenAuthentication

ISSUER = "https://api.botframework.com"
APP_ID = "0f2b5c1e-8a4d-4f7b-9c3e-2d1a6b8e4f70"
TENANT = "3c9f2d41-5b7e-4a1c-8e6d-9f0a1b2c3d4e"
# A process that serves a bot for a load generator in another process shares the token through this variable.
CONNECTOR_TOKEN = os.environ.get("MELDBOT_BENCH_CONNECTOR_TOKEN") or "connector-token-" + uuid.uuid4().hex


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class ChannelKeys:
    """A signing key of "the channel", published on loopback."""

    def __init__(self):
        self.kid = "meldbot-test-key"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        jwks = {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid, "n": _b64(numbers.n), "e": _b64(numbers.e),
                          "endorsements": ["msteams"]}]}
        documents: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                body = documents.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        base = f"http://127.0.0.1:{self.server.server_port}"
        self.metadata_url = f"{base}/.well-known/openidconfiguration"
        documents["/.well-known/openidconfiguration"] = json.dumps(
            {"issuer": ISSUER, "jwks_uri": f"{base}/keys", "id_token_signing_alg_values_supported": ["RS256"]}
        ).encode()
        documents["/keys"] = json.dumps(jwks).encode()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(self, service_url: str, *, audience: str = APP_ID, issuer: str = ISSUER, expires_in: int = 3600,
              key=None, kid: str | None = None, algorithm: str = "RS256", **claims) -> str:
        now = int(time.time())
        payload = {"iss": issuer, "aud": audience, "serviceurl": service_url, "nbf": now - 60,
                   "iat": now - 60, "exp": now + expires_in, **claims}
        if algorithm == "none":
            return jwt.encode(payload, None, algorithm="none", headers={"kid": kid or self.kid})
        return jwt.encode(payload, key or self.key, algorithm=algorithm, headers={"kid": kid or self.kid})


class LocalCredentialsFactory(ServiceClientCredentialsFactory):
    """Outbound credentials that carry the fake connector's token instead of an Entra ID token."""

    async def is_valid_app_id(self, app_id: str) -> bool:
        return app_id == APP_ID

    async def is_authentication_disabled(self) -> bool:
        return False

    async def create_credentials(self, app_id, oauth_scope, login_endpoint, validate_authority):
        credentials = BasicTokenAuthentication({"access_token": CONNECTOR_TOKEN})
        credentials.get_access_token = lambda *args, **kwargs: CONNECTOR_TOKEN
        return credentials


class FakeConnector:
    """The Bot Connector service: records what the bot sends; can throttle, fail or be down."""

    def __init__(self):
        self.requests: list[dict] = []
        self.failures: list[tuple[int, dict]] = []
        self.unauthorised = 0
        self.files: dict[str, bytes] = {}
        #: /files/{name} -> where it redirects (302) instead.
        self.redirects: dict[str, str] = {}
        #: Every request for /files/...: path and the Authorization header it carried.
        self.file_requests: list[dict] = []
        #: team ID -> user IDs (Teams and AAD object IDs) that GET .../members/{id} finds.
        self.team_members: dict[str, set[str]] = {}
        #: channel ID -> user IDs: the roster of a private or shared channel.
        self.channel_members: dict[str, set[str]] = {}
        #: user IDs whose member record says `userRole: guest`.
        self.guests: set[str] = set()
        #: user ID -> tenant ID, for members from another organisation (shared channels).
        self.member_tenants: dict[str, str] = {}
        #: personal chats created with POST /v3/conversations: conversation ID -> the body.
        self.chats: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = 1) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.failures.extend([(status, headers)] * count)

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path.startswith("/files/"):
            name = request.path.split("/files/", 1)[1]
            self.file_requests.append({"path": request.path, "authorization": request.headers.get("Authorization")})
            if name in self.redirects:
                return web.Response(status=302, headers={"Location": self.redirects[name]})
            if name.startswith("auth-") and request.headers.get("Authorization") != f"Bearer {CONNECTOR_TOKEN}":
                return web.Response(status=401)
            return web.Response(body=self.files.get(name, b""), content_type="image/png")
        if request.headers.get("Authorization") != f"Bearer {CONNECTOR_TOKEN}":
            self.unauthorised += 1
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        if self.failures:
            status, headers = self.failures.pop(0)
            return web.json_response({"error": {"code": "Throttled" if status == 429 else "ServiceError",
                                                "message": "try later"}}, status=status, headers=headers)
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and len(parts) == 5 and parts[:2] == ["v3", "conversations"] \
                and parts[3] == "members":
            self.requests.append({"method": "GET", "path": request.path, "kind": "member", "body": {},
                                  "activity": {}, "conversation": parts[2], "member": parts[4],
                                  "authorization": request.headers.get("Authorization")})
            roster = self.team_members.get(parts[2], set()) | self.channel_members.get(parts[2], set())
            if parts[4] in roster:
                member = {"id": parts[4], "name": "Member", "aadObjectId": parts[4],
                          "userRole": "guest" if parts[4] in self.guests else "user",
                          "tenantId": self.member_tenants.get(parts[4], TENANT)}
                return web.json_response(member)
            return web.json_response({"error": {"code": "NotFound", "message": "member not found"}}, status=404)
        body = await request.json() if request.can_read_body else {}
        number = next(self._ids)
        record = {"method": request.method, "path": request.path, "body": body}
        if parts == ["v3", "conversations"] and not (body.get("channelData") or {}).get("channel"):
            # No channel: a personal (1:1) chat with the one member.
            conversation = f"a:chat-{number}"
            self.chats[conversation] = body
            record.update(kind="create_chat", conversation=conversation, activity={},
                          members=[m.get("id") for m in body.get("members") or []])
            self.requests.append(record)
            return web.json_response({"id": conversation})
        if parts == ["v3", "conversations"]:
            channel = ((body.get("channelData") or {}).get("channel") or {}).get("id", "unknown")
            conversation = f"{channel};messageid={number}"
            record.update(kind="create", conversation=conversation, activity=body.get("activity") or {})
            self.requests.append(record)
            return web.json_response({"id": conversation, "activityId": str(number)})
        record.update(kind="send", conversation=parts[2] if len(parts) > 2 else "",
                      reply_to=parts[4] if len(parts) > 4 else None, activity=body)
        self.requests.append(record)
        return web.json_response({"id": f"activity-{number}"})

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port or self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
            self.runner = None

    def texts(self, conversation: str | None = None) -> list[str]:
        """The texts the bot sent (optionally into one conversation), in order."""
        return [r["activity"].get("text") or "" for r in self.requests
                if r["kind"] == "send" and (conversation is None or r["conversation"] == conversation)]


def shown(markdown: str) -> str:
    """Roughly what Teams shows for a message's markdown: escapes undone, entities decoded."""
    return html.unescape(re.sub(r"\\([\\`*_~\[\]()#|])", r"\1", markdown)).replace("  \n", "\n")


def activity(service_url: str, text: str | None = "", *, user: str = "anna", conversation: str | None = None,
             conversation_type: str = "personal", tenant: str = TENANT, value=None, activity_type: str = "message",
             name: str | None = None, attachments=None, channel: str | None = None, team: str | None = None,
             activity_id: str | None = None, channel_type: str | None = "standard") -> dict:
    """An activity as Teams posts it to the bot (`channel_type`: "standard", "private", "shared" or
    None for a channel whose type Teams does not say)."""
    channel_data = {"tenant": {"id": tenant}}
    if channel:
        channel_data["channel"] = {"id": channel}
        if channel_type:
            channel_data["channel"]["type"] = channel_type
    if team:
        channel_data["team"] = {"id": team}
    data = {
        "type": activity_type, "id": activity_id or uuid.uuid4().hex,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "serviceUrl": service_url,
        "channelId": "msteams", "from": {"id": f"29:{user}", "name": user.title(), "aadObjectId": f"aad-{user}"},
        "conversation": {"id": conversation or f"a:personal-{user}", "conversationType": conversation_type,
                         "tenantId": tenant, "isGroup": conversation_type != "personal"},
        "recipient": {"id": f"28:{APP_ID}", "name": "Meldbot"}, "channelData": channel_data, "locale": "nl-NL",
    }
    if text is not None:
        data["text"] = text
        if "<at>Meldbot</at>" in text:
            data["entities"] = [{"type": "mention", "text": "<at>Meldbot</at>",
                                 "mentioned": {"id": f"28:{APP_ID}", "name": "Meldbot"}}]
    if value is not None:
        data["value"] = value
    if name:
        data["name"] = name
    if attachments:
        data["attachments"] = attachments
    return data


# -- the whole bot on Teams: settings, the app with its web server, and helpers to talk to it -----------

STORY = "Een bezoeker schold me net uit aan de balie en noemde me een oplichter"
CHANNEL = "19:coordinatie@thread.tacv2"
TEAM = "19:team-agressie@thread.tacv2"


def json_body(body: dict) -> bytes:
    return json.dumps(body).encode()


def reference_in(texts: list[str]) -> str:
    for text in texts:
        match = re.search(r"MB-[0-9A-Z]{3}-[0-9A-Z]{3}", text)
        if match:
            return match.group(0)
    raise AssertionError(f"no reference in {texts}")


class TeamsWorld:
    """Meldbot (engine, outbox, web server, Teams adapter) on SQLite in `tmp_path`, the channel's keys,
    and a FakeConnector as the Bot Connector. Several instances of one deployment: give them the same
    `database_url` and `connector` (started and stopped by its owner, the world that made it)."""

    def __init__(self, keys, tmp_path, *, database_url: str | None = None, connector: FakeConnector | None = None):
        from bot.devtools.localserver import free_port

        self.keys = keys
        self.tmp = tmp_path
        self._database_url = database_url
        self._owns_connector = connector is None
        self.connector = connector or FakeConnector()
        self.app = None
        self.port = free_port()
        self.http = None

    @property
    def database_url(self) -> str:
        return self._database_url or f"sqlite+aiosqlite:///{self.tmp / 'meldbot.db'}"

    def settings(self, **teams):
        from bot.config import (DatabaseSettings, OrganisationSettings, PrivacySettings, Settings, TeamsSettings,
                                WebSettings)
        from helpers import TEST_MASTER_KEY
        from storage.crypto import encode_key

        values = dict(app_id=APP_ID, app_password="unused", tenant_id=TENANT, store_dir=self.tmp / "teams",
                      openid_metadata_url=self.keys.metadata_url)
        values.update(teams)
        return Settings(
            organisation=OrganisationSettings(name="Gemeente Testdam"),
            database=DatabaseSettings(url=self.database_url),
            web=WebSettings(listen=f"127.0.0.1:{self.port}", public_url="https://meldbot.example.nl"),
            teams=TeamsSettings(**values), privacy=PrivacySettings(key=encode_key(TEST_MASTER_KEY)),
        )

    async def start(self, files_per_message: int = 10, **teams) -> "TeamsWorld":
        import aiohttp

        from bot.app import build
        from bot.adapters.teams.adapter import TeamsAdapter

        from bot.devtools.localserver import free_port

        if self._owns_connector:
            await self.connector.start()
        for attempt in range(5):
            settings = self.settings(**teams)
            # Without an app ID the SDK's own factory is used: it is what turns authentication off.
            factory = LocalCredentialsFactory() if settings.teams.app_id else None
            adapter = TeamsAdapter(settings=settings.teams, store_dir=settings.teams.store_dir, language="nl",
                                   credentials_factory=factory, files_per_message=files_per_message)
            self.app = await build(settings, {"teams": adapter})
            try:
                await self.app.start(web_server=True)
                break
            except OSError as error:
                # The free port was taken by another process between choosing and binding it.
                await self.app.stop()
                if error.errno != errno.EADDRINUSE or attempt == 4:
                    raise
                self.port = free_port()
        self.http = aiohttp.ClientSession()
        return self

    @property
    def adapter(self):
        return self.app.adapters["teams"]

    async def close(self) -> None:
        if self.http:
            await self.http.close()
        if self.app:
            await self.app.stop()
        if self._owns_connector:
            await self.connector.stop()

    async def post(self, body: dict, token: str | None = None, raw: bytes | None = None):
        if token is None:
            token = self.keys.token(body.get("serviceUrl", self.connector.url))
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.post(f"http://127.0.0.1:{self.port}/api/messages", data=raw or json_body(body),
                                  headers=headers) as response:
            await response.read()
            return response

    async def say(self, text: str | None, **kwargs) -> list[str]:
        """Post an activity; returns the texts the bot answered with (in the turn)."""
        before = len(self.connector.requests)
        response = await self.post(activity(self.connector.url, text, **kwargs))
        assert response.status in (200, 201), response.status
        return [r["activity"].get("text") or "" for r in self.connector.requests[before:] if r["kind"] == "send"]

    async def say_while_down(self, text: str) -> None:
        response = await self.post(activity(self.connector.url, text))
        assert response.status in (200, 201)

    async def in_channel(self, text: str, channel: str = CHANNEL, team: str = TEAM, user: str = "coco",
                         conversation: str | None = None, **kwargs) -> list[str]:
        """`@Meldbot <text>` in a channel (top level, or in the thread `conversation`)."""
        return await self.say(f"<at>Meldbot</at> {text}", conversation=conversation or channel,
                              conversation_type="channel", channel=channel, team=team, user=user, **kwargs)

    async def count(self, model) -> int:
        from sqlalchemy import func, select

        async with self.app.sessions() as session:
            return await session.scalar(select(func.count()).select_from(model))

    async def claim_code(self) -> str:
        """A code as `meldbot teams claim-code` makes it, minted in-process (test_teams_claim.py runs the CLI)."""
        import storage
        from bot.core.clock import utc_now
        from bot.core.login import CLAIM_CODE_VALIDITY, claim_digest, new_claim_code
        from storage import repo

        code = new_claim_code()
        now = utc_now()
        async with storage.transaction(self.app.sessions) as session:
            await repo.add_claim_code(session=session, platform="teams", digest=claim_digest(code), now=now,
                                      expires_at=now + CLAIM_CODE_VALIDITY)
        return code

    async def set_channel(self, channel: str = CHANNEL, team: str = TEAM, **kwargs) -> None:
        """Claim `channel` as the coordinator channel with a fresh code."""
        said = await self.in_channel(f"coordinatiekanaal {await self.claim_code()}", channel=channel, team=team,
                                     **kwargs)
        assert any("nu het coördinatiekanaal" in s for s in said), said

    async def report(self, story: str = STORY, user: str = "anna", drain: bool = True) -> str:
        """A whole text report in the personal chat; returns its reference (once the outbox is empty)."""
        await self.say(story, user=user)
        reference = reference_in(await self.say("verzenden", user=user))
        if drain:
            assert await self.app.worker.drain(timeout=30)
        return reference

    def channel_posts(self) -> list[dict]:
        return [r for r in self.connector.requests if r["kind"] == "create"]


@pytest.fixture
async def world(keys, tmp_path):
    world = TeamsWorld(keys, tmp_path)
    try:
        yield world
    finally:
        await world.close()

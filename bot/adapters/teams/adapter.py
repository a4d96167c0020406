"""The Microsoft Teams platform (botbuilder 4.17.1, CloudAdapter behind `POST /api/messages`).

Translates only: activities become `InboundMessage`/`CoordinatorMessage`, neutral replies become
activities. Its own small state (the coordinator channel, its team and type, the service URL) lives
in `store_dir`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import aiohttp
from aiohttp import web
from botbuilder.core import ActivityHandler, MessageFactory, TurnContext
from botbuilder.core.teams import teams_get_channel_id, teams_get_team_info
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    AdaptiveCardInvokeResponse,
    Attachment,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
)
from botbuilder.schema.teams import TeamsChannelAccount
from botframework.connector.auth import ServiceClientCredentialsFactory
from msrest.exceptions import DeserializationError

from dialogs import Reply, Translator
from dialogs.coordinator import is_login_command, parse_coordinator_command
from dialogs.text import clean_name, fold, parse_command

from bot.config import ConfigError, TeamsSettings
from bot.adapters.contract import Bot, CoordinatorMessage, DeliveryError, InboundAttachment, InboundMessage, Notification
from bot.adapters.teams import fixes
from bot.adapters.teams.auth import activity_tenant, build_authentication
from bot.adapters.teams.cards import CONTENT_TYPE, form_values, notification_card, report_card, sent_card
from bot.adapters.teams.files import download, token_allowed
from bot.adapters.teams.markdown import combined_markdown, escape, reply_markdown

__all__ = ["TeamsAdapter", "check_settings", "combined_markdown", "parse_claim", "reply_markdown"]

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
#: Statuses worth retrying (throttling, conflicts and gateways); others are final.
RETRYABLE = {408, 412, 429, 500, 502, 503, 504}
#: `@Meldbot coordinatiekanaal <code>` (after `fold`: lower case, no accents).
CLAIM_RE = re.compile(r"^(?:coordinatiekanaal|coordinatorkanaal|coordinator[ -]?channel)(?![a-z0-9])[\s:=]*(.*)$")
REFERENCE_RE = re.compile(r"\bMB-[0-9A-Z]{3}-[0-9A-Z]{3}\b")
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CHANNEL_RE = re.compile(r"^19:\S+@thread\.[a-z0-9]+$")
FILE_INFO = "application/vnd.microsoft.teams.file.download.info"
MAX_FILE = 20 * 1024 * 1024
#: Channel types whose members are not simply the team's (Teams: `channelData.channel.type` or
#: `membershipType`). An unknown type is treated like these: never a wider roster than the channel's.
OWN_ROSTER = ("private", "shared")
CHANNEL_TYPES = ("standard", "private", "shared")
#: Longest wait for Teams' roster before a thread command is answered "cannot check now".
COORDINATOR_CHECK_S = 8.0
#: At most this many refused file names are listed back to the reporter.
NAMES_LISTED = 20


def parse_claim(text: str) -> str | None:
    """The code of `coordinatiekanaal <code>` ("" without one), or None for any other message."""
    match = CLAIM_RE.match(fold(text or ""))
    return match.group(1).strip() if match else None


def check_settings(settings: TeamsSettings, credentials_factory: ServiceClientCredentialsFactory | None) -> None:
    """Refuse the `[teams]` combinations botbuilder cannot use (it would fail with a stack trace at
    start, or silently refuse every activity later), naming the key."""
    if settings.app_password and not settings.app_id:
        raise ConfigError("[teams] app_password is set but app_id is empty: set app_id to the bot's Microsoft "
                          "App ID, or remove app_password.")
    if not settings.app_id and not settings.allow_unauthenticated:
        raise ConfigError("[teams] app_id is empty: authentication would be off. Set app_id, app_password and "
                          "tenant_id, or allow_unauthenticated = true for a local experiment only.")
    endpoint = next((key for key in ("openid_metadata_url", "token_issuer") if getattr(settings, key)), None)
    if endpoint and not settings.app_id:
        # botbuilder 4.17.1's parameterised path only takes a missing header as anonymous, never the
        # empty one CloudAdapter passes: every activity would be refused.
        raise ConfigError(f"[teams] {endpoint} is set but app_id is empty: the endpoints apply only with "
                          "authentication. Remove it for a local experiment, or set app_id.")
    if settings.app_id and not GUID_RE.match(settings.app_id):
        raise ConfigError("[teams] app_id is not a Microsoft App ID: expected a GUID such as "
                          "00000000-0000-0000-0000-000000000000 (Azure Bot > Configuration).")
    if settings.app_id and not settings.tenant_id:
        raise ConfigError("[teams] tenant_id is empty: without it activities from any tenant would be "
                          "accepted. Set your organisation's tenant ID.")
    if settings.tenant_id and not GUID_RE.match(settings.tenant_id):
        raise ConfigError("[teams] tenant_id is not a tenant ID: expected the Directory (tenant) ID, a GUID such "
                          "as 00000000-0000-0000-0000-000000000000 (not a domain name).")
    if settings.app_id and not settings.app_password and credentials_factory is None:
        raise ConfigError("[teams] app_password is empty: the bot cannot get a token to answer. Set app_password "
                          "to the client secret of the bot's app registration.")
    if settings.coordinator_channel and not CHANNEL_RE.match(settings.coordinator_channel):
        raise ConfigError("[teams] coordinator_channel is not a Teams channel ID: expected something like "
                          "19:abc123@thread.tacv2 (or remove it and claim a channel with a code).")


def channel_type(activity: Activity) -> str | None:
    """"standard", "private" or "shared" when Teams says so. botbuilder's ChannelInfo keeps `type`
    but not `membershipType`: read the raw channel data."""
    data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    channel = data.get("channel") if isinstance(data.get("channel"), dict) else {}
    for key in ("type", "membershipType"):
        value = channel.get(key)
        if isinstance(value, str) and value.lower() in CHANNEL_TYPES:
            return value.lower()
    return None


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) or getattr(error, "status_code", None)


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _delivery_error(error: BaseException) -> DeliveryError:
    status = _status(error)
    return DeliveryError(f"bot connector answered {status or type(error).__name__}", retry_after=_retry_after(error),
                         permanent=status is not None and status not in RETRYABLE and status < 500
                         and status not in (401, 403, 404))


class TeamsAdapter:
    """One Azure Bot registration in one tenant."""

    platform = "teams"
    #: The Bot Connector has no idempotency key: a resend after an ambiguous failure can post twice.
    idempotent_sends = False

    def __init__(self, *, settings: TeamsSettings, store_dir: Path, language: str,
                 credentials_factory: ServiceClientCredentialsFactory | None = None, files_per_message: int = 10):
        check_settings(settings, credentials_factory)
        fixes.apply()
        self.settings = settings
        self.language = language
        self.files_per_message = files_per_message
        self.store_dir = Path(store_dir)
        self.state_file = self.store_dir / "teams-state.json"
        self.auth = build_authentication(settings, credentials_factory)
        self.cloud = CloudAdapter(self.auth)
        self.cloud.on_turn_error = self._on_turn_error
        self.handler = _Handler(self)
        self.bot: Bot | None = None
        self.state: dict[str, Any] = {}
        self._http: aiohttp.ClientSession | None = None
        self._references: dict[tuple, dict] = {}
        #: Claim messages already answered (Teams may deliver the same activity twice).
        self._claims_seen: set[tuple] = set()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, bot: Bot) -> None:
        self.bot = bot
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        configured = self.settings.coordinator_channel
        if configured and self.state.get("channel_id") != configured:
            # The administrator's channel wins over one claimed from chat; what was learnt about that
            # other channel (its team, its type) says nothing about this one.
            self._retire(self.state.get("channel_id"))
            for key in ("team_id", "channel_type"):
                self.state.pop(key, None)
            self.state["channel_id"] = configured
            self._save()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        if not self.settings.app_id:
            log.warning("teams: AUTHENTICATION IS OFF (allow_unauthenticated): anyone can post activities. "
                        "Never run like this in production.")
        log.info("teams: endpoint POST /api/messages ready (coordinator channel: %s)",
                 "set" if self.state.get("channel_id") else "not set")

    async def stop(self) -> None:
        if self._http:
            await self._http.close()

    def _save(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(self.state))
        os.chmod(self.state_file, 0o600)

    def _retire(self, channel_id: str | None) -> None:
        """Remember a channel that is no longer the coordinator channel: nothing is posted there again."""
        if channel_id:
            retired = [c for c in self.state.get("retired_channels", []) if c != channel_id]
            self.state["retired_channels"] = (retired + [channel_id])[-50:]

    def coordinator_destination(self) -> str | None:
        return self.state.get("channel_id")

    async def is_coordinator(self, user_id: str) -> bool:
        """Coordinators are the members of the coordinator channel (a standard channel's are its team's;
        a private or shared channel has its own roster), never guests or people of another tenant.
        Asked of Teams each time, so someone who left gets no login link."""
        channel_id, kind = self.state.get("channel_id"), self.state.get("channel_type")
        if not channel_id:
            return False
        team_id = self.state.get("team_id")
        roster = team_id if kind == "standard" and team_id else channel_id
        member = await self._roster_member(roster, user_id)
        if member is None:
            return False
        if (member.user_role or "").lower() in ("guest", "anonymous"):
            log.info("teams: a guest of the coordinator channel is not a coordinator")
            return False
        if member.tenant_id and self.settings.tenant_id and member.tenant_id != self.settings.tenant_id:
            log.info("teams: a member from another tenant is not a coordinator")
            return False
        return True

    async def _roster_member(self, conversation_id: str, user_id: str) -> TeamsChannelAccount | None:
        """`GET /v3/conversations/{conversation_id}/members/{user_id}`: None when Teams says 404."""
        found: list[TeamsChannelAccount | None] = []

        async def logic(turn_context: TurnContext) -> None:
            client = turn_context.turn_state.get(self.cloud.BOT_CONNECTOR_CLIENT_KEY)
            try:
                member = await client.conversations.get_conversation_member(conversation_id, user_id)
            except Exception as error:
                if _status(error) != 404:
                    raise
                found.append(None)
                return
            # The SDK's ChannelAccount keeps Teams' extra fields (userRole, tenantId) aside.
            found.append(TeamsChannelAccount().deserialize(
                dict(member.serialize(), **(getattr(member, "additional_properties", None) or {}))))

        # botbuilder 4.17.1's `TeamsInfo.get_team_member` asks about the turn's conversation whatever
        # team it is given: the roster's own conversation is therefore continued and asked directly.
        await self.cloud.continue_conversation(self._channel_reference(conversation_id), logic, self.settings.app_id)
        return found[0] if found else None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/messages", self.handle_request)]

    # -- inbound ------------------------------------------------------------------------------------

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        """The Bot Framework endpoint: 401 for any authentication failure, 413 for bodies over 1 MB.

        The token is checked before the SDK deserialises the body: `CloudAdapter.process` does it the
        other way round, and msrest spends about half a second of the event loop on a 1 MB body."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="request body too large")
        authorization = request.headers.get("Authorization") or ""
        if self.settings.app_id and not authorization:
            log.warning("teams: request without a token refused")
            return web.Response(status=401)
        if "application/json" not in (request.headers.get("Content-Type") or ""):
            return web.Response(status=415, text="expected application/json")
        try:
            body = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="request body too large")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            log.warning("teams: malformed activity refused")
            return web.Response(status=400, text="malformed activity")
        if self.settings.app_id:
            try:
                # Remembered by StrictAuthentication: the check inside `process` is then a lookup.
                await self.auth.authenticate_request(_activity_for_authentication(body), authorization)
            except PermissionError:
                return web.Response(status=401)
        try:
            return await self.cloud.process(request, self.handler)
        except web.HTTPUnauthorized:
            return web.Response(status=401)
        except DeserializationError:
            log.warning("teams: malformed activity refused")
            return web.Response(status=400, text="malformed activity")

    async def _on_turn_error(self, turn_context: TurnContext, error: Exception) -> None:
        log.error("teams: turn failed (%s)", type(error).__name__)
        raise error

    def _remember_service_url(self, activity: Activity) -> None:
        if activity.service_url and self.state.get("service_url") != activity.service_url:
            self.state["service_url"] = activity.service_url
            self._save()

    async def on_personal_message(self, turn_context: TurnContext, form: dict | None = None) -> list[Reply]:
        activity = turn_context.activity
        self._remember_service_url(activity)
        files, not_taken = await self._attachments(turn_context)
        text = (activity.text or "").strip() if form is None else ""
        message = InboundMessage(
            platform=self.platform, conversation=activity.conversation.id, sender=self._sender(activity),
            text=text, event_id=f"{activity.conversation.id}|{activity.id}", attachments=tuple(files),
            sender_name=activity.from_property.name if activity.from_property else None,
            address={"reference": self._reference(activity)}, form=form,
        )
        replies = list(await self.bot.handle(message))
        if not_taken and replies:  # none for a redelivered activity: it was answered the first time
            listed = ", ".join(not_taken[:NAMES_LISTED]) + (", …" if len(not_taken) > NAMES_LISTED else "")
            replies.insert(0, Reply(Translator(self.language)("teams.files_not_taken", limit=self.files_per_message,
                                                              files=listed)))
        command = parse_command(text) if text else None
        card = None
        if command and command.name == "report" and replies:
            card = report_card(self.language)
        await self._reply(turn_context, replies, card)
        return replies

    def _reference(self, activity: Activity) -> dict:
        """The serialised conversation reference (msrest serialisation is slow: reused while unchanged)."""
        key = (activity.conversation.id, activity.service_url, self._sender(activity))
        cached = self._references.get(key)
        if cached is None:
            if len(self._references) > 10_000:
                self._references.clear()
            cached = self._references[key] = TurnContext.get_conversation_reference(activity).serialize()
        return cached

    @staticmethod
    def _sender(activity: Activity) -> str:
        account = activity.from_property
        return (account.aad_object_id or account.id) if account else "unknown"

    @staticmethod
    def _person_address(activity: Activity) -> dict[str, Any]:
        """What `open_direct_chat` needs to reach the sender of a channel message."""
        account = activity.from_property
        return {"teams_id": account.id if account else None,
                "aad_object_id": account.aad_object_id if account else None,
                "name": account.name if account else None, "service_url": activity.service_url,
                "tenant_id": activity_tenant(activity),
                "bot_id": activity.recipient.id if activity.recipient else None}

    async def _reply(self, turn_context: TurnContext, replies: Sequence[Reply], card: dict | None = None) -> None:
        """Answer in the turn, as one message; if that cannot be sent now it goes to the outbox."""
        if replies:
            try:
                await turn_context.send_activity(MessageFactory.text(combined_markdown(replies)))
            except Exception as error:
                log.warning("teams: reply not sent now (status %s); queued", _status(error))
                reference = TurnContext.get_conversation_reference(turn_context.activity)
                await self.bot.defer_replies(self.platform, {"reference": reference.serialize()}, list(replies))
                return
        if card is not None:
            try:
                attachment = Attachment(content_type=CONTENT_TYPE, content=card)
                await turn_context.send_activity(MessageFactory.attachment(attachment))
            except Exception as error:
                log.warning("teams: report card not sent (status %s)", _status(error))

    async def _say(self, turn_context: TurnContext, key: str, **values: object) -> None:
        await turn_context.send_activity(MessageFactory.text(escape(Translator(self.language)(key, **values))))

    async def _attachments(self, turn_context: TurnContext) -> tuple[list[InboundAttachment], list[str]]:
        """The files of a message (at most `files_per_message`), and the names of those not fetched
        because there were more."""
        activity = turn_context.activity
        wanted = []
        for attachment in activity.attachments or []:
            if attachment.content_type == FILE_INFO and isinstance(attachment.content, dict):
                # A shared file: its download URL is pre-authenticated (never sent the bot's token).
                url, use_token, media_type = attachment.content.get("downloadUrl"), False, "application/octet-stream"
            elif (attachment.content_type or "").startswith("image/") and attachment.content_url:
                url, use_token, media_type = attachment.content_url, True, attachment.content_type
            else:
                continue  # the message's own HTML copy, cards, ...
            if isinstance(url, str) and url:
                wanted.append((clean_name(attachment.name) or "bestand", url, use_token, media_type))
        taken, extra = wanted[:self.files_per_message], wanted[self.files_per_message:]
        if extra:
            log.info("teams: %s attachments over the limit of %s per message not fetched", len(extra),
                     self.files_per_message)
        files, token = [], None
        for name, url, use_token, media_type in taken:
            if use_token and token is None and token_allowed(url, activity.service_url):
                token = await self._connector_token(turn_context)
            try:
                fetched = await download(self._http, url, service_url=activity.service_url,
                                         token=token if use_token else None, limit=MAX_FILE)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                log.warning("teams: attachment download failed (%s)", type(error).__name__)
                continue
            if fetched is None:
                continue
            # Over the limit: passed on whole-sized so the engine refuses it by name.
            content = b"\0" * (MAX_FILE + 1) if fetched.too_large else fetched.content
            files.append(InboundAttachment(filename=name[:255], media_type=fetched.media_type or media_type,
                                           content=content))
        return files, [name for name, *_ in extra]

    async def _connector_token(self, turn_context: TurnContext) -> str | None:
        client = turn_context.turn_state.get(self.cloud.BOT_CONNECTOR_CLIENT_KEY)
        credentials = getattr(getattr(client, "config", None), "credentials", None)
        getter = getattr(credentials, "get_access_token", None)
        if getter is None:
            return None
        try:
            return getter()
        except Exception:
            return None

    async def on_channel_message(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        self._remember_service_url(activity)
        text = TurnContext.remove_recipient_mention(activity) or activity.text or ""
        text = re.sub(r"<at>[^<]*</at>", "", text).strip()  # any mention left (another name for the bot)
        channel_id = teams_get_channel_id(activity)
        team = teams_get_team_info(activity)
        team_id = team.id if team else None
        kind = channel_type(activity)
        self._learn(channel_id, team_id, kind)
        code = parse_claim(text)
        if code is not None and channel_id:
            await self._claim(turn_context, channel_id, team_id, kind, code)
            return
        if not channel_id or channel_id != self.state.get("channel_id"):
            await self._say(turn_context, "teams.channel_help")
            return
        login = is_login_command(text)
        command = None if login else parse_coordinator_command(text)
        if not login and command is None:
            await self._say(turn_context, "teams.channel_help")
            return
        is_coordinator = False  # for `login` the engine asks (and also knows [followup] coordinators)
        if command is not None:
            try:
                async with asyncio.timeout(COORDINATOR_CHECK_S):  # Teams resends a turn after 15 s
                    is_coordinator = await self.is_coordinator(self._sender(activity))
            except Exception as error:
                log.warning("teams: coordinator check failed (%s)", type(error).__name__)
                await self._say(turn_context, "login.check_failed")
                return
        conversation_id = activity.conversation.id or ""
        message = CoordinatorMessage(
            platform=self.platform, destination=channel_id, thread_root=conversation_id,
            sender=self._sender(activity), text=text, event_id=f"{conversation_id}|{activity.id}",
            is_coordinator=is_coordinator,
            sender_name=activity.from_property.name if activity.from_property else None,
            address=self._person_address(activity),
        )
        answers = list(await self.bot.handle_coordinator(message))
        if not answers and command is not None and command.name == "help":  # not in a case's thread
            answers = [Reply(Translator(self.language)("teams.channel_help"))]
        for answer in answers:
            await turn_context.send_activity(MessageFactory.text(reply_markdown(answer)))

    def _learn(self, channel_id: str | None, team_id: str | None, kind: str | None) -> None:
        """What a message in the coordinator channel tells: its team (for a configured channel) and type."""
        if not channel_id or channel_id != self.state.get("channel_id"):
            return
        changed = False
        if team_id and not self.state.get("team_id"):
            self.state["team_id"] = team_id
            changed = True
            log.info("teams: coordinator team learnt from the coordinator channel")
        if kind and self.state.get("channel_type") != kind:
            self.state["channel_type"] = kind
            changed = True
            log.info("teams: coordinator channel type: %s", kind)
        if changed:
            self._save()

    async def _claim(self, turn_context: TurnContext, channel_id: str, team_id: str | None, kind: str | None,
                     code: str) -> None:
        """`coordinatiekanaal <code>`: a code from `meldbot teams claim-code` (proof of access to the
        server) makes this channel the coordinator channel. Never logs the code."""
        activity = turn_context.activity
        seen = (activity.conversation.id if activity.conversation else None, activity.id)
        if seen in self._claims_seen:
            return  # Teams resent it: the code was spent on the first delivery
        if len(self._claims_seen) > 1000:
            self._claims_seen.clear()
        self._claims_seen.add(seen)
        if self.settings.coordinator_channel:
            # Refused before the code is spent: the administrator's choice is not moved from a chat.
            log.warning("teams: coordinator channel claim refused: [teams] coordinator_channel is configured")
            await self._say(turn_context, "teams.channel_locked")
            return
        if not code:
            if channel_id == self.state.get("channel_id"):
                await self._say(turn_context, "teams.channel_already")
                return
            log.warning("teams: coordinator channel claim without a code refused")
            await self._say(turn_context, "teams.claim_code_needed")
            return
        redeemed = await self.bot.redeem_claim_code(self.platform, code)
        if redeemed is None:
            log.warning("teams: coordinator channel claim not checked: the database cannot tell now")
            await self._say(turn_context, "teams.claim_unavailable")
            return
        if not redeemed:
            log.warning("teams: coordinator channel claim refused: wrong, used or expired code")
            await self._say(turn_context, "teams.claim_code_wrong")
            return
        previous = self.state.get("channel_id")
        if previous and previous != channel_id:
            self._retire(previous)
        self.state["retired_channels"] = [c for c in self.state.get("retired_channels", []) if c != channel_id]
        self.state.update(channel_id=channel_id, team_id=team_id, channel_type=kind,
                          service_url=activity.service_url)
        self._save()
        log.info("teams: coordinator channel %s (claimed with a code)",
                 "moved" if previous and previous != channel_id else "set")
        await self._say(turn_context, "teams.channel_set")

    async def on_form_invoke(self, turn_context: TurnContext) -> AdaptiveCardInvokeResponse:
        form = form_values(turn_context.activity.value)
        if form is None:
            return AdaptiveCardInvokeResponse(status_code=400, type="application/vnd.microsoft.error",
                                              value={"code": "BadRequest", "message": "unknown action"})
        replies = await self.on_personal_message(turn_context, form=form)
        found = next((m.group(0) for r in replies for m in [REFERENCE_RE.search(r.text)] if m), None)
        if found:
            return AdaptiveCardInvokeResponse(status_code=200, type=CONTENT_TYPE,
                                              value=sent_card(self.language, found))
        return AdaptiveCardInvokeResponse(status_code=200, type="application/vnd.microsoft.activity.message",
                                          value="\n\n".join(r.text for r in replies))

    async def on_installed(self, turn_context: TurnContext) -> None:
        """Added to a personal chat: greet once and keep the conversation reference."""
        activity = turn_context.activity
        self._remember_service_url(activity)
        if (activity.conversation.conversation_type or "personal") != "personal":
            return
        await self.on_personal_message(turn_context)

    # -- outbound (outbox) --------------------------------------------------------------------------

    async def _proactive(self, reference: ConversationReference, activities: list[Activity]) -> str:
        """Send activities into an existing conversation; failures are raised, not only logged."""
        sent: list[str] = []
        failures: list[BaseException] = []

        async def logic(turn_context: TurnContext) -> None:
            try:
                for activity in activities:
                    response = await turn_context.send_activity(activity)
                    sent.append(getattr(response, "id", "") or "")
            except Exception as error:  # the SDK would only log it
                failures.append(error)

        try:
            await self.cloud.continue_conversation(reference, logic, self.settings.app_id)
        except Exception as error:
            failures.append(error)
        if failures:
            raise _delivery_error(failures[0]) from failures[0]
        return sent[-1] if sent else ""

    async def send_replies(self, address: dict[str, Any], replies: Sequence[Reply], idempotency_key: str) -> str:
        data = address.get("reference")
        if not data:
            raise DeliveryError("no conversation reference for this person", permanent=True)
        reference = ConversationReference().deserialize(data)
        return await self._proactive(reference, [MessageFactory.text(combined_markdown(replies))])

    async def open_direct_chat(self, address: dict[str, Any]) -> dict[str, Any]:
        """Create the 1:1 chat with the sender of a channel message (`POST /v3/conversations`); returns
        the address `send_replies` takes."""
        user_id, service_url = address.get("teams_id"), address.get("service_url") or self.state.get("service_url")
        if not user_id or not service_url:
            raise DeliveryError("not enough to open a direct chat with this person", permanent=True)
        tenant = self.settings.tenant_id or address.get("tenant_id")
        bot = ChannelAccount(id=address.get("bot_id") or f"28:{self.settings.app_id}")
        parameters = ConversationParameters(is_group=False, bot=bot, members=[ChannelAccount(id=user_id)],
                                            tenant_id=tenant, channel_data={"tenant": {"id": tenant}})
        created: list[str] = []

        async def logic(turn_context: TurnContext) -> None:
            created.append(turn_context.activity.conversation.id)

        try:
            await self.cloud.create_conversation(self.settings.app_id, logic, parameters, "msteams", service_url)
        except Exception as error:
            raise _delivery_error(error) from error
        if not created or not created[0]:
            raise DeliveryError("the direct chat was not confirmed")
        reference = ConversationReference(
            channel_id="msteams", service_url=service_url, bot=bot,
            user=ChannelAccount(id=user_id, name=address.get("name"), aad_object_id=address.get("aad_object_id")),
            conversation=ConversationAccount(id=created[0], conversation_type="personal", is_group=False,
                                             tenant_id=tenant),
        )
        return {"reference": reference.serialize()}

    def _channel_reference(self, conversation_id: str) -> ConversationReference:
        service_url = self.state.get("service_url")
        if not service_url:
            raise DeliveryError("the Teams service URL is not known yet (no activity received)")
        return ConversationReference(
            channel_id="msteams", service_url=service_url, bot=ChannelAccount(id=self.settings.app_id),
            conversation=ConversationAccount(id=conversation_id, is_group=True, conversation_type="channel"),
        )

    def _refuse_retired(self, destination: str) -> None:
        # A channel that lost the coordinator role (moved with a code, or overridden by the
        # configuration) may hold people who are no longer coordinators: case posts stop there.
        channel = destination.split(";messageid=")[0]
        if channel in self.state.get("retired_channels", []) and channel != self.state.get("channel_id"):
            raise DeliveryError("that channel is no longer the coordinator channel", permanent=True)

    async def post_case_notification(self, destination: str, notification: Notification, idempotency_key: str) -> str:
        self._refuse_retired(destination)
        service_url = self.state.get("service_url")
        if not service_url:
            raise DeliveryError("the Teams service URL is not known yet (no activity received)")
        activity = MessageFactory.attachment(Attachment(content_type=CONTENT_TYPE,
                                                        content=notification_card(notification)))
        activity.text = notification.plain()
        parameters = ConversationParameters(
            is_group=True, activity=activity,
            channel_data={"channel": {"id": destination}, "tenant": {"id": self.settings.tenant_id}},
        )
        created: list[str] = []

        async def logic(turn_context: TurnContext) -> None:
            created.append(turn_context.activity.conversation.id)

        try:
            await self.cloud.create_conversation(self.settings.app_id, logic, parameters, "msteams", service_url)
        except Exception as error:
            status = _status(error)
            raise DeliveryError(f"bot connector answered {status or type(error).__name__}",
                                retry_after=_retry_after(error)) from error
        if not created:
            raise DeliveryError("the channel post was not confirmed")
        return created[0]

    async def post_in_case_thread(self, destination: str, root_id: str, text: str, idempotency_key: str) -> str:
        self._refuse_retired(destination)
        # Thread lines carry reporters' words and coordinators' names: shown literally.
        return await self._proactive(self._channel_reference(root_id), [MessageFactory.text(escape(text))])


def _activity_for_authentication(body: dict) -> Activity:
    """The few fields of a raw activity that authentication reads (no msrest deserialisation)."""

    def text(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    data = body.get("channelData")
    return Activity(type=text("type"), service_url=text("serviceUrl"), channel_id=text("channelId"),
                    channel_data=data if isinstance(data, dict) else None)


class _Handler(ActivityHandler):
    """Routes activity types to the adapter."""

    def __init__(self, adapter: TeamsAdapter):
        self.adapter = adapter

    async def on_message_activity(self, turn_context: TurnContext):
        activity = turn_context.activity
        kind = activity.conversation.conversation_type if activity.conversation else None
        if kind == "channel":
            return await self.adapter.on_channel_message(turn_context)
        if kind == "groupChat":
            return await self.adapter._say(turn_context, "group.dm_only")
        return await self.adapter.on_personal_message(turn_context, form=form_values(activity.value))

    async def on_adaptive_card_invoke(self, turn_context: TurnContext, invoke_value):
        return await self.adapter.on_form_invoke(turn_context)

    async def on_members_added_activity(self, members_added, turn_context: TurnContext):
        bot_id = turn_context.activity.recipient.id if turn_context.activity.recipient else None
        if any(member.id == bot_id for member in members_added or []):
            await self.adapter.on_installed(turn_context)

    async def on_installation_update_add(self, turn_context: TurnContext):
        await self.adapter.on_installed(turn_context)

    async def on_installation_update_remove(self, turn_context: TurnContext):
        log.info("teams: the app was removed from a conversation")

    async def on_unrecognized_activity_type(self, turn_context: TurnContext):
        if turn_context.activity.type not in (ActivityTypes.typing,):
            log.info("teams: activity type %s ignored", turn_context.activity.type)

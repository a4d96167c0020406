"""The Microsoft Teams platform (botbuilder 4.17.1, CloudAdapter behind `POST /api/messages`).

Translates only: activities become `InboundMessage`/`CoordinatorMessage`, neutral replies become
activities. Its own small state (the coordinator channel and its service URL) lives in `store_dir`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Sequence

import aiohttp
from aiohttp import web
from botbuilder.core import ActivityHandler, MessageFactory, TurnContext
from botbuilder.core.teams import TeamsInfo, teams_get_channel_id, teams_get_team_info
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
from botframework.connector.auth import ServiceClientCredentialsFactory
from msrest.exceptions import DeserializationError

from dialogs import Reply, Translator
from dialogs.text import fold, parse_command

from ..config import ConfigError, TeamsSettings
from ..platform import Bot, CoordinatorMessage, DeliveryError, InboundAttachment, InboundMessage, Notification
from . import fixes
from .auth import build_authentication
from .cards import CONTENT_TYPE, form_values, notification_card, report_card, sent_card

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
#: Statuses worth retrying (throttling, conflicts and gateways); others are final.
RETRYABLE = {408, 412, 429, 500, 502, 503, 504}
SET_CHANNEL_WORDS = {"coordinatiekanaal", "coördinatiekanaal", "coordinator channel", "coordinatorkanaal"}
REFERENCE_RE = re.compile(r"\bMB-[0-9A-Z]{3}-[0-9A-Z]{3}\b")
FILE_INFO = "application/vnd.microsoft.teams.file.download.info"
MAX_FILE = 20 * 1024 * 1024
#: Where Teams puts files: SharePoint/OneDrive, the connector and its attachment stores.
TRUSTED_FILE_HOSTS = ("sharepoint.com", "botframework.com", "smba.trafficmanager.net", "asm.skype.com",
                      "teams.microsoft.com", "office.net", "sharepoint-df.com")


def reply_markdown(reply: Reply) -> str:
    """A neutral reply as Teams markdown."""
    parts = []
    if reply.title:
        parts.append(f"**{reply.title}**")
    if reply.text:
        parts.append(reply.text.replace("\n", "  \n"))
    if reply.options:
        marks = any(o.selected for o in reply.options)
        parts.append("\n".join(f"{o.number}. {('☑ ' if o.selected else '☐ ') if marks else ''}{o.label}"
                               for o in reply.options))
    if reply.hint:
        parts.append(f"_{reply.hint}_")
    return "\n\n".join(parts)


def combined_markdown(replies: Sequence[Reply]) -> str:
    """A turn's replies as one Teams message (one notification, one request to the connector)."""
    return "\n\n".join(reply_markdown(reply) for reply in replies)


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


class TeamsAdapter:
    """One Azure Bot registration in one tenant."""

    platform = "teams"
    #: The Bot Connector has no idempotency key: a resend after an ambiguous failure can post twice.
    idempotent_sends = False

    def __init__(self, *, settings: TeamsSettings, store_dir: Path, language: str,
                 credentials_factory: ServiceClientCredentialsFactory | None = None):
        if settings.app_id and not settings.tenant_id:
            raise ConfigError("[teams] tenant_id is empty: without it activities from any tenant would be "
                              "accepted. Set your organisation's tenant ID.")
        if not settings.app_id and not settings.allow_unauthenticated:
            raise ConfigError("[teams] app_id is empty: authentication would be off. Set app_id, app_password and "
                              "tenant_id, or allow_unauthenticated = true for a local experiment only.")
        fixes.apply()
        self.settings = settings
        self.language = language
        self.store_dir = Path(store_dir)
        self.state_file = self.store_dir / "teams-state.json"
        self.cloud = CloudAdapter(build_authentication(settings, credentials_factory))
        self.cloud.on_turn_error = self._on_turn_error
        self.handler = _Handler(self)
        self.bot: Bot | None = None
        self.state: dict[str, Any] = {}
        self._http: aiohttp.ClientSession | None = None
        self._references: dict[tuple, dict] = {}

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, bot: Bot) -> None:
        self.bot = bot
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        if self.settings.coordinator_channel:
            self.state["channel_id"] = self.settings.coordinator_channel
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
        self.state_file.write_text(json.dumps(self.state))
        os.chmod(self.state_file, 0o600)

    def coordinator_destination(self) -> str | None:
        return self.state.get("channel_id")

    async def is_coordinator(self, user_id: str) -> bool:
        """Coordinators are the members of the coordinator channel's team (asked of Teams each time,
        so someone who left the team gets no login link)."""
        team_id, channel_id = self.state.get("team_id"), self.state.get("channel_id")
        if not team_id or not channel_id:
            return False
        found: list[bool] = []

        async def logic(turn_context: TurnContext) -> None:
            try:
                found.append(await TeamsInfo.get_team_member(turn_context, team_id, user_id) is not None)
            except Exception as error:
                if _status(error) != 404:
                    raise
                found.append(False)

        # botbuilder 4.17.1's `get_team_member` checks `team_id` but asks about the turn's conversation
        # (`GET /v3/conversations/{activity.conversation.id}/members/{id}`), unlike the other SDKs: the
        # turn is therefore continued in the team's own conversation (its General channel) so that the
        # lookup is `GET /v3/conversations/{teamId}/members/{userId}`.
        await self.cloud.continue_conversation(self._channel_reference(team_id), logic, self.settings.app_id)
        return bool(found and found[0])

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/messages", self.handle_request)]

    # -- inbound ------------------------------------------------------------------------------------

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        """The Bot Framework endpoint: 401 for any authentication failure, 413 for bodies over 1 MB."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="request body too large")
        if self.settings.app_id and not request.headers.get("Authorization"):
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
        try:
            return await self.cloud.process(request, self.handler)
        except web.HTTPUnauthorized:
            return web.Response(status=401)
        except DeserializationError:  # the SDK parses before it authenticates: nothing has run
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
        files = await self._attachments(turn_context)
        text = (activity.text or "").strip() if form is None else ""
        message = InboundMessage(
            platform=self.platform, conversation=activity.conversation.id, sender=self._sender(activity),
            text=text, event_id=f"{activity.conversation.id}|{activity.id}", attachments=tuple(files),
            sender_name=activity.from_property.name if activity.from_property else None,
            address={"reference": self._reference(activity)}, form=form,
        )
        replies = list(await self.bot.handle(message))
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

    def _trusted(self, url: str, activity: Activity) -> bool:
        """Files are fetched only from Microsoft's hosts or the (authenticated) service URL's host."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        service_host = (urlsplit(activity.service_url or "").hostname or "").lower()
        if host and host == service_host:
            return True
        return parts.scheme == "https" and any(host == h or host.endswith("." + h) for h in TRUSTED_FILE_HOSTS)

    async def _attachments(self, turn_context: TurnContext) -> list[InboundAttachment]:
        files = []
        activity = turn_context.activity
        for attachment in activity.attachments or []:
            url, name = None, attachment.name or "bestand"
            media_type = attachment.content_type or "application/octet-stream"
            headers = {}
            if attachment.content_type == FILE_INFO and isinstance(attachment.content, dict):
                url = attachment.content.get("downloadUrl")
                media_type = "application/octet-stream"
            elif (attachment.content_type or "").startswith("image/") and attachment.content_url:
                url = attachment.content_url
                if self._trusted(url, activity):
                    token = await self._connector_token(turn_context)
                    if token:
                        headers["Authorization"] = f"Bearer {token}"
            if not url:
                continue
            if not self._trusted(url, activity):
                log.warning("teams: attachment from an untrusted host not fetched")
                continue
            try:
                async with self._http.get(url, headers=headers) as response:
                    if response.status != 200:
                        log.warning("teams: attachment download failed (status %s)", response.status)
                        continue
                    chunks, size = [], 0
                    async for chunk in response.content.iter_chunked(65536):
                        size += len(chunk)
                        if size > MAX_FILE:
                            break
                        chunks.append(chunk)
                    # Over the limit: passed on whole-sized so the engine refuses it by name.
                    content = b"".join(chunks) if size <= MAX_FILE else b"\0" * (MAX_FILE + 1)
                    media_type = response.headers.get("Content-Type", media_type).split(";")[0]
            except aiohttp.ClientError as error:
                log.warning("teams: attachment download failed (%s)", type(error).__name__)
                continue
            files.append(InboundAttachment(filename=name[:255], media_type=media_type, content=content))
        return files

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
        t = Translator(self.language)
        if channel_id and channel_id == self.state.get("channel_id") and team and team.id \
                and not self.state.get("team_id"):
            # A configured channel: its team (whose members are the coordinators) is learnt here.
            self.state.update(team_id=team.id)
            self._save()
            log.info("teams: coordinator team learnt from the configured channel")
        if fold(text) in SET_CHANNEL_WORDS and channel_id:
            team_id = team.id if team else None
            # Configured by the administrator, or already claimed by another team: not to be moved
            # from a chat message (whoever holds the channel reads reporters' answers).
            if self.settings.coordinator_channel or (self.state.get("team_id")
                                                    and self.state["team_id"] != team_id):
                log.warning("teams: attempt to move the coordinator channel refused")
                await turn_context.send_activity(MessageFactory.text(t("teams.channel_locked")))
                return
            self.state.update(channel_id=channel_id, team_id=team_id, service_url=activity.service_url)
            self._save()
            log.info("teams: coordinator channel set")
            await turn_context.send_activity(MessageFactory.text(t("teams.channel_set")))
            return
        conversation_id = activity.conversation.id or ""
        in_case_thread = ";messageid=" in conversation_id and channel_id == self.state.get("channel_id")
        if not in_case_thread:
            await turn_context.send_activity(MessageFactory.text(t("teams.channel_help")))
            return
        same_team = self.state.get("team_id") in (None, team.id if team else None)
        message = CoordinatorMessage(
            platform=self.platform, destination=channel_id, thread_root=conversation_id,
            sender=self._sender(activity), text=text, event_id=f"{conversation_id}|{activity.id}",
            is_coordinator=same_team,
            sender_name=activity.from_property.name if activity.from_property else None,
        )
        for answer in await self.bot.handle_coordinator(message):
            await turn_context.send_activity(MessageFactory.text(reply_markdown(answer)))

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
            error = failures[0]
            status = _status(error)
            raise DeliveryError(f"bot connector answered {status or type(error).__name__}",
                                retry_after=_retry_after(error),
                                permanent=status is not None and status not in RETRYABLE and status < 500
                                and status not in (401, 403, 404)) from error
        return sent[-1] if sent else ""

    async def send_replies(self, address: dict[str, Any], replies: Sequence[Reply], idempotency_key: str) -> str:
        data = address.get("reference")
        if not data:
            raise DeliveryError("no conversation reference for this person", permanent=True)
        reference = ConversationReference().deserialize(data)
        return await self._proactive(reference, [MessageFactory.text(combined_markdown(replies))])

    def _channel_reference(self, conversation_id: str) -> ConversationReference:
        service_url = self.state.get("service_url")
        if not service_url:
            raise DeliveryError("the Teams service URL is not known yet (no activity received)")
        return ConversationReference(
            channel_id="msteams", service_url=service_url, bot=ChannelAccount(id=self.settings.app_id),
            conversation=ConversationAccount(id=conversation_id, is_group=True, conversation_type="channel"),
        )

    async def post_case_notification(self, destination: str, notification: Notification, idempotency_key: str) -> str:
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
        return await self._proactive(self._channel_reference(root_id), [MessageFactory.text(text)])


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
            text = Translator(self.adapter.language)("group.dm_only")
            return await turn_context.send_activity(MessageFactory.text(text))
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

"""Inbound: `POST /api/messages` (token checked before the body is deserialised) and activities
from personal chats (messages, files, forms, installs) as `InboundMessage`s; `_Handler` routes the
activity types."""

from __future__ import annotations

import re

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Sequence

import aiohttp
from aiohttp import web
from botbuilder.core import ActivityHandler, MessageFactory, TurnContext
from botbuilder.schema import Activity, ActivityTypes, AdaptiveCardInvokeResponse, Attachment
from msrest.exceptions import DeserializationError

from dialogs import Reply, Translator
from dialogs.text import clean_name

from bot.adapters.common import http_status, send_or_defer
from bot.adapters.contract import InboundAttachment, InboundMessage, MAX_FILE_BYTES
from bot.adapters.teams.auth import activity_tenant
from bot.adapters.teams.cards import CONTENT_TYPE, form_values, notice_card, report_card, sent_card
from bot.adapters.teams.channel import REFRESH_S, parse_claim
from bot.adapters.teams.files import download, token_allowed
from bot.adapters.teams.markdown import combined_markdown, escape

if TYPE_CHECKING:
    from bot.adapters.teams.adapter import TeamsAdapter

log = logging.getLogger(__name__)
#: What a code from `meldbot teams claim-code` looks like once folded (12 letters and digits).
CODE_SHAPE = re.compile(r"[a-z0-9]{4}-?[a-z0-9]{4}-?[a-z0-9]{4}")

MAX_BODY = 1024 * 1024
FILE_INFO = "application/vnd.microsoft.teams.file.download.info"
#: At most this many refused file names are listed back to the reporter.
NAMES_LISTED = 20


class InboundMixin:
    """Part of `TeamsAdapter`: the endpoint and the personal chat."""

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
        # A channel claimed on another instance counts from the next channel activity on (one version
        # check each). A reporter's turn needs none of that state (its answer goes to the activity's own
        # service URL, posts into the channel check it again): a check a second old will do there.
        conversation = body.get("conversation") if isinstance(body.get("conversation"), dict) else {}
        personal = conversation.get("conversationType") == "personal" and body.get("type") == "message"
        await self._refresh_quietly(recent=REFRESH_S if personal else 0.0)
        try:
            return await self.cloud.process(request, self.handler)
        except web.HTTPUnauthorized:
            return web.Response(status=401)
        except DeserializationError:
            log.warning("teams: malformed activity refused")
            return web.Response(status=400, text="malformed activity")

    async def on_personal_message(self, turn_context: TurnContext, form: dict | None = None) -> list[Reply]:
        activity = turn_context.activity
        await self._remember_service_url(activity)
        if form is None and looks_like_claim(activity.text or ""):
            # A claim belongs in the channel; here the code would end up in a report draft.
            await self._say(turn_context, "teams.claim_in_personal_chat")
            return []
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
        offered = next((r for r in replies if r.offer_form), None)
        card = report_card(self.language, values=offered.form_values) if offered else None
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
            async def send(group: Sequence[Reply]) -> None:
                await turn_context.send_activity(MessageFactory.text(combined_markdown(group)))

            def address() -> dict[str, Any]:
                return {"reference": TurnContext.get_conversation_reference(turn_context.activity).serialize()}

            # A turn's replies are one Teams message: sent whole now, or deferred whole.
            if not await send_or_defer(self.bot, self.platform, address, [list(replies)], send,
                                       errors=(Exception,), describe=lambda e: f"status {http_status(e)}"):
                return
        if card is not None:
            try:
                attachment = Attachment(content_type=CONTENT_TYPE, content=card)
                await turn_context.send_activity(MessageFactory.attachment(attachment))
            except Exception as error:
                log.warning("teams: report card not sent (status %s)", http_status(error))

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
                                         token=token if use_token else None, limit=MAX_FILE_BYTES)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                log.warning("teams: attachment download failed (%s)", type(error).__name__)
                continue
            if fetched is None:
                continue
            # Over the limit: passed on whole-sized so the engine refuses it by name.
            content = b"\0" * (MAX_FILE_BYTES + 1) if fetched.too_large else fetched.content
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

    async def on_form_invoke(self, turn_context: TurnContext) -> AdaptiveCardInvokeResponse:
        conversation = turn_context.activity.conversation
        if (conversation.conversation_type if conversation else None) not in (None, "personal"):
            # A card acted on outside the personal chat (forwarded, say) files nothing: that chat is
            # shared, and answers or login links must never go there.
            return AdaptiveCardInvokeResponse(status_code=200, type=CONTENT_TYPE,
                                              value=notice_card(Translator(self.language)("group.dm_only")))
        form = form_values(turn_context.activity.value)
        if form is None:
            return AdaptiveCardInvokeResponse(status_code=400, type="application/vnd.microsoft.error",
                                              value={"code": "BadRequest", "message": "unknown action"})
        replies = await self.on_personal_message(turn_context, form=form)
        found = next((r.reference for r in replies if r.reference), None)
        if found:
            return AdaptiveCardInvokeResponse(status_code=200, type=CONTENT_TYPE,
                                              value=sent_card(self.language, found))
        # Nothing was filed (a question back, a limit): the card says why instead.
        return AdaptiveCardInvokeResponse(status_code=200, type=CONTENT_TYPE,
                                          value=notice_card("\n\n".join(r.plain() for r in replies)))

    async def on_installed(self, turn_context: TurnContext) -> None:
        """Added to a personal chat: greet once and keep the conversation reference."""
        activity = turn_context.activity
        await self._remember_service_url(activity)
        if (activity.conversation.conversation_type or "personal") != "personal":
            return
        await self.on_personal_message(turn_context)


def _activity_for_authentication(body: dict) -> Activity:
    """The few fields of a raw activity that authentication reads (no msrest deserialisation)."""

    def text(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    data = body.get("channelData")
    return Activity(type=text("type"), service_url=text("serviceUrl"), channel_id=text("channelId"),
                    channel_data=data if isinstance(data, dict) else None)


def looks_like_claim(text: str) -> bool:
    """`coordinatiekanaal` alone or with something shaped like a claim code (not a story that
    merely starts with the word)."""
    code = parse_claim(re.sub(r"<at>[^<]*</at>", "", text).strip())
    return code is not None and (code == "" or CODE_SHAPE.fullmatch(code.replace(" ", "")) is not None)


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

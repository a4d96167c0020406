"""Outbound: proactive sends from the outbox, new personal chats and channel posts (conversation
creation), with the Bot Connector's failures raised as `DeliveryError`s (the SDK would only log them)."""

from __future__ import annotations

from typing import Any, Sequence

from botbuilder.core import MessageFactory, TurnContext
from botbuilder.schema import (
    Activity,
    Attachment,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
)

from dialogs import Reply

from bot.adapters.common import http_delivery_error
from bot.adapters.contract import DeliveryError, Notification
from bot.adapters.teams.cards import CONTENT_TYPE, notification_card
from bot.adapters.teams.markdown import combined_markdown, escape


class OutboundMixin:
    """Part of `TeamsAdapter`: what the outbox delivers."""

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
            raise http_delivery_error(failures[0]) from failures[0]
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
        if not address.get("service_url"):
            await self._refresh_quietly()
        user_id, service_url = address.get("teams_id"), address.get("service_url") or self.state.get("service_url")
        if not user_id or not service_url:
            raise DeliveryError("not enough to open a direct chat with this person", permanent=True)
        tenant = self.settings.tenant_id or address.get("tenant_id")
        bot = ChannelAccount(id=address.get("bot_id") or f"28:{self.settings.app_id}")
        parameters = ConversationParameters(is_group=False, bot=bot, members=[ChannelAccount(id=user_id)],
                                            tenant_id=tenant, channel_data={"tenant": {"id": tenant}})
        conversation_id = await self._create_conversation(parameters, service_url)
        if not conversation_id:
            raise DeliveryError("the direct chat was not confirmed")
        reference = ConversationReference(
            channel_id="msteams", service_url=service_url, bot=bot,
            user=ChannelAccount(id=user_id, name=address.get("name"), aad_object_id=address.get("aad_object_id")),
            conversation=ConversationAccount(id=conversation_id, conversation_type="personal", is_group=False,
                                             tenant_id=tenant),
        )
        return {"reference": reference.serialize()}

    async def post_case_notification(self, destination: str, notification: Notification, idempotency_key: str) -> str:
        await self._check_destination(destination)
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
        # A channel post that failed is always retried (never final), unlike a send.
        conversation_id = await self._create_conversation(parameters, service_url, may_be_permanent=False)
        if conversation_id is None:
            raise DeliveryError("the channel post was not confirmed")
        return conversation_id

    async def _create_conversation(self, parameters: ConversationParameters, service_url: str,
                                   may_be_permanent: bool = True) -> str | None:
        """POST /v3/conversations; the new conversation's ID (None when the SDK did not confirm it)."""
        created: list[str] = []

        async def logic(turn_context: TurnContext) -> None:
            created.append(turn_context.activity.conversation.id)

        try:
            await self.cloud.create_conversation(self.settings.app_id, logic, parameters, "msteams", service_url)
        except Exception as error:
            raise http_delivery_error(error, may_be_permanent=may_be_permanent) from error
        return created[0] if created else None

    async def post_in_room(self, destination: str, reply: Reply, idempotency_key: str) -> str:
        """A new post in the coordinator channel (not a reply in a case's thread)."""
        await self._check_destination(destination)
        service_url = self.state.get("service_url")
        if not service_url:
            raise DeliveryError("the Teams service URL is not known yet (no activity received)")
        parameters = ConversationParameters(
            is_group=True, activity=MessageFactory.text(escape(reply.plain())),
            channel_data={"channel": {"id": destination}, "tenant": {"id": self.settings.tenant_id}},
        )
        conversation_id = await self._create_conversation(parameters, service_url, may_be_permanent=False)
        if conversation_id is None:
            raise DeliveryError("the channel post was not confirmed")
        return conversation_id

    async def post_in_case_thread(self, destination: str, root_id: str, text: str, idempotency_key: str) -> str:
        await self._check_destination(destination)
        # Thread lines carry reporters' words and coordinators' names: shown literally.
        return await self._proactive(self._channel_reference(root_id), [MessageFactory.text(escape(text))])


"""The coordinator channel: claiming it with a code, what its messages teach (team, channel type),
who is a coordinator (its roster, asked of Teams each time) and channels that lost the role."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from botbuilder.core import MessageFactory, TurnContext
from botbuilder.core.teams import teams_get_channel_id, teams_get_team_info
from botbuilder.schema import Activity, ChannelAccount, ConversationAccount, ConversationReference
from botbuilder.schema.teams import TeamsChannelAccount

from dialogs import Reply, Translator
from dialogs.coordinator import is_login_command, parse_coordinator_command
from dialogs.text import fold

from bot.adapters.common import http_status
from bot.adapters.contract import CoordinatorMessage, DeliveryError
from bot.adapters.teams.markdown import reply_markdown

log = logging.getLogger(__name__)
#: A version check of the shared state this recent (one in the same turn) is not repeated; a sync read
#: (the outbox worker's `coordinator_destination()`) older than this refreshes in the background.
REFRESH_S = 1.0
#: A channel `coordinator_destination()` gave out this many seconds ago may still be a worker's choice.
TOLD_S = 60.0

#: `@Meldbot coordinatiekanaal <code>` (after `fold`: lower case, no accents).
CLAIM_RE = re.compile(r"^(?:coordinatiekanaal|coordinatorkanaal|coordinator[ -]?channel)(?![a-z0-9])[\s:=]*(.*)$")
#: Channel types whose members are not simply the team's (Teams: `channelData.channel.type` or
#: `membershipType`). An unknown type is treated like these: never a wider roster than the channel's.
OWN_ROSTER = ("private", "shared")
CHANNEL_TYPES = ("standard", "private", "shared")
#: Longest wait for Teams' roster before a thread command is answered "cannot check now".
COORDINATOR_CHECK_S = 8.0
#: How many channels that lost the coordinator role are remembered.
RETIRED_KEPT = 50


def parse_claim(text: str) -> str | None:
    """The code of `coordinatiekanaal <code>` ("" without one), or None for any other message."""
    match = CLAIM_RE.match(fold(text or ""))
    return match.group(1).strip() if match else None


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


class ChannelMixin:
    """Part of `TeamsAdapter`: everything about the coordinator channel (state in `self.state`)."""

    @staticmethod
    def _retire(state: dict, channel_id: str | None) -> None:
        """Remember in `state` a channel that is no longer the coordinator channel: nothing is posted
        there again."""
        if channel_id:
            retired = [c for c in state.get("retired_channels", []) if c != channel_id]
            state["retired_channels"] = (retired + [channel_id])[-RETIRED_KEPT:]

    def coordinator_destination(self) -> str | None:
        """From memory (the outbox worker asks synchronously); a copy not checked lately is refreshed in
        the background, and the send methods check it again before they post."""
        self._refresh_soon()
        channel = self.state.get("channel_id")
        if channel:
            if len(self._told) > 100:
                self._told.clear()
            self._told[channel] = time.monotonic()
        return channel

    def is_room(self, target: str) -> bool:
        return target.startswith("19:")  # channel IDs; people are AAD object IDs

    async def is_coordinator(self, user_id: str) -> bool:
        """Coordinators are the members of the coordinator channel (a standard channel's are its team's;
        a private or shared channel has its own roster), never guests or people of another tenant.
        Asked of Teams each time, so someone who left gets no login link."""
        await self._refresh_quietly(recent=REFRESH_S)  # in a turn it was just checked; from the web not
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
                if http_status(error) != 404:
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

    async def on_channel_message(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        await self._remember_service_url(activity)
        text = TurnContext.remove_recipient_mention(activity) or activity.text or ""
        text = re.sub(r"<at>[^<]*</at>", "", text).strip()  # any mention left (another name for the bot)
        channel_id = teams_get_channel_id(activity)
        team = teams_get_team_info(activity)
        team_id = team.id if team else None
        kind = channel_type(activity)
        await self._learn(channel_id, team_id, kind)
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

    async def _learn(self, channel_id: str | None, team_id: str | None, kind: str | None) -> None:
        """What a message in the coordinator channel tells: its team (for a configured channel) and type."""
        if not channel_id or channel_id != self.state.get("channel_id"):
            return
        if not (team_id and not self.state.get("team_id")) and not (kind and self.state.get("channel_type") != kind):
            return  # nothing new: no write

        def learn(state: dict) -> bool:
            if channel_id != state.get("channel_id"):
                return False  # moved meanwhile, by another instance
            changed = False
            if team_id and not state.get("team_id"):
                state["team_id"] = team_id
                changed = True
                log.info("teams: coordinator team learnt from the coordinator channel")
            if kind and state.get("channel_type") != kind:
                state["channel_type"] = kind
                changed = True
                log.info("teams: coordinator channel type: %s", kind)
            return changed

        try:
            await self._update(learn)
        except Exception as error:
            log.warning("teams: what the coordinator channel told was not saved (%s)", type(error).__name__)

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
        replaced: list[str | None] = []

        def claim(state: dict) -> bool:
            # Applied to the newest state (`_update` reloads it): a channel another instance set
            # meanwhile is retired, not forgotten.
            previous = state.get("channel_id")
            replaced[:] = [previous]
            if previous and previous != channel_id:
                self._retire(state, previous)
            state["retired_channels"] = [c for c in state.get("retired_channels", []) if c != channel_id]
            state.update(channel_id=channel_id, team_id=team_id, channel_type=kind, service_url=activity.service_url)
            return True

        try:
            await self._update(claim)
        except Exception as error:
            log.warning("teams: coordinator channel claim not saved (%s)", type(error).__name__)
            await self._say(turn_context, "teams.claim_unavailable")
            return
        previous = replaced[0] if replaced else None
        log.info("teams: coordinator channel %s (claimed with a code)",
                 "moved" if previous and previous != channel_id else "set")
        await self._say(turn_context, "teams.channel_set")

    def _channel_reference(self, conversation_id: str) -> ConversationReference:
        service_url = self.state.get("service_url")
        if not service_url:
            raise DeliveryError("the Teams service URL is not known yet (no activity received)")
        return ConversationReference(
            channel_id="msteams", service_url=service_url, bot=ChannelAccount(id=self.settings.app_id),
            conversation=ConversationAccount(id=conversation_id, is_group=True, conversation_type="channel"),
        )

    async def _check_destination(self, destination: str) -> None:
        """Before a post into a channel: refresh the state, and refuse a channel that is no longer the
        coordinator channel. One that `coordinator_destination()` gave out lately (from a copy that
        another instance's move made stale) is retried, not refused: the next attempt goes to the new one."""
        await self._refresh_quietly()
        channel = destination.split(";messageid=")[0]
        current = self.state.get("channel_id")
        if current and channel != current and time.monotonic() - self._told.get(channel, -TOLD_S) < TOLD_S:
            raise DeliveryError("the coordinator channel moved (another instance); posted there on the next attempt")
        self._refuse_retired(destination)

    def _refuse_retired(self, destination: str) -> None:
        # A channel that lost the coordinator role (moved with a code, or overridden by the
        # configuration) may hold people who are no longer coordinators: case posts stop there.
        channel = destination.split(";messageid=")[0]
        if channel in self.state.get("retired_channels", []) and channel != self.state.get("channel_id"):
            raise DeliveryError("that channel is no longer the coordinator channel", permanent=True)


"""Coordinator login: single-use links asked for in a direct chat or in the coordinator room, and
the claim codes that bind a Teams channel (`meldbot teams claim-code`)."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
import hashlib
import logging
import secrets
from typing import Awaitable, Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import dialogs
from dialogs import Context, Reply
from storage import repo, transaction

from bot.adapters.contract import CoordinatorMessage, InboundMessage
from bot.config import FollowupSettings
from bot.core import payloads
from bot.core.casework import CaseWork, Coordinator
from bot.core.clock import Clock
from bot.core.errors import DATABASE_ERRORS, error_reference, is_duplicate_event
from bot.core.limits import COORDINATOR_CHECK_TIMEOUT_S, TURN_TIMEOUT_S
from bot.core.payloads import ReporterMessage

log = logging.getLogger(__name__)

#: How long a code from `meldbot teams claim-code` can be used.
CLAIM_CODE_VALIDITY = dt.timedelta(minutes=30)


def new_claim_code() -> str:
    """A single-use claim code such as `K7QM-4XPT-9HRC` (no look-alike characters; 30^12 ≈ 5·10^17)."""
    chars = "".join(secrets.choice(repo.REFERENCE_ALPHABET) for _ in range(12))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def claim_digest(code: str) -> str:
    """What the database keeps of a claim code: a digest of its letters, however it was typed."""
    letters = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(f"claim:{letters}".encode()).hexdigest()


#: The message holding a single-use login link (built in dialogs; the name is kept for callers).
login_reply = dialogs.login_link


class Login:
    """Who is a coordinator, and the login links and claim codes they use."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        context: Context,
        casework: CaseWork,
        followup: FollowupSettings,
        clock: Clock,
        is_coordinator: Callable[[str, str], Awaitable[bool]] | None = None,
        open_direct_chat: Callable[[str, dict], Awaitable[dict]] | None = None,
        login_link_minutes: int = 10,
    ):
        self.sessions = sessions
        self.context = context
        self.casework = casework
        self.followup = followup
        self.clock = clock
        self._is_coordinator = is_coordinator
        self._open_direct_chat = open_direct_chat
        self.login_link_minutes = login_link_minutes

    async def coordinator_allowed(self, platform: str, user: str) -> bool | None:
        """True for the configured extra coordinators and for whom the platform says is one;
        None when the platform cannot tell right now."""
        if f"{platform}:{user}" in self.followup.coordinators:
            return True
        if self._is_coordinator is None:
            return False
        try:
            async with asyncio.timeout(COORDINATOR_CHECK_TIMEOUT_S):
                return await self._is_coordinator(platform, user)
        except Exception as error:  # a platform that cannot tell right now: no link rather than a crash
            # The error's text may hold the user's ID (a URL): its type only.
            log.warning("coordinator check failed on %s: %s", platform, type(error).__name__)
            return None

    async def in_direct_chat(self, message: InboundMessage) -> list[Reply]:
        """`login` in a direct chat: a single-use link to the case pages, for coordinators only."""
        language = self.context.default_language
        allowed = await self.coordinator_allowed(message.platform, message.sender)
        if allowed is None:
            return [dialogs.login_notice(language, "check_failed")]
        if not allowed:
            log.info("login refused: not a coordinator platform=%s", message.platform)
            return [dialogs.login_notice(language, "not_coordinator")]
        now = self.clock()
        who = Coordinator(f"{message.platform}:{message.sender}", message.sender_name or message.sender)
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                async with transaction(self.sessions) as session:
                    await repo.mark_event_handled(session=session, platform=message.platform,
                                                  event_id=message.event_id, now=now)
                    link = await self.casework.issue_login_link(session, who, self.login_link_minutes, now)
                    await repo.add_audit(session=session, actor=who.identity, action="login_link", now=now,
                                         detail={"via": message.platform})
        except IntegrityError as error:
            if is_duplicate_event(error):
                return []
            raise
        except DATABASE_ERRORS as error:
            reference = error_reference()
            log.error("login link not saved error=%s cause=%s", reference, type(error).__name__)
            return list(dialogs.not_saved(language, reference))
        log.info("login link issued platform=%s", message.platform)
        return [dialogs.login_link(language, link, self.login_link_minutes)]

    async def from_room(self, session: AsyncSession, message: CoordinatorMessage, who: Coordinator,
                        allowed: bool | None, now: dt.datetime, address: dict | None) -> Reply:
        """`login` in the coordinator room: the link goes to the coordinator's direct chat, never the room.

        `address`: the direct chat the adapter opened, when the coordinator had none with the bot."""
        language = self.context.default_language
        if not allowed:
            return dialogs.login_notice(language, "check_failed" if allowed is None else "not_coordinator")
        if address is None:
            conversation = await repo.find_conversation(session=session, platform=message.platform,
                                                        sender=message.sender)
            target = ReporterMessage.to_conversation(conversation) if conversation is not None else None
        else:
            target = ReporterMessage.to(address)
        if target is None:
            return dialogs.login_notice(language, "need_direct_chat")
        link = await self.casework.issue_login_link(session, who, self.login_link_minutes, now)
        # The link is a secret reply, so the message is secret: its stored copy is emptied once delivered.
        reply = dialogs.login_link(language, link, self.login_link_minutes)
        await payloads.enqueue(session, replace(target, replies=(reply,), secret=True), platform=message.platform,
                               now=now)
        await repo.add_audit(session=session, actor=who.identity, action="login_link", now=now,
                             detail={"via": message.platform})
        return dialogs.login_notice(language, "sent_to_direct_chat")

    async def direct_chat_for(self, message: CoordinatorMessage) -> dict | None:
        """The address of a direct chat with the sender of a room message: None when they already
        have one with the bot (it is used), or when the platform could not open one."""
        async with self.sessions() as session:
            if await repo.find_conversation(session=session, platform=message.platform, sender=message.sender):
                return None
        if self._open_direct_chat is None or not message.address:
            return None
        try:
            async with asyncio.timeout(COORDINATOR_CHECK_TIMEOUT_S * 2):
                return await self._open_direct_chat(message.platform, message.address)
        except Exception as error:  # noqa: BLE001 - answered "write me privately" instead
            log.warning("could not open a direct chat on %s: %s", message.platform, type(error).__name__)
            return None

    async def redeem_claim_code(self, platform: str, code: str) -> bool | None:
        """Spend a claim code of `platform` (see `meldbot teams claim-code`); None when the database
        cannot tell now. Every attempt is audited, never with the code."""
        digest = claim_digest(code)
        now = self.clock()
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                async with transaction(self.sessions) as session:
                    used = bool(code) and await repo.use_claim_code(session=session, platform=platform,
                                                                    digest=digest, now=now)
                    await repo.add_audit(session=session, actor=f"{platform}:channel",
                                         action="channel_claimed" if used else "channel_claim_refused", now=now)
        except DATABASE_ERRORS as error:
            log.error("claim code not checked: database unavailable (%s)", type(error).__name__)
            return None
        return used

"""Coordinator room commands: `login` and `overzicht` anywhere, and `claim`, `reply <text>` and `help`
in a case thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import replace
from typing import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import dialogs
from dialogs import Context, Reply
from dialogs.coordinator import is_login_command, is_overview_command, parse_coordinator_command, thread_reply
from dialogs.text import clean_name
from storage import repo, transaction

from bot.adapters.contract import CoordinatorMessage
from bot.config import FollowupSettings
from bot.core.casework import CaseError, CaseWork, Coordinator
from bot.core.clock import Clock
from bot.core.errors import DATABASE_ERRORS, error_reference, is_duplicate_event
from bot.core.limits import TURN_TIMEOUT_S, Throttle
from bot.core.login import Login
from bot.core.signals import Signals

log = logging.getLogger(__name__)


class Coordination:
    """Carries out what coordinators write in the coordinator room/channel."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        context: Context,
        casework: CaseWork,
        login: Login,
        throttle: Throttle,
        followup: FollowupSettings,
        clock: Clock,
        wake_outbox: Callable[[], None],
        signals: Signals | None = None,
    ):
        self.sessions = sessions
        self.context = context
        self.casework = casework
        self.login = login
        self.throttle = throttle
        self.followup = followup
        self.clock = clock
        self.wake_outbox = wake_outbox
        #: Answers `overzicht` (None: the command is not offered).
        self.signals = signals

    async def handle_coordinator(self, message: CoordinatorMessage) -> list[Reply]:
        """A message in the coordinator room/channel: `login` anywhere, and `claim` or `reply <text>`
        in a case thread; returns the answers for the room or thread."""
        login = is_login_command(message.text)
        overview = not login and self.signals is not None and is_overview_command(message.text)
        command = None if login or overview else parse_coordinator_command(message.text)
        if not login and not overview and (command is None or not message.thread_root):
            return []  # coordinators talking among themselves
        language = self.context.default_language
        allowed_now = self.throttle.admit((message.platform, message.sender))
        if allowed_now is not True:
            log.warning("coordinator command refused: over the rate limit platform=%s", message.platform)
            return [dialogs.limit_notice(language, "slow_down")] if allowed_now is None else []
        message = replace(message, sender_name=clean_name(message.sender_name) or None)
        who = Coordinator(f"{message.platform}:{message.sender}", message.sender_name or message.sender)
        # Asked of the platform before the transaction: it may take seconds, and the transaction
        # holds the database's write lock.
        allowed = True if not login or message.is_coordinator else \
            await self.login.coordinator_allowed(message.platform, message.sender)
        address = await self.login.direct_chat_for(message) if login and allowed else None
        now = self.clock()
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                async with transaction(self.sessions) as session:
                    await repo.mark_event_handled(session=session, platform=message.platform,
                                                  event_id=message.event_id, now=now)
                    if login:
                        answer = await self.login.from_room(session, message, who, allowed, now, address)
                    elif overview:
                        answer = await self._overview(session, message, who, now)
                    else:
                        answer = await self._thread_command(session, message, command, who, now)
        except IntegrityError as error:
            if is_duplicate_event(error):
                return []
            reference = error_reference()
            log.error("coordinator command not saved error=%s event=%s cause=IntegrityError", reference,
                      message.event_id)
            return list(dialogs.not_saved(language, reference))
        except DATABASE_ERRORS as error:
            reference = error_reference()
            log.error("coordinator command not saved error=%s event=%s cause=%s", reference, message.event_id,
                      type(error).__name__)
            return list(dialogs.not_saved(language, reference))
        name = "login" if login else "overview" if overview else command.name
        log.info("coordinator command=%s platform=%s event=%s", name, message.platform, message.event_id)
        if answer is not None:
            self.wake_outbox()
        return [answer] if answer is not None else []

    async def _overview(self, session: AsyncSession, message: CoordinatorMessage, who: Coordinator,
                        now: dt.datetime) -> Reply:
        """`overzicht`: only for the coordinators (members of the room/channel, or listed)."""
        language = self.context.default_language
        if not message.is_coordinator and f"{message.platform}:{message.sender}" not in self.followup.coordinators:
            log.warning("coordinator command refused: not a member platform=%s event=%s", message.platform,
                        message.event_id)
            return thread_reply(language, "not_allowed")
        await repo.add_audit(session=session, actor=who.identity, action="view_overview", now=now,
                             detail={"via": message.platform})
        return await self.signals.overview(session, now, language)

    async def _thread_command(self, session: AsyncSession, message: CoordinatorMessage, command,
                              who: Coordinator, now: dt.datetime) -> Reply | None:
        language = self.context.default_language
        case = await repo.get_case_by_thread(session=session, platform=message.platform,
                                             destination=message.destination, root_id=message.thread_root)
        if case is None:
            return None
        case = await repo.lock_case(session=session, case=case)
        if not message.is_coordinator and f"{message.platform}:{message.sender}" not in self.followup.coordinators:
            log.warning("coordinator command refused: not a member platform=%s event=%s", message.platform,
                        message.event_id)
            return thread_reply(language, "not_allowed")
        if command.name == "help":
            return thread_reply(language, "help")
        try:
            if command.name == "claim":
                await self.casework.take(session, case, who, now, via=(message.platform, message.destination))
                await repo.add_audit(session=session, actor=who.identity, action="take", now=now,
                                     case_reference=case.reference, detail={"via": message.platform})
                return thread_reply(language, "claimed", reference=case.reference, name=who.name)
            if not command.text:
                return thread_reply(language, "reply_empty")
            await self.casework.message_reporter(session, case, who, command.text, now,
                                                 via=(message.platform, message.destination))
            await repo.add_audit(session=session, actor=who.identity, action="message", now=now,
                                 case_reference=case.reference, detail={"via": message.platform})
            return thread_reply(language, "relayed", reference=case.reference)
        except CaseError as error:
            if error.code in ("already_taken", "already_yours"):
                return thread_reply(language, "already_claimed", reference=case.reference,
                                    name=case.assigned_to or who.name)
            return dialogs.case_error(language, error.code, **error.values)

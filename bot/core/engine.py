"""The engine the adapters see (the `Bot` protocol): it composes reporter turns, the group-commit
batcher, coordinator commands and login.

One inbound message is one turn: load the conversation, run `dialogs.step`, and write everything
the turn changes (state, case, events, attachments, outbox rows) in ONE transaction. Only after
that commit does the reporter hear "saved".
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Awaitable, Callable, Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import dialogs
from dialogs import Context, Reply
from dialogs.coordinator import is_login_command
from storage import repo, transaction

from bot.adapters.contract import CoordinatorMessage, InboundMessage
from bot.config import FollowupSettings, LimitsSettings
from bot.core.batcher import Batcher, Pending
from bot.core import payloads
from bot.core.casework import CaseWork
from bot.core.clock import Clock, utc_now
from bot.core.coordination import Coordination
from bot.core.signals import Signals
from bot.core.errors import DATABASE_ERRORS, TurnFailed, error_reference, is_turn_specific
from bot.core.limits import TURN_TIMEOUT_S, Quotas, Throttle
from bot.core.login import Login
from bot.core.metrics import Metrics
from bot.core.payloads import ReporterMessage
from bot.core.turns import ReporterTurns, TurnResult, cleaned, replayed_answer

log = logging.getLogger(__name__)


class Engine:
    """Handles inbound messages for every platform."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        context: Context,
        public_url: str,
        coordinator_targets: Callable[[], Sequence[tuple[str, str | None]]],
        clock: Clock = utc_now,
        on_outbox: Callable[[], None] | None = None,
        delivery_healthy: Callable[[], bool] = lambda: True,
        followup: FollowupSettings | None = None,
        is_coordinator: Callable[[str, str], Awaitable[bool]] | None = None,
        open_direct_chat: Callable[[str, dict], Awaitable[dict]] | None = None,
        limits: LimitsSettings | None = None,
        login_link_minutes: int = 10,
        casework: CaseWork | None = None,
        signals: Signals | None = None,
        metrics: Metrics | None = None,
        replay_platforms: frozenset[str] = frozenset(),
    ):
        self.sessions = sessions
        #: Platforms that drop a resend under the same transaction ID (Matrix): a redelivered message
        #: that submitted a report gets its confirmation again (the first may have been lost in a crash).
        self.replay_platforms = replay_platforms
        self.context = context
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.on_outbox = on_outbox
        self.followup = followup or FollowupSettings()
        # The wiring builds it (the timer worker and the case pages share it); direct callers need not.
        self.casework = casework or CaseWork(public_url=public_url, coordinator_targets=coordinator_targets,
                                             timezone=context.timezone, followup=self.followup)
        self.limits = limits or LimitsSettings()
        self.throttle = Throttle(self.limits.messages_per_minute)
        self.turns = ReporterTurns(
            sessions=sessions, context=context, casework=self.casework,
            quotas=Quotas(self.limits, context.timezone), followup=self.followup,
            coordinator_targets=coordinator_targets, delivery_healthy=delivery_healthy, clock=clock,
            metrics=self.metrics, replay_platforms=replay_platforms)
        self.login = Login(
            sessions=sessions, context=context, casework=self.casework, followup=self.followup, clock=clock,
            is_coordinator=is_coordinator, open_direct_chat=open_direct_chat,
            login_link_minutes=login_link_minutes)
        self.coordination = Coordination(
            sessions=sessions, context=context, casework=self.casework, login=self.login,
            throttle=self.throttle, followup=self.followup, clock=clock, wake_outbox=self._wake_outbox,
            signals=signals)
        # Turns that arrive while a transaction is running wait for the next one and then share it:
        # one BEGIN/COMMIT, one INSERT of their event IDs, one SELECT of their conversations and one
        # executemany UPDATE of their states. `_turns` is looked up per batch (tests wrap it).
        self._batcher: Batcher[InboundMessage, TurnResult | None] = Batcher(
            lambda messages: self._turns(messages), timeout_s=TURN_TIMEOUT_S,
            expired=lambda: TurnFailed(self.context.default_language), splittable=is_turn_specific,
            # Turns in one order in every process: locks on reporters and cases never cross (no deadlock).
            order=lambda m: (m.platform, m.sender, m.conversation), name="turns")
        self._locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    @property
    def _queue(self) -> list[Pending[InboundMessage]]:
        """The turns waiting for a transaction."""
        return self._batcher.queue

    async def _turns(self, messages: list[InboundMessage]) -> list[TurnResult | None]:
        return await self.turns.run(messages)

    def _wake_outbox(self) -> None:
        if self.on_outbox:
            self.on_outbox()

    def _lock(self, message: InboundMessage) -> asyncio.Lock:
        key = (message.platform, message.conversation, message.sender)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def handle(self, message: InboundMessage) -> list[Reply]:
        """Run one turn and return the replies for the sender (empty for a duplicate event)."""
        language = self.context.default_language
        allowed = self.throttle.admit((message.platform, message.sender))
        if allowed is not True:
            log.warning("message refused: over the rate limit platform=%s event=%s", message.platform,
                        message.event_id)
            return [dialogs.limit_notice(language, "slow_down")] if allowed is None else []
        message = cleaned(message)
        reference = error_reference()
        if message.form is None and not message.attachments and is_login_command(message.text):
            return await self.login.in_direct_chat(message)
        try:
            # Turns of one conversation run one after the other (a double click is two turns), so
            # a batch never holds two turns of the same conversation.
            async with self._lock(message):
                result = await self.metrics.timed_turn(message.platform, self._batcher.submit(message))
        except IntegrityError:
            log.error("turn not saved error=%s platform=%s event=%s cause=IntegrityError", reference,
                      message.platform, message.event_id)
            return list(dialogs.not_saved(language, reference))
        except TurnFailed as failed:
            log.error("turn not saved error=%s platform=%s event=%s cause=%s", reference, message.platform,
                      message.event_id, type(failed.__cause__).__name__)
            return list(dialogs.not_saved(failed.language, reference))
        except DATABASE_ERRORS as error:
            log.error("turn not saved error=%s platform=%s event=%s cause=%s", reference, message.platform,
                      message.event_id, type(error).__name__)
            return list(dialogs.not_saved(language, reference))
        if result is None:
            # The event ID was handled before (or by a concurrent transaction): answered once only.
            return await self._replay(message)
        replies, queued = result
        if queued:
            self._wake_outbox()
        return replies

    async def _replay(self, message: InboundMessage) -> list[Reply]:
        """The answer to a message handled before: nothing, except a report's confirmation on a
        platform that drops a resend (its adapter sends it under the same transaction IDs)."""
        if message.platform in self.replay_platforms:
            key = (message.platform, message.conversation, message.sender)
            try:
                async with self.sessions() as session:  # read only: nothing is committed
                    conversations = await repo.get_or_create_conversations(
                        session=session, keys=[key], language=self.context.default_language, now=self.clock())
                    replies = replayed_answer(conversations.get(key), message, self.clock())
            except DATABASE_ERRORS as error:
                log.warning("duplicate event: its answer not looked up (%s) platform=%s event=%s",
                            type(error).__name__, message.platform, message.event_id)
                return []
            if replies:
                log.info("duplicate event: the report's confirmation sent again platform=%s event=%s",
                         message.platform, message.event_id)
                return replies
        log.info("duplicate event ignored platform=%s event=%s", message.platform, message.event_id)
        return []

    async def handle_coordinator(self, message: CoordinatorMessage) -> list[Reply]:
        """A message in the coordinator room/channel: `login` anywhere, and `claim` or `reply <text>`
        in a case thread; returns the answers for the room or thread."""
        return await self.coordination.handle_coordinator(message)

    async def coordinator_allowed(self, platform: str, user: str) -> bool | None:
        """True for the configured extra coordinators and for whom the platform says is one;
        None when the platform cannot tell right now."""
        return await self.login.coordinator_allowed(platform, user)

    async def redeem_claim_code(self, platform: str, code: str) -> bool | None:
        """Spend a claim code of `platform` (see `meldbot teams claim-code`); None when the database
        cannot tell now."""
        return await self.login.redeem_claim_code(platform, code)

    async def defer_replies(self, platform: str, address: dict, replies: Sequence[Reply]) -> None:
        """Replies an adapter could not send right now: the outbox delivers them when it can."""
        now = self.clock()
        async with transaction(self.sessions) as session:
            await payloads.enqueue(session, ReporterMessage.to(address, *replies), platform=platform, now=now)
        self._wake_outbox()

    def case_link(self, reference: str) -> str:
        """The protected case page of a case."""
        return self.casework.case_link(reference)

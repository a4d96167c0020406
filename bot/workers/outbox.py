"""The outbox worker: delivers queued messages to coordinators and reporters, once each.

A message is leased (so two workers never send it together), sent with its stored idempotency
key (a platform that supports it, like Matrix's transaction ID, drops a resend), and marked
delivered in the database. Failures are retried with exponential backoff and jitter, honouring
the platform's retry-after; a message that must be delivered is never given up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from typing import Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import dialogs
from dialogs import State
from storage import repo, transaction
from storage.models import OutboxMessage
from storage.notify import OutboxListener

from bot.core.clock import utc_now
from bot.core.errors import DATABASE_ERRORS
from bot.core.metrics import Metrics
from bot.core.notifications import payload_for_case, render_case_notification, render_thread_event
from bot.core.payloads import (CaseNotification, OutboxPayload, ReporterMessage, RoomMessage, ThreadLine,
                               UnknownPayloadKind, address_of, from_payload)
from bot.adapters.contract import Adapter, DeliveryError

log = logging.getLogger(__name__)


class OutboxWorker:
    """Delivers due outbox messages through the adapters of this process."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        adapters: Mapping[str, Adapter],
        language: str,
        timezone: dt.tzinfo | None,
        case_link: Callable[[str], str] = lambda reference: f"/cases/{reference}",
        clock: Callable[[], dt.datetime] = utc_now,
        lease: dt.timedelta = dt.timedelta(seconds=120),
        batch: int = 20,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        idle_poll: float = 5.0,
        listen_poll: float = 60.0,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ):
        self.sessions = sessions
        self.adapters = dict(adapters)
        self.language = language
        self.timezone = timezone
        self.case_link = case_link
        self.clock = clock
        self.lease = lease
        self.batch = batch
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.idle_poll = idle_poll
        #: With a listener (PostgreSQL NOTIFY) a new row wakes the worker, which then only looks again
        #: when a retry is due or, as a safety net, every `listen_poll` seconds.
        self.listen_poll = listen_poll
        self.listener: OutboxListener | None = None
        #: Look before claiming (SQLite: a claim's transaction holds the one write lock; PostgreSQL's
        #: claims lock only the rows they take, so the app turns this off there).
        self.read_first = True
        self.waiting = False
        self.rng = rng or random.Random()
        self.metrics = metrics or Metrics()
        self._wake = asyncio.Event()
        self.healthy = True

    def wake(self) -> None:
        """Ask the worker to look at the outbox now (called after a turn queued something)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Deliver what is due now (up to `batch` messages); returns the number delivered.

        Each message is leased right before it is sent, so a lease never runs out while the
        message waits behind others (another worker would then send it a second time).
        """
        delivered = 0
        for _ in range(self.batch):
            if self.read_first:
                async with self.sessions() as session:
                    # A read first: a worker woken with nothing due takes no write lock from the turns.
                    if not await repo.has_due_messages(session=session, now=self.clock(),
                                                       platforms=list(self.adapters)):
                        break
            async with transaction(self.sessions) as session:
                claimed = await repo.claim_due_messages(session=session, now=self.clock(), lease=self.lease,
                                                        limit=1, platforms=list(self.adapters))
            if not claimed:
                break
            delivered += await self._deliver(claimed[0])
        return delivered

    async def _deliver(self, message: OutboxMessage) -> int:
        adapter = self.adapters[message.platform]
        current = adapter.coordinator_destination()
        destination = message.destination or current
        payload: OutboxPayload | None = None
        try:
            try:
                payload = from_payload(message.kind, message.payload)
            except UnknownPayloadKind:
                raise DeliveryError(f"unknown outbox kind {message.kind}", permanent=True) from None
            if isinstance(payload, CaseNotification) and current and not payload.escalation:
                # The coordinator room/channel may have moved since this was queued: it goes where they are now.
                destination = current
            result = await self.metrics.timed_delivery(message.platform, message.kind,
                                                       self._send(adapter, message, payload, destination))
        except DeliveryError as error:
            if error.permanent:
                # Retrying soon changes nothing (e.g. the bot was removed): try again hourly, and
                # say so loudly, but it is not a sign that the platform is down.
                log.error("outbox: permanent failure id=%s kind=%s platform=%s: %s", message.id, message.kind,
                          message.platform, str(error)[:200])
                await self._failed(message, str(error), max(3600.0, error.retry_after or 0), unhealthy=False)
            else:
                await self._failed(message, str(error), error.retry_after)
            return 0
        except DATABASE_ERRORS:
            raise
        except Exception as error:  # an adapter bug must not stop deliveries of other messages
            log.exception("outbox send crashed id=%s kind=%s", message.id, message.kind)
            await self._failed(message, f"{type(error).__name__}", None)
            return 0
        now = self.clock()
        async with transaction(self.sessions) as session:
            # Once delivered, the database keeps no copy of what was sent (a login link, relayed text).
            await repo.mark_message_delivered(session=session, message_id=message.id, now=now, result=result)
            # An escalation copy in a backup room is a pointer to the case, not a second thread.
            if isinstance(payload, CaseNotification) and message.case_id is not None and destination \
                    and not payload.escalation:
                await repo.set_case_thread(session=session, case_id=message.case_id, platform=message.platform,
                                           destination=destination, root_id=result, now=now)
        self.healthy = True
        log.info("outbox delivered id=%s kind=%s platform=%s attempts=%s", message.id, message.kind,
                 message.platform, message.attempts)
        return 1

    async def _send(self, adapter: Adapter, message: OutboxMessage, payload: OutboxPayload,
                    destination: str | None) -> str:
        if isinstance(payload, CaseNotification):
            if not destination:
                raise DeliveryError(f"no coordinator room or channel known yet on {message.platform}")
            notification = render_case_notification(payload, self.language, self.timezone)
            return await adapter.post_case_notification(destination, notification, message.idempotency_key)
        if isinstance(payload, ThreadLine):
            async with self.sessions() as session:
                threads = [t for t in await repo.list_case_threads(session=session, case_id=message.case_id or 0)
                           if t.platform == message.platform
                           and (message.destination is None or t.destination == message.destination)]
            if not threads:
                raise DeliveryError("case thread not posted yet")
            destination, root = threads[0].destination, threads[0].root_id
            current = adapter.coordinator_destination()
            if current and destination != current:
                destination, root = current, await self._thread_in(adapter, message, current)
            text = self._thread_text(adapter, destination, payload)
            return await adapter.post_in_case_thread(destination, root, text, message.idempotency_key)
        if isinstance(payload, ReporterMessage):
            return await adapter.send_replies(await self._address(payload), list(payload.replies),
                                              message.idempotency_key)
        if isinstance(payload, RoomMessage):
            destination = adapter.coordinator_destination() or destination
            if not destination:
                raise DeliveryError(f"no coordinator room or channel known yet on {message.platform}")
            return await adapter.post_in_room(destination, payload.reply, message.idempotency_key)
        raise DeliveryError(f"unknown outbox kind {message.kind}", permanent=True)

    def _thread_text(self, adapter: Adapter, destination: str, line: ThreadLine) -> str:
        """A thread line as posted; the reporter's own words go only into a thread whose room keeps
        them from the platform's operator (on Matrix: an encrypted room), else the case link does."""
        allowed = getattr(adapter, "thread_content_allowed", None)
        if line.event == "reporter_message" and allowed is not None and not allowed(destination):
            return dialogs.Translator(self.language)("event.reporter_answered", reference=line.reference,
                                              link=self.case_link(line.reference))
        return render_thread_event(line, self.language)

    async def _address(self, payload: ReporterMessage) -> dict:
        """Where a message to a person goes: the outbox row names only the conversation, or the case
        whose reporter it is for (whose conversation only this worker's vault can open)."""
        if payload.case is not None:
            async with transaction(self.sessions) as session:
                case = await repo.get_case_by_id(session=session, case_id=payload.case)
                conversation_id = repo.reporter_conversation_id(session=session, case=case) if case else None
                conversation = await repo.get_conversation(session=session, conversation_id=conversation_id,
                                                           for_update=True) if conversation_id else None
                if conversation is None:
                    raise DeliveryError("the reporter of this case can no longer be reached", permanent=True)
                if payload.relay:
                    state = dialogs.open_relay(State.from_dict(conversation.state, conversation.language),
                                               case.reference, self.clock())
                    await repo.save_conversation_state(session=session, conversation=conversation,
                                                       state=state.to_dict(), language=state.language,
                                                       now=self.clock())
            return address_of(conversation)
        if payload.conversation is None:
            return dict(payload.address)
        async with self.sessions() as session:
            conversation = await repo.get_conversation(session=session, conversation_id=payload.conversation)
        if conversation is None:
            raise DeliveryError("the conversation of this message no longer exists", permanent=True)
        return address_of(conversation)

    async def _thread_in(self, adapter: Adapter, message: OutboxMessage, destination: str) -> str:
        """The case's thread in the coordinators' current room/channel: after the role moved (Teams,
        with a new claim code) the old thread's channel is no longer read, so the case gets a new
        post there first; the old thread is forgotten."""
        async with self.sessions() as session:
            existing = await repo.get_case_thread(session=session, case_id=message.case_id, platform=message.platform,
                                                  destination=destination)
            if existing is not None:
                return existing.root_id
            case = await repo.get_case_by_id(session=session, case_id=message.case_id)
            evidence = bool(await repo.count_case_files(session=session, case_id=case.id)) if case else False
        if case is None:
            raise DeliveryError("the case no longer exists", permanent=True)
        notification = render_case_notification(
            payload_for_case(case, link=self.case_link(case.reference), evidence=evidence), self.language,
            self.timezone)
        root = await adapter.post_case_notification(destination, notification, f"{message.idempotency_key}-moved")
        async with transaction(self.sessions) as session:
            await repo.set_case_thread(session=session, case_id=case.id, platform=message.platform,
                                       destination=destination, root_id=root, now=self.clock())
            await repo.delete_case_threads(session=session, case_id=case.id, platform=message.platform,
                                           keep=destination)
        log.info("outbox: case thread moved to the current coordinator destination case=%s", case.reference)
        return root

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Seconds to wait before the next attempt: exponential with full jitter, at least retry-after."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, attempts - 1)))
        delay = self.rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(max(delay, 0.05), max(self.max_delay, retry_after or 0))  # retry-after may exceed the cap

    async def _failed(self, message: OutboxMessage, error: str, retry_after: float | None,
                      unhealthy: bool = True) -> None:
        delay = self.backoff(message.attempts, retry_after)
        self.metrics.delivery_failed(message.platform, permanent=not unhealthy)
        if unhealthy:
            self.healthy = False
        log.warning("outbox attempt failed id=%s kind=%s platform=%s attempts=%s retry_in=%.1fs error=%s",
                    message.id, message.kind, message.platform, message.attempts, delay, error[:200])
        async with transaction(self.sessions) as session:
            await repo.mark_message_failed(session=session, message_id=message.id,
                                           retry_at=self.clock() + dt.timedelta(seconds=delay), error=error)

    async def pending(self) -> int:
        """Undelivered messages for this worker's platforms."""
        async with self.sessions() as session:
            return await repo.count_pending_messages(session=session, platforms=list(self.adapters))

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; sleeps until woken or the next message is due."""
        while not stop.is_set():
            self._wake.clear()  # before the run: a wake during the run is then not lost
            try:
                delivered = await self.run_once()
            except DATABASE_ERRORS as error:
                log.warning("outbox: database unavailable (%s); retrying", type(error).__name__)
                delivered = 0
            if delivered:
                continue
            listening = self.listener is not None and self.listener.listening
            timeout = self.listen_poll if listening else self.idle_poll
            try:
                async with self.sessions() as session:
                    due = await repo.next_due_time(session=session)
                if due is not None:
                    timeout = min(timeout, max(0.05, (due - self.clock()).total_seconds()))
            except DATABASE_ERRORS:
                pass
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            self.waiting = True  # idle until woken, stopped or the next message is due
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            self.waiting = False
            waiter.cancel()
            stopper.cancel()

    async def drain(self, timeout: float) -> bool:
        """Deliver until nothing is pending or `timeout` seconds passed; True when all were delivered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.run_once()
            if await self.pending() == 0:
                return True
            async with self.sessions() as session:
                due = await repo.next_due_time(session=session)
            wait = 0.05 if due is None else max(0.05, (due - self.clock()).total_seconds())
            await asyncio.sleep(min(wait, max(0.0, deadline - loop.time())))
        return await self.pending() == 0

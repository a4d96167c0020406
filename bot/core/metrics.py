"""Prometheus metrics: every metric Meldbot exports, in one registry per app (no global default
registry, so that several apps in one process do not collide).

Labels carry codes only (platform names, report kinds, outbox kinds, where a login was refused):
never a user ID, a reference, a name or any text a person wrote.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Awaitable, Callable, Iterable, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dialogs.categories import KINDS
from storage.models import OutboxMessage, Timer

T = TypeVar("T")

#: The content type of `Metrics.exposition()`.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Where authentication failures are counted (the `where` label).
AUTH_PLACES = ("teams_jwt", "web_login")

#: Turns take milliseconds to a few seconds (the turn timeout); deliveries up to the platform's timeouts.
TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _code(value: str, allowed: Iterable[str] | None = None) -> str:
    """A label value that can only be a code: outside `allowed` (or not code-like) it is "other"."""
    if allowed is not None:
        return value if value in allowed else "other"
    return value if value.replace("_", "").replace("-", "").isalnum() and len(value) <= 40 else "other"


class Metrics:
    """The metrics of one Meldbot. Built by the wiring (bot/app.py) and passed to the parts that count."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reports = Counter("meldbot_reports_created", "Reports created, one per kind of each report",
                               ["platform", "kind"], registry=r)
        self.turns = Counter("meldbot_turns", "Reporter turns handled", ["platform"], registry=r)
        self.turn_seconds = Histogram("meldbot_turn_duration_seconds", "Time from a message to its replies",
                                      ["platform"], buckets=TURN_BUCKETS, registry=r)
        self.outbox_pending = Gauge("meldbot_outbox_pending", "Undelivered outbox messages (all instances)",
                                    registry=r)
        self.outbox_oldest = Gauge("meldbot_outbox_oldest_pending_age_seconds",
                                   "Age of the oldest undelivered outbox message (0: none)", registry=r)
        self.delivery_seconds = Histogram("meldbot_delivery_duration_seconds", "Time of one successful delivery",
                                          ["platform", "kind"], buckets=DELIVERY_BUCKETS, registry=r)
        self.delivery_failures = Counter("meldbot_delivery_failures", "Failed delivery attempts",
                                         ["platform", "permanent"], registry=r)
        self.auth_failures = Counter("meldbot_auth_failures", "Refused authentications", ["where"], registry=r)
        self.leader = Gauge("meldbot_leader", "1 while this instance leads (Matrix syncer, timers)", registry=r)
        self.timers_due = Gauge("meldbot_timers_due", "Timers due now and not done (all instances)", registry=r)
        # Only exported when a Matrix account is configured (a lag of 0 would look healthy).
        self.matrix_sync_lag = Gauge("meldbot_matrix_sync_lag_seconds", "Seconds since the last successful "
                                     "Matrix sync", registry=None)
        self.leader.set_function(lambda: 1.0)
        for where in AUTH_PLACES:
            self.auth_failures.labels(where)  # exported as 0 from the start: alerts see the series

    # -- counting (small calls at the places where things happen) --------------------------------------

    async def timed_turn(self, platform: str, work: Awaitable[T]) -> T:
        """Await one turn, counting it and its duration (failed turns too)."""
        started = time.perf_counter()
        try:
            return await work
        finally:
            platform = _code(platform)
            self.turns.labels(platform).inc()
            self.turn_seconds.labels(platform).observe(time.perf_counter() - started)

    def reports_created(self, created: Iterable[tuple[str, Iterable[str]]]) -> None:
        """Committed reports as (platform, kinds): one increment per kind of each report."""
        for platform, kinds in created:
            for kind in list(kinds) or ["other"]:
                self.reports.labels(_code(platform), _code(kind, KINDS)).inc()

    async def timed_delivery(self, platform: str, kind: str, work: Awaitable[T]) -> T:
        """Await one send; its duration is observed when it succeeds (failures are counted apart)."""
        started = time.perf_counter()
        result = await work
        self.delivery_seconds.labels(_code(platform), _code(kind)).observe(time.perf_counter() - started)
        return result

    def delivery_failed(self, platform: str, *, permanent: bool) -> None:
        self.delivery_failures.labels(_code(platform), "true" if permanent else "false").inc()

    def auth_failed(self, where: str) -> None:
        """A refused authentication at `where` (one of AUTH_PLACES)."""
        self.auth_failures.labels(_code(where, AUTH_PLACES)).inc()

    # -- computed at scrape time ----------------------------------------------------------------------

    def watch_leader(self, leader: Callable[[], bool]) -> None:
        self.leader.set_function(lambda: 1.0 if leader() else 0.0)

    def watch_matrix_sync(self, synced_at: Callable[[], float], syncing: Callable[[], bool] = lambda: True) -> None:
        """Export the sync lag from `synced_at()` (monotonic seconds of the last successful sync);
        unknown (NaN) while this instance does not sync (`syncing()`: it does not lead)."""
        self.matrix_sync_lag.set_function(
            lambda: max(0.0, time.monotonic() - synced_at()) if syncing() else math.nan)
        self.registry.register(self.matrix_sync_lag)

    async def refresh(self, session: AsyncSession, now: dt.datetime) -> None:
        """Read the outbox and timer gauges from the database: one query of three aggregates on
        indexed columns. Unknown (NaN) when the database does not answer: the rest is still exported."""
        pending = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
        oldest = select(func.min(OutboxMessage.created_at)).where(OutboxMessage.delivered_at.is_(None))
        due = select(func.count()).select_from(Timer).where(Timer.done_at.is_(None), Timer.due_at <= now)
        row = (await session.execute(select(pending.scalar_subquery(), oldest.scalar_subquery(),
                                            due.scalar_subquery()))).one()
        count, first, timers = row
        self.outbox_pending.set(int(count or 0))
        self.outbox_oldest.set(max(0.0, (now - first).total_seconds()) if first is not None else 0.0)
        self.timers_due.set(int(timers or 0))

    def unknown(self) -> None:
        """The database gauges when the database cannot be read."""
        for gauge in (self.outbox_pending, self.outbox_oldest, self.timers_due):
            gauge.set(math.nan)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

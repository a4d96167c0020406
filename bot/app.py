"""Wiring: every long-lived object is built here, once, and passed in through constructors."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage import repo, transaction
from storage.notify import OutboxListener
from dialogs import Context, builtin_text
from dialogs.i18n import LANGUAGES
from dialogs.understanding import Vocabulary, VocabularyError, builtin, extended

from bot.config import ConfigError, Settings
from bot.core.casework import CaseWork
from bot.core.clock import utc_now
from bot.core.engine import Engine
from bot.core.errors import DATABASE_ERRORS
from bot.core.metrics import Metrics
from bot.core.shared_state import SharedState
from bot.logs import silence_content_loggers
from bot.core.signals import HOURLY as HOURLY_SIGNALS, MONTHLY as MONTHLY_SIGNALS, Signals
from bot.masterkey import open_storage
from bot.web.cases import CasePages
from bot.workers.outbox import OutboxWorker
from bot.adapters.contract import Adapter
from bot.workers.timers import TimerWorker
from bot.workers.leader import AlwaysLeader, PostgresLeadership
from bot.workers.retention import KIND as RETENTION_PURGE, RetentionWorker
from bot.web.health import READY_TIMEOUT_S, Readiness, create_metrics_app
from bot.web.server import create_app

log = logging.getLogger(__name__)


def build_context(settings: Settings) -> Context:
    """The dialogue's view of the organisation: name, language, time zone, texts and departments."""
    org = settings.organisation

    def texts(path, name: str) -> dict[str, str]:
        result = {}
        for language in LANGUAGES:
            if path is None:
                result[language] = builtin_text(name, language)
                continue
            file = settings.resolve(path, language)
            try:
                result[language] = file.read_text("utf-8")
            except OSError as error:
                raise ConfigError(f"[organisation] {name}: cannot read {file}: {error.strerror}") from None
        return result

    def same_for_all(value: str | None) -> dict[str, str]:
        return {language: value for language in LANGUAGES} if value else {}

    return Context(
        vocabulary=organisation_vocabulary(settings),
        organisation=org.name, default_language=org.language, timezone=ZoneInfo(org.timezone),
        house_rules=texts(org.house_rules, "house_rules"), norm_card=texts(org.norm_card, "norm_card"),
        aftercare=same_for_all(org.aftercare), contact_promise=same_for_all(org.contact_promise),
        closed_years=settings.privacy.closed_years, withdrawn_days=settings.privacy.withdrawn_days,
        departments=tuple(department_names(settings).items()),
    )


def organisation_vocabulary(settings: Settings) -> Vocabulary | None:
    """The built-in vocabulary with `[organisation] vocabulary` added (None: the built-in one)."""
    path = settings.organisation.vocabulary
    if path is None:
        builtin()  # read and lemmatised once at start, not in the first reporter's turn
        return None
    file = settings.resolve(path, settings.organisation.language)
    try:
        text = file.read_text("utf-8")
    except OSError as error:
        raise ConfigError(f"[organisation] vocabulary: cannot read {file}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"[organisation] vocabulary: {file} is not UTF-8 text") from None
    try:
        return extended(text, source=f"[organisation] vocabulary ({file})")
    except VocabularyError as error:
        raise ConfigError(str(error)) from None


def department_names(settings: Settings) -> dict[str, str]:
    """The configured departments, code -> display name, in the configured order."""
    names = settings.organisation.department_names
    return {code: names.get(code, code) for code in settings.organisation.departments}


async def sync_facts(sessions: async_sessionmaker[AsyncSession], now: dt.datetime) -> None:
    """Write the statistics facts of cases that lack a current one (after an upgrade or a restore)."""
    while True:
        async with transaction(sessions) as session:
            written = await repo.sync_facts(session=session, now=now, batch=500)
        if written:
            log.info("statistics: wrote the facts of %d cases", written)
        if written < 500:
            return


@dataclass
class Meldbot:
    """A running Meldbot: database, engine, outbox worker, adapters and web server."""

    settings: Settings
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    engine: Engine
    worker: OutboxWorker
    timers: TimerWorker
    pages: CasePages
    adapters: dict[str, Adapter]
    retention: RetentionWorker | None = None
    metrics: Metrics = field(default_factory=Metrics)
    #: What /readyz checks (database, migrations, platforms, leading).
    readiness: Readiness | None = None
    clock: Callable[[], dt.datetime] = utc_now
    #: Whether this instance leads (runs the single-instance adapters and the timers).
    leadership: AlwaysLeader | PostgresLeadership = field(default_factory=AlwaysLeader)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _leader_stop: asyncio.Event | None = None
    _leader_tasks: list[asyncio.Task] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _metrics_runner: web.AppRunner | None = None

    async def scrape(self) -> bytes:
        """The metrics text, with the outbox and timer gauges read from the database now."""
        try:
            async with self.sessions() as session:
                await asyncio.wait_for(self.metrics.refresh(session, self.clock()), READY_TIMEOUT_S)
        except (*DATABASE_ERRORS, TimeoutError) as error:
            log.warning("metrics: database unavailable (%s); its gauges are unknown", type(error).__name__)
            self.metrics.unknown()
        return self.metrics.exposition()

    def web_app(self) -> web.Application:
        """The web server's application: the adapters' routes, the case pages, health and (unless
        `[metrics] listen` gives it an address of its own) /metrics for loopback clients."""
        routes = [route for adapter in self.adapters.values() for route in adapter.routes()]
        routes += self.pages.routes()
        own_address = self.settings.metrics.listen is not None
        return create_app(db_engine=self.db, routes=routes, public_url=self.settings.web.public_url,
                          readiness=self.readiness, scrape=None if own_address else self.scrape)

    def single_instance(self) -> dict[str, Adapter]:
        """The adapters only the leader runs (Matrix: one device, one sync, one encryption store)."""
        return {name: adapter for name, adapter in self.adapters.items() if getattr(adapter, "single_instance", False)}

    async def _lead(self) -> None:
        """This instance leads now: the single-instance adapters start, the outbox worker sends on
        them too, and the timer worker runs."""
        started: list[str] = []
        try:
            for name, adapter in self.single_instance().items():
                await adapter.start(self.engine)
                started.append(name)
                self.worker.adapters[name] = adapter
        except BaseException:
            for name in reversed(started):
                self.worker.adapters.pop(name, None)
                await self.adapters[name].stop()
            raise
        self._leader_stop = asyncio.Event()
        self._leader_tasks = [asyncio.create_task(self.timers.run(self._leader_stop), name="timers")]
        self.worker.wake()

    async def _follow(self) -> None:
        """This instance no longer leads: the leader's work stops (the outbox keeps what is undelivered)."""
        if self._leader_stop is not None:
            self._leader_stop.set()
        for task in self._leader_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
        self._leader_tasks = []
        for name, adapter in self.single_instance().items():
            self.worker.adapters.pop(name, None)
            await adapter.stop()

    async def start(self, *, web_server: bool) -> None:
        """Start adapters, the outbox worker, leadership and (optionally) the web server."""
        single = self.single_instance()
        for name, adapter in self.adapters.items():
            if name in single:
                self.worker.adapters.pop(name, None)  # sent on by the leader only
            else:
                await adapter.start(self.engine)
        await self.leadership.begin(self._lead, self._follow)
        self._tasks.append(asyncio.create_task(self.leadership.run(self.stop_event), name="leadership"))
        self._tasks.append(asyncio.create_task(self.worker.run(self.stop_event), name="outbox"))
        if self.worker.listener is not None:
            self._tasks.append(asyncio.create_task(self.worker.listener.run(self.stop_event), name="outbox listener"))
        if self.retention is not None:
            self._tasks.append(asyncio.create_task(self.retention.run(self.stop_event), name="retention"))
        if web_server:
            self._runner = web.AppRunner(self.web_app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.web.host, self.settings.web.port)
            await site.start()
            log.info("web server listening on %s (public URL %s)", self.settings.web.listen,
                     self.settings.web.public_url)
        if self.settings.metrics.listen is not None:
            self._metrics_runner = web.AppRunner(create_metrics_app(self.scrape), access_log=None)
            await self._metrics_runner.setup()
            await web.TCPSite(self._metrics_runner, self.settings.metrics.host, self.settings.metrics.port).start()
            log.info("metrics listening on %s", self.settings.metrics.listen)

    async def stop(self) -> None:
        """Stop everything; undelivered messages stay in the outbox for the next start."""
        self.stop_event.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
        if self.leadership.is_leading():
            await self._follow()  # the single-instance adapters stop here
        await self.leadership.end()
        single = self.single_instance()
        for name, adapter in self.adapters.items():
            if name not in single:
                await adapter.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.db.dispose()


async def build(settings: Settings, adapters: dict[str, Adapter], clock: Callable[[], dt.datetime] = utc_now,
                leader: Callable[[], bool] | None = None,
                leadership: AlwaysLeader | PostgresLeadership | None = None) -> Meldbot:
    """Connect to the database (migrating it when configured) and wire everything together.

    `clock` is the one source of "now" for every part (tests move it by hand); `leadership` decides
    whether this instance leads (default: it always does; `meldbot run` on PostgreSQL competes, see
    `bot.workers.leader`); `leader` overrides what /readyz and the metrics show as leading."""
    leadership = leadership or AlwaysLeader()
    leader = leader or leadership.is_leading
    silence_content_loggers()  # whoever configured logging: SQL parameters (report content) stay out
    context = build_context(settings)
    opened = await open_storage(settings)
    db, sessions = opened.db, opened.sessions
    await sync_facts(sessions, clock())
    for name, adapter in adapters.items():
        # Platform stores (Matrix's encryption store, adapter state files) are sealed with a key of
        # their own, derived from the keyring (stable when the master key is rotated).
        use_store_key = getattr(adapter, "use_store_key", None)
        if use_store_key is not None:
            use_store_key(opened.vault.derive(f"store:{name}"))
        use_shared_state = getattr(adapter, "use_shared_state", None)
        if use_shared_state is not None:
            # What every instance must see alike (Teams channel, Matrix store) lives in the database.
            use_shared_state(SharedState(sessions, name, clock))
    metrics = Metrics()  # a registry of its own: several apps in one process do not collide
    metrics.watch_leader(leader)
    for adapter in adapters.values():
        watch_adapter(metrics, adapter, leader)
    worker = OutboxWorker(sessions=sessions, adapters=adapters, language=settings.organisation.language,
                          timezone=context.timezone, clock=clock, metrics=metrics,
                          lease=dt.timedelta(seconds=settings.outbox.lease_seconds))
    if db.dialect.name == "postgresql":
        # A row queued on any instance wakes this worker (NOTIFY from the outbox trigger).
        worker.listener = OutboxListener(settings.database.url, worker.wake)
        worker.read_first = False

    def coordinator_targets() -> list[tuple[str, str | None]]:
        # Every platform gets the notification; one whose room/channel is not known yet (a Teams
        # channel set later by a message) keeps it in the outbox until it is.
        return [(name, adapter.coordinator_destination()) for name, adapter in adapters.items()]

    async def is_coordinator(platform: str, user: str) -> bool:
        adapter = adapters.get(platform)
        return bool(adapter is not None and await adapter.is_coordinator(user))

    async def open_direct_chat(platform: str, address: dict) -> dict:
        return await adapters[platform].open_direct_chat(address)

    # One CaseWork for the chat commands, the timers and the case pages: the same operations everywhere.
    casework = CaseWork(public_url=settings.web.public_url, coordinator_targets=coordinator_targets,
                        timezone=context.timezone, followup=settings.followup)
    signals = Signals(settings=settings.stats, language=settings.organisation.language, timezone=context.timezone,
                      public_url=settings.web.public_url, coordinator_targets=coordinator_targets,
                      departments=department_names(settings))
    engine = Engine(sessions=sessions, context=context, public_url=settings.web.public_url,
                    coordinator_targets=coordinator_targets, on_outbox=worker.wake,
                    delivery_healthy=lambda: worker.healthy, followup=settings.followup,
                    is_coordinator=is_coordinator, open_direct_chat=open_direct_chat,
                    limits=settings.limits, login_link_minutes=settings.web.login_link_minutes,
                    clock=clock, casework=casework, signals=signals, metrics=metrics,
                    replay_platforms=frozenset(name for name, adapter in adapters.items()
                                               if getattr(adapter, "idempotent_sends", False)))
    worker.case_link = casework.case_link
    def is_room(platform: str, target: str) -> bool:
        adapter = adapters.get(platform)
        return adapter is not None and adapter.is_room(target)

    timers = TimerWorker(sessions=sessions, casework=casework, language=settings.organisation.language,
                         on_outbox=worker.wake, clock=clock, is_room=is_room)
    # The daily purge is a caseless timer the TimerWorker fires (once across processes).
    retention = RetentionWorker(sessions=sessions, casework=casework, privacy=settings.privacy,
                                timezone=context.timezone, clock=clock)
    timers.jobs[RETENTION_PURGE] = retention.fire
    timers.jobs[HOURLY_SIGNALS] = signals.hourly
    timers.jobs[MONTHLY_SIGNALS] = signals.monthly
    casework.new_case_hooks.append(signals.schedule_check)
    # The case pages never hold the key that links an anonymous case to its reporter.
    pages = CasePages(sessions=opened.restricted, casework=casework, web_settings=settings.web,
                      organisation=settings.organisation.name, language=settings.organisation.language,
                      timezone=context.timezone, on_outbox=worker.wake, clock=clock,
                      is_coordinator=engine.coordinator_allowed, stats=settings.stats,
                      departments=department_names(settings))
    pages.on_login_refused = lambda: metrics.auth_failed("web_login")
    pages.on_reports_created = metrics.reports_created
    readiness = Readiness(db=db, platforms={name: platform_ready(adapter, leader) for name, adapter in adapters.items()},
                          leader=leader)
    return Meldbot(settings=settings, db=db, sessions=sessions, engine=engine, worker=worker, timers=timers,
                   pages=pages, adapters=adapters, retention=retention, metrics=metrics, readiness=readiness,
                   clock=clock, leadership=leadership)


def platform_ready(adapter: Adapter, leader: Callable[[], bool] = lambda: True) -> Callable[[], bool]:
    """Whether a platform is connected: its adapter's optional `ready()` (Matrix: a recent successful
    sync); a platform without one (Teams: the endpoint is served; the console) is always ready. A
    single-instance adapter on an instance that does not lead is not its to run: ready."""
    ready = getattr(adapter, "ready", None)
    if not callable(ready):
        return lambda: True
    if getattr(adapter, "single_instance", False):
        return lambda: not leader() or ready()
    return ready


def watch_adapter(metrics: Metrics, adapter: Adapter, leader: Callable[[], bool] = lambda: True) -> None:
    """The metrics an adapter feeds: Matrix's sync lag (read at scrape time from the time of its last
    successful sync; unknown on an instance that does not lead, which does not sync), Teams' refused
    tokens (counted by its authentication)."""
    if isinstance(getattr(adapter, "synced_at", None), (int, float)):
        single = getattr(adapter, "single_instance", False)
        metrics.watch_matrix_sync(lambda: adapter.synced_at, leader if single else (lambda: True))
    auth = getattr(adapter, "auth", None)
    if auth is not None and hasattr(auth, "on_refused"):
        auth.on_refused = lambda: metrics.auth_failed("teams_jwt")

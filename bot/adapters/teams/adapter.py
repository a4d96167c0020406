"""The Microsoft Teams platform (botbuilder 4.17.1, CloudAdapter behind `POST /api/messages`).

Translates only: activities become `InboundMessage`/`CoordinatorMessage`, neutral replies become
activities. Its own small state (the coordinator channel, its team and type, the service URL, retired
channels) is one JSON document in the shared state (the database, when the app gives it), so that
every instance behind the same endpoint sees a claimed channel at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
from aiohttp import web
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.core import TurnContext
from botbuilder.schema import Activity
from botframework.connector.auth import ServiceClientCredentialsFactory

from bot.adapters.common import FileState, JsonFile, StoreSeal, prepare_store
from bot.adapters.contract import Bot, StateConflict
from bot.adapters.teams import fixes
from bot.adapters.teams.auth import build_authentication
from bot.adapters.teams.channel import REFRESH_S, ChannelMixin, parse_claim
from bot.adapters.teams.inbound import InboundMixin, _Handler
from bot.adapters.teams.markdown import combined_markdown, reply_markdown
from bot.adapters.teams.outbound import OutboundMixin
from bot.adapters.teams.settings import STATE_DOCUMENT
from bot.adapters.teams.settings import check_settings
from bot.config import TeamsSettings

__all__ = ["TeamsAdapter", "check_settings", "combined_markdown", "parse_claim", "reply_markdown"]

log = logging.getLogger(__name__)

#: Read-modify-write attempts of the state before a change gives up (each lost only to another writer).
UPDATE_ATTEMPTS = 5


class TeamsAdapter(ChannelMixin, InboundMixin, OutboundMixin):
    """One Azure Bot registration in one tenant. Its parts (coordinator channel, inbound, outbound)
    are mixins in their own modules sharing the state set up here."""

    platform = "teams"
    #: The Bot Connector has no idempotency key: a resend after an ambiguous failure can post twice.
    idempotent_sends = False

    def __init__(self, *, settings: TeamsSettings, store_dir: Path, language: str,
                 credentials_factory: ServiceClientCredentialsFactory | None = None, files_per_message: int = 10):
        check_settings(settings, credentials_factory)
        fixes.apply()
        self.settings = settings
        self.language = language
        self.files_per_message = files_per_message
        self.store_dir = Path(store_dir)
        #: Where the state lived before it was shared (imported once, see `start`).
        self.state_file = self.store_dir / "teams-state.json"
        # Sealed with the store key once the app gives it (it holds conversation references).
        self._seal = StoreSeal()
        self._state_store = JsonFile(self.state_file, self._seal)
        #: The state's store: the database once the app gives it, sealed files in store_dir before.
        self._shared: Any = FileState(self.store_dir, self._seal)
        self._version = 0  # of the document `self.state` was loaded from
        self._checked = 0.0  # monotonic time of the last version check
        self._lock = asyncio.Lock()
        self._background: asyncio.Task | None = None
        #: Channel ID -> when `coordinator_destination()` last gave it out (see `_check_destination`).
        self._told: dict[str, float] = {}
        self.auth = build_authentication(settings, credentials_factory)
        self.cloud = CloudAdapter(self.auth)
        self.cloud.on_turn_error = self._on_turn_error
        self.handler = _Handler(self)
        self.bot: Bot | None = None
        self.state: dict[str, Any] = {}
        self._http: aiohttp.ClientSession | None = None
        self._references: dict[tuple, dict] = {}
        #: Claim messages already answered (Teams may deliver the same activity twice).
        self._claims_seen: set[tuple] = set()

    # -- lifecycle --------------------------------------------------------------------------------

    def use_store_key(self, key: bytes) -> None:
        """Seal the state file with (a key derived from) `key`; called by the app before `start()`."""
        self._seal.use_key(key)

    def use_shared_state(self, state: Any) -> None:
        """Keep the state in `state` (a `SharedState`: the database) instead of store_dir; before `start()`."""
        self._shared = state

    def thread_content_allowed(self, destination: str) -> bool:
        return True  # a Teams channel lies in the organisation's own tenant (only Matrix rooms may be plain)

    async def start(self, bot: Bot) -> None:
        self.bot = bot
        prepare_store(self.store_dir)
        await self._refresh()
        if self._version == 0 and self.state_file.exists():
            await self._import_state_file()
        configured = self.settings.coordinator_channel

        def override(state: dict[str, Any]) -> bool:
            if not configured or state.get("channel_id") == configured:
                return False
            # The administrator's channel wins over one claimed from chat; what was learnt about that
            # other channel (its team, its type) says nothing about this one.
            self._retire(state, state.get("channel_id"))
            for key in ("team_id", "channel_type"):
                state.pop(key, None)
            state["channel_id"] = configured
            return True

        await self._update(override)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        if not self.settings.app_id:
            log.warning("teams: AUTHENTICATION IS OFF (allow_unauthenticated): anyone can post activities. "
                        "Never run like this in production.")
        log.info("teams: endpoint POST /api/messages ready (coordinator channel: %s)",
                 "set" if self.state.get("channel_id") else "not set")

    async def stop(self) -> None:
        if self._background is not None:
            self._background.cancel()
        if self._http:
            await self._http.close()

    # -- the state ----------------------------------------------------------------------------------

    async def _import_state_file(self) -> None:
        """The state an earlier version kept in `teams-state.json`, imported once into the shared
        state (which is the truth from then on); the file is renamed so that it is never read again."""
        old = self._state_store.load({})  # a file sealed under another key stops the start, by name

        taken: list[bool] = []

        def take(state: dict[str, Any]) -> bool:
            taken[:] = [self._version == 0]
            if not taken[0]:
                return False  # another instance wrote (or imported) first: its state is the truth
            state.clear()
            state.update(old)
            return True

        await self._update(take)
        self.state_file.rename(self.state_file.with_name(self.state_file.name + ".imported"))
        log.info("teams: %s %s the shared state", self.state_file.name,
                 "imported into" if taken and taken[0] else "not imported: another instance had already written")

    async def _refresh(self) -> None:
        """Reload the state when another instance (or process) has written it since it was loaded:
        one version check, the document is opened only when it changed."""
        self._checked = time.monotonic()
        if await self._shared.version(STATE_DOCUMENT) == self._version:
            return
        data, version = await self._shared.load(STATE_DOCUMENT)
        self.state = json.loads(data) if data is not None else {}
        self._version = version

    async def _refresh_quietly(self, recent: float = 0.0) -> None:
        """`_refresh` for a turn or a delivery: when the store cannot answer, the copy in memory is
        used (a reporter's turn must not fail on it). `recent`: skip when checked within that many s."""
        if recent and time.monotonic() - self._checked < recent:
            return
        try:
            async with self._lock:  # never a load that ends after a newer write and undoes it in memory
                await self._refresh()
        except Exception as error:
            log.warning("teams: shared state not refreshed (%s); using the last copy", type(error).__name__)

    def _refresh_soon(self) -> None:
        """From a sync accessor: refresh in the background when the copy was not checked lately, so
        that the next read (the outbox's retry) sees what another instance wrote."""
        if time.monotonic() - self._checked < REFRESH_S or (self._background and not self._background.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._background = loop.create_task(self._refresh_quietly())

    async def _update(self, change: Callable[[dict[str, Any]], bool]) -> None:
        """Read-modify-write: reload the newest state, apply `change` to it (it returns whether it
        changed anything) and write it only if nobody wrote it since the reload (compare-and-set);
        otherwise reload and apply again, so that a change another instance made (a claimed channel)
        is never lost."""
        async with self._lock:  # this instance's writers (and loads) one at a time
            for attempt in range(UPDATE_ATTEMPTS):
                await self._refresh()
                state = json.loads(json.dumps(self.state))  # a copy: memory changes only once it is saved
                if not change(state):
                    return
                try:
                    self._version = await self._shared.save_json(STATE_DOCUMENT, state, self._version)
                except StateConflict:
                    log.info("teams: the shared state was written by another instance meanwhile; applying again")
                    self._checked = 0.0
                    continue
                self.state = state
                return
            raise StateConflict(f"teams state: still written by others after {UPDATE_ATTEMPTS} attempts")

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/messages", self.handle_request)]

    async def _on_turn_error(self, turn_context: TurnContext, error: Exception) -> None:
        log.error("teams: turn failed (%s)", type(error).__name__)
        raise error

    async def _remember_service_url(self, activity: Activity) -> None:
        service_url = activity.service_url
        if not service_url or self.state.get("service_url") == service_url:
            return

        def remember(state: dict[str, Any]) -> bool:
            changed = state.get("service_url") != service_url
            state["service_url"] = service_url
            return changed

        try:
            await self._update(remember)
        except Exception as error:
            # The turn goes on (the engine answers "not saved" when the database is down); the next
            # activity tries again. Meanwhile this instance uses it from memory.
            log.warning("teams: service URL not saved (%s)", type(error).__name__)
            self.state["service_url"] = service_url


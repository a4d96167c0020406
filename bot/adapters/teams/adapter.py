"""The Microsoft Teams platform (botbuilder 4.17.1, CloudAdapter behind `POST /api/messages`).

Translates only: activities become `InboundMessage`/`CoordinatorMessage`, neutral replies become
activities. Its own small state (the coordinator channel, its team and type, the service URL) lives
in `store_dir`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.core import TurnContext
from botbuilder.schema import Activity
from botframework.connector.auth import ServiceClientCredentialsFactory

from bot.adapters.common import JsonFile, StoreSeal, prepare_store
from bot.adapters.contract import Bot
from bot.adapters.teams import fixes
from bot.adapters.teams.auth import build_authentication
from bot.adapters.teams.channel import ChannelMixin, parse_claim
from bot.adapters.teams.inbound import InboundMixin, _Handler
from bot.adapters.teams.markdown import combined_markdown, reply_markdown
from bot.adapters.teams.outbound import OutboundMixin
from bot.adapters.teams.settings import check_settings
from bot.config import TeamsSettings

__all__ = ["TeamsAdapter", "check_settings", "combined_markdown", "parse_claim", "reply_markdown"]

log = logging.getLogger(__name__)


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
        self.state_file = self.store_dir / "teams-state.json"
        # Sealed with the store key once the app gives it (it holds conversation references).
        self._seal = StoreSeal()
        self._state_store = JsonFile(self.state_file, self._seal)
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

    def thread_content_allowed(self, destination: str) -> bool:
        return True  # a Teams channel lies in the organisation's own tenant (only Matrix rooms may be plain)

    async def start(self, bot: Bot) -> None:
        self.bot = bot
        prepare_store(self.store_dir)
        self.state = self._state_store.load({})
        configured = self.settings.coordinator_channel
        if configured and self.state.get("channel_id") != configured:
            # The administrator's channel wins over one claimed from chat; what was learnt about that
            # other channel (its team, its type) says nothing about this one.
            self._retire(self.state.get("channel_id"))
            for key in ("team_id", "channel_type"):
                self.state.pop(key, None)
            self.state["channel_id"] = configured
            self._save()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        if not self.settings.app_id:
            log.warning("teams: AUTHENTICATION IS OFF (allow_unauthenticated): anyone can post activities. "
                        "Never run like this in production.")
        log.info("teams: endpoint POST /api/messages ready (coordinator channel: %s)",
                 "set" if self.state.get("channel_id") else "not set")

    async def stop(self) -> None:
        if self._http:
            await self._http.close()

    def _save(self) -> None:
        self._state_store.save(self.state)
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/messages", self.handle_request)]

    async def _on_turn_error(self, turn_context: TurnContext, error: Exception) -> None:
        log.error("teams: turn failed (%s)", type(error).__name__)
        raise error

    def _remember_service_url(self, activity: Activity) -> None:
        if activity.service_url and self.state.get("service_url") != activity.service_url:
            self.state["service_url"] = activity.service_url
            self._save()


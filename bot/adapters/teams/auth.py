"""Bot Framework authentication for the Teams endpoint: strict, single tenant, 401 for every failure."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Callable

from botbuilder.integration.aiohttp import (
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import Activity
from botframework.connector.auth import (
    AuthenticateRequestResult,
    AuthenticationConstants,
    BotFrameworkAuthentication,
    ConnectorFactory,
    ServiceClientCredentialsFactory,
)

from bot.config import TeamsSettings

log = logging.getLogger(__name__)

#: How long a validated bearer token is remembered at most (and never past its own expiry).
VALIDATED_TTL_S = 300.0
#: Most remembered tokens (the Bot Connector uses one at a time; forged tokens are never remembered).
VALIDATED_MAX = 1024


def activity_tenant(activity: Activity) -> str | None:
    """The tenant of an activity. 4.17.1 drops `conversation.tenantId`, so read the channel data."""
    data = activity.channel_data or {}
    tenant = data.get("tenant") if isinstance(data, dict) else getattr(data, "tenant", None)
    if isinstance(tenant, dict):
        return tenant.get("id")
    return getattr(tenant, "id", None)


class StrictAuthentication(BotFrameworkAuthentication):
    """Wraps the SDK's authentication: any failure becomes PermissionError (401), and activities of
    another tenant are refused before any handler runs."""

    def __init__(self, inner: BotFrameworkAuthentication, tenant_id: str, enforce_tenant: bool):
        self._inner = inner
        self._tenant_id = tenant_id
        self._enforce_tenant = enforce_tenant
        self._connectors: dict[tuple, object] = {}
        self._token_clients: dict[str, object] = {}
        self._validated: dict[tuple, tuple[float, AuthenticateRequestResult]] = {}
        #: Called at every refused request (the wiring counts them in the metrics).
        self.on_refused: Callable[[], None] = lambda: None

    async def authenticate_request(self, activity: Activity, auth_header: str) -> AuthenticateRequestResult:
        key = (auth_header, activity.service_url, activity.channel_id)
        now = time.time()
        cached = self._validated.get(key)
        if cached is not None and cached[0] > now:
            result = cached[1]
        else:
            try:
                result = await self._inner.authenticate_request(activity, auth_header)
            except PermissionError:
                log.warning("teams: request refused: authentication failed")
                self.on_refused()
                raise
            except Exception as error:  # the SDK raises plain exceptions (signature, expiry, key): still 401
                log.warning("teams: request refused: invalid token (%s)", type(error).__name__)
                self.on_refused()
                raise PermissionError("invalid token") from error
            result.connector_factory = _ReusingConnectorFactory(
                result.connector_factory, self._connectors, _app_id(result.claims_identity)) \
                if result.connector_factory else None
            self._remember(key, result, now)
        if self._enforce_tenant and activity_tenant(activity) != self._tenant_id:
            log.warning("teams: activity from another tenant refused")
            self.on_refused()
            raise PermissionError("tenant not allowed")
        return result

    def _remember(self, key: tuple, result: AuthenticateRequestResult, now: float) -> None:
        """Keep a validated token's result until it expires (at most VALIDATED_TTL_S). The Bot
        Connector sends the same token with every activity for about an hour: validating its
        signature and claims again for each one changes nothing but costs milliseconds. A token is
        only ever remembered after it passed the SDK's full validation, for the same service URL and
        channel; the tenant is still checked per activity."""
        claims = getattr(result.claims_identity, "claims", None) or {}
        try:
            expires = float(claims.get("exp"))
        except (TypeError, ValueError):
            return  # no expiry: never remembered
        if len(self._validated) >= VALIDATED_MAX:
            for stale in [k for k, (until, _) in self._validated.items() if until <= now] or \
                    list(self._validated)[:VALIDATED_MAX // 2]:
                self._validated.pop(stale, None)
        self._validated[key] = (min(expires, now + VALIDATED_TTL_S), result)

    async def authenticate_streaming_request(self, auth_header: str, channel_id_header: str):
        raise PermissionError("streaming is not supported")

    def create_connector_factory(self, claims_identity):
        return _ReusingConnectorFactory(self._inner.create_connector_factory(claims_identity),
                                        self._connectors, _app_id(claims_identity))

    async def create_user_token_client(self, claims_identity):
        # The SDK builds a new one every turn; Meldbot uses no user tokens, so one per app is plenty.
        app_id = _app_id(claims_identity)
        client = self._token_clients.get(app_id)
        if client is None:
            client = self._token_clients[app_id] = await self._inner.create_user_token_client(claims_identity)
        return client

    def create_bot_framework_client(self):
        return self._inner.create_bot_framework_client()

    def get_originating_audience(self) -> str:
        return self._inner.get_originating_audience()

    async def authenticate_channel_request(self, auth_header: str):
        try:
            return await self._inner.authenticate_channel_request(auth_header)
        except Exception as error:
            self.on_refused()
            raise PermissionError("invalid token") from error


def _app_id(claims_identity) -> str:
    claims = getattr(claims_identity, "claims", None) or {}
    return str(claims.get("aud") or claims.get("appid") or claims.get("azp") or "")


class _ReusingConnectorFactory(ConnectorFactory):
    """Reuses one connector client per (app, service URL, audience) instead of building one per turn
    (each build sets up a requests session, retry policy and credentials: most of a turn's CPU)."""

    def __init__(self, inner: ConnectorFactory, cache: dict, app_id: str):
        self._inner = inner
        self._cache = cache
        self._app_id = app_id

    async def create(self, service_url: str, audience: str = None):
        key = (self._app_id, service_url, audience)
        client = self._cache.get(key)
        if client is None:
            client = self._cache[key] = await self._inner.create(service_url, audience)
            # msrest validates every outgoing activity against the schema before serialising it: our
            # own activities, built by the SDK's factories, every time. That check is skipped.
            serializer = getattr(client, "_serialize", None)
            if serializer is not None:
                serializer.client_side_validation = False
        return client


def build_authentication(settings: TeamsSettings,
                         credentials_factory: ServiceClientCredentialsFactory | None = None) -> StrictAuthentication:
    """The authentication for `settings`; endpoint overrides select the parameterised (sovereign) path."""
    tenant_login = AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL_PREFIX + (settings.tenant_id or "botframework.com")
    config = SimpleNamespace(
        APP_ID=settings.app_id, APP_PASSWORD=settings.app_password, APP_TENANTID=settings.tenant_id,
        # Without an app ID (authentication off, a local experiment) there is no app to be single-tenant:
        # the SDK's SingleTenant factory would then refuse to start ("Property 'APP_ID' is expected").
        APP_TYPE="SingleTenant" if settings.app_id and settings.tenant_id else "MultiTenant",
    )
    if settings.openid_metadata_url or settings.token_issuer:
        config.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = (
            settings.openid_metadata_url or AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL)
        config.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = (
            settings.token_issuer or AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER)
        config.TO_CHANNEL_FROM_BOT_LOGIN_URL = tenant_login
        config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
        config.OAUTH_URL = AuthenticationConstants.OAUTH_URL
        config.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL = config.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL
    factory = credentials_factory or ConfigurationServiceClientCredentialFactory(config)
    inner = ConfigurationBotFrameworkAuthentication(config, credentials_factory=factory)
    return StrictAuthentication(inner, settings.tenant_id, enforce_tenant=bool(settings.tenant_id))

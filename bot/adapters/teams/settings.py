"""Start-up checks of `[teams]`: the combinations botbuilder cannot use are refused with the key named."""

from __future__ import annotations

import re

from botframework.connector.auth import ServiceClientCredentialsFactory

from bot.config import ConfigError, TeamsSettings

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CHANNEL_RE = re.compile(r"^19:\S+@thread\.[a-z0-9]+$")
#: The name of the adapter's state document in the shared state (platform "teams"; the doctor reads it).
STATE_DOCUMENT = "state"


def check_settings(settings: TeamsSettings, credentials_factory: ServiceClientCredentialsFactory | None) -> None:
    """Refuse the `[teams]` combinations botbuilder cannot use (it would fail with a stack trace at
    start, or silently refuse every activity later), naming the key."""
    if settings.app_password and not settings.app_id:
        raise ConfigError("[teams] app_password is set but app_id is empty: set app_id to the bot's Microsoft "
                          "App ID, or remove app_password.")
    if not settings.app_id and not settings.allow_unauthenticated:
        raise ConfigError("[teams] app_id is empty: authentication would be off. Set app_id, app_password and "
                          "tenant_id, or allow_unauthenticated = true for a local experiment only.")
    endpoint = next((key for key in ("openid_metadata_url", "token_issuer") if getattr(settings, key)), None)
    if endpoint and not settings.app_id:
        # botbuilder 4.17.1's parameterised path only takes a missing header as anonymous, never the
        # empty one CloudAdapter passes: every activity would be refused.
        raise ConfigError(f"[teams] {endpoint} is set but app_id is empty: the endpoints apply only with "
                          "authentication. Remove it for a local experiment, or set app_id.")
    if settings.app_id and not GUID_RE.match(settings.app_id):
        raise ConfigError("[teams] app_id is not a Microsoft App ID: expected a GUID such as "
                          "00000000-0000-0000-0000-000000000000 (Azure Bot > Configuration).")
    if settings.app_id and not settings.tenant_id:
        raise ConfigError("[teams] tenant_id is empty: without it activities from any tenant would be "
                          "accepted. Set your organisation's tenant ID.")
    if settings.tenant_id and not GUID_RE.match(settings.tenant_id):
        raise ConfigError("[teams] tenant_id is not a tenant ID: expected the Directory (tenant) ID, a GUID such "
                          "as 00000000-0000-0000-0000-000000000000 (not a domain name).")
    if settings.app_id and not settings.app_password and credentials_factory is None:
        raise ConfigError("[teams] app_password is empty: the bot cannot get a token to answer. Set app_password "
                          "to the client secret of the bot's app registration.")
    if settings.coordinator_channel and not CHANNEL_RE.match(settings.coordinator_channel):
        raise ConfigError("[teams] coordinator_channel is not a Teams channel ID: expected something like "
                          "19:abc123@thread.tacv2 (or remove it and claim a channel with a code).")

"""The doctor's Teams checks: a real token request for the app registration, and the coordinator
channel (configured, or claimed in chat: the adapter's state in the database)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag

import storage
from storage import repo

from bot.adapters.common import StoreError
from bot.commands.doctor import (ENTRA_FIX, FAIL, NETWORK_ERRORS, OK, Context, Result, _cause, _request,
                                 read_state_file)
from bot.core.errors import DATABASE_ERRORS


async def check_teams_token(ctx: Context) -> Result:
    """A real client-credentials token request for the app ID and password (what the SDK does
    before each send), against the tenant's token endpoint."""
    from botframework.connector.auth import AuthenticationConstants as Constants

    from bot.adapters.teams.settings import check_settings

    teams = ctx.settings.teams
    try:
        check_settings(teams, None)
    except ConfigError as error:
        return Result("teams token", FAIL, str(error), "correct the [teams] key named above")
    if not teams.app_id:
        return Result("teams token", WARN, "authentication is off (allow_unauthenticated): anyone can post to "
                      "the bot", "set [teams] app_id, app_password and tenant_id; never run like this in production")
    # Entra ID's token endpoint of the tenant (OAuth2 v2.0), where the SDK gets the bot's outbound tokens.
    url = (ctx.teams_login_url or Constants.TO_CHANNEL_FROM_BOT_LOGIN_URL_PREFIX + teams.tenant_id).rstrip("/")
    form = {"grant_type": "client_credentials", "client_id": teams.app_id, "client_secret": teams.app_password,
            "scope": Constants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE + "/.default"}
    try:
        status, data = await _request(ctx, "POST", url + "/oauth2/v2.0/token", data=form)
    except NETWORK_ERRORS as error:
        return Result("teams token", FAIL, f"the token endpoint {urlsplit(url).netloc} is not reachable "
                      f"({_cause(error)})", ENTRA_FIX)
    if status == 200 and data.get("access_token"):
        return Result("teams token", OK, f"Entra ID issued a token for app {teams.app_id} in tenant {teams.tenant_id}")
    error = str(data.get("error") or f"HTTP {status}")
    # Entra's first sentence names the AADSTS code and the cause; it holds no secret.
    description = str(data.get("error_description") or "").split("\n")[0].split(". ")[0].strip()[:200]
    detail = f"the token request was refused: {error}" + (f" ({description})" if description else "")
    codes = {code for code in data.get("error_codes") or [] if isinstance(code, int)}
    if error == "invalid_client" or codes & {7000215, 7000222, 7000218}:
        fix = (f"set [teams] app_password to a current client secret (its value, not its ID) of app registration "
               f"{teams.app_id} (Entra ID > App registrations > Certificates & secrets; secrets expire)")
    elif codes & {90002, 900023}:
        fix = "set [teams] tenant_id to your Directory (tenant) ID (Entra ID > Overview)"
    elif codes & {700016} or error == "unauthorized_client":
        fix = (f"set [teams] app_id to the Microsoft App ID of the Azure Bot (Configuration), an app registered "
               f"in tenant {teams.tenant_id} (or correct [teams] tenant_id)")
    else:
        fix = "check [teams] app_id, app_password and tenant_id against the Azure Bot's app registration"
    return Result("teams token", FAIL, detail, fix)


async def check_teams_channel(ctx: Context) -> Result:
    """The coordinator channel is configured, or was claimed in chat: the adapter's state in the
    database (shared by every instance), or the state file of a version before that."""
    teams = ctx.settings.teams
    if teams.coordinator_channel:
        return Result("teams channel", OK, f"coordinator channel {teams.coordinator_channel} (configured)")
    claim = (f"run `meldbot teams claim-code --config {ctx.config_file}` and post the code in the channel "
             "(@Meldbot coordinatiekanaal <code>), or set [teams] coordinator_channel")
    from bot.adapters.teams.settings import STATE_DOCUMENT

    state: dict | None = None
    if ctx.engine is not None and ctx.vault is not None:
        try:
            async with storage.create_sessionmaker(ctx.engine, ctx.vault)() as session:
                data, version = await repo.get_platform_state(session=session, platform="teams", name=STATE_DOCUMENT)
            state = json.loads(data) if version and data is not None else None
        except (*DATABASE_ERRORS, InvalidTag, ValueError) as error:
            return Result("teams channel", FAIL, f"the Teams state in the database cannot be read ({_cause(error)})",
                          "check the database and master key checks above, or " + claim)
    if state is None:
        state_file = ctx.settings.resolve(teams.store_dir, "") / "teams-state.json"
        try:
            state = read_state_file(state_file, ctx.store_key("teams")) or {}
        except (StoreError, ValueError, OSError) as error:
            return Result("teams channel", FAIL, str(error), "use the master key the store was made with, or " + claim)
    if state.get("channel_id"):
        return Result("teams channel", OK, f"coordinator channel {state['channel_id']} (claimed in chat)")
    return Result("teams channel", FAIL, "no coordinator channel is known: notifications wait in the outbox until "
                  "one is", claim)

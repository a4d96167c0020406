"""`meldbot doctor --config FILE`: check an installation in order (configuration; database reachable and
migrated; master key; Matrix login, device store, coordinator room and its encryption; Teams token and
coordinator channel; `[web] public_url`), one line each, with how to fix what fails.

The Teams checks live in `bot.commands.doctor_teams`. The doctor never writes, and so writes no audit entry: SQLite is opened read-only (PostgreSQL in read-only
transactions), a missing key is reported but never created, nio's store and the sealed state files are
only read, and it never logs in to Matrix (a login makes a new device). It prints no token or password.
Exit code: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 when the configuration fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlsplit

import aiohttp
from alembic.script import ScriptDirectory
from cryptography.exceptions import InvalidTag
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import storage
from storage import keys, repo
from storage.crypto import Vault
from storage.db import alembic_config

from bot.adapters.common import SEALED_MAGIC, StoreError, StoreSeal
from bot.config import ConfigError, Settings, load_settings
from bot.core.errors import DATABASE_ERRORS
from bot.masterkey import ENV_KEY, ROTATION_INTERRUPTED, next_key_opens, read_configured_key, sqlite_path

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
#: What a request to another server raises when that server cannot be reached in time.
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
#: Seconds one request of a check may take (homeserver, token endpoint, public URL, a database connection).
TIMEOUT_S = DATABASE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Result:
    """One check: its name, OK/WARN/FAIL/SKIP, what was found, and (for WARN/FAIL) how to fix it."""

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What the checks share: the settings, and what earlier checks found for later ones."""

    settings: Settings
    config_file: str
    http: aiohttp.ClientSession
    #: Where the Teams token request goes (default: Entra ID of the tenant); tests point it at loopback.
    teams_login_url: str | None = None
    engine: AsyncEngine | None = None
    database_ok: bool = False
    vault: Vault | None = None
    matrix: dict = field(default_factory=dict)
    #: The Matrix store snapshot in the database (its header and nio's database), when there is one:
    #: an instance that has not led yet has no store in its store_dir, the database has it.
    matrix_snapshot: tuple[dict, bytes] | None = None

    def store_key(self, platform: str) -> bytes | None:
        """The key an adapter's store is sealed with (as bot.app derives it), when the vault is open."""
        return self.vault.derive(f"store:{platform}") if self.vault is not None else None


def check_configuration(path: str) -> tuple[Result, Settings | None]:
    """Load the file (and the MELDBOT_* environment) as every command does."""
    try:
        settings = load_settings(path)
    except ConfigError as error:
        fix = ("give the path of the configuration file" if not Path(path).is_file()
               else "correct the key named above (deploy/meldbot.example.toml lists every key)")
        return Result("configuration", FAIL, str(error), fix), None
    return Result("configuration", OK, f"{path} loaded"), settings


def read_only_engine(settings: Settings) -> AsyncEngine:
    """An engine that cannot write: SQLite opened read-only, PostgreSQL in read-only transactions."""
    url = settings.database.url
    path = sqlite_path(settings)
    if path is not None:
        import aiosqlite

        # Without a -wal file (no instance running, or it closed cleanly) the file holds everything:
        # `immutable` then reads it without creating -wal/-shm files beside it. With one, a
        # read-only connection shares the running instance's WAL index.
        wal = path.with_name(path.name + "-wal")
        uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if wal.exists() else "&immutable=1")
        return create_async_engine("sqlite+aiosqlite://", async_creator=lambda: aiosqlite.connect(uri, uri=True))
    read_only = {"server_settings": {"default_transaction_read_only": "on"}, "timeout": DATABASE_TIMEOUT_S}
    postgres = make_url(url).get_backend_name() == "postgresql"
    return create_async_engine(url, connect_args=read_only if postgres else {})  # else: in-memory SQLite


async def check_database(ctx: Context) -> Result:
    """Reachable, and at the newest schema revision."""
    settings, path, url = ctx.settings, sqlite_path(ctx.settings), make_url(ctx.settings.database.url)
    # Never the password of the URL.
    label = f"SQLite {path}" if path else f"postgresql {url.host or 'localhost'}:{url.port or 5432}/{url.database}"
    if path is not None and not path.is_file():
        return Result("database", FAIL, f"no database file at {path}",
                      f"run `meldbot db upgrade --config {ctx.config_file}` to create it, or correct [database] url "
                      "(MELDBOT_DATABASE__URL)")
    ctx.engine = read_only_engine(settings)
    try:
        current = await asyncio.wait_for(storage.current_revision(ctx.engine), DATABASE_TIMEOUT_S * 2)
    except (*DATABASE_ERRORS, TimeoutError) as error:
        return Result("database", FAIL, f"cannot reach {label} ({_cause(error)})",
                      "check [database] url (MELDBOT_DATABASE__URL): host, port, name, user and password, "
                      "and that the database server runs and accepts connections from this machine")
    ctx.database_ok = True
    head = storage.head_revision()
    if current == head:
        return Result("database", OK, f"{label} reachable, schema at revision {head} (newest)")
    if current is None:
        found = "has no schema yet"
    elif current in {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}:
        found = f"schema is at revision {current}, this version needs {head}"
    else:
        return Result("database", FAIL, f"{label}: schema revision {current} is unknown to this version "
                      f"(newest known: {head})", "the database was upgraded by a newer Meldbot: install that "
                      "version (or newer) here too")
    return Result("database", FAIL, f"{label} reachable, but its {found}",
                  f"run `meldbot db upgrade --config {ctx.config_file}` (back the database up first)")


async def check_master_key(ctx: Context) -> Result:
    """The key is configured, readable, and opens this database's keyring (never created here)."""
    settings = ctx.settings
    fix_missing = (f"restore the key file from your backup and set [privacy] key_file to it (or give the key in "
                   f"{ENV_KEY}); a new key cannot read what is stored")
    try:
        master, path = read_configured_key(settings)
    except ConfigError as error:
        return Result("master key", FAIL, str(error), fix_missing)
    where = f"the key in {path}" if path is not None else f"the key in [privacy] key ({ENV_KEY})"
    if master is None:
        return Result("master key", FAIL, f"no master key at {path}", fix_missing + (
            "; on a new embedded install `meldbot run` creates it on the first start" if sqlite_path(settings)
            and not ctx.database_ok else ""))
    if not ctx.database_ok:
        return Result("master key", SKIP, f"{where} was read; not checked: the database is not reachable")
    try:
        rows = await keys.read_keyring(ctx.engine)
    except DATABASE_ERRORS as error:
        return Result("master key", SKIP, f"{where} was read; the keyring cannot be read ({_cause(error)})")
    if rows is None or not rows:
        return Result("master key", SKIP, f"{where} was read; the database has no keyring yet (made when it is "
                      "migrated and first started), so there is nothing to check it against")
    rotate = f"run `meldbot keys rotate --config {ctx.config_file}` again to finish it"
    try:
        keys.check_master(master, rows)  # unwraps every keyring entry: the vault below opens
        if await keys.unfinished_rotation(ctx.engine, master):
            raise keys.RotationInterrupted(ROTATION_INTERRUPTED)
    except keys.RotationInterrupted:
        return Result("master key", FAIL, f"{where} opens this database, but a rotation of the master key was "
                      "interrupted", rotate)
    except keys.WrongKey:
        if next_key_opens(path, rows):
            return Result("master key", FAIL, f"{where} is the old key: an interrupted rotation rewrapped every key "
                          "but did not replace the key file yet", rotate)
        return Result("master key", FAIL, f"{where} is not the master key of this database",
                      "set [privacy] key_file (or MELDBOT_PRIVACY__KEY) to the key this database was made with "
                      "(restore it from your backup); check that [database] url names the right database")
    ctx.vault = keys.vault_from_rows(master, rows)
    return Result("master key", OK, f"{where} opens this database's keyring")


async def _request(ctx: Context, method: str, url: str, **kwargs) -> tuple[int, dict]:
    """The status and JSON object of one request (an empty dict when the body is none)."""
    async with ctx.http.request(method, url, **kwargs) as response:
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = {}
        return response.status, data if isinstance(data, dict) else {}


async def _matrix(ctx: Context, method: str, path: str, token: str, body: dict | None = None
                  ) -> tuple[int, dict]:
    return await _request(ctx, method, ctx.settings.matrix.homeserver + "/_matrix/client/v3" + path, json=body,
                          headers={"Authorization": f"Bearer {token}"})


def read_state_file(path: Path, store_key: bytes | None):
    """An adapter's JSON state file, opened in memory (a plain one is never sealed here: no write);
    None when it does not exist. Raises StoreError when it cannot be opened."""
    data = path.read_bytes() if path.exists() else None
    if data is None or not data.startswith(SEALED_MAGIC):
        return json.loads(data) if data is not None else None
    if store_key is None:
        raise StoreError(f"{path} is sealed and the master key is not available (see the master key check)")
    seal = StoreSeal()
    seal.use_key(store_key)
    try:
        return json.loads(seal.open(data, path.name))
    except InvalidTag:
        raise StoreError(f"{path} cannot be opened with the store key of this master key") from None


async def load_matrix_snapshot(ctx: Context) -> Result | None:
    """Read the Matrix store snapshot the leader keeps in the database into `ctx` (nothing is written);
    a result only when it is there but cannot be opened."""
    from bot.adapters.matrix.shared import STORE, unpack

    if ctx.engine is None or ctx.vault is None:
        return None
    try:
        async with storage.create_sessionmaker(ctx.engine, ctx.vault)() as session:
            document, version = await repo.get_platform_state(session=session, platform="matrix", name=STORE)
        if version and document is not None:
            ctx.matrix_snapshot = unpack(document)
    except (*DATABASE_ERRORS, InvalidTag, StoreError, ValueError) as error:
        return Result("matrix store", FAIL, f"the Matrix store in the database cannot be read ({_cause(error)})",
                      "use the master key the database was made with")
    return None


async def check_matrix_login(ctx: Context) -> Result:
    """The configured or stored access token works (whoami) for the configured user and device."""
    settings = ctx.settings.matrix
    store_dir = ctx.settings.resolve(settings.store_dir, "")
    if settings.access_token and settings.device_id:
        token, device, source = settings.access_token, settings.device_id, "[matrix] access_token"
        fix = ("set [matrix] access_token and device_id to a login of {user} that is still valid (a new login "
               "is a new device: keep store_dir together with it)")
    else:
        try:
            stored = read_state_file(store_dir / "credentials.json", ctx.store_key("matrix"))
        except (StoreError, ValueError, OSError) as error:
            return Result("matrix login", FAIL, str(error), "restore [matrix] store_dir from the backup made "
                          "with this master key")
        where = f"the login stored in {store_dir}"
        shared = (ctx.matrix_snapshot[0].get("documents", {}).get("credentials.json") or {}
                  if ctx.matrix_snapshot is not None else {})
        if (not stored or stored.get("user_id") != settings.user_id) and shared.get("user_id") == settings.user_id:
            # This instance has not led yet: the login the leader keeps in the database.
            stored, where = shared, "the login stored in the database"
        if not stored or stored.get("user_id") != settings.user_id:
            if settings.password:
                return Result("matrix login", WARN, "not logged in yet: the first `meldbot run` logs in with "
                              "[matrix] password and stores the device", "start `meldbot run` once; the doctor "
                              "does not log in itself (a login makes a new device)")
            return Result("matrix login", FAIL, f"no login: no access token configured and none stored in "
                          f"{store_dir}", "set [matrix] access_token and device_id, or password for a first login")
        token, device, source = stored["access_token"], stored["device_id"], where
        fix = ("the stored login was logged out: set [matrix] password (a first login makes a new device) or "
               "access_token and device_id of a valid login of {user}")
    status, data = await _matrix(ctx, "GET", "/account/whoami", token)
    if status != 200:
        code = f"HTTP {status} {data.get('errcode') or ''}".strip()
        return Result("matrix login", FAIL, f"{source} is refused by the homeserver ({code})",
                      fix.format(user=settings.user_id))
    if data.get("user_id") != settings.user_id:
        return Result("matrix login", FAIL, f"{source} belongs to {data.get('user_id')}, not to "
                      f"{settings.user_id}", "use a token of [matrix] user_id, or correct user_id")
    if data.get("device_id") and data["device_id"] != device:
        return Result("matrix login", FAIL, f"{source} is a login of device {data['device_id']}, not of "
                      f"{device}", "set [matrix] device_id to the device of this access token")
    ctx.matrix.update(token=token, device=device)
    return Result("matrix login", OK, f"{settings.user_id} device {device} logged in on {settings.homeserver}")


def _in_memory(database: bytes):
    """An opener of nio's database from its bytes, in memory."""
    def open_it() -> sqlite3.Connection:
        connection = sqlite3.connect(":memory:")
        connection.deserialize(database)
        return connection
    return open_it


async def check_matrix_device(ctx: Context) -> Result:
    """nio's store in store_dir holds the device's account, it opens with the store key, and the
    homeserver publishes the same identity keys for the device."""
    import vodozemac
    from nio.crypto import OlmAccount

    from bot.adapters.matrix.store import NIO_DEFAULT_PICKLE_KEY, pickle_key, store_file

    settings = ctx.settings.matrix
    if "token" not in ctx.matrix:
        return Result("matrix device", SKIP, "needs a working login (see above)")
    device = ctx.matrix["device"]
    store_dir = ctx.settings.resolve(settings.store_dir, "")
    path = store_file(store_dir, settings.user_id, device)
    restore = (f"restore [matrix] store_dir ({store_dir}) from the backup: the device's keys cannot be made "
               "again; on a new installation start `meldbot run` once, it creates the store")
    snapshot = ctx.matrix_snapshot
    if path.is_file():
        opener = lambda: sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)  # noqa: E731
    elif snapshot is not None and snapshot[0].get("device_id") == device:
        # Not here (this instance has not led yet): the store the leader keeps in the database, read
        # in memory; nothing is written.
        path, opener = Path(f"{path.name} (in the database)"), _in_memory(snapshot[1])
    else:
        return Result("matrix device", FAIL, f"no encryption store for device {device} at {path}", restore)
    try:
        with contextlib.closing(opener()) as connection:
            row = connection.execute("SELECT account FROM accounts WHERE user_id = ? AND device_id = ?",
                                     (settings.user_id, device)).fetchone()
    except sqlite3.Error as error:
        return Result("matrix device", FAIL, f"{path} cannot be read ({error})", restore)
    if row is None:
        return Result("matrix device", FAIL, f"{path} holds no account for device {device}", restore)
    store_key = ctx.store_key("matrix")
    account, note = None, ""
    for passphrase, label in [(pickle_key(store_key), "")] * bool(store_key) + [
            (NIO_DEFAULT_PICKLE_KEY, "; still under nio's default key (moved to the store key at the next start)")]:
        with contextlib.suppress(vodozemac.PickleException, vodozemac.LibolmPickleException, UnicodeDecodeError):
            account, note = OlmAccount.from_pickle(bytes(row[0]), passphrase), label
            break
    if account is None:
        why = "the store key of this master key" if store_key else "nio's default key (the master key is not available)"
        return Result("matrix device", FAIL, f"the account in {path} cannot be opened with {why}",
                      "use the master key the store was made with, or restore store_dir from its backup")
    status, data = await _matrix(ctx, "POST", "/keys/query", ctx.matrix["token"],
                                 {"device_keys": {settings.user_id: [device]}})
    published = (((data.get("device_keys") or {}).get(settings.user_id) or {}).get(device) or {}).get("keys") or {}
    if status != 200 or not published:
        return Result("matrix device", WARN, f"store {path.name} opens{note}; the homeserver publishes no keys "
                      f"for device {device} yet", "start `meldbot run`: it uploads the device keys")
    if {kind: published.get(f"{kind}:{device}") for kind in ("ed25519", "curve25519")} != account.identity_keys:
        return Result("matrix device", FAIL, f"the homeserver publishes other keys for device {device} than the "
                      f"store {path} holds", "this store belongs to another login: restore the store_dir that "
                      "belongs to this device, or log in anew with [matrix] password (a new device)")
    return Result("matrix device", OK, f"store {path.name} holds device {device}, its keys open and match the "
                  f"homeserver{note}")


async def check_matrix_room(ctx: Context) -> Result:
    """The bot is a joined member of the coordinator room."""
    settings = ctx.settings.matrix
    room = settings.coordinator_room
    if not room:
        return Result("matrix room", WARN, "[matrix] coordinator_room is not set: notifications have nowhere "
                      "to go", "set [matrix] coordinator_room to the coordinators' room ID")
    if "token" not in ctx.matrix:
        return Result("matrix room", SKIP, "needs a working login (see above)")
    token = ctx.matrix["token"]
    room_id = room
    if room.startswith("#"):
        status, data = await _matrix(ctx, "GET", f"/directory/room/{quote(room, safe='')}", token)
        if status != 200:
            return Result("matrix room", FAIL, f"the alias {room} does not resolve (HTTP {status})",
                          "set [matrix] coordinator_room to the room's ID (Element: Room settings > Advanced)")
        room_id = data["room_id"]
    status, data = await _matrix(ctx, "GET", "/joined_rooms", token)
    if room_id not in (data.get("joined_rooms") or []):
        return Result("matrix room", FAIL, f"{settings.user_id} is not a member of the coordinator room {room}",
                      f"invite {settings.user_id} to the room (the bot joins at its next start), or correct "
                      "[matrix] coordinator_room")
    ctx.matrix["room_id"] = room_id
    return Result("matrix room", OK, f"{settings.user_id} is a member of {room}")


async def check_matrix_encryption(ctx: Context) -> Result:
    """The coordinator room is end-to-end encrypted (a warning when not: threads then carry only links)."""
    if "room_id" not in ctx.matrix:
        return Result("matrix encryption", SKIP, "needs the bot in the coordinator room (see above)")
    status, data = await _matrix(ctx, "GET", f"/rooms/{quote(ctx.matrix['room_id'], safe='')}/state/"
                                 "m.room.encryption/", ctx.matrix["token"])
    if status == 200 and data.get("algorithm"):
        return Result("matrix encryption", OK, f"the coordinator room is end-to-end encrypted ({data['algorithm']})")
    if status == 404:
        return Result("matrix encryption", WARN, "the coordinator room is not end-to-end encrypted: case thread "
                      "lines then carry only links to the case page, never what reporters wrote",
                      "turn encryption on in the room's settings (Element: Room settings > Security & Privacy > "
                      "Encrypted; it cannot be turned off again), or use an encrypted room")
    return Result("matrix encryption", FAIL, f"the room's encryption state cannot be read (HTTP {status})",
                  "check that the bot is a member of [matrix] coordinator_room")


async def check_public_url(ctx: Context) -> Result:
    """`[web] public_url` answers its liveness check (/livez, or /healthz on versions without it)."""
    public = ctx.settings.web.public_url
    fix = ("[web] public_url must be the address at which the coordinators' browsers and Teams reach this "
           "Meldbot (Teams needs HTTPS with a valid certificate): check that `meldbot run` runs, and the DNS name, "
           "reverse proxy and firewall in between")
    try:
        for probe in ("/livez", "/healthz"):
            status, _ = await _request(ctx, "GET", public + probe)
            if status != 404:
                break
    except NETWORK_ERRORS as error:
        return Result("public url", FAIL, f"{public}/livez not reachable from here ({_cause(error)})", fix)
    if status != 200:
        return Result("public url", FAIL, f"{public}{probe} answers HTTP {status}", fix)
    if not public.startswith("https://") and urlsplit(public).hostname not in ("127.0.0.1", "localhost", "::1"):
        return Result("public url", WARN, f"{public}{probe} answers, but not over HTTPS: browsers send the login "
                      "cookie unprotected and Teams does not accept it",
                      "put Meldbot behind an HTTPS reverse proxy and set [web] public_url to its https:// address")
    return Result("public url", OK, f"{public}{probe} answers (it must also be reachable from the coordinators' "
                  "browsers and, for Teams, over HTTPS from Microsoft)")


def _cause(error: BaseException) -> str:
    """Why a connection failed, without anything secret (no URL with a password, no token)."""
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    original = getattr(error, "orig", None) or getattr(error, "__cause__", None) or error
    text = str(getattr(original, "strerror", None) or "").strip()
    name = type(original).__name__
    return f"{name}: {text}" if text else name


HOMESERVER_FIX = "check [matrix] homeserver (the client-server API URL) and the network from this machine to it"
ENTRA_FIX = "allow HTTPS from here to login.microsoftonline.com (and api.botframework.com, smba.trafficmanager.net)"


async def _guarded(name: str, check, ctx: Context, where: str, fix: str) -> Result:
    """A check's result; a server it could not reach is a failure of that check."""
    try:
        return await check(ctx)
    except NETWORK_ERRORS as error:
        return Result(name, FAIL, f"{where} is not reachable ({_cause(error)})", fix)


async def run_checks(settings: Settings, config_file: str, *, teams_login_url: str | None = None,
                     timeout: float = TIMEOUT_S) -> list[Result]:
    """Every check after the configuration, in order; writes nothing anywhere."""
    results: list[Result] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        ctx = Context(settings=settings, config_file=config_file, http=http, teams_login_url=teams_login_url)
        try:
            results.append(await check_database(ctx))
            results.append(await check_master_key(ctx))
            if settings.matrix is not None:
                unreadable = await load_matrix_snapshot(ctx)
                if unreadable is not None:
                    results.append(unreadable)
                for name, check in (("matrix login", check_matrix_login), ("matrix device", check_matrix_device),
                                    ("matrix room", check_matrix_room), ("matrix encryption", check_matrix_encryption)):
                    results.append(await _guarded(name, check, ctx, f"the homeserver {settings.matrix.homeserver}",
                                                  HOMESERVER_FIX))
            else:
                results.append(Result("matrix", SKIP, "[matrix] is not configured"))
            if settings.teams is not None:
                from bot.commands.doctor_teams import check_teams_channel, check_teams_token

                results.append(await check_teams_token(ctx))
                results.append(await check_teams_channel(ctx))
            else:
                results.append(Result("teams", SKIP, "[teams] is not configured"))
            results.append(await check_public_url(ctx))
        finally:
            if ctx.engine is not None:
                await ctx.engine.dispose()
    return results


def format_result(result: Result) -> str:
    """`STATUS  name  detail`, and for a warning or failure the fix on an indented line."""
    line = f"{result.status:<5} {result.name:<18} {result.detail}"
    if result.fix and result.status in (WARN, FAIL):
        line += f"\n      fix: {result.fix}"
    return line


async def doctor_command(config: str, *, teams_login_url: str | None = None,
                         echo: Callable[[str], None] = print) -> int:
    """Run every check and print one line each (and how to fix failures); 0: nothing failed, 1: a
    check failed, 2: the configuration does not load. Never writes to the database or anywhere else."""
    first, settings = check_configuration(config)
    echo(format_result(first))
    if settings is None:
        return 2
    results = await run_checks(settings, config, teams_login_url=teams_login_url)
    for result in results:
        echo(format_result(result))
    failed, warned = (sum(r.status == status for r in results) for status in (FAIL, WARN))
    echo(f"{failed} failed, {warned} warning{'' if warned == 1 else 's'}" if failed or warned else "all checks passed")
    return 1 if failed else 0

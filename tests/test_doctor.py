"""`meldbot doctor`: every check passing against real parts (a migrated database with its key, the
session's Synapse with a bot that joined an encrypted coordinator room, an Entra token endpoint on
loopback speaking OAuth2, a web server serving /livez), each failure with its fix, and nothing written."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import storage
from bot.adapters.common import SEALED_MAGIC, JsonFile
from bot.adapters.matrix.adapter import MatrixAdapter
from bot.app import build
from bot.core.shared_state import SharedState
from bot.commands.doctor import doctor_command
from bot.config import load_settings
from bot.devtools.localserver import free_port
from bot.masterkey import open_storage
from storage import crypto
from storage.keys import write_key_file
from teams_harness import APP_ID, TENANT
from test_cli import meldbot

SECRET = "s3cr3t~value-of-the-client-secret"
CHANNEL = "19:coordinatie@thread.tacv2"
SCOPE = "https://api.botframework.com/.default"


# -- helpers ---------------------------------------------------------------------------------------


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string takes JSON's escapes


def write_config(folder: Path, sections: dict[str, dict], name: str = "meldbot.toml") -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def doctor(config: Path, **kwargs) -> tuple[int, dict[str, tuple[str, str, str]], list[str]]:
    """Run the doctor; its exit code, each check by name as (status, detail, fix), and the lines."""
    lines: list[str] = []
    code = await doctor_command(str(config), echo=lines.append, **kwargs)
    results: dict[str, tuple[str, str, str]] = {}
    printed = "\n".join(lines).splitlines()
    for index, line in enumerate(printed):
        status = line[:5].strip()
        if status not in ("OK", "WARN", "FAIL", "SKIP"):
            continue
        name, detail = line[6:24].strip(), line[25:]
        following = printed[index + 1] if index + 1 < len(printed) else ""
        fix = following.strip()[len("fix: "):] if following.startswith("      fix: ") else ""
        results[name] = (status, detail, fix)
    return code, results, printed


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its hash."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


async def serve(routes: list[web.RouteDef]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def livez():
    """A web server on loopback answering /livez as Meldbot does."""
    async def alive(_request):
        return web.json_response({"status": "ok"})

    runner, url = await serve([web.get("/livez", alive)])
    yield url
    await runner.cleanup()


class FakeEntra:
    """Entra ID's token endpoint (OAuth2 v2.0 client credentials), as it answers the bot: a token
    for the right app, secret and tenant; its real error answers otherwise."""

    def __init__(self):
        self.requests: list[dict] = []
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.requests.append({"tenant": request.match_info["tenant"], **form})
        if request.match_info["tenant"] != TENANT:
            return self.error(400, "invalid_request", 90002, f"AADSTS90002: Tenant '{request.match_info['tenant']}' "
                              "not found. Check to make sure you have the correct tenant ID")
        if form.get("grant_type") != "client_credentials" or form.get("scope") != SCOPE:
            return self.error(400, "invalid_request", 900144, "AADSTS900144: The request body must contain the "
                              "following parameter: 'grant_type'")
        if form.get("client_id") != APP_ID:
            return self.error(400, "unauthorized_client", 700016, f"AADSTS700016: Application with identifier "
                              f"'{form.get('client_id')}' was not found in the directory. This can happen if the "
                              "application has not been installed by the administrator of the tenant")
        if form.get("client_secret") != SECRET:
            return self.error(401, "invalid_client", 7000215, "AADSTS7000215: Invalid client secret provided. "
                              "Ensure the secret being sent in the request is the client secret value, not the "
                              f"client secret ID, for a secret added to app '{APP_ID}'.\r\nTrace ID: 0f0f")
        return web.json_response({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                  "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake.token"})

    @staticmethod
    def error(status: int, error: str, code: int, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description, "error_codes": [code],
                                  "timestamp": "2026-12-03 10:00:00Z", "trace_id": "0f0f",
                                  "correlation_id": "1e1e", "error_uri": f"https://login.microsoftonline.com/"
                                                                         f"error?code={code}"}, status=status)

    async def start(self) -> "FakeEntra":
        self.runner, self.url = await serve([web.post("/{tenant}/oauth2/v2.0/token", self.token)])
        return self

    def login_url(self, tenant: str = TENANT) -> str:
        return f"{self.url}/{tenant}"


@pytest.fixture
async def entra():
    fake = await FakeEntra().start()
    yield fake
    await fake.runner.cleanup()


async def install(database_url: str, folder: Path) -> dict[str, dict]:
    """A migrated database with its key file, as `meldbot keys create` + `meldbot db upgrade` leave it;
    returns the config sections."""
    key_file = folder / "master.key"
    write_key_file(key_file, crypto.new_key())
    sections = {"database": {"url": database_url}, "privacy": {"key_file": str(key_file)}}
    opened = await open_storage(load_settings(write_config(folder, sections, "install.toml")), migrate=True,
                                create_key=False)
    await opened.db.dispose()
    return sections


def sqlite_url(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'meldbot.db'}"


# -- database, key, public URL ------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_database_key_and_public_url_pass(database_url, tmp_path, livez):
    sections = await install(database_url, tmp_path)
    config = write_config(tmp_path, {**sections, "web": {"public_url": livez}})
    code, results, printed = await doctor(config)
    assert code == 0, printed
    assert {name: status for name, (status, _, _) in results.items()} == {
        "configuration": "OK", "database": "OK", "master key": "OK", "matrix": "SKIP", "teams": "SKIP",
        "public url": "OK"}
    assert f"revision {storage.head_revision()} (newest)" in results["database"][1]
    assert results["public url"][1].startswith(f"{livez}/livez answers")
    assert printed[-1] == "all checks passed"


@pytest.mark.both_databases
async def test_an_unmigrated_database_says_to_run_db_upgrade(database_url, tmp_path, livez):
    key_file = tmp_path / "master.key"
    write_key_file(key_file, crypto.new_key())
    if database_url.startswith("sqlite"):
        # Migrated up to the revision before the newest one.
        engine = storage.create_engine(database_url)
        await storage.upgrade(engine, "0004", master=crypto.decode_key(key_file.read_text()))
        await engine.dispose()
        expected = f"schema is at revision 0004, this version needs {storage.head_revision()}"
    else:
        expected = "has no schema yet"  # a fresh PostgreSQL database
    config = write_config(tmp_path, {"database": {"url": database_url}, "privacy": {"key_file": str(key_file)},
                                     "web": {"public_url": livez}})
    code, results, _ = await doctor(config)
    assert code == 1
    status, detail, fix = results["database"]
    assert status == "FAIL" and expected in detail
    assert fix == f"run `meldbot db upgrade --config {config}` (back the database up first)"


async def test_a_missing_sqlite_file_is_not_created(tmp_path, livez):
    config = write_config(tmp_path, {"database": {"url": sqlite_url(tmp_path)}, "web": {"public_url": livez}})
    code, results, _ = await doctor(config)
    assert code == 1
    assert results["database"][:2] == ("FAIL", f"no database file at {tmp_path / 'meldbot.db'}")
    assert "meldbot db upgrade --config" in results["database"][2]
    assert results["master key"][0] == "FAIL" and "no master key at" in results["master key"][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meldbot.toml"]  # neither a database nor a key


async def test_a_wrong_key_fails_and_names_the_key(tmp_path, livez):
    sections = await install(sqlite_url(tmp_path), tmp_path)
    other = tmp_path / "other.key"
    write_key_file(other, crypto.new_key())
    config = write_config(tmp_path, {**sections, "privacy": {"key_file": str(other)}, "web": {"public_url": livez}})
    code, results, _ = await doctor(config)
    assert code == 1
    assert results["database"][0] == "OK"
    assert results["master key"] == (
        "FAIL", f"the key in {other} is not the master key of this database",
        "set [privacy] key_file (or MELDBOT_PRIVACY__KEY) to the key this database was made with (restore it from "
        "your backup); check that [database] url names the right database")


async def test_a_missing_key_file_is_reported_never_created(tmp_path, livez):
    sections = await install(sqlite_url(tmp_path), tmp_path)
    key_file = Path(sections["privacy"]["key_file"])
    key_file.unlink()
    config = write_config(tmp_path, {**sections, "web": {"public_url": livez}})
    code, results, _ = await doctor(config)
    assert code == 1
    status, detail, fix = results["master key"]
    assert (status, detail) == ("FAIL", f"no master key at {key_file}")
    assert fix.startswith("restore the key file from your backup and set [privacy] key_file to it")
    assert not key_file.exists()


async def test_an_unreachable_postgresql_is_a_failure_with_its_fix(tmp_path, livez):
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, {"database": {"url": f"postgresql+asyncpg://meldbot:pw@127.0.0.1:{port}/meldbot"},
                                     "privacy": {"key": crypto.encode_key(crypto.new_key())},
                                     "web": {"public_url": livez}})
    code, results, printed = await doctor(config)
    assert code == 1
    status, detail, fix = results["database"]
    assert status == "FAIL" and detail.startswith(f"cannot reach postgresql 127.0.0.1:{port}/meldbot (")
    assert "pw" not in "\n".join(printed)  # the password in the URL is never printed
    assert fix.startswith("check [database] url (MELDBOT_DATABASE__URL)")
    assert results["master key"][0] == "SKIP"


async def test_public_url_unreachable_says_who_must_reach_it(tmp_path):
    sections = await install(sqlite_url(tmp_path), tmp_path)
    public = f"http://127.0.0.1:{free_port()}"
    code, results, _ = await doctor(write_config(tmp_path, {**sections, "web": {"public_url": public}}))
    assert code == 1
    status, detail, fix = results["public url"]
    assert status == "FAIL" and detail.startswith(f"{public}/livez not reachable from here (")
    assert "coordinators' browsers and Teams" in fix and "HTTPS" in fix


async def test_public_url_falls_back_to_healthz_when_livez_is_not_served(tmp_path):
    async def health(_request):
        return web.json_response({"status": "ok", "database": "ok"})

    runner, url = await serve([web.get("/healthz", health)])
    try:
        sections = await install(sqlite_url(tmp_path), tmp_path)
        code, results, _ = await doctor(write_config(tmp_path, {**sections, "web": {"public_url": url}}))
    finally:
        await runner.cleanup()
    assert code == 0
    assert results["public url"][0] == "OK" and results["public url"][1].startswith(f"{url}/healthz answers")


# -- Teams ---------------------------------------------------------------------------------------------------


def teams_section(folder: Path, **values) -> dict:
    return {"app_id": APP_ID, "app_password": SECRET, "tenant_id": TENANT, "store_dir": str(folder / "teams"),
            "coordinator_channel": CHANNEL, **values}


async def test_teams_token_request_and_channel_pass(tmp_path, livez, entra):
    sections = await install(sqlite_url(tmp_path), tmp_path)
    config = write_config(tmp_path, {**sections, "web": {"public_url": livez}, "teams": teams_section(tmp_path)})
    code, results, printed = await doctor(config, teams_login_url=entra.login_url())
    assert code == 0, printed
    assert results["teams token"] == ("OK", f"Entra ID issued a token for app {APP_ID} in tenant {TENANT}", "")
    assert results["teams channel"][0] == "OK" and CHANNEL in results["teams channel"][1]
    # One real client-credentials request, and the token it got is never printed.
    assert entra.requests == [{"tenant": TENANT, "grant_type": "client_credentials", "client_id": APP_ID,
                               "client_secret": SECRET, "scope": SCOPE}]
    assert "fake.token" not in "\n".join(printed) and SECRET not in "\n".join(printed)


async def test_a_wrong_teams_password_names_app_password(tmp_path, livez, entra):
    sections = await install(sqlite_url(tmp_path), tmp_path)
    config = write_config(tmp_path, {**sections, "web": {"public_url": livez},
                                     "teams": teams_section(tmp_path, app_password="an-expired-secret")})
    code, results, printed = await doctor(config, teams_login_url=entra.login_url())
    assert code == 1
    status, detail, fix = results["teams token"]
    assert status == "FAIL"
    assert detail == "the token request was refused: invalid_client (AADSTS7000215: Invalid client secret provided)"
    assert fix.startswith("set [teams] app_password to a current client secret (its value, not its ID) of app "
                          f"registration {APP_ID}")
    assert "an-expired-secret" not in "\n".join(printed)
    assert results["teams channel"][0] == "OK"


@pytest.mark.both_databases
async def test_a_channel_claimed_in_chat_is_read_from_the_database(database_url, tmp_path, livez, entra):
    sections = await install(database_url, tmp_path)
    teams = teams_section(tmp_path)
    del teams["coordinator_channel"]
    config = write_config(tmp_path, {**sections, "web": {"public_url": livez}, "teams": teams})
    # What an instance's claim leaves: the Teams state document in platform_state (sealed).
    opened = await open_storage(load_settings(config))
    try:
        await SharedState(opened.sessions, "teams").save_json("state", {"channel_id": "19:claimed@thread.tacv2"})
    finally:
        await opened.db.dispose()
    code, results, printed = await doctor(config, teams_login_url=entra.login_url())
    assert code == 0, printed
    assert results["teams channel"] == ("OK", "coordinator channel 19:claimed@thread.tacv2 (claimed in chat)", "")


async def test_a_wrong_teams_tenant_and_an_unknown_channel(tmp_path, livez, entra):
    sections = await install(sqlite_url(tmp_path), tmp_path)
    other_tenant = str(uuid.uuid4())
    teams = teams_section(tmp_path, tenant_id=other_tenant)
    del teams["coordinator_channel"]
    config = write_config(tmp_path, {**sections, "web": {"public_url": livez}, "teams": teams})
    code, results, _ = await doctor(config, teams_login_url=entra.login_url(other_tenant))
    assert code == 1
    assert results["teams token"][0] == "FAIL" and "AADSTS90002" in results["teams token"][1]
    assert results["teams token"][2] == "set [teams] tenant_id to your Directory (tenant) ID (Entra ID > Overview)"
    assert results["teams channel"] == (
        "FAIL", "no coordinator channel is known: notifications wait in the outbox until one is",
        f"run `meldbot teams claim-code --config {config}` and post the code in the channel "
        "(@Meldbot coordinatiekanaal <code>), or set [teams] coordinator_channel")


# -- Matrix ----------------------------------------------------------------------------------------------------


class MatrixInstall:
    """A bot account that has run once (its store in store_dir, its device keys published) and joined an
    encrypted coordinator room; a plain room it joined too; a room it is not in."""

    def __init__(self, synapse, folder: Path):
        self.synapse = synapse
        self.folder = folder
        tag = uuid.uuid4().hex[:8]
        self.bot = synapse.register(f"meldbot-doctor-{tag}")
        self.coordinator = synapse.register(f"coco-doctor-{tag}")
        self.store_dir = folder / "matrix-store"
        self.sections: dict = {}
        self.encrypted_room = self.plain_room = self.foreign_room = ""
        self.seal = None

    async def _api(self, http, method: str, path: str, token: str, body: dict | None = None) -> dict:
        async with http.request(method, f"{self.synapse.url}/_matrix/client/v3{path}", json=body or {},
                                headers={"Authorization": f"Bearer {token}"}) as response:
            data = await response.json()
            assert response.status == 200, data
            return data

    async def _room(self, http, invite: bool, encrypted: bool) -> str:
        body: dict = {"preset": "private_chat", "invite": [self.bot.user_id] if invite else []}
        if encrypted:
            body["initial_state"] = [{"type": "m.room.encryption", "state_key": "",
                                      "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
        return (await self._api(http, "POST", "/createRoom", self.coordinator.access_token, body))["room_id"]

    def matrix_section(self, **values) -> dict:
        return {"homeserver": self.synapse.url, "user_id": self.bot.user_id, "access_token": self.bot.access_token,
                "device_id": self.bot.device_id, "store_dir": str(self.store_dir),
                "coordinator_room": self.encrypted_room, **values}

    async def setup(self) -> "MatrixInstall":
        self.sections = await install(sqlite_url(self.folder), self.folder)
        async with aiohttp.ClientSession() as http:
            self.encrypted_room = await self._room(http, invite=True, encrypted=True)
            self.plain_room = await self._room(http, invite=True, encrypted=False)
            self.foreign_room = await self._room(http, invite=False, encrypted=True)
            # The bot as `meldbot run` starts it: it joins the coordinator room, uploads its keys.
            settings = load_settings(write_config(self.folder, {**self.sections, "matrix": self.matrix_section()},
                                                  "run.toml"))
            adapter = MatrixAdapter(settings=settings.matrix, store_dir=settings.matrix.store_dir, language="nl")
            app = await build(settings, {"matrix": adapter})
            await app.start(web_server=False)
            await app.stop()
            self.seal = adapter._seal  # sealed with the store key bot.app derived from this database's keyring
            await self._api(http, "POST", f"/join/{self.plain_room}", self.bot.access_token)
        return self


@pytest.fixture(scope="module")
def matrix_install(synapse, tmp_path_factory):
    """One bot install for the Matrix tests: the doctor writes nothing, so they can share it."""
    return asyncio.run(MatrixInstall(synapse, tmp_path_factory.mktemp("doctor-matrix")).setup())


async def test_everything_passes_and_nothing_is_written(matrix_install, tmp_path, livez, entra):
    bot = matrix_install
    config = write_config(tmp_path, {**bot.sections, "web": {"public_url": livez}, "matrix": bot.matrix_section(),
                                     "teams": teams_section(tmp_path)})
    database = bot.folder / "meldbot.db"
    before_db, before_files = digest(database), tree(bot.folder)
    code, results, printed = await doctor(config, teams_login_url=entra.login_url())
    assert code == 0, printed
    assert {name: status for name, (status, _, _) in results.items()} == {
        "configuration": "OK", "database": "OK", "master key": "OK", "matrix login": "OK", "matrix device": "OK",
        "matrix room": "OK", "matrix encryption": "OK", "teams token": "OK", "teams channel": "OK",
        "public url": "OK"}
    assert results["matrix device"][1] == (f"store {bot.bot.user_id}_{bot.bot.device_id}.db holds device "
                                           f"{bot.bot.device_id}, its keys open and match the homeserver")
    assert results["matrix encryption"][1] == "the coordinator room is end-to-end encrypted (m.megolm.v1.aes-sha2)"
    assert bot.bot.access_token not in "\n".join(printed)
    # Byte for byte: the database, and every other file of the install (key, nio store, state files);
    # no -wal or -shm file appeared beside the database either.
    assert digest(database) == before_db
    assert tree(bot.folder) == before_files


async def test_the_cli_runs_the_doctor_with_exit_codes(matrix_install, tmp_path, livez):
    bot = matrix_install
    config = write_config(tmp_path, {**bot.sections, "web": {"public_url": livez}, "matrix": bot.matrix_section()})
    result = await asyncio.to_thread(meldbot, "doctor", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"OK    configuration      {config} loaded"
    assert "OK    matrix encryption" in result.stdout and result.stdout.splitlines()[-1] == "all checks passed"

    broken = write_config(tmp_path, {**bot.sections, "web": {"public_url": livez},
                                     "matrix": bot.matrix_section(coordinator_room=bot.foreign_room)}, "broken.toml")
    result = await asyncio.to_thread(meldbot, "doctor", "--config", str(broken), cwd=tmp_path)
    assert result.returncode == 1 and "FAIL  matrix room" in result.stdout


async def test_a_bad_matrix_token_fails_and_skips_what_needs_it(matrix_install, tmp_path, livez):
    bot = matrix_install
    config = write_config(tmp_path, {**bot.sections, "web": {"public_url": livez},
                                     "matrix": bot.matrix_section(access_token="syt_not_a_token")})
    code, results, printed = await doctor(config)
    assert code == 1
    status, detail, fix = results["matrix login"]
    assert (status, detail) == ("FAIL", "[matrix] access_token is refused by the homeserver "
                                        "(HTTP 401 M_UNKNOWN_TOKEN)")
    assert fix.startswith(f"set [matrix] access_token and device_id to a login of {bot.bot.user_id} that is still "
                          "valid")
    assert [results[name][0] for name in ("matrix device", "matrix room", "matrix encryption")] == ["SKIP"] * 3
    assert "syt_not_a_token" not in "\n".join(printed)


async def test_the_bot_not_in_the_coordinator_room(matrix_install, tmp_path, livez):
    bot = matrix_install
    config = write_config(tmp_path, {**bot.sections, "web": {"public_url": livez},
                                     "matrix": bot.matrix_section(coordinator_room=bot.foreign_room)})
    code, results, _ = await doctor(config)
    assert code == 1
    assert results["matrix login"][0] == "OK" and results["matrix device"][0] == "OK"
    assert results["matrix room"] == (
        "FAIL", f"{bot.bot.user_id} is not a member of the coordinator room {bot.foreign_room}",
        f"invite {bot.bot.user_id} to the room (the bot joins at its next start), or correct [matrix] coordinator_room")
    assert results["matrix encryption"][0] == "SKIP"


async def test_an_unencrypted_coordinator_room_is_a_warning(matrix_install, tmp_path, livez):
    bot = matrix_install
    config = write_config(tmp_path, {**bot.sections, "web": {"public_url": livez},
                                     "matrix": bot.matrix_section(coordinator_room=bot.plain_room)})
    code, results, printed = await doctor(config)
    assert code == 0, printed  # a warning is not a failure
    status, detail, fix = results["matrix encryption"]
    assert status == "WARN"
    assert detail == ("the coordinator room is not end-to-end encrypted: case thread lines then carry only links "
                      "to the case page, never what reporters wrote")
    assert fix.startswith("turn encryption on in the room's settings")
    assert printed[-1] == "0 failed, 1 warning"


async def test_a_store_kept_only_in_the_database_is_checked_there_and_nothing_is_written(matrix_install, tmp_path,
                                                                                        livez):
    """An instance that has not led yet has an empty store_dir: the store is the one the leader keeps
    in the database."""
    bot = matrix_install
    empty = tmp_path / "empty-store"
    empty.mkdir()
    database = bot.folder / "meldbot.db"
    before = digest(database)
    config = write_config(tmp_path, {**bot.sections, "web": {"public_url": livez},
                                     "matrix": bot.matrix_section(store_dir=str(empty))})
    code, results, printed = await doctor(config)
    assert code == 0, printed
    assert results["matrix device"][:2] == ("OK", f"store {bot.bot.user_id}_{bot.bot.device_id}.db (in the database) "
                                                  f"holds device {bot.bot.device_id}, its keys open and match the "
                                                  "homeserver")
    assert list(empty.iterdir()) == [] and digest(database) == before


async def test_a_first_login_kept_only_in_the_database_is_checked_there(synapse, tmp_path, livez):
    """A bot that logged in with its password on another instance: this one's store_dir is empty, the
    login and device are in the database."""
    account = synapse.register(f"meldbot-{uuid.uuid4().hex[:8]}")
    sections = await install(sqlite_url(tmp_path), tmp_path)
    matrix = {"homeserver": synapse.url, "user_id": account.user_id, "password": account.password,
              "store_dir": str(tmp_path / "leader-store")}
    settings = load_settings(write_config(tmp_path, {**sections, "matrix": matrix}, "run.toml"))
    adapter = MatrixAdapter(settings=settings.matrix, store_dir=settings.matrix.store_dir, language="nl")
    app = await build(settings, {"matrix": adapter})
    await app.start(web_server=False)
    await app.stop()
    device = JsonFile(tmp_path / "leader-store" / "credentials.json", adapter._seal).load()["device_id"]
    empty = tmp_path / "standby-store"
    empty.mkdir()
    config = write_config(tmp_path, {**sections, "web": {"public_url": livez},
                                     "matrix": {**matrix, "store_dir": str(empty)}})
    code, results, printed = await doctor(config)
    assert code == 0, printed
    assert results["matrix login"] == ("OK", f"{account.user_id} device {device} logged in on {synapse.url}", "")
    assert results["matrix device"][0] == "OK" and "(in the database)" in results["matrix device"][1]
    assert list(empty.iterdir()) == []


async def test_a_missing_matrix_store_fails(matrix_install, tmp_path, livez):
    """No store in store_dir and none in the database (a database the bot never ran on)."""
    bot = matrix_install
    empty = tmp_path / "empty-store"
    empty.mkdir()
    sections = await install(sqlite_url(tmp_path), tmp_path)
    config = write_config(tmp_path, {**sections, "web": {"public_url": livez},
                                     "matrix": bot.matrix_section(store_dir=str(empty))})
    code, results, _ = await doctor(config)
    assert code == 1
    status, detail, fix = results["matrix device"]
    assert (status, detail) == ("FAIL", f"no encryption store for device {bot.bot.device_id} at "
                                        f"{empty / (bot.bot.user_id + '_' + bot.bot.device_id + '.db')}")
    assert fix.startswith(f"restore [matrix] store_dir ({empty}) from the backup")
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plain"])
async def test_a_login_stored_by_an_earlier_start_is_checked_and_left_as_it_is(matrix_install, tmp_path, livez,
                                                                               sealed):
    bot = matrix_install
    store = tmp_path / "store"
    shutil.copytree(bot.store_dir, store)
    credentials = {"user_id": bot.bot.user_id, "access_token": bot.bot.access_token, "device_id": bot.bot.device_id}
    JsonFile(store / "credentials.json", bot.seal if sealed else None).save(credentials)
    before = (store / "credentials.json").read_bytes()
    assert before.startswith(SEALED_MAGIC) == sealed
    config = write_config(tmp_path, {**bot.sections, "web": {"public_url": livez}, "matrix": {
        "homeserver": bot.synapse.url, "user_id": bot.bot.user_id, "password": "only-for-a-first-login",
        "store_dir": str(store), "coordinator_room": bot.encrypted_room}})
    code, results, printed = await doctor(config)
    assert code == 0, printed
    assert results["matrix login"] == ("OK", f"{bot.bot.user_id} device {bot.bot.device_id} logged in on "
                                             f"{bot.synapse.url}", "")
    assert results["matrix device"][0] == "OK"
    # A plain file is not sealed here (the adapter does that at its start): the doctor writes nothing.
    assert (store / "credentials.json").read_bytes() == before


# -- configuration -----------------------------------------------------------------------------------------------


def test_a_config_that_does_not_load_exits_2_with_the_config_error(tmp_path):
    config = write_config(tmp_path, {"database": {"url": "mysql://nope"}})
    result = meldbot("doctor", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first == f"FAIL  configuration      Invalid configuration ({config}):"
    assert "[database] url: Value error, must start with sqlite+aiosqlite:// or postgresql+asyncpg://" in result.stdout
    assert "Traceback" not in result.stderr


def test_doctor_needs_a_config(tmp_path):
    result = meldbot("doctor", cwd=tmp_path)
    assert result.returncode == 2 and "--config" in result.stderr

"""Several real `meldbot run` processes on one database: for the fault tests and bench/scale.py.

Each instance is its own process with its own web port, store directories and output file; all of
them read one shared configuration file (`workdir/meldbot.toml`: the given `settings` tables plus
`[database] url` and `[logging] format = "json"`), and what differs per instance comes in through
environment variables as an operator would set it (`MELDBOT_WEB__LISTEN`, `MELDBOT_MATRIX__STORE_DIR`,
`MELDBOT_TEAMS__STORE_DIR`); the master key is passed as `MELDBOT_PRIVACY__KEY`, never written.

API (stable; bench/scale.py imports it)::

    cluster = LocalCluster(workdir, database_url, settings={"teams": {...}, "organisation": {...}},
                           instances=3, connector_token=None, outbox_lease=None, master_key=None, env=None)
    await cluster.start(i) -> Instance     # spawn instance i, wait until its web server answers /livez
    await cluster.start_all()              # instance 0 first (it migrates a fresh database), then the rest
    cluster.kill(i) -> float               # SIGKILL; returns time.monotonic() of the kill
    await cluster.stop(i) -> int           # SIGTERM and wait (SIGKILL after `timeout`); the exit code
    await cluster.stop_all()               # stop every running instance, close the HTTP client
    await cluster.wait_ready(i, timeout)   # until its /readyz answers 200
    await cluster.readyz(i) -> dict | None # the /readyz body (whatever the status), None when it does not answer
    await cluster.leader(timeout, platform=None) -> int
                                           # the index of the one running instance whose /readyz says
                                           # "leader": true, waiting until exactly one does (and, with
                                           # `platform`, until that platform is "ok" on it)
    cluster.instance(i).url                # its web base URL, http://127.0.0.1:PORT (kept across restarts)
    cluster.instance(i).log_text()         # everything it wrote to stdout/stderr so far (all its runs)
    cluster.instance(i).log_records()      # the same, as parsed JSON log records (other lines skipped)
    cluster.instance(i).running, .pid, .returncode, .directory
    async with LocalCluster(...) as cluster: ...   # stop_all() on the way out

Teams without Entra ID: a process cannot get an outbound token offline, so with `connector_token` the
instances run through this module's launcher (`python -m bot.devtools.cluster run --config FILE`),
which is `meldbot run` exactly, except that the Teams adapter sends `Bearer <connector_token>` to the
Bot Connector (a local fake one in tests) instead of asking login.microsoftonline.com for a token.
Inbound JWT validation stays real (point `[teams] openid_metadata_url` at locally served keys).
`outbox_lease` (seconds) sets `[outbox] lease_seconds` through MELDBOT_OUTBOX__LEASE_SECONDS (a fault
test that kills an instance in the middle of a send need not wait the default 120 s before another
worker may send it). Without `connector_token` the processes are plain `python -m bot.cli run --config FILE`.

Processes are started in a session of their own and stopped by their process id only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import aiohttp

from bot.devtools.localserver import free_port

#: The launcher reads the Bot Connector token from this variable (see the module docstring).
CONNECTOR_TOKEN_ENV = "MELDBOT_CLUSTER_CONNECTOR_TOKEN"
#: How often the waits below look again (they all have a deadline).
POLL_S = 0.1


# -- the configuration file ---------------------------------------------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text for `{table: {key: value}}` (values: str, Path, bool, int, float, lists, inline tables)."""
    lines: list[str] = []
    for table, values in tables.items():
        if values is None:
            continue
        lines.append(f"[{table}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


# -- instances ----------------------------------------------------------------------------------------

@dataclass
class Instance:
    """One `meldbot run` process of the cluster (restartable: the port and directory stay)."""

    index: int
    port: int
    directory: Path
    process: subprocess.Popen | None = None
    #: Extra environment of this instance (on top of the cluster's).
    env: dict[str, str] = field(default_factory=dict)
    #: Completed runs' exit codes, oldest first.
    exits: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> Path:
        return self.directory / "output.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def log_text(self) -> str:
        """Everything this instance wrote to stdout and stderr, over all its runs."""
        try:
            return self.output.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[dict]:
        """The JSON log records in the output (lines that are not JSON objects are left out)."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records


class InstanceExited(RuntimeError):
    """An instance's process ended while the cluster waited for it; the message has its output's tail."""


class LocalCluster:
    """N `meldbot run` processes on one database (see the module docstring for the API)."""

    def __init__(self, workdir: Path, database_url: str, *, settings: Mapping[str, Mapping[str, Any]] | None = None,
                 instances: int = 3, connector_token: str | None = None, outbox_lease: float | None = None,
                 master_key: bytes | None = None, env: Mapping[str, str] | None = None):
        from storage.crypto import encode_key, new_key

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.settings = {name: dict(values) for name, values in (settings or {}).items()}
        self.connector_token = connector_token
        self.outbox_lease = outbox_lease
        self.master_key = master_key or new_key()
        self._key_text = encode_key(self.master_key)
        self.env = dict(env or {})
        self.instances = [Instance(index=i, port=free_port(), directory=self.workdir / f"instance-{i}")
                          for i in range(instances)]
        self.config = self.workdir / "meldbot.toml"
        self._write_config()
        self._http: aiohttp.ClientSession | None = None

    # -- set-up ------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        tables = {name: dict(values) for name, values in self.settings.items()}
        tables.setdefault("database", {})["url"] = self.database_url
        tables.setdefault("logging", {}).setdefault("format", "json")
        # One public address for all (behind a load balancer it is the same); instance 0's by default.
        tables.setdefault("web", {}).setdefault("public_url", self.instances[0].url)
        self.config.write_text(to_toml(tables), "utf-8")
        self.config.chmod(0o600)

    def instance(self, i: int) -> Instance:
        return self.instances[i]

    def command(self) -> list[str]:
        """The command line every instance runs."""
        module = "bot.devtools.cluster" if self.connector_token else "bot.cli"
        return [sys.executable, "-m", module, "run", "--config", str(self.config)]

    def environment(self, i: int) -> dict[str, str]:
        """The environment of instance `i`: this process's, the cluster's `env`, its own addresses and stores."""
        instance = self.instances[i]
        env = {**os.environ, **self.env}
        env["MELDBOT_WEB__LISTEN"] = f"127.0.0.1:{instance.port}"
        env["MELDBOT_PRIVACY__KEY"] = self._key_text
        # Only for configured platforms: the variable alone would make the section appear, incomplete.
        if "matrix" in self.settings:
            env["MELDBOT_MATRIX__STORE_DIR"] = str(instance.directory / "matrix-store")
        if "teams" in self.settings:
            env["MELDBOT_TEAMS__STORE_DIR"] = str(instance.directory / "teams-store")
        if self.connector_token:
            env[CONNECTOR_TOKEN_ENV] = self.connector_token
        if self.outbox_lease:
            env["MELDBOT_OUTBOX__LEASE_SECONDS"] = str(self.outbox_lease)
        env.update(instance.env)
        return env

    # -- HTTP ----------------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self._http

    async def _get(self, i: int, path: str) -> tuple[int, Any] | None:
        try:
            async with self._session().get(self.instances[i].url + path) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                return response.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None

    async def readyz(self, i: int) -> dict | None:
        """The /readyz body of instance `i` (also when it answers 503), None when it does not answer."""
        answer = await self._get(i, "/readyz")
        return answer[1] if answer and isinstance(answer[1], dict) else None

    # -- life cycle ----------------------------------------------------------------------------------

    def _exited(self, instance: Instance, what: str) -> InstanceExited:
        tail = "\n".join(instance.log_text().splitlines()[-25:])
        return InstanceExited(f"instance {instance.index} exited with {instance.returncode} {what}; "
                              f"its output ends with:\n{tail}")

    def _spawn(self, i: int) -> None:
        instance = self.instances[i]
        if instance.running:
            raise RuntimeError(f"instance {i} is running already (pid {instance.pid})")
        self._reap(instance)
        instance.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        output = open(instance.output, "ab")
        try:
            instance.process = subprocess.Popen(
                self.command(), cwd=instance.directory, env=self.environment(i), stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            output.close()  # the child has its own copy

    def _reap(self, instance: Instance) -> None:
        if instance.process is not None and instance.process.poll() is not None:
            instance.exits.append(instance.process.returncode)
            instance.process = None

    async def start(self, i: int, *, timeout: float = 60, env: Mapping[str, str] | None = None) -> Instance:
        """Start instance `i` and wait (up to `timeout`) until its web server answers /livez.
        `env`: extra variables for this instance (kept for its later restarts). A port another
        process took meanwhile is replaced by a free one (twice at most)."""
        instance = self.instances[i]
        if env:
            instance.env.update(env)
        for attempt in range(3):
            offset = len(instance.log_text())
            self._spawn(i)
            try:
                await self._until(lambda: self._answers(i, "/livez"), timeout, i, "before it answered /livez")
                return instance
            except InstanceExited:
                if attempt < 2 and "address is in use" in instance.log_text()[offset:]:
                    self._reap(instance)
                    instance.port = free_port()
                    if i == 0 and "public_url" not in self.settings.get("web", {}):
                        self._write_config()
                    continue
                raise
        raise AssertionError("unreachable")

    async def _answers(self, i: int, path: str, status: int | None = None) -> bool:
        answer = await self._get(i, path)
        return answer is not None and (status is None or answer[0] == status)

    async def _until(self, condition, timeout: float, i: int | None, what: str):
        """Poll `condition` (async, returns a truthy value when met) until `timeout`; an instance `i` that
        exits meanwhile raises InstanceExited."""
        deadline = time.monotonic() + timeout
        while True:
            result = await condition()
            if result:
                return result
            if i is not None and not self.instances[i].running:
                raise self._exited(self.instances[i], what)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited {timeout:.0f} s {what}")
            await asyncio.sleep(POLL_S)

    async def start_all(self, *, timeout: float = 60) -> None:
        """Start every instance that is not running: the first alone (it migrates a fresh database and
        creates its keyring), then the others together."""
        pending = [i for i, instance in enumerate(self.instances) if not instance.running]
        if not pending:
            return
        await self.start(pending[0], timeout=timeout)
        await asyncio.gather(*(self.start(i, timeout=timeout) for i in pending[1:]))

    def kill(self, i: int) -> float:
        """SIGKILL instance `i` (no clean-up runs in it) and reap it; returns time.monotonic() of the kill."""
        instance = self.instances[i]
        if not instance.running:
            raise RuntimeError(f"instance {i} is not running")
        os.kill(instance.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        instance.process.wait()
        self._reap(instance)
        return killed_at

    async def stop(self, i: int, *, timeout: float = 20) -> int | None:
        """SIGTERM instance `i` and wait for it (SIGKILL after `timeout`); its exit code (None: not running)."""
        instance = self.instances[i]
        if not instance.running:
            self._reap(instance)
            return instance.exits[-1] if instance.exits else None
        process = instance.process
        os.kill(process.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)
        self._reap(instance)
        return instance.exits[-1]

    async def stop_all(self, *, timeout: float = 20) -> None:
        """Stop every running instance (together) and close the HTTP client."""
        await asyncio.gather(*(self.stop(i, timeout=timeout) for i, instance in enumerate(self.instances)
                               if instance.running))
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def wait_ready(self, i: int, timeout: float = 60) -> dict:
        """Until instance `i`'s /readyz answers 200; returns its body."""
        async def ready():
            answer = await self._get(i, "/readyz")
            return answer[1] if answer and answer[0] == 200 else None

        return await self._until(ready, timeout, i, "before /readyz answered 200")

    async def leaders(self) -> dict[int, dict]:
        """The running instances whose /readyz says they lead, with their bodies."""
        running = [i for i, instance in enumerate(self.instances) if instance.running]
        bodies = await asyncio.gather(*(self.readyz(i) for i in running))
        return {i: body for i, body in zip(running, bodies) if body and body.get("leader") is True}

    async def leader(self, timeout: float = 30, *, platform: str | None = None) -> int:
        """The index of the one running instance that leads, once exactly one says so (and, with
        `platform`, once that platform is "ok" in its /readyz)."""
        seen: dict[int, dict] = {}

        async def one():
            nonlocal seen
            seen = await self.leaders()
            if len(seen) != 1:
                return None
            (index, body), = seen.items()
            if platform is not None and (body.get("platforms") or {}).get(platform) != "ok":
                return None
            return index + 1  # truthy also for instance 0

        try:
            return await self._until(one, timeout, None, "for exactly one leader") - 1
        except TimeoutError:
            raise TimeoutError(f"no single leader within {timeout:.0f} s; leading: {sorted(seen)} "
                               f"({seen})") from None

    async def __aenter__(self) -> "LocalCluster":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop_all()


# -- the launcher: `meldbot run` with a local Bot Connector token ------------------------------------

def _use_connector_token(token: str) -> None:
    """Make every TeamsAdapter built in this process send `token` to the Bot Connector."""
    from botframework.connector.auth import ServiceClientCredentialsFactory
    from msrest.authentication import BasicTokenAuthentication

    from bot.adapters.teams import adapter as teams

    class StaticTokenFactory(ServiceClientCredentialsFactory):
        async def is_valid_app_id(self, app_id: str) -> bool:
            return True

        async def is_authentication_disabled(self) -> bool:
            return False

        async def create_credentials(self, app_id, oauth_scope, login_endpoint, validate_authority):
            credentials = BasicTokenAuthentication({"access_token": token})
            credentials.get_access_token = lambda *args, **kwargs: token
            return credentials

    class LocalTokenTeamsAdapter(teams.TeamsAdapter):
        def __init__(self, *args, credentials_factory=None, **kwargs):
            super().__init__(*args, credentials_factory=credentials_factory or StaticTokenFactory(), **kwargs)

    # bot.cli imports the class from this module when it builds the adapters.
    teams.TeamsAdapter = LocalTokenTeamsAdapter


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.devtools.cluster run --config FILE`: `meldbot run`, with the connector token of
    MELDBOT_CLUSTER_CONNECTOR_TOKEN for Teams when it is set."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "run":
        print("usage: python -m bot.devtools.cluster run --config FILE", file=sys.stderr)
        return 2
    token = os.environ.get(CONNECTOR_TOKEN_ENV)
    if token:
        _use_connector_token(token)
    from bot.cli import main as meldbot

    return meldbot(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

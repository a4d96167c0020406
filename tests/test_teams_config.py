"""`[teams]` settings the SDK cannot use are refused at start, naming the key (exit code 2, no stack
trace); a local configuration without authentication starts, and says so at every start. Each case
runs the real `meldbot run --config FILE` in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bot.config import TeamsSettings
from bot.devtools.localserver import free_port
from bot.adapters.teams.adapter import TeamsAdapter
from teams_harness import APP_ID, TENANT

MELDBOT = Path(sys.executable).with_name("meldbot")
COMMAND = [str(MELDBOT)] if MELDBOT.exists() else [sys.executable, "-m", "bot.cli"]


def write_config(tmp_path: Path, teams: dict, port: int | None = None) -> Path:
    lines = ['[database]', 'url = "sqlite+aiosqlite:///meldbot.db"', '', '[web]',
             f'listen = "127.0.0.1:{port or free_port()}"', '', '[teams]']
    for key, value in teams.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}")
    path = tmp_path / "meldbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(config: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, "run", "--config", str(config)], capture_output=True, text=True,
                          timeout=timeout, cwd=config.parent)


REFUSED = {
    # The SDK's SingleTenant credentials want a password: "Property 'APP_PASSWORD' is expected".
    "app_id without app_password": ({"app_id": APP_ID, "tenant_id": TENANT}, "[teams] app_password"),
    "app_password without app_id": ({"app_password": "geheim", "tenant_id": TENANT, "allow_unauthenticated": True},
                                    "[teams] app_password"),
    "app_id that is not a GUID": ({"app_id": "meldbot", "app_password": "geheim", "tenant_id": TENANT},
                                  "[teams] app_id"),
    "tenant_id that is a domain": ({"app_id": APP_ID, "app_password": "geheim", "tenant_id": "gemeente.nl"},
                                   "[teams] tenant_id"),
    "app_id without tenant_id": ({"app_id": APP_ID, "app_password": "geheim"}, "[teams] tenant_id"),
    "tenant_id that is not a GUID, authentication off": ({"tenant_id": "x", "allow_unauthenticated": True},
                                                         "[teams] tenant_id"),
    "no app_id": ({"tenant_id": TENANT}, "[teams] app_id"),
    # The SDK's parameterised path then refuses every activity (it never sees the empty header as anonymous).
    "signing keys endpoint, authentication off": ({"allow_unauthenticated": True,
                                                   "openid_metadata_url": "https://login.example/openid"},
                                                  "[teams] openid_metadata_url"),
    "coordinator_channel that is a name": ({"app_id": APP_ID, "app_password": "geheim", "tenant_id": TENANT,
                                            "coordinator_channel": "Coördinatie"}, "[teams] coordinator_channel"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unusable_teams_settings_are_refused_at_start_naming_the_key(tmp_path, case):
    teams, key = REFUSED[case]
    result = run(write_config(tmp_path, teams))
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert key in result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_the_constructor_refuses_them_too(tmp_path):
    """The same checks where the adapter is built (`meldbot run` is one caller; tests are others)."""
    from bot.config import ConfigError

    for case, (teams, key) in REFUSED.items():
        with pytest.raises(ConfigError) as raised:
            TeamsAdapter(settings=TeamsSettings(**teams), store_dir=tmp_path, language="nl")
        assert key in str(raised.value), case


def test_a_local_configuration_without_authentication_starts_and_warns(tmp_path):
    """app_id = "", allow_unauthenticated = true and a tenant_id: the SDK's single-tenant credentials
    used to crash with "Property 'APP_ID' is expected"."""
    port = free_port()
    config = write_config(tmp_path, {"app_id": "", "allow_unauthenticated": True, "tenant_id": TENANT}, port)
    for start in range(2):  # the warning comes at every start, not only the first
        process = subprocess.Popen([*COMMAND, "run", "--config", str(config)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.communicate()[1][-3000:]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "meldbot did not become healthy"
                time.sleep(0.2)  # polling a starting process: the wait is bounded by the deadline
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        assert process.returncode == 0, stderr[-3000:]
        assert "AUTHENTICATION IS OFF" in stderr and "Traceback" not in stderr, start

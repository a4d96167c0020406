"""A private Synapse homeserver on loopback: for `meldbot demo` and the Matrix tests.

SQLite, no federation, fast password hashing and raised rate limits; users are registered with
the shared-secret admin API. Needs the `demo` extra (matrix-synapse).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

RATE = {"per_second": 1000, "burst_count": 1000}


@dataclass(frozen=True)
class Account:
    """A registered user with a fresh access token and device."""

    user_id: str
    password: str
    access_token: str
    device_id: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalSynapse:
    """Start, stop and use one Synapse process whose files live in `folder`."""

    def __init__(self, folder: Path, port: int | None = None, server_name: str = "meldbot.test",
                 message_rate: dict | None = None):
        self.folder = Path(folder)
        self.message_rate = message_rate or RATE
        self.port = port or free_port()
        self.server_name = server_name
        self.process: subprocess.Popen | None = None
        self.secret_file = self.folder / "registration_secret"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "homeserver.yaml"
        if config.exists():
            return config
        from signedjson.key import generate_signing_key, write_signing_keys

        with open(self.folder / "signing.key", "w") as handle:
            write_signing_keys(handle, [generate_signing_key("a_1")])
        self.secret_file.write_text(secrets.token_hex(24))
        log_config = self.folder / "log.yaml"
        log_config.write_text(json.dumps({
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(self.folder / "synapse.log"),
                                  "formatter": "plain"}},
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))
        settings = {
            "server_name": self.server_name,
            "public_baseurl": self.url + "/",
            "pid_file": str(self.folder / "homeserver.pid"),
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                           "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
            "database": {"name": "sqlite3", "args": {"database": str(self.folder / "homeserver.db")}},
            "log_config": str(log_config),
            "media_store_path": str(self.folder / "media"),
            "signing_key_path": str(self.folder / "signing.key"),
            "registration_shared_secret": self.secret_file.read_text(),
            "macaroon_secret_key": secrets.token_hex(24),
            "form_secret": secrets.token_hex(24),
            "report_stats": False,
            "enable_metrics": False,
            "bcrypt_rounds": 4,
            "trusted_key_servers": [],
            "federation_domain_whitelist": [],
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            "enable_registration": False,
            "suppress_key_server_warning": True,
            "rc_message": self.message_rate, "rc_registration": RATE, "rc_login": {"address": RATE, "account": RATE,
                                                                      "failed_attempts": RATE},
            "rc_joins": {"local": RATE, "remote": RATE}, "rc_invites": {"per_room": RATE, "per_user": RATE,
                                                                         "per_issuer": RATE},
            "rc_admin_redaction": RATE, "rc_3pid_validation": RATE, "rc_key_requests": RATE,
            "rc_joins_per_room": RATE, "rc_room_creation": RATE,
            "max_upload_size": "50M",
        }
        # JSON is valid YAML.
        config.write_text(json.dumps(settings, indent=1))
        return config

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it answers."""
        config = self._config()
        log = open(self.folder / "stdout.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config)],
            cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited with {self.process.returncode}; see {self.folder}/stdout.log")
            try:
                with urllib.request.urlopen(self.url + "/_matrix/client/versions", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)  # waiting for the server to come up, with a deadline
        self.stop()
        raise RuntimeError("Synapse did not answer in time")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def _post(self, path: str, body: dict, token: str | None = None) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def register(self, localpart: str, password: str | None = None, admin: bool = False) -> Account:
        """Create a user with the shared-secret admin API and log it in (a new device)."""
        password = password or secrets.token_urlsafe(12)
        with urllib.request.urlopen(self.url + "/_synapse/admin/v1/register", timeout=10) as response:
            nonce = json.loads(response.read())["nonce"]
        # The MAC covers nonce, user, password and admin flag, joined by NUL bytes.
        parts = (nonce, localpart, password, "admin" if admin else "notadmin")
        mac = hmac.new(self.secret_file.read_text().encode(), b"\x00".join(p.encode() for p in parts), hashlib.sha1)
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()}
        result = self._post("/_synapse/admin/v1/register", body)
        return Account(result["user_id"], password, result["access_token"], result["device_id"])

    def exempt_from_rate_limits(self, user_id: str, admin: Account) -> None:
        """Lift the message rate limit for one user (admin API), e.g. for test clients."""
        request = urllib.request.Request(
            f"{self.url}/_synapse/admin/v1/users/{urllib.request.quote(user_id)}/override_ratelimit",
            data=json.dumps({"messages_per_second": 0, "burst_count": 0}).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin.access_token}"})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def login(self, user_id: str, password: str) -> Account:
        """Log in again (a new device)."""
        result = self._post("/_matrix/client/v3/login", {"type": "m.login.password", "password": password,
                                                         "identifier": {"type": "m.id.user", "user": user_id}})
        return Account(result["user_id"], password, result["access_token"], result["device_id"])

    def __enter__(self) -> "LocalSynapse":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

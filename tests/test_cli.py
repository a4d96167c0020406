"""The `meldbot` command end to end, as a real process fed through stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import storage

ROOT = Path(__file__).resolve().parents[1]


def meldbot(*args: str, cwd: Path, stdin: str = "", env: dict | None = None, timeout: float = 60):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MELDBOT_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout, env={**environment, "PYTHONPATH": str(ROOT)})


def write_config(folder: Path, body: str) -> Path:
    path = folder / "meldbot.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_chat_through_stdin_creates_a_case_that_cases_list_shows(tmp_path):
    result = meldbot("chat", "--user", "anna", cwd=tmp_path,
                     stdin="ik werd net uitgescholden aan de balie\nverzenden\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Wat heb je nodig?" in out and "opgeslagen onder nummer MB-" in out
    reference = out.split("opgeslagen onder nummer ")[1].split(".")[0]
    # The coordinator notification is printed as the outbox delivers it, before the chat ends.
    assert f"Nieuwe melding {reference}" in out and f"/cases/{reference}" in out
    assert (tmp_path / "meldbot.db").exists()  # the embedded default: SQLite in the working directory

    listed = meldbot("cases", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["reference"], r["status"], r["kinds"]) for r in rows] == [(reference, "new", ["verbal"])]
    assert "created_at" in rows[0]

    plain = meldbot("cases", "list", cwd=tmp_path)
    assert reference in plain.stdout and "verbal" in plain.stdout


def test_chat_in_english_with_a_file_and_a_config(tmp_path):
    shot = tmp_path / "screenshot.png"
    shot.write_bytes(b"\x89PNG\r\n\x1a\n fake")
    config = write_config(tmp_path, f"""
[organisation]
name = "City of Example"
language = "en"
[database]
url = "sqlite+aiosqlite:///{tmp_path / 'en.db'}"
[console]
user = "sam"
""")
    result = meldbot("chat", "--config", str(config), cwd=tmp_path,
                     stdin=f"/file {shot}\nSomeone threatened me on facebook\nok\nsend\nmy reports\n")
    assert result.returncode == 0, result.stderr
    assert "Received: screenshot.png" in result.stdout
    assert "Your report is saved as MB-" in result.stdout
    assert "evidence attached" in result.stdout
    assert "Your reports" in result.stdout and "City of Example" not in result.stderr


def test_database_upgrade_command(tmp_path):
    config = write_config(tmp_path, f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "x.db"}"\n')
    result = meldbot("db", "upgrade", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"revision {storage.head_revision()}" in result.stdout


@pytest.mark.parametrize(("body", "expected"), [
    ('[database]\nurl = "mysql://x"\n', "[database] url"),
    ('[web]\nlisten = "8080"\n', "[web] listen"),
    ('[organisation]\nlanguage = "fr"\n', "[organisation] language"),
    ('[organisation]\ntimezone = "Mars/Olympus"\n', "unknown time zone"),
    ('[organisaton]\nname = "x"\n', "organisaton"),
    ('[web]\npublic_ur = "https://x"\n', "[web] public_ur"),
    ('[web\n', "Invalid configuration"),
])
def test_bad_config_names_the_key(tmp_path, body, expected):
    config = write_config(tmp_path, body)
    result = meldbot("cases", "list", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path):
    result = meldbot("chat", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert result.returncode == 2 and "not found" in result.stderr


def test_environment_overrides_the_file(tmp_path):
    config = write_config(tmp_path, '[database]\nurl = "sqlite+aiosqlite:///from-file.db"\n')
    result = meldbot("db", "upgrade", "--config", str(config), cwd=tmp_path,
                     env={"MELDBOT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'from-env.db'}"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-env.db").exists() and not (tmp_path / "from-file.db").exists()
    bad = meldbot("db", "upgrade", "--config", str(config), cwd=tmp_path, env={"MELDBOT_WEB__LISTEN": "nope"})
    assert bad.returncode == 2 and "MELDBOT_WEB__LISTEN" in bad.stderr


def test_unreachable_database_is_a_clear_error(tmp_path):
    result = meldbot("cases", "list", cwd=tmp_path,
                     env={"MELDBOT_DATABASE__URL": "postgresql+asyncpg://postgres@127.0.0.1:1/x",
                          "MELDBOT_PRIVACY__KEY": "A" * 43 + "="})
    assert result.returncode == 3 and "Database unavailable" in result.stderr
    keyless = meldbot("cases", "list", cwd=tmp_path,
                      env={"MELDBOT_DATABASE__URL": "postgresql+asyncpg://postgres@127.0.0.1:1/x"})
    assert keyless.returncode == 2 and "[privacy] key_file" in keyless.stderr and "Traceback" not in keyless.stderr


def test_own_house_rules_file(tmp_path):
    (tmp_path / "regels.nl.md").write_text("Bij ons geldt: altijd vriendelijk blijven.", encoding="utf-8")
    (tmp_path / "regels.en.md").write_text("Here: always stay friendly.", encoding="utf-8")
    config = write_config(tmp_path, '[organisation]\nhouse_rules = "regels.{language}.md"\n')
    result = meldbot("chat", "--config", str(config), cwd=tmp_path, stdin="huisregels\ntaal en\nhouse rules\n")
    assert result.returncode == 0, result.stderr
    assert "altijd vriendelijk blijven" in result.stdout and "always stay friendly" in result.stdout
    missing = write_config(tmp_path, '[organisation]\nnorm_card = "weg.md"\n')
    result = meldbot("chat", "--config", str(missing), cwd=tmp_path, stdin="")
    assert result.returncode == 2 and "norm_card" in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_serves_health_and_stops_cleanly_on_sigterm(tmp_path):
    import signal
    import time
    import urllib.request

    port = _free_port()
    config = write_config(tmp_path, f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path / 'run.db'}"
[web]
listen = "127.0.0.1:{port}"
public_url = "https://meldbot.example.nl"
""")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MELDBOT_")}
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(config)], cwd=tmp_path,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**environment, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    body = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.1)  # polling for readiness, not waiting out a race
        assert body == {"status": "ok", "database": "ok"}, process.stderr.read() if process.poll() else ""
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert "web server listening" in stderr and "Traceback" not in stderr


def _audit(database: Path) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(database) as connection:
        return [tuple(row) for row in connection.execute("SELECT actor, action FROM audit_log ORDER BY id")]


def test_teams_claim_code_prints_a_single_use_code_alone_on_the_last_line(tmp_path):
    import hashlib
    import sqlite3

    from bot.core.login import claim_digest

    config = write_config(tmp_path, f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path / 'm.db'}"
[teams]
app_id = ""
allow_unauthenticated = true
""")
    first = meldbot("teams", "claim-code", "--config", str(config), cwd=tmp_path)
    second = meldbot("teams", "claim-code", "--config", str(config), cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    code = first.stdout.strip().splitlines()[-1]
    assert len(code.replace("-", "")) == 12 and code != second.stdout.strip().splitlines()[-1]
    assert "coordinatiekanaal" in first.stdout and "30 minutes" in first.stdout
    with sqlite3.connect(tmp_path / "m.db") as connection:
        rows = connection.execute("SELECT code_digest, platform, used_at FROM claim_codes").fetchall()
    assert len(rows) == 2 and (claim_digest(code), "teams", None) in rows
    assert all(code not in str(row) and hashlib.sha256(code.encode()).hexdigest() not in str(row) for row in rows)
    assert ("cli:" + __import__("getpass").getuser(), "claim_code_issued") in _audit(tmp_path / "m.db")


@pytest.mark.parametrize("body, key", [
    ("", "[teams] is not configured"),
    ('[teams]\napp_id = ""\nallow_unauthenticated = true\ncoordinator_channel = "19:x@thread.tacv2"\n',
     "[teams] coordinator_channel"),
])
def test_teams_claim_code_refuses_configs_it_cannot_serve(tmp_path, body, key):
    config = write_config(tmp_path, f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "m.db"}"\n' + body)
    result = meldbot("teams", "claim-code", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and key in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cases_list_is_audited(tmp_path):
    result = meldbot("chat", "--user", "anna", cwd=tmp_path, stdin="ik werd net uitgescholden aan de balie\nverzenden\n")
    assert result.returncode == 0, result.stderr
    assert meldbot("cases", "list", "--status", "new", cwd=tmp_path).returncode == 0
    import sqlite3

    with sqlite3.connect(tmp_path / "meldbot.db") as connection:
        (actor, detail), = connection.execute("SELECT actor, detail FROM audit_log WHERE action = 'cli_list'")
    assert actor.startswith("cli:") and json.loads(detail) == {"results": 1, "status": "new"}


def test_own_vocabulary_file_is_used_and_a_broken_one_stops_with_exit_2(tmp_path):
    (tmp_path / "woorden.toml").write_text('[places.counter]\nnl = ["wijkpunt"]\n', encoding="utf-8")
    config = write_config(tmp_path, '[organisation]\nvocabulary = "woorden.toml"\n')
    result = meldbot("chat", "--config", str(config), cwd=tmp_path,
                     stdin="Een bewoner schold me uit in het wijkpunt\n")
    assert result.returncode == 0, result.stderr
    # The place was read from the organisation's own word: no list of places is offered to choose from.
    assert "Balie of loket" in result.stdout and "Op straat of buitendienst" not in result.stdout
    (tmp_path / "kapot.toml").write_text('[places.counter]\nnl = "wijkpunt"\n', encoding="utf-8")
    broken = write_config(tmp_path, '[organisation]\nvocabulary = "kapot.toml"\n')
    result = meldbot("chat", "--config", str(broken), cwd=tmp_path, stdin="")
    assert result.returncode == 2 and "kapot.toml" in result.stderr and "[counter]" in result.stderr
    assert "Traceback" not in result.stderr
    missing = write_config(tmp_path, '[organisation]\nvocabulary = "weg.toml"\n')
    result = meldbot("chat", "--config", str(missing), cwd=tmp_path, stdin="")
    assert result.returncode == 2 and "[organisation] vocabulary" in result.stderr

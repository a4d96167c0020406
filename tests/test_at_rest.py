"""Nothing readable at rest: after reports through `meldbot chat`, no file Meldbot writes (database,
WAL, logs) and no `pg_dump` holds a story fragment, a file's bytes or the reporter's user name."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
USER = "hendrikje.zwanenburg"
STORY = "Meneer Kwakkelsteyn schopte me hard tegen mijn scheenbeen bij de balie"
DRAFT = "Een tweede verhaal over mevrouw Pruttelaar die nog niet verzonden is"
FILE_BYTES = b"CANARY-FILE-CONTENT-7f3a9 " * 40
CANARIES = ("Kwakkelsteyn", "scheenbeen", "Pruttelaar", "zwanenburg", "CANARY-FILE-CONTENT")


def chat(cwd: Path, env: dict, stdin: str):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MELDBOT_")}
    environment.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bot.cli", "chat", "--user", USER], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=120, env=environment)


def leaks(blob: bytes) -> list[str]:
    lowered = blob.lower()
    return [c for c in CANARIES if c.lower().encode() in lowered]


@pytest.mark.both_databases
def test_reports_leave_nothing_readable_at_rest(database_url, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    evidence = tmp_path / "input" / "bewijs.txt"
    evidence.parent.mkdir()
    evidence.write_bytes(FILE_BYTES)
    env = {"MELDBOT_DATABASE__URL": database_url}
    postgres = make_url(database_url).get_backend_name() == "postgresql"
    if postgres:
        env["MELDBOT_PRIVACY__KEY"] = "B" * 43 + "="
    result = chat(data, env, f"/file {evidence}\n{STORY}\nok\nverzenden\n{DRAFT}\n")
    assert result.returncode == 0, result.stderr
    assert "opgeslagen onder nummer MB-" in result.stdout and "Ontvangen: bewijs.txt" in result.stdout
    assert leaks(result.stderr.encode()) == []  # the log
    if postgres:
        url = make_url(database_url)
        dump = subprocess.run(["pg_dump", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
                               "-U", url.username or "postgres", "--no-owner", url.database],
                              capture_output=True, timeout=120, check=True).stdout
        assert b"CREATE TABLE public.cases" in dump and len(dump) > 10_000
        assert leaks(dump) == []
    else:
        folder = Path(make_url(database_url).database).parent
        written = [p for p in folder.rglob("*") if p.is_file() and "input" not in p.parts]
        names = {p.name for p in written}
        assert {"meldbot.db", "meldbot.key"} <= names, names
        for path in written:
            assert leaks(path.read_bytes()) == [], path
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path  # readable by this account only
    # ... and the data is all there for whoever holds the key: the report reads back.
    again = chat(data, env, "mijn meldingen\n")
    assert again.returncode == 0, again.stderr
    assert "MB-" in again.stdout

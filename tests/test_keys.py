"""The master key: rotation (also after an interruption), and a wrong or missing key at start-up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import storage
from storage import crypto, keys

ROOT = Path(__file__).resolve().parents[1]


def meldbot(*args: str, cwd: Path, stdin: str = ""):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MELDBOT_")}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=120, env={**environment, "PYTHONPATH": str(ROOT)})


#: One report: one case key, then the keyring's five keys (the keyring is rewrapped last). Stopped
#: after the case key, inside the keyring, and with every key done but the key files not swapped.
@pytest.mark.parametrize("stop_after", [1, 3, 6])
def test_rotation_interrupted_then_finished_and_the_old_key_refused(tmp_path, stop_after):
    made = meldbot("chat", cwd=tmp_path, stdin="ik werd net uitgescholden aan de balie\nok\nverzenden\n")
    assert made.returncode == 0 and "opgeslagen onder nummer MB-" in made.stdout, made.stderr
    key_file = tmp_path / "meldbot.key"
    old = keys.read_key_file(key_file)
    new = crypto.new_key()
    keys.write_key_file(tmp_path / "meldbot.key.next", new)

    async def interrupt():
        db = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'meldbot.db'}")
        try:
            return await keys.rotate(db, old, new, stop_after=stop_after)
        finally:
            await db.dispose()

    assert asyncio.run(interrupt()).rewrapped == stop_after
    before = (tmp_path / "meldbot.db").read_bytes()
    refused = meldbot("chat", cwd=tmp_path, stdin="mijn meldingen\n")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "rotation of the master key was interrupted" in refused.stderr and "keys rotate" in refused.stderr
    assert (tmp_path / "meldbot.db").read_bytes() == before  # nothing written

    finished = meldbot("keys", "rotate", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert "Resuming" in finished.stdout and keys.read_key_file(key_file) == new
    retired = [p for p in tmp_path.iterdir() if p.name.startswith("meldbot.key.old-")]
    assert len(retired) == 1 and keys.read_key_file(retired[0]) == old
    listed = meldbot("chat", cwd=tmp_path, stdin="mijn meldingen\n")
    assert listed.returncode == 0 and "MB-" in listed.stdout, listed.stderr

    key_file.write_text(crypto.encode_key(old) + "\n")  # the old key back in place: refused, nothing written
    before = (tmp_path / "meldbot.db").read_bytes()
    wrong = meldbot("chat", cwd=tmp_path, stdin="hallo\n")
    assert wrong.returncode == 2 and "[privacy] key_file" in wrong.stderr and "not the master key" in wrong.stderr
    assert (tmp_path / "meldbot.db").read_bytes() == before


def test_a_missing_key_for_an_existing_database_is_refused(tmp_path):
    made = meldbot("chat", cwd=tmp_path, stdin="hallo\n")
    assert made.returncode == 0, made.stderr
    (tmp_path / "meldbot.key").unlink()
    missing = meldbot("chat", cwd=tmp_path, stdin="hallo\n")
    assert missing.returncode == 2 and "missing" in missing.stderr and "[privacy] key_file" in missing.stderr
    assert not (tmp_path / "meldbot.key").exists()  # no new key was made for the old data

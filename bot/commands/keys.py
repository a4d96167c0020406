"""`meldbot keys rotate`: rewrap every data key with a new master key; an interrupted run resumes."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import storage
from storage import crypto, keys

from bot.config import ConfigError, Settings
from bot.masterkey import ENV_KEY, read_configured_key


async def rotate_command(settings: Settings, new_key_file: str | None) -> int:
    """Write (or, after an interruption, reuse) the new key file, rewrap every key, then put the new
    key in place of the old one (file keys) or tell the operator to update the secret (env keys)."""
    old, path = read_configured_key(settings)
    if old is None:
        raise ConfigError(f"[privacy] key_file: no master key at {path}: nothing to rotate")
    if path is None and not new_key_file:
        raise ConfigError(f"[privacy] key: the key comes from {ENV_KEY}; give --new-key-file PATH for the new key")
    target = Path(new_key_file) if new_key_file else path.with_name(path.name + ".next")
    if target.exists():
        new = keys.read_key_file(target)
        print(f"Resuming with the new key in {target}")
    else:
        new = crypto.new_key()
        keys.write_key_file(target, new)
        print(f"New master key written to {target}")
    db = storage.create_engine(settings.database.url)
    try:
        progress = await keys.rotate(db, old, new)
    finally:
        await db.dispose()
    print(f"Rewrapped {progress.rewrapped} keys.")
    if path is not None and not new_key_file:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        retired = path.with_name(f"{path.name}.old-{stamp}")
        os.replace(path, retired)
        os.replace(target, path)
        print(f"The new key is now {path}. The old key is {retired}: keep it with the backups made before "
              "today (they need it), or destroy it. Back up the new key apart from the database.")
    else:
        print(f"Put the key in {target} into the configured secret ({ENV_KEY} or [privacy] key_file) now; "
              "the old key no longer opens this database.")
    return 0

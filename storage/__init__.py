"""Persistence: SQLAlchemy 2 models (`models.py`), engine and transaction set-up (`db.py`), the
repository functions in `repo/` (one module per domain) and Alembic migrations."""

from .db import create_engine, create_sessionmaker, current_revision, head_revision, ping, transaction, upgrade


async def prepare(engine, master: bytes):
    """Migrate the database with `master` and return its vault (`storage.crypto.Vault`)."""
    from .keys import open_vault

    await upgrade(engine, master=master)
    return await open_vault(engine, master)


__all__ = ["create_engine", "create_sessionmaker", "current_revision", "head_revision", "ping", "prepare",
           "transaction", "upgrade"]

"""Persistence: SQLAlchemy 2 models (`models.py`), engine and transaction set-up (`db.py`), the
repository functions in `repo/` (one module per domain) and Alembic migrations."""

from .db import create_engine, create_sessionmaker, current_revision, head_revision, ping, transaction, upgrade

__all__ = ["create_engine", "create_sessionmaker", "current_revision", "head_revision", "ping", "transaction",
           "upgrade"]

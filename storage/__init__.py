"""Persistence: SQLAlchemy 2 models, repository functions and Alembic migrations."""

from .db import create_engine, create_sessionmaker, current_revision, head_revision, ping, transaction, upgrade

__all__ = ["create_engine", "create_sessionmaker", "current_revision", "head_revision", "ping", "transaction",
           "upgrade"]

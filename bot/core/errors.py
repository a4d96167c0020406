"""Which errors mean "the database cannot do it now", the turn-failed error and error references."""

from __future__ import annotations

import asyncio
import secrets

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

#: Errors that mean "the database could not do it now": the user is told to try again.
DATABASE_ERRORS = (SQLAlchemyError, OSError, ConnectionError, asyncio.TimeoutError)


class TurnFailed(Exception):
    """The database failed during a turn; carries the conversation's language for the answer."""

    def __init__(self, language: str):
        super().__init__(language)
        self.language = language


def error_reference() -> str:
    """A short code for one failure, told to the user and logged, so support can find the log line."""
    return secrets.token_hex(3).upper()


def is_duplicate_event(error: IntegrityError) -> bool:
    """True when the unique constraint on handled event IDs fired (a redelivered event)."""
    return "handled_events" in str(error.orig)


def is_turn_specific(error: BaseException) -> bool:
    """Whether one turn can have caused this error (a bug, a constraint), so that the others of its
    batch should be tried without it; not for a database that is down, locked or slow."""
    if isinstance(error, (IntegrityError, DataError)):
        return True
    return not isinstance(error, (*DATABASE_ERRORS, TimeoutError, TurnFailed))

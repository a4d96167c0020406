"""What every model builds on: the declarative base with its naming convention, aware UTC datetimes
on both databases, and the `Sealed` mixin whose fields live in one encrypted JSON column."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator
from sqlalchemy.orm import DeclarativeBase

from .crypto import open_with, seal_with

#: Where a sessionmaker keeps the vault (in its `info`); loaded rows open their sealed fields with it.
VAULT = "meldbot_vault"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (no time zones) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware datetime")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


_DEFAULTS: dict[str, Any] = {"state": {}, "address": {}, "answers": {}, "payload": {}, "evaluation": {}}


class Sealed:
    """Fields kept in one sealed JSON column (`sealed`) and read and written as plain attributes.

    `_sealed_key` names the organisation key of the vault (None: the row's own data key in
    `wrapped_key`). A row loaded by a session gets that session's vault; a new row gets it from the
    repository function that makes it (`bind_vault`)."""

    _sealed_key: str | None = "state"
    _sealed_purpose: str = ""
    _sealed_fields: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        for name in cls.__dict__.get("_sealed_fields", ()):
            setattr(cls, name, property(lambda self, n=name: self._plain().get(n, _copy_default(n)),
                                        lambda self, value, n=name: self.set_sealed(**{n: value})))
        super().__init_subclass__(**kwargs)

    def bind_vault(self, vault) -> None:
        """Give a row made in code (not loaded) the vault its fields are sealed with."""
        self.__dict__["_vault"] = vault

    def _cipher(self):
        vault = self.__dict__.get("_vault")
        if vault is None:
            raise LookupError(f"{type(self).__name__} has no vault: load it through a session built by "
                              "storage.db.create_sessionmaker")
        if self._sealed_key is None:
            return vault.data_cipher(self.wrapped_key, self._sealed_purpose)
        return vault._cipher(self._sealed_key)

    def _plain(self) -> dict[str, Any]:
        plain = self.__dict__.get("_opened")
        if plain is None:
            blob = self.__dict__.get("sealed")
            plain = open_with(self._cipher(), blob, self._sealed_purpose) if blob else {}
            self.__dict__["_opened"] = plain
        return plain

    def set_sealed(self, **values: Any) -> None:
        """Change sealed fields (re-sealed at once, so the row is flushed like any other change)."""
        self.sealed = self.resealed(**values)

    def resealed(self, **values: Any) -> bytes:
        """The sealed column with `values` changed, for a repository's own UPDATE (the row object
        reads the new values at once)."""
        plain = {**self._plain(), **values}
        blob = seal_with(self._cipher(), plain, self._sealed_purpose)
        self.__dict__["_opened"] = plain
        return blob


def _copy_default(name: str) -> Any:
    value = _DEFAULTS.get(name)
    return dict(value) if isinstance(value, dict) else value


def _on_load(target, context, attrs=None) -> None:
    if attrs is None or "sealed" in attrs or "sealed_name" in attrs:
        target.__dict__.pop("_opened", None)
        target.__dict__.pop("_filename", None)
    session = getattr(context, "session", None)
    vault = session.info.get(VAULT) if session is not None else None
    if vault is not None:
        target.__dict__["_vault"] = vault

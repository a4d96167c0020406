"""SQLAlchemy models. Every schema change gets an Alembic migration in `storage/migrations`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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


class Conversation(Base):
    """One chat between the bot and one person on one platform, with the dialogue state."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("platform", "conversation_key", "sender", name="uq_conversations_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    conversation_key: Mapped[str] = mapped_column(String(255))
    sender: Mapped[str] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(8), default="nl")
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    address: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    #: Durable timers of an unfinished report: one reminder, then expiry (NULL: nothing pending).
    draft_reminder_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    draft_expires_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class Reporter(Base):
    """Who reported: kept apart from the case so that access and retention can differ."""

    __tablename__ = "reporters"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id", name="uq_reporters_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    platform_user_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime]


class Case(Base):
    """A submitted report and its follow-up."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    story: Mapped[str] = mapped_column(Text)
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[dt.datetime]
    place: Mapped[str | None] = mapped_column(String(32))
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    contact_wanted: Mapped[bool | None] = mapped_column(Boolean)
    aftercare: Mapped[str | None] = mapped_column(String(8))
    police_came: Mapped[bool | None] = mapped_column(Boolean)
    police_report_wanted: Mapped[bool | None] = mapped_column(Boolean)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(8), default="nl")
    reporter_id: Mapped[int] = mapped_column(ForeignKey("reporters.id", ondelete="RESTRICT"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    assigned_to: Mapped[str | None] = mapped_column(String(255))
    #: Who has the case, as `platform:user id` (the name above is for display).
    assigned_to_id: Mapped[str | None] = mapped_column(String(255), index=True)
    #: Follow-up steps recorded so far: step code -> {"at", "date", "by", "value"}.
    followup: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: When the case counts as overdue if nobody has taken it.
    claim_due_at: Mapped[dt.datetime | None]
    closing_summary: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(index=True)
    updated_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]

    kinds: Mapped[list["CaseKind"]] = relationship(
        back_populates="case", cascade="all, delete-orphan", lazy="selectin", order_by="CaseKind.position"
    )
    reporter: Mapped[Reporter] = relationship(lazy="raise")

    @property
    def kind_codes(self) -> list[str]:
        return [k.kind for k in self.kinds]


class CaseKind(Base):
    """The kinds of incident of a case (multi-select), one row each so lists can filter on them."""

    __tablename__ = "case_kinds"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    case: Mapped[Case] = relationship(back_populates="kinds")


class CaseEvent(Base):
    """The timeline of a case: everything that happens to it, in order."""

    __tablename__ = "case_events"
    __table_args__ = (Index("ix_case_events_case_time", "case_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime]


class Attachment(Base):
    """Evidence: a file sent by the reporter, with its digest. Bytes inline or at a file path."""

    __tablename__ = "attachments"
    __table_args__ = (Index("ix_attachments_draft", "conversation_id", "draft_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    draft_id: Mapped[str | None] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    #: Deferred: lists and case pages never load the bytes; a download reads them in chunks.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    path: Mapped[str | None] = mapped_column(String(1024))
    received_at: Mapped[dt.datetime]


class HandledEvent(Base):
    """Inbound platform event IDs already handled: a redelivered event is answered once only."""

    __tablename__ = "handled_events"
    __table_args__ = (UniqueConstraint("platform", "event_id", name="uq_handled_events_event"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    handled_at: Mapped[dt.datetime] = mapped_column(index=True)


class OutboxMessage(Base):
    """A message that must reach someone. Written in the same transaction as the change that
    caused it; a worker delivers it with retries and marks it delivered once."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    platform: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str | None] = mapped_column(String(255))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    locked_until: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]
    result: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]


class CaseThread(Base):
    """Where a case's coordinator notification was posted: the root of its thread per platform."""

    __tablename__ = "case_threads"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    destination: Mapped[str] = mapped_column(String(255), primary_key=True)
    root_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]


class Timer(Base):
    """A durable follow-up timer of a case: fires once at `due_at`, survives restarts.

    `key` makes scheduling idempotent (one reminder per case and kind)."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_due", "done_at", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    due_at: Mapped[dt.datetime]
    locked_until: Mapped[dt.datetime | None]
    done_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime]


class LoginLink(Base):
    """A single-use login link sent to a coordinator in a direct chat. Only a digest is stored."""

    __tablename__ = "login_links"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    coordinator: Mapped[str] = mapped_column(String(300))
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class WebSession(Base):
    """A coordinator's browser session. Only a digest of the cookie value is stored."""

    __tablename__ = "web_sessions"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    coordinator: Mapped[str] = mapped_column(String(300), index=True)
    name: Mapped[str] = mapped_column(String(255))
    csrf_token: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[dt.datetime]
    last_seen_at: Mapped[dt.datetime]
    #: When the platform last confirmed this person is (still) a coordinator.
    checked_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]


class AuditEntry(Base):
    """Who looked at or changed what, when. Never the case's content."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_case_time", "case_reference", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(40))
    case_reference: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ClaimCode(Base):
    """A single-use code from `meldbot teams claim-code` that binds the coordinator channel.

    Proves that whoever claims a channel in chat also has access to the server. Only a digest is stored."""

    __tablename__ = "claim_codes"

    code_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class FileUsage(Base):
    """Files and bytes one person sent on one day: the daily file quota (`[limits]`)."""

    __tablename__ = "file_usage"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    sender: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: ISO date in the organisation's time zone.
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    files: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)

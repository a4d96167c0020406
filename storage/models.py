"""SQLAlchemy models. Every schema change gets an Alembic migration in `storage/migrations`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import event, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .crypto import open_with
from .model_base import VAULT, Base, Sealed, _on_load  # noqa: F401 (VAULT: re-exported for storage.db)


class Conversation(Sealed, Base):
    """One chat between the bot and one person on one platform, with the dialogue state.

    The platform's conversation key and the sender are kept only as keyed hashes (for lookups) and,
    with the dialogue state and the reply address, sealed under the state key."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("platform", "key_hash", "sender_hash", name="uq_conversations_key"),)
    _sealed_purpose = "conversation"
    #: `last_answer`: the replies of the last turn that submitted a report, for a platform that
    #: redelivers that message after a crash (see `bot.core.turns.replayed_answer`).
    _sealed_fields = ("conversation_key", "sender", "state", "address", "last_answer")

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64))
    sender_hash: Mapped[str] = mapped_column(String(64), index=True)
    language: Mapped[str] = mapped_column(String(8), default="nl")
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    #: Durable timers of an unfinished report: one reminder, then expiry (NULL: nothing pending).
    draft_reminder_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    draft_expires_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class Reporter(Sealed, Base):
    """Who reported (not anonymously): kept apart from the case so that access and retention can
    differ. The user ID is a keyed hash for lookups; ID and name are sealed under the people key."""

    __tablename__ = "reporters"
    __table_args__ = (UniqueConstraint("platform", "identity_hash", name="uq_reporters_identity"),)
    _sealed_key = "people"
    _sealed_purpose = "reporter"
    _sealed_fields = ("platform_user_id", "display_name")

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    identity_hash: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime]


class Case(Sealed, Base):
    """A submitted report and its follow-up.

    The story, the free answers, the closing summary and the evaluation (what was learned, which
    measures were taken) are sealed under the case's own data key
    (`wrapped_key`, wrapped by the master key). An anonymous case has no reporter row and no
    conversation: `contact` (sealed under the anonymous key) says where to reach its reporter."""

    __tablename__ = "cases"
    _sealed_key = None  # the case's own data key
    _sealed_purpose = "case"
    _sealed_fields = ("story", "answers", "closing_summary", "evaluation")

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_master: Mapped[str] = mapped_column(String(16), index=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    occurred_at: Mapped[dt.datetime]
    place: Mapped[str | None] = mapped_column(String(32))
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    contact_wanted: Mapped[bool | None] = mapped_column(Boolean)
    aftercare: Mapped[str | None] = mapped_column(String(8))
    police_came: Mapped[bool | None] = mapped_column(Boolean)
    police_report_wanted: Mapped[bool | None] = mapped_column(Boolean)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(8), default="nl")
    reporter_id: Mapped[int | None] = mapped_column(ForeignKey("reporters.id", ondelete="RESTRICT"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    #: The platform the report came from (where its reporter is answered).
    platform: Mapped[str | None] = mapped_column(String(32))
    #: Anonymous cases: where the reporter is reached, sealed under the anonymous key ...
    contact: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: ... and a keyed hash (anonymous key) of who reported, for the reporter's own commands.
    reporter_tag: Mapped[str | None] = mapped_column(String(64), index=True)
    assigned_to: Mapped[str | None] = mapped_column(String(255))
    #: Who has the case, as `platform:user id` (the name above is for display).
    assigned_to_id: Mapped[str | None] = mapped_column(String(255), index=True)
    #: Follow-up steps recorded so far: step code -> {"at", "date", "by", "value"}.
    followup: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: When the case counts as overdue if nobody has taken it.
    claim_due_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(index=True)
    updated_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]
    #: The reporter withdrew the report: personal data goes after the withdrawal retention.
    withdrawn_at: Mapped[dt.datetime | None]
    #: Under legal hold (police report or proceedings pending): never purged while set.
    legal_hold_since: Mapped[dt.datetime | None]
    #: When the case thread was told that the case will be purged.
    purge_notice_at: Mapped[dt.datetime | None]

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
    """The timeline of a case: everything that happens to it, in order. `sealed` holds the event's
    data (notes, messages) under the case's data key; `data` is filled in when it is read."""

    __tablename__ = "case_events"
    __table_args__ = (Index("ix_case_events_case_time", "case_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(255))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime]

    @property
    def data(self) -> dict[str, Any]:
        return self.__dict__.get("_data", {})


class Attachment(Base):
    """Evidence: a file sent by the reporter, with the SHA-256 of the original. The name and the bytes
    (in chunks, see `storage.crypto.seal_file`) are sealed under the file's own data key."""

    __tablename__ = "attachments"
    __table_args__ = (Index("ix_attachments_draft", "conversation_id", "draft_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    draft_id: Mapped[str | None] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_master: Mapped[str] = mapped_column(String(16), index=True)
    sealed_name: Mapped[bytes] = mapped_column(LargeBinary)
    media_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    #: Deferred: lists and case pages never load the bytes; a download reads them in chunks.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    path: Mapped[str | None] = mapped_column(String(1024))
    received_at: Mapped[dt.datetime]

    @property
    def filename(self) -> str:
        cached = self.__dict__.get("_filename")
        if cached is None:
            vault = self.__dict__.get("_vault")
            if vault is None:
                raise LookupError("attachment loaded without a vault")
            cipher = vault.data_cipher(self.wrapped_key, "file")
            cached = self.__dict__["_filename"] = open_with(cipher, self.sealed_name, "file name")
        return cached


class HandledEvent(Base):
    """Inbound platform event IDs already handled: a redelivered event is answered once only."""

    __tablename__ = "handled_events"
    __table_args__ = (UniqueConstraint("platform", "event_id", name="uq_handled_events_event"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    handled_at: Mapped[dt.datetime] = mapped_column(index=True)


class OutboxMessage(Sealed, Base):
    """A message that must reach someone. Written in the same transaction as the change that
    caused it; a worker delivers it with retries and marks it delivered once."""

    __tablename__ = "outbox"
    # Both on the undelivered rows only (the few a worker looks at among all ever sent): what is due
    # next, and whether a case has an older message still to go (which keeps per-case order).
    __table_args__ = (
        Index("ix_outbox_pending", "next_attempt_at", "id", postgresql_where=text("delivered_at IS NULL"),
              sqlite_where=text("delivered_at IS NULL")),
        Index("ix_outbox_pending_case", "case_id", "id", postgresql_where=text("delivered_at IS NULL"),
              sqlite_where=text("delivered_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    platform: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str | None] = mapped_column(String(255))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    #: The payload, sealed under the state key; emptied once delivered.
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    _sealed_purpose = "outbox"
    _sealed_fields = ("payload",)
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


class KeyringEntry(Base):
    """An organisation key (see `storage.crypto`), wrapped by the master key `key_master`."""

    __tablename__ = "keyring"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    key_master: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime]


class CaseFact(Base):
    """The de-identified facts of one case, in plain columns for the statistics and the exports:
    codes, months and follow-up milestones only, no free text and no identity.

    Every case has one, kept up to date as the case changes (`storage.repo.facts`). When the case is
    purged its fact stays with `case_id` cleared: not even the reference survives (it would link back
    to chat history), and the yearly overview still counts it."""

    __tablename__ = "case_facts"
    #: Every statistic selects a range of report months; the export walks them in (month, id) order.
    __table_args__ = (Index("ix_case_facts_reported_month_id", "reported_month", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"), unique=True)
    #: Months as `YYYY-MM` in the organisation's time zone.
    occurred_month: Mapped[str] = mapped_column(String(7), index=True)
    reported_month: Mapped[str] = mapped_column(String(7))
    #: The kind codes ...
    kinds: Mapped[list[Any]] = mapped_column(default=list)
    #: ... and as bits (`storage.repo.facts.KIND_BITS`): the statistics count and filter kinds in the
    #: same scan as everything else, without a join.
    kind_bits: Mapped[int] = mapped_column(Integer, default=0)
    #: The measures of the evaluation as bits (`storage.repo.facts.MEASURE_BITS`).
    measure_bits: Mapped[int] = mapped_column(Integer, default=0)
    #: While the case is open (new or in progress): when it was reported (for "open longer than 30
    #: days" without a join); None once it is closed or withdrawn, so a purged fact never has it.
    open_since: Mapped[dt.datetime | None] = mapped_column(index=True)
    place: Mapped[str | None] = mapped_column(String(32))
    department: Mapped[str | None] = mapped_column(String(40))
    perpetrator: Mapped[str | None] = mapped_column(String(16))
    injury: Mapped[bool] = mapped_column(Boolean, default=False)
    damage: Mapped[bool] = mapped_column(Boolean, default=False)
    absence: Mapped[bool] = mapped_column(Boolean, default=False)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Entered by a coordinator for someone who reported by phone or in person.
    recorded: Mapped[bool] = mapped_column(Boolean, default=False)
    police_wanted: Mapped[bool] = mapped_column(Boolean, default=False)
    police_filed: Mapped[bool] = mapped_column(Boolean, default=False)
    aftercare_offered: Mapped[bool] = mapped_column(Boolean, default=False)
    aftercare_accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    aggressor_response: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Working hours from the report to the first contact (None: no contact recorded).
    first_contact_hours: Mapped[float | None] = mapped_column(Float)
    #: `new`, `in_progress`, `closed` or `withdrawn`.
    status: Mapped[str] = mapped_column(String(16), default="new")
    #: Follow-up milestones: step code -> working hours after the report (None: done, time unknown).
    milestones: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: Of a purged case: `closed`, `withdrawn` or `erased` (on request), and when it ended (month).
    outcome: Mapped[str | None] = mapped_column(String(16))
    ended_month: Mapped[str | None] = mapped_column(String(7))
    purged_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime | None]


class FileUsage(Base):
    """Files and bytes one person sent on one day: the daily file quota (`[limits]`)."""

    __tablename__ = "file_usage"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    sender: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: ISO date in the organisation's time zone.
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    files: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)



class PlatformState(Base):
    """State of a chat platform that every instance shares (the Teams coordinator channel, the
    Matrix encryption store and roster), sealed under the store key; `version` grows with each write."""

    __tablename__ = "platform_state"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    updated_at: Mapped[dt.datetime]


for _model in (Conversation, Reporter, Case, OutboxMessage, Attachment):
    event.listen(_model, "load", _on_load)
    event.listen(_model, "refresh", _on_load)

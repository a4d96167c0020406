"""Repository functions: verb-first, the session always a keyword-only argument.

None of these commit: the caller owns the transaction, so everything one turn changes (state,
case, events, outbox rows) is written together or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import bindparam, case as case_when, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .models import (
    Attachment,
    AuditEntry,
    Case,
    CaseEvent,
    CaseKind,
    CaseThread,
    ClaimCode,
    Conversation,
    FileUsage,
    HandledEvent,
    LoginLink,
    OutboxMessage,
    Reporter,
    Timer,
    WebSession,
)

# No 0/O, 1/I/L or U: a reference must survive being read out over the phone.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_PREFIX = "MB"
#: Files up to this size are kept inside the database; larger ones need a file store.
MAX_INLINE_ATTACHMENT = 20 * 1024 * 1024


def new_reference() -> str:
    """A random case reference such as `MB-7KQ-4XP` (30^6 ≈ 7·10^8 possibilities)."""
    chars = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(6))
    return f"{REFERENCE_PREFIX}-{chars[:3]}-{chars[3:]}"


def normalise_reference(text: str) -> str:
    """Accept `mb7kq4xp`, `MB-7KQ-4XP` or `7kq 4xp` as the same reference."""
    chars = "".join(ch for ch in text.upper() if ch.isalnum())
    if chars.startswith(REFERENCE_PREFIX):
        chars = chars[len(REFERENCE_PREFIX):]
    return f"{REFERENCE_PREFIX}-{chars[:3]}-{chars[3:]}" if len(chars) == 6 else text.strip().upper()


# -- inbound events -------------------------------------------------------------------------------


async def is_event_handled(*, session: AsyncSession, platform: str, event_id: str) -> bool:
    """True when this platform event was handled before."""
    found = await session.scalar(
        select(HandledEvent.id).where(HandledEvent.platform == platform, HandledEvent.event_id == event_id)
    )
    return found is not None


async def mark_event_handled(*, session: AsyncSession, platform: str, event_id: str, now: dt.datetime) -> None:
    """Record an event as handled; a duplicate fails here with IntegrityError (unique constraint).

    A plain INSERT rather than the ORM unit of work: this runs on every inbound message.
    """
    await session.execute(insert(HandledEvent).values(platform=platform, event_id=event_id, handled_at=now))


def _insert(session: AsyncSession, model):
    """A plain (Core) INSERT into a model's table that knows ON CONFLICT DO NOTHING on both engines."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(model.__table__)


async def mark_events_handled(*, session: AsyncSession, events: Iterable[tuple[str, str]], now: dt.datetime
                              ) -> set[tuple[str, str]]:
    """Record many events as handled in one statement; returns those that were new (the others
    were handled before, or are being handled by another transaction that then committed)."""
    # Sorted: two processes inserting overlapping IDs then wait in the same order (no deadlock).
    rows = [{"platform": platform, "event_id": event_id, "handled_at": now}
            for platform, event_id in sorted(set(events))]
    if not rows:
        return set()
    statement = (_insert(session, HandledEvent).values(rows)
                 .on_conflict_do_nothing(index_elements=["platform", "event_id"])
                 .returning(HandledEvent.__table__.c.platform, HandledEvent.__table__.c.event_id))
    return {(platform, event_id) for platform, event_id in (await session.execute(statement)).all()}


async def get_or_create_conversations(
    *, session: AsyncSession, keys: Iterable[tuple[str, str, str]], language: str, now: dt.datetime
) -> dict[tuple[str, str, str], Conversation]:
    """The conversation rows of many (platform, conversation key, sender), created on first contact,
    locked (PostgreSQL) against turns of the same conversations in other processes."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    identity = tuple_(Conversation.platform, Conversation.conversation_key, Conversation.sender)

    async def load(subset):
        # Locked in ID order, in every process: batches of other processes wait, never deadlock.
        query = select(Conversation).where(identity.in_(subset)).order_by(Conversation.id).with_for_update()
        return {(c.platform, c.conversation_key, c.sender): c for c in await session.scalars(query)}

    found = await load(wanted)
    missing = sorted(key for key in wanted if key not in found)
    if missing:
        await session.execute(
            _insert(session, Conversation).values([
                {"platform": p, "conversation_key": k, "sender": s, "language": language, "state": {},
                 "address": {}, "created_at": now, "updated_at": now} for p, k, s in missing])
            .on_conflict_do_nothing(index_elements=["platform", "conversation_key", "sender"])
        )
        found.update(await load(missing))
    return found


async def save_conversation_states(*, session: AsyncSession, rows: list[dict[str, Any]],
                                   conversations: dict[int, Conversation]) -> None:
    """Store the states of many conversations in one executemany UPDATE (rows hold `id` and the
    columns to set, the same columns in every row)."""
    if not rows:
        return
    await session.execute(update(Conversation), rows)
    for row in rows:
        conversation = conversations[row["id"]]
        for name, value in row.items():
            if name != "id":
                set_committed_value(conversation, name, value)


async def prune_handled_events(*, session: AsyncSession, before: dt.datetime) -> int:
    """Forget handled event IDs older than `before` (platforms stop redelivering long before)."""
    result = await session.execute(delete(HandledEvent).where(HandledEvent.handled_at < before))
    return result.rowcount or 0


# -- conversations --------------------------------------------------------------------------------


async def save_conversation_state(
    *, session: AsyncSession, conversation: Conversation, state: dict[str, Any], language: str,
    now: dt.datetime, address: dict[str, Any] | None = None,
    draft_timers: tuple[dt.datetime | None, dt.datetime | None] | None = None,
) -> None:
    """Store the dialogue state (and the latest reply address) of a conversation; `draft_timers` sets
    the reminder and expiry of its unfinished report in the same statement."""
    values: dict[str, Any] = {"state": state, "language": language, "updated_at": now}
    if draft_timers is not None:
        values["draft_reminder_at"], values["draft_expires_at"] = draft_timers
    if address is not None and address != conversation.address:
        values["address"] = address
    # A plain UPDATE (every turn does this); the loaded object is brought up to date without a flush.
    await session.execute(update(Conversation).where(Conversation.id == conversation.id).values(**values)
                          .execution_options(synchronize_session=False))
    for name, value in values.items():
        set_committed_value(conversation, name, value)


async def get_conversation(*, session: AsyncSession, conversation_id: int, for_update: bool = False
                           ) -> Conversation | None:
    """A conversation by its ID; `for_update` locks the row (PostgreSQL) against a concurrent turn."""
    return await session.get(Conversation, conversation_id, with_for_update=for_update or None)


async def assign_case(*, session: AsyncSession, case: Case, identity: str, name: str, now: dt.datetime,
                      expected: str | None = None) -> bool:
    """Assign a case to `identity` if it is still assigned to `expected` (None: untaken).

    One conditional UPDATE, so of two coordinators taking the same case at once only one wins."""
    result = await session.execute(
        update(Case).where(Case.id == case.id, Case.assigned_to_id.is_not_distinct_from(expected),
                           Case.status != "closed")
        .values(assigned_to_id=identity, assigned_to=name, updated_at=now,
                # Decided by the database, not from a status read earlier (it may have changed since).
                status=case_when((Case.status == "new", "in_progress"), else_=Case.status))
        .execution_options(synchronize_session=False)
    )
    await session.refresh(case)
    return result.rowcount == 1


# -- reporters and cases --------------------------------------------------------------------------


async def upsert_reporter(
    *, session: AsyncSession, platform: str, platform_user_id: str, display_name: str | None,
    conversation_id: int | None, now: dt.datetime,
) -> int:
    """The ID of the reporter row for a platform identity, created or brought up to date (latest
    name and conversation) in one statement."""
    statement = _UPSERT_REPORTER.get(session.get_bind().dialect.name)
    if statement is None:
        # Built once per dialect: building an upsert (and its cache key) costs more than running it.
        table = Reporter.__table__
        statement = _insert(session, Reporter).values(
            platform=bindparam("platform"), platform_user_id=bindparam("platform_user_id"),
            display_name=bindparam("display_name"), conversation_id=bindparam("conversation_id"),
            created_at=bindparam("created_at", type_=Reporter.__table__.c.created_at.type))
        statement = _UPSERT_REPORTER[session.get_bind().dialect.name] = statement.on_conflict_do_update(
            index_elements=["platform", "platform_user_id"],
            set_={"display_name": func.coalesce(statement.excluded.display_name, table.c.display_name),
                  "conversation_id": func.coalesce(statement.excluded.conversation_id, table.c.conversation_id)},
        ).returning(table.c.id)
    return int(await session.scalar(statement, {
        "platform": platform, "platform_user_id": platform_user_id, "display_name": display_name,
        "conversation_id": conversation_id, "created_at": now}))


_UPSERT_REPORTER: dict[str, Any] = {}


@dataclass(frozen=True)
class NewCase:
    """What a submitted report holds, as the engine hands it to `create_case`."""

    story: str
    kinds: list[str]
    occurred_at: dt.datetime
    place: str | None
    urgent: bool
    contact_wanted: bool | None
    aftercare: str | None
    police_came: bool | None
    police_report_wanted: bool | None
    language: str
    answers: dict[str, Any]
    anonymous: bool = False
    #: When the case is overdue if nobody has taken it.
    claim_due_at: dt.datetime | None = None


async def create_case(
    *, session: AsyncSession, new: NewCase, reporter_id: int, conversation_id: int | None,
    now: dt.datetime, reference: str | None = None,
) -> Case:
    """Insert a case with a fresh unique reference and its first timeline event."""
    for attempt in range(10):
        case = Case(
            reference=reference if reference and attempt == 0 else new_reference(),
            status="new", story=new.story, answers=new.answers, occurred_at=new.occurred_at,
            place=new.place, urgent=new.urgent, contact_wanted=new.contact_wanted, aftercare=new.aftercare,
            police_came=new.police_came, police_report_wanted=new.police_report_wanted,
            anonymous=new.anonymous, language=new.language, claim_due_at=new.claim_due_at,
            reporter_id=reporter_id,
            conversation_id=conversation_id, created_at=now, updated_at=now,
            kinds=[CaseKind(kind=kind, position=i) for i, kind in enumerate(new.kinds)],
        )
        try:
            async with session.begin_nested():
                session.add(case)
        except IntegrityError as error:  # reference taken: the savepoint rolled back and dropped `case`
            if "reference" not in str(error.orig).lower():
                raise
            continue
        await add_case_event(session=session, case=case, kind="submitted", actor="reporter", data={}, now=now)
        return case
    raise IntegrityError("INSERT INTO cases", None, Exception("no free case reference found"))


async def add_case_event(
    *, session: AsyncSession, case: Case, kind: str, actor: str, data: dict[str, Any], now: dt.datetime
) -> None:
    """Append an event to a case's timeline (one plain INSERT)."""
    if case.id is None:
        await session.flush()
    await session.execute(_ADD_EVENT, {"case_id": case.id, "kind": kind, "actor": actor, "data": data,
                                       "created_at": now})
    if case.updated_at != now:  # a new case already has it: no UPDATE for nothing
        case.updated_at = now


async def get_case(*, session: AsyncSession, reference: str) -> Case | None:
    """A case by its reference (any spelling `normalise_reference` accepts)."""
    return await session.scalar(select(Case).where(Case.reference == normalise_reference(reference)))


async def lock_case(*, session: AsyncSession, case: Case) -> Case:
    """Lock a case for a change (PostgreSQL; SQLite's write transaction already excludes others) and
    reload it. The reporter's conversation is locked first: a reporter's turn takes the same two
    locks in that order, so the two never deadlock."""
    if case.conversation_id is not None:
        await session.get(Conversation, case.conversation_id, with_for_update=True)
    locked = await session.get(Case, case.id, with_for_update=True, populate_existing=True)
    assert locked is not None
    return locked


async def list_cases(
    *, session: AsyncSession, status: str | None = None, kind: str | None = None,
    since: dt.datetime | None = None, until: dt.datetime | None = None, limit: int = 500,
    assigned_to_id: str | None = None, reference: str | None = None,
) -> list[Case]:
    """Cases, newest first, optionally filtered by status, kind, creation period, assignee and
    (part of) the reference."""
    query = select(Case).order_by(Case.created_at.desc(), Case.id.desc()).limit(limit)
    if assigned_to_id:
        query = query.where(Case.assigned_to_id == assigned_to_id)
    if reference:
        query = query.where(Case.reference.contains(normalise_reference(reference), autoescape=True))
    if status:
        query = query.where(Case.status == status)
    if kind:
        query = query.where(Case.id.in_(select(CaseKind.case_id).where(CaseKind.kind == kind)))
    if since:
        query = query.where(Case.created_at >= since)
    if until:
        query = query.where(Case.created_at < until)
    return list(await session.scalars(query))


async def list_cases_for_reporter(*, session: AsyncSession, platform: str, platform_user_id: str) -> list[Case]:
    """A reporter's own cases, newest first."""
    query = (
        select(Case)
        .join(Reporter, Case.reporter_id == Reporter.id)
        .where(Reporter.platform == platform, Reporter.platform_user_id == platform_user_id)
        .order_by(Case.created_at.desc(), Case.id.desc())
    )
    return list(await session.scalars(query))


async def list_case_events(*, session: AsyncSession, case: Case) -> list[CaseEvent]:
    """A case's timeline, oldest first."""
    query = select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.created_at, CaseEvent.id)
    return list(await session.scalars(query))


# -- attachments ----------------------------------------------------------------------------------


async def add_attachment(
    *, session: AsyncSession, filename: str, media_type: str, content: bytes, now: dt.datetime,
    conversation_id: int | None = None, draft_id: str | None = None, case_id: int | None = None,
) -> Attachment:
    """Store a file with its SHA-256, size, media type and time received."""
    if len(content) > MAX_INLINE_ATTACHMENT:
        raise ValueError("attachment too large to store inline")
    attachment = Attachment(
        conversation_id=conversation_id, draft_id=draft_id, case_id=case_id, filename=filename[:255],
        media_type=media_type[:127] or "application/octet-stream", size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), content=content, received_at=now,
    )
    session.add(attachment)
    await session.flush()
    return attachment


async def link_draft_attachments(*, session: AsyncSession, conversation_id: int, draft_id: str, case_id: int) -> int:
    """Move a draft's files to the case it became; returns how many."""
    result = await session.execute(
        update(Attachment)
        .where(Attachment.conversation_id == conversation_id, Attachment.draft_id == draft_id,
               Attachment.case_id.is_(None))
        .values(case_id=case_id)
    )
    return result.rowcount or 0


async def delete_draft_attachments(*, session: AsyncSession, conversation_id: int, draft_id: str) -> int:
    """Remove the files of a cancelled draft."""
    result = await session.execute(
        delete(Attachment).where(Attachment.conversation_id == conversation_id, Attachment.draft_id == draft_id,
                                 Attachment.case_id.is_(None))
    )
    return result.rowcount or 0


async def list_attachments(*, session: AsyncSession, case_id: int) -> list[Attachment]:
    """The evidence of a case, in the order received."""
    query = select(Attachment).where(Attachment.case_id == case_id).order_by(Attachment.received_at, Attachment.id)
    return list(await session.scalars(query))


async def get_case_attachment(*, session: AsyncSession, case_id: int, attachment_id: int
                              ) -> tuple[Attachment, int | None] | None:
    """One file of a case without its bytes, with the length of the bytes stored in the database
    (None when they are not stored inline); None for a file of another case or none at all."""
    # length() of a blob/bytea reads the stored size, not the bytes (SQLite and PostgreSQL).
    row = (await session.execute(
        select(Attachment, func.length(Attachment.content))
        .where(Attachment.id == attachment_id, Attachment.case_id == case_id)
    )).one_or_none()
    return (row[0], row[1]) if row is not None else None


async def read_attachment_chunk(*, session: AsyncSession, attachment_id: int, offset: int, size: int
                                ) -> bytes | None:
    """`size` bytes of a file's content from `offset` (0-based): one chunk, never the whole file."""
    chunk = func.substr(Attachment.content, offset + 1, size, type_=Attachment.content.type)
    return await session.scalar(select(chunk).where(Attachment.id == attachment_id))


# -- outbox ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedMessage:
    """What `enqueue_message` tells about the row it added."""

    id: int
    idempotency_key: str


async def enqueue_message(
    *, session: AsyncSession, kind: str, platform: str, destination: str | None, payload: dict[str, Any],
    now: dt.datetime, case_id: int | None = None,
) -> QueuedMessage:
    """Add a message to the outbox, in the caller's transaction (one plain INSERT: no unit of work)."""
    key = uuid.uuid4().hex
    message_id = await session.scalar(_ENQUEUE, {
        "kind": kind, "platform": platform, "destination": destination, "payload": payload, "case_id": case_id,
        "idempotency_key": key, "attempts": 0, "next_attempt_at": now, "created_at": now})
    return QueuedMessage(message_id, key)


def _prebuilt_insert(table, columns: Iterable[str]):
    """An INSERT with a bind parameter per column, built once (building one per call costs more than
    running it)."""
    return insert(table).values({name: bindparam(name, type_=table.c[name].type) for name in columns})


_ENQUEUE = _prebuilt_insert(OutboxMessage.__table__, (
    "kind", "platform", "destination", "payload", "case_id", "idempotency_key", "attempts", "next_attempt_at",
    "created_at")).returning(OutboxMessage.__table__.c.id)
_ADD_EVENT = _prebuilt_insert(CaseEvent.__table__, ("case_id", "kind", "actor", "data", "created_at"))


async def claim_due_messages(
    *, session: AsyncSession, now: dt.datetime, lease: dt.timedelta, limit: int = 20,
    platforms: Iterable[str] | None = None,
) -> list[OutboxMessage]:
    """Lease up to `limit` due, undelivered messages to this worker.

    A message whose case has an older undelivered message waits, so a case's thread replies never
    overtake its first notification. The lease is taken with a conditional UPDATE, so two workers
    never hold the same message.
    """
    older = OutboxMessage.__table__.alias("older")
    blocked = (
        select(older.c.id)
        .where(older.c.case_id == OutboxMessage.case_id, older.c.id < OutboxMessage.id,
               older.c.delivered_at.is_(None), older.c.platform == OutboxMessage.platform,
               older.c.destination.is_not_distinct_from(OutboxMessage.destination))
        .exists()
    )
    query = (
        select(OutboxMessage)
        .where(
            OutboxMessage.delivered_at.is_(None),
            OutboxMessage.next_attempt_at <= now,
            or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until <= now),
            ~blocked,
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if platforms is not None:
        query = query.where(OutboxMessage.platform.in_(list(platforms)))
    claimed = []
    for message_id in list(await session.scalars(query.with_only_columns(OutboxMessage.id))):
        # The conditional UPDATE returns the leased row itself: no second SELECT.
        leased = await session.scalar(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.delivered_at.is_(None),
                   or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until <= now))
            .values(locked_until=now + lease, attempts=OutboxMessage.attempts + 1)
            .returning(OutboxMessage)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        if leased is not None:
            claimed.append(leased)
    return claimed


async def has_due_messages(*, session: AsyncSession, now: dt.datetime, platforms: Iterable[str] | None = None
                           ) -> bool:
    """Whether any undelivered message is due and not leased (a read: takes no write lock)."""
    query = select(OutboxMessage.id).where(
        OutboxMessage.delivered_at.is_(None), OutboxMessage.next_attempt_at <= now,
        or_(OutboxMessage.locked_until.is_(None), OutboxMessage.locked_until <= now)).limit(1)
    if platforms is not None:
        query = query.where(OutboxMessage.platform.in_(list(platforms)))
    return await session.scalar(query) is not None


async def mark_message_delivered(
    *, session: AsyncSession, message_id: int, now: dt.datetime, result: str | None = None, scrub: bool = False
) -> None:
    """Record a delivery; the message is never sent again. `scrub` empties its payload."""
    values: dict[str, Any] = {"delivered_at": now, "locked_until": None, "result": (result or "")[:255],
                              "last_error": None}
    if scrub:
        values["payload"] = {}
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message_id).values(**values)
        .execution_options(synchronize_session=False)
    )


async def mark_message_failed(
    *, session: AsyncSession, message_id: int, retry_at: dt.datetime, error: str
) -> None:
    """Record a failed attempt and when to try again."""
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message_id)
        .values(next_attempt_at=retry_at, locked_until=None, last_error=error[:2000])
        .execution_options(synchronize_session=False)
    )


async def count_pending_messages(*, session: AsyncSession, platforms: Iterable[str] | None = None) -> int:
    """Undelivered outbox messages."""
    query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
    if platforms is not None:
        query = query.where(OutboxMessage.platform.in_(list(platforms)))
    return int(await session.scalar(query) or 0)


async def next_due_time(*, session: AsyncSession) -> dt.datetime | None:
    """When the earliest undelivered message is due (None when the outbox is empty)."""
    return await session.scalar(
        select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.delivered_at.is_(None))
    )


# -- case threads ---------------------------------------------------------------------------------


async def get_case_thread(*, session: AsyncSession, case_id: int, platform: str, destination: str) -> CaseThread | None:
    """Where a case's notification was posted on a platform, if it was."""
    return await session.get(CaseThread, (case_id, platform, destination))


async def set_case_thread(
    *, session: AsyncSession, case_id: int, platform: str, destination: str, root_id: str, now: dt.datetime
) -> None:
    """Remember the root of a case's thread (the posted notification); one upsert."""
    statement = _insert(session, CaseThread).values(case_id=case_id, platform=platform, destination=destination,
                                                    root_id=root_id, created_at=now)
    await session.execute(statement.on_conflict_do_update(
        index_elements=["case_id", "platform", "destination"], set_={"root_id": statement.excluded.root_id}))


async def delete_case_threads(*, session: AsyncSession, case_id: int, platform: str, keep: str) -> int:
    """Forget a case's threads on `platform` except the one in `keep` (its room/channel moved)."""
    result = await session.execute(delete(CaseThread).where(CaseThread.case_id == case_id,
                                                            CaseThread.platform == platform,
                                                            CaseThread.destination != keep))
    return result.rowcount or 0


async def get_case_by_id(*, session: AsyncSession, case_id: int) -> Case | None:
    """A case by its row ID."""
    return await session.get(Case, case_id)


async def get_case_by_thread(*, session: AsyncSession, platform: str, destination: str, root_id: str) -> Case | None:
    """The case whose coordinator notification is the root of this thread."""
    query = (
        select(Case).join(CaseThread, CaseThread.case_id == Case.id)
        .where(CaseThread.platform == platform, CaseThread.destination == destination, CaseThread.root_id == root_id)
    )
    return await session.scalar(query)


async def get_reporter(*, session: AsyncSession, reporter_id: int) -> Reporter | None:
    """A reporter by ID."""
    return await session.get(Reporter, reporter_id)


async def list_case_threads(*, session: AsyncSession, case_id: int) -> list[CaseThread]:
    """Where a case's notifications were posted (one thread per platform and room/channel)."""
    return list(await session.scalars(select(CaseThread).where(CaseThread.case_id == case_id)))


async def find_conversation(*, session: AsyncSession, platform: str, sender: str) -> Conversation | None:
    """The most recent direct conversation of a person with the bot on a platform."""
    query = (select(Conversation).where(Conversation.platform == platform, Conversation.sender == sender)
             .order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(1))
    return await session.scalar(query)


# -- timers ---------------------------------------------------------------------------------------


async def schedule_timer(*, session: AsyncSession, key: str, kind: str, case_id: int | None, due_at: dt.datetime,
                         now: dt.datetime) -> bool:
    """Schedule a timer once per key (a second call with the same key changes nothing)."""
    result = await session.execute(
        _insert(session, Timer).values(key=key, kind=kind, case_id=case_id, due_at=due_at, created_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return result.rowcount == 1


async def cancel_timers(*, session: AsyncSession, case_id: int, kind: str, now: dt.datetime) -> int:
    """Mark a case's pending timers of one kind done without firing them (superseded)."""
    result = await session.execute(
        update(Timer).where(Timer.case_id == case_id, Timer.kind == kind, Timer.done_at.is_(None))
        .values(done_at=now, outcome="superseded").execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


async def claim_due_timer(*, session: AsyncSession, now: dt.datetime, lease: dt.timedelta) -> Timer | None:
    """Lease the earliest due timer (conditional UPDATE: two workers never fire the same one)."""
    candidates = await session.scalars(
        select(Timer).where(Timer.done_at.is_(None), Timer.due_at <= now,
                            or_(Timer.locked_until.is_(None), Timer.locked_until <= now))
        .order_by(Timer.due_at, Timer.id).limit(5)
    )
    for timer in list(candidates):
        result = await session.execute(
            update(Timer).where(Timer.id == timer.id, Timer.done_at.is_(None),
                                or_(Timer.locked_until.is_(None), Timer.locked_until <= now))
            .values(locked_until=now + lease).execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            await session.refresh(timer)
            return timer
    return None


async def finish_timer(*, session: AsyncSession, timer_id: int, now: dt.datetime, outcome: str) -> bool:
    """Mark a leased timer done; False when it was already done (then nothing else may happen)."""
    result = await session.execute(
        update(Timer).where(Timer.id == timer_id, Timer.done_at.is_(None))
        .values(done_at=now, locked_until=None, outcome=outcome[:40]).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def next_timer_due(*, session: AsyncSession) -> dt.datetime | None:
    """When the earliest pending timer (case or draft) is due."""
    times = [
        await session.scalar(select(func.min(Timer.due_at)).where(Timer.done_at.is_(None))),
        await session.scalar(select(func.min(Conversation.draft_reminder_at))),
        await session.scalar(select(func.min(Conversation.draft_expires_at))),
    ]
    return min((t for t in times if t is not None), default=None)


async def list_timers(*, session: AsyncSession, case_id: int) -> list[Timer]:
    """A case's timers, in due order."""
    return list(await session.scalars(select(Timer).where(Timer.case_id == case_id).order_by(Timer.due_at)))


async def due_draft_conversation(*, session: AsyncSession, now: dt.datetime) -> Conversation | None:
    """A conversation whose unfinished report is due for its reminder or its expiry (row locked)."""
    query = (select(Conversation)
             .where(or_(Conversation.draft_reminder_at <= now, Conversation.draft_expires_at <= now))
             .order_by(Conversation.id).limit(1).with_for_update(skip_locked=True))
    return await session.scalar(query)


async def set_draft_timers(*, session: AsyncSession, conversation: Conversation, reminder_at: dt.datetime | None,
                           expires_at: dt.datetime | None) -> None:
    """Set (or clear) the reminder and expiry of a conversation's unfinished report."""
    await session.execute(update(Conversation).where(Conversation.id == conversation.id)
                          .values(draft_reminder_at=reminder_at, draft_expires_at=expires_at)
                          .execution_options(synchronize_session=False))
    set_committed_value(conversation, "draft_reminder_at", reminder_at)
    set_committed_value(conversation, "draft_expires_at", expires_at)


# -- coordinator login, sessions and audit ---------------------------------------------------------


async def add_login_link(*, session: AsyncSession, digest: str, coordinator: str, name: str, now: dt.datetime,
                         expires_at: dt.datetime) -> None:
    """Store a login link (its digest only)."""
    session.add(LoginLink(token_digest=digest, coordinator=coordinator, name=name, created_at=now,
                          expires_at=expires_at))
    await session.flush()


async def get_login_link(*, session: AsyncSession, digest: str) -> LoginLink | None:
    """A login link by the digest of its token."""
    return await session.get(LoginLink, digest)


async def use_login_link(*, session: AsyncSession, digest: str, now: dt.datetime) -> bool:
    """Spend a login link: True once, for an unused and unexpired link (conditional UPDATE)."""
    result = await session.execute(
        update(LoginLink).where(LoginLink.token_digest == digest, LoginLink.used_at.is_(None),
                                LoginLink.expires_at > now)
        .values(used_at=now).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def create_web_session(*, session: AsyncSession, digest: str, coordinator: str, name: str, csrf_token: str,
                             language: str, now: dt.datetime, expires_at: dt.datetime) -> WebSession:
    """Start a coordinator's browser session."""
    web_session = WebSession(token_digest=digest, coordinator=coordinator, name=name, csrf_token=csrf_token,
                             language=language, created_at=now, last_seen_at=now, checked_at=now,
                             expires_at=expires_at)
    session.add(web_session)
    await session.flush()
    return web_session


async def get_web_session(*, session: AsyncSession, digest: str) -> WebSession | None:
    """A browser session by the digest of its cookie."""
    return await session.get(WebSession, digest)


async def touch_web_session(*, session: AsyncSession, digest: str, now: dt.datetime,
                            language: str | None = None) -> None:
    """Record activity on a session (it stays alive while used)."""
    values: dict[str, Any] = {"last_seen_at": now}
    if language:
        values["language"] = language
    await session.execute(update(WebSession).where(WebSession.token_digest == digest).values(**values)
                          .execution_options(synchronize_session=False))


async def mark_web_session_checked(*, session: AsyncSession, digest: str, now: dt.datetime) -> None:
    """The platform confirmed again that the session's owner is a coordinator."""
    await session.execute(update(WebSession).where(WebSession.token_digest == digest).values(checked_at=now)
                          .execution_options(synchronize_session=False))


async def end_web_session(*, session: AsyncSession, digest: str, now: dt.datetime) -> None:
    """Log out: the session cannot be used again, whatever the browser still holds."""
    await session.execute(update(WebSession).where(WebSession.token_digest == digest, WebSession.ended_at.is_(None))
                          .values(ended_at=now).execution_options(synchronize_session=False))


async def prune_logins(*, session: AsyncSession, before: dt.datetime) -> int:
    """Forget login links and browser sessions that ended (or expired) before `before`."""
    links = await session.execute(delete(LoginLink).where(LoginLink.expires_at < before))
    sessions = await session.execute(delete(WebSession).where(WebSession.expires_at < before))
    return (links.rowcount or 0) + (sessions.rowcount or 0)


async def add_audit(*, session: AsyncSession, actor: str, action: str, now: dt.datetime,
                    case_reference: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """Write an audit entry: who did what to which case, when (never the case's content)."""
    session.add(AuditEntry(at=now, actor=actor, action=action, case_reference=case_reference, detail=detail or {}))
    await session.flush()


async def list_audit(*, session: AsyncSession, case_reference: str | None = None, limit: int = 200
                     ) -> list[AuditEntry]:
    """The newest audit entries, optionally of one case."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if case_reference:
        query = query.where(AuditEntry.case_reference == case_reference)
    return list(await session.scalars(query))


# -- coordinator channel claim codes ---------------------------------------------------------------


async def add_claim_code(*, session: AsyncSession, platform: str, digest: str, now: dt.datetime,
                         expires_at: dt.datetime) -> None:
    """Store a claim code (its digest only)."""
    session.add(ClaimCode(code_digest=digest, platform=platform, created_at=now, expires_at=expires_at))
    await session.flush()


async def use_claim_code(*, session: AsyncSession, platform: str, digest: str, now: dt.datetime) -> bool:
    """Spend a claim code: True once, for an unused, unexpired code of `platform` (conditional UPDATE)."""
    result = await session.execute(
        update(ClaimCode).where(ClaimCode.code_digest == digest, ClaimCode.platform == platform,
                                ClaimCode.used_at.is_(None), ClaimCode.expires_at > now)
        .values(used_at=now).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def prune_claim_codes(*, session: AsyncSession, before: dt.datetime) -> int:
    """Forget claim codes that expired before `before`."""
    result = await session.execute(delete(ClaimCode).where(ClaimCode.expires_at < before))
    return result.rowcount or 0


# -- quotas -----------------------------------------------------------------------------------------


async def get_file_usage(*, session: AsyncSession, platform: str, sender: str, day: str) -> tuple[int, int]:
    """Files and bytes one person sent on `day` (ISO date in the organisation's time zone)."""
    row = (await session.execute(select(FileUsage.files, FileUsage.bytes).where(
        FileUsage.platform == platform, FileUsage.sender == sender, FileUsage.day == day))).first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def add_file_usage(*, session: AsyncSession, platform: str, sender: str, day: str, files: int,
                         size: int) -> None:
    """Count accepted files towards the day's quota (kept even when a draft is cancelled later)."""
    statement = _insert(session, FileUsage).values(platform=platform, sender=sender, day=day, files=files, bytes=size)
    statement = statement.on_conflict_do_update(
        index_elements=["platform", "sender", "day"],
        set_={"files": FileUsage.__table__.c.files + files, "bytes": FileUsage.__table__.c.bytes + size})
    await session.execute(statement)


async def prune_file_usage(*, session: AsyncSession, before_day: str) -> int:
    """Forget quota counts of days before `before_day`."""
    result = await session.execute(delete(FileUsage).where(FileUsage.day < before_day))
    return result.rowcount or 0


async def count_draft_files(*, session: AsyncSession, conversation_id: int, draft_id: str) -> int:
    """Files attached to one unfinished report."""
    query = select(func.count(Attachment.id)).where(Attachment.conversation_id == conversation_id,
                                                    Attachment.draft_id == draft_id)
    return int(await session.scalar(query) or 0)


async def count_case_files(*, session: AsyncSession, case_id: int) -> int:
    """Files of one case."""
    return int(await session.scalar(select(func.count(Attachment.id)).where(Attachment.case_id == case_id)) or 0)


async def count_recent_reports(*, session: AsyncSession, platform: str, platform_user_id: str,
                               since: dt.datetime) -> int:
    """Reports one person made since `since`."""
    query = (select(func.count(Case.id)).join(Reporter, Reporter.id == Case.reporter_id)
             .where(Reporter.platform == platform, Reporter.platform_user_id == platform_user_id,
                    Case.created_at >= since))
    return int(await session.scalar(query) or 0)

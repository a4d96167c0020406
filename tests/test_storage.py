"""The storage layer, the same suite on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

import storage
from helpers import TEST_MASTER_KEY
from storage import repo
from storage.models import Base, Case, OutboxMessage

pytestmark = pytest.mark.both_databases

T0 = dt.datetime(2026, 11, 23, 9, 15, tzinfo=dt.timezone.utc)


def new_case(**overrides) -> repo.NewCase:
    values = dict(story="Hij schold me uit aan de balie.", kinds=["verbal", "threat"], occurred_at=T0, place="counter",
                  urgent=True, contact_wanted=True, aftercare=None, police_came=False, police_report_wanted=True,
                  language="nl", answers={"place_text": ""})
    values.update(overrides)
    return repo.NewCase(**values)


async def make_case(session, *, user="@anna:example.org", now=T0, **overrides) -> Case:
    key = ("matrix", f"!room-{user}", user)
    conversation = (await repo.get_or_create_conversations(session=session, keys=[key], language="nl", now=now))[key]
    reporter_id = await repo.upsert_reporter(session=session, platform="matrix", platform_user_id=user,
                                             display_name="Anna", conversation_id=conversation.id, now=now)
    return await repo.create_case(session=session, new=new_case(**overrides), reporter_id=reporter_id,
                                  conversation_id=conversation.id, now=now)


async def test_migrations_reach_head_and_match_the_models(db):
    assert await storage.current_revision(db) == storage.head_revision()

    def diff(connection):
        return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)

    async with db.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []


async def test_upgrade_twice_is_harmless(db):
    await storage.upgrade(db, master=TEST_MASTER_KEY)
    assert await storage.current_revision(db) == storage.head_revision()


async def test_case_round_trip_with_kinds_events_and_aware_times(sessions):
    async with sessions() as session, session.begin():
        case = await make_case(session)
        reference = case.reference
    async with sessions() as session:
        loaded = await repo.get_case(session=session, reference=reference.lower().replace("-", ""))
        assert loaded is not None
        assert loaded.kind_codes == ["verbal", "threat"]
        assert loaded.occurred_at == T0 and loaded.occurred_at.tzinfo is not None
        assert loaded.status == "new" and loaded.urgent and loaded.police_report_wanted
        events = await repo.list_case_events(session=session, case=loaded)
        assert [e.kind for e in events] == ["submitted"]


async def test_reference_format_and_collision_retry(sessions):
    async with sessions() as session, session.begin():
        first = await make_case(session)
        assert len(first.reference) == 10 and first.reference.startswith("MB-")
        assert not set(first.reference[3:].replace("-", "")) & set("01ILOU")
        reporter_id = await repo.upsert_reporter(session=session, platform="matrix",
                                                 platform_user_id="@anna:example.org", display_name=None,
                                                 conversation_id=None, now=T0)
        assert reporter_id == first.reporter_id  # the same person: the same row, name kept
        # Asking for a reference that exists makes create_case pick another one instead of failing.
        second = await repo.create_case(session=session, new=new_case(), reporter_id=reporter_id,
                                        conversation_id=None, now=T0, reference=first.reference)
        assert second.reference != first.reference
    async with sessions() as session:
        assert len(await repo.list_cases(session=session)) == 2


async def test_reporter_identity_is_its_own_row_and_unique(sessions):
    async with sessions() as session, session.begin():
        await make_case(session, user="@bob:example.org")
        await make_case(session, user="@bob:example.org")
    async with sessions() as session:
        mine = await repo.list_cases_for_reporter(session=session, platform="matrix",
                                                  platform_user_id="@bob:example.org")
        other = await repo.list_cases_for_reporter(session=session, platform="teams",
                                                   platform_user_id="@bob:example.org")
        assert len(mine) == 2 and other == []
        count = await session.scalar(text("SELECT count(*) FROM reporters"))
        assert count == 1


async def test_handled_event_ids_are_unique(sessions):
    async with sessions() as session, session.begin():
        await repo.mark_event_handled(session=session, platform="matrix", event_id="$abc", now=T0)
    async with sessions() as session:
        assert await repo.is_event_handled(session=session, platform="matrix", event_id="$abc")
        assert not await repo.is_event_handled(session=session, platform="teams", event_id="$abc")
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await repo.mark_event_handled(session=session, platform="matrix", event_id="$abc", now=T0)
    async with sessions() as session, session.begin():
        removed = await repo.prune_handled_events(session=session, before=T0 + dt.timedelta(seconds=1))
    assert removed == 1


async def test_conversation_state_and_concurrent_creation(sessions):
    async with sessions() as session, session.begin():
        (first,) = (await repo.get_or_create_conversations(session=session, keys=[("console", "k", "s")],
                                                           language="nl", now=T0)).values()
        await repo.save_conversation_state(session=session, conversation=first, state={"step": "wishes"},
                                           language="en", now=T0, address={"user": "s"})
    async with sessions() as session, session.begin():
        (again,) = (await repo.get_or_create_conversations(session=session, keys=[("console", "k", "s")],
                                                           language="nl", now=T0)).values()
        assert again.id == first.id and again.state == {"step": "wishes"} and again.language == "en"
        assert again.address == {"user": "s"}


async def test_attachments_keep_digest_and_move_from_draft_to_case(sessions):
    content = b"\x89PNG fake screenshot bytes"
    async with sessions() as session, session.begin():
        case = await make_case(session)
        conversation_id = case.conversation_id
        await repo.add_attachment(session=session, filename="scherm.png", media_type="image/png", content=content,
                                  now=T0, conversation_id=conversation_id, draft_id="d1")
        await repo.add_attachment(session=session, filename="weg.png", media_type="image/png", content=b"x",
                                  now=T0, conversation_id=conversation_id, draft_id="d2")
        assert await repo.link_draft_attachments(session=session, conversation_id=conversation_id, draft_id="d1",
                                                 case_id=case.id) == 1
        assert await repo.delete_draft_attachments(session=session, conversation_id=conversation_id,
                                                   draft_id="d2") == 1
    async with sessions() as session:
        (stored,) = await repo.list_attachments(session=session, case_id=case.id)
        assert stored.sha256 == hashlib.sha256(content).hexdigest()
        stored_bytes = await repo.read_attachment(session=session, attachment=stored)
        assert stored.size == len(content) and stored_bytes == content and stored.media_type == "image/png"
        assert stored.received_at == T0


async def test_attachment_over_the_limit_is_refused(sessions):
    async with sessions() as session:
        with pytest.raises(ValueError):
            await repo.add_attachment(session=session, filename="big.bin", media_type="application/octet-stream",
                                      content=b"\0" * (repo.MAX_INLINE_ATTACHMENT + 1), now=T0)


async def test_list_filters(sessions):
    async with sessions() as session, session.begin():
        await make_case(session, kinds=["verbal"], now=T0)
        threat = await make_case(session, kinds=["threat"], now=T0 + dt.timedelta(days=1))
        threat.status = "in_progress"
    async with sessions() as session:
        assert [c.kind_codes for c in await repo.list_cases(session=session)] == [["threat"], ["verbal"]]
        assert len(await repo.list_cases(session=session, kind="threat")) == 1
        assert len(await repo.list_cases(session=session, status="new")) == 1
        assert len(await repo.list_cases(session=session, since=T0 + dt.timedelta(hours=1))) == 1
        assert len(await repo.list_cases(session=session, until=T0 + dt.timedelta(hours=1))) == 1


async def test_outbox_lease_delivery_retry_and_case_order(sessions):
    async with sessions() as session, session.begin():
        case = await make_case(session)
        root = await repo.enqueue_message(session=session, kind="case_notification", platform="matrix",
                                          destination="!coord", payload={"reference": case.reference}, now=T0,
                                          case_id=case.id)
        reply = await repo.enqueue_message(session=session, kind="case_thread", platform="matrix",
                                           destination="!coord", payload={"event": "x"}, now=T0, case_id=case.id)
        other = await repo.enqueue_message(session=session, kind="case_notification", platform="teams",
                                           destination="chan", payload={}, now=T0, case_id=case.id)
        assert root.idempotency_key != reply.idempotency_key
    lease = dt.timedelta(seconds=60)
    async with sessions() as session, session.begin():
        claimed = await repo.claim_due_messages(session=session, now=T0, lease=lease, platforms=["matrix"])
    # The thread reply waits until the case's notification is delivered.
    assert [m.id for m in claimed] == [root.id] and claimed[0].attempts == 1
    async with sessions() as session, session.begin():
        assert await repo.claim_due_messages(session=session, now=T0, lease=lease, platforms=["matrix"]) == []
        await repo.mark_message_failed(session=session, message_id=root.id, retry_at=T0 + dt.timedelta(seconds=30),
                                       error="429")
    async with sessions() as session, session.begin():
        assert await repo.claim_due_messages(session=session, now=T0 + dt.timedelta(seconds=10), lease=lease,
                                             platforms=["matrix"]) == []
        again = await repo.claim_due_messages(session=session, now=T0 + dt.timedelta(seconds=31), lease=lease,
                                              platforms=["matrix"])
        assert [m.id for m in again] == [root.id] and again[0].attempts == 2
        await repo.mark_message_delivered(session=session, message_id=root.id, now=T0, result="$event")
    async with sessions() as session, session.begin():
        after = await repo.claim_due_messages(session=session, now=T0 + dt.timedelta(seconds=31), lease=lease,
                                              platforms=["matrix"])
        assert [m.id for m in after] == [reply.id]
        teams = await repo.claim_due_messages(session=session, now=T0, lease=lease, platforms=["teams"])
        assert [m.id for m in teams] == [other.id]
        assert await repo.count_pending_messages(session=session) == 2


async def test_expired_lease_is_claimed_again(sessions):
    async with sessions() as session, session.begin():
        message = await repo.enqueue_message(session=session, kind="reporter_message", platform="console",
                                             destination=None, payload={}, now=T0)
    lease = dt.timedelta(seconds=60)
    async with sessions() as session, session.begin():
        assert len(await repo.claim_due_messages(session=session, now=T0, lease=lease)) == 1
    async with sessions() as session, session.begin():
        # The worker that held it died: after the lease another worker takes it over.
        later = await repo.claim_due_messages(session=session, now=T0 + dt.timedelta(seconds=61), lease=lease)
        assert [m.id for m in later] == [message.id]
    async with sessions() as session:
        stored = await session.scalar(select(OutboxMessage).where(OutboxMessage.id == message.id))
        assert stored.attempts == 2


async def test_case_thread_root_is_remembered(sessions):
    async with sessions() as session, session.begin():
        case = await make_case(session)
        await repo.set_case_thread(session=session, case_id=case.id, platform="matrix", destination="!c",
                                   root_id="$root", now=T0)
        await repo.set_case_thread(session=session, case_id=case.id, platform="matrix", destination="!c",
                                   root_id="$root2", now=T0)
    async with sessions() as session:
        thread = await repo.get_case_thread(session=session, case_id=case.id, platform="matrix", destination="!c")
        assert thread.root_id == "$root2"


async def test_naive_datetimes_are_refused(sessions):
    async with sessions() as session:
        with pytest.raises(Exception):
            await repo.mark_event_handled(session=session, platform="x", event_id="y", now=T0.replace(tzinfo=None))


@pytest.mark.both_databases
async def test_follow_up_migration_keeps_old_claims_and_reminds_of_old_untaken_cases(database_url):
    from sqlalchemy import text

    db = storage.create_engine(database_url)
    try:
        await storage.upgrade(db, "0001")
        async with db.begin() as connection:
            for number, (assigned, status) in enumerate((("Piet", "in_progress"), (None, "new"), (None, "closed"))):
                await connection.execute(text(
                    "INSERT INTO reporters (id, platform, platform_user_id, created_at) "
                    "VALUES (:n, 'matrix', :u, :t)"), {"n": number + 1, "u": f"@u{number}:x", "t": T0})
                await connection.execute(text(
                    "INSERT INTO cases (reference, status, story, answers, occurred_at, urgent, anonymous, language,"
                    " reporter_id, assigned_to, created_at, updated_at) VALUES (:r, :s, 'x', '{}', :t, false, false,"
                    " 'nl', :n, :a, :t, :t)"), {"r": f"MB-AAA-AA{number + 2}", "s": status, "t": T0,
                                                "n": number + 1, "a": assigned})
        sessions = storage.create_sessionmaker(db, await storage.prepare(db, TEST_MASTER_KEY))
        async with sessions() as session:
            claimed = await repo.get_case(session=session, reference="MB-AAA-AA2")
            untaken = await repo.get_case(session=session, reference="MB-AAA-AA3")
            assert claimed.assigned_to_id == "legacy:Piet" and claimed.followup == {}
            assert untaken.assigned_to_id is None and untaken.claim_due_at == T0
            timers = await repo.list_timers(session=session, case_id=untaken.id)
            assert [(t.kind, t.due_at) for t in timers] == [("claim_reminder", T0)]
            closed = await repo.get_case(session=session, reference="MB-AAA-AA4")
            assert await repo.list_timers(session=session, case_id=closed.id) == []
    finally:
        await db.dispose()

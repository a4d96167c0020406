"""The de-identified fact of every case: written with the report, kept up to date by the follow-up,
left behind (without the case) by a purge, repaired by `sync_facts`, carried over by the migration."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import delete, select, text

import storage
from bot.core.casework import Coordinator
from helpers import TEST_MASTER_KEY
from stack import Stack
from storage import repo, transaction
from storage.models import Case, CaseFact

COCO = Coordinator("chat:coco", "Coco")


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url)  # Monday 23 November 2026, 10:15 in the Netherlands
    try:
        yield stack
    finally:
        await stack.close()


async def fact_of(stack, reference: str) -> CaseFact:
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        return await session.scalar(select(CaseFact).where(CaseFact.case_id == case.id))


async def change(stack, reference: str, action):
    async with transaction(stack.meldbot.sessions) as session:
        case = await repo.lock_case(session=session, case=await repo.get_case(session=session, reference=reference))
        await action(session, case)


@pytest.mark.both_databases
async def test_the_fact_follows_the_case_in_working_hours(stack):
    reference = await stack.report()
    fact = await fact_of(stack, reference)
    assert (fact.reported_month, fact.occurred_month, fact.place, fact.status) == ("2026-11", "2026-11", "counter", "new")
    assert sorted(fact.kinds) == ["threat", "verbal"] and fact.urgent and not fact.anonymous
    assert fact.first_contact_hours is None and fact.milestones == {}
    casework = stack.meldbot.pages.casework
    # Contact on Tuesday at 11:15: 6.75 working hours on Monday (10:15-17:00) and 2.25 on Tuesday.
    stack.clock.now = dt.datetime(2026, 11, 24, 10, 15, tzinfo=dt.timezone.utc)
    await change(stack, reference, lambda s, c: casework.record_step(s, c, COCO, "contact_made", None, stack.clock.now))
    await change(stack, reference, lambda s, c: casework.record_step(s, c, COCO, "aftercare_offered", None,
                                                                     stack.clock.now))
    fact = await fact_of(stack, reference)
    assert fact.first_contact_hours == 9.0 and fact.aftercare_offered and not fact.aftercare_accepted
    assert fact.milestones == {"contact_made": 9.0, "aftercare_offered": 9.0}
    # A step recorded on Friday for Wednesday counts until the end of Wednesday, never earlier.
    stack.clock.now = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.timezone.utc)
    await change(stack, reference, lambda s, c: casework.record_step(s, c, COCO, "police_report_filed",
                                                                     dt.date(2026, 11, 25), stack.clock.now))
    fact = await fact_of(stack, reference)
    assert fact.police_filed and fact.milestones["police_report_filed"] == 6.75 + 8 + 8
    await change(stack, reference, lambda s, c: casework.set_status(s, c, COCO, "closed", "Afgehandeld",
                                                                    stack.clock.now, measures=["training"]))
    fact = await fact_of(stack, reference)
    assert (fact.status, fact.ended_month, fact.outcome, fact.purged_at) == ("closed", "2026-11", None, None)
    assert repo.codes_of(repo.MEASURE_BITS, fact.measure_bits) == ["training"]


@pytest.mark.both_databases
async def test_a_purged_case_leaves_its_fact_without_anything_that_points_back(stack):
    reference = await stack.report("anna", "Een man schold me uit aan de balie en sloeg me", "verzenden")
    said = await stack.say("anna", f"intrekken {reference}")
    assert reference in said
    assert (await fact_of(stack, reference)).status == "withdrawn"
    async with stack.meldbot.sessions() as session:
        case_id = (await repo.get_case(session=session, reference=reference)).id
    # The daily purge removes a withdrawn report seven days after.
    await stack.meldbot.retention.ensure_scheduled()
    await stack.tick(days=6, hours=20)
    await stack.tick(days=1)
    async with stack.meldbot.sessions() as session:
        assert await session.get(Case, case_id) is None
        (fact,) = await session.scalars(select(CaseFact))
    kinds = repo.codes_of(repo.KIND_BITS, fact.kind_bits)
    assert fact.open_since is None and fact.case_id is None and fact.outcome == "withdrawn" and fact.status == "withdrawn"
    assert fact.purged_at is not None and fact.reported_month == "2026-11" and "physical" in kinds
    stored = json.dumps({c: str(getattr(fact, c)) for c in CaseFact.__table__.columns.keys()})
    for leak in (reference, "anna", "Anna", "schold", "balie"):
        assert leak not in stored, leak


@pytest.mark.both_databases
async def test_missing_or_stale_facts_are_written_again(stack):
    first, second = await stack.report("anna"), await stack.report("bob")
    expected = await fact_of(stack, first)
    async with transaction(stack.meldbot.sessions) as session:
        await session.execute(delete(CaseFact).where(CaseFact.id == expected.id))
        case = await repo.get_case(session=session, reference=second)
        case.updated_at = stack.clock.now + dt.timedelta(minutes=5)  # changed after its fact (an older version)
        case.place = "phone"
    async with transaction(stack.meldbot.sessions) as session:
        assert await repo.sync_facts(session=session, now=stack.clock.now) == 2
    async with transaction(stack.meldbot.sessions) as session:
        assert await repo.sync_facts(session=session, now=stack.clock.now) == 0
    again = await fact_of(stack, first)
    assert (again.kinds, again.place, again.reported_month, again.urgent) == (
        expected.kinds, expected.place, expected.reported_month, expected.urgent)
    assert (await fact_of(stack, second)).place == "phone"


@pytest.mark.both_databases
async def test_measures_of_the_evaluation_are_rows_of_their_own(stack):
    reference = await stack.report()

    async def evaluate(session, case):
        case.evaluation = {"measures": ["training", "house_rules", "made_up"], "lesson": "Balie anders inrichten"}
        await repo.add_case_event(session=session, case=case, kind="evaluated", actor="coordinator:chat:coco",
                                  data={}, now=stack.clock.now)

    await change(stack, reference, evaluate)
    fact = await fact_of(stack, reference)
    # In the order of MEASURES; an unknown code is never counted.
    assert repo.codes_of(repo.MEASURE_BITS, fact.measure_bits) == ["house_rules", "training"]


@pytest.mark.both_databases
async def test_the_migration_carries_the_facts_of_purged_cases_over(database_url):
    db = storage.create_engine(database_url)
    try:
        await storage.upgrade(db, "0004")
        async with db.begin() as connection:
            await connection.execute(text(
                "INSERT INTO case_facts (occurred_month, reported_month, kinds, place, urgent, anonymous, codes, "
                "milestones, outcome, ended_month, purged_at) VALUES ('2025-03', '2025-04', :kinds, 'street', true, "
                "false, :codes, :milestones, 'closed', '2025-05', :at)"),
                {"kinds": json.dumps(["physical", "threat"]), "at": dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc),
                 "codes": json.dumps({"consequences": ["injury", "absence"], "perpetrator_kind": "citizen"}),
                 "milestones": json.dumps({"contact_made": 3.5, "aftercare_accepted": 20.0})})
        sessions = storage.create_sessionmaker(db, await storage.prepare(db, TEST_MASTER_KEY))
        async with sessions() as session:
            (fact,) = await session.scalars(select(CaseFact))
        kinds = repo.codes_of(repo.KIND_BITS, fact.kind_bits)
        assert (fact.reported_month, fact.place, fact.perpetrator, fact.outcome, fact.status) == (
            "2025-04", "street", "citizen", "closed", "closed")
        assert (fact.injury, fact.damage, fact.absence) == (True, False, True)
        assert fact.aftercare_accepted and fact.aftercare_offered and not fact.police_filed
        assert fact.first_contact_hours is None  # old milestones were elapsed hours, not working hours
        assert kinds == ["threat", "physical"] and fact.kinds == ["physical", "threat"] and fact.case_id is None
        # The next fact gets a fresh ID (PostgreSQL's sequence was moved past the carried-over rows).
        async with transaction(sessions) as session:
            session.add(CaseFact(occurred_month="2026-01", reported_month="2026-01", kinds=[], status="new",
                                 milestones={}))
    finally:
        await db.dispose()

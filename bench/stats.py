"""The statistics page and the case export over 100,000 generated cases on PostgreSQL.

Ours: GET /stats (this year against last year, through the real web application with a logged-in
coordinator) and `bot.core.exports` writing every case to CSV and XLSX.
Baselines, measured in the same run on the same database: the bare SQL aggregates the page needs
(the same GROUP BY queries, sent as text, results unused) and one bare streaming SELECT of the
export's columns. Prints medians and the ratios, and the export's peak memory (tracemalloc) for a
tenth of the rows and for all of them: it streams, so the two should be close.

Usage: python bench/stats.py [--cases N] [--runs N] [--postgres URL] (default: MELDBOT_TEST_POSTGRES_URL or
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres; a fresh database is made and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import storage  # noqa: E402
from bot.app import build  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.core.casework import login_digest  # noqa: E402
from bot.web.server import create_app  # noqa: E402
from dialogs import categories  # noqa: E402
from storage import crypto, repo, transaction  # noqa: E402
from storage.crypto import encode_key  # noqa: E402
from storage.models import Case, CaseFact  # noqa: E402

BENCH_MASTER_KEY = bytes(range(32))
YEARS = (2022, 2023, 2024, 2025, 2026)
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
DEPARTMENTS = ("burgerzaken", "handhaving", "sociaal_domein", "belastingen", "wijkteam", "klantcontact")

_FLAG_SUMS = ", ".join(f"sum(CASE WHEN {flag} THEN 1 ELSE 0 END)" for flag in (
    "injury", "damage", "absence", "urgent", "anonymous", "recorded", "police_wanted", "police_filed",
    "aftercare_offered", "aftercare_accepted", "aggressor_response"))
_BIT_SUMS = ", ".join(f"sum(CASE WHEN {column} & {1 << i} <> 0 THEN 1 ELSE 0 END)"
                      for column, count in (("kind_bits", 10), ("measure_bits", 6)) for i in range(count))
#: The aggregates the page needs, as bare SQL: over both periods (:a to :b) at once, and per period
#: (:p to :q) where a median or the long-open cases are needed.
BARE_BOTH = [
    f"SELECT reported_month, count(*), {_FLAG_SUMS}, {_BIT_SUMS} FROM case_facts "
    "WHERE reported_month BETWEEN :a AND :b GROUP BY reported_month",
    "SELECT reported_month >= '2026-01', place, department, perpetrator, count(*) FROM case_facts "
    "WHERE reported_month BETWEEN :a AND :b GROUP BY 1, place, department, perpetrator",
    "SELECT kind_bits, measure_bits, count(*) FROM case_facts WHERE measure_bits <> 0 "
    "AND reported_month BETWEEN '2026-01' AND :b GROUP BY kind_bits, measure_bits",
]
BARE_PERIOD = [
    "SELECT count(*), sum(CASE WHEN first_contact_hours <= 8 THEN 1 ELSE 0 END) FROM case_facts "
    "WHERE first_contact_hours IS NOT NULL AND reported_month BETWEEN :p AND :q",
    "SELECT first_contact_hours FROM case_facts WHERE first_contact_hours IS NOT NULL AND reported_month "
    "BETWEEN :p AND :q ORDER BY first_contact_hours OFFSET 5000 LIMIT 2",
    "SELECT count(*) FROM case_facts WHERE open_since < :before AND reported_month BETWEEN :p AND :q",
]
BARE_EXPORT = ("SELECT f.id, c.reference, c.occurred_at, c.created_at, c.closed_at, c.followup, c.police_came, f.* "
               "FROM case_facts f LEFT JOIN cases c ON c.id = f.case_id ORDER BY f.id")


async def _admin(url: str, statement: str) -> None:
    engine = storage.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _month(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m")


async def generate(url: str, count: int) -> None:
    """`count` cases over five years with their facts (bulk inserts, plain
    placeholder seals: nothing here opens them); a tenth of them purged (fact only)."""
    db = storage.create_engine(url)
    vault = await storage.prepare(db, BENCH_MASTER_KEY)
    rng = random.Random(13)
    cipher, wrapped = vault.new_data_key(Case._sealed_purpose)
    sealed = crypto.seal_with(cipher, {"story": "", "answers": {}, "closing_summary": None}, Case._sealed_purpose)
    cases, facts = [], []
    for number in range(1, count + 1):
        year = YEARS[number % len(YEARS)]
        created = dt.datetime(year, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
            seconds=rng.randrange(365 * 24 * 3600 if year < 2026 else 333 * 24 * 3600))
        status = rng.choices(("new", "in_progress", "closed"), (1, 2, 12))[0]
        purged = status == "closed" and rng.random() < 0.12
        chosen = rng.sample(categories.KINDS[:9], rng.choice((1, 1, 2)))
        contact = round(rng.expovariate(1 / 10), 2) if rng.random() < 0.8 else None
        if not purged:
            cases.append({"id": number, "reference": f"MB-{number:07d}", "status": status, "wrapped_key": wrapped,
                          "key_master": vault.master_id, "sealed": sealed, "occurred_at": created - dt.timedelta(hours=1),
                          "place": rng.choice(categories.PLACES), "urgent": False, "anonymous": False, "language": "nl",
                          "followup": {}, "created_at": created, "updated_at": created,
                          "closed_at": created + dt.timedelta(days=9) if status == "closed" else None})
        chosen_measures = rng.sample(repo.MEASURES[:5], rng.choice((1, 2))) if status == "closed" else []
        facts.append({"id": number, "case_id": None if purged else number, "occurred_month": _month(created),
                      "reported_month": _month(created), "kinds": chosen,
                      "kind_bits": repo.bits_of(repo.KIND_BITS, chosen),
                      "measure_bits": repo.bits_of(repo.MEASURE_BITS, chosen_measures),
                      "open_since": created if status != "closed" else None, "place": rng.choice(categories.PLACES),
                      "department": rng.choice(DEPARTMENTS), "perpetrator": rng.choice(categories.PERPETRATORS),
                      "injury": rng.random() < 0.1, "damage": rng.random() < 0.1, "absence": rng.random() < 0.05,
                      "urgent": "physical" in chosen or "threat" in chosen, "anonymous": rng.random() < 0.05,
                      "recorded": rng.random() < 0.05, "police_wanted": rng.random() < 0.2,
                      "police_filed": rng.random() < 0.15, "aftercare_offered": rng.random() < 0.6,
                      "aftercare_accepted": rng.random() < 0.3, "aggressor_response": rng.random() < 0.4,
                      "first_contact_hours": contact, "status": status, "milestones": {},
                      "outcome": "closed" if purged else None,
                      "ended_month": _month(created + dt.timedelta(days=9)) if status == "closed" else None,
                      "purged_at": NOW if purged else None, "updated_at": created})
    async with db.begin() as connection:
        for table, rows in ((Case.__table__, cases), (CaseFact.__table__, facts)):
            for start in range(0, len(rows), 5000):
                await connection.execute(insert(table), rows[start:start + 5000])
        for table in ("cases", "case_facts"):
            await connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {count + 1})"))
        await connection.execute(text("ANALYZE"))
    await db.dispose()


async def bare_page(db, before: dt.datetime) -> float:
    start = time.perf_counter()
    async with db.connect() as connection:
        for statement in BARE_BOTH:
            (await connection.execute(text(statement), {"a": "2025-01", "b": "2026-11"})).all()
        for first, last in (("2026-01", "2026-11"), ("2025-01", "2025-11")):
            for statement in BARE_PERIOD:
                (await connection.execute(text(statement), {"p": first, "q": last, "before": before})).all()
    return time.perf_counter() - start


async def measure(url: str, count: int, runs: int) -> None:
    print(f"generating {count} cases ...", flush=True)
    started = time.perf_counter()
    await generate(url, count)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    settings = Settings(database={"url": url}, privacy={"key": encode_key(BENCH_MASTER_KEY)},
                        organisation={"departments": list(DEPARTMENTS)})
    meldbot = await build(settings, {}, clock=lambda: NOW)
    client = TestClient(TestServer(create_app(db_engine=meldbot.db, routes=meldbot.pages.routes())))
    await client.start_server()
    cookie = secrets.token_urlsafe(32)
    async with transaction(meldbot.sessions) as session:
        await repo.create_web_session(session=session, digest=login_digest(cookie), coordinator="bench:coco",
                                      name="Coco", csrf_token="x", language="nl", now=NOW,
                                      expires_at=NOW + dt.timedelta(days=1))
    client.session.cookie_jar.update_cookies({"meldbot_session": cookie})
    try:
        page, bare = [], []
        for run in range(runs + 2):
            start = time.perf_counter()
            response = await client.get("/stats?from=2026-01&to=2026-11")
            body = await response.text()
            elapsed = time.perf_counter() - start
            assert response.status == 200 and "<svg" in body, (response.status, body[:300])
            base = await bare_page(meldbot.db, NOW - dt.timedelta(days=30))
            if run >= 2:  # the first two warm the caches and the connection pool
                page.append(elapsed)
                bare.append(base)
        page_ms, bare_ms = statistics.median(page) * 1000, statistics.median(bare) * 1000
        print(f"/stats over {count} cases ({runs} runs)")
        print(f"  page (GET /stats, this year vs last)  median {page_ms:8.1f} ms")
        print(f"  bare SQL aggregates it needs          median {bare_ms:8.1f} ms")
        print(f"  ratio (page / bare)                   {page_ms / bare_ms:8.2f}x   (target: <= 2x and < 300 ms)")
        await export_figures(meldbot, count)
    finally:
        await client.close()
        await meldbot.db.dispose()


async def export_figures(meldbot, count: int) -> None:
    from bot.core import exports

    spec = exports.ExportSpec(language="nl", zone=meldbot.pages.timezone, departments=meldbot.pages.departments)

    async def ours(fmt: str, upto: int | None) -> tuple[float, int, int]:
        with tempfile.TemporaryDirectory() as folder:
            tracemalloc.start()
            start = time.perf_counter()
            rows = await exports.write_file(Path(folder) / f"export.{fmt}", fmt, spec,
                                            exports.rows(meldbot.pages.sessions, spec, upto=upto))
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        return elapsed, peak, rows

    start = time.perf_counter()
    async with meldbot.db.connect() as connection:
        rows = 0
        async for _ in await connection.stream(text(BARE_EXPORT).execution_options(yield_per=1000)):
            rows += 1
    bare = time.perf_counter() - start
    print(f"export of {rows} rows")
    print(f"  bare streaming SELECT of its columns   {bare * 1000:8.0f} ms")
    for fmt in ("csv", "xlsx"):
        _, small_peak, small_rows = await ours(fmt, count // 10)
        full_time, full_peak, full_rows = await ours(fmt, None)
        print(f"  {fmt:4}: {full_rows} rows in {full_time * 1000:8.0f} ms ({full_time / bare:5.1f}x the bare SELECT); "
              f"peak memory {small_peak / 1e6:5.1f} MB for {small_rows} rows, {full_peak / 1e6:5.1f} MB for all "
              f"(ratio {full_peak / max(small_peak, 1):4.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--postgres", default=os.environ.get("MELDBOT_TEST_POSTGRES_URL",
                                                            "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    name = f"meldbot_bench_stats_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(args.postgres, f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(measure(make_url(args.postgres).set(database=name).render_as_string(hide_password=False),
                            args.cases, args.runs))
    finally:
        asyncio.run(_admin(args.postgres, f'DROP DATABASE "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()

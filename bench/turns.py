"""How long one dialogue turn takes in the engine, next to the floor of a durable turn.

Ours: `Engine.handle` for full reports (story, answer, send), over a real database.
Baseline, measured in the same run on the same database: the least a turn that is saved before
it is answered must do: one transaction that inserts the event ID and updates the conversation.
Prints median and p95 of both and the ratio. Usage: python bench/turns.py [--reports N] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

import storage  # noqa: E402
from bot.app import build_context  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.core.engine import Engine  # noqa: E402
from bot.adapters.contract import InboundMessage  # noqa: E402

BENCH_MASTER_KEY = bytes(32)
DIALOGUE = ["ik werd net uitgescholden aan de balie", "2", "verzenden"]  # story, tick aftercare, send


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def measure(url: str, reports: int) -> tuple[list[float], list[float]]:
    db = storage.create_engine(url)
    vault = await storage.prepare(db, BENCH_MASTER_KEY)
    sessions = storage.create_sessionmaker(db, vault)
    engine = Engine(sessions=sessions, context=build_context(Settings()), public_url="http://127.0.0.1:8080",
                    coordinator_targets=lambda: [("console", "coordinator")])
    ours: list[float] = []
    floor: list[float] = []
    async with db.begin() as connection:
        await connection.execute(text(
            "INSERT INTO conversations (platform, key_hash, sender_hash, language, sealed, created_at,"
            " updated_at) VALUES ('bench', 'k', 's', 'nl', :b, :t, :t)"), {"t": dt.datetime(2026, 1, 1), "b": b"{}"})
    for i in range(reports):
        user = f"user-{i}"
        for line in DIALOGUE:
            message = InboundMessage(platform="console", conversation=user, sender=user, text=line,
                                     event_id=uuid.uuid4().hex)
            start = time.perf_counter()
            replies = await engine.handle(message)
            ours.append(time.perf_counter() - start)
            assert replies, "every turn answers"
            start = time.perf_counter()
            async with sessions() as session, session.begin():
                await session.execute(text("INSERT INTO handled_events (platform, event_id, handled_at) "
                                           "VALUES ('bench', :e, :t)"),
                                      {"e": uuid.uuid4().hex, "t": dt.datetime(2026, 1, 1)})
                # The bare turn stores its state as it is; ours seals it (AES-GCM) first.
                await session.execute(text("UPDATE conversations SET sealed = :s WHERE platform = 'bench'"),
                                      {"s": b'{"step": "wishes"}'})
            floor.append(time.perf_counter() - start)
    await db.dispose()
    return ours, floor


def report(name: str, ours: list[float], floor: list[float]) -> None:
    med_o, med_f = statistics.median(ours) * 1000, statistics.median(floor) * 1000
    p95_o, p95_f = percentile(ours, 0.95) * 1000, percentile(floor, 0.95) * 1000
    print(f"{name}: {len(ours)} turns")
    print(f"  meldbot turn      median {med_o:7.2f} ms   p95 {p95_o:7.2f} ms")
    print(f"  bare durable turn median {med_f:7.2f} ms   p95 {p95_f:7.2f} ms")
    print(f"  ratio (ours / baseline)  median {med_o / med_f:5.2f}x   p95 {p95_o / p95_f:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--postgres", help="also measure on this postgresql+asyncpg URL (a scratch database)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        ours, floor = asyncio.run(measure(f"sqlite+aiosqlite:///{folder}/bench.db", args.reports))
        report("SQLite", ours, floor)
    if args.postgres:
        ours, floor = asyncio.run(measure(args.postgres, args.reports))
        report("PostgreSQL", ours, floor)


if __name__ == "__main__":
    main()

"""Scale-out on PostgreSQL: Teams dialogue turns per second with one and two Meldbot instances, and
the leader's fail-over time.

Throughput: real `meldbot run` processes (bot/devtools/cluster.py) on a fresh PostgreSQL database,
with the coordinator channel set, so every report is also posted there by the outbox workers. Load
as in bench/teams_throughput.py (the real botbuilder route, JWT validation against locally served
keys, a local fake Bot Connector, each load worker one person going through story, tick, send), but
each request goes to the next instance in turn, as a round-robin load balancer would send it. In
the same run: the stock botbuilder echo bot (and the echo bot with our two SDK workarounds), each in
a process of its own. The four take turns, `--rounds` times, so that a change in the machine's load
falls on all of them. Prints activities/s, median and p95, the ratio two instances vs one and each
vs the echo bot, whether every report reached the channel exactly once, where the CPU went (and how
much other processes took meanwhile: this machine is shared) and the database connections opened.

Fail-over: three instances with Matrix on a private Synapse; the leader is SIGKILLed `--kills`
times (restarted as a standby each time); the time from the kill until another instance's /readyz
says it leads with Matrix "ok". Prints median and max.

Usage: python bench/scale.py [--activities 2000] [--concurrency 20] [--rounds 3] [--kills 5] [--postgres URL]
(default: MELDBOT_TEST_POSTGRES_URL or postgresql+asyncpg://postgres@127.0.0.1:5432/postgres; a fresh
database is made and dropped for each part). Exits 1 when a report was lost or doubled or a request
refused; the figures are printed anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import teams_throughput  # noqa: E402  (puts the repository and tests/ on sys.path)
from teams_throughput import DIALOGUE, row  # noqa: E402

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bot.devtools.cluster import LocalCluster  # noqa: E402
from bot.devtools.localserver import LocalSynapse  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
from storage.db import asyncpg_dsn  # noqa: E402
from stats import _admin  # noqa: E402  (bench/stats.py: one statement on an AUTOCOMMIT connection)
from teams_harness import APP_ID, CHANNEL, CONNECTOR_TOKEN, TENANT, ChannelKeys, FakeConnector, activity  # noqa: E402

REFERENCE = re.compile(r"MB-[0-9A-Z]{3}-[0-9A-Z]{3}")
#: How long the outbox may take, after the load ended, to post the last reports in the channel.
NOTIFY_DEADLINE_S = 60.0
#: Upper bound for one fail-over (the issue's limit is 30 s; a slower one is shown, not waited for forever).
FAILOVER_DEADLINE_S = 60.0


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, part: str):
    """A new, empty database for `part` (dropped afterwards, also when the run fails)."""
    name = f"meldbot_bench_scale_{part}_{uuid.uuid4().hex[:8]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')


class CpuMeter:
    """CPU used between `start()` and `stop()` (Linux /proc): by the Meldbot processes, by PostgreSQL
    (the backends of their database, and every backend that ended meanwhile: the postmaster's children's
    time, of any database), by this process (load generator, fake connector, key server), and by the rest
    of the machine (anything else running disturbs the figures: shown); and how many database
    connections were opened meanwhile (pg_stat_database.sessions)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: list[int], database_url: str):
        self.pids = pids
        self.dsn = asyncpg_dsn(database_url)

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # from field 3 (state) on
        except FileNotFoundError:
            return None  # ended meanwhile

    @classmethod
    def _cpu(cls, pid: int, fields: slice = slice(11, 13)) -> float:
        """utime + stime (with slice(13, 15): cutime + cstime, the waited-for children's) in seconds."""
        stat = cls._stat(pid)
        return sum(int(value) for value in stat[fields]) / cls.TICK if stat else 0.0

    @staticmethod
    def _machine() -> tuple[int, int]:
        ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # busy (all but idle and iowait), all

    async def _sample(self):
        connection = await asyncpg.connect(self.dsn)
        try:
            sessions = await connection.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            pids = [row["pid"] for row in await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
            postmaster = int(self._stat(await connection.fetchval("SELECT pg_backend_pid()"))[1])  # its parent
        finally:
            await connection.close()
        return (sessions, sum(map(self._cpu, self.pids)), {pid: self._cpu(pid) for pid in pids},
                self._cpu(postmaster, slice(13, 15)), time.process_time(), self._machine())

    async def start(self) -> None:
        self.before = await self._sample()

    async def stop(self, activities: int) -> dict[str, float]:
        """What was used since `start()` (CPU seconds, clock ticks, connections), for `describe`."""
        sessions, ours, backends, ended, own, (busy, total) = await self._sample()
        sessions0, ours0, backends0, ended0, own0, (busy0, total0) = self.before
        # A backend new since start() did all its work in the run; one that ended is in `ended` with its
        # whole life, so what it had used before start() is taken off.
        database = (sum(cpu - backends0.get(pid, 0.0) for pid, cpu in backends.items()) + ended - ended0
                    - sum(cpu for pid, cpu in backends0.items() if pid not in backends))
        return {"activities": activities, "meldbot": ours - ours0, "own": own - own0, "busy": busy - busy0,
                "ticks": total - total0, "sessions": sessions - sessions0, "database": database}

    @classmethod
    def describe(cls, used: dict[str, float]) -> tuple[str, float]:
        """Two lines on `used` (summed over runs): CPU milliseconds per activity of each part, how busy the
        machine was, connections opened; and the share of the machine other processes took."""
        others = used["busy"] / cls.TICK - used["meldbot"] - used["database"] - used["own"]
        share = max(others, 0) * cls.TICK / max(used["ticks"], 1)
        per = lambda cpu: f"{cpu / used['activities'] * 1000:.1f} ms"  # noqa: E731
        return (f"CPU per activity: meldbot {per(used['meldbot'])}, PostgreSQL {per(used['database'])}, load "
                f"generator and connector {per(used['own'])}; machine busy {used['busy'] / max(used['ticks'], 1):.0%}"
                f" of {os.cpu_count()} cores, other processes {share:.0%}\n"
                f"    database connections opened: {used['sessions']:.0f} "
                f"({used['sessions'] / used['activities']:.2f} per activity)"), share


async def round_robin(urls: list[str], connector: FakeConnector, keys: ChannelKeys, total: int, concurrency: int,
                      people: str) -> tuple[float, list[float], Counter, int]:
    """`total` dialogue activities from `concurrency` people (named `people`0, 1, ...) sending one after
    another, each request to the next of `urls`. Returns activities/s, latencies, non-2xx statuses and
    how many of the activities were a report's "send"."""
    headers = {"Authorization": f"Bearer {keys.token(connector.url, expires_in=3600)}"}
    endpoints = itertools.cycle(f"{url}/api/messages" for url in urls)
    tickets = iter(range(total))  # shared: whoever is free takes the next activity
    latencies: list[float] = []
    refused: Counter = Counter()
    sends = 0

    async def person(number: int, session: aiohttp.ClientSession) -> None:
        nonlocal sends
        for turn, _ in enumerate(tickets):
            text = DIALOGUE[turn % len(DIALOGUE)]
            sends += text == DIALOGUE[-1]
            body = activity(connector.url, text, user=f"{people}{number}")
            began = time.perf_counter()
            async with session.post(next(endpoints), json=body, headers=headers) as response:
                await response.read()
            latencies.append(time.perf_counter() - began)
            if response.status not in (200, 201):
                refused[response.status] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        began = time.perf_counter()
        await asyncio.gather(*(person(i, session) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    return total / elapsed, latencies, refused, sends


def references(requests: list[dict], kind: str) -> Counter:
    """How often each case reference occurs in the connector's recorded requests of `kind`
    ("send": answers to reporters; "create": new posts in the coordinator channel)."""
    found: Counter = Counter()
    for request in requests:
        if request["kind"] == kind:
            found.update(set(REFERENCE.findall(json.dumps(request["body"]))))
    return found


async def notified(connector: FakeConnector, since: int, deadline: float) -> tuple[Counter, Counter, float]:
    """Wait until every report answered since request number `since` has its channel post (or the
    deadline passes); returns (reports, channel posts per reference, seconds waited)."""
    began = time.monotonic()
    while True:
        made = references(connector.requests[since:], "send")
        posted = references(connector.requests[since:], "create")
        if set(made) <= set(posted) or time.monotonic() - began > deadline:
            return made, posted, time.monotonic() - began
        await asyncio.sleep(0.2)


class Tally:
    """One configuration's runs over the rounds: rates, latencies, and (Meldbot) what the runs used."""

    def __init__(self):
        self.rates: list[float] = []
        self.latencies: list[float] = []
        self.used: dict[str, float] = {}
        self.checks: Counter = Counter()

    def add(self, rate: float, latencies: list[float]) -> None:
        self.rates.append(rate)
        self.latencies += latencies

    @property
    def rate(self) -> float:
        """Activities per second over all rounds (the rounds are equally long in activities)."""
        return len(self.rates) / sum(1 / rate for rate in self.rates)


async def meldbot_run(cluster: LocalCluster, count: int, connector: FakeConnector, keys: ChannelKeys, total: int,
                      concurrency: int, tally: Tally, people: str) -> None:
    """Load the first `count` instances round-robin (warm-up, then `total` activities measured), then
    check that every report made in the run was posted in the coordinator channel once."""
    urls = [cluster.instance(i).url for i in range(count)]
    await round_robin(urls, connector, keys, concurrency * 3 * count, concurrency, f"warm-{people}")
    await notified(connector, 0, NOTIFY_DEADLINE_S)  # the warm-up's posts are not this run's work
    since = len(connector.requests)
    meter = CpuMeter([cluster.instance(i).pid for i in range(count)], cluster.database_url)
    await meter.start()
    rate, latencies, refused, sends = await round_robin(urls, connector, keys, total, concurrency, people)
    for key, value in (await meter.stop(total)).items():
        tally.used[key] = tally.used.get(key, 0) + value
    tally.add(rate, latencies)
    made, posted, waited = await notified(connector, since, NOTIFY_DEADLINE_S)
    tally.checks.update(sends=sends, reports=len(made), posted=len(posted), missing=len(set(made) - set(posted)),
                        doubled=sum(n - 1 for n in posted.values() if n > 1), **{f"HTTP {k}": n for k, n in refused.items()})
    tally.checks["wait"] = max(tally.checks["wait"], waited)


async def throughput(admin_url: str, total: int, concurrency: int, rounds: int, folder: Path) -> bool:
    """The four configurations, one after another in each round (so that a change in the machine's load
    falls on all of them), `total` activities each over all rounds. False when a report was lost or
    doubled or a request refused."""
    keys = ChannelKeys()
    connector = FakeConnector()
    await connector.start()
    settings = {
        "organisation": {"name": "Gemeente Benchdam"},
        "teams": {"app_id": APP_ID, "app_password": "unused", "tenant_id": TENANT,
                  "openid_metadata_url": keys.metadata_url, "coordinator_channel": CHANNEL},
        # Each load worker is one person sending as fast as it can (see bench/teams_throughput.py).
        "limits": {"messages_per_minute": 1000, "reports_per_day": 1000},
    }
    stock, fixed, one, two = Tally(), Tally(), Tally(), Tally()
    share = total // rounds
    try:
        async with fresh_database(admin_url, "teams") as url:
            async with LocalCluster(folder / "cluster", url, settings=settings, instances=2,
                                    connector_token=CONNECTOR_TOKEN) as cluster:
                await cluster.start(0)
                await cluster.wait_ready(0)
                for number in range(rounds):
                    stock.add(*await teams_throughput.measure("stock", connector, keys, share, concurrency, folder))
                    fixed.add(*await teams_throughput.measure("stock-fixed", connector, keys, share, concurrency,
                                                              folder))
                    connector.requests.clear()
                    # One instance alone: the second is not running, so it takes no outbox work either.
                    await meldbot_run(cluster, 1, connector, keys, share, concurrency, one, f"r{number}-one-")
                    await cluster.start(1)
                    await cluster.wait_ready(1)
                    await meldbot_run(cluster, 2, connector, keys, share, concurrency, two, f"r{number}-two-")
                    await cluster.stop(1)
                troubles = Counter(f"{record.get('level')} {record.get('message', '')[:80]}"
                                   for instance in cluster.instances for record in instance.log_records()
                                   if record.get("level") in ("WARNING", "ERROR", "CRITICAL"))
    finally:
        await connector.stop()
        keys.close()
    print(f"Teams endpoint on PostgreSQL, {share * rounds} activities per configuration in {rounds} round(s), "
          f"{concurrency} concurrent, JWT validation on, {os.cpu_count()} cores")
    s = row("stock botbuilder echo bot", stock.rate, stock.latencies)[0]
    f = row("echo bot + our workarounds", fixed.rate, fixed.latencies)[0]
    disturbed, faultless = 0.0, True
    for name, tally in (("meldbot, 1 instance", one), ("meldbot, 2 instances (rr)", two)):
        row(name, tally.rate, tally.latencies)
        lines, others = CpuMeter.describe(tally.used)
        disturbed = max(disturbed, others)
        checks = tally.checks
        faultless &= checks["missing"] == checks["doubled"] == 0 and checks["reports"] == checks["sends"] \
            and not any(key.startswith("HTTP") for key in checks)
        print(f"    {checks.pop('reports')} reports from {checks.pop('sends')} sends, {checks.pop('posted')} posted in "
              f"the channel ({checks.pop('missing')} missing, {checks.pop('doubled')} doubled; the last "
              f"{checks.pop('wait'):.1f} s after the load)" + "".join(f", {k}: {n}" for k, n in checks.items()))
        print(f"    {lines}")
    per_round = ", ".join(f"{b / a:.2f}x" for a, b in zip(one.rates, two.rates))
    print(f"  ratio 2 vs 1 instance         throughput {two.rate / one.rate:4.2f}x   (rounds: {per_round}; "
          f"the second instance must add: > 1x)")
    print(f"  ratio vs stock echo bot       1 instance {one.rate / s:4.2f}x   2 instances {two.rate / s:4.2f}x")
    print(f"  ratio vs echo + workarounds   1 instance {one.rate / f:4.2f}x   2 instances {two.rate / f:4.2f}x")
    for line, count in troubles.most_common(5):
        print(f"  instance log: {count} x {line}")
    if disturbed > 0.10:
        print(f"  NOTE: other processes took up to {disturbed:.0%} of the machine during the Meldbot runs: the "
              f"figures and ratios are disturbed; run again on a quiet machine")
    return faultless


async def failover(admin_url: str, kills: int, folder: Path) -> None:
    with LocalSynapse(folder / "synapse") as synapse:
        account = synapse.register("meldbot")
        settings = {"organisation": {"name": "Gemeente Benchdam"},
                    "matrix": {"homeserver": synapse.url, "user_id": account.user_id,
                               "access_token": account.access_token, "device_id": account.device_id}}
        async with fresh_database(admin_url, "failover") as url:
            async with LocalCluster(folder / "failover", url, settings=settings, instances=3) as cluster:
                await cluster.start_all()
                leader = await cluster.leader(FAILOVER_DEADLINE_S, platform="matrix")
                times: list[float] = []
                for _ in range(kills):
                    killed_at = cluster.kill(leader)
                    successor = await cluster.leader(FAILOVER_DEADLINE_S, platform="matrix")
                    times.append(time.monotonic() - killed_at)
                    # Back as a standby before the next kill, so that every kill finds the same cluster.
                    await cluster.start(leader)
                    await until_answering(cluster, leader)
                    leader = successor
    print(f"Leader fail-over, 3 instances, Matrix on a local Synapse, {kills} SIGKILLs of the leader")
    print(f"  kill -> another instance leads with Matrix ok: median {statistics.median(times):5.2f} s   "
          f"max {max(times):5.2f} s   (each: {', '.join(f'{t:.2f}' for t in times)}; limit 30 s)")


async def until_answering(cluster: LocalCluster, i: int, timeout: float = 60) -> None:
    """Until instance `i`'s /readyz answers with the database ok (a standby may say Matrix is not connected)."""
    deadline = time.monotonic() + timeout
    while ((await cluster.readyz(i)) or {}).get("database") != "ok":
        if time.monotonic() > deadline:
            raise TimeoutError(f"instance {i} did not answer /readyz within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def main(admin_url: str, total: int, concurrency: int, rounds: int, kills: int) -> int:
    """1 when a report was lost or doubled or a request refused (the figures are printed anyway)."""
    configure_logging("ERROR")
    with tempfile.TemporaryDirectory() as folder:
        faultless = await throughput(admin_url, total, concurrency, rounds, Path(folder))
        if kills:
            await failover(admin_url, kills, Path(folder))
    return 0 if faultless else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="the configurations take turns this often")
    parser.add_argument("--kills", type=int, default=5, help="leader kills (0: no fail-over part)")
    parser.add_argument("--postgres", default=os.environ.get("MELDBOT_TEST_POSTGRES_URL",
                                                            "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"))
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.postgres, arguments.activities, arguments.concurrency, arguments.rounds,
                              arguments.kills)))

"""The `meldbot` command: run, chat, cases list|export, report yearly, db upgrade, keys create|rotate,
retention purge, teams claim-code, teams-package, demo, and doctor (checks an installation, writes nothing)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import getpass
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Sequence

import storage
from bot.masterkey import open_storage
from dialogs import Translator
from storage import repo

from bot.app import build
from bot.config import ConfigError, Settings, load_settings
from bot.adapters.console import ConsoleAdapter
from bot.core.clock import utc_now
from bot.core.errors import DATABASE_ERRORS
from bot.core.login import CLAIM_CODE_VALIDITY, claim_digest, new_claim_code
from bot.logs import configure_logging
from bot.adapters.contract import Adapter
from bot.workers.leader import InstanceLock, InstanceRunning, PostgresLeadership

log = logging.getLogger("meldbot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meldbot", description="Meldbot: report aggression at work in a chat.")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: INFO for run)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", help="TOML file (default: embedded SQLite in this folder, console only)")
        return p

    with_config(sub.add_parser("run", help="start every configured platform, the outbox worker and the web server"))
    demo = sub.add_parser("demo", help="a private Matrix homeserver, the bot, and the reporter's chat in the terminal")
    demo.add_argument("--data", default="demo-data", help="folder for the demo's server, accounts and database")
    demo.add_argument("--fresh", action="store_true", help="start over: delete the demo folder first")
    chat = with_config(sub.add_parser("chat", help="report in the terminal (console platform)"))
    chat.add_argument("--user", help="who you are in this chat (default from [console] user)")
    package = with_config(sub.add_parser("teams-package", help="build the Teams app package (zip)"))
    package.add_argument("--output", default=".", help="zip file or folder (default: this folder)")
    teams = sub.add_parser("teams", help="Microsoft Teams").add_subparsers(dest="teams_command", required=True)
    with_config(teams.add_parser("claim-code", help="a single-use code (30 minutes) that makes a channel the "
                                                    "coordinator channel: @Meldbot coordinatiekanaal <code>"))
    cases = sub.add_parser("cases", help="cases").add_subparsers(dest="cases_command", required=True)
    listing = with_config(cases.add_parser("list", help="list cases: reference, status, kinds, created-at"))
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.add_argument("--status", choices=["new", "in_progress", "closed"])
    export = with_config(cases.add_parser("export", help="every case as one row (columns aligned with GIR), for "
                                                         "the municipal registration; audited"))
    export.add_argument("--format", required=True, choices=["csv", "xlsx"])
    export.add_argument("--year", type=int, help="only cases reported in this year")
    export.add_argument("--output", required=True, help="the file to write")
    export.add_argument("--with-personal-data", action="store_true",
                        help="add the story, names and free text (coordinators only; audited)")
    report = sub.add_parser("report", help="reports").add_subparsers(dest="report_command", required=True)
    yearly = with_config(report.add_parser("yearly", help="the yearly overview for the annual conversation (PDF)"))
    yearly.add_argument("--year", type=int, required=True)
    yearly.add_argument("--output", required=True, help="the PDF file to write")
    yearly.add_argument("--language", choices=["nl", "en"], help="default: [organisation] language")
    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    with_config(db.add_parser("upgrade", help="apply database migrations"))
    keys = sub.add_parser("keys", help="the master key").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="write a new master key file (for PostgreSQL installs; mode 0600)")
    create.add_argument("--output", required=True, help="the key file to create (never overwritten)")
    rotate = with_config(keys.add_parser("rotate", help="rewrap every data key with a new master key (resumable)"))
    rotate.add_argument("--new-key-file", help="where the new key is written (default: beside the current one, "
                                               "KEY_FILE.next); a run that was interrupted goes on with it")
    retention = sub.add_parser("retention", help="retention periods").add_subparsers(dest="retention_command",
                                                                                      required=True)
    purge = with_config(retention.add_parser("purge", help="purge the cases whose retention period is over"))
    purge.add_argument("--dry-run", action="store_true", help="list what is due, purge nothing")
    doctor = sub.add_parser("doctor", help="check the configuration, database, master key, Matrix, Teams and "
                                           "public_url, and say how to fix what fails (writes nothing)")
    doctor.add_argument("--config", "-c", required=True, help="the TOML file to check")
    return parser


async def _chat(settings: Settings, user: str | None) -> int:
    user = user or settings.console.user
    console = ConsoleAdapter(user=user, language=settings.organisation.language)
    app = await build(settings, {"console": console})
    await app.start(web_server=False)
    print(Translator(settings.organisation.language)("console.welcome", user=user), flush=True)
    try:
        await console.run()
        # End of input: deliver what the last turns queued (coordinator notifications) first.
        if not await app.worker.drain(timeout=15):
            log.warning("some notifications are still queued; they are delivered at the next start")
    finally:
        await app.stop()
    return 0


def platform_adapters(settings: Settings) -> dict[str, Adapter]:
    """The adapters of every configured chat platform."""
    adapters: dict[str, Adapter] = {}
    if settings.matrix is not None:
        from bot.adapters.matrix.adapter import MatrixAdapter

        adapters["matrix"] = MatrixAdapter(settings=settings.matrix,
                                           store_dir=settings.resolve(settings.matrix.store_dir, ""),
                                           language=settings.organisation.language,
                                           files_per_message=settings.limits.files_per_message)
    if settings.teams is not None:
        from bot.adapters.teams.adapter import TeamsAdapter

        adapters["teams"] = TeamsAdapter(settings=settings.teams,
                                         store_dir=settings.resolve(settings.teams.store_dir, ""),
                                         language=settings.organisation.language,
                                         files_per_message=settings.limits.files_per_message)
    return adapters


def instance_leadership(settings: Settings) -> tuple[PostgresLeadership | None, InstanceLock | None]:
    """How this instance shares its database: on PostgreSQL it competes for the lead; on SQLite it
    must be the only one (raises ConfigError when another runs)."""
    if settings.database.url.startswith("postgresql"):
        return PostgresLeadership(settings.database.url), None
    lock = InstanceLock(settings.database.url)
    try:
        lock.acquire()
    except InstanceRunning as error:
        raise ConfigError(str(error)) from None
    return None, lock


async def _run(settings: Settings) -> int:
    leadership, instance_lock = instance_leadership(settings)
    try:
        return await _run_instance(settings, leadership)
    finally:
        if instance_lock is not None:
            instance_lock.release()


async def _run_instance(settings: Settings, leadership: PostgresLeadership | None) -> int:
    adapters = platform_adapters(settings)
    console = None
    if not adapters:
        console = ConsoleAdapter(user=settings.console.user, language=settings.organisation.language)
        adapters["console"] = console
    app = await build(settings, adapters, leadership=leadership)
    try:
        await app.start(web_server=True)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        await app.stop()
        # Not a database problem (the default for OSError below): another process has the port.
        raise ConfigError(f"[web] listen / [metrics] listen: the address is in use by another process "
                          f"({error.strerror}); choose another port or stop the other process") from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info("meldbot running: platforms=%s", ",".join(adapters))
    waiters = [asyncio.ensure_future(stop.wait())]
    if console is not None and console.stdin.isatty():
        waiters.append(asyncio.ensure_future(console.run()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await app.stop()
    return 0


async def _cases_list(settings: Settings, as_json: bool, status: str | None) -> int:
    opened = await open_storage(settings, create_key=False)
    db = opened.db
    try:
        async with storage.transaction(opened.restricted) as session:
            cases = await repo.list_cases(session=session, status=status)
            rows = [{"reference": c.reference, "status": c.status, "kinds": c.kind_codes,
                     "created_at": c.created_at.isoformat()} for c in cases]
            await repo.add_audit(session=session, actor=_cli_actor(), action="cli_list", now=utc_now(),
                                 detail={"results": len(rows), "status": status or ""})
    finally:
        await db.dispose()
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['reference']}  {row['status']:<11}  {row['created_at'][:16]}  {','.join(row['kinds'])}")
    return 0


def _cli_actor() -> str:
    """Who ran a CLI command, for the audit log: the operating-system account."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


async def _teams_claim_code(settings: Settings) -> int:
    """Print a single-use code that binds the Teams coordinator channel (alone on the last line)."""
    if settings.teams is None:
        raise ConfigError("[teams] is not configured: add the [teams] section (see deploy/meldbot.example.toml)")
    if settings.teams.coordinator_channel:
        raise ConfigError("[teams] coordinator_channel is set: that channel is the coordinator channel and "
                          "cannot be moved from chat. Remove the key to claim a channel with a code instead.")
    opened = await open_storage(settings)
    db = opened.db
    code = new_claim_code()
    now = utc_now()
    try:
        async with storage.transaction(opened.restricted) as session:
            await repo.add_claim_code(session=session, platform="teams", digest=claim_digest(code), now=now,
                                      expires_at=now + CLAIM_CODE_VALIDITY)
            await repo.add_audit(session=session, actor=_cli_actor(), action="claim_code_issued", now=now)
    finally:
        await db.dispose()
    minutes = int(CLAIM_CODE_VALIDITY.total_seconds() // 60)
    print(f"In the Teams channel that is to become the coordinator channel, write (within {minutes} minutes):\n"
          f"  @Meldbot coordinatiekanaal {code}\n"
          "The code works once. Claiming another channel later needs a new code.\n"
          f"{code}")
    return 0


async def _db_upgrade(settings: Settings) -> int:
    db = (await open_storage(settings, migrate=True)).db
    try:
        revision = await storage.current_revision(db)
    finally:
        await db.dispose()
    print(f"database is at revision {revision}")
    return 0


def _keys_create(path: Path) -> int:
    from storage import crypto
    from storage.keys import write_key_file

    try:
        write_key_file(path, crypto.new_key())
    except FileExistsError:
        raise ConfigError(f"{path} exists: a key file is never overwritten") from None
    print(f"Master key written to {path} (mode 0600). Set [privacy] key_file = \"{path}\", and back the file up "
          "apart from the database: without it nothing stored can be read.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `meldbot` console script."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level or (logging.INFO if args.command == "run" else logging.WARNING))
    if args.command == "demo":
        try:
            from bot.devtools.demo import run_demo
        except ImportError as error:  # matrix-synapse comes with the demo extra
            print(f"The demo needs the demo extra: pip install 'meldbot[demo]' ({error})", file=sys.stderr)
            return 2
        return asyncio.run(run_demo(Path(args.data), fresh=args.fresh))
    try:
        if args.command == "doctor":
            # The doctor loads the configuration itself: a file that does not load is its first finding.
            from bot.commands.doctor import doctor_command

            return asyncio.run(doctor_command(args.config))
        settings = load_settings(args.config)
        if args.command == "run":
            # [logging] format is known only now (the set-up above already covered config errors).
            configure_logging(args.log_level or logging.INFO, settings.logging.format)
            return asyncio.run(_run(settings))
        if args.command == "chat":
            return asyncio.run(_chat(settings, args.user))
        if args.command == "cases" and args.cases_command == "export":
            from bot.commands.export import export_command

            return asyncio.run(export_command(settings, fmt=args.format, year=args.year, output=Path(args.output),
                                              personal_data=args.with_personal_data))
        if args.command == "cases":
            return asyncio.run(_cases_list(settings, args.json, args.status))
        if args.command == "report":
            from bot.commands.report import yearly_command

            return asyncio.run(yearly_command(settings, year=args.year, output=Path(args.output),
                                              language=args.language))
        if args.command == "db":
            return asyncio.run(_db_upgrade(settings))
        if args.command == "keys" and args.keys_command == "create":
            return _keys_create(Path(args.output))
        if args.command == "keys":
            from bot.commands.keys import rotate_command

            return asyncio.run(rotate_command(settings, args.new_key_file))
        if args.command == "retention":
            from bot.commands.retention import purge_command

            return asyncio.run(purge_command(settings, dry_run=args.dry_run))
        if args.command == "teams":
            return asyncio.run(_teams_claim_code(settings))
        if args.command == "teams-package":
            from bot.adapters.teams.package import build_package

            print(f"Teams app package written to {build_package(settings, Path(args.output))}")
            return 0
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except DATABASE_ERRORS as error:
        print(f"Database unavailable ({type(error).__name__}); check [database] url.", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`meldbot retention purge --config FILE [--dry-run]`: list or purge the cases whose retention is over."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import storage
from storage import repo

from bot.config import Settings
from bot.core.clock import utc_now
from bot.masterkey import open_storage
from bot.workers.retention import purge_due, rules_of


async def purge_command(settings: Settings, *, dry_run: bool) -> int:
    """Purge what is due now (audited as the operating-system account), or with `dry_run` list it:
    one line per case with reference, status, rule and the day its retention ended. Cases under
    legal hold are never listed or purged. Uses the restricted vault (no anonymous key)."""
    from bot.cli import _cli_actor  # bot.cli imports this module when the command runs

    opened = await open_storage(settings, create_key=False)
    rules = rules_of(settings.privacy)
    zone = ZoneInfo(settings.organisation.timezone)
    now = utc_now()
    swept = None
    try:
        async with storage.transaction(opened.restricted) as session:
            if dry_run:
                due = await repo.list_due_purges(session=session, now=now, rules=rules)
            else:
                due = await purge_due(session, rules=rules, now=now, actor=_cli_actor())
                swept = await repo.sweep_leftovers(session=session, now=now, rules=rules)
            lines = [f"{item.case.reference}  {item.case.status:<11}  {rules.describe(item.rule):<17}  "
                     f"{item.due_at.astimezone(zone).date().isoformat()}" for item in due]
    finally:
        await opened.db.dispose()
    for line in lines:
        print(line if dry_run else f"purged {line}")
    if dry_run:
        print(f"{len(lines)} case(s) due for purge; nothing was purged (dry run)")
    else:
        print(f"{len(lines)} case(s) purged")
        # The command has no anonymous key, so it cannot tell which conversations are still in use.
        print(f"{swept.audit_entries} audit entries about no case removed; idle conversations are left "
              "to the daily purge of the running bot")
    return 0

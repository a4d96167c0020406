"""`meldbot cases export --config FILE --format csv|xlsx [--year YEAR] --output PATH [--with-personal-data]`.

Every case fact (live and purged cases) as one row, see bot.core.exports for the columns and the
formats. The file is written beside PATH under a temporary name, the export is audited, and only
then the file is renamed to PATH: a failure leaves no half file and no unaudited one. The file is
created readable by this account only (it may hold personal data)."""

from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import storage
from storage import repo

from bot.config import Settings
from bot.core import exports
from bot.core.clock import utc_now
from bot.masterkey import open_storage


def _refuse(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


async def export_command(settings: Settings, *, fmt: str, year: int | None, output: Path, personal_data: bool) -> int:
    """Write every case fact (reported in `year`, or all) as one row to `output`; audited as the
    operating-system account (`export`). Uses the restricted vault: an export never needs the key
    that links an anonymous case to its reporter. Exit code 2 for an output that cannot be written."""
    from bot.app import department_names
    from bot.cli import _cli_actor  # bot.cli imports this module when the command runs

    if fmt not in exports.FORMATS:
        return _refuse(f"--format: choose csv or xlsx, not {fmt!r}")
    if year is not None and not 2000 <= year <= 2100:
        return _refuse(f"--year: {year} is not a year this export can hold (2000-2100)")
    if not output.parent.is_dir():
        return _refuse(f"--output {output}: the folder {output.parent} does not exist")
    if output.is_dir():
        return _refuse(f"--output {output}: is a folder; give the name of the file to write")
    spec = exports.ExportSpec(language=settings.organisation.language, zone=ZoneInfo(settings.organisation.timezone),
                              year=year, personal_data=personal_data, departments=department_names(settings))
    opened = await open_storage(settings, create_key=False)

    async def audit(rows: int) -> None:
        async with storage.transaction(opened.restricted) as session:
            await repo.add_audit(session=session, actor=_cli_actor(), action="export", now=utc_now(),
                                 detail={"format": fmt, "year": year, "rows": rows, "personal_data": personal_data,
                                         "via": "cli"})

    try:
        written = await exports.write_export(output, fmt, spec, exports.rows(opened.restricted, spec),
                                             before_rename=audit)
    except exports.OutputError as error:
        return _refuse(f"--output {output}: cannot be written ({error.reason})")
    finally:
        await opened.db.dispose()
    print(f"{written} row(s) written to {output}" + (" (with personal data: keep the file safe)"
                                                     if personal_data else ""))
    return 0

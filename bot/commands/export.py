"""`meldbot cases export --config FILE --format csv|xlsx [--year YEAR] --output PATH [--with-personal-data]`."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings


async def export_command(settings: Settings, *, fmt: str, year: int | None, output: Path, personal_data: bool) -> int:
    """Write every case (in `year`) as one row; audited. (Being written: see issue 13.)"""
    raise NotImplementedError

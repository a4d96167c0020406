"""`meldbot report yearly --config FILE --year YEAR --output FILE.pdf`."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings


async def yearly_command(settings: Settings, *, year: int, output: Path, language: str | None) -> int:
    """Write the yearly overview of `year` as a PDF. (Being written: see issue 13.)"""
    raise NotImplementedError

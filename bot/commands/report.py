"""`meldbot report yearly --config FILE --year YEAR --output FILE.pdf`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import storage
from storage import repo

from bot.config import ConfigError, Settings
from bot.core.casework import CaseWork
from bot.core.clock import utc_now
from bot.core.yearly import FIRST_YEAR
from bot.masterkey import open_storage

#: The base URL the PDF's HTML is rendered against: its one stylesheet link resolves under it.
_BASE = "https://meldbot.invalid/"


def _stylesheet() -> str:
    return resources.files("bot.web").joinpath("static", "meldbot.css").read_text("utf-8")


def _fetcher(css: str):
    """A URL fetcher that serves the stylesheet and refuses every other URL."""
    import weasyprint.urls as urls

    stylesheet = _BASE + "static/meldbot.css"
    if hasattr(urls, "URLFetcherResponse"):  # newer WeasyPrint: a URLFetcher subclass
        class Fetcher(urls.URLFetcher):
            def fetch(self, url, headers=None):
                if url == stylesheet:
                    return urls.URLFetcherResponse(url, css.encode("utf-8"),
                                                   {"Content-Type": "text/css; charset=utf-8"})
                raise ValueError("the PDF loads nothing but its stylesheet")

        return Fetcher()

    def fetch(url: str, *args, **kwargs) -> dict:  # older WeasyPrint: a function returning a dict
        if url == stylesheet:
            return {"string": css.encode("utf-8"), "mime_type": "text/css", "encoding": "utf-8"}
        raise ValueError("the PDF loads nothing but its stylesheet")

    return fetch


def write_pdf(html: str, output: Path) -> None:
    """HTML of a Meldbot page to a PDF with WeasyPrint, the stylesheet embedded. Nothing is fetched
    from anywhere: a URL other than the stylesheet's is refused."""
    import weasyprint  # imported here: the Pango libraries it loads are only needed for PDFs

    weasyprint.HTML(string=html, base_url=_BASE, url_fetcher=_fetcher(_stylesheet())).write_pdf(str(output))


async def yearly_command(settings: Settings, *, year: int, output: Path, language: str | None) -> int:
    """Write the yearly overview of `year` as a PDF: the template of /stats/year/{year}, rendered
    without a session and turned into PDF. Audited as the operating-system account."""
    from bot.app import department_names
    from bot.cli import _cli_actor  # bot.cli imports this module when the command runs
    from bot.web.stats import StatsPages

    zone = ZoneInfo(settings.organisation.timezone)
    latest = utc_now().astimezone(zone).year + 1
    if not FIRST_YEAR <= year <= latest:
        raise ConfigError(f"--year must be a year from {FIRST_YEAR} to {latest}")
    output = output.expanduser()
    if not output.parent.is_dir():
        raise ConfigError(f"cannot write {output}: the folder {output.parent} does not exist")
    language = language or settings.organisation.language
    opened = await open_storage(settings, create_key=False)
    try:
        casework = CaseWork(public_url=settings.web.public_url, coordinator_targets=lambda: [], timezone=zone,
                            followup=settings.followup)
        pages = StatsPages(sessions=opened.restricted, casework=casework, web_settings=settings.web,
                           organisation=settings.organisation.name, language=language, timezone=zone,
                           stats=settings.stats, departments=department_names(settings))
        async with opened.restricted() as session:
            values = await pages.yearly_values(session, year, language)
        write_pdf(pages.yearly_html(values, language), output)
        async with storage.transaction(opened.restricted) as session:
            await repo.add_audit(session=session, actor=_cli_actor(), action="report_yearly", now=utc_now(),
                                 detail={"year": year, "language": language})
    finally:
        await opened.db.dispose()
    print(f"yearly overview {year} ({language}) written to {output}")
    return 0


__all__ = ["write_pdf", "yearly_command"]

"""The statistics page and the yearly overview in a real browser (Debian's Chromium via Playwright):
a coordinator logs in with a link from the chat, reads the figures and the yearly overview (also as
printed), by their labels and headings; screenshots go to test-artifacts/ for people to look at."""

from __future__ import annotations

import pytest

from browser import artifact_path, check_accessibility, launch_chromium
from stack import Stack
from test_stats_pages import DEPARTMENTS, START, make_data

TIMEOUT_MS = 15_000


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url, organisation=DEPARTMENTS, now=START)
    yield stack
    await stack.close()


async def test_a_coordinator_reads_the_statistics_and_the_yearly_overview(stack):
    await make_data(stack)
    link = await stack.login_link()
    url = lambda path: str(stack.client.server.make_url(path))  # noqa: E731

    async with launch_chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(url("/login/" + link.rsplit("/login/", 1)[1]))
        await page.get_by_role("button", name="Inloggen").click()
        await page.wait_for_url(url("/cases"))

        response = await page.goto(url("/stats"))
        assert response.status == 200
        assert await page.get_by_role("heading", level=1).inner_text() == "Statistieken"
        assert await page.locator("dd.total-current").inner_text() == "14"
        assert await page.locator("dd.total-previous").inner_text() == "7"
        kinds = page.locator("#kinds table")
        assert await kinds.get_by_role("row", name="Fysiek geweld").inner_text() == "Fysiek geweld\t<5\t0"
        assert await page.get_by_role("img", name="Soort agressie. De tabel ernaast geeft de precieze aantallen.") \
            .is_visible()
        assert await page.get_by_label("Met persoonsgegevens").is_visible()
        await check_accessibility(page)
        shot = artifact_path("stats.png")
        await page.screenshot(path=shot, full_page=True)

        # The filter form by its labels: one department.
        await page.get_by_label("Afdeling", exact=True).select_option("burgerzaken")
        await page.get_by_role("button", name="Filteren").click()
        await page.wait_for_url(lambda u: "department=burgerzaken" in u)
        assert await page.locator("dd.total-current").inner_text() == "5"

        await page.get_by_role("link", name="Jaaroverzicht 2026").click()
        await page.wait_for_url(url("/stats/year/2026"))
        assert await page.get_by_role("heading", level=1).inner_text() == "Jaaroverzicht agressie 2026"
        for heading in ("Omvang", "Aard", "Aanpak", "Gesprekspunten"):
            assert await page.get_by_role("heading", level=2, name=heading).is_visible(), heading
        points = page.locator("ul.stats-points")
        assert "In 2026 kwamen 14 meldingen binnen, tegen 7 in 2025." in await points.inner_text()
        await check_accessibility(page)
        await page.screenshot(path=artifact_path("stats-yearly.png"), full_page=True)
        await page.emulate_media(media="print")
        await page.screenshot(path=artifact_path("stats-yearly-print.png"), full_page=True)
        await page.emulate_media(media="screen")

        await page.goto(url("/stats/year/2026?lang=en"))
        assert await page.get_by_role("heading", level=1).inner_text() == "Yearly overview of aggression 2026"
        await page.set_viewport_size({"width": 420, "height": 900})
        await page.goto(url("/stats"))
        await page.screenshot(path=artifact_path("stats-narrow.png"), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

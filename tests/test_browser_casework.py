"""The coordinator's whole path in a real browser (Debian's Chromium via Playwright) against a real
Synapse: notification in the coordinator room -> case link -> login link from the bot -> take the
case -> message the reporter -> record follow-up steps -> close it; the reporter sees every step."""

from __future__ import annotations

import re
import socket

import pytest

from bot.config import WebSettings
from browser import artifact_path, check_accessibility, launch_chromium
from test_matrix import World

TIMEOUT_MS = 15_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebWorld(World):
    """The Matrix test world with Meldbot's web server on a loopback port."""

    web_server = True

    def __init__(self, synapse, tmp_path):
        super().__init__(synapse, tmp_path)
        self.port = _free_port()

    def settings(self, allowed_servers=None):
        settings = super().settings(allowed_servers)
        settings.web = WebSettings(listen=f"127.0.0.1:{self.port}", public_url=f"http://127.0.0.1:{self.port}")
        return settings


@pytest.fixture
async def web_world(synapse, tmp_path):
    world = WebWorld(synapse, tmp_path)
    try:
        yield world
    finally:
        await world.close()


async def test_from_notification_to_closed_case_in_a_real_browser(web_world):
    world = await web_world.setup()
    await world.encrypt_coordinator_room()  # the reporter's answer is relayed into the thread
    dm = await world.reporter.open_dm(world.bot_account.user_id, encrypted=False)
    reference = await world.report(dm)
    note = await world.coordinator.wait_for_text(world.coordinator_room, f"Nieuwe melding {reference}")
    case_link = re.search(r"http://127\.0\.0\.1:\d+/cases/MB-[A-Z0-9-]+", note.body).group(0)

    async with launch_chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)

        # The link from the notification, without a session: how to log in, nothing of the case.
        response = await page.goto(case_link)
        assert response.status == 401
        assert await page.get_by_role("heading", level=1).inner_text() == "Log eerst in"
        assert "schold" not in await page.content()
        await check_accessibility(page)

        # `login` in a direct chat with the bot: a single-use link comes back there.
        coordinator_dm = await world.coordinator.open_dm(world.bot_account.user_id, encrypted=False)
        start = len(world.coordinator.received)
        await world.coordinator.send(coordinator_dm, "login")
        answer = await world.coordinator.wait_for_text(coordinator_dm, "/login/", start=start)
        login_link = re.search(r"http://\S+/login/[A-Za-z0-9_\-]+", answer.body).group(0)
        await page.goto(login_link)
        await check_accessibility(page)
        await page.get_by_role("button", name="Inloggen").click()

        # Back at the case it came for.
        await page.wait_for_url(re.compile(rf"/cases/{reference}$"))
        assert reference in await page.get_by_role("heading", level=1).inner_text()
        assert "schold me net uit" in await page.locator(".story").inner_text()
        await check_accessibility(page)

        # Take it, by keyboard.
        seen = len(world.reporter.received)
        await page.get_by_role("button", name="Neem deze zaak").focus()
        await page.keyboard.press("Enter")
        await page.wait_for_url(re.compile(r"done=take"))
        await world.reporter.wait_for_text(dm, f"heeft je melding {reference} opgepakt", start=seen)

        # A message to the reporter arrives in their chat; their answer shows up in the case.
        seen = len(world.reporter.received)
        await page.get_by_label("Bericht aan de melder").fill("Ik bel je vanmiddag om drie uur. Gaat dat?")
        await page.get_by_role("button", name="Versturen").click()
        await page.wait_for_url(re.compile(r"done=message"))
        await world.reporter.wait_for_text(dm, "Ik bel je vanmiddag om drie uur", start=seen)
        await world.reporter.send(dm, "Ja hoor, dat is goed")
        await world.coordinator.wait_for_text(world.coordinator_room, "Ja hoor, dat is goed")

        # Follow-up steps: contact, aftercare, police report with its date.
        for step, label, told in (
            ("contact_made", "Contact met de melder gehad", "contact met je is geweest"),
            ("aftercare_offered", "Nazorg aangeboden", "nazorg aangeboden gekregen"),
            ("police_report_filed", "Aangifte gedaan", "aangifte gedaan"),
        ):
            seen = len(world.reporter.received)
            await page.get_by_label("Stap", exact=True).select_option(step)
            await page.get_by_role("button", name="Vastleggen").click()
            await page.wait_for_url(re.compile(r"done=step"))
            await world.reporter.wait_for_text(dm, told, start=seen)
            assert await page.locator("tr.done", has_text=label).count() == 1

        # Close with a summary; the reporter gets it.
        seen = len(world.reporter.received)
        await page.get_by_label("Nieuwe status").select_option("closed")
        await page.get_by_label("Afsluitende samenvatting").fill(
            "Aangifte is gedaan en de bezoeker heeft een brief met een gedragsaanwijzing gekregen.")
        await page.get_by_label("Maatregel richting de pleger (gesprek, brief, gedragsaanwijzing)").check()
        await page.get_by_role("button", name="Status wijzigen").click()
        await page.wait_for_url(re.compile(r"done=status"))
        closed = await world.reporter.wait_for_text(dm, "gedragsaanwijzing", start=seen)
        assert reference in closed.body
        assert await page.locator(".summary-line .status").inner_text() == "afgesloten"
        timeline = await page.locator("ol.timeline").inner_text()
        assert "Ja hoor, dat is goed" in timeline and "Aangifte gedaan" in timeline
        await check_accessibility(page)
        await page.screenshot(path=str(artifact_path("case-page-closed.png")), full_page=True)
        assert artifact_path("case-page-closed.png").stat().st_size > 10_000

        # The case list shows it closed; logging out ends the session for good.
        await page.get_by_role("link", name="Meldingen").first.click()
        assert reference in await page.locator("table.cases").inner_text()
        await check_accessibility(page)
        await page.get_by_label("Status").select_option("closed")
        await page.get_by_role("button", name="Filteren").click()
        assert reference in await page.locator("table.cases").inner_text()
        await page.screenshot(path=str(artifact_path("case-list.png")), full_page=True)
        await page.get_by_role("button", name="Uitloggen").click()
        assert (await page.goto(case_link)).status == 401

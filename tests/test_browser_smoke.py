"""Smoke test of the real-browser setup: Debian's Chromium, Playwright and the helpers in browser.py,
against a tiny aiohttp server on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from browser import artifact_path, check_accessibility, launch_chromium

#: Fail fast instead of Playwright's 30 s default when something does not appear.
TIMEOUT_MS = 10_000

FORM_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Smoke form</title></head>
<body>
  <main>
    <h1>Report an incident</h1>
    <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="">
    <form method="post" action="/submit">
      <h2>What happened</h2>
      <input type="hidden" name="token" value="t0k3n">
      <input name="unused" style="display: none">
      <label for="what">What happened?</label>
      <input id="what" name="what" type="text" autocomplete="off">
      <button type="submit">Send</button>
      <h3>Optional</h3>
      <label>Where <select name="where"><option>Desk</option><option>Phone</option></select></label>
      <span id="more-label">Anything else</span>
      <textarea name="more" aria-labelledby="more-label"></textarea>
      <input name="phone" type="tel" aria-label="Phone number">
    </form>
  </main>
</body>
</html>"""

THANKS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Thanks</title></head>
<body><main><h1>Thank you</h1><p>We received your report.</p></main></body></html>"""

UNLABELLED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unlabelled</title></head>
<body><main><h1>Unlabelled</h1>
  <form method="post" action="/submit">
    <input id="nameless" name="what" placeholder="A placeholder is no label">
    <button type="submit">Send</button>
  </form>
</main></body></html>"""


@contextlib.asynccontextmanager
async def smoke_server() -> AsyncIterator[tuple[TestServer, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []

    async def form(request: web.Request) -> web.Response:
        return web.Response(text=FORM_PAGE, content_type="text/html")

    async def unlabelled(request: web.Request) -> web.Response:
        return web.Response(text=UNLABELLED_PAGE, content_type="text/html")

    async def submit(request: web.Request) -> web.Response:
        received.append(dict(await request.post()))
        return web.Response(text=THANKS_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", form)
    app.router.add_get("/unlabelled", unlabelled)
    app.router.add_post("/submit", submit)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server, received
    finally:
        await server.close()


async def test_form_submitted_by_keyboard_is_accessible_and_screenshotted():
    async with smoke_server() as (server, received), launch_chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(str(server.make_url("/")))

        await check_accessibility(page)
        # Reached by its label, as a screen-reader user would.
        await page.get_by_label("What happened?").fill("Shouted at the counter")
        screenshot = artifact_path("smoke-form.png")
        screenshot.unlink(missing_ok=True)
        await page.screenshot(path=screenshot, full_page=True)

        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Send"
        await page.keyboard.press("Enter")
        await page.get_by_role("heading", name="Thank you").wait_for()

        assert page.url == str(server.make_url("/submit"))
        assert len(received) == 1
        assert received[0]["what"] == "Shouted at the counter"
        assert received[0]["token"] == "t0k3n"
        await check_accessibility(page)

    data = screenshot.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


async def test_check_accessibility_fails_on_an_unlabelled_input():
    async with smoke_server() as (server, _), launch_chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(str(server.make_url("/unlabelled")))
        with pytest.raises(AssertionError, match="form control without an accessible label") as failure:
            await check_accessibility(page)
        assert 'id="nameless"' in str(failure.value)
        assert "/unlabelled" in str(failure.value)


INACCESSIBLE = {
    "skipped heading": (
        "<h1>Title</h1><h3>Too deep</h3>", "heading level skipped, h1 then h3"),
    "no h1": ("<h2>Only a subtitle</h2>", "expected exactly one h1, found 0"),
    "two h1s": ("<h1>One</h1><h1>Two</h1>", "expected exactly one h1, found 2"),
    "img without alt": (
        '<h1>Title</h1><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">', "img without alt"),
    "empty label": (
        '<h1>Title</h1><label for="x"> </label><input id="x">', "form control without an accessible label"),
    "dangling aria-labelledby": (
        '<h1>Title</h1><select aria-labelledby="nowhere"><option>a</option></select>',
        "form control without an accessible label"),
    "unlabelled textarea": ("<h1>Title</h1><textarea></textarea>", "form control without an accessible label"),
}

ACCESSIBLE = {
    "going up skips nothing": "<h1>T</h1><h2>a</h2><h3>b</h3><h2>c</h2>",
    "hidden controls need no label": (
        '<h1>T</h1><input type="hidden"><input hidden><div style="visibility:hidden"><input></div>'
        '<div aria-hidden="true"><input></div><input type="submit" value="Go"><input type="button" value="B">'),
    "hidden second h1 does not count": '<h1>T</h1><h1 style="display:none">Old</h1>',
}


async def test_check_accessibility_rules():
    async with launch_chromium() as browser:
        page = await browser.new_page()
        for case, (body, problem) in INACCESSIBLE.items():
            await page.set_content(f"<!doctype html><html lang='en'><body>{body}</body></html>")
            try:
                await check_accessibility(page)
            except AssertionError as error:
                assert problem in str(error), f"{case}: {error}"
            else:
                pytest.fail(f"{case}: check_accessibility passed, expected {problem!r}")
        for case, body in ACCESSIBLE.items():
            await page.set_content(f"<!doctype html><html lang='en'><body>{body}</body></html>")
            try:
                await check_accessibility(page)
            except AssertionError as error:
                pytest.fail(f"{case}: {error}")

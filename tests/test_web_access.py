"""Access to the case pages: sessions fail closed when the platform cannot confirm a coordinator,
a login link is only spent by someone the platform confirms, `__Host-` cookies and HSTS under
https, and the audit log of refusals, unknown references, login links and list searches."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.web.server import HSTS, create_app
from stack import Stack
from storage import repo
from storage.models import LoginLink, WebSession


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url)
    yield stack
    await stack.close()


async def audit(stack: Stack, action: str | None = None) -> list:
    async with stack.meldbot.sessions() as session:
        entries = await repo.list_audit(session=session)
    return [a for a in entries if action is None or a.action == action]


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


# -- fail closed ----------------------------------------------------------------------------------------


async def test_a_session_ends_when_the_platform_cannot_confirm_its_owner_for_fifteen_minutes(stack):
    reference = await stack.report()
    await stack.log_in()
    stack.chat.roster_down = True
    stack.clock.advance(minutes=6)  # due for a check; the platform cannot answer
    assert (await stack.client.get(f"/cases/{reference}")).status == 200
    stack.chat.roster_down = False
    stack.clock.advance(minutes=4)  # confirmed again at 10 minutes: the grace starts over
    assert (await stack.client.get("/cases")).status == 200
    stack.chat.roster_down = True
    stack.clock.advance(minutes=14)
    assert (await stack.client.get(f"/cases/{reference}")).status == 200
    stack.clock.advance(minutes=1)  # exactly 15 minutes unconfirmed: still in
    assert (await stack.client.get("/cases")).status == 200
    stack.clock.advance(seconds=1)
    assert (await stack.client.get(f"/cases/{reference}")).status == 401
    # Ended for good: the platform answering again does not revive it.
    stack.chat.roster_down = False
    assert (await stack.client.get("/cases")).status == 401
    (entry,) = await audit(stack, "recheck_failed")
    assert entry.actor == "chat:coco"
    async with stack.meldbot.sessions() as session:
        (row,) = await session.scalars(select(WebSession))
    assert row.ended_at is not None


async def test_a_login_link_is_not_spent_while_the_platform_cannot_confirm_the_coordinator(stack):
    link = await stack.login_link()
    assert (await stack.client.get(f"/login/{token_of(link)}")).status == 200
    stack.chat.roster_down = True
    response = await stack.client.post("/login", data={"token": token_of(link)}, allow_redirects=False)
    body = await response.text()
    assert response.status == 503 and "niet nagaan" in body and "Opnieuw proberen" in body
    assert "meldbot_session" not in response.headers.get("Set-Cookie", "")
    assert (await stack.client.get("/cases")).status == 401
    async with stack.meldbot.sessions() as session:
        assert (await session.scalar(select(LoginLink))).used_at is None
    (refused,) = await audit(stack, "login_refused")
    assert refused.actor == "chat:coco" and refused.detail == {"reason": "unconfirmed"}
    # Once the platform answers again, the same link works.
    stack.chat.roster_down = False
    response = await stack.client.post("/login", data={"token": token_of(link)}, allow_redirects=False)
    assert response.status == 303
    assert (await stack.client.get("/cases")).status == 200


async def test_someone_who_is_no_longer_a_coordinator_gets_no_session_from_an_old_link(stack):
    reference = await stack.report()
    link = await stack.login_link()
    stack.chat.coordinators.discard("coco")  # removed from the room after the link was sent
    response = await stack.client.post("/login", data={"token": token_of(link)}, allow_redirects=False)
    body = await response.text()
    assert response.status == 403 and "Geen toegang" in body and "coördinator" in body
    assert "meldbot_session" not in response.headers.get("Set-Cookie", "")
    assert (await stack.client.get(f"/cases/{reference}")).status == 401
    # The link is spent: being added again needs a new one.
    stack.chat.coordinators.add("coco")
    again = await stack.client.post("/login", data={"token": token_of(link)}, allow_redirects=False)
    assert again.status == 410
    (refused,) = await audit(stack, "login_refused")
    assert refused.actor == "chat:coco" and refused.detail == {"reason": "not_coordinator"}


# -- https: cookies and headers ----------------------------------------------------------------------------


async def https_client(stack: Stack) -> TestClient:
    """A browser of the stack's Meldbot served as with an https public URL (the test still talks
    http to it: what matters are the names, attributes and headers the server sends)."""
    app = create_app(db_engine=stack.meldbot.db, routes=stack.meldbot.pages.routes(),
                     public_url=stack.meldbot.settings.web.public_url)
    client = TestClient(TestServer(app))
    await client.start_server()
    stack._clients.append(client)
    return client


def set_cookies(response) -> SimpleCookie:
    jar = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


async def test_https_cookies_have_the_host_prefix_and_every_response_has_hsts(database_url):
    stack = await Stack.start(database_url, web={"public_url": "https://meldbot.test"})
    try:
        reference = await stack.report()
        client = await https_client(stack)
        login_needed = await client.get(f"/cases/{reference}")
        assert login_needed.status == 401
        assert list(set_cookies(login_needed)) == ["__Host-meldbot_next"]
        link = await stack.login_link()
        assert (await client.get(f"/login/{token_of(link)}")).status == 200
        response = await client.post("/login", data={"token": token_of(link)}, allow_redirects=False)
        assert response.status == 303
        cookies = set_cookies(response)
        assert set(cookies) == {"__Host-meldbot_session", "__Host-meldbot_known", "__Host-meldbot_next"}
        # What a browser requires of `__Host-` cookies (else it drops them, deletions included).
        for header in response.headers.getall("Set-Cookie"):
            assert "Secure" in header and "Path=/" in header and "Domain" not in header, header
        session = {"Cookie": f"__Host-meldbot_session={cookies['__Host-meldbot_session'].value}"}
        page = await client.get(f"/cases/{reference}", headers=session)
        assert page.status == 200
        # Only the prefixed name counts: a cookie a subdomain could plant opens nothing.
        plain = {"Cookie": f"meldbot_session={cookies['__Host-meldbot_session'].value}"}
        assert (await client.get(f"/cases/{reference}", headers=plain)).status == 401

        csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
        responses = [
            await client.get("/healthz"), await client.get("/", allow_redirects=False), page,
            await client.get("/cases", headers=session), await client.get("/static/meldbot.css"),
            await client.get("/cases/MB-ZZZ-ZZZ", headers=session), login_needed, response,
            await client.get("/login/unknown"),
            await client.post(f"/cases/{reference}", data={"csrf": "wrong"}, headers=session),
        ]
        logout = await client.post("/logout", data={"csrf": csrf}, headers=session)
        responses.append(logout)
        for answer in responses:
            assert answer.headers.get("Strict-Transport-Security") == HSTS, answer.url
            assert answer.headers["X-Content-Type-Options"] == "nosniff", answer.url
        assert all(not c.value for c in set_cookies(logout).values())
        assert {"__Host-meldbot_session", "__Host-meldbot_known"} <= set(set_cookies(logout))
        for header in logout.headers.getall("Set-Cookie"):
            assert "Secure" in header and "Path=/" in header, header
    finally:
        await stack.close()


async def test_streamed_files_and_redirects_get_the_security_headers(database_url):
    from bot.adapters.contract import InboundAttachment

    stack = await Stack.start(database_url, web={"public_url": "https://meldbot.test"})
    try:
        await stack.say("anna", "Een man schold me net uit aan de balie en dreigde me te slaan")
        await stack.say("anna", "1 2")
        await stack.say("anna", "", attachments=(InboundAttachment("foto.png", "image/png", b"\x89PNG-data"),))
        reference = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", await stack.say("anna", "verzenden")).group(0)
        client = await https_client(stack)
        link = await stack.login_link()
        response = await client.post("/login", data={"token": token_of(link)}, allow_redirects=False)
        session = {"Cookie": f"__Host-meldbot_session={set_cookies(response)['__Host-meldbot_session'].value}"}
        body = await (await client.get(f"/cases/{reference}", headers=session)).text()
        path = re.search(rf"/cases/{reference}/attachments/\d+", body).group(0)
        image = await client.get(path, headers=session)
        assert image.status == 200 and await image.read() == b"\x89PNG-data"
        redirect = await client.get(f"/cases/{reference.lower()}", headers=session, allow_redirects=False)
        assert redirect.status == 303
        for answer in (image, redirect):
            assert answer.headers["Strict-Transport-Security"] == HSTS
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert image.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    finally:
        await stack.close()


async def test_no_hsts_and_no_cookie_prefix_over_http(stack):
    client = await https_client(stack)  # the stack's public URL is http
    link = await stack.login_link()
    response = await client.post("/login", data={"token": token_of(link)}, allow_redirects=False)
    assert set(set_cookies(response)) == {"meldbot_session", "meldbot_known", "meldbot_next"}
    for answer in (response, await client.get("/healthz"), await client.get("/cases")):
        assert "Strict-Transport-Security" not in answer.headers


# -- the audit log ------------------------------------------------------------------------------------------


async def test_refused_actions_are_audited_with_the_action_and_the_error(stack):
    reference = await stack.report()
    await stack.log_in()
    refused = await stack.act(reference, "status", status="closed", summary=" ")
    assert refused.status == 409
    assert (await stack.act(reference, "x" * 300)).status == 409
    entries = await audit(stack, "refused")
    assert [(a.case_reference, a.detail["action"], a.detail["error"]) for a in reversed(entries)] == [
        (reference, "status", "summary_required"), (reference, "x" * 16, "unknown_action")]
    assert all(a.actor == "chat:coco" for a in entries)
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "geweigerd: status gewijzigd" in page and "geweigerd: —" in page


async def test_unknown_references_and_files_are_audited_cut_short(stack):
    reference = await stack.report()
    await stack.log_in()
    csrf = await stack.csrf("/cases")
    long_id = "9" * 5000
    for method, path, data in (
        ("get", "/cases/MB-ZZZ-ZZZ", None),
        ("get", "/cases/MB-" + "X" * 40, None),
        ("post", "/cases/MB-ZZZ-ZZZ", {"csrf": csrf, "action": "take"}),
        ("get", "/cases/MB-ZZZ-ZZZ/attachments/1", None),
        ("get", f"/cases/{reference}/attachments/999", None),
        ("get", f"/cases/{reference}/attachments/{long_id}", None),
    ):
        response = await getattr(stack.client, method)(path, data=data, allow_redirects=False)
        assert response.status == 404, path
    entries = [(a.case_reference, a.detail) for a in reversed(await audit(stack, "view_missing"))]
    assert entries == [
        (None, {"request": "page", "reference": "MB-ZZZ-ZZZ"}),
        (None, {"request": "page", "reference": "MB-XXXXXXXXXXXXX"}),
        (None, {"request": "action", "reference": "MB-ZZZ-ZZZ"}),
        (None, {"request": "attachment", "reference": "MB-ZZZ-ZZZ", "attachment": "1"}),
        (reference, {"request": "attachment", "attachment": "999"}),
        (reference, {"request": "attachment", "attachment": "9" * 16}),
    ]


async def test_opened_and_refused_login_links_are_audited_without_the_token(stack):
    link = await stack.login_link()
    token = token_of(link)
    assert (await stack.client.get(f"/login/{token}")).status == 200
    (opened,) = await audit(stack, "login_link_opened")
    assert opened.actor == "chat:coco"
    assert (await stack.client.get("/login/made-up-token")).status == 410
    assert (await stack.client.post("/login", data={"token": "made-up"}, allow_redirects=False)).status == 410
    assert (await stack.client.post("/login", data={"token": token}, allow_redirects=False)).status == 303
    assert (await stack.client.get(f"/login/{token}")).status == 410
    expired = token_of(await stack.login_link())
    stack.clock.advance(minutes=11)
    assert (await stack.client.post("/login", data={"token": expired}, allow_redirects=False)).status == 410
    refusals = [(a.actor, a.detail) for a in reversed(await audit(stack, "login_link_refused"))]
    assert refusals == [
        ("unknown", {"reason": "unknown", "request": "open"}),
        ("unknown", {"reason": "unknown", "request": "login"}),
        ("chat:coco", {"reason": "used", "request": "open"}),
        ("chat:coco", {"reason": "expired", "request": "login"}),
    ]
    for entry in await audit(stack):
        assert token not in f"{entry.actor} {entry.detail}" and expired not in f"{entry.actor} {entry.detail}"


async def test_list_searches_are_audited_with_the_filters_used(stack):
    await stack.report()
    await stack.log_in()
    queries = ("", "status=new&kind=threat&since=2026-11-01&until=2026-11-30&mine=1&overdue=1&reference=MB-2",
               "status=bogus&q=iets+vrij+getypt&reference=" + "R" * 300)
    for query in queries:
        assert (await stack.client.get(f"/cases?{query}")).status == 200
    searches = [a.detail for a in reversed(await audit(stack, "view_list"))]
    assert searches == [
        {"results": 1, "filters": {}},
        {"results": 0, "filters": {"status": "new", "kind": "threat", "since": "2026-11-01", "until": "2026-11-30",
                                   "mine": True, "overdue": True, "reference": "MB-2"}},
        {"results": 0, "filters": {"reference": "R" * 20}},
    ]


async def test_a_flood_of_unknown_login_links_is_audited_only_up_to_a_rate(database_url):
    from bot.web.pages import UNKNOWN_LINKS_AUDITED_PER_MINUTE

    stack = await Stack.start(database_url)
    try:
        for i in range(UNKNOWN_LINKS_AUDITED_PER_MINUTE + 25):
            assert (await stack.client.get(f"/login/guess{i}")).status == 410
        async with stack.meldbot.sessions() as session:
            refused = [e for e in await repo.list_audit(session=session, limit=1000)
                       if e.action == "login_link_refused"]
        assert len(refused) == UNKNOWN_LINKS_AUDITED_PER_MINUTE
        await stack.log_in()  # a real coordinator still logs in during the flood
    finally:
        await stack.close()

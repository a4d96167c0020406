"""Files sent to the bot in Teams: at most `files_per_message` per message are fetched (the others
named back), and the bot's bearer token only goes to the service URL's origin and Microsoft's bot
attachment hosts. A second fake connector on another port plays the attacker's server."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.adapters.teams import files
from bot.adapters.teams.files import fetch_allowed, token_allowed
from storage import repo
from storage.models import Attachment
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import CONNECTOR_TOKEN, STORY, FakeConnector, reference_in, shown

FILE_INFO = "application/vnd.microsoft.teams.file.download.info"


@pytest.fixture
async def attacker():
    server = FakeConnector()
    await server.start()
    server.files["pixel.png"] = b"\x89PNG attacker"
    try:
        yield server
    finally:
        await server.stop()


def image(url: str, name: str = "foto.png") -> dict:
    return {"contentType": "image/png", "name": name, "contentUrl": url}


def shared_file(url: str, name: str) -> dict:
    return {"contentType": FILE_INFO, "name": name, "content": {"downloadUrl": url, "fileType": "pdf"}}


async def stored_files(world, reference: str) -> dict[str, bytes]:
    async with world.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        return {a.filename: await repo.read_attachment(session=session, attachment=a)
                for a in await repo.list_attachments(session=session, case_id=case.id)}


# -- at most files_per_message per message --------------------------------------------------------------------


async def test_files_over_the_per_message_limit_are_not_fetched_and_named(world):
    await world.start(files_per_message=3)
    names = [f"scan-{n}.pdf" for n in range(1, 6)]
    for name in names:
        world.connector.files[name] = f"%PDF {name}".encode()
    attachments = [shared_file(f"{world.connector.url}files/{name}", name) for name in names]
    said = await world.say(STORY, attachments=attachments)
    (answer,) = said
    notice = "hoogstens 3 bestanden per bericht"
    assert notice in answer and "Niet opgehaald: scan-4.pdf, scan-5.pdf" in shown(answer)
    assert "Kijk even of dit klopt" in answer  # the rest of the message is handled as usual
    assert sorted(r["path"] for r in world.connector.file_requests) == [f"/files/scan-{n}.pdf" for n in (1, 2, 3)]
    reference = reference_in(await world.say("verzenden"))
    assert await stored_files(world, reference) == {n: f"%PDF {n}".encode() for n in names[:3]}


async def test_the_default_limit_is_ten(world):
    await world.start()
    for n in range(12):
        world.connector.files[f"f{n}.pdf"] = b"%PDF"
    said = await world.say("", attachments=[shared_file(f"{world.connector.url}files/f{n}.pdf", f"f{n}.pdf")
                                            for n in range(12)])
    assert "hoogstens 10 bestanden" in said[0] and "f10.pdf, f11.pdf" in said[0]
    assert len(world.connector.file_requests) == 10


# -- where the bearer token goes ----------------------------------------------------------------------------


async def test_an_image_on_another_host_gets_neither_a_request_nor_the_token(world, attacker):
    """Same IP as the service URL, another port: another origin (the old check compared host names)."""
    await world.start()
    said = await world.say("", attachments=[image(f"{attacker.url}files/pixel.png")])
    assert attacker.file_requests == []
    assert not any("foto.png" in s for s in said)


async def test_a_redirect_to_another_host_is_not_followed(world, attacker):
    await world.start()
    world.connector.redirects["auth-moved.png"] = f"{attacker.url}files/pixel.png"
    await world.say("", attachments=[image(f"{world.connector.url}files/auth-moved.png")])
    assert [r["authorization"] for r in world.connector.file_requests] == [f"Bearer {CONNECTOR_TOKEN}"]
    assert attacker.file_requests == []


async def test_the_token_never_follows_a_redirect_to_another_host_even_an_allowed_one(world, attacker,
                                                                                      monkeypatch):
    """As if the attacker's server were a SharePoint host (files are fetched from there, without token)."""
    await world.start()
    allowed = files.fetch_allowed
    monkeypatch.setattr(files, "fetch_allowed",
                        lambda url, service_url: url.startswith(attacker.url) or allowed(url, service_url))
    world.connector.redirects["auth-moved.png"] = f"{attacker.url}files/pixel.png"
    await world.say("", attachments=[image(f"{world.connector.url}files/auth-moved.png")])
    assert [r["authorization"] for r in attacker.file_requests] == [None]
    assert CONNECTOR_TOKEN not in str(attacker.requests) + str(attacker.file_requests)
    await world.say(STORY)
    reference = reference_in(await world.say("verzenden"))
    assert await stored_files(world, reference) == {"foto.png": b"\x89PNG attacker"}


async def test_redirects_on_the_same_host_keep_the_token_at_most_three(world):
    await world.start()
    world.connector.files["auth-real.png"] = b"\x89PNG real"
    world.connector.redirects["auth-hop.png"] = "/files/auth-real.png"  # relative, same origin
    for n in range(4):
        world.connector.redirects[f"auth-loop{n}.png"] = f"/files/auth-loop{n + 1}.png"
    world.connector.files["auth-loop4.png"] = b"\x89PNG never reached"
    said = await world.say("", attachments=[image(f"{world.connector.url}files/auth-hop.png", "een.png"),
                                            image(f"{world.connector.url}files/auth-loop0.png", "lus.png")])
    assert any("een.png" in s for s in said) and not any("lus.png" in s for s in said)
    paths = [r["path"] for r in world.connector.file_requests]
    assert paths == ["/files/auth-hop.png", "/files/auth-real.png"] + [f"/files/auth-loop{n}.png" for n in range(4)]
    assert all(r["authorization"] == f"Bearer {CONNECTOR_TOKEN}" for r in world.connector.file_requests)


async def test_shared_files_are_fetched_without_the_token(world):
    await world.start()
    world.connector.files["report.pdf"] = b"%PDF shared"
    await world.say("", attachments=[shared_file(f"{world.connector.url}files/report.pdf", "report.pdf")])
    assert [r["authorization"] for r in world.connector.file_requests] == [None]


def test_the_token_rules():
    service = "https://smba.trafficmanager.net/emea/"
    assert token_allowed("https://smba.trafficmanager.net/emea/v3/attachments/1/views/original", service)
    assert token_allowed("https://eu-api.asm.skype.com/v1/objects/0-weu-d1/views/imgo", service)
    assert token_allowed("https://files.botframework.com/x", None)
    assert not token_allowed("http://smba.trafficmanager.net/emea/v3/attachments/1", service)  # not https
    assert not token_allowed("https://smba.trafficmanager.net.evil.example/x", service)
    assert not token_allowed("https://evilbotframework.com/x", service)
    # SharePoint/OneDrive: fetched (pre-authenticated URLs), never with the token; https only.
    for url in ("https://contoso.sharepoint.com/personal/x/file.pdf", "https://attacker-my.sharepoint.com/a.png"):
        assert fetch_allowed(url, service) and not token_allowed(url, service)
    assert not fetch_allowed("http://contoso.sharepoint.com/file.pdf", service)
    assert not fetch_allowed("https://teams.microsoft.com.evil.example/a.png", service)
    # The service URL's own origin, whatever its scheme (the test connector is http on loopback).
    local = "http://127.0.0.1:5000/"
    assert token_allowed("http://127.0.0.1:5000/files/a.png", local)
    assert not token_allowed("http://127.0.0.1:5001/files/a.png", local)
    assert not token_allowed("https://127.0.0.1:5000/files/a.png", local)
    assert not fetch_allowed("http://127.0.0.2:5000/files/a.png", local)
    assert not fetch_allowed("http://[::1/files/a.png", local)
    assert not fetch_allowed("https://x.sharepoint.com:99999/", local)

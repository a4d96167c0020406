"""The privacy actions of the case pages over real HTTP, with a hand-moved clock: legal hold (and
the retention purge it holds back), the reporter's export, erasure in two steps, photos shown
without EXIF next to an original that keeps its hash, and who may use any of it.

tests/test_retention.py covers the purge rules and the daily job with holds set in the database;
here the hold is placed and lifted through the page, as a coordinator does."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import struct
import zlib

import pytest
from PIL import Image
from sqlalchemy import func, select, text

from bot.adapters.contract import InboundAttachment
from stack import LINK_RE, Stack
from storage import repo
from storage.models import Attachment, AuditEntry, Case, CaseEvent, CaseFact, Reporter
from storage.repo.retention import add_years
from test_retention import exists, run_purge_on

STORY = "Een man schold me net uit aan de balie en dreigde me te slaan"
SECOND_STORY = "Iemand bedreigde me telefonisch over mijn beschikking"
#: A hold's reason names people: content, which goes into the sealed timeline and nowhere else.
HOLD_REASON = "Aangifte door mevrouw Jansen, politiezaak 2026-4711"
LIFT_REASON = "Zaak Jansen geseponeerd volgens de officier"
#: The case page's badge of a held case.
BADGE = '<span class="flag hold">Bewaarplicht (juridisch)</span>'
REF_RE = re.compile(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}")


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url)
    yield stack
    await stack.close()


# -- helpers --------------------------------------------------------------------------------------------


#: `post(csrf=...)` default: the CSRF token of the browser's session, read from the case page.
SESSION_TOKEN = object()


async def post(stack: Stack, path: str, client=None, csrf=SESSION_TOKEN, **fields: str):
    """Post a form of the case page: with the session's CSRF token unless `csrf` is given (None: no
    token at all)."""
    client = client or stack.client
    reference = REF_RE.search(path).group(0)
    if csrf is SESSION_TOKEN:
        csrf = await stack.csrf(f"/cases/{reference}", client)
    data = dict(fields) if csrf is None else {"csrf": csrf, **fields}
    return await client.post(path, data=data, allow_redirects=False)


async def audit(stack: Stack, action: str | None = None) -> list[AuditEntry]:
    async with stack.meldbot.sessions() as session:
        entries = await repo.list_audit(session=session, limit=1000)
    return [a for a in entries if action is None or a.action == action]


async def case_of(stack: Stack, reference: str) -> Case | None:
    async with stack.meldbot.sessions() as session:
        return await repo.get_case(session=session, reference=reference)


async def events_of(stack: Stack, reference: str) -> list[CaseEvent]:
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        return await repo.list_case_events(session=session, case=case)


async def count(stack: Stack, model, *where) -> int:
    async with stack.meldbot.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def raw_dump(stack: Stack, *tables: str) -> str:
    """Every row of `tables` as the database holds it (bytes decoded loosely)."""
    rows = []
    async with stack.meldbot.db.connect() as connection:
        for table in tables:
            for row in await connection.execute(text(f"SELECT * FROM {table}")):
                for value in row:
                    value = bytes(value) if isinstance(value, memoryview) else value
                    rows.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return "\n".join(rows)


def assert_no_content(entries: list[AuditEntry], *leaks: str) -> None:
    stored = json.dumps([{"actor": e.actor, "action": e.action, "detail": e.detail} for e in entries])
    for leak in leaks:
        assert leak not in stored, leak


async def confirm_erase(stack: Stack, reference: str, reason: str = "request", client=None) -> tuple[str, str]:
    """Step 1 of an erasure: (the session's CSRF token, the confirmation token)."""
    client = client or stack.client
    csrf = await stack.csrf(f"/cases/{reference}", client)
    response = await post(stack, f"/cases/{reference}/erase", client, csrf, step="confirm", reason_code=reason)
    body = await response.text()
    assert response.status == 200, body
    assert "wissen" in body.lower() and reference in body
    return csrf, re.search(r'name="token" value="([^"]+)"', body).group(1)


async def erase(stack: Stack, reference: str, csrf: str, token: str, typed: str, reason: str = "request",
                client=None):
    return await post(stack, f"/cases/{reference}/erase", client, csrf, step="erase", reason_code=reason,
                      token=token, confirm_reference=typed)


# -- legal hold -----------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_a_legal_hold_placed_on_the_page_keeps_a_closed_case_from_the_purge_until_lifted(stack):
    await stack.meldbot.retention.ensure_scheduled()  # the daily purge, as `meldbot run` schedules it
    reference = await stack.report()
    await stack.log_in()
    hold = f"/cases/{reference}/legal-hold"

    # A reason is required: refused with a clear error on the page, nothing changed.
    for empty in ("", "   \n "):
        refused = await post(stack, hold, change="place", reason=empty)
        assert refused.status == 409 and "Geef een reden op." in await refused.text()
    # Without the session's CSRF token (or with a made-up one): refused.
    for token in (None, "not-the-token"):
        refused = await post(stack, hold, csrf=token, change="place", reason=HOLD_REASON)
        assert refused.status == 403 and "niet vanaf deze site verstuurd" in await refused.text()
    assert (await case_of(stack, reference)).legal_hold_since is None
    assert [e for e in await events_of(stack, reference) if e.kind.startswith("legal_hold")] == []
    assert len(await audit(stack, "csrf_refused")) == 2
    assert {e.detail["error"] for e in await audit(stack, "refused")} == {"hold_reason_required"}

    placed = await post(stack, hold, change="place", reason=HOLD_REASON)
    assert placed.status == 303 and placed.headers["Location"] == f"/cases/{reference}?done=legal_hold#privacy"
    held_at = stack.clock.now
    body = await (await stack.client.get(placed.headers["Location"])).text()
    assert BADGE in body and "Bewaarplicht ingesteld: deze zaak wordt niet verwijderd" in body
    assert HOLD_REASON in body  # in the case's own timeline
    assert "Wissen kan pas als de bewaarplicht is opgeheven." in body and f'action="/cases/{reference}/erase"' \
        not in body  # no erasure form while held
    assert (await case_of(stack, reference)).legal_hold_since == held_at
    (event,) = [e for e in await events_of(stack, reference) if e.kind == "legal_hold"]
    assert event.data == {"name": "Coco", "text": HOLD_REASON} and event.actor == "coordinator:chat:coco"
    (entry,) = await audit(stack, "legal_hold")
    assert (entry.actor, entry.case_reference) == ("chat:coco", reference)
    assert_no_content(await audit(stack), "Jansen", "4711")
    assert "Jansen" not in await raw_dump(stack, "case_events", "audit_log")  # sealed at rest
    again = await post(stack, hold, change="place", reason="nog eens")
    assert again.status == 409 and (await case_of(stack, reference)).legal_hold_since == held_at

    assert (await stack.act(reference, "take")).status == 303
    assert (await stack.act(reference, "status", status="closed", summary="Afgehandeld met de politie.", measures="none")).status \
        == 303
    closed_at = (await case_of(stack, reference)).closed_at
    due_day = add_years(closed_at, 5).date()
    await run_purge_on(stack, due_day + dt.timedelta(days=30))  # long past its five years: held
    assert await exists(stack, reference) and await audit(stack, "purged") == []

    # Five years on the session has long ended: the coordinator logs in again to lift the hold.
    await stack.log_in()
    lift = await post(stack, hold, change="lift", reason=" ")
    assert lift.status == 409 and "Geef een reden op." in await lift.text()
    assert (await case_of(stack, reference)).legal_hold_since == held_at
    lifted = await post(stack, hold, change="lift", reason=LIFT_REASON)
    assert lifted.status == 303
    body = await (await stack.client.get(lifted.headers["Location"])).text()
    assert "Bewaarplicht opgeheven: de gewone bewaartermijn geldt weer." in body
    assert BADGE not in body and "Bewaarplicht sinds" not in body and LIFT_REASON in body
    assert (await case_of(stack, reference)).legal_hold_since is None
    (lifted_event,) = [e for e in await events_of(stack, reference) if e.kind == "legal_hold_lifted"]
    assert lifted_event.data["text"] == LIFT_REASON and lifted_event.data["since"] == held_at.isoformat()
    assert len(await audit(stack, "legal_hold_lifted")) == 1
    assert_no_content(await audit(stack), "Jansen", "officier", "geseponeerd")

    await run_purge_on(stack, due_day + dt.timedelta(days=31))
    assert not await exists(stack, reference)
    (purged,) = await audit(stack, "purged")
    assert purged.case_reference == reference and purged.detail == {"outcome": "closed", "rule": "closed_years=5"}
    assert [e.action for e in await audit(stack) if e.case_reference == reference] == ["purged"]
    assert_no_content(await audit(stack), "Jansen", "schold", "Anna", "Afgehandeld")
    async with stack.meldbot.sessions() as session:
        (fact,) = await session.scalars(select(CaseFact).where(CaseFact.purged_at.is_not(None)))
    assert fact.outcome == "closed" and fact.reported_month == "2026-11"
    stored = json.dumps({c: str(getattr(fact, c)) for c in CaseFact.__table__.columns.keys()})
    for leak in (reference, "Jansen", "schold", "Anna", "anna", "coco"):
        assert leak not in stored, leak
    await stack.log_in()
    assert (await stack.client.get(f"/cases/{reference}")).status == 404


# -- export -----------------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_the_export_holds_every_case_of_the_reporter_and_is_audited_without_content(stack):
    first = await stack.report("anna")
    second = await stack.report("anna", SECOND_STORY, "2", "verzenden")
    # The same person's anonymous report is not theirs as far as the case pages can tell.
    hidden = await stack.report("anna", "Anoniem: een collega werd op de parkeerplaats geduwd", "1 2 6",
                                "verzenden")
    await stack.log_in()
    assert (await stack.act(first, "message", text="Wil je dat ik je bel vandaag?")).status == 303
    await stack.deliver()
    await stack.say("anna", "Ja graag, na twee uur")
    await stack.deliver()

    refused = await post(stack, f"/cases/{first}/export", csrf=None)
    assert refused.status == 403 and await audit(stack, "export_reporter") == []

    response = await post(stack, f"/cases/{second}/export")
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json" and response.charset == "utf-8"
    assert response.headers["Content-Disposition"] == f'attachment; filename="meldbot-export-{second}.json"'
    assert response.headers["Cache-Control"] == "no-store"
    export = json.loads(await response.read())
    assert export["format"] == "meldbot-reporter-export/1" and export["requested_for"] == second
    assert export["reporter"]["name"] == "Anna" and export["reporter"]["user_id"] == "anna"
    assert export["reporter"]["platform"] == "chat"
    by_reference = {c["reference"]: c for c in export["cases"]}
    assert set(by_reference) == {first, second}
    assert by_reference[first]["story"] == STORY and by_reference[second]["story"] == SECOND_STORY
    messages = {(e["kind"], e["data"].get("text")) for e in by_reference[first]["timeline"]}
    assert ("coordinator_message", "Wil je dat ik je bel vandaag?") in messages
    assert ("reporter_message", "Ja graag, na twee uur") in messages
    assert hidden not in json.dumps(export) and "parkeerplaats" not in json.dumps(export)

    (entry,) = await audit(stack, "export_reporter")
    assert (entry.actor, entry.case_reference, entry.detail) == ("chat:coco", second, {"cases": 2})
    assert_no_content(await audit(stack), "schold", "telefonisch", "Anna", "bel vandaag", "twee uur")


@pytest.mark.both_databases
async def test_an_anonymous_case_cannot_be_exported_and_its_reporter_is_named_nowhere(stack):
    await stack.say("w.canarie", STORY, name="Wilhelmina Canarie")
    await stack.say("w.canarie", "1 2 6", name="Wilhelmina Canarie")
    said = await stack.say("w.canarie", "verzenden", name="Wilhelmina Canarie")
    reference = REF_RE.search(said).group(0)
    await stack.deliver()
    await stack.log_in()
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "Anoniem" in page and f'action="/cases/{reference}/export"' not in page

    response = await post(stack, f"/cases/{reference}/export")
    body = await response.text()
    assert response.status == 409 and response.content_type == "text/html"
    assert "Deze melding is anoniem: er is niets over de melder te exporteren." in body
    for leak in ("Wilhelmina", "Canarie", "canarie"):
        assert leak not in body and leak not in json.dumps(dict(response.headers)), leak
    assert await audit(stack, "export_reporter") == []
    (refusal,) = await audit(stack, "refused")
    assert refusal.detail == {"action": "export_reporter", "error": "export_anonymous"}
    assert_no_content(await audit(stack), "Wilhelmina", "Canarie", "canarie", "schold")


# -- erasure ----------------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_erasure_needs_a_reason_the_reference_retyped_and_a_fresh_token_of_this_session(stack):
    reference = await stack.report("anna", STORY, "1 2", "verzenden")
    await stack.say("anna", "", attachments=(InboundAttachment("foto.png", "image/png", b"\x89PNG-bewijs"),))
    await stack.log_in()
    assert (await stack.act(reference, "note", text="Camerabeelden opgevraagd bij beveiliging")).status == 303
    path = f"/cases/{reference}/erase"
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        case_id, reporter_id = case.id, case.reporter_id
    assert await count(stack, Attachment, Attachment.case_id == case_id) == 1

    # Step 1 needs a reason code, one of the list.
    for reason in ("", "because I say so"):
        refused = await post(stack, path, step="confirm", reason_code=reason)
        assert refused.status == 409 and "Kies een reden om de zaak te wissen." in await refused.text()
    # Step 2 with no token, or a token made up.
    csrf = await stack.csrf(f"/cases/{reference}")
    for token in ("", "123.abc", f"{int(stack.clock.now.timestamp())}.{'0' * 64}"):
        refused = await erase(stack, reference, csrf, token, reference)
        assert refused.status == 409 and "hoort niet bij de zaak" in await refused.text()

    csrf, token = await confirm_erase(stack, reference)
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "Camerabeelden" in page  # the confirmation page only asks
    # A wrong reference typed.
    wrong = await erase(stack, reference, csrf, token, "MB-AAA-AAA")
    assert wrong.status == 409 and "De getypte referentie klopt niet. Er is niets gewist." in await wrong.text()
    # A token for another reason than the one posted.
    other_reason = await erase(stack, reference, csrf, token, reference, reason="other")
    assert other_reason.status == 409 and "hoort niet bij de zaak" in await other_reason.text()
    # A token of another session (the same coordinator in a second browser).
    browser = await stack.another_browser()
    await stack.log_in(client=browser)
    _, foreign = await confirm_erase(stack, reference, client=browser)
    stolen = await erase(stack, reference, csrf, foreign, reference)
    assert stolen.status == 409 and "hoort niet bij de zaak" in await stolen.text()
    # Without the CSRF token of the session.
    assert (await erase(stack, reference, None, token, reference)).status == 403
    # A token older than 15 minutes.
    stack.clock.advance(minutes=16)
    expired = await erase(stack, reference, csrf, token, reference)
    assert expired.status == 409 and "Deze bevestiging is verlopen." in await expired.text()
    assert await exists(stack, reference)
    refusals = [e.detail["error"] for e in await audit(stack, "refused") if e.detail.get("action") == "erase"]
    assert sorted(set(refusals)) == ["erase_confirm_expired", "erase_confirm_invalid", "erase_confirm_reference",
                                     "erase_reason_required"]

    # A held case cannot be erased, not even with a confirmation given before the hold.
    csrf, token = await confirm_erase(stack, reference)
    assert (await post(stack, f"/cases/{reference}/legal-hold", change="place", reason=HOLD_REASON)).status == 303
    for response in (await post(stack, path, step="confirm", reason_code="request"),
                     await erase(stack, reference, csrf, token, reference)):
        assert response.status == 409 and "onder bewaarplicht en kan niet gewist worden" in await response.text()
    assert await exists(stack, reference)
    assert (await post(stack, f"/cases/{reference}/legal-hold", change="lift", reason=LIFT_REASON)).status == 303

    csrf, token = await confirm_erase(stack, reference)
    erased = await erase(stack, reference, csrf, token, f" {reference.lower()} ")  # typed as people type
    assert erased.status == 303 and erased.headers["Location"] == f"/cases?erased={reference}"
    listing = await (await stack.client.get(erased.headers["Location"])).text()
    assert f"Zaak {reference} is gewist." in listing
    assert not await exists(stack, reference)
    for model in (Attachment, CaseEvent):
        assert await count(stack, model, model.case_id == case_id) == 0, model.__name__
    assert await count(stack, Reporter, Reporter.id == reporter_id) == 0  # anna had no other case
    async with stack.meldbot.sessions() as session:
        (fact,) = await session.scalars(select(CaseFact).where(CaseFact.purged_at.is_not(None)))
    assert fact.outcome == "erased"
    (entry,) = [e for e in await audit(stack) if e.case_reference == reference]
    assert (entry.actor, entry.action, entry.detail) == ("chat:coco", "erased", {"reason_code": "request"})
    assert_no_content(await audit(stack), "schold", "Camerabeelden", "Anna", "Jansen", "geseponeerd")
    assert (await stack.client.get(f"/cases/{reference}")).status == 404
    assert (await erase(stack, reference, csrf, token, reference)).status == 404  # used: nothing to confirm


@pytest.mark.both_databases
async def test_erasing_one_of_two_cases_keeps_the_reporter_and_the_other_case(stack):
    first = await stack.report("bob", "Iemand bedreigde me telefonisch", "2", "verzenden")
    second = await stack.report("bob")
    await stack.log_in()
    reporter_id = (await case_of(stack, first)).reporter_id
    csrf, token = await confirm_erase(stack, first, reason="other")
    assert (await erase(stack, first, csrf, token, first, reason="other")).status == 303
    assert not await exists(stack, first) and await exists(stack, second)
    assert await count(stack, Reporter, Reporter.id == reporter_id) == 1
    body = await (await stack.client.get(f"/cases/{second}")).text()
    assert "Bob" in body  # still named on the other case
    (entry,) = await audit(stack, "erased")
    assert entry.detail == {"reason_code": "other"}
    csrf, token = await confirm_erase(stack, second)
    assert (await erase(stack, second, csrf, token, second)).status == 303
    assert await count(stack, Reporter, Reporter.id == reporter_id) == 0
    assert await count(stack, CaseFact, CaseFact.purged_at.is_not(None)) == 2


@pytest.mark.both_databases
async def test_a_confirmation_is_for_the_case_as_shown_new_evidence_needs_a_new_one(stack):
    reference = await stack.report()
    await stack.log_in()
    csrf, token = await confirm_erase(stack, reference)
    stack.clock.advance(minutes=2)
    # The reporter sends a photo meanwhile: the confirmation said "0 files".
    await stack.say("anna", "", attachments=(InboundAttachment("foto.jpg", "image/jpeg", photo_with_location()),))
    changed = await erase(stack, reference, csrf, token, reference)
    body = await changed.text()
    assert changed.status == 409 and "hoort niet bij de zaak zoals die nu is" in body
    assert "1 bestand" in body and await exists(stack, reference)
    fresh = re.search(r'name="token" value="([^"]+)"', body).group(1)
    assert (await erase(stack, reference, csrf, fresh, reference)).status == 303
    assert not await exists(stack, reference)


@pytest.mark.parametrize("answers, told", [
    # Erasing a named case clears the reporter's pending relay: their answer starts a new report.
    pytest.param("1 2", "Dank je dat je dit meldt", id="named"),
    # The case pages have no anonymous key, so they cannot find an anonymous case's conversation:
    # the turn finds the case gone and says so, and the relay ends.
    pytest.param("1 2 6", "bestaat niet meer", id="anonymous"),
])
async def test_after_an_erasure_the_reporters_answer_is_not_said_to_be_forwarded(stack, answers, told):
    reference = await stack.report("anna", STORY, answers, "verzenden")
    await stack.log_in()
    assert (await stack.act(reference, "message", text="Wil je iets kwijt over wat er gebeurde?")).status == 303
    await stack.deliver()
    csrf, token = await confirm_erase(stack, reference)
    assert (await erase(stack, reference, csrf, token, reference)).status == 303
    assert not await exists(stack, reference) and await count(stack, CaseFact, CaseFact.purged_at.is_not(None)) == 1
    (entry,) = await audit(stack, "erased")
    assert entry.detail == {"reason_code": "request"}
    # Within the relay window the reporter answers the coordinator of a case that is gone.
    answer = await stack.say("anna", "Ja, het was erg")
    await stack.deliver()
    assert answer and "niet opgeslagen" not in answer
    assert await count(stack, Case) == 0 and await count(stack, CaseEvent) == 0
    assert "Doorgestuurd" not in answer and told in answer
    assert "Doorgestuurd" not in await stack.say("anna", "Nog iets")  # the relay has ended


# -- photos -------------------------------------------------------------------------------------------------


def photo_with_location() -> bytes:
    """A JPEG as a phone makes it: stored 64x32 (left red, right blue), EXIF orientation 6 (to be
    turned 90° clockwise for display), the camera's make and a GPS position."""
    image = Image.new("RGB", (64, 32), (220, 20, 20))
    image.paste((20, 20, 220), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "MeldbotTestCam"
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 30.5), 3: "E", 4: (4.0, 53.0, 12.25)}
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, quality=95)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb's header)."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR: after the signature, length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.both_databases
# Pillow warns about (rather than refuses) images between its cap and twice its cap: expected here.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_a_photo_is_shown_without_exif_and_upright_and_its_original_keeps_its_hash(stack):
    photo = photo_with_location()
    located = Image.open(io.BytesIO(photo))
    assert located.getexif().get_ifd(0x8825) and located.size == (64, 32)  # the test photo has it all
    files = {"foto.jpg": ("image/jpeg", photo), "verslag.pdf": ("application/pdf", b"%PDF-1.4 verslag"),
             "bom.png": ("image/png", png_claiming(20000, 20000)), "groot.png": ("image/png", png_claiming(8000, 8000))}
    await stack.say("anna", STORY)
    await stack.say("anna", "1 2")
    await stack.say("anna", "", attachments=tuple(InboundAttachment(name, kind, data)
                                                  for name, (kind, data) in files.items()))
    reference = REF_RE.search(await stack.say("anna", "verzenden")).group(0)
    await stack.deliver()
    await stack.log_in()
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    shown = {name: (int(i), sha) for i, name, sha in re.findall(
        r'attachments/(\d+)" class="original">([^<]+)</a>.*?<code class="sha256">([0-9a-f]{64})</code>', page, re.S)}
    assert set(shown) == set(files)
    photo_id, photo_sha = shown["foto.jpg"]
    assert photo_sha == hashlib.sha256(photo).hexdigest()
    assert f'<img src="/cases/{reference}/attachments/{photo_id}/preview"' in page
    entries = len(await audit(stack))

    preview = await stack.client.get(f"/cases/{reference}/attachments/{photo_id}/preview")
    served = await preview.read()
    assert preview.status == 200 and preview.content_type == "image/jpeg"
    assert preview.headers["Content-Disposition"] == "inline" and "sandbox" in preview.headers["Content-Security-Policy"]
    copy = Image.open(io.BytesIO(served))
    assert len(copy.getexif()) == 0 and not copy.getexif().get_ifd(0x8825)
    assert not {"exif", "xmp", "icc_profile", "comment"} & set(copy.info)
    assert b"Exif" not in served and b"MeldbotTestCam" not in served
    # Upright: turned as the orientation tag says, the left (red) half of the stored image on top.
    assert copy.size == (32, 64)
    top, bottom = copy.convert("RGB").getpixel((16, 12)), copy.convert("RGB").getpixel((16, 52))
    assert top[0] > 150 and top[2] < 100 and bottom[2] > 150 and bottom[0] < 100, (top, bottom)
    # Shown copies only read: the page view's entry already records them.
    assert len(await audit(stack)) == entries

    original = await stack.client.get(f"/cases/{reference}/attachments/{photo_id}")
    downloaded = await original.read()
    assert original.status == 200 and original.headers["Content-Disposition"].startswith("attachment")
    assert downloaded == photo and hashlib.sha256(downloaded).hexdigest() == photo_sha
    assert Image.open(io.BytesIO(downloaded)).getexif().get_ifd(0x8825)  # the original is untouched
    (download,) = await audit(stack, "download_original")
    assert (download.case_reference, download.detail) == (reference, {"attachment": photo_id})
    assert len(await audit(stack)) == entries + 1

    document_id = shown["verslag.pdf"][0]
    assert (await stack.client.get(f"/cases/{reference}/attachments/{document_id}/preview")).status == 404
    assert f"attachments/{document_id}/preview" not in page
    for name in ("bom.png", "groot.png"):
        bomb = await stack.client.get(f"/cases/{reference}/attachments/{shown[name][0]}/preview")
        assert bomb.status == 200 and bomb.content_type == "image/svg+xml", name
        assert "Geen voorbeeld" in await bomb.text()
    assert (await stack.client.get(f"/cases/{reference}")).status == 200


# -- who may -----------------------------------------------------------------------------------------------


async def test_only_a_coordinator_with_a_session_reaches_any_privacy_route(stack):
    reference = await stack.report()
    await stack.say("anna", "", attachments=(InboundAttachment("foto.jpg", "image/jpeg", photo_with_location()),))
    await stack.log_in()
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        (attachment,) = await repo.list_attachments(session=session, case_id=case.id)
    csrf, token = await confirm_erase(stack, reference)
    base = f"/cases/{reference}"
    routes = [
        ("POST", f"{base}/legal-hold", {"change": "place", "reason": HOLD_REASON}),
        ("POST", f"{base}/export", {}),
        ("POST", f"{base}/erase", {"step": "confirm", "reason_code": "request"}),
        ("POST", f"{base}/erase", {"step": "erase", "reason_code": "request", "token": token,
                                   "confirm_reference": reference}),
        ("GET", f"{base}/attachments/{attachment.id}/preview", {}),
        ("GET", f"{base}/attachments/{attachment.id}", {}),
    ]

    async def untouched() -> None:
        case = await case_of(stack, reference)
        assert case is not None and case.legal_hold_since is None
        assert await audit(stack, "export_reporter") == [] and await audit(stack, "download_original") == []

    async def send(client, method: str, path: str, fields: dict):
        if method == "GET":
            return await client.get(path, allow_redirects=False)
        return await client.post(path, data={"csrf": csrf, **fields}, allow_redirects=False)

    # A browser that never logged in (even knowing the session's CSRF token and a valid confirmation).
    stranger = await stack.another_browser()
    for method, path, fields in routes:
        response = await send(stranger, method, path, fields)
        body = await response.text()
        assert response.status == 401 and "Log eerst in" in body, (method, path)
        assert STORY not in body and "Anna" not in body
    # The POST-only actions have no GET at all.
    for path in {path for method, path, _ in routes if method == "POST"}:
        assert (await stranger.get(path, allow_redirects=False)).status == 405
    await untouched()

    # Someone who is no longer a coordinator: their session ends at the next request after the
    # platform check (every 5 minutes), on each of these routes.
    for method, path, fields in routes:
        stack.chat.coordinators.add("coco")
        await stack.log_in()
        csrf = await stack.csrf(base)
        if fields.get("step") == "erase":
            csrf, fields["token"] = await confirm_erase(stack, reference)
        stack.chat.coordinators.discard("coco")
        stack.clock.advance(minutes=6)
        response = await send(stack.client, method, path, fields)
        body = await response.text()
        assert response.status == 401 and "Log eerst in" in body, (method, path)
        assert STORY not in body
        await untouched()
    assert len(await audit(stack, "no_longer_coordinator")) == len(routes)
    # And they get no new login link either.
    assert not LINK_RE.search(await stack.say("coco", "login"))
    assert (await stack.client.get(base)).status == 401
    assert await exists(stack, reference)

"""The yearly overview for the annual conversation: /stats/year/{year} in Dutch and English (nature,
extent, approach, discussion points; small counts hidden in every sentence), an invalid year, the
audit log, and `meldbot report yearly` writing the same overview as a PDF (its text read back with
pypdf). The reports are those of tests/test_stats_pages.py (`make_data`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import re
from html import unescape

import pytest
from pypdf import PdfReader

from bot.cli import main
from helpers import TEST_MASTER_KEY
from stack import Stack
from storage.crypto import encode_key
from test_stats_pages import (
    DEPARTMENTS,
    NL,
    START,
    UTC,
    THREAT,
    VERBAL,
    audit,
    figure,
    make_data,
    page,
    reports,
    step,
    totals,
)


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url, organisation=DEPARTMENTS, now=START)
    yield stack
    await stack.close()


def points(body: str) -> list[str]:
    found = re.search(r'<ul class="stats-points">(.*?)</ul>', body, re.S).group(1)
    return [unescape(p) for p in re.findall(r"<li>(.*?)</li>", found, re.S)]


def matrix(body: str) -> dict[str, tuple[str, ...]]:
    """The measures per kind: kind -> the cells, in the order of the measures."""
    table = re.search(r'<table class="stats-table stats-matrix">.*?</table>', body, re.S).group(0)
    rows = {}
    for row in re.findall(r'<tr><th scope="row">(.*?)</tr>', table, re.S):
        label, rest = row.split("</th>", 1)
        rows[unescape(label)] = tuple(unescape(c) for c in re.findall(r'<td class="num">(.*?)</td>', rest))
    return rows


@pytest.mark.both_databases
async def test_the_yearly_overview_in_dutch_and_english(stack):
    await make_data(stack)
    body = await page(stack, "/stats/year/2026")
    assert "<h1>Jaaroverzicht agressie 2026</h1>" in body
    for heading in ("Omvang", "Aard", "Aanpak", "Gesprekspunten"):
        assert re.search(rf"<h2 id=\"\w+-title\">{heading}</h2>", body), heading
    # The whole of 2026 against the whole of 2025: each month against the same month.
    assert totals(body) == ("14", "7")
    months = figure(body, "months")
    assert len(months) == 12
    assert months["feb 2026"] == ("6", "0") and months["mrt 2026"] == ("0", "<5")  # March 2025: 5, hidden with June's 2
    assert months["mei 2026"] == ("5", "0") and months["jun 2026"] == ("0", "<5")
    assert months["sep 2026"] == ("<5", "0") and months["nov 2026"] == ("<5", "0")
    assert figure(body, "kinds")[NL("kind.verbal")] == ("7", "<5")
    assert figure(body, "places")[NL("place.counter")] == ("9", "<5")
    assert figure(body, "perpetrators")[NL("perpetrator.unknown")] == ("5", "<5")
    assert figure(body, "consequences")[NL("consequence.absence")] == ("6", "0")
    assert 'id="departments"' not in body  # the overview is of the organisation as a whole
    assert figure(body, "followup")["Contact binnen één werkdag"] == ("6 (86%)", "5 (100%)")
    # Measures: training 5 + 1, workplace 5, house rules 1 (the only small one: workplace is hidden with it).
    measures = figure(body, "measures")
    assert measures == {NL("measure.house_rules"): ("<5", "0"), NL("measure.training"): ("6", "0"),
                        NL("measure.workplace"): ("<5", "0"), NL("measure.procedure"): ("0", "0"),
                        NL("measure.aggressor_response"): ("0", "0"), NL("measure.none"): ("0", "0")}
    assert matrix(body) == {NL("kind.verbal"): ("0", "5", "5", "0", "0", "0"),
                            NL("kind.threat"): ("<5", "<5", "0", "0", "0", "0")}
    assert points(body) == [
        "In 2026 kwamen 14 meldingen binnen, tegen 7 in 2025.",
        f"Het vaakst gemeld: {NL('kind.verbal')} (7 meldingen).",
        # Verbal grew from 5 to 7, but 5 is hidden: no comparison may give it away.
        "Geen soort agressie nam aantoonbaar toe ten opzichte van 2025 (kleine aantallen tellen hierbij niet mee).",
        "86% van de meldingen met vastgelegd contact had dat binnen één werkdag (6 van 7).",
        "Nazorg is 5 keer aangeboden en <5 keer aangenomen.",
        "Aangifte was 5 keer gewenst en is <5 keer gedaan.",
        "10 meldingen uit 2026 staan nog open, langer dan 30 dagen na de melding.",
        "<5 afgesloten meldingen hebben nog geen evaluatie. Wat valt ervan te leren?",
    ]
    assert "style=" not in body and "<script" not in body

    english = await page(stack, "/stats/year/2026?lang=en")
    assert "<h1>Yearly overview of aggression 2026</h1>" in english
    for heading in ("Extent", "Nature", "Approach", "Discussion points"):
        assert f">{heading}</h2>" in english, heading
    assert points(english)[0] == "In 2026, 14 reports came in, against 7 in 2025."
    assert "Aftercare was offered 5 times and accepted <5 times." in points(english)
    assert [e.detail for e in await audit(stack, "view_yearly")] == [{"year": 2026}, {"year": 2026}]


@pytest.mark.both_databases
async def test_growth_shares_and_small_counts_in_the_discussion_points(database_url):
    stack = await Stack.start(database_url, stats={"min_count": 2}, now=START)
    try:
        await reports(stack, START, "a", 2, VERBAL, "1")
        await reports(stack, START, "b", 2, THREAT, "1")
        await reports(stack, dt.datetime(2026, 3, 2, 9, 15, tzinfo=UTC), "c", 4, VERBAL, "1")
        threat = await reports(stack, dt.datetime(2026, 3, 2, 9, 15, tzinfo=UTC), "d", 3, THREAT, "1")
        stack.clock.now = dt.datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
        await stack.log_in()
        await step(stack, threat[0], "contact_made")  # one contact: below 2, hidden
        body = await page(stack, "/stats/year/2026")
    finally:
        await stack.close()
    assert points(body) == [
        "In 2026 kwamen 7 meldingen binnen, tegen 4 in 2025.",
        f"Het vaakst gemeld: {NL('kind.verbal')} (4 meldingen).",
        f"De soort agressie die het sterkst toenam: {NL('kind.verbal')}, van 2 in 2025 naar 4 in 2026.",
        f"De soort plek waar het meest bij kwam: {NL('place.counter')}, van 2 in 2025 naar 4 in 2026.",
        "Te weinig meldingen met vastgelegd contact om te zeggen welk deel binnen één werkdag contact had "
        "(minder dan 2).",
        "Bij geen enkele melding is vastgelegd dat nazorg is aangeboden. Wordt nazorg wel aangeboden, en vastgelegd?",
        "Er zijn nog geen maatregelen vastgelegd bij de evaluaties.",
    ]
    assert figure(body, "followup")["Eerste contact vastgelegd"] == ("<2", "0")
    assert figure(body, "followup")["Mediane tijd tot eerste contact"] == ("—", "—")


@pytest.mark.both_databases
async def test_an_invalid_year_is_not_found(stack):
    await stack.log_in()
    # The stack's clock is in March 2025: next year is 2026.
    for year in ("1999", "2027", "20260", "abcd", "0202"):
        response = await stack.client.get(f"/stats/year/{year}")
        assert response.status == 404, year
        assert "Melding niet gevonden" in await response.text()
    assert (await stack.client.get("/stats/year/2026")).status == 200
    assert (await stack.client.get("/stats/year/2000")).status == 200
    missing = [e.detail for e in await audit(stack, "view_missing")]
    assert missing == [{"request": "yearly", "year": y} for y in ("1999", "2027", "20260", "abcd", "0202")]
    assert [e.detail for e in await audit(stack, "view_yearly")] == [{"year": 2026}, {"year": 2000}]


def pdf_text(path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(str(path)).pages)


@pytest.mark.both_databases
async def test_the_command_writes_the_yearly_overview_as_a_pdf(stack, tmp_path, capsys):
    await make_data(stack)
    config = tmp_path / "meldbot.toml"
    config.write_text(f'[organisation]\nname = "Gemeente Testdam"\n[database]\nurl = "{stack.meldbot.settings.database.url}"\n'
                      f'[privacy]\nkey = "{encode_key(TEST_MASTER_KEY)}"\n', encoding="utf-8")
    output = tmp_path / "jaaroverzicht-2026.pdf"
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["report", "yearly", "--config", str(config), "--year", "2026",
                                          "--output", str(output)]) == 0
    assert capsys.readouterr().out.strip() == f"yearly overview 2026 (nl) written to {output}"
    assert output.read_bytes().startswith(b"%PDF-")
    reader = PdfReader(str(output))
    assert len(reader.pages) >= 4  # a cover with the extent, then nature, approach and discussion points
    text = pdf_text(output)
    for expected in ("Jaaroverzicht agressie 2026", "Gemeente Testdam", "Omvang", "Aard", "Aanpak",
                     "Gesprekspunten", "Meldingen per maand", "In 2026 kwamen 14 meldingen binnen, tegen 7 in 2025.",
                     "Nazorg is 5 keer aangeboden en <5 keer aangenomen.", NL("measure.training")):
        assert expected in text.replace("\n", " "), expected
    assert "Gesprekspunten" in reader.pages[-1].extract_text()  # the last page: the discussion points
    assert "Inloggen" not in text and "Uitloggen" not in text and "Statistieken" not in text

    english = tmp_path / "yearly-2026.pdf"
    assert await asyncio.to_thread(main, ["report", "yearly", "--config", str(config), "--year", "2026",
                                          "--output", str(english), "--language", "en"]) == 0
    text = pdf_text(english).replace("\n", " ")
    assert "Yearly overview of aggression 2026" in text and "In 2026, 14 reports came in, against 7 in 2025." in text
    entries = await audit(stack, "report_yearly")
    assert [(e.actor, e.detail) for e in entries] == [(f"cli:{getpass.getuser()}", {"year": 2026, "language": "nl"}),
                                                      (f"cli:{getpass.getuser()}", {"year": 2026, "language": "en"})]

    # A year out of range or a folder that does not exist: a message and exit code 2, no file.
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["report", "yearly", "--config", str(config), "--year", "1999",
                                          "--output", str(output)]) == 2
    assert "--year" in capsys.readouterr().err
    missing = tmp_path / "nowhere" / "x.pdf"
    assert await asyncio.to_thread(main, ["report", "yearly", "--config", str(config), "--year", "2026",
                                          "--output", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()
    assert len(await audit(stack, "report_yearly")) == 2

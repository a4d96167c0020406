"""The case export (bot.core.exports): `meldbot cases export` and the download on the statistics page.

One scenario of four cases (one purged, one anonymous, one recorded for someone else), exported as
CSV and XLSX and read back, against rows computed by hand; what the default export never contains;
what the personal export adds (never a name for the anonymous case); the year filter; the audit
entries; the web download and its refusals; the command with its exit codes; and memory that does
not grow with the number of rows (tracemalloc, a ratio between 300 and 3,000 facts)."""

from __future__ import annotations

import asyncio
import codecs
import csv
import datetime as dt
import gc
import getpass
import io
import tempfile
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy import insert, select

from bot.cli import main
from bot.core import exports
from helpers import TEST_MASTER_KEY
from stack import Stack
from storage import repo, transaction
from storage.crypto import encode_key
from storage.models import AuditEntry, CaseFact

AMS = ZoneInfo("Europe/Amsterdam")
UTC = dt.timezone.utc
ORGANISATION = {"departments": ["burgerzaken", "handhaving"], "department_names": {"burgerzaken": "Burgerzaken"}}

STORY_ANNA = "Een man schold me net uit aan de balie en dreigde me te slaan"
STORY_ANONYMOUS = "Een bezoeker schold me net uit aan de balie en noemde me een oplichter"
STORY_BOB = "Een klant duwde me tegen de deur bij de receptie"
SUMMARY_CARLA = "Gesprek met Carla gevoerd"
SUMMARY_ANNA = "Aangifte gedaan en nazorg geregeld"
LESSON_ANNA = "Een tweede medewerker aan de balie zetten"
ANONYMOUS_USER = "hendrikje.zwanenburg"
#: Words of the stories, summaries and lesson, and every name: none is in a default export.
PERSONAL_WORDS = ("schold", "dreigde", "oplichter", "duwde", "receptie", "gesprek", "geregeld", "medewerker aan",
                  "anna", "bob", "carla", "karel", "appel", "pietje", "zwanenburg", "hendrikje")

HEADER_NL = ["Meldingsnummer", "Datum en tijd incident", "Gemeld op", "Soort incident", "Soort plaats", "Afdeling",
             "Soort dader", "Letsel", "Schade", "Verzuim", "Politie ter plaatse", "Aangifte gewenst",
             "Aangifte gedaan", "Datum aangifte", "Nazorg aangeboden", "Nazorg aangenomen",
             "Eerste contact na (werkuren)", "Status", "Afgesloten op", "Maatregelen", "Vastgelegd voor een ander"]
PERSONAL_HEADER_NL = ["Wat er gebeurde", "Naam melder", "Vastgelegd voor (naam)", "Samenvatting bij afsluiten",
                      "Wat we ervan leren"]
HEADER_EN = ["Reference", "Date and time of the incident", "Reported at", "Kind of incident", "Kind of place",
             "Department", "Kind of perpetrator", "Injury", "Damage", "Absence from work", "Police came",
             "Police report wanted", "Police report filed", "Date of the police report", "Aftercare offered",
             "Aftercare accepted", "First contact after (working hours)", "Status", "Closed at", "Measures",
             "Recorded for someone else"]
VERBAL = "Verbale agressie (schelden, schreeuwen, beledigen)"
#: Measures as the case page words them, in the order it lists them (not the order they were ticked).
MEASURES_ANNA = "Huisregels aangepast of gehandhaafd; Training of instructie voor medewerkers"


@dataclass
class Scenario:
    stack: Stack
    anna: str
    anonymous: str
    bob: str


async def set_answers(stack: Stack, reference: str, *, police_report_wanted=None, **answers) -> None:
    """What the dialogue and the "recorded for" form would store (other features, tested there):
    set on the case, and its fact refreshed as an event would."""
    async with transaction(stack.meldbot.sessions) as session:
        case = await repo.get_case(session=session, reference=reference)
        case.answers = {**case.answers, **answers}
        if police_report_wanted is not None:
            case.police_report_wanted = police_report_wanted
        await repo.refresh_fact(session=session, case=case, now=stack.clock())


async def act(stack: Stack, reference: str, action: str, **fields: str) -> None:
    response = await stack.act(reference, action, **fields)
    assert response.status == 303, await response.text()


async def later(stack: Stack, **delta: float) -> None:
    """Move the clock on (firing what is due) and log in again: an idle session ends after 30 minutes."""
    await stack.tick(**delta)
    await stack.log_in()


async def close(stack: Stack, reference: str, summary: str, measures: list[str], lesson: str = "") -> None:
    """Close a case on its page, with the evaluation (measures are checkboxes: one field each)."""
    token = await stack.csrf(f"/cases/{reference}")
    response = await stack.client.post(f"/cases/{reference}", allow_redirects=False, data=[
        ("csrf", token), ("action", "status"), ("status", "closed"), ("summary", summary), ("lesson", lesson),
        *(("measures", m) for m in measures)])
    assert response.status == 303, await response.text()


async def build_scenario(stack: Stack) -> Scenario:
    """Four cases, by hand-moved clock (times are UTC; Amsterdam is an hour ahead in winter):
    - Carla, Mon 15 Dec 2025 09:15: contact the next day (8 working hours later), closed, purged;
    - Anna, Mon 12 Jan 2026 09:15: contact 1.5 working hours later, aftercare offered, injury, police
      report wanted and filed on 13 Jan, evaluated (two measures, a lesson), closed 13 Jan 11:15;
    - anonymous, Mon 12 Jan 2026 11:15: department and a "recorded for" name in its answers (the
      export must show neither);
    - Bob, Mon 2 Feb 2026 09:15: recorded by a coordinator for Karel Appel, damage and absence."""
    await stack.log_in()
    stack.clock.now = dt.datetime(2025, 12, 15, 9, 15, tzinfo=UTC)
    carla = await stack.report("carla")
    await act(stack, carla, "take")
    await later(stack, days=1)
    await act(stack, carla, "step", step="contact_made")
    await close(stack, carla, SUMMARY_CARLA, ["none"])
    async with transaction(stack.meldbot.sessions) as session:
        case = await repo.get_case(session=session, reference=carla)
        await repo.purge_case(session=session, case=case, outcome="closed", now=stack.clock())

    stack.clock.now = dt.datetime(2026, 1, 12, 9, 15, tzinfo=UTC)
    await stack.log_in()  # the session of December has long ended
    anna = await stack.report("anna", STORY_ANNA, "1 2", "verzenden")
    await act(stack, anna, "take")
    await later(stack, hours=1.5)
    await act(stack, anna, "step", step="contact_made")
    await act(stack, anna, "step", step="aftercare_offered")
    await later(stack, minutes=30)
    anonymous = await stack.report(ANONYMOUS_USER, STORY_ANONYMOUS, "1 2 6", "verzenden")
    await set_answers(stack, anonymous, department="handhaving", recorded_by="chat:coco", recorded_for="Pietje Puk")
    await later(stack, days=1)
    await act(stack, anna, "step", step="police_report_filed", date="2026-01-13")
    await set_answers(stack, anna, department="burgerzaken", consequences=["injury"], police_report_wanted=True)
    await close(stack, anna, SUMMARY_ANNA, ["training", "house_rules"], LESSON_ANNA)

    stack.clock.now = dt.datetime(2026, 2, 2, 9, 15, tzinfo=UTC)
    await stack.log_in()
    bob = await stack.report("bob", STORY_BOB, "1 2", "verzenden")
    await set_answers(stack, bob, department="handhaving", recorded_by="chat:coco", recorded_for="Karel Appel",
                      consequences=["damage", "absence"])
    return Scenario(stack, anna, anonymous, bob)


@pytest.fixture
async def scenario(database_url):
    stack = await Stack.start(database_url, organisation=ORGANISATION)
    try:
        yield await build_scenario(stack)
    finally:
        await stack.close()


# -- the rows, computed by hand --------------------------------------------------------------------------


def expected_xlsx(s: Scenario, personal: bool = False) -> list[list]:
    """The rows as an Excel sheet holds them (dates as dates, hours as numbers, empty as None)."""
    d = dt.datetime
    threat = f"{VERBAL}; Bedreiging"
    rows = [
        # Carla, purged: no reference, months only, nothing only the case knew (police came, report date).
        [None, "2025-12", "2025-12", threat, "Balie of loket", None, None, "nee", "nee", "nee", None, "nee", "nee",
         None, "nee", "nee", 8, "afgesloten", "2025-12", "Geen maatregel nodig", "nee"],
        [s.anna, d(2026, 1, 12, 10, 15), d(2026, 1, 12, 10, 15), threat, "Balie of loket", "Burgerzaken", None,
         "ja", "nee", "nee", "nee", "ja", "ja", d(2026, 1, 13), "ja", "nee", 1.5, "afgesloten",
         d(2026, 1, 13, 12, 15), MEASURES_ANNA, "nee"],
        # Anonymous: its department is never shown.
        [s.anonymous, d(2026, 1, 12, 12, 15), d(2026, 1, 12, 12, 15), VERBAL, "Balie of loket", None,
         "Burger of klant", "nee", "nee", "nee", "nee", "nee", "nee", None, "nee", "nee", None, "nieuw", None, None,
         "ja"],
        [s.bob, d(2026, 2, 2, 10, 15), d(2026, 2, 2, 10, 15), "Fysiek geweld", "Balie of loket", "handhaving",
         "Burger of klant", "nee", "ja", "ja", "nee", "nee", "nee", None, "nee", "nee", None, "nieuw", None, None,
         "ja"],
    ]
    if personal:
        rows[0] += [None] * 5
        rows[1] += [STORY_ANNA, "Anna", None, SUMMARY_ANNA, LESSON_ANNA]
        rows[2] += [STORY_ANONYMOUS, None, None, None, None]
        rows[3] += [STORY_BOB, "Bob", "Karel Appel", None, None]
    return rows


def expected_csv(s: Scenario, personal: bool = False) -> list[list[str]]:
    """The same rows as Dutch CSV text: ISO dates, a decimal comma, empty strings."""
    threat = f"{VERBAL}; Bedreiging"
    rows = [
        ["", "2025-12", "2025-12", threat, "Balie of loket", "", "", "nee", "nee", "nee", "", "nee", "nee", "", "nee",
         "nee", "8", "afgesloten", "2025-12", "Geen maatregel nodig", "nee"],
        [s.anna, "2026-01-12 10:15", "2026-01-12 10:15", threat, "Balie of loket", "Burgerzaken", "", "ja", "nee",
         "nee", "nee", "ja", "ja", "2026-01-13", "ja", "nee", "1,5", "afgesloten", "2026-01-13 12:15",
         MEASURES_ANNA, "nee"],
        [s.anonymous, "2026-01-12 12:15", "2026-01-12 12:15", VERBAL, "Balie of loket", "", "Burger of klant", "nee",
         "nee", "nee", "nee", "nee", "nee", "", "nee", "nee", "", "nieuw", "", "", "ja"],
        [s.bob, "2026-02-02 10:15", "2026-02-02 10:15", "Fysiek geweld", "Balie of loket", "handhaving",
         "Burger of klant", "nee", "ja", "ja", "nee", "nee", "nee", "", "nee", "nee", "", "nieuw", "", "", "ja"],
    ]
    if personal:
        rows[0] += [""] * 5
        rows[1] += [STORY_ANNA, "Anna", "", SUMMARY_ANNA, LESSON_ANNA]
        rows[2] += [STORY_ANONYMOUS, "", "", "", ""]
        rows[3] += [STORY_BOB, "Bob", "Karel Appel", "", ""]
    return rows


def read_csv(data: bytes, delimiter: str = ";") -> list[list[str]]:
    assert data.startswith(codecs.BOM_UTF8)
    return list(csv.reader(io.StringIO(data[len(codecs.BOM_UTF8):].decode("utf-8"), newline=""),
                           delimiter=delimiter))


def read_xlsx(data: bytes) -> list[list]:
    # Not read-only: that mode leaves out the empty cells at the end of a row.
    workbook = openpyxl.load_workbook(io.BytesIO(data))
    (sheet,) = workbook.worksheets
    assert sheet.title == "Meldingen"
    return [list(row) for row in sheet.iter_rows(values_only=True)]


def spec_of(stack: Stack, **values) -> exports.ExportSpec:
    pages = stack.meldbot.pages
    return exports.ExportSpec(language="nl", zone=pages.timezone, departments=pages.departments, **values)


async def export_bytes(stack: Stack, tmp_path: Path, fmt: str, **values) -> bytes:
    spec = spec_of(stack, **values)
    (tmp_path / "out").mkdir(exist_ok=True)
    target = tmp_path / "out" / f"export.{fmt}"
    await exports.write_export(target, fmt, spec, exports.rows(stack.meldbot.pages.sessions, spec))
    return target.read_bytes()


async def export_audit(stack: Stack) -> list[AuditEntry]:
    async with stack.meldbot.sessions() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "export")
                                          .order_by(AuditEntry.id)))


# -- the rows --------------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_csv_and_xlsx_hold_one_row_per_fact_with_no_personal_data(scenario, tmp_path):
    s = scenario
    data = await export_bytes(s.stack, tmp_path, "csv")
    assert read_csv(data) == [HEADER_NL, *expected_csv(s)]
    assert read_xlsx(await export_bytes(s.stack, tmp_path, "xlsx")) == [HEADER_NL, *expected_xlsx(s)]
    # Read by the decoder the way Excel does: the header is the first line, ; separated.
    assert data.decode("utf-8-sig").splitlines()[0] == ";".join(HEADER_NL)
    for fmt in ("csv", "xlsx"):
        raw = await export_bytes(s.stack, tmp_path, fmt)
        cells = read_csv(raw) if fmt == "csv" else read_xlsx(raw)
        text = " ".join(str(cell) for row in cells for cell in row if cell is not None).lower()
        assert [word for word in PERSONAL_WORDS if word in text] == [], fmt
        assert "karel" not in raw.decode("latin-1").lower() and "zwanenburg" not in raw.decode("latin-1").lower()
    # Written beside the target under a temporary name, then renamed: nothing else is left.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export.csv", "export.xlsx"]


@pytest.mark.both_databases
async def test_the_personal_export_adds_texts_and_names_but_never_a_name_for_the_anonymous_case(scenario, tmp_path):
    s = scenario
    rows = read_csv(await export_bytes(s.stack, tmp_path, "csv", personal_data=True))
    assert rows == [HEADER_NL + PERSONAL_HEADER_NL, *expected_csv(s, personal=True)]
    assert read_xlsx(await export_bytes(s.stack, tmp_path, "xlsx", personal_data=True)) == \
        [HEADER_NL + PERSONAL_HEADER_NL, *expected_xlsx(s, personal=True)]
    (anonymous,) = [row for row in rows if row[0] == s.anonymous]
    text = " ".join(anonymous).lower()
    assert "pietje" not in text and "zwanenburg" not in text and "handhaving" not in text
    assert all("zwanenburg" not in cell.lower() for row in rows for cell in row)


@pytest.mark.both_databases
async def test_the_year_filter_counts_by_report_month(scenario, tmp_path):
    s = scenario
    assert read_csv(await export_bytes(s.stack, tmp_path, "csv", year=2026)) == [HEADER_NL, *expected_csv(s)[1:]]
    assert read_csv(await export_bytes(s.stack, tmp_path, "csv", year=2025)) == [HEADER_NL, expected_csv(s)[0]]
    assert read_xlsx(await export_bytes(s.stack, tmp_path, "xlsx", year=2024)) == [HEADER_NL]
    async with s.stack.meldbot.pages.sessions() as session:
        assert await exports.plan(session, spec_of(s.stack, year=2026)) == \
            exports.Plan(rows=3, last_id=await session.scalar(select(CaseFact.id).order_by(CaseFact.id.desc())))


# -- the download on the statistics page ---------------------------------------------------------------


@pytest.mark.both_databases
async def test_the_download_is_the_same_export_audited_as_from_the_web(scenario, tmp_path, monkeypatch):
    s, stack = scenario, scenario.stack
    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))  # where the XLSX is written before it is sent
    token = await stack.csrf("/cases")

    response = await stack.client.post("/stats/export", data={"csrf": token, "format": "csv", "year": "2026"})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="meldbot-export-2026.csv"'
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Transfer-Encoding"] == "chunked"  # streamed, no length known in advance
    assert read_csv(await response.read()) == [HEADER_NL, *expected_csv(s)[1:]]

    response = await stack.client.post("/stats/export", data={"csrf": token, "format": "xlsx", "year": "",
                                                              "personal": "1"})
    body = await response.read()
    assert response.status == 200
    assert response.headers["Content-Type"] == exports.MEDIA_TYPES["xlsx"]
    assert response.headers["Content-Disposition"] == 'attachment; filename="meldbot-export-all.xlsx"'
    assert response.headers["Cache-Control"] == "no-store"
    assert int(response.headers["Content-Length"]) == len(body)
    assert read_xlsx(body) == [HEADER_NL + PERSONAL_HEADER_NL, *expected_xlsx(s, personal=True)]
    assert list(spare.iterdir()) == []  # the temporary file is gone once sent

    audit = await export_audit(stack)
    assert [(a.actor, a.case_reference, a.detail) for a in audit] == [
        ("chat:coco", None, {"format": "csv", "year": 2026, "rows": 3, "personal_data": False, "via": "web"}),
        ("chat:coco", None, {"format": "xlsx", "year": None, "rows": 4, "personal_data": True, "via": "web"}),
    ]


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url)
    await stack.report("anna")
    await stack.log_in()
    yield stack
    await stack.close()


@pytest.mark.both_databases
async def test_the_download_needs_a_login_the_right_token_and_sound_parameters(stack):
    stranger = await stack.another_browser()
    refused = await stranger.post("/stats/export", data={"csrf": "", "format": "csv", "year": ""})
    assert refused.status == 401 and "Log eerst in" in await refused.text()
    assert "attachment" not in refused.headers.get("Content-Disposition", "")

    forged = await stack.client.post("/stats/export", data={"csrf": "not-the-token", "format": "csv"})
    assert forged.status == 403 and "attachment" not in forged.headers.get("Content-Disposition", "")

    token = await stack.csrf("/cases")
    for fields, text in (({"format": "pdf"}, "Kies een bestand als CSV of als Excel (xlsx)."),
                         ({"format": ""}, "Kies een bestand als CSV of als Excel (xlsx)."),
                         ({"format": "csv", "year": "26"}, "Vul een jaar in, zoals 2026"),
                         ({"format": "xlsx", "year": "1999"}, "Vul een jaar in, zoals 2026"),
                         ({"format": "csv", "year": "２０２６"}, "Vul een jaar in, zoals 2026")):
        bad = await stack.client.post("/stats/export", data={"csrf": token, **fields})
        assert bad.status == 400 and text in await bad.text(), fields

    assert await export_audit(stack) == []
    async with stack.meldbot.sessions() as session:
        refusals = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "csrf_refused")))
    assert [(a.actor, a.case_reference) for a in refusals] == [("chat:coco", None)]


# -- the command -----------------------------------------------------------------------------------------


def write_config(folder: Path, database_url: str, language: str = "en") -> Path:
    path = folder / "meldbot.toml"
    path.write_text(f'[organisation]\nname = "Gemeente Testdam"\nlanguage = "{language}"\n'
                    'departments = ["burgerzaken", "handhaving"]\n'
                    '[organisation.department_names]\nburgerzaken = "Burgerzaken"\n'
                    f'[database]\nurl = "{database_url}"\n'
                    f'[privacy]\nkey = "{encode_key(TEST_MASTER_KEY)}"\n', encoding="utf-8")
    return path


def export_command(config: Path, *arguments: str) -> int:
    return main(["cases", "export", "--config", str(config), *arguments])


@pytest.mark.both_databases
async def test_the_command_writes_the_export_in_the_organisations_language_and_audits_it(
        scenario, database_url, tmp_path, capsys):
    s = scenario
    config = write_config(tmp_path, database_url)
    folder = tmp_path / "exports"
    folder.mkdir()
    target = folder / "cases.csv"
    capsys.readouterr()

    assert await asyncio.to_thread(export_command, config, "--format", "csv", "--output", str(target)) == 0
    assert capsys.readouterr().out == f"4 row(s) written to {target}\n"
    # English: comma separated, a decimal point, the English words.
    rows = read_csv(target.read_bytes(), delimiter=",")
    assert rows[0] == HEADER_EN and len(rows) == 5
    assert rows[2] == [s.anna, "2026-01-12 10:15", "2026-01-12 10:15",
                       "Verbal aggression (swearing, shouting, insults); Threat", "Counter or desk", "Burgerzaken", "",
                       "yes", "no", "no", "no", "yes", "yes", "2026-01-13", "yes", "no", "1.5", "closed",
                       "2026-01-13 12:15", "House rules changed or enforced; Training or instruction for staff", "no"]
    assert rows[1][:3] == ["", "2025-12", "2025-12"] and rows[1][16] == "8"
    assert target.stat().st_mode & 0o077 == 0  # it may hold personal data: this account only

    personal = folder / "cases-2026.xlsx"
    assert await asyncio.to_thread(export_command, config, "--format", "xlsx", "--year", "2026", "--output",
                                   str(personal), "--with-personal-data") == 0
    assert capsys.readouterr().out == f"3 row(s) written to {personal} (with personal data: keep the file safe)\n"
    workbook = openpyxl.load_workbook(personal)
    sheet = workbook.worksheets[0]
    assert sheet.title == "Cases"
    cells = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert cells[0] == HEADER_EN + ["What happened", "Reporter's name", "Recorded for (name)", "Closing summary",
                                    "Lesson learned"]
    assert [row[0] for row in cells[1:]] == [s.anna, s.anonymous, s.bob]
    assert cells[3][-5:] == [STORY_BOB, "Bob", "Karel Appel", None, None]
    assert sorted(p.name for p in folder.iterdir()) == ["cases-2026.xlsx", "cases.csv"]

    audit = await export_audit(s.stack)
    actor = f"cli:{getpass.getuser()}"
    assert [(a.actor, a.detail) for a in audit] == [
        (actor, {"format": "csv", "year": None, "rows": 4, "personal_data": False, "via": "cli"}),
        (actor, {"format": "xlsx", "year": 2026, "rows": 3, "personal_data": True, "via": "cli"}),
    ]


@pytest.mark.both_databases
async def test_the_command_stops_with_exit_code_2_for_an_output_it_cannot_write(stack, database_url, tmp_path,
                                                                                capsys):
    config = write_config(tmp_path, database_url, language="nl")
    missing = tmp_path / "nowhere" / "cases.csv"
    assert await asyncio.to_thread(export_command, config, "--format", "csv", "--output", str(missing)) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "does not exist" in error and not missing.parent.exists()

    folder = tmp_path / "a-folder.xlsx"
    folder.mkdir()
    assert await asyncio.to_thread(export_command, config, "--format", "xlsx", "--output", str(folder)) == 2
    error = capsys.readouterr().err
    assert str(folder) in error and "is a folder" in error and list(folder.iterdir()) == []
    assert await export_audit(stack) == []


# -- writing ---------------------------------------------------------------------------------------------


async def _rows(*rows):
    for row in rows:
        yield list(row)


async def test_text_that_looks_like_a_formula_stays_text(tmp_path):
    spec = exports.ExportSpec(language="nl")
    row = ['=HYPERLINK("http://example.org")', "+31 6 1234", "-", "@SUM(A1)", "gewoon", 2.5, None,
           dt.datetime(2026, 1, 2, 3, 4), dt.date(2026, 1, 2), "a\x07b"]
    await exports.write_export(tmp_path / "x.csv", "csv", spec, _rows(row))
    assert read_csv((tmp_path / "x.csv").read_bytes())[1] == [
        "'=HYPERLINK(\"http://example.org\")", "'+31 6 1234", "'-", "'@SUM(A1)", "gewoon", "2,5", "",
        "2026-01-02 03:04", "2026-01-02", "a\x07b"]
    await exports.write_export(tmp_path / "x.xlsx", "xlsx", spec, _rows(row))
    sheet = openpyxl.load_workbook(tmp_path / "x.xlsx").worksheets[0]
    cells = list(sheet.iter_rows(min_row=2, max_row=2))[0]
    assert [c.value for c in cells[:10]] == ['=HYPERLINK("http://example.org")', "+31 6 1234", "-", "@SUM(A1)",
                                             "gewoon", 2.5, None, dt.datetime(2026, 1, 2, 3, 4),
                                             dt.datetime(2026, 1, 2), "ab"]
    assert cells[0].data_type == "s"  # a string, not a formula Excel would run
    assert cells[7].number_format == "yyyy-mm-dd hh:mm" and cells[8].number_format == "yyyy-mm-dd"


async def test_a_failed_export_leaves_no_half_file_and_the_old_file_as_it_was(tmp_path, monkeypatch):
    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))  # where a library would put temporary files
    spec = exports.ExportSpec(language="nl")
    target = tmp_path / "cases.csv"
    target.write_text("the previous export", encoding="utf-8")

    async def broken():
        yield ["eerste"]
        raise RuntimeError("the database went away")

    async def refuse(rows: int) -> None:
        raise RuntimeError(f"no audit entry for {rows} rows")

    for fmt, source, audit in (("csv", broken(), None), ("xlsx", broken(), None), ("csv", _rows(["x"]), refuse)):
        with pytest.raises(RuntimeError):
            await exports.write_export(target, fmt, spec, source, before_rename=audit)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv", "tmp"], fmt
        assert target.read_text(encoding="utf-8") == "the previous export"
        assert list(spare.iterdir()) == [], fmt


async def test_csv_is_sent_in_chunks_that_add_up_to_the_file(monkeypatch):
    spec = exports.ExportSpec(language="en")
    monkeypatch.setattr(exports, "CHUNK_CHARS", 1)
    chunks = [chunk async for chunk in exports.csv_chunks(spec, _rows(["a"], ["b"], [1.25], [None]))]
    assert len(chunks) == 4 and chunks[0].startswith(codecs.BOM_UTF8)
    assert not any(chunk.startswith(codecs.BOM_UTF8) for chunk in chunks[1:])
    assert read_csv(b"".join(chunks), delimiter=",") == [HEADER_EN, ["a"], ["b"], ["1.25"], [""]]


# -- memory ----------------------------------------------------------------------------------------------


PURGED = dt.datetime(2026, 12, 31, tzinfo=UTC)


async def add_facts(sessions, first: int, last: int) -> None:
    """Facts of purged cases with IDs first+1..last, spread over the months of 2026, as a purge
    leaves them (no case row: nothing to decrypt)."""
    facts, kinds, measures = [], [], []
    for number in range(first + 1, last + 1):
        month = f"2026-{number % 12 + 1:02d}"
        facts.append({"id": number, "case_id": None, "occurred_month": month, "reported_month": month,
                      "kinds": ["verbal", "threat"], "place": "counter", "department": "burgerzaken",
                      "perpetrator": "citizen", "injury": number % 3 == 0, "damage": False, "absence": False,
                      "urgent": True, "anonymous": number % 5 == 0, "recorded": False, "police_wanted": True,
                      "police_filed": number % 2 == 0, "aftercare_offered": True, "aftercare_accepted": False,
                      "aggressor_response": False, "first_contact_hours": number % 9 + 0.5, "status": "closed",
                      "milestones": {"contact_made": 1.5}, "outcome": "closed", "ended_month": month,
                      "purged_at": PURGED, "updated_at": PURGED,
                      "kind_bits": repo.bits_of(repo.KIND_BITS, ["verbal", "threat"]),
                      "measure_bits": repo.bits_of(repo.MEASURE_BITS, ["training"] if number % 2 else [])})
    async with transaction(sessions) as session:
        await session.execute(insert(CaseFact), facts)


async def export_peak(sessions, fmt: str, target: Path) -> tuple[int, int]:
    """(rows, peak bytes allocated) of one export, measured from its start."""
    spec = exports.ExportSpec(language="nl", zone=AMS, departments={"burgerzaken": "Burgerzaken"})
    gc.collect()  # garbage of earlier work is not the export's
    tracemalloc.start()
    try:
        written = await exports.write_export(target, fmt, spec, exports.rows(sessions, spec))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return written, peak


@pytest.mark.both_databases
@pytest.mark.parametrize("fmt", exports.FORMATS)
async def test_memory_does_not_grow_with_the_number_of_rows(sessions, tmp_path, fmt):
    await add_facts(sessions, 0, 300)
    target = tmp_path / f"cases.{fmt}"
    await export_peak(sessions, fmt, target)  # once first: statements compiled, modules loaded
    written, small = await export_peak(sessions, fmt, target)
    assert written == 300
    await add_facts(sessions, 300, 3000)
    written, large = await export_peak(sessions, fmt, target)
    assert written == 3000
    # Ten times the rows: a writer that held them all would need about ten times the memory.
    assert large < 1.5 * small, (small, large)

"""The case export: one row per case fact (live and purged cases), columns aligned with the GIR/VPT
registration, written as CSV or Excel (xlsx) by `meldbot cases export` and the statistics page.

What a row holds
- The default export reads plain columns only: the de-identified `CaseFact` (codes, months,
  follow-up flags) outer-joined to its case for the reference, the exact dates, the police-came
  answer and the date of the police report step. No sealed field is opened, so it needs no
  decryption at all. A purged case counts through its fact: empty reference, months instead of
  dates, and empty cells for what only the case knew (police came, date of the police report).
- `personal_data` adds the story, the reporter's name, the name of whom a coordinator recorded the
  report for, the closing summary and the lesson of the evaluation. Those are opened from the
  case rows of each batch and then forgotten (the data keys are dropped from the vault's cache).
- An anonymous case never gets a name (neither the reporter's nor a "recorded for" name) and its
  department is left empty in EVERY export: in a small department the department alone can point
  at the person who reported.

Values
- Kinds, kinds of place, perpetrator kinds, status and measures are written as their catalog
  labels in the organisation's language, departments as their configured names: the sheet is read
  by a person who types the registration into GIR, where the choices are words, not our codes.
  Several kinds or measures are joined with "; " (the labels themselves contain commas).
- Yes/no flags are the language's words ("ja"/"nee"); an unknown answer is an empty cell, never
  "no". Working hours to the first contact are a number (empty: no contact recorded).
- Dates and times are in the organisation's time zone: CSV as `YYYY-MM-DD HH:MM` / `YYYY-MM-DD`,
  Excel as real date cells; the months of a purged case are text (`YYYY-MM`).

Order: by report month, then in the order the facts were written. A fact is written when its
report is submitted, so this is the order of reporting, and a purged fact keeps its place.

Formats
- CSV: UTF-8 with a byte order mark (so Excel reads the accents), one header row, then rows. The
  separator and decimal mark follow the organisation's language, as Excel in that language expects
  them: Dutch `;` and a decimal comma, English `,` and a decimal point. A cell starting with
  `= + - @` (free text in a personal export) gets a leading `'` so that Excel never runs it as a
  formula.
- XLSX: XlsxWriter in constant-memory mode (each row goes to an anonymous temporary file as it
  comes, so nothing grows with the number of rows; it is many times faster than openpyxl's
  write-only mode, which serialises every cell through a pure-Python XML writer); text is always
  text, never a formula or a link.

Memory does not grow with the number of rows: facts are read in keyset pages of `BATCH` rows, each
in its own short read (no transaction, so on SQLite no writer waits for an export), and written
row by row. Files are written to a temporary file next to the target and renamed at the end, so a
failure never leaves half a file (`write_export`)."""

from __future__ import annotations

import asyncio
import codecs
import csv
import datetime as dt
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import lazyload

from dialogs import Translator, categories
from storage.db import vault_of
from storage.models import Case, CaseFact, Reporter
from storage.repo import MEASURE_BITS, codes_of

#: Facts read (and, with personal data, cases opened) per query.
BATCH = 200
FORMATS = ("csv", "xlsx")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8",
               "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
#: CSV as Excel in each language expects it: (separator, decimal mark).
CSV_DIALECTS = {"nl": (";", ","), "en": (",", ".")}
#: Between several labels in one cell (labels contain commas, never semicolons).
JOIN = "; "

#: The columns of every export: (name, catalog key of the header).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("reference", "export.col_reference"),
    ("occurred", "export.col_occurred"),
    ("reported", "export.col_reported"),
    ("kinds", "export.col_kinds"),
    ("place", "export.col_place"),
    ("department", "export.col_department"),
    ("perpetrator", "export.col_perpetrator"),
    ("injury", "export.col_injury"),
    ("damage", "export.col_damage"),
    ("absence", "export.col_absence"),
    ("police_came", "export.col_police_came"),
    ("police_wanted", "export.col_police_wanted"),
    ("police_filed", "export.col_police_filed"),
    ("police_date", "export.col_police_date"),
    ("aftercare_offered", "export.col_aftercare_offered"),
    ("aftercare_accepted", "export.col_aftercare_accepted"),
    ("first_contact", "export.col_first_contact"),
    ("status", "export.col_status"),
    ("closed", "export.col_closed"),
    ("measures", "export.col_measures"),
    ("recorded", "export.col_recorded"),
)
#: The columns `personal_data` adds at the end.
PERSONAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("story", "export.col_story"),
    ("reporter", "export.col_reporter"),
    ("recorded_for", "export.col_recorded_for"),
    ("summary", "export.col_summary"),
    ("lesson", "export.col_lesson"),
)
#: The measures as the case page offers them when a case is closed (the coordinator's own words).
MEASURE_KEYS = {
    "house_rules": "measure.house_rules", "training": "measure.training",
    "workplace": "measure.workplace", "procedure": "measure.procedure",
    "aggressor_response": "measure.aggressor_response", "none": "measure.none",
}
STATUS_KEYS = {"new": "status.new", "in_progress": "status.in_progress", "closed": "status.closed",
               "withdrawn": "status.withdrawn"}

#: A value in a row: text, a number, a local (naive) date and time or date, or None (empty cell).
Value = str | float | int | dt.datetime | dt.date | None

_FACT_COLUMNS = (
    CaseFact.id, CaseFact.case_id, CaseFact.occurred_month, CaseFact.reported_month, CaseFact.kinds,
    CaseFact.place, CaseFact.department, CaseFact.perpetrator, CaseFact.injury, CaseFact.damage,
    CaseFact.absence, CaseFact.anonymous, CaseFact.recorded, CaseFact.police_wanted, CaseFact.police_filed,
    CaseFact.aftercare_offered, CaseFact.aftercare_accepted, CaseFact.first_contact_hours, CaseFact.status,
    CaseFact.ended_month, CaseFact.measure_bits,
    Case.reference, Case.occurred_at, Case.created_at, Case.closed_at, Case.followup, Case.police_came,
)


@dataclass(frozen=True)
class ExportSpec:
    """What to export and how to word it: `year` None is every year; `language` and `zone` are the
    organisation's; `departments` maps codes to display names."""

    language: str = "nl"
    zone: dt.tzinfo = dt.timezone.utc
    year: int | None = None
    personal_data: bool = False
    departments: Mapping[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        return COLUMNS + PERSONAL_COLUMNS if self.personal_data else COLUMNS


@dataclass(frozen=True)
class Plan:
    """An export fixed at one moment: how many rows it has and the last fact it includes (facts
    written later are left out, so the rows match the count audited before the first byte)."""

    rows: int
    last_id: int


def header(spec: ExportSpec) -> list[str]:
    """The header row in the organisation's language."""
    t = Translator(spec.language)
    return [t(key) for _, key in spec.columns]


def filename(fmt: str, year: int | None) -> str:
    """The name a download is offered under: meldbot-export-2026.csv, meldbot-export-all.xlsx."""
    return f"meldbot-export-{year if year is not None else 'all'}.{fmt}"


def _in_scope(query, spec: ExportSpec):
    if spec.year is not None:
        query = query.where(CaseFact.reported_month >= f"{spec.year:04d}-01",
                            CaseFact.reported_month <= f"{spec.year:04d}-12")
    return query


async def plan(session: AsyncSession, spec: ExportSpec) -> Plan:
    """Count the rows of an export now and fix its last fact (one aggregate query)."""
    count, last = (await session.execute(_in_scope(select(func.count(), func.max(CaseFact.id)), spec))).one()
    return Plan(rows=int(count), last_id=int(last or 0))


async def rows(sessions: async_sessionmaker[AsyncSession], spec: ExportSpec,
               upto: int | None = None) -> AsyncIterator[list[Value]]:
    """The rows of an export in order, read in keyset pages of BATCH facts, each page in its own
    short session (`upto`: only facts up to this ID, see `Plan`)."""
    t = Translator(spec.language)
    words = {True: t("export.yes"), False: t("export.no"), None: None}
    after: tuple[str, int] | None = None
    while True:
        query = _in_scope(select(*_FACT_COLUMNS).select_from(CaseFact)
                          .outerjoin(Case, Case.id == CaseFact.case_id), spec)
        if upto is not None:
            query = query.where(CaseFact.id <= upto)
        if after is not None:
            month, last_id = after
            # A row comparison: both databases walk ix_case_facts_reported_month_id from there.
            query = query.where(tuple_(CaseFact.reported_month, CaseFact.id) > tuple_(month, last_id))
        query = query.order_by(CaseFact.reported_month, CaseFact.id).limit(BATCH)
        async with sessions() as session:
            page = (await session.execute(query)).all()
            if not page:
                return
            personal = await _personal(session, page) if spec.personal_data else {}
        for fact in page:
            row = _row(fact, codes_of(MEASURE_BITS, fact.measure_bits or 0), spec, t, words)
            if spec.personal_data:
                row.extend(personal.get(fact.case_id, (None,) * len(PERSONAL_COLUMNS)) if not fact.anonymous
                           else _anonymous_personal(personal.get(fact.case_id)))
            yield row
        after = (page[-1].reported_month, page[-1].id)
        del page, personal


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def _personal(session: AsyncSession, page) -> dict[int, tuple[Value, ...]]:
    """Story, reporter's name, recorded-for name, closing summary and lesson of the live cases of a
    page (an anonymous case's names are never looked up)."""
    case_ids = [row.case_id for row in page if row.case_id is not None]
    if not case_ids:
        return {}
    cases = list(await session.scalars(select(Case).options(lazyload(Case.kinds)).where(Case.id.in_(case_ids))))
    reporter_ids = {c.reporter_id for c in cases if c.reporter_id is not None and not c.anonymous}
    names: dict[int, str | None] = {}
    if reporter_ids:
        for reporter in await session.scalars(select(Reporter).where(Reporter.id.in_(reporter_ids))):
            names[reporter.id] = _text(reporter.display_name)
    vault = vault_of(session)
    found = {}
    for case in cases:
        answers = case.answers or {}
        evaluation = case.evaluation or {}
        anonymous = bool(case.anonymous)
        found[case.id] = (
            _text(case.story),
            None if anonymous else names.get(case.reporter_id),
            None if anonymous else _text(answers.get("recorded_for")),
            _text(case.closing_summary),
            _text(evaluation.get("lesson") if isinstance(evaluation, dict) else None),
        )
        # Opened once for this row: the export must not fill the vault's cache with every case's key.
        vault.forget(case.wrapped_key)
    return found


def _anonymous_personal(values: tuple[Value, ...] | None) -> tuple[Value, ...]:
    """The personal columns of an anonymous case: its texts, never a name (whatever the case says)."""
    if values is None:
        return (None,) * len(PERSONAL_COLUMNS)
    story, _name, _recorded_for, summary, lesson = values
    return story, None, None, summary, lesson


def _local(moment: dt.datetime | None, zone: dt.tzinfo) -> dt.datetime | None:
    """A stored (UTC) moment as the organisation's wall-clock time, to the minute."""
    return moment.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) if moment else None


def _step_date(followup: Any, step: str) -> dt.date | None:
    record = followup.get(step) if isinstance(followup, dict) else None
    try:
        return dt.date.fromisoformat(record["date"]) if isinstance(record, dict) and record.get("date") else None
    except (TypeError, ValueError):
        return None


def _label(t: Translator, prefix: str, code: str | None, known: Sequence[str]) -> str | None:
    if not code:
        return None
    return t(f"{prefix}.{code}") if code in known else code


def _row(fact, measures: Sequence[str], spec: ExportSpec, t: Translator, words: dict) -> list[Value]:
    zone = spec.zone
    live = fact.case_id is not None
    kinds = [_label(t, "kind", k, categories.KINDS) for k in (fact.kinds or []) if isinstance(k, str)]
    if live:
        closed: Value = _local(fact.closed_at, zone)
    else:
        closed = fact.ended_month if fact.status == "closed" else None
    return [
        fact.reference if live else None,
        _local(fact.occurred_at, zone) if live else fact.occurred_month,
        _local(fact.created_at, zone) if live else fact.reported_month,
        JOIN.join(k for k in kinds if k) or None,
        _label(t, "place", fact.place, categories.PLACES),
        # Never for an anonymous case: a small department can point at its reporter.
        None if fact.anonymous or not fact.department else spec.departments.get(fact.department, fact.department),
        _label(t, "perpetrator", fact.perpetrator, categories.PERPETRATORS),
        words[bool(fact.injury)], words[bool(fact.damage)], words[bool(fact.absence)],
        words[fact.police_came] if live else None,
        words[bool(fact.police_wanted)], words[bool(fact.police_filed)],
        _step_date(fact.followup, "police_report_filed") if live else None,
        words[bool(fact.aftercare_offered)], words[bool(fact.aftercare_accepted)],
        fact.first_contact_hours,
        t(STATUS_KEYS[fact.status]) if fact.status in STATUS_KEYS else fact.status,
        closed,
        JOIN.join(t(MEASURE_KEYS[m]) if m in MEASURE_KEYS else m for m in measures) or None,
        words[bool(fact.recorded)],
    ]


# -- writing -------------------------------------------------------------------------------------------------

#: Cells Excel would read as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Characters an xlsx file cannot hold (control characters); free text loses them.
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
#: Bytes of CSV handed on at a time (a download is sent in chunks of about this size).
CHUNK_CHARS = 16 * 1024


def csv_cell(value: Value, decimal: str) -> str:
    """One CSV cell: dates as ISO text, numbers with the language's decimal mark, text that could
    be a formula behind a `'`."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):  # at most two decimals, none when whole (Babel is 50x slower here)
        return f"{value:.2f}".rstrip("0").rstrip(".").replace(".", decimal)
    return "'" + value if value.startswith(_FORMULA_START) else value


async def csv_chunks(spec: ExportSpec, source: AsyncIterator[list[Value]]) -> AsyncIterator[bytes]:
    """The CSV file (byte order mark, header, rows) in chunks of about CHUNK_CHARS."""
    separator, decimal = CSV_DIALECTS.get(spec.language, CSV_DIALECTS["nl"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=separator, lineterminator="\r\n")
    writer.writerow(header(spec))
    first = True
    async for row in source:
        writer.writerow([csv_cell(value, decimal) for value in row])
        if buffer.tell() >= CHUNK_CHARS:
            yield (codecs.BOM_UTF8 if first else b"") + buffer.getvalue().encode("utf-8")
            first = False
            buffer.seek(0)
            buffer.truncate()
    if first or buffer.tell():
        yield (codecs.BOM_UTF8 if first else b"") + buffer.getvalue().encode("utf-8")


async def write_csv(path: Path, spec: ExportSpec, source: AsyncIterator[list[Value]]) -> int:
    """Write the CSV to `path` (an open temporary file); returns the number of rows."""
    counted = _Counted(source)
    try:
        handle = open(path, "wb")
    except OSError as error:
        raise OutputError(path, error) from error
    with handle:
        async for chunk in csv_chunks(spec, counted):
            try:
                handle.write(chunk)
            except OSError as error:
                raise OutputError(path, error) from error
    return counted.count


async def write_xlsx(path: Path, spec: ExportSpec, source: AsyncIterator[list[Value]]) -> int:
    """Write the workbook to `path` row by row; returns the number of rows.

    XlsxWriter's constant-memory mode sends each row to a temporary file as it is written, so memory
    does not grow with the rows. Its temporary files go into a private folder beside `path` (mode
    0700) that is removed afterwards, also when the export fails: they may hold personal data."""
    import xlsxwriter

    scratch = Path(tempfile.mkdtemp(prefix=".meldbot-xlsx-", dir=path.parent))
    try:
        options = {"constant_memory": True, "tmpdir": str(scratch), "strings_to_numbers": False,
                   # Text is never a formula or a link, whatever it starts with.
                   "strings_to_formulas": False, "strings_to_urls": False}
        workbook = xlsxwriter.Workbook(str(path), options)
        sheet = workbook.add_worksheet(Translator(spec.language)("export.sheet"))
        bold = workbook.add_format({"bold": True})
        formats = {dt.datetime: workbook.add_format({"num_format": "yyyy-mm-dd hh:mm"}),
                   dt.date: workbook.add_format({"num_format": "yyyy-mm-dd"})}
        sheet.write_row(0, 0, header(spec), bold)
        count = 0
        async for row in source:
            count += 1
            for column, value in enumerate(row):
                if value is None:
                    continue
                if isinstance(value, str):
                    sheet.write_string(count, column, _ILLEGAL.sub("", value))
                elif isinstance(value, (dt.datetime, dt.date)):
                    sheet.write_datetime(count, column, value, formats[type(value)])
                else:
                    sheet.write_number(count, column, value)
        # Zipping the parts is blocking work: off the event loop.
        try:
            await asyncio.to_thread(workbook.close)
        except OSError as error:
            raise OutputError(path, error) from error
        return count
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class OutputError(Exception):
    """The export file cannot be written (the folder is missing or read-only, the disk is full)."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(f"{path}: {error.strerror or type(error).__name__}")
        self.path = path
        self.reason = error.strerror or type(error).__name__


class _Counted:
    """An async iterator that counts what passes through."""

    def __init__(self, source: AsyncIterator[list[Value]]):
        self.source = source
        self.count = 0

    def __aiter__(self):
        return self

    async def __anext__(self) -> list[Value]:
        row = await self.source.__anext__()
        self.count += 1
        return row


def temporary_beside(target: Path) -> Path:
    """A new, empty file (mode 0600: it may hold personal data) in the target's folder, to be
    renamed onto the target once complete. OutputError when the folder cannot be written."""
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as error:
        raise OutputError(target, error) from error
    os.close(handle)
    return Path(name)


async def write_file(path: Path, fmt: str, spec: ExportSpec, source: AsyncIterator[list[Value]]) -> int:
    """Write an export in `fmt` to `path` (no temporary file: see `write_export`)."""
    if fmt == "csv":
        return await write_csv(path, spec, source)
    if fmt == "xlsx":
        return await write_xlsx(path, spec, source)
    raise ValueError(f"unknown export format {fmt!r}")


async def write_export(target: Path, fmt: str, spec: ExportSpec, source: AsyncIterator[list[Value]],
                       before_rename: Callable[[int], Awaitable[None]] | None = None) -> int:
    """Write an export to a temporary file beside `target`, call `before_rename(rows)` (the audit
    entry), then rename it onto `target`. On any failure the temporary file goes and `target` is
    left as it was: never half a file. OutputError when the file cannot be written."""
    partial = temporary_beside(target)
    try:
        count = await write_file(partial, fmt, spec, source)
        if before_rename is not None:
            await before_rename(count)
        try:
            os.replace(partial, target)
        except OSError as error:
            raise OutputError(target, error) from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


__all__ = ["BATCH", "COLUMNS", "FORMATS", "MEDIA_TYPES", "PERSONAL_COLUMNS", "ExportSpec", "OutputError", "Plan",
           "csv_cell", "csv_chunks", "filename", "header", "plan", "rows", "temporary_beside", "write_csv",
           "write_export", "write_file", "write_xlsx"]

"""Evidence on the case pages: a case page never loads a file's bytes, an inline image only reads
(no write lock, no audit entry of its own), and a file is streamed from the database in chunks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3

import aiohttp
import pytest
from sqlalchemy import event, inspect, select
from sqlalchemy.engine import make_url

from bot.web import pages as caseweb
from stack import Stack
from storage import repo, transaction
from storage.models import WebSession

MB = 1_000_000


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url)
    yield stack
    await stack.close()


@contextlib.contextmanager
def statements(stack: Stack):
    """The SQL statements the application sends while the block runs."""
    seen: list[str] = []

    def record(connection, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    engine = stack.meldbot.db.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def reads_content(statement: str) -> bool:
    """Whether a statement reads a file's bytes whole (its length and a chunk of it are fine)."""
    rest = re.sub(r"(length|substr)\(attachments\.content", "", statement)
    return "attachments.content" in rest


async def add_files(stack: Stack, reference: str, files: list[tuple[str, str, bytes]]) -> list[int]:
    async with transaction(stack.meldbot.sessions) as session:
        case = await repo.get_case(session=session, reference=reference)
        added = [await repo.add_attachment(session=session, filename=name, media_type=media_type, content=content,
                                           now=stack.clock(), case_id=case.id) for name, media_type, content in files]
        return [a.id for a in added]


async def audit(stack: Stack) -> list:
    async with stack.meldbot.sessions() as session:
        return await repo.list_audit(session=session)


async def last_seen(stack: Stack):
    async with stack.meldbot.sessions() as session:
        (row,) = await session.scalars(select(WebSession))
        return row.last_seen_at


async def test_a_case_page_with_thirty_large_images_loads_no_bytes_and_images_take_no_write_lock(stack, database_url):
    reference = await stack.report()
    photos = [os.urandom(MB) for _ in range(30)]
    ids = await add_files(stack, reference, [(f"foto-{i}.jpg", "image/jpeg", p) for i, p in enumerate(photos)])
    await stack.log_in()

    with statements(stack) as sql:
        page = await stack.client.get(f"/cases/{reference}")
        body = await page.text()
    assert page.status == 200
    # The page shows each image's metadata-free copy; the original is a separate download.
    assert sorted({int(i) for i in re.findall(rf'<img src="/cases/{reference}/attachments/(\d+)/preview"', body)}) == ids
    assert sorted({int(i) for i in re.findall(rf'href="/cases/{reference}/attachments/(\d+)" class="original"',
                                              body)}) == ids
    assert not [s for s in sql if reads_content(s)], sql
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        listed = await repo.list_attachments(session=session, case_id=case.id)
        assert listed and all("content" not in inspect(a).dict for a in listed)
    # The page view's own entry records the images it showed: loading them needs none.
    (view,) = [a for a in await audit(stack) if a.action == "view_case"]
    assert view.detail["attachments_shown"] == ids

    entries, seen_at = len(await audit(stack)), await last_seen(stack)
    # Another connection holds SQLite's single write lock while the images load: they only read.
    path = make_url(database_url).database
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")
        with statements(stack) as sql:
            for attachment_id in ids[:3]:
                image = await stack.client.get(f"/cases/{reference}/attachments/{attachment_id}/preview")
                assert image.status == 200, await image.text()
                assert image.headers["Content-Disposition"].startswith("inline")
                served = await image.read()
                assert photos[ids.index(attachment_id)][:4096] not in served  # never the original's bytes
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert not [s for s in sql if re.match(r"\s*(INSERT|UPDATE|DELETE)", s)], sql
    assert len(await audit(stack)) == entries and await last_seen(stack) == seen_at


@pytest.mark.both_databases
async def test_a_file_is_streamed_in_chunks_and_a_download_is_audited(stack):
    reference = await stack.report()
    content = os.urandom(2 * caseweb.CHUNK_BYTES + 12345)
    (image_id, document_id) = await add_files(stack, reference, [("groot.png", "image/png", content),
                                                                 ("verslag.pdf", "application/pdf", content)])
    await stack.log_in()
    await stack.client.get(f"/cases/{reference}")
    before = [a for a in await audit(stack) if a.action == "download_original"]
    assert before == []

    with statements(stack) as sql:
        image = await stack.client.get(f"/cases/{reference}/attachments/{image_id}")
        served = await image.read()
    assert image.status == 200 and hashlib.sha256(served).digest() == hashlib.sha256(content).digest()
    assert image.headers["Content-Length"] == str(len(content))
    assert image.content_type == "application/octet-stream"
    assert image.headers["Content-Disposition"].startswith("attachment")
    assert sum("substr" in s.lower() for s in sql) == 3  # three chunks, never the whole file at once
    assert not [s for s in sql if reads_content(s)], sql

    document = await stack.client.get(f"/cases/{reference}/attachments/{document_id}")
    assert document.status == 200 and document.content_type == "application/octet-stream"
    assert hashlib.sha256(await document.read()).digest() == hashlib.sha256(content).digest()
    downloads = [a for a in await audit(stack) if a.action == "download_original"]
    assert sorted(a.detail["attachment"] for a in downloads) == sorted([image_id, document_id])
    assert all(a.case_reference == reference for a in downloads)

    head = await stack.client.head(f"/cases/{reference}/attachments/{image_id}")
    assert head.status == 200 and head.headers["Content-Length"] == str(len(content))


async def test_a_file_that_cannot_be_read_to_the_end_is_cut_off_not_completed(stack, monkeypatch, caplog):
    reference = await stack.report()
    (attachment_id,) = await add_files(stack, reference, [("foto.png", "image/png", os.urandom(3 * 1024 * 1024))])
    await stack.log_in()
    read = repo.read_attachment_chunk
    calls = []

    async def vanishing(**kwargs):
        calls.append(kwargs["offset"])
        return await read(**kwargs) if len(calls) == 1 else None  # removed while being sent

    monkeypatch.setattr(repo, "read_attachment_chunk", vanishing)
    response = await stack.client.get(f"/cases/{reference}/attachments/{attachment_id}")
    assert response.status == 200  # the headers were sent before the file went
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert "not sent in full" in caplog.text
    # The server is fine afterwards.
    assert (await stack.client.get(f"/cases/{reference}")).status == 200

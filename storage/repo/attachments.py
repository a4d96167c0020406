"""Evidence files: stored with their digest; listed without their bytes, read in chunks."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import crypto
from ..db import vault_of
from ..models import Attachment

#: Files up to this size are kept inside the database; larger ones need a file store.
MAX_INLINE_ATTACHMENT = 20 * 1024 * 1024


async def add_attachment(
    *, session: AsyncSession, filename: str, media_type: str, content: bytes, now: dt.datetime,
    conversation_id: int | None = None, draft_id: str | None = None, case_id: int | None = None,
) -> Attachment:
    """Store a file with the SHA-256 of the original, its size, media type and time received; name
    and bytes sealed under a data key of its own."""
    if len(content) > MAX_INLINE_ATTACHMENT:
        raise ValueError("attachment too large to store inline")
    vault = vault_of(session)
    cipher, wrapped = vault.new_data_key("file")
    attachment = Attachment(
        conversation_id=conversation_id, draft_id=draft_id, case_id=case_id, wrapped_key=wrapped,
        key_master=vault.master_id, sealed_name=crypto.seal_with(cipher, filename[:255], "file name"),
        media_type=media_type[:127] or "application/octet-stream", size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), content=crypto.seal_file(cipher, content), received_at=now,
    )
    attachment.__dict__["_vault"] = vault
    session.add(attachment)
    await session.flush()
    return attachment


async def link_draft_attachments(*, session: AsyncSession, conversation_id: int, draft_id: str, case_id: int) -> int:
    """Move a draft's files to the case it became; returns how many."""
    result = await session.execute(
        update(Attachment)
        .where(Attachment.conversation_id == conversation_id, Attachment.draft_id == draft_id,
               Attachment.case_id.is_(None))
        .values(case_id=case_id)
    )
    return result.rowcount or 0


async def delete_draft_attachments(*, session: AsyncSession, conversation_id: int, draft_id: str) -> int:
    """Remove the files of a cancelled draft."""
    result = await session.execute(
        delete(Attachment).where(Attachment.conversation_id == conversation_id, Attachment.draft_id == draft_id,
                                 Attachment.case_id.is_(None))
    )
    return result.rowcount or 0


async def list_attachments(*, session: AsyncSession, case_id: int) -> list[Attachment]:
    """The evidence of a case, in the order received."""
    query = select(Attachment).where(Attachment.case_id == case_id).order_by(Attachment.received_at, Attachment.id)
    return list(await session.scalars(query))


async def get_case_attachment(*, session: AsyncSession, case_id: int, attachment_id: int
                              ) -> tuple[Attachment, int | None] | None:
    """One file of a case without its bytes, with the length of its plain bytes (None when they are
    not stored); None for a file of another case or none at all."""
    # length() of a blob/bytea reads the stored size, not the bytes (SQLite and PostgreSQL).
    row = (await session.execute(
        select(Attachment, func.length(Attachment.content))
        .where(Attachment.id == attachment_id, Attachment.case_id == case_id)
    )).one_or_none()
    if row is None:
        return None
    attachment, stored = row
    return attachment, (attachment.size if stored == crypto.sealed_file_size(attachment.size) else None)


def attachment_chunks(attachment: Attachment) -> int:
    """How many chunks `read_attachment_chunk` reads a file in."""
    return max(1, -(-attachment.size // crypto.FILE_CHUNK))


async def read_attachment_chunk(*, session: AsyncSession, attachment: Attachment, index: int) -> bytes | None:
    """Chunk `index` (0-based, `storage.crypto.FILE_CHUNK` plain bytes each) of a file, opened: one
    chunk is read from the database, never the whole file. None when the file is gone."""
    count = attachment_chunks(attachment)
    start = index * crypto.SEALED_CHUNK
    chunk = func.substr(Attachment.content, start + 1, crypto.SEALED_CHUNK, type_=Attachment.content.type)
    blob = await session.scalar(select(chunk).where(Attachment.id == attachment.id))
    if blob is None:
        return None
    cipher = vault_of(session).data_cipher(attachment.wrapped_key, "file")
    return crypto.open_file_chunk(cipher, blob, index, index == count - 1)


async def read_attachment(*, session: AsyncSession, attachment: Attachment) -> bytes | None:
    """A whole file, opened (for images shown on the case page; downloads stream by chunk)."""
    parts = []
    for index in range(attachment_chunks(attachment)):
        part = await read_attachment_chunk(session=session, attachment=attachment, index=index)
        if part is None:
            return None
        parts.append(part)
    return b"".join(parts)


async def count_case_files(*, session: AsyncSession, case_id: int) -> int:
    """Files of one case."""
    return int(await session.scalar(select(func.count(Attachment.id)).where(Attachment.case_id == case_id)) or 0)

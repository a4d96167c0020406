"""Evidence files: stored with their digest; listed without their bytes, read in chunks."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import Attachment

#: Files up to this size are kept inside the database; larger ones need a file store.
MAX_INLINE_ATTACHMENT = 20 * 1024 * 1024


async def add_attachment(
    *, session: AsyncSession, filename: str, media_type: str, content: bytes, now: dt.datetime,
    conversation_id: int | None = None, draft_id: str | None = None, case_id: int | None = None,
) -> Attachment:
    """Store a file with its SHA-256, size, media type and time received."""
    if len(content) > MAX_INLINE_ATTACHMENT:
        raise ValueError("attachment too large to store inline")
    attachment = Attachment(
        conversation_id=conversation_id, draft_id=draft_id, case_id=case_id, filename=filename[:255],
        media_type=media_type[:127] or "application/octet-stream", size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), content=content, received_at=now,
    )
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
    """One file of a case without its bytes, with the length of the bytes stored in the database
    (None when they are not stored inline); None for a file of another case or none at all."""
    # length() of a blob/bytea reads the stored size, not the bytes (SQLite and PostgreSQL).
    row = (await session.execute(
        select(Attachment, func.length(Attachment.content))
        .where(Attachment.id == attachment_id, Attachment.case_id == case_id)
    )).one_or_none()
    return (row[0], row[1]) if row is not None else None


async def read_attachment_chunk(*, session: AsyncSession, attachment_id: int, offset: int, size: int
                                ) -> bytes | None:
    """`size` bytes of a file's content from `offset` (0-based): one chunk, never the whole file."""
    chunk = func.substr(Attachment.content, offset + 1, size, type_=Attachment.content.type)
    return await session.scalar(select(chunk).where(Attachment.id == attachment_id))


async def count_case_files(*, session: AsyncSession, case_id: int) -> int:
    """Files of one case."""
    return int(await session.scalar(select(func.count(Attachment.id)).where(Attachment.case_id == case_id)) or 0)

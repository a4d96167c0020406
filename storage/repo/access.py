"""Coordinator access: login links, browser sessions, the audit log and channel claim codes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import (
    AuditEntry,
    ClaimCode,
    LoginLink,
    WebSession,
)


async def add_login_link(*, session: AsyncSession, digest: str, coordinator: str, name: str, now: dt.datetime,
                         expires_at: dt.datetime) -> None:
    """Store a login link (its digest only)."""
    session.add(LoginLink(token_digest=digest, coordinator=coordinator, name=name, created_at=now,
                          expires_at=expires_at))
    await session.flush()


async def get_login_link(*, session: AsyncSession, digest: str) -> LoginLink | None:
    """A login link by the digest of its token."""
    return await session.get(LoginLink, digest)


async def use_login_link(*, session: AsyncSession, digest: str, now: dt.datetime) -> bool:
    """Spend a login link: True once, for an unused and unexpired link (conditional UPDATE)."""
    result = await session.execute(
        update(LoginLink).where(LoginLink.token_digest == digest, LoginLink.used_at.is_(None),
                                LoginLink.expires_at > now)
        .values(used_at=now).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def create_web_session(*, session: AsyncSession, digest: str, coordinator: str, name: str, csrf_token: str,
                             language: str, now: dt.datetime, expires_at: dt.datetime) -> WebSession:
    """Start a coordinator's browser session."""
    web_session = WebSession(token_digest=digest, coordinator=coordinator, name=name, csrf_token=csrf_token,
                             language=language, created_at=now, last_seen_at=now, checked_at=now,
                             expires_at=expires_at)
    session.add(web_session)
    await session.flush()
    return web_session


async def get_web_session(*, session: AsyncSession, digest: str) -> WebSession | None:
    """A browser session by the digest of its cookie."""
    return await session.get(WebSession, digest)


async def touch_web_session(*, session: AsyncSession, digest: str, now: dt.datetime,
                            language: str | None = None) -> None:
    """Record activity on a session (it stays alive while used)."""
    values: dict[str, Any] = {"last_seen_at": now}
    if language:
        values["language"] = language
    await session.execute(update(WebSession).where(WebSession.token_digest == digest).values(**values)
                          .execution_options(synchronize_session=False))


async def mark_web_session_checked(*, session: AsyncSession, digest: str, now: dt.datetime) -> None:
    """The platform confirmed again that the session's owner is a coordinator."""
    await session.execute(update(WebSession).where(WebSession.token_digest == digest).values(checked_at=now)
                          .execution_options(synchronize_session=False))


async def end_web_session(*, session: AsyncSession, digest: str, now: dt.datetime) -> None:
    """Log out: the session cannot be used again, whatever the browser still holds."""
    await session.execute(update(WebSession).where(WebSession.token_digest == digest, WebSession.ended_at.is_(None))
                          .values(ended_at=now).execution_options(synchronize_session=False))


async def prune_logins(*, session: AsyncSession, before: dt.datetime) -> int:
    """Forget login links and browser sessions that ended (or expired) before `before`."""
    links = await session.execute(delete(LoginLink).where(LoginLink.expires_at < before))
    sessions = await session.execute(delete(WebSession).where(WebSession.expires_at < before))
    return (links.rowcount or 0) + (sessions.rowcount or 0)


async def add_audit(*, session: AsyncSession, actor: str, action: str, now: dt.datetime,
                    case_reference: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """Write an audit entry: who did what to which case, when (never the case's content)."""
    session.add(AuditEntry(at=now, actor=actor, action=action, case_reference=case_reference, detail=detail or {}))
    await session.flush()


async def list_audit(*, session: AsyncSession, case_reference: str | None = None, limit: int = 200
                     ) -> list[AuditEntry]:
    """The newest audit entries, optionally of one case."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if case_reference:
        query = query.where(AuditEntry.case_reference == case_reference)
    return list(await session.scalars(query))


async def add_claim_code(*, session: AsyncSession, platform: str, digest: str, now: dt.datetime,
                         expires_at: dt.datetime) -> None:
    """Store a claim code (its digest only)."""
    session.add(ClaimCode(code_digest=digest, platform=platform, created_at=now, expires_at=expires_at))
    await session.flush()


async def use_claim_code(*, session: AsyncSession, platform: str, digest: str, now: dt.datetime) -> bool:
    """Spend a claim code: True once, for an unused, unexpired code of `platform` (conditional UPDATE)."""
    result = await session.execute(
        update(ClaimCode).where(ClaimCode.code_digest == digest, ClaimCode.platform == platform,
                                ClaimCode.used_at.is_(None), ClaimCode.expires_at > now)
        .values(used_at=now).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def prune_claim_codes(*, session: AsyncSession, before: dt.datetime) -> int:
    """Forget claim codes that expired before `before`."""
    result = await session.execute(delete(ClaimCode).where(ClaimCode.expires_at < before))
    return result.rowcount or 0

"""Removing a case for good (retention purge, erasure on request), leaving a de-identified fact."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from ..db import vault_of
from .facts import detach_fact
from ..models import (
    Attachment,
    AuditEntry,
    Case,
    CaseEvent,
    CaseThread,
    Conversation,
    OutboxMessage,
    Reporter,
    Timer,
)


async def purge_case(*, session: AsyncSession, case: Case, outcome: str, now: dt.datetime) -> None:
    """Delete a case with everything that belongs to it (files, timeline, threads, timers, queued
    messages, its audit entries, its data key, and the reporter row when no other case has it) and
    keep its de-identified fact. The caller writes the audit entry of the purge itself."""
    await detach_fact(session=session, case=case, outcome=outcome, now=now)
    for model in (Attachment, CaseEvent, CaseThread, Timer, OutboxMessage):
        await session.execute(delete(model).where(model.case_id == case.id))
    await session.execute(delete(AuditEntry).where(AuditEntry.case_reference == case.reference))
    await _forget_in_conversation(session, case)
    reporter_id = case.reporter_id
    await session.execute(delete(Case).where(Case.id == case.id))
    if reporter_id is not None:
        others = await session.scalar(select(func.count(Case.id)).where(Case.reporter_id == reporter_id))
        if not others:
            await session.execute(delete(Reporter).where(Reporter.id == reporter_id))
    vault_of(session).forget(case.wrapped_key)
    session.expunge(case) if case in session else None


def _conversation_id(session: AsyncSession, case: Case) -> int | None:
    """The reporter's conversation; of an anonymous case only with the anonymous key (bot side)."""
    vault = vault_of(session)
    if case.conversation_id is None and case.contact is not None and vault.has_anonymous:
        return vault.open_json("anonymous", case.contact, "contact").get("conversation_id")
    return case.conversation_id


async def _forget_in_conversation(session: AsyncSession, case: Case) -> None:
    """The reporter's dialogue state names the case (last report, pending relay, submitted forms):
    those mentions go with it (an anonymous case's only where the anonymous key is at hand)."""
    conversation_id = _conversation_id(session, case)
    conversation = await session.get(Conversation, conversation_id) if conversation_id else None
    if conversation is None:
        return
    state = dict(conversation.state or {})
    changed = False
    for name, paired in (("last_reference", "last_submitted_at"), ("relay_reference", "relay_until")):
        if state.get(name) == case.reference:
            state[name] = state[paired] = None
            changed = True
    forms = state.get("submitted_forms")
    if isinstance(forms, dict) and case.reference in forms.values():
        state["submitted_forms"] = {form: ref for form, ref in forms.items() if ref != case.reference}
        changed = True
    if changed:
        conversation.state = state


# -- what is due ----------------------------------------------------------------------------------------

#: The retention rules a purge is due under (`[privacy]` in the configuration).
CLOSED, WITHDRAWN = "closed", "withdrawn"


@dataclass(frozen=True)
class RetentionRules:
    """How long cases are kept: closed cases `closed_years` calendar years after closing, withdrawn
    reports `withdrawn_days` days after withdrawal; the case thread hears `notice_days` before."""

    closed_years: int = 5
    withdrawn_days: int = 7
    notice_days: int = 14
    idle_conversation_days: int = 365

    def describe(self, rule: str) -> str:
        """The rule as the configuration names it, e.g. `closed_years=5` (for the audit and the CLI)."""
        return f"closed_years={self.closed_years}" if rule == CLOSED else f"withdrawn_days={self.withdrawn_days}"

    def due(self, case: Case) -> tuple[str, dt.datetime] | None:
        """The rule that removes `case` first and when (None: no rule applies yet). A legal hold is
        not considered here: the queries below leave held cases out."""
        moments = []
        if case.withdrawn_at is not None:
            moments.append((case.withdrawn_at + dt.timedelta(days=self.withdrawn_days), WITHDRAWN))
        if case.status == "closed" and case.closed_at is not None:
            moments.append((add_years(case.closed_at, self.closed_years), CLOSED))
        if not moments:
            return None
        moment, rule = min(moments)
        return rule, moment


def add_years(moment: dt.datetime, years: int) -> dt.datetime:
    """The same moment `years` calendar years later (29 February becomes 1 March: never early)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, month=3, day=1)


@dataclass(frozen=True)
class DuePurge:
    """A case whose retention is over (or soon will be), the rule, and the moment it ends."""

    case: Case
    rule: str
    due_at: dt.datetime


async def _candidates(session: AsyncSession, rules: RetentionRules, before: dt.datetime) -> list[DuePurge]:
    """Cases not under legal hold whose retention ends at or before `before`, earliest first.

    The SQL is a coarse filter (N calendar years are at least N*365 days); `rules.due` decides."""
    closed_by = before - dt.timedelta(days=365 * rules.closed_years)
    withdrawn_by = before - dt.timedelta(days=rules.withdrawn_days)
    query = select(Case).where(
        Case.legal_hold_since.is_(None),
        or_(and_(Case.status == "closed", Case.closed_at <= closed_by), Case.withdrawn_at <= withdrawn_by),
    ).order_by(Case.id)
    found = []
    for case in await session.scalars(query):
        due = rules.due(case)
        if due is not None and due[1] <= before:
            found.append(DuePurge(case=case, rule=due[0], due_at=due[1]))
    return sorted(found, key=lambda item: (item.due_at, item.case.id))


async def list_due_purges(*, session: AsyncSession, now: dt.datetime, rules: RetentionRules) -> list[DuePurge]:
    """Cases to purge now: retention over, not under legal hold."""
    return await _candidates(session, rules, now)


async def list_due_notices(*, session: AsyncSession, now: dt.datetime, rules: RetentionRules) -> list[DuePurge]:
    """Cases whose thread is to hear now that they will be purged: retention ends within
    `notice_days` (but has not ended), no legal hold, and no notice since that window opened (a case
    reopened and closed again, or a changed rule, gets a new one)."""
    window = dt.timedelta(days=rules.notice_days)
    return [item for item in await _candidates(session, rules, now + window)
            if item.due_at > now and (item.case.purge_notice_at is None
                                      or item.case.purge_notice_at < item.due_at - window)]


async def mark_purge_notice(*, session: AsyncSession, case: Case, now: dt.datetime) -> None:
    """Record that the case thread was told about the purge."""
    await session.execute(update(Case).where(Case.id == case.id).values(purge_notice_at=now)
                          .execution_options(synchronize_session=False))
    set_committed_value(case, "purge_notice_at", now)


async def lock_for_purge(*, session: AsyncSession, case: Case) -> Case | None:
    """Lock a case before purging it (its reporter's conversation first, in the order a turn takes
    them) and reload it; None when it is gone already (another purge got there first)."""
    conversation_id = _conversation_id(session, case)
    if conversation_id is not None:
        await session.get(Conversation, conversation_id, with_for_update=True)
    return await session.get(Case, case.id, with_for_update=True, populate_existing=True)


# -- what no case holds any more ------------------------------------------------------------------------


@dataclass(frozen=True)
class Leftovers:
    """What a sweep removed: audit entries about no (remaining) case, and idle conversations without
    a case (None: not swept, the vault lacks the anonymous key that tells which are still in use)."""

    audit_entries: int
    conversations: int | None


async def sweep_leftovers(*, session: AsyncSession, now: dt.datetime, rules: RetentionRules) -> Leftovers:
    """Remove what outlives every case: audit entries with no case left (logins, exports, the purge
    and erasure entries) `closed_years` after they were written, and conversations no case or
    reporter points to and idle for `idle_conversation_days` (with their unlinked draft files).
    A case's own audit entries go with the case (`purge_case`)."""
    live = select(Case.reference)
    audit = await session.execute(delete(AuditEntry).where(
        AuditEntry.at < add_years(now, -rules.closed_years),
        or_(AuditEntry.case_reference.is_(None), AuditEntry.case_reference.not_in(live)),
    ).execution_options(synchronize_session=False))
    vault = vault_of(session)
    if not vault.has_anonymous:
        return Leftovers(audit_entries=audit.rowcount or 0, conversations=None)
    # An anonymous case names its conversation only inside its sealed contact.
    in_use = {row for row in await session.scalars(select(Case.conversation_id).where(Case.conversation_id.is_not(None)))}
    in_use |= {row for row in await session.scalars(
        select(Reporter.conversation_id).where(Reporter.conversation_id.is_not(None)))}
    for contact in await session.scalars(select(Case.contact).where(Case.contact.is_not(None))):
        in_use.add(vault.open_json("anonymous", contact, "contact").get("conversation_id"))
    idle = select(Conversation.id).where(
        Conversation.updated_at < now - dt.timedelta(days=rules.idle_conversation_days),
        # A draft a year old has expired (its timer may not have fired yet in this run).
        or_(Conversation.draft_expires_at.is_(None), Conversation.draft_expires_at < now))
    gone = [conversation_id for conversation_id in await session.scalars(idle) if conversation_id not in in_use]
    for start in range(0, len(gone), 500):
        batch = gone[start:start + 500]
        await session.execute(delete(Attachment).where(Attachment.conversation_id.in_(batch),
                                                       Attachment.case_id.is_(None)))
        await session.execute(delete(Conversation).where(Conversation.id.in_(batch))
                              .execution_options(synchronize_session=False))
    return Leftovers(audit_entries=audit.rowcount or 0, conversations=len(gone))

"""Limits: the per-sender rate limiter, the file and report quotas, and how long a turn may take."""

from __future__ import annotations

import collections
import datetime as dt
import logging
import time
from typing import Callable

from sqlalchemy.ext.asyncio import AsyncSession

import dialogs
from dialogs import State
from storage import repo

from bot.adapters.contract import InboundAttachment, InboundMessage
from bot.config import LimitsSettings

log = logging.getLogger(__name__)

#: Longest wait for a platform to say whether someone is a coordinator (Teams asks its service).
COORDINATOR_CHECK_TIMEOUT_S = 5.0
#: Longest time one turn may wait for the database before the user hears "not saved".
TURN_TIMEOUT_S = 10.0


class Throttle:
    """At most `per_minute` messages per sender in any 60 seconds (a sliding window, per process).

    `admit` answers True (go on), None (over the limit: answer once "slow down") or False (over
    the limit and already told: stay silent until the window has room again)."""

    WINDOW_S = 60.0
    #: Senders remembered at most; the oldest quiet ones are forgotten first.
    MAX_SENDERS = 50_000

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[tuple[str, str], collections.deque] = {}
        self._told: dict[tuple[str, str], float] = {}

    def admit(self, sender: tuple[str, str]) -> bool | None:
        now = self.clock()
        seen = self._seen.get(sender)
        if seen is None:
            if len(self._seen) >= self.MAX_SENDERS:
                self._forget(now)
            seen = self._seen[sender] = collections.deque()
        while seen and now - seen[0] >= self.WINDOW_S:
            seen.popleft()
        if len(seen) < self.per_minute:
            seen.append(now)
            self._told.pop(sender, None)
            return True
        if sender in self._told:
            return False
        self._told[sender] = now
        return None

    def _forget(self, now: float) -> None:
        for key in [k for k, q in self._seen.items() if not q or now - q[-1] >= self.WINDOW_S]:
            self._seen.pop(key, None)
            self._told.pop(key, None)
        while len(self._seen) >= self.MAX_SENDERS:
            key = next(iter(self._seen))
            self._seen.pop(key)
            self._told.pop(key, None)


class Quotas:
    """The `[limits]` on files and reports, checked inside a turn's transaction."""

    def __init__(self, limits: LimitsSettings, timezone: dt.tzinfo):
        self.limits = limits
        self.timezone = timezone

    async def within_file_quota(self, session: AsyncSession, message: InboundMessage, state: State,
                                files: list[InboundAttachment], now: dt.datetime
                                ) -> tuple[list[InboundAttachment], list[tuple[str, str, int]]]:
        """The files of this message that fit the `[limits]`, and for the others which limit (a name of
        `dialogs.followup.LIMITS`), their names and the limit. Checked before the dialogue sees the files, so it never
        confirms a file that is not kept."""
        if not files:
            return files, []
        limits = self.limits
        refused: list[tuple[str, str, int]] = []

        def refuse(name: str, dropped: list[InboundAttachment], limit: int) -> None:
            if dropped:
                refused.append((name, ", ".join(f.filename for f in dropped), limit))

        kept = files[:limits.files_per_message]
        refuse("files_per_message", files[limits.files_per_message:], limits.files_per_message)
        evidence_for = dialogs.late_evidence_case(state, now)
        if evidence_for:
            case = await repo.get_case(session=session, reference=evidence_for)
            in_report = await repo.count_case_files(session=session, case_id=case.id) if case else 0
        else:
            in_report = len(state.draft.attachments) if state.draft and state.step != "idle" else 0
        room = max(0, limits.files_per_report - in_report)
        refuse("files_per_report", kept[room:], limits.files_per_report)
        kept = kept[:room]
        day = now.astimezone(self.timezone).date().isoformat()
        count, size = await repo.get_file_usage(session=session, platform=message.platform, sender=message.sender,
                                                day=day)
        budget = limits.megabytes_per_day * 1024 * 1024
        accepted, by_count, by_size = [], [], []
        for f in kept:
            if count >= limits.files_per_day:
                by_count.append(f)
            elif size + len(f.content) > budget:
                by_size.append(f)
            else:
                accepted.append(f)
                count += 1
                size += len(f.content)
        refuse("files_per_day", by_count, limits.files_per_day)
        refuse("megabytes_per_day", by_size, limits.megabytes_per_day)
        if accepted:
            await repo.add_file_usage(session=session, platform=message.platform, sender=message.sender, day=day,
                                      files=len(accepted), size=sum(len(f.content) for f in accepted))
        if refused:
            log.warning("files refused: over a file limit platform=%s event=%s count=%d", message.platform,
                        message.event_id, len(files) - len(accepted))
        return accepted, refused

    async def over_report_quota(self, session: AsyncSession, message: InboundMessage, now: dt.datetime) -> bool:
        """Whether this person already sent `[limits] reports_per_day` reports in the last 24 hours."""
        recent = await repo.count_recent_reports(session=session, platform=message.platform,
                                                 platform_user_id=message.sender,
                                                 since=now - dt.timedelta(days=1))
        return recent >= self.limits.reports_per_day

"""The reporter's rights in their own chat: what is stored about them (`mijn gegevens` / `my data`)
and the answer to withdrawing a report (`intrekken MB-...` / `withdraw MB-...`).

The engine gathers the data (decrypted, only the sender's own); these functions only word it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from babel.dates import format_datetime

from .i18n import Translator
from .model import Reply

#: The newest reports shown in the chat; older ones are counted (a full copy comes on request).
MAX_CASES_SHOWN = 10
#: The latest messages shown per report.
MAX_MESSAGES_SHOWN = 20
#: A story longer than this is cut in the chat (it is kept whole).
MAX_STORY_SHOWN = 1500


@dataclass(frozen=True)
class StoredMessage:
    """One message exchanged about a report: from the coordinator or from the reporter."""

    at: dt.datetime
    by_reporter: bool
    text: str
    name: str = ""


@dataclass(frozen=True)
class StoredReport:
    """One of the sender's reports as stored."""

    reference: str
    created_at: dt.datetime
    status: str
    kinds: tuple[str, ...] = ()
    place: str | None = None
    story: str = ""
    anonymous: bool = False
    withdrawn_at: dt.datetime | None = None
    files: int = 0
    messages: tuple[StoredMessage, ...] = ()


@dataclass(frozen=True)
class StoredData:
    """Everything stored about one sender, as the engine found it."""

    #: The name and chat address in the reporter record (None: no report in their name).
    name: str | None = None
    address: str | None = None
    platform: str = ""
    reports: tuple[StoredReport, ...] = ()
    #: An unfinished report is kept in the conversation.
    draft: bool = False
    #: The display name of the department remembered in the conversation (None: none).
    department: str | None = None
    closed_years: int = 5
    withdrawn_days: int = 7


def _when(moment: dt.datetime, language: str, zone: dt.tzinfo | None) -> str:
    local = moment.astimezone(zone) if zone is not None and moment.tzinfo is not None else moment
    return format_datetime(local, "d MMM y HH:mm", locale=language)


def my_data(language: str, data: StoredData, zone: dt.tzinfo | None = None) -> tuple[Reply, ...]:
    """The answer to `mijn gegevens`: who we know them as, then one message per report (newest
    first, at most MAX_CASES_SHOWN), then how to withdraw and how to get a full copy."""
    t = Translator(language)
    intro = [t("my_data.intro", closed_years=data.closed_years, withdrawn_days=data.withdrawn_days)]
    if data.name is not None or data.address is not None:
        intro.append(t("my_data.person", name=data.name or "—", address=data.address or "—",
                       platform=data.platform))
    else:
        intro.append(t("my_data.no_person"))
    if data.draft:
        intro.append(t("my_data.draft"))
    if data.department:
        intro.append(t("my_data.department", name=data.department))
    if not data.reports:
        intro.append(t("my_data.no_reports"))
    replies = [Reply("\n\n".join(intro), title=t("my_data.title"))]
    for report in data.reports[:MAX_CASES_SHOWN]:
        replies.append(_report_reply(t, language, report, zone))
    closing = [t("my_data.withdraw_hint")] if any(r.withdrawn_at is None for r in data.reports) else []
    if len(data.reports) > MAX_CASES_SHOWN:
        closing.append(t("my_data.more_reports", count=len(data.reports) - MAX_CASES_SHOWN))
    closing.append(t("my_data.full_copy"))
    replies.append(Reply("\n\n".join(closing)))
    return tuple(replies)


def _report_reply(t: Translator, language: str, report: StoredReport, zone: dt.tzinfo | None) -> Reply:
    status = t("status.withdrawn") if report.withdrawn_at is not None else t("status." + report.status)
    lines = [t("my_data.report_line", date=_when(report.created_at, language, zone), status=status)]
    if report.anonymous:
        lines.append(t("my_data.report_anonymous"))
    kinds = ", ".join(t(f"kind.{k}") for k in report.kinds) or "—"
    lines.append(t("my_data.report_kinds", kinds=kinds))
    if report.place:
        lines.append(t("my_data.report_place", place=t(f"place.{report.place}")))
    if report.files:
        lines.append(t("my_data.report_files", count=report.files))
    parts = ["\n".join(lines)]
    if report.story:
        story = report.story if len(report.story) <= MAX_STORY_SHOWN else report.story[:MAX_STORY_SHOWN] + " […]"
        parts.append(t("my_data.report_story", story=story))
    shown = report.messages[-MAX_MESSAGES_SHOWN:]
    if shown:
        left_out = len(report.messages) - len(shown)
        message_lines = [t("my_data.messages_earlier", count=left_out)] if left_out else []
        for message in shown:
            who = t("my_data.from_you") if message.by_reporter else (message.name or t("my_data.from_coordinator"))
            message_lines.append(f"{_when(message.at, language, zone)} {who}: {message.text}")
        parts.append(t("my_data.messages") + "\n" + "\n".join(message_lines))
    else:
        parts.append(t("my_data.no_messages"))
    return Reply("\n\n".join(parts), title=report.reference)


#: The outcomes of a withdrawal the reporter can be told.
WITHDRAW_OUTCOMES = ("withdrawn", "already", "not_found")


def withdraw_answer(language: str, outcome: str, reference: str, withdrawn_days: int = 7) -> Reply:
    """The answer to `intrekken MB-...`. `not_found` also answers a report of someone else: the
    answer never tells whether a reference exists."""
    if outcome not in WITHDRAW_OUTCOMES:
        raise ValueError(outcome)
    return Reply(Translator(language)(f"withdraw.{outcome}", reference=reference, days=withdrawn_days))


def relay_failed(language: str, reference: str) -> Reply:
    """The answer when a message for the coordinator of `reference` could not be passed on: the case
    no longer exists (erased on request or at the end of its retention period)."""
    return Reply(Translator(language)("relay.failed", reference=reference))

"""What coordinators see in their room or channel: built from the outbox payloads (`bot.core.payloads`).

Payloads hold codes (kinds, place, flags), never text the reporter wrote, so a notification can
only ever show the minimum: reference, categories, flags and the link to the case page.
"""

from __future__ import annotations

import datetime as dt

from babel.dates import format_datetime

from dialogs import Translator
from dialogs.categories import is_urgent

from bot.adapters.contract import Notification
from bot.core.payloads import CaseNotification, ThreadLine


def case_flags(*, kinds: list[str], contact: bool | None, aftercare: str | None, police_came: bool | None,
               police_report: bool | None, injury: bool, evidence: bool) -> list[str]:
    """Flag codes for a case, most pressing first."""
    flags = []
    if is_urgent(kinds):
        flags.append("urgent")
    if contact:
        flags.append("contact")
    if aftercare == "yes":
        flags.append("aftercare")
    elif aftercare == "later":
        flags.append("aftercare_later")
    if police_came:
        flags.append("police_came")
    if police_report:
        flags.append("police_report")
    if injury:
        flags.append("injury")
    if evidence:
        flags.append("evidence")
    return flags


def case_notification_payload(*, reference: str, kinds: list[str], occurred_at: dt.datetime, place: str | None,
                              flags: list[str], link: str) -> CaseNotification:
    """A coordinator notification (codes only)."""
    return CaseNotification(reference=reference, kinds=tuple(kinds), occurred_at=occurred_at, place=place,
                            flags=tuple(flags), link=link)


def payload_for_case(case, *, link: str, evidence: bool, extra_flags: tuple[str, ...] = ()) -> CaseNotification:
    """The notification of a stored case (what the reporter's answers flag, as codes)."""
    kinds = case.kind_codes
    flags = list(extra_flags) + case_flags(
        kinds=kinds, contact=case.contact_wanted, aftercare=case.aftercare, police_came=case.police_came,
        police_report=case.police_report_wanted, injury="injury" in ((case.answers or {}).get("consequences") or []),
        evidence=evidence)
    return case_notification_payload(reference=case.reference, kinds=kinds, occurred_at=case.occurred_at,
                                     place=case.place, flags=flags, link=link)


def render_case_notification(notification: CaseNotification, language: str, tz: dt.tzinfo | None) -> Notification:
    """A notification in the organisation's language."""
    t = Translator(language)
    occurred = notification.occurred_at
    if tz is not None:
        occurred = occurred.astimezone(tz)
    flags = notification.flags
    title = t("notify.new_case", reference=notification.reference)
    if "urgent" in flags:
        title = f"{t('flag.urgent')}: {title}"
    if "escalation" in flags:
        title = f"{t('flag.escalation')}: {title}"
    lines = [
        (t("notify.kinds"), ", ".join(t(f"kind.{k}") for k in notification.kinds) or "—"),
        (t("notify.when"), format_datetime(occurred, "d MMM y HH:mm", locale=t.language)),
        (t("notify.where"), t(f"place.{notification.place}") if notification.place else "—"),
    ]
    other_flags = [t(f"flag.{f}") for f in flags if f not in ("urgent", "escalation")]
    if other_flags:
        lines.append((t("notify.flags"), ", ".join(other_flags)))
    return Notification(
        reference=notification.reference, title=title, lines=tuple(lines), link=notification.link,
        link_label=t("notify.open"), urgent="urgent" in flags,
    )


def render_thread_event(line: ThreadLine, language: str) -> str:
    """A later case event as one line for the case thread."""
    return Translator(language)(f"event.{line.event}", **line.values())

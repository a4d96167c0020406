"""The texts of a case's later life, and the notices around a turn: what a reporter (or a coordinator
in their own chat) receives outside the report conversation itself. Pure: the engine, the case work
and the timers only decide WHEN to send them.
"""

from __future__ import annotations

import datetime as dt

from babel.dates import format_date

from .i18n import Translator
from .model import Reply

__all__ = [
    "LIMITS", "LOGIN_NOTICES", "aftercare_checkin", "aftercare_reoffer", "case_closed", "case_error",
    "draft_expired", "draft_reminder", "escalation_to_person", "files_too_large", "limit_notice", "login_link",
    "login_notice", "status_changed", "step_recorded",
]

#: The limits a notice can name, and their catalog keys.
LIMITS = {
    "slow_down": "limits.slow_down",
    "reports_per_day": "limits.reports_per_day",
    "files_per_message": "limits.files_per_message",
    "files_per_report": "limits.files_per_report",
    "files_per_day": "limits.files_per_day",
    "megabytes_per_day": "limits.megabytes_per_day",
}
#: What `login` can answer besides the link itself, and the catalog keys.
LOGIN_NOTICES = {
    "check_failed": "login.check_failed",
    "not_coordinator": "login.not_coordinator",
    "need_direct_chat": "login.need_direct_chat",
    "sent_to_direct_chat": "login.sent_to_direct_chat",
}


# -- case follow-up, to the reporter ---------------------------------------------------------------

def case_closed(language: str, reference: str, summary: str) -> Reply:
    """The case was closed: the coordinator's closing summary, which the reporter may answer."""
    t = Translator(language)
    return Reply(summary, title=t("case.closed_reporter_title", reference=reference),
                 hint=t("case.closed_reporter_hint"))


def status_changed(language: str, reference: str, status: str) -> Reply:
    """The case moved to `status` (`new` or `in_progress`; closing is `case_closed`)."""
    return Reply(Translator(language)(f"case.status_reporter_{status}", reference=reference))


def step_recorded(language: str, reference: str, step: str, day: dt.date) -> Reply:
    """A follow-up step was recorded (contact made, aftercare offered, police report filed...) on `day`."""
    return Reply(Translator(language)(f"case.step_reporter_{step}", reference=reference,
                                      date=format_date(day, "d MMMM y", locale=language)))


def aftercare_checkin(language: str, reference: str) -> Reply:
    """A while after the report: how are you, and is aftercare wanted (the answer reaches the case)."""
    return _aftercare(language, reference, "timer.aftercare_checkin")


def aftercare_reoffer(language: str, reference: str) -> Reply:
    """Some time after aftercare was declined: it is offered once more."""
    return _aftercare(language, reference, "timer.aftercare_reoffer")


def _aftercare(language: str, reference: str, key: str) -> Reply:
    t = Translator(language)
    return Reply(t(key, reference=reference), title=t("timer.aftercare_title"), hint=t("coord.message_hint"))


# -- unfinished reports --------------------------------------------------------------------------------

def draft_reminder(language: str) -> Reply:
    """An unfinished report was left quiet for a while."""
    t = Translator(language)
    return Reply(t("timer.draft_reminder"), hint=t("timer.draft_hint"))


def draft_expired(language: str, days: int) -> Reply:
    """An unfinished report was discarded after `days` days."""
    return Reply(Translator(language)("timer.draft_expired", days=days))


# -- coordinators in their own chat -----------------------------------------------------------------

def escalation_to_person(language: str, reference: str, link: str) -> Reply:
    """To the backup person: a case was not taken in time."""
    t = Translator(language)
    return Reply(t("timer.escalation_person", reference=reference, link=link), title=t("timer.escalation_title"))


def login_link(language: str, link: str, minutes: int) -> Reply:
    """The message holding a single-use login link (a secret: its stored copy is emptied once sent)."""
    t = Translator(language)
    return Reply(t("login.link", link=link, minutes=minutes), title=t("login.title"), secret=True)


def login_notice(language: str, outcome: str) -> Reply:
    """What `login` answers when no link is shown here: one of `LOGIN_NOTICES`."""
    return Reply(Translator(language)(LOGIN_NOTICES[outcome]))


def case_error(language: str, code: str, /, **values: object) -> Reply:
    """A case action that could not be done (`case.error_<code>`)."""
    return Reply(Translator(language)(f"case.error_{code}", **values))


# -- limits -------------------------------------------------------------------------------------------

def limit_notice(language: str, which: str, /, **values: object) -> Reply:
    """A message or file not taken because of a limit: `which` is one of `LIMITS`; the values are
    the placeholders (`limit`, and for files `files`, their names)."""
    return Reply(Translator(language)(LIMITS[which], **values))


def files_too_large(language: str, files: str) -> Reply:
    """Files larger than can be kept (`files`: their names)."""
    return Reply(Translator(language)("evidence.too_large", files=files))

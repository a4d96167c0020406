"""The report conversation: pure functions and plain values, no I/O (see ARCHITECTURE.md).

`flow.step` runs one turn over a `turn.TurnContext`: `commands`, `questions`, `answers`, `summary`,
`form` and `evidence` handle its parts; `followup` builds every later message to a reporter;
`categories`, `when`, `text` and the catalogs (`locale/`) are the vocabulary."""

from importlib import resources

from .coordinator import CoordinatorCommand, parse_coordinator_command
from .followup import (
    aftercare_checkin,
    aftercare_reoffer,
    case_closed,
    case_error,
    draft_expired,
    draft_reminder,
    escalation_to_person,
    files_too_large,
    limit_notice,
    login_link,
    login_notice,
    status_changed,
    step_recorded,
)
from .flow import discard_draft, late_evidence_case, my_reports, not_saved, open_relay, record_submission, step, submitted
from .i18n import LANGUAGES, Translator, translator
from .model import (
    AddEvidence,
    AttachmentInfo,
    Context,
    DiscardDraft,
    Draft,
    ListMyReports,
    Option,
    RelayToCoordinator,
    Reply,
    ShowMyData,
    State,
    SubmitReport,
    Turn,
    UserInput,
    WithdrawReport,
)
from .rights import StoredData, StoredMessage, StoredReport, my_data, relay_failed, withdraw_answer


def builtin_text(name: str, language: str) -> str:
    """A shipped Markdown text (`house_rules`, `norm_card`) in `language`."""
    return resources.files("dialogs").joinpath("content", f"{name}.{language}.md").read_text("utf-8")


__all__ = [
    "discard_draft", "late_evidence_case",
    "AddEvidence", "AttachmentInfo", "Context", "CoordinatorCommand", "RelayToCoordinator", "DiscardDraft", "Draft", "LANGUAGES", "ListMyReports",
    "Option", "Reply", "State", "SubmitReport", "Translator", "Turn", "UserInput", "builtin_text",
    "my_reports", "not_saved", "open_relay", "parse_coordinator_command", "record_submission", "step", "submitted", "translator",
    # follow-up texts (dialogs/followup.py)
    "aftercare_checkin", "aftercare_reoffer", "case_closed", "case_error", "draft_expired", "draft_reminder",
    "escalation_to_person", "files_too_large", "limit_notice", "login_link", "login_notice", "status_changed",
    "step_recorded",
    # the reporter's rights (dialogs/rights.py)
    "ShowMyData", "StoredData", "StoredMessage", "StoredReport", "WithdrawReport", "my_data", "relay_failed", "withdraw_answer",
]

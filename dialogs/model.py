"""Plain values exchanged with the dialogue: input, state, replies and effects."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Option:
    """One numbered choice in a reply; `selected` marks a pre-selection."""

    number: int
    label: str
    selected: bool = False


@dataclass(frozen=True)
class Reply:
    """A neutral message to the user. Adapters render it (plain text, HTML, card).

    `text` is the body (paragraphs separated by blank lines), `options` a numbered list shown
    after it, `hint` a short line on how to answer.
    """

    text: str
    options: tuple[Option, ...] = ()
    hint: str = ""
    title: str = ""
    #: Holds a secret (a login link): whatever stores it for later delivery forgets it once sent.
    secret: bool = False
    #: The case this reply confirms was saved (a platform may show it on a card).
    reference: str | None = None
    #: The reply starts a report: a platform with forms may offer the whole report as one form.
    offer_form: bool = False
    #: What the form starts with (`story`, `kinds` and `place` codes read from a story typed first), and
    #: when the organisation has departments: `departments` (the choices, [code, name] pairs in order) and
    #: `department` (the reporter's remembered code, or None).
    form_values: dict[str, Any] | None = None
    #: The options are boxes to tick (shown as boxes even when none is ticked yet).
    checklist: bool = False

    def plain(self) -> str:
        """The reply as plain text, as a console or a `body` fallback shows it."""
        lines = []
        if self.title:
            lines.append(self.title)
        if self.text:
            lines.append(self.text)
        if self.options:
            marks = self.checklist or any(option.selected for option in self.options)
            option_lines = []
            for option in self.options:
                mark = ("[x] " if option.selected else "[ ] ") if marks else ""
                option_lines.append(f"  {mark}{option.number}. {option.label}")
            lines.append("\n".join(option_lines))
        if self.hint:
            lines.append(self.hint)
        return "\n\n".join(lines)


@dataclass(frozen=True)
class AttachmentInfo:
    """What the dialogue knows of a received file (the bytes stay with the engine)."""

    name: str
    media_type: str
    size: int


@dataclass(frozen=True)
class UserInput:
    """One inbound message: text (may be empty), attachments and the time it arrived (aware)."""

    text: str
    now: dt.datetime
    attachments: tuple[AttachmentInfo, ...] = ()
    #: The values of a submitted report form (a Teams Adaptive Card), instead of text.
    form: dict[str, Any] | None = None


@dataclass(frozen=True)
class Context:
    """Organisation settings the dialogue needs; texts are per language (`nl`, `en`)."""

    organisation: str = "je organisatie"
    default_language: str = "nl"
    timezone: dt.tzinfo | None = None
    house_rules: dict[str, str] = field(default_factory=dict)
    norm_card: dict[str, str] = field(default_factory=dict)
    aftercare: dict[str, str] = field(default_factory=dict)
    contact_promise: dict[str, str] = field(default_factory=dict)
    #: Retention, as the reporter is told it (`[privacy]`).
    closed_years: int = 5
    withdrawn_days: int = 7
    #: The words stories are read with: the built-in vocabulary extended with the organisation's own
    #: (`[organisation] vocabulary`, a `dialogs.understanding.Vocabulary`); None: the built-in one.
    vocabulary: Any = None
    #: The organisation's departments (`[organisation] departments`): (code, display name) pairs in the
    #: configured order. Empty: the reporter is never asked for one.
    departments: tuple[tuple[str, str], ...] = ()


@dataclass
class Draft:
    """A report being written. `None` means "not answered"; an empty list means "none"."""

    draft_id: str
    story: str = ""
    kinds: list[str] | None = None
    kinds_suggested: bool = False
    occurred_at: str | None = None  # ISO 8601, aware
    occurred_just_now: bool = True
    occurred_text: str = ""
    place: str | None = None
    place_text: str = ""
    perpetrator: str | None = None
    perpetrator_text: str = ""
    consequences: list[str] | None = None
    contact: bool | None = None
    aftercare: str | None = None  # yes / later / no
    police_came: bool | None = None
    police_report: bool | None = None
    #: The reporter's identity is not shown to the coordinator (messages still reach them).
    anonymous: bool = False
    attachments: list[dict[str, Any]] = field(default_factory=list)
    #: The reporter was reminded once of this unfinished report.
    reminded: bool = False
    #: The reporter's department (a code of `Context.departments`), copied from the conversation's
    #: remembered one; only for the statistics. None: not given.
    department: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict (which deep-copies everything): this runs every turn.
        data = {name: getattr(self, name) for name in _field_names(Draft)}
        for name in ("kinds", "consequences"):
            if data[name] is not None:
                data[name] = list(data[name])
        data["attachments"] = [dict(item) for item in self.attachments]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Draft":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@functools.cache
def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass
class State:
    """Everything the dialogue remembers of one conversation. JSON-serialisable via `to_dict`."""

    language: str = "nl"
    language_chosen: bool = False
    step: str = "idle"
    draft: Draft | None = None
    history: list[str] = field(default_factory=list)
    editing: bool = False
    before_cancel: str | None = None
    introduced: bool = False
    last_reference: str | None = None
    last_submitted_at: str | None = None
    #: A coordinator wrote about this case: the reporter's next free text goes to them.
    relay_reference: str | None = None
    relay_until: str | None = None
    #: A message during an open relay that reads like a new incident, kept until the reporter says
    #: whether it answers the coordinator or is a new report (it is never relayed unasked).
    pending_relay: str | None = None
    #: Forms already submitted (form ID -> reference): a second submit files nothing new.
    submitted_forms: dict[str, str] = field(default_factory=dict)
    #: The reporter's department (a code), remembered for every next report; None: not given.
    department: str | None = None
    #: The department was asked (answered, skipped or sent past): it is not asked again.
    department_asked: bool = False
    #: The step an `afdeling` command interrupted, asked again once the department is answered.
    department_return: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _field_names(State)}
        data["draft"] = self.draft.to_dict() if self.draft else None
        data["history"] = list(self.history)
        data["submitted_forms"] = dict(self.submitted_forms)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, default_language: str = "nl") -> "State":
        """Rebuild a state; unknown keys (from older or newer versions) are ignored."""
        if not data:
            return cls(language=default_language)
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if values.get("draft"):
            values["draft"] = Draft.from_dict(values["draft"])
        return cls(**values)


@dataclass(frozen=True)
class SubmitReport:
    """Save the draft as a case; the engine answers with `dialogs.submitted(...)`."""

    draft: Draft
    form_id: str | None = None


@dataclass(frozen=True)
class ListMyReports:
    """Show the status of the sender's own cases; the engine answers with `dialogs.my_reports(...)`."""


@dataclass(frozen=True)
class AddEvidence:
    """Attach the message's files to an already submitted case."""

    reference: str


@dataclass(frozen=True)
class RelayToCoordinator:
    """Pass the reporter's answer on to the coordinator's thread of a case."""

    reference: str
    text: str


@dataclass(frozen=True)
class DiscardDraft:
    """The reporter cancelled: delete what was stored for this draft (attachments)."""

    draft_id: str


@dataclass(frozen=True)
class ShowMyData:
    """Show the sender what is stored about them; the engine answers with `dialogs.my_data(...)`."""


@dataclass(frozen=True)
class WithdrawReport:
    """The sender withdraws their report `reference`; the engine answers with `dialogs.withdraw_answer(...)`."""

    reference: str


Effect = SubmitReport | ListMyReports | AddEvidence | DiscardDraft | RelayToCoordinator | ShowMyData | WithdrawReport


@dataclass(frozen=True)
class Turn:
    """The result of one step: replies to send, the new state, effects for the engine."""

    replies: tuple[Reply, ...]
    state: State
    effects: tuple[Effect, ...] = ()

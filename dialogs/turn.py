"""The working set of one turn (`TurnContext`) that every step module reads and writes.

Also the step names and `Answer`, the exception an answer parser raises when an answer does not fit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from .i18n import Translator
from .model import Context, Draft, Effect, Reply, State, Turn, UserInput

#: The steps that ask one question each (the summary and the cancel confirmation are not in it).
QUESTION_STEPS = ("story", "details", "kinds", "when", "where", "perpetrator", "consequences", "wishes",
                  "department")


class Answer(Exception):
    """Raised by an answer parser when the answer does not fit: carries the explanation key."""

    def __init__(self, key: str, **values: object):
        super().__init__(key)
        self.key = key
        self.values = values


class TurnContext:
    """One turn's working set: state (a private copy), input, context, replies and effects.

    Built per call and thrown away after it, so nothing is kept between turns.
    """

    def __init__(self, state: State, user_input: UserInput, context: Context):
        # Copy what the turn mutates, so the caller's state stays as it was (step() is pure).
        self.state = replace(state, history=list(state.history))
        if self.state.draft:
            self.state.draft = Draft.from_dict(self.state.draft.to_dict())
        self.input = user_input
        self.ctx = context
        self.now = user_input.now.astimezone(context.timezone) if context.timezone else user_input.now
        self.replies: list[Reply] = []
        self.effects: list[Effect] = []
        self.t = Translator(self.state.language)

    @property
    def draft(self) -> Draft:
        """The report in progress; only called where a draft must exist."""
        assert self.state.draft is not None
        return self.state.draft

    def say(self, key: str, **values: object) -> None:
        self.replies.append(Reply(self.t(key, **values)))

    def set_language(self, language: str) -> None:
        self.state.language = language
        self.t = Translator(language)

    def in_dialogue(self) -> bool:
        return self.state.step != "idle" and self.state.draft is not None

    def start_draft(self) -> None:
        draft_id = self.input.now.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S%f")
        self.state.draft = Draft(draft_id=draft_id, occurred_at=self.now.isoformat(),
                                 department=self.remembered_department())
        self.state.pending_relay = None  # a new report was chosen over answering the coordinator
        self.state.history = []
        self.state.editing = False
        self.state.department_return = None
        self.state.step = "story"

    def remembered_department(self) -> str | None:
        """The reporter's remembered department for a new report. One the organisation no longer
        has is forgotten (and so asked again); with no departments configured, none is used."""
        known = {code for code, _ in self.ctx.departments}
        if known and self.state.department is not None and self.state.department not in known:
            self.state.department, self.state.department_asked = None, False
        return self.state.department if self.state.department in known else None

    def end_draft(self) -> None:
        """Back to idle with nothing in progress (after sending or cancelling)."""
        self.state.draft = None
        self.state.step = "idle"
        self.state.history = []
        self.state.editing = False
        self.state.department_return = None

    def result(self) -> Turn:
        return Turn(tuple(self.replies), self.state, tuple(self.effects))

"""Test helpers shared by several test modules."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dialogs import AttachmentInfo, Context, State, Turn, UserInput, builtin_text, step

AMS = ZoneInfo("Europe/Amsterdam")
#: A Monday morning, so "gisteren" is a Sunday and "vanmiddag" is still to come.
NOW = dt.datetime(2026, 11, 23, 10, 15, tzinfo=AMS)

CONTEXT = Context(
    organisation="Gemeente Testdam",
    timezone=AMS,
    house_rules={"nl": builtin_text("house_rules", "nl"), "en": builtin_text("house_rules", "en")},
    norm_card={"nl": builtin_text("norm_card", "nl"), "en": builtin_text("norm_card", "en")},
)


class Chat:
    """Drives the pure dialogue like a person would, one message at a time."""

    def __init__(self, now: dt.datetime = NOW, context: Context = CONTEXT, state: State | None = None):
        self.now = now
        self.context = context
        self.state = state
        self.messages = 0
        self.turns: list[Turn] = []

    def send(self, text: str, files: tuple[AttachmentInfo, ...] = ()) -> Turn:
        turn = step(self.state, UserInput(text, self.now, files), self.context)
        # Every state must survive the database: a JSON round trip gives the same conversation.
        self.state = State.from_dict(_json_round_trip(turn.state.to_dict()))
        self.messages += 1
        self.turns.append(turn)
        return turn

    @property
    def last(self) -> Turn:
        return self.turns[-1]

    @property
    def said(self) -> str:
        """Everything the bot said in the last turn, as plain text."""
        return "\n\n".join(r.plain() for r in self.last.replies)

    @property
    def draft(self):
        assert self.state is not None and self.state.draft is not None
        return self.state.draft


def ticked(turn: Turn) -> list[int]:
    """The numbers ticked on the last tick list of a turn (the summary's wishes)."""
    (reply,) = [r for r in turn.replies if r.options][-1:]
    return [option.number for option in reply.options if option.selected]


def _json_round_trip(data):
    import json

    return json.loads(json.dumps(data))


def photo(name: str = "scherm.png", size: int = 2048) -> AttachmentInfo:
    return AttachmentInfo(name, "image/png", size)

#: The master key of the test databases (conftest's `db` fixture and tests that open their own engine).
TEST_MASTER_KEY = bytes(range(32))

"""The numbered summary shown before sending, and which step `wijzig N` / `change N` reopens."""

from __future__ import annotations

from . import labels
from . import text as tx
from .model import Reply
from .turn import TurnContext

#: Summary line number -> the step that changes it.
SUMMARY_LINES = {1: "story", 2: "kinds", 3: "when", 4: "where", 5: "perpetrator", 6: "consequences", 7: "wishes"}
#: Longer stories are cut on the summary so the numbered lines stay in view.
_STORY_PREVIEW = 280


def summary_reply(c: TurnContext) -> Reply:
    draft = c.draft
    t = c.t
    story = draft.story if len(draft.story) <= _STORY_PREVIEW else draft.story[:_STORY_PREVIEW - 3].rstrip() + "…"
    lines = [
        (1, t("summary.story"), f"“{story}”"),
        (2, t("summary.kinds"), labels.kind_labels(c, draft.kinds) if draft.kinds else t("summary.not_given")),
        (3, t("summary.when"), labels.when_label(c, assumed_mark=True)),
        (4, t("summary.where"), labels.place_label(c) or t("summary.not_given")),
        (5, t("summary.perpetrator"), labels.perpetrator_label(c) or t("summary.optional")),
        (6, t("summary.consequences"), labels.consequence_label(c) or t("summary.optional")),
        (7, t("summary.wishes"), labels.wish_label(c)),
    ]
    body = [t("summary.intro")]
    body.append("\n".join(f"{n}. {label}: {value}" for n, label, value in lines))
    if draft.attachments:
        body.append(t.plural("summary.evidence", "summary.evidence_plural", len(draft.attachments)))
    return Reply("\n\n".join(body), hint=t("hint.summary"), title=t("summary.title"))


def step_to_change(text: str) -> str | None:
    """The step a `wijzig N` answer reopens, or None when the text names no summary line."""
    return SUMMARY_LINES.get(tx.parse_change(text))

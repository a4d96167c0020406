"""Files the reporter sends: they join the report in progress, or the case sent shortly before."""

from __future__ import annotations

import datetime as dt

from .model import AddEvidence, AttachmentInfo, State
from .questions import ask
from .turn import TurnContext

#: Attachments sent this long after a submission (with no report in progress) join that case.
EVIDENCE_WINDOW = dt.timedelta(hours=24)


def take_attachments(c: TurnContext, files: tuple[AttachmentInfo, ...], has_text: bool) -> bool:
    """Take in files; returns True when the turn is complete (no text left to handle)."""
    names = ", ".join(f"{f.name} ({_size(f.size)})" for f in files)
    recent = recent_reference(c.state, c.input.now)
    if not c.in_dialogue() and recent and not has_text:
        c.effects.append(AddEvidence(recent))
        c.say("evidence.added_to_case", files=names, reference=recent)
        return True
    if not c.in_dialogue():
        c.start_draft()
        c.state.step = "story"
    c.draft.attachments.extend({"name": f.name, "media_type": f.media_type, "size": f.size} for f in files)
    c.say("evidence.received", files=names)
    if has_text:
        return False
    ask(c, c.state.step, repeat=True)
    return True


def recent_reference(state: State, now: dt.datetime) -> str | None:
    """The last report's reference while late evidence may still join it."""
    if not (state.last_reference and state.last_submitted_at):
        return None
    submitted_at = dt.datetime.fromisoformat(state.last_submitted_at)
    return state.last_reference if now - submitted_at <= EVIDENCE_WINDOW else None


def _size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size // 1024} kB"
    return f"{size} B"

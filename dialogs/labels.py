"""How draft fields read to the reporter: numbered option lists and the labels of the summary."""

from __future__ import annotations

import datetime as dt

from babel.dates import format_datetime

from .model import Option
from .turn import TurnContext


def options(c: TurnContext, prefix: str, codes: tuple[str, ...], selected=(), start: int = 1) -> tuple[Option, ...]:
    return tuple(Option(start + i, c.t(f"{prefix}.{code}"), code in selected) for i, code in enumerate(codes))


def wish_selection(c: TurnContext) -> set[str]:
    """The wish codes the draft holds now: the ticks on the summary (contact unless declined)."""
    draft = c.draft
    selected = set()
    if draft.contact is not False:
        selected.add("contact")
    if draft.aftercare == "yes":
        selected.add("aftercare_yes")
    if draft.aftercare == "later":
        selected.add("aftercare_later")
    if draft.police_report:
        selected.add("police_report")
    if draft.police_came:
        selected.add("police_came")
    if draft.anonymous:
        selected.add("anonymous")
    return selected


def kind_labels(c: TurnContext, kinds) -> str:
    return ", ".join(c.t(f"kind.{k}") for k in kinds or ())


def when_label(c: TurnContext, assumed_mark: bool = False) -> str:
    draft = c.draft
    at = dt.datetime.fromisoformat(draft.occurred_at) if draft.occurred_at else c.now
    stamp = format_datetime(at, "EEEE d MMMM, HH:mm", locale=c.state.language)
    if draft.occurred_just_now:
        label = c.t("when.just_now", time=stamp)
        if assumed_mark and not draft.occurred_text:
            label += " " + c.t("when.assumed")
        return label
    return stamp


def place_label(c: TurnContext) -> str:
    draft = c.draft
    if draft.place is None:
        return ""
    label = c.t(f"place.{draft.place}")
    return f"{label} ({draft.place_text})" if draft.place_text else label


def perpetrator_label(c: TurnContext) -> str:
    draft = c.draft
    parts = [c.t(f"perpetrator.{draft.perpetrator}")] if draft.perpetrator else []
    if draft.perpetrator_text:
        parts.append(f"“{draft.perpetrator_text}”")
    return " ".join(parts)


def consequence_label(c: TurnContext) -> str:
    draft = c.draft
    if draft.consequences is None:
        return ""
    if not draft.consequences:
        return c.t("consequence.none")
    return ", ".join(c.t(f"consequence.{code}") for code in draft.consequences)

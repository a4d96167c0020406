"""The typed outbox payloads: one frozen dataclass per kind of queued message.

The outbox stores plain JSON (`outbox.payload`); this module is the ONE place that turns a payload
into that dict (`to_payload()`) and back (`from_payload(kind, data)`). The stored form is exactly what
earlier versions wrote, so rows queued before an upgrade are still delivered:

- `case_notification`: `{"reference", "kinds", "occurred_at" (ISO 8601), "place", "flags", "link"}`
  (codes only, never text the reporter wrote);
- `case_thread`: `{"event", "reference"}` plus, only where the event has them, `"name"`, `"date"`
  (ISO date), `"count"`, `"text"`;
- `reporter_message`: `{"address", "replies": [{"text", "title", "hint", "options": [[n, label, selected]]}]}`
  plus `"secret": true` when it holds a secret (a login link; the row is scrubbed once delivered).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession

from dialogs import Option, Reply
from storage import repo

__all__ = [
    "CaseNotification", "OutboxPayload", "ReporterMessage", "ThreadLine", "UnknownPayloadKind", "address_of",
    "enqueue", "from_payload", "payload_of", "reply_of",
]


class UnknownPayloadKind(ValueError):
    """An outbox row of a kind this version does not know."""


def payload_of(reply: Reply) -> dict:
    """A reply in the form the outbox stores (plain values)."""
    return {"text": reply.text, "title": reply.title, "hint": reply.hint,
            "options": [[o.number, o.label, o.selected] for o in reply.options]}


def reply_of(data: dict) -> Reply:
    """The reply an outbox payload holds."""
    return Reply(text=data.get("text", ""), title=data.get("title", ""), hint=data.get("hint", ""),
                 options=tuple(Option(n, label, bool(sel)) for n, label, sel in data.get("options", [])))


def address_of(conversation) -> dict:
    """Where to reach the person of a conversation: the adapter's stored address, plus who they are
    (so that a platform can open a new direct chat when the old one is no longer private)."""
    return {"user": conversation.sender, **(conversation.address or {})}


@dataclass(frozen=True)
class CaseNotification:
    """A new case (or an escalation copy of it) for a coordinator room/channel."""

    KIND: ClassVar[str] = "case_notification"

    reference: str
    kinds: tuple[str, ...]
    occurred_at: dt.datetime
    place: str | None
    flags: tuple[str, ...]
    link: str

    @property
    def escalation(self) -> bool:
        """An escalation copy in a backup room: a pointer to the case, not the case's thread."""
        return "escalation" in self.flags

    def to_payload(self) -> dict[str, Any]:
        return {"reference": self.reference, "kinds": list(self.kinds), "occurred_at": self.occurred_at.isoformat(),
                "place": self.place, "flags": list(self.flags), "link": self.link}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> CaseNotification:
        return cls(reference=data["reference"], kinds=tuple(data.get("kinds") or ()),
                   occurred_at=dt.datetime.fromisoformat(data["occurred_at"]), place=data.get("place"),
                   flags=tuple(data.get("flags") or ()), link=data["link"])


@dataclass(frozen=True)
class ThreadLine:
    """A later event of a case, as one line in the case's thread (`event.<event>` in the catalogs)."""

    KIND: ClassVar[str] = "case_thread"
    #: The optional values, in their stored order; a value that is None is not stored.
    OPTIONAL: ClassVar[tuple[str, ...]] = ("name", "date", "count", "text")

    event: str
    reference: str
    name: str | None = None
    date: dt.date | None = None
    count: int | None = None
    text: str | None = None

    def values(self) -> dict[str, Any]:
        """The placeholders of the line's text (everything stored but the event code)."""
        values: dict[str, Any] = {"reference": self.reference}
        for key in self.OPTIONAL:
            value = getattr(self, key)
            if value is not None:
                values[key] = value.isoformat() if isinstance(value, dt.date) else value
        return values

    def to_payload(self) -> dict[str, Any]:
        return {"event": self.event, **self.values()}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ThreadLine:
        day = data.get("date")
        return cls(event=data["event"], reference=data["reference"], name=data.get("name"),
                   date=dt.date.fromisoformat(day) if day else None, count=data.get("count"),
                   text=data.get("text"))


@dataclass(frozen=True)
class ReporterMessage:
    """Replies for someone's own chat (a reporter, or a coordinator's direct chat).

    `secret`: the message holds a secret (a login link), so the stored copy is emptied once it is
    delivered; a reply marked `secret` makes the message secret too."""

    KIND: ClassVar[str] = "reporter_message"

    address: Mapping[str, Any]
    replies: tuple[Reply, ...] = field(default=())
    secret: bool = False

    @classmethod
    def to(cls, address: Mapping[str, Any], *replies: Reply) -> ReporterMessage:
        """A message of `replies` to `address`, secret when one of them is."""
        return cls(address=dict(address), replies=tuple(replies), secret=any(r.secret for r in replies))

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"address": dict(self.address), "replies": [payload_of(r) for r in self.replies]}
        if self.secret or any(r.secret for r in self.replies):
            payload["secret"] = True
        return payload

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ReporterMessage:
        return cls(address=dict(data.get("address") or {}),
                   replies=tuple(reply_of(r) for r in data.get("replies", [])), secret=bool(data.get("secret")))


OutboxPayload = CaseNotification | ThreadLine | ReporterMessage

_KINDS: dict[str, type] = {c.KIND: c for c in (CaseNotification, ThreadLine, ReporterMessage)}


def from_payload(kind: str, data: Mapping[str, Any]) -> OutboxPayload:
    """The typed payload of a stored outbox row; `UnknownPayloadKind` for a kind this version lacks."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise UnknownPayloadKind(kind)
    return cls.from_payload(data)


async def enqueue(session: AsyncSession, payload: OutboxPayload, *, platform: str, now: dt.datetime,
                  destination: str | None = None, case_id: int | None = None) -> repo.QueuedMessage:
    """Queue `payload` in the outbox, in the caller's transaction."""
    return await repo.enqueue_message(session=session, kind=payload.KIND, platform=platform,
                                      destination=destination, payload=payload.to_payload(), now=now,
                                      case_id=case_id)

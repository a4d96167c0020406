"""The typed outbox payloads: one frozen dataclass per kind of queued message.

The outbox stores plain JSON (`outbox.payload`); this module is the ONE place that turns a payload
into that dict (`to_payload()`) and back (`from_payload(kind, data)`). The stored form is exactly what
earlier versions wrote, so rows queued before an upgrade are still delivered:

- `case_notification`: `{"reference", "kinds", "occurred_at" (ISO 8601), "place", "flags", "link"}`
  (codes only, never text the reporter wrote);
- `case_thread`: `{"event", "reference"}` plus, only where the event has them, `"name"`, `"date"`
  (ISO date), `"count"`, `"text"`;
- `reporter_message`: `{"conversation": id}` or `{"case": id, "relay": bool}` (opaque references,
  resolved to the platform address when it is sent; earlier versions and adapters' own deferred replies: `{"address"}`) and
  `"replies": [{"text", "title", "hint", "options": [[n, label, selected]]}]`, plus `"secret": true`
  when it holds a secret (a login link);
- `room_message`: `{"replies": [...]}` as above: a message of Meldbot's own in the coordinator
  room/channel (a statistics signal: counts, codes and a link, never case content).

The whole payload is sealed in the database and emptied once delivered.
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
    "CaseNotification", "OutboxPayload", "ReporterMessage", "RoomMessage", "ThreadLine", "UnknownPayloadKind", "address_of",
    "enqueue", "from_payload", "payload_of", "reply_of",
]


class UnknownPayloadKind(ValueError):
    """An outbox row of a kind this version does not know."""


def payload_of(reply: Reply) -> dict:
    """A reply in the form the outbox stores (plain values)."""
    stored = {"text": reply.text, "title": reply.title, "hint": reply.hint,
              "options": [[o.number, o.label, o.selected] for o in reply.options]}
    if reply.checklist:  # only then: rows without it read as before
        stored["checklist"] = True
    return stored


def reply_of(data: dict) -> Reply:
    """The reply an outbox payload holds."""
    return Reply(text=data.get("text", ""), title=data.get("title", ""), hint=data.get("hint", ""),
                 options=tuple(Option(n, label, bool(sel)) for n, label, sel in data.get("options", [])),
                 checklist=bool(data.get("checklist", False)))


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
    #: The conversation (row ID) to send to, resolved to its address at send time.
    conversation: int | None = None
    #: Or: the reporter of this case (row ID), resolved at send time through the case's sealed
    #: contact (anonymous cases: only the sending worker holds that key) ...
    case: int | None = None
    #: ... and whether their answer is to come back to the case.
    relay: bool = False

    @classmethod
    def to(cls, address: Mapping[str, Any], *replies: Reply) -> ReporterMessage:
        """A message of `replies` to a platform `address`, secret when one of them is."""
        return cls(address=dict(address), replies=tuple(replies), secret=any(r.secret for r in replies))

    @classmethod
    def to_conversation(cls, conversation, *replies: Reply) -> ReporterMessage:
        """A message to the person of a stored conversation: the outbox keeps only its ID."""
        return cls(address={}, conversation=conversation.id, replies=tuple(replies),
                   secret=any(r.secret for r in replies))

    @classmethod
    def to_reporter_of(cls, case_id: int, *replies: Reply, relay: bool = False) -> ReporterMessage:
        """A message to the reporter of a case, found when it is sent."""
        return cls(address={}, case=case_id, relay=relay, replies=tuple(replies))

    def to_payload(self) -> dict[str, Any]:
        if self.case is not None:
            payload: dict[str, Any] = {"case": self.case, "relay": self.relay}
        elif self.conversation is not None:
            payload = {"conversation": self.conversation}
        else:
            payload = {"address": dict(self.address)}
        payload["replies"] = [payload_of(r) for r in self.replies]
        if self.secret or any(r.secret for r in self.replies):
            payload["secret"] = True
        return payload

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ReporterMessage:
        return cls(address=dict(data.get("address") or {}), conversation=data.get("conversation"),
                   case=data.get("case"), relay=bool(data.get("relay")),
                   replies=tuple(reply_of(r) for r in data.get("replies", [])), secret=bool(data.get("secret")))


@dataclass(frozen=True)
class RoomMessage:
    """A message of Meldbot's own for the coordinator room/channel, outside any case thread."""

    KIND: ClassVar[str] = "room_message"

    reply: Reply

    def to_payload(self) -> dict[str, Any]:
        return {"replies": [payload_of(self.reply)]}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> RoomMessage:
        return cls(reply=reply_of((data.get("replies") or [{}])[0]))


OutboxPayload = CaseNotification | ThreadLine | ReporterMessage | RoomMessage

_KINDS: dict[str, type] = {c.KIND: c for c in (CaseNotification, ThreadLine, ReporterMessage, RoomMessage)}


def from_payload(kind: str, data: Mapping[str, Any]) -> OutboxPayload:
    """The typed payload of a stored outbox row; `UnknownPayloadKind` for a kind this version lacks."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise UnknownPayloadKind(kind)
    return cls.from_payload(data)


async def enqueue(session: AsyncSession, payload: OutboxPayload, *, platform: str, now: dt.datetime,
                  destination: str | None = None, case_id: int | None = None,
                  idempotency_key: str | None = None) -> repo.QueuedMessage:
    """Queue `payload` in the outbox, in the caller's transaction. With `idempotency_key`, a message
    once queued under that key is not queued again (its row is returned as it was)."""
    return await repo.enqueue_message(session=session, kind=payload.KIND, platform=platform,
                                      destination=destination, payload=payload.to_payload(), now=now,
                                      case_id=case_id, idempotency_key=idempotency_key)

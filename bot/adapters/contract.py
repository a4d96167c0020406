"""The contract between platform adapters (console, Matrix, Teams) and the engine.

An adapter only translates: a platform event becomes an `InboundMessage`; neutral replies and
notifications become platform calls. It never opens a database session and never edits a case.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from dialogs import Reply


#: The largest file a person can send (the database keeps files up to this size; larger ones are
#: refused by name). Adapters stop downloading past it.
MAX_FILE_BYTES = 20 * 1024 * 1024

@dataclass(frozen=True)
class InboundAttachment:
    """A file as received from the platform (already decrypted/downloaded by the adapter)."""

    filename: str
    media_type: str
    content: bytes


@dataclass(frozen=True)
class InboundMessage:
    """One message from a person to the bot."""

    platform: str
    conversation: str
    sender: str
    text: str
    event_id: str
    attachments: tuple[InboundAttachment, ...] = ()
    sender_name: str | None = None
    #: What the adapter needs to reach this person later (e.g. a Teams conversation reference).
    address: dict[str, Any] = field(default_factory=dict)
    #: A submitted report form (Teams Adaptive Card values) instead of text.
    form: dict[str, Any] | None = None


@dataclass(frozen=True)
class CoordinatorMessage:
    """A message in a case thread of the coordinator room or channel."""

    platform: str
    destination: str
    thread_root: str
    sender: str
    text: str
    event_id: str
    is_coordinator: bool
    sender_name: str | None = None
    #: What the adapter needs to open a direct chat with the sender (see `Adapter.open_direct_chat`).
    address: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    """A coordinator notification: reference, categories, flags and a link. Never the story or names."""

    reference: str
    title: str
    lines: tuple[tuple[str, str], ...]
    link: str
    link_label: str
    urgent: bool = False

    def plain(self) -> str:
        rows = [self.title] + [f"{label}: {value}" for label, value in self.lines] + [self.link]
        return "\n".join(rows)


class StateConflict(Exception):
    """A shared-state document was written by another instance since the version this one read
    (`save(..., expected_version=...)`): reload it and apply the change again."""


class DeliveryError(Exception):
    """A send failed. `retry_after` (seconds) is the platform's own wish, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None, permanent: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class Bot(Protocol):
    """What an adapter may ask of the engine (and nothing else: no sessions, no cases)."""

    async def handle(self, message: InboundMessage) -> Sequence[Reply]:
        """A reporter's message; returns the replies for them."""

    async def handle_coordinator(self, message: CoordinatorMessage) -> Sequence[Reply]:
        """A message in a case thread; returns the answers for that thread."""

    async def defer_replies(self, platform: str, address: dict[str, Any], replies: Sequence[Reply]) -> None:
        """Replies that could not be sent now: the outbox delivers them later."""

    async def redeem_claim_code(self, platform: str, code: str) -> bool | None:
        """Spend a code from `meldbot teams claim-code`: True once for a valid code, False for a wrong,
        used or expired one, None when the database cannot tell right now."""


@runtime_checkable
class Adapter(Protocol):
    """What every platform implements. `isinstance(x, Adapter)` only sees that the names exist;
    `contract_problems` also compares signatures and which methods are coroutines."""

    platform: str
    #: Whether a resend with the same idempotency key is dropped by the platform (Matrix: yes).
    idempotent_sends: bool

    async def start(self, bot: Bot) -> None:
        """Connect and begin passing inbound messages to `bot`; returns once running."""

    async def stop(self) -> None:
        """Disconnect; pending work is left to the outbox."""

    async def send_replies(self, address: dict[str, Any], replies: Sequence[Reply], idempotency_key: str) -> str:
        """Send replies to a person (proactively, from the outbox); returns a platform message ID."""

    def coordinator_destination(self) -> str | None:
        """Where case notifications go on this platform (None: this platform has no coordinator room)."""

    async def post_case_notification(self, destination: str, notification: Notification, idempotency_key: str) -> str:
        """Post a new case's notification; returns the ID of the post (the root of the case thread)."""

    async def post_in_case_thread(self, destination: str, root_id: str, text: str, idempotency_key: str) -> str:
        """Post a later event of a case as a reply in its thread; returns the platform message ID."""

    async def post_in_room(self, destination: str, reply: Reply, idempotency_key: str) -> str:
        """Post a message of Meldbot's own (a signal, never case content) in the coordinator
        room/channel itself, outside any case thread; returns the platform message ID."""

    async def is_coordinator(self, user_id: str) -> bool:
        """Whether the platform says `user_id` is a coordinator now (a member of the coordinator
        room/channel, never a guest); raises when the platform cannot tell."""

    async def open_direct_chat(self, address: dict[str, Any]) -> dict[str, Any]:
        """Open (or find) a private chat with the person of a `CoordinatorMessage.address`; returns the
        address `send_replies` takes. Raises DeliveryError when it cannot."""

    def routes(self) -> list:
        """aiohttp routes this platform serves on the web server (Teams: POST /api/messages)."""

    def is_room(self, target: str) -> bool:
        """Whether a configured target (such as `[followup] backup`) names a room or channel
        rather than a person, by this platform's ID format."""


class OptionalCapabilities(Protocol):
    """What an adapter may offer beyond `Adapter`. Callers look them up with `getattr` and use the
    default named here, so a platform without them (a test platform) still conforms; an adapter
    that has one must have it with this signature (`contract_problems` checks)."""

    def use_store_key(self, key: bytes) -> None:
        """The key of the adapter's own store, derived from the master key by the app and given
        before `start()`: state files are sealed with it, Matrix's encryption store is pickled with
        it. Without it (default) the adapter keeps its files as before."""

    def ready(self) -> bool:
        """Whether the platform is connected now (/readyz; Matrix: a sync succeeded recently).
        Default: True (Teams, whose endpoint is served by the web server; the console)."""

    def thread_content_allowed(self, destination: str) -> bool:
        """Whether relayed reporter text may be posted into a case thread at `destination` (Matrix:
        only when that room is encrypted; otherwise the thread only hears that the reporter answered).
        Default: True."""


#: The attributes (not methods) of `Adapter`, with their types.
ADAPTER_ATTRIBUTES = {"platform": str, "idempotent_sends": bool}


def contract_problems(adapter: object) -> list[str]:
    """How `adapter` falls short of `Adapter`: missing or mistyped attributes, missing methods, a
    method that is (or is not) a coroutine unlike the protocol's, or other parameters (names and
    kinds, `self` left out); the same for the `OptionalCapabilities` it has. Empty when it conforms."""
    problems = []
    for name, kind in ADAPTER_ATTRIBUTES.items():
        if not isinstance(getattr(adapter, name, None), kind):
            problems.append(f"{name}: not a {kind.__name__}")
    required = [(name, wanted, True) for name, wanted in vars(Adapter).items()]
    optional = [(name, wanted, False) for name, wanted in vars(OptionalCapabilities).items()]
    for name, wanted, must_have in required + optional:
        if name.startswith("_") or not inspect.isfunction(wanted):
            continue
        found = getattr(adapter, name, None)
        if found is None and not must_have:
            continue
        if not callable(found):
            problems.append(f"{name}: missing" if found is None else f"{name}: not a method")
            continue
        if inspect.iscoroutinefunction(wanted) != inspect.iscoroutinefunction(found):
            problems.append(f"{name}: {'must' if inspect.iscoroutinefunction(wanted) else 'must not'} be async")
        expected = [(p.name, p.kind) for p in list(inspect.signature(wanted).parameters.values())[1:]]
        actual = [(p.name, p.kind) for p in inspect.signature(found).parameters.values()]
        if expected != actual:
            problems.append(f"{name}: parameters {[n for n, _ in actual]}, expected {[n for n, _ in expected]}")
    return problems

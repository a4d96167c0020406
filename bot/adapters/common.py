"""Helpers every adapter uses, written once: the small state files in `store_dir`, answering in the
turn with the unsent rest handed to the outbox, platform errors as `DeliveryError`, option lists."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence

from dialogs import Reply

from bot.adapters.contract import Bot, DeliveryError

log = logging.getLogger(__name__)

# -- state files in store_dir -----------------------------------------------------------------------


def prepare_store(store_dir: Path, *, private: bool = False) -> None:
    """Create `store_dir`; `private` also closes it to other users (it holds login and keys)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    if private:
        os.chmod(store_dir, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write `text` atomically with mode 0600: a crash leaves the old file or the new one, never half
    of one, and nobody else on the machine can read tokens or who talks to the bot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(temporary, 0o600)  # a leftover temporary file may have had another mode
    os.replace(temporary, path)


def read_text(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


class JsonFile:
    """One JSON document in `store_dir` (credentials, told groups, direct chats, Teams state)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self, default: Any = None) -> Any:
        text = read_text(self.path)
        return json.loads(text) if text is not None else default

    def save(self, data: Any) -> None:
        write_private(self.path, json.dumps(data))


# -- send now, or defer to the outbox -----------------------------------------------------------------


async def send_or_defer(bot: Bot, platform: str, address: dict[str, Any] | Callable[[], dict[str, Any]],
                        groups: Sequence[Sequence[Reply]], send: Callable[[Sequence[Reply]], Awaitable[Any]], *,
                        errors: tuple[type[BaseException], ...] = (DeliveryError,),
                        describe: Callable[[BaseException], str] = str) -> bool:
    """Send each group of replies (one platform message each) in order; at the first that fails, that
    group and all after it go to the outbox, still in order. Returns whether everything was sent.

    `address` may be a function: building it can be costly (Teams serialises a reference) and is only
    needed when something is deferred."""
    for index, group in enumerate(groups):
        try:
            await send(group)
        except errors as error:
            log.warning("%s: reply not sent now (%s); queued", platform, describe(error))
            rest = [reply for later in groups[index:] for reply in later]
            await bot.defer_replies(platform, address() if callable(address) else address, rest)
            return False
    return True


# -- platform errors as DeliveryError ----------------------------------------------------------------

#: Matrix error codes that mean the homeserver refuses for good (retrying changes nothing).
PERMANENT_MATRIX_ERRORS = frozenset({"M_FORBIDDEN", "M_UNKNOWN_TOKEN", "M_NOT_FOUND", "M_TOO_LARGE",
                                     "M_BAD_JSON", "M_INVALID_PARAM"})
#: HTTP statuses worth retrying (throttling, conflicts and gateways); others are final.
RETRYABLE_STATUSES = frozenset({408, 412, 429, 500, 502, 503, 504})


def matrix_delivery_error(response: Any, what: str = "") -> DeliveryError:
    """A nio error response (nio returns errors rather than raising) as a DeliveryError that keeps
    the homeserver's `retry_after_ms` and says whether a retry can help."""
    code = getattr(response, "status_code", "") or ""
    retry = getattr(response, "retry_after_ms", None)
    message = f"{what}: {code}" if what else f"{code} {getattr(response, 'message', '')}".strip()
    return DeliveryError(message, retry_after=retry / 1000 if retry else None,
                         permanent=code in PERMANENT_MATRIX_ERRORS)


def http_status(error: BaseException) -> int | None:
    """The HTTP status of an SDK exception (msrest keeps it on `error.response`)."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) or getattr(error, "status_code", None)


def retry_after(error: BaseException) -> float | None:
    """The `Retry-After` header (seconds) of an SDK exception's response, when it has one."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def http_delivery_error(error: BaseException, what: str = "bot connector answered", *,
                        may_be_permanent: bool = True) -> DeliveryError:
    """An HTTP failure as a DeliveryError: other 4xx statuses are final, while 401/403/404 and the
    retryable ones are left to the outbox's retries (`may_be_permanent=False`: nothing is final)."""
    status = http_status(error)
    permanent = (may_be_permanent and status is not None and status not in RETRYABLE_STATUSES and status < 500
                 and status not in (401, 403, 404))
    return DeliveryError(f"{what} {status or type(error).__name__}", retry_after=retry_after(error),
                         permanent=permanent)


# -- option lists ------------------------------------------------------------------------------------


def option_rows(options: Iterable[Any]) -> list[tuple[int, str, str]]:
    """(number, mark, label) per option: ticked/unticked boxes only when some option is ticked (a
    multiple choice); a plain numbered list otherwise. Each platform escapes the label itself."""
    options = list(options)
    marks = any(option.selected for option in options)
    return [(option.number, ("☑ " if option.selected else "☐ ") if marks else "", option.label)
            for option in options]

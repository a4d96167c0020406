"""Helpers every adapter uses, written once: the small (sealed) state files in `store_dir`, answering in the
turn with the unsent rest handed to the outbox, platform errors as `DeliveryError`, option lists."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dialogs import Reply

from bot.adapters.contract import Bot, DeliveryError, StateConflict
from bot.config import ConfigError

log = logging.getLogger(__name__)

# -- state files in store_dir -----------------------------------------------------------------------
#
# An adapter's state files hold an access token, conversation references and who talks to the bot.
# Once the app has given the adapter its store key (`use_store_key`, derived from the master key),
# they are sealed with AES-256-GCM. The sealing lives here because adapters never import storage/.

#: The first bytes of a sealed state file (a plain JSON file never starts like this).
SEALED_MAGIC = b"meldbot-sealed-v1\n"
NONCE_BYTES = 12


class StoreError(ConfigError):
    """An adapter's store cannot be opened (sealed under another key, or no key given). The message
    names the file; the file is never replaced by an empty one."""


def store_subkey(store_key: bytes, purpose: str) -> bytes:
    """A key of its own per use of the store key (state files, nio's pickles), so that one never
    opens what the other sealed."""
    return HKDF(algorithm=SHA256(), length=32, salt=None,
                info=b"meldbot adapter store:" + purpose.encode()).derive(store_key)


class StoreSeal:
    """The sealing of one adapter's state files: inactive (plain JSON, as before) until the app gives
    the store key, which it does before `start()`."""

    def __init__(self) -> None:
        self._cipher: AESGCM | None = None

    def use_key(self, store_key: bytes) -> None:
        self._cipher = AESGCM(store_subkey(store_key, "state files"))

    @property
    def active(self) -> bool:
        return self._cipher is not None

    def seal(self, data: bytes, name: str) -> bytes:
        assert self._cipher is not None
        nonce = os.urandom(NONCE_BYTES)
        # The file name is bound in: one state file cannot be passed off as another.
        return SEALED_MAGIC + nonce + self._cipher.encrypt(nonce, data, name.encode())

    def open(self, blob: bytes, name: str) -> bytes:
        """The content of a sealed file; raises InvalidTag under another key or when tampered with."""
        assert self._cipher is not None
        body = blob[len(SEALED_MAGIC):]
        return self._cipher.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], name.encode())


def prepare_store(store_dir: Path) -> None:
    """Create `store_dir` closed to other users (mode 0700): it holds logins, keys and who talks to
    the bot."""
    store_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(store_dir, 0o700)


def close_files(store_dir: Path, prefix: str) -> None:
    """Mode 0600 for the files starting with `prefix` that a library wrote into `store_dir` with the
    process umask (nio's encryption store), and those an earlier version left readable."""
    for path in store_dir.iterdir():
        if path.name.startswith(prefix) and path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)


def write_private(path: Path, content: str | bytes) -> None:
    """Write `content` atomically with mode 0600: a crash leaves the old file or the new one, never half
    of one, and nobody else on the machine can read tokens or who talks to the bot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)
    os.chmod(temporary, 0o600)  # a leftover temporary file may have had another mode
    os.replace(temporary, path)


def read_text(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


class JsonFile:
    """One JSON document in `store_dir` (credentials, told groups, direct chats, Teams state), sealed
    once `seal` is active. An old plain file is still read, and sealed straight away: a file such as
    the credentials is otherwise rarely written again."""

    def __init__(self, path: Path, seal: StoreSeal | None = None):
        self.path = Path(path)
        self.seal = seal or StoreSeal()

    def _sealed(self, data: bytes) -> bool:
        return data.startswith(SEALED_MAGIC)

    def load(self, default: Any = None) -> Any:
        if not self.path.exists():
            return default
        data = self.path.read_bytes()
        if not self._sealed(data):
            value = json.loads(data)
            if self.seal.active:
                self.save(value)
                log.info("adapter store: %s was plain JSON; it is sealed now", self.path.name)
            return value
        if not self.seal.active:
            raise StoreError(f"{self.path} is sealed, but no store key was given to open it; "
                             "it is left unchanged")
        try:
            return json.loads(self.seal.open(data, self.path.name))
        except InvalidTag:
            raise StoreError(f"{self.path} cannot be opened with this store key (is this the master key it "
                             "was sealed with?); it is left unchanged") from None

    def save(self, data: Any) -> None:
        text = json.dumps(data).encode()
        if self.seal.active:
            write_private(self.path, self.seal.seal(text, self.path.name))
            return
        if self.path.exists() and self._sealed(self.path.read_bytes()):
            # Without the key nothing could read this file back: never replace it with one that can.
            raise StoreError(f"{self.path} is sealed, but no store key was given; it is left unchanged")
        write_private(self.path, text)



class FileState:
    """The shared-state interface (`bot.core.shared_state.SharedState`) over sealed files in
    `store_dir`, for an adapter the app gave no database state to (one process, tests). The version
    is the file's modification time in nanoseconds."""

    def __init__(self, store_dir: Path, seal: StoreSeal | None = None):
        self.store_dir = Path(store_dir)
        self.seal = seal or StoreSeal()

    def _path(self, name: str) -> Path:
        return self.store_dir / f"shared-{name}"

    async def load(self, name: str) -> tuple[bytes | None, int]:
        path = self._path(name)
        if not path.exists():
            return None, 0
        data = path.read_bytes()
        if data.startswith(SEALED_MAGIC):
            if not self.seal.active:
                raise StoreError(f"{path} is sealed, but no store key was given to open it")
            try:
                data = self.seal.open(data, path.name)
            except InvalidTag:
                raise StoreError(f"{path} cannot be opened with this store key") from None
        return data, path.stat().st_mtime_ns

    async def version(self, name: str) -> int:
        path = self._path(name)
        return path.stat().st_mtime_ns if path.exists() else 0

    async def save(self, name: str, data: bytes, expected_version: int | None = None) -> int:
        path = self._path(name)
        if expected_version is not None and await self.version(name) != expected_version:
            raise StateConflict(f"{path.name} was written meanwhile")
        write_private(path, self.seal.seal(data, path.name) if self.seal.active else data)
        return path.stat().st_mtime_ns

    async def load_json(self, name: str, default: Any = None) -> Any:
        data, _ = await self.load(name)
        return default if data is None else json.loads(data)

    async def save_json(self, name: str, value: Any, expected_version: int | None = None) -> int:
        return await self.save(name, json.dumps(value, separators=(",", ":"), sort_keys=True).encode(),
                               expected_version)


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


def option_rows(options: Iterable[Any], checklist: bool = False) -> list[tuple[int, str, str]]:
    """(number, mark, label) per option: ticked/unticked boxes for a checklist or when some option
    is ticked (a multiple choice); a plain numbered list otherwise. Each platform escapes the label."""
    options = list(options)
    marks = checklist or any(option.selected for option in options)
    return [(option.number, ("☑ " if option.selected else "☐ ") if marks else "", option.label)
            for option in options]

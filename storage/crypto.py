"""Encryption at rest: AES-256-GCM envelopes, the keyring the master key wraps, keyed lookups.

Key hierarchy:

- the organisation's **master key** (32 bytes, in a key file or a container secret) never reaches
  the database; it only wraps other keys;
- the **keyring** (table `keyring`): a few organisation keys, each stored wrapped by the master key:
  `lookup` (HMAC for platform addresses), `state` (dialogue state, reply addresses, outbox payloads),
  `people` (reporters' names and user IDs), `anonymous` (the link from an anonymous case to its
  conversation; a vault without it is given to the case pages, exports and the CLI), `store`
  (platform stores: the Matrix store's pickle key, adapter state files);
- a **data key per case** and one per file, stored wrapped in the row itself, so that rotating the
  master key only rewraps keys and purging a case removes its key with it.

Every ciphertext is `version (1 byte) | nonce (12) | AES-GCM ciphertext+tag`, authenticated with a
purpose string so that a blob cannot be moved into another kind of field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
#: The organisation keys the master key wraps.
KEYRING_NAMES = ("lookup", "state", "people", "anonymous", "store")
#: Files are encrypted in chunks of this many plain bytes, so a download decrypts as it streams.
FILE_CHUNK = 1024 * 1024
SEALED_CHUNK = len(VERSION) + NONCE_BYTES + FILE_CHUNK + 16


class DecryptionError(Exception):
    """A ciphertext that this key cannot open (wrong key, or the data was changed)."""


class NoAccess(Exception):
    """This vault was built without the key that is needed (for example the anonymous key)."""


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """A key as the one line a key file or secret holds."""
    return base64.urlsafe_b64encode(key).decode()


def decode_key(text: str) -> bytes:
    """The key in a key file or secret; ValueError when it is not one."""
    try:
        key = base64.urlsafe_b64decode(text.strip().encode())
    except (ValueError, TypeError):
        raise ValueError("not a Meldbot key (expected 32 bytes in URL-safe base64)") from None
    if len(key) != KEY_BYTES:
        raise ValueError("not a Meldbot key (expected 32 bytes in URL-safe base64)")
    return key


def key_id(master: bytes) -> str:
    """A short public fingerprint of a master key: which key wrapped a row."""
    return hmac.new(master, b"meldbot master key id", hashlib.sha256).hexdigest()[:16]


def seal(cipher: AESGCM, plaintext: bytes, purpose: bytes) -> bytes:
    """Encrypt and authenticate `plaintext` for `purpose`."""
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + cipher.encrypt(nonce, plaintext, purpose)


def unseal(cipher: AESGCM, blob: bytes, purpose: bytes) -> bytes:
    """The plaintext of a sealed blob; DecryptionError when the key or purpose does not match."""
    if not blob or blob[:1] != VERSION or len(blob) < 1 + NONCE_BYTES + 16:
        raise DecryptionError("not a sealed value")
    try:
        return cipher.decrypt(blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:], purpose)
    except InvalidTag:
        raise DecryptionError("the key does not open this value") from None


def wrap_key(master: bytes, key: bytes, purpose: str) -> bytes:
    """A key encrypted under the master key."""
    return seal(AESGCM(master), key, b"meldbot key:" + purpose.encode())


def unwrap_key(master: bytes, wrapped: bytes, purpose: str) -> bytes:
    """A key wrapped by `wrap_key`; DecryptionError with the wrong master key."""
    return unseal(AESGCM(master), wrapped, b"meldbot key:" + purpose.encode())


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


class Vault:
    """Seals and opens what Meldbot stores. Built once at start-up from the master key and the
    unwrapped keyring; shared by every session through the sessionmaker's `info`."""

    def __init__(self, master: bytes, keyring: dict[str, bytes], *, cache_size: int = 4096):
        self.master = master
        self.master_id = key_id(master)
        self._keys = dict(keyring)
        self._ciphers = {name: AESGCM(key) for name, key in keyring.items() if name != "lookup"}
        self._lookup = keyring["lookup"]
        self._data_ciphers: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._cache_size = cache_size

    # -- organisation keys ------------------------------------------------------------------------

    def _cipher(self, name: str) -> AESGCM:
        cipher = self._ciphers.get(name)
        if cipher is None:
            raise NoAccess(f"this vault has no {name} key")
        return cipher

    @property
    def has_anonymous(self) -> bool:
        return "anonymous" in self._ciphers

    def without_anonymous(self) -> Vault:
        """The same vault without the key that links an anonymous case to its reporter: for the case
        pages, exports and the command line."""
        return Vault(self.master, {n: k for n, k in self._keys.items() if n != "anonymous"},
                     cache_size=self._cache_size)

    def lookup(self, *parts: str) -> str:
        """A keyed hash of an identifier (platform address, user ID): equal inputs, equal outputs,
        nothing readable without the key."""
        return hmac.new(self._lookup, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    def anonymous_tag(self, *parts: str) -> str:
        """A keyed hash under the anonymous key: finds a reporter's own anonymous cases."""
        self._cipher("anonymous")
        return hmac.new(self._keys["anonymous"], "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    def derive(self, purpose: str) -> bytes:
        """A key derived from the store key (stable when the master key is rotated)."""
        self._cipher("store")
        return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None,
                    info=b"meldbot derived:" + purpose.encode()).derive(self._keys["store"])

    def seal_json(self, name: str, value: Any, purpose: str) -> bytes:
        """A JSON value sealed under organisation key `name`."""
        return seal(self._cipher(name), _dumps(value), purpose.encode())

    def open_json(self, name: str, blob: bytes, purpose: str) -> Any:
        """The JSON value of `seal_json`."""
        return json.loads(unseal(self._cipher(name), blob, purpose.encode()))

    def seal_bytes(self, name: str, data: bytes, purpose: str) -> bytes:
        return seal(self._cipher(name), data, purpose.encode())

    def open_bytes(self, name: str, blob: bytes, purpose: str) -> bytes:
        return unseal(self._cipher(name), blob, purpose.encode())

    # -- data keys (one per case, one per file) ---------------------------------------------------

    def new_data_key(self, purpose: str) -> tuple[AESGCM, bytes]:
        """A fresh data key: its cipher, and the key wrapped by the master key for the row."""
        key = new_key()
        wrapped = wrap_key(self.master, key, purpose)
        cipher = AESGCM(key)
        self._remember(wrapped, cipher)
        return cipher, wrapped

    def data_cipher(self, wrapped: bytes, purpose: str) -> AESGCM:
        """The cipher of a row's wrapped data key (unwrapped once, then cached)."""
        cipher = self._data_ciphers.get(wrapped)
        if cipher is None:
            cipher = AESGCM(unwrap_key(self.master, wrapped, purpose))
            self._remember(wrapped, cipher)
        else:
            self._data_ciphers.move_to_end(wrapped)
        return cipher

    def _remember(self, wrapped: bytes, cipher: AESGCM) -> None:
        self._data_ciphers[wrapped] = cipher
        while len(self._data_ciphers) > self._cache_size:
            self._data_ciphers.popitem(last=False)

    def forget(self, wrapped: bytes) -> None:
        """Drop a purged row's key from the cache."""
        self._data_ciphers.pop(wrapped, None)


def seal_with(cipher: AESGCM, value: Any, purpose: str) -> bytes:
    """A JSON value sealed under a data key."""
    return seal(cipher, _dumps(value), purpose.encode())


def open_with(cipher: AESGCM, blob: bytes, purpose: str) -> Any:
    """The JSON value of `seal_with`."""
    return json.loads(unseal(cipher, blob, purpose.encode()))


def seal_file(cipher: AESGCM, data: bytes) -> bytes:
    """File bytes sealed in chunks of FILE_CHUNK (each chunk authenticated with its index and
    whether it is the last), so that one chunk can be read and opened on its own."""
    chunks = [data[i:i + FILE_CHUNK] for i in range(0, len(data), FILE_CHUNK)] or [b""]
    return b"".join(seal(cipher, chunk, _chunk_purpose(i, i == len(chunks) - 1)) for i, chunk in enumerate(chunks))


def open_file_chunk(cipher: AESGCM, blob: bytes, index: int, last: bool) -> bytes:
    """Chunk `index` of a sealed file (the sealed bytes of that chunk only)."""
    return unseal(cipher, blob, _chunk_purpose(index, last))


def sealed_file_size(size: int) -> int:
    """How many bytes a file of `size` plain bytes takes sealed."""
    chunks = max(1, -(-size // FILE_CHUNK))
    return size + chunks * (SEALED_CHUNK - FILE_CHUNK)


def _chunk_purpose(index: int, last: bool) -> bytes:
    return b"meldbot file:%d:%s" % (index, b"last" if last else b"more")

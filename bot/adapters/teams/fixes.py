"""Workarounds for two defects of botbuilder 4.17.1 (the last release; the SDK is archived).

1. Every invoke whose handler returns a body (such as `adaptiveCard/action`) fails with HTTP 500:
   `CloudAdapter.process` serialises a body that `ActivityHandler` already turned into a dict
   (`'dict' object has no attribute 'is_xml_model'`). Plain dicts are now passed through.
2. msrest 0.7.1 builds its retry status list by testing 999 codes against a 502-item *list*,
   twice per turn: about 15 ms of CPU per activity. A frozenset gives the same list at a fraction.

`apply()` is idempotent and is called once when the Teams adapter is built.
"""

from __future__ import annotations

from botbuilder.core import serializer_helper as _original_serializer_helper
from botbuilder.integration.aiohttp import cloud_adapter
from msrest.universal_http.requests import ClientRetryPolicy


def _serializer_helper(value):
    """Serialise an invoke response body unless it already is plain JSON data."""
    if value is None or isinstance(value, (dict, list, str, int, float, bool)):
        return value
    return _original_serializer_helper(value)


def apply() -> None:
    """Install both workarounds."""
    cloud_adapter.serializer_helper = _serializer_helper
    if not isinstance(ClientRetryPolicy.safe_codes, frozenset):
        ClientRetryPolicy.safe_codes = frozenset(ClientRetryPolicy.safe_codes)


def revert() -> None:
    """Undo both workarounds (for the tests that show the defects)."""
    cloud_adapter.serializer_helper = _original_serializer_helper
    if isinstance(ClientRetryPolicy.safe_codes, frozenset):
        ClientRetryPolicy.safe_codes = sorted(ClientRetryPolicy.safe_codes)

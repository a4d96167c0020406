"""Downloading Matrix media within limits: a size cap while streaming, a stall and a total timeout.

nio's `download` reads a whole body into memory, however large; a reporter (or a misbehaving
server) could exhaust the bot with one file or hold it with one that never ends. Here the body is
streamed from the bot's own homeserver and cut off as soon as it exceeds the cap.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urljoin, urlsplit

import aiohttp

from bot.adapters.contract import MAX_FILE_BYTES

#: The largest file kept; the engine refuses larger ones, so nothing larger is fetched at all.
#: Whole download, and longest silence while reading, in seconds.
DOWNLOAD_TIMEOUT_S = 120.0
STALL_TIMEOUT_S = 30.0
CHUNK = 64 * 1024
#: `mxc://<server>/<media id>` as the spec allows them; anything else is never requested.
_MXC = re.compile(r"^mxc://([A-Za-z0-9.\-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?)/([A-Za-z0-9_\-]+)$")
_REDIRECTS = (301, 302, 303, 307, 308)


class TooLarge(Exception):
    """The file is larger than the cap (announced, declared by the server, or streamed)."""


class DownloadFailed(Exception):
    """The file could not be fetched (not found, refused, timed out, broken connection)."""


def parse_mxc(uri: str | None) -> tuple[str, str] | None:
    """(server, media ID) of a well-formed `mxc://` URI, else None."""
    match = _MXC.match(uri or "")
    return (match.group(1), match.group(2)) if match else None


def media_urls(homeserver: str, server: str, media_id: str) -> list[str]:
    """Authenticated media first (Matrix 1.11), then the old unauthenticated path."""
    base = homeserver.rstrip("/")
    tail = f"{quote(server, safe='')}/{quote(media_id, safe='')}"
    return [f"{base}/_matrix/client/v1/media/download/{tail}", f"{base}/_matrix/media/v3/download/{tail}"]


def announced_size(content: dict) -> int | None:
    """The size an event says its file has (`info.size`), when it says one."""
    info = content.get("info") if isinstance(content, dict) else None
    size = info.get("size") if isinstance(info, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


async def fetch(session: aiohttp.ClientSession, urls: list[str], access_token: str, *,
                limit: int = MAX_FILE_BYTES, timeout: float = DOWNLOAD_TIMEOUT_S,
                stall: float = STALL_TIMEOUT_S) -> bytes:
    """The body of the first URL the server knows, at most `limit` bytes.

    Raises TooLarge as soon as more than `limit` bytes are declared or arrive, DownloadFailed for
    anything else. The access token only goes to the homeserver's own origin (not after a redirect
    elsewhere)."""
    home = _origin(urls[0])
    client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout), sock_read=stall)
    for index, first_url in enumerate(urls):
        url = first_url
        for _ in range(4):  # the URL and up to three redirects
            headers = {"Authorization": f"Bearer {access_token}"} if _origin(url) == home else {}
            try:
                async with session.get(url, headers=headers, timeout=client_timeout, allow_redirects=False) as response:
                    if response.status in _REDIRECTS and response.headers.get("Location"):
                        url = urljoin(url, response.headers["Location"])
                        if urlsplit(url).scheme not in ("http", "https"):
                            raise DownloadFailed("redirect to a non-HTTP location")
                        continue
                    if response.status != 200:
                        code = await _errcode(response)
                        if response.status == 413 or code == "M_TOO_LARGE":
                            raise TooLarge()
                        if index + 1 < len(urls) and (response.status == 405 or (
                                response.status in (400, 404) and code in (None, "M_UNRECOGNIZED"))):
                            break  # the server does not know this endpoint: the next one
                        raise DownloadFailed(f"HTTP {response.status} {code or ''}".strip())
                    if (response.content_length or 0) > limit:
                        raise TooLarge()
                    return await _read_capped(response, limit)
            except (TooLarge, DownloadFailed):
                raise
            except (aiohttp.ClientError, TimeoutError) as error:
                raise DownloadFailed(type(error).__name__) from error
        else:
            raise DownloadFailed("too many redirects")
    raise DownloadFailed("no media endpoint")


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        body.extend(chunk)
        if len(body) > limit:
            response.close()  # drop the connection: the rest is never read
            raise TooLarge()
    return bytes(body)


async def _errcode(response: aiohttp.ClientResponse) -> str | None:
    try:
        data = json.loads(await response.content.read(64 * 1024))
    except (ValueError, aiohttp.ClientError, TimeoutError):
        return None
    code = data.get("errcode") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()

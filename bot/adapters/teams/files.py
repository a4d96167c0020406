"""Fetching the files people send to the bot in Teams, and where the bot's token may go.

A message's attachments are chosen by whoever wrote it. The bot's bearer token (it can post as the
bot) is therefore only sent to the authenticated service URL's own origin and to Microsoft's bot
attachment hosts; SharePoint/OneDrive download URLs are pre-authenticated and are fetched without
it. Redirects are followed by hand, each hop checked, and the token never crosses to another host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

log = logging.getLogger(__name__)

#: Microsoft's hosts for the bot's own attachment downloads (they want the bot's token); https only.
TOKEN_HOSTS = ("botframework.com", "smba.trafficmanager.net", "asm.skype.com")
#: Where Teams keeps shared files; their download URLs carry their own authorisation; https only.
FILE_HOSTS = ("sharepoint.com", "sharepoint-df.com")
MAX_REDIRECTS = 3
REDIRECTS = {301, 302, 303, 307, 308}


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return (scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme))
    except ValueError:  # a malformed host or port: no origin, so never allowed
        return ("", "", None)


def _under(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def token_allowed(url: str, service_url: str | None) -> bool:
    """Whether the bot's token may be sent to `url`: the service URL's origin (scheme, host and
    port), or one of Microsoft's bot attachment hosts over https."""
    scheme, host, _ = origin = _origin(url)
    if not host:
        return False
    if service_url and origin == _origin(service_url):
        return True
    return scheme == "https" and _under(host, TOKEN_HOSTS)


def fetch_allowed(url: str, service_url: str | None) -> bool:
    """Whether `url` may be fetched at all (without a token, unless `token_allowed`)."""
    scheme, host, _ = _origin(url)
    return token_allowed(url, service_url) or (scheme == "https" and _under(host, FILE_HOSTS))


@dataclass(frozen=True)
class Download:
    content: bytes
    media_type: str | None
    #: Whether the file was larger than the limit (then `content` is only its beginning).
    too_large: bool


async def download(http: aiohttp.ClientSession, url: str, *, service_url: str | None, token: str | None,
                   limit: int) -> Download | None:
    """The file at `url`, or None when it may not or could not be fetched (logged, without the URL:
    it may hold a pre-authenticated key)."""
    headers = {"Authorization": f"Bearer {token}"} if token and token_allowed(url, service_url) else {}
    for _ in range(MAX_REDIRECTS + 1):
        if not fetch_allowed(url, service_url):
            log.warning("teams: attachment on a host that is not allowed; not fetched")
            return None
        async with http.get(url, headers=headers, allow_redirects=False) as response:
            if response.status in REDIRECTS and response.headers.get("Location"):
                try:
                    target = urljoin(url, response.headers["Location"])
                except ValueError:
                    log.warning("teams: attachment redirect to a malformed address; not followed")
                    return None
                if headers and _origin(target) != _origin(url):
                    headers = {}  # the token stays with the host it was meant for
                url = target
                continue
            if response.status != 200:
                log.warning("teams: attachment download failed (status %s)", response.status)
                return None
            chunks, size = [], 0
            async for chunk in response.content.iter_chunked(65536):
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip() or None
            return Download(b"".join(chunks), media_type, size > limit)
    log.warning("teams: attachment not fetched: more than %s redirects", MAX_REDIRECTS)
    return None

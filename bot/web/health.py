"""Health and metrics endpoints: `/livez` (the process runs), `/readyz` (this instance can serve)
and `/metrics` (Prometheus; loopback clients only on the web server, or on an address of its own)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.errors import DATABASE_ERRORS
from bot.core.metrics import CONTENT_TYPE
from storage import current_revision, head_revision

log = logging.getLogger(__name__)

#: The readiness check of the database gives up after this long (a black-holed database must not
#: hang the probe; the orchestrator's own timeout is usually a few seconds).
READY_TIMEOUT_S = 3.0

#: Headers a reverse proxy adds: a request that came through one is not from this machine, even
#: when the proxy itself connects from loopback.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


@dataclass
class Readiness:
    """What /readyz checks: the database (reachable, migrated to head), each platform, and leading."""

    db: AsyncEngine
    #: Platform name -> whether it is connected now.
    platforms: Mapping[str, Callable[[], bool]] = field(default_factory=dict)
    #: Whether this instance leads (an instance that does not lead is still ready).
    leader: Callable[[], bool] = lambda: True
    head: str = field(default_factory=head_revision)

    async def check(self) -> tuple[bool, dict]:
        """(ready, the JSON body): each part "ok" or what is wrong with it, never a stack trace."""
        body: dict = {"status": "ready", "database": "ok", "migrations": "ok", "platforms": {}, "leader": False}
        failing: list[str] = []
        try:
            revision = await asyncio.wait_for(current_revision(self.db), READY_TIMEOUT_S)
        except (*DATABASE_ERRORS, TimeoutError) as error:
            log.warning("readiness: database unavailable (%s)", type(error).__name__)
            body["database"] = "unavailable"
            body["migrations"] = "unknown"
            failing.append("database")
        else:
            if revision != self.head:
                body["migrations"] = f"not at head (database at {revision or 'no revision'}, code at {self.head}); " \
                                     "run meldbot db upgrade"
                failing.append("migrations")
        for name, connected in self.platforms.items():
            try:
                ok = bool(connected())
            except Exception as error:  # a readiness probe must answer, whatever an adapter does
                log.warning("readiness: platform %s check failed (%s)", name, type(error).__name__)
                ok = False
            body["platforms"][name] = "ok" if ok else "not connected"
            if not ok:
                failing.append(f"platform:{name}")
        try:
            body["leader"] = bool(self.leader())
        except Exception as error:
            log.warning("readiness: leader check failed (%s)", type(error).__name__)
        if failing:
            body["status"] = "unavailable"
            body["failing"] = failing
        return not failing, body


READINESS_KEY = web.AppKey("readiness", Readiness)
#: Produces the metrics text (reads the database gauges first).
SCRAPE_KEY = web.AppKey("scrape", Callable[[], Awaitable[bytes]])
LOOPBACK_ONLY_KEY = web.AppKey("metrics_loopback_only", bool)


async def livez(request: web.Request) -> web.Response:
    """200 while the process runs and its event loop answers (no database call)."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """200 when this instance can serve; 503 naming what fails."""
    ready, body = await request.app[READINESS_KEY].check()
    return web.json_response(body, status=200 if ready else 503)


def is_loopback(remote: str | None) -> bool:
    """Whether a peer address is this machine (127.0.0.0/8, ::1, or IPv4 loopback mapped in IPv6)."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False  # a Unix socket or something unknown: not proven local
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def metrics_allowed(remote: str | None, headers: Mapping[str, str]) -> bool:
    """The web server's /metrics answers clients on this machine only; a request relayed by a
    reverse proxy (which connects from loopback itself) is not one."""
    return is_loopback(remote) and not any(name in headers for name in FORWARDING_HEADERS)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text format; on the web server, 404 for anyone not on this machine."""
    if request.app[LOOPBACK_ONLY_KEY] and not metrics_allowed(request.remote, request.headers):
        raise web.HTTPNotFound()  # as if it did not exist
    body = await request.app[SCRAPE_KEY]()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def add_health_routes(app: web.Application, *, readiness: Readiness | None,
                      scrape: Callable[[], Awaitable[bytes]] | None, loopback_only: bool = True) -> None:
    """/livez always; /readyz with `readiness`; /metrics with `scrape`."""
    app.router.add_get("/livez", livez)
    if readiness is not None:
        app[READINESS_KEY] = readiness
        app.router.add_get("/readyz", readyz)
    if scrape is not None:
        app[SCRAPE_KEY] = scrape
        app[LOOPBACK_ONLY_KEY] = loopback_only
        app.router.add_get("/metrics", metrics)


def create_metrics_app(scrape: Callable[[], Awaitable[bytes]]) -> web.Application:
    """The app of `[metrics] listen`: /metrics only, for whoever can reach that address."""
    app = web.Application()
    add_health_routes(app, readiness=None, scrape=scrape, loopback_only=False)
    return app

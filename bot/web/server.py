"""The HTTP server: health checks (/healthz, /livez, /readyz), /metrics, and the routes of the Teams
endpoint and the case pages."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.errors import DATABASE_ERRORS
from bot.web.health import Readiness, add_health_routes
from storage import ping

log = logging.getLogger(__name__)

DB_KEY = web.AppKey("db_engine", AsyncEngine)


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, 503 otherwise (for load balancers and monitoring)."""
    try:
        await ping(request.app[DB_KEY])
    except DATABASE_ERRORS as error:
        log.warning("health check: database unavailable (%s)", type(error).__name__)
        return web.json_response({"status": "unavailable", "database": "down"}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})


#: Browsers remember for a year to reach the server over HTTPS only (sent only when it has HTTPS).
HSTS = "max-age=31536000; includeSubDomains"


@web.middleware
async def database_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except DATABASE_ERRORS as error:
        # Never a stack trace: the page says to try again; the log says why (without content).
        # The route's pattern, not the path: a path may hold a login token.
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
        log.error("web: database unavailable route=%s cause=%s", route, type(error).__name__)
        return web.Response(status=503, content_type="text/plain", headers={"Retry-After": "30"},
                            text="Meldbot: de database is even niet bereikbaar. Probeer het zo opnieuw.\n"
                                 "Meldbot: the database is unavailable right now. Please try again shortly.\n")


def security_headers(https: bool):
    """Headers every response gets, set just before it is sent: this also covers streamed
    responses and raised redirects, which a middleware does not see."""

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if https:
            response.headers.setdefault("Strict-Transport-Security", HSTS)

    return add


def create_app(*, db_engine: AsyncEngine, routes: list[web.RouteDef] | None = None,
               public_url: str = "", readiness: Readiness | None = None,
               scrape: Callable[[], Awaitable[bytes]] | None = None) -> web.Application:
    """The aiohttp application with every route Meldbot serves (plus the adapters' own routes).

    With an https `public_url` every response asks browsers to use HTTPS only (HSTS). /livez is
    always there; /readyz with `readiness`; /metrics (loopback clients only) with `scrape`."""
    app = web.Application(client_max_size=1024 * 1024, middlewares=[database_errors])
    app.on_response_prepare.append(security_headers(public_url.startswith("https://")))
    app[DB_KEY] = db_engine
    app.router.add_get("/healthz", healthz)
    add_health_routes(app, readiness=readiness, scrape=scrape)
    app.router.add_routes(routes or [])
    return app

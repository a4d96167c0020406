"""The web server's health check with a real aiohttp server."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

import storage
from bot.web.server import create_app


async def test_health_ok_and_security_headers(db):
    async with TestClient(TestServer(create_app(db_engine=db))) as client:
        response = await client.get("/healthz")
        assert response.status == 200
        assert (await response.json())["database"] == "ok"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_health_reports_a_database_that_is_down(tmp_path):
    db = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    async with TestClient(TestServer(create_app(db_engine=db))) as client:
        response = await client.get("/healthz")
        assert response.status == 503
        assert (await response.json())["database"] == "down"
    await db.dispose()


"""Prometheus metrics: exact values after a known number of reports, turns and deliveries, the
gauges read from the database at scrape time, authentication failures (Teams tokens, web logins),
loopback-only on the web server and `[metrics] listen` served for real."""

from __future__ import annotations

import time
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from bot.adapters.matrix.adapter import MatrixAdapter
from bot.app import build
from bot.config import ConfigError, MatrixSettings, Settings, load_settings
from bot.core.metrics import Metrics
from bot.devtools.localserver import free_port
from bot.web import health
from bot.web.health import metrics_allowed
from helpers import TEST_MASTER_KEY
from stack import RecordingPlatform, Stack
from storage.crypto import encode_key
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import STORY, activity


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted label items) -> value, from the Prometheus text format."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


async def scrape(client: TestClient) -> str:
    response = await client.get("/metrics")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return await response.text()


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url)
    client = TestClient(TestServer(stack.meldbot.web_app()))
    await client.start_server()
    stack.web = client
    try:
        yield stack
    finally:
        await client.close()
        await stack.close()


@pytest.mark.both_databases
async def test_reports_turns_and_deliveries_are_counted_exactly(stack):
    text = await scrape(stack.web)
    assert ("meldbot_turns_total", (("platform", "chat"),)) not in samples(text)
    assert value(text, "meldbot_outbox_pending") == 0 and value(text, "meldbot_timers_due") == 0
    assert value(text, "meldbot_leader") == 1
    # Two reports of three messages each; the story is verbal abuse and a threat (the kinds the
    # dialogue pre-selects from it), so each report counts once for "verbal" and once for "threat".
    await stack.report("anna")
    await stack.report("bert")
    # A message that is no report: one more turn, no report.
    await stack.say("carla", "hallo")
    text = await scrape(stack.web)
    assert value(text, "meldbot_turns_total", platform="chat") == 7
    assert value(text, "meldbot_turn_duration_seconds_count", platform="chat") == 7
    assert value(text, "meldbot_reports_created_total", platform="chat", kind="verbal") == 2
    assert value(text, "meldbot_reports_created_total", platform="chat", kind="threat") == 2
    assert [key for key in samples(text) if key[0] == "meldbot_reports_created_total"] == [
        ("meldbot_reports_created_total", (("kind", "verbal"), ("platform", "chat"))),
        ("meldbot_reports_created_total", (("kind", "threat"), ("platform", "chat")))]
    # One coordinator notification per report, delivered at once.
    assert value(text, "meldbot_delivery_duration_seconds_count", platform="chat", kind="case_notification") == 2
    assert value(text, "meldbot_outbox_pending") == 0
    assert value(text, "meldbot_outbox_oldest_pending_age_seconds") == 0
    assert ("meldbot_delivery_failures_total", (("permanent", "false"), ("platform", "chat"))) not in samples(text)


@pytest.mark.both_databases
async def test_failed_deliveries_pending_age_and_due_timers(stack):
    stack.chat.down = True
    await stack.report("anna")  # 09:15 UTC; its notification fails once
    text = await scrape(stack.web)
    assert value(text, "meldbot_delivery_failures_total", platform="chat", permanent="false") == 1
    assert value(text, "meldbot_outbox_pending") == 1
    assert value(text, "meldbot_outbox_oldest_pending_age_seconds") == 0
    # The case's timers: the claim reminder of an urgent case at 09:45, the signal check at 10:00
    # and the aftercare check-in after 72 hours. None is due yet.
    assert value(text, "meldbot_timers_due") == 0
    stack.clock.advance(minutes=45)  # 10:00, nothing run: two timers due, the message 45 minutes old
    text = await scrape(stack.web)
    assert value(text, "meldbot_outbox_oldest_pending_age_seconds") == 45 * 60
    assert value(text, "meldbot_timers_due") == 2
    stack.chat.down = False
    await stack.deliver()
    text = await scrape(stack.web)
    assert value(text, "meldbot_outbox_pending") == 0
    assert value(text, "meldbot_delivery_duration_seconds_count", platform="chat", kind="case_notification") == 1
    assert value(text, "meldbot_delivery_failures_total", platform="chat", permanent="false") == 1


async def test_permanent_failures_are_labelled_apart(stack):
    from bot.adapters.contract import DeliveryError

    async def removed(*args, **kwargs):
        raise DeliveryError("the bot was removed", permanent=True)

    stack.chat.post_case_notification = removed
    await stack.report("anna")
    text = await scrape(stack.web)
    assert value(text, "meldbot_delivery_failures_total", platform="chat", permanent="true") == 1
    assert ("meldbot_delivery_failures_total", (("permanent", "false"), ("platform", "chat"))) not in samples(text)


async def test_refused_web_logins_are_counted(stack):
    assert value(await scrape(stack.web), "meldbot_auth_failures_total", where="web_login") == 0
    response = await stack.web.get("/login/not-a-real-link")
    assert response.status == 410
    response = await stack.web.post("/login", data={"token": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status == 403
    await stack.log_in("coco", stack.web)  # a good login is no failure
    text = await scrape(stack.web)
    assert value(text, "meldbot_auth_failures_total", where="web_login") == 2
    assert value(text, "meldbot_auth_failures_total", where="teams_jwt") == 0


async def test_refused_teams_tokens_are_counted(world):
    await world.start()
    url = world.connector.url
    assert (await world.post(activity(url, STORY), token=world.keys.token(url, key=world.keys.other_key))).status == 401
    assert (await world.post(activity(url, STORY), token=world.keys.token(url, expires_in=-3600))).status == 401
    assert (await world.post(activity(url, STORY, tenant="another-tenant"))).status == 401
    async with world.http.get(f"http://127.0.0.1:{world.port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert value(text, "meldbot_auth_failures_total", where="teams_jwt") == 3
    assert value(text, "meldbot_auth_failures_total", where="web_login") == 0
    assert ("meldbot_turns_total", (("platform", "teams"),)) not in samples(text)


async def test_leader_and_matrix_sync_lag(tmp_path):
    matrix = MatrixAdapter(settings=MatrixSettings(homeserver="http://127.0.0.1:9", user_id="@meldbot:test.local"),
                           store_dir=tmp_path / "matrix", language="nl")
    leading = [False]
    settings = Settings(database={"url": f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"},
                        privacy={"key": encode_key(TEST_MASTER_KEY)})
    app = await build(settings, {"matrix": matrix}, leader=lambda: leading[0])
    try:
        matrix.synced_at = time.monotonic() - 600  # the last successful sync ten minutes ago
        text = (await app.scrape()).decode()
        assert value(text, "meldbot_leader") == 0
        # A standby does not sync Matrix (the leader does): its lag is unknown, so that an alert on the
        # lag watches the leader only.
        lag = value(text, "meldbot_matrix_sync_lag_seconds")
        assert lag != lag
        leading[0] = True
        text = (await app.scrape()).decode()
        assert value(text, "meldbot_leader") == 1
        assert 600 <= value(text, "meldbot_matrix_sync_lag_seconds") < 3600
        matrix.synced_at = time.monotonic()
        text = (await app.scrape()).decode()
        assert value(text, "meldbot_matrix_sync_lag_seconds") < 600
    finally:
        await app.db.dispose()


async def test_no_matrix_no_sync_lag(stack):
    assert not any(name.startswith("meldbot_matrix") for name, _ in samples(await scrape(stack.web)))


async def test_the_database_gauges_are_unknown_while_the_database_is_down(stack):
    await stack.report("anna")
    with mock.patch("bot.core.metrics.Metrics.refresh", side_effect=ConnectionRefusedError()):
        text = await scrape(stack.web)
    pending = value(text, "meldbot_outbox_pending")
    assert pending != pending  # NaN: unknown, not "empty"
    assert value(text, "meldbot_turns_total", platform="chat") == 3  # the rest is still there


def test_two_apps_in_one_process_do_not_share_metrics():
    first, second = Metrics(), Metrics()
    first.auth_failed("web_login")
    assert value(first.exposition().decode(), "meldbot_auth_failures_total", where="web_login") == 1
    assert value(second.exposition().decode(), "meldbot_auth_failures_total", where="web_login") == 0


def test_labels_never_carry_anything_but_codes():
    metrics = Metrics()
    metrics.reports_created([("chat", ["verbal", "@anna:example.org", "MB-ABC-DEF"]), ("chat", [])])
    metrics.auth_failed("Bearer abc.def")
    metrics.delivery_failed("chat", permanent=False)
    text = metrics.exposition().decode()
    assert value(text, "meldbot_reports_created_total", platform="chat", kind="verbal") == 1
    assert value(text, "meldbot_reports_created_total", platform="chat", kind="other") == 3
    assert "anna" not in text and "MB-ABC" not in text and "Bearer" not in text


# -- who may read /metrics ---------------------------------------------------------------------------

@pytest.mark.parametrize("remote, headers, allowed", [
    ("127.0.0.1", {}, True),
    ("127.3.4.5", {}, True),
    ("::1", {}, True),
    ("::ffff:127.0.0.1", {}, True),
    ("10.0.0.7", {}, False),
    ("192.168.1.20", {}, False),
    ("2001:db8::1", {}, False),
    ("::ffff:10.0.0.7", {}, False),
    (None, {}, False),
    ("not an address", {}, False),
    # Through a reverse proxy on this machine: the request comes from elsewhere.
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, False),
    ("127.0.0.1", {"Forwarded": "for=203.0.113.9"}, False),
    ("::1", {"X-Real-IP": "203.0.113.9"}, False),
])
def test_metrics_answer_loopback_clients_only(remote, headers, allowed):
    assert metrics_allowed(remote, headers) is allowed


async def test_the_handler_answers_a_remote_client_404():
    app = web.Application()
    called = []

    async def scrape_now() -> bytes:
        called.append(1)
        return b"meldbot_leader 1.0\n"

    health.add_health_routes(app, readiness=None, scrape=scrape_now)
    for remote, status in (("203.0.113.9", 404), ("127.0.0.1", 200)):
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda key, default=None: (remote, 50000) \
            if key == "peername" else default
        request = make_mocked_request("GET", "/metrics", app=app, transport=transport)
        assert request.remote == remote
        if status == 404:
            with pytest.raises(web.HTTPNotFound):
                await health.metrics(request)
            assert called == []  # nothing read for a stranger
        else:
            assert (await health.metrics(request)).status == 200
    assert called == [1]


async def test_behind_a_proxy_metrics_look_like_a_missing_page(stack):
    missing = await stack.web.get("/no-such-page")
    response = await stack.web.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status == 404 == missing.status
    assert await response.text() == await missing.text()


async def test_metrics_listen_serves_metrics_on_its_own_address(tmp_path):
    for attempt in range(5):
        web_port, metrics_port = free_port(), free_port()
        if web_port == metrics_port:
            continue
        settings = Settings(database={"url": f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"},
                            privacy={"key": encode_key(TEST_MASTER_KEY)},
                            web={"listen": f"127.0.0.1:{web_port}"}, metrics={"listen": f"127.0.0.1:{metrics_port}"})
        chat = RecordingPlatform()
        app = await build(settings, {"chat": chat})
        try:
            await app.start(web_server=True)
            break
        except OSError:  # a port was taken between choosing and binding it
            await app.stop()
            if attempt == 4:
                raise
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                assert response.status == 200
                text = await response.text()
            assert value(text, "meldbot_leader") == 1 and value(text, "meldbot_outbox_pending") == 0
            # The web server has no /metrics then; its other endpoints are there.
            async with http.get(f"http://127.0.0.1:{web_port}/metrics") as response:
                assert response.status == 404
            async with http.get(f"http://127.0.0.1:{web_port}/livez") as response:
                assert response.status == 200
    finally:
        await app.stop()


def test_metrics_listen_is_validated_like_web_listen(tmp_path):
    config = tmp_path / "meldbot.toml"
    for listen, wrong in (("9100", True), ("localhost:0", True), ("127.0.0.1:99999", True),
                          ("127.0.0.1:8080", True), ("0.0.0.0:9100", False), ("[::1]:9100", False)):
        config.write_text(f'[metrics]\nlisten = "{listen}"\n')
        if not wrong:
            assert load_settings(config).metrics.listen == listen
            continue
        with pytest.raises(ConfigError) as error:
            load_settings(config)
        assert "[metrics] listen" in str(error.value)
    assert load_settings(tmp_path / "meldbot.toml").metrics.port == 9100


def test_metrics_listen_from_the_environment(monkeypatch):
    monkeypatch.setenv("MELDBOT_METRICS__LISTEN", "127.0.0.1:9100")
    settings = load_settings()
    assert (settings.metrics.host, settings.metrics.port) == ("127.0.0.1", 9100)


def test_the_example_config_sections_work_when_uncommented(tmp_path):
    from pathlib import Path

    example = (Path(__file__).parent.parent / "deploy" / "meldbot.example.toml").read_text("utf-8")
    for section in ("[metrics]", '[logging]', 'listen = "127.0.0.1:9100"', 'format = "json"'):
        assert f"# {section}\n" in example
        example = example.replace(f"# {section}\n", f"{section}\n")
    config = tmp_path / "meldbot.toml"
    config.write_text(example, "utf-8")
    settings = load_settings(config)
    assert settings.metrics.listen == "127.0.0.1:9100" and settings.logging.format == "json"

"""Logging: `[logging] format`, JSON lines that parse, and the canary: a whole report with a unique
story word and display name at DEBUG, in both formats, leaves neither in the log (nor a reference or
user ID in /metrics)."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import ConfigError, load_settings
from bot.logs import CONTENT_LEAKING_LOGGERS, JsonFormatter, configure_logging
from stack import Stack
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import activity, reference_in


@pytest.fixture
def captured():
    """configure_logging(DEBUG, format) into a buffer; the logging set-up is restored afterwards."""
    root = logging.getLogger()
    before = root.level,
    installed = []

    def start(format: str) -> io.StringIO:
        buffer = io.StringIO()
        installed.append(configure_logging("DEBUG", format, stream=buffer))
        return buffer

    yield start
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(before[0])


def canaries() -> tuple[str, str, str]:
    """A story word, a first and a last name that appear nowhere else."""
    tag = uuid.uuid4().hex[:6]
    return f"kwispelvlonder{tag}", f"Zoraida{tag}", f"Brakelmeijer{tag}"


def assert_absent(log: str, *words: str) -> None:
    for word in words:
        assert word.lower() not in log.lower(), f"{word!r} reached the log"


def json_lines(log: str) -> list[dict]:
    lines = [line for line in log.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("format", ["text", "json"])
@pytest.mark.both_databases
async def test_a_whole_report_leaves_no_content_in_the_log_or_the_metrics(database_url, captured, format):
    word, first, last = canaries()
    log = captured(format)
    stack = await Stack.start(database_url)
    try:
        user = f"u{uuid.uuid4().hex[:8]}"
        story = f"Een man schold me net uit aan de balie bij de {word} en dreigde me te slaan"
        await stack.say(user, story, name=f"{first} {last}")
        await stack.say(user, "1 2", name=f"{first} {last}")
        said = await stack.say(user, "verzenden", name=f"{first} {last}")
        reference = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", said).group(0)
        await stack.deliver()
        # The coordinator reads it on the case page, which shows the story and the name.
        await stack.log_in("coco", stack.client)
        page = await stack.client.get(f"/cases/{reference}")
        assert word in await page.text()
        async with TestClient(TestServer(stack.meldbot.web_app())) as client:
            metrics = await (await client.get("/metrics")).text()
    finally:
        await stack.close()
    text = log.getvalue()
    assert "turn platform=chat" in text and "case created reference=" in text  # DEBUG logging did run
    assert_absent(text, word, first, last)
    assert_absent(metrics, word, first, last, reference, user, "coco")
    if format == "json":
        records = json_lines(text)
        assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
        assert any(r["level"] == "DEBUG" for r in records)


@pytest.mark.parametrize("format", ["text", "json"])
async def test_a_report_through_the_teams_route_leaves_no_content_in_the_log(world, captured, format):
    word, first, last = canaries()
    log = captured(format)
    await world.start()
    await world.set_channel()
    user = f"u{uuid.uuid4().hex[:8]}"

    async def say(text: str) -> list[str]:
        body = activity(world.connector.url, text, user=user)
        body["from"]["name"] = f"{first} {last}"
        before = len(world.connector.requests)
        response = await world.post(body)
        assert response.status in (200, 201)
        return [r["activity"].get("text") or "" for r in world.connector.requests[before:] if r["kind"] == "send"]

    await say(f"Een bezoeker schold me net uit aan de balie bij de {word} en noemde me een oplichter")
    reference = reference_in(await say("verzenden"))
    assert await world.app.worker.drain(timeout=30)
    async with world.http.get(f"http://127.0.0.1:{world.port}/metrics") as response:
        metrics = await response.text()
    text = log.getvalue()
    assert "case created reference=" in text
    assert_absent(text, word, first, last)
    assert_absent(metrics, word, first, last, reference, user)
    if format == "json":
        assert all("message" in record for record in json_lines(text))


def test_json_lines_carry_the_fields_and_the_extras(captured):
    log = captured("json")
    logger = logging.getLogger("meldbot.test")
    logger.info("outbox delivered id=%s", 7, extra={"event_id": "$abc", "attempts": 2})
    logger.debug("a debug line with \"quotes\"\nand a newline")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    first, second, third = json_lines(log.getvalue())
    assert first["message"] == "outbox delivered id=7" and first["level"] == "INFO"
    assert first["logger"] == "meldbot.test" and first["event_id"] == "$abc" and first["attempts"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["time"])
    assert second["message"] == "a debug line with \"quotes\"\nand a newline" and second["level"] == "DEBUG"
    assert third["level"] == "ERROR" and "ValueError: boom" in third["exception"]
    assert set(first) == {"time", "level", "logger", "message", "event_id", "attempts"}


def test_text_lines_and_libraries_held_at_warning(captured):
    log = captured("text")
    logging.getLogger("meldbot.test").info("hello")
    assert re.search(r" INFO meldbot\.test: hello$", log.getvalue().strip())
    assert all(logging.getLogger(name).level == logging.WARNING for name in CONTENT_LEAKING_LOGGERS)


def test_configuring_again_replaces_the_handler(captured):
    first = captured("text")
    second = captured("json")
    logging.getLogger("meldbot.test").warning("once")
    assert first.getvalue() == "" and json_lines(second.getvalue())[0]["message"] == "once"


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml", stream=io.StringIO())
    assert isinstance(JsonFormatter(), logging.Formatter)


def test_logging_format_setting(tmp_path, monkeypatch):
    config = tmp_path / "meldbot.toml"
    config.write_text("")
    assert load_settings(config).logging.format == "text"
    config.write_text('[logging]\nformat = "json"\n')
    assert load_settings(config).logging.format == "json"
    config.write_text('[logging]\nformat = "yaml"\n')
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "[logging] format" in str(error.value) and "MELDBOT_LOGGING__FORMAT" in str(error.value)
    config.write_text("")
    monkeypatch.setenv("MELDBOT_LOGGING__FORMAT", "json")
    assert load_settings(config).logging.format == "json"

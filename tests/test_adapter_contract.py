"""The adapter contract, one suite for every platform adapter.

Each platform registers a factory in ADAPTERS; the Matrix and Teams adapters join this list with
their own real back-ends (Synapse, the fake Bot Connector) when they are built.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import pytest

from bot.console import ConsoleAdapter
from bot.platform import Adapter, DeliveryError, InboundMessage, Notification
from dialogs import Reply


@dataclass
class Harness:
    adapter: Adapter
    address: dict  # where a known person can be reached
    seen: Callable[[], str]  # everything that reached the people on the platform


def console_harness() -> Harness:
    out = io.StringIO()
    adapter = ConsoleAdapter(user="anna", language="nl", stdin=io.StringIO(), stdout=out)
    return Harness(adapter, {"user": "anna"}, out.getvalue)


ADAPTERS = [pytest.param(console_harness, id="console")]

NOTIFICATION = Notification(reference="MB-ABC-DEF", title="Nieuwe melding MB-ABC-DEF",
                            lines=(("Soort", "Bedreiging"),), link="https://x.example/cases/MB-ABC-DEF",
                            link_label="Openen", urgent=True)


class RecordingBot:
    """Stands in for the engine: records what the adapter passes on."""

    def __init__(self):
        self.messages: list[InboundMessage] = []
        self.deferred: list[tuple] = []

    async def handle(self, message):
        self.messages.append(message)
        return [Reply("ok")]

    async def handle_coordinator(self, message):
        self.messages.append(message)
        return []

    async def defer_replies(self, platform, address, replies):
        self.deferred.append((platform, address, replies))


@pytest.fixture(params=ADAPTERS)
async def harness(request):
    harness = request.param()
    await harness.adapter.start(RecordingBot())
    try:
        yield harness
    finally:
        await harness.adapter.stop()


async def test_has_a_platform_name_and_a_coordinator_destination(harness):
    assert harness.adapter.platform
    assert harness.adapter.coordinator_destination()


async def test_case_notification_returns_a_thread_root_and_shows_the_link(harness):
    adapter = harness.adapter
    root = await adapter.post_case_notification(adapter.coordinator_destination(), NOTIFICATION, "key-1")
    assert isinstance(root, str) and root
    assert "MB-ABC-DEF" in harness.seen() and NOTIFICATION.link in harness.seen()


async def test_thread_reply_after_the_root(harness):
    adapter = harness.adapter
    destination = adapter.coordinator_destination()
    root = await adapter.post_case_notification(destination, NOTIFICATION, "key-2")
    reply_id = await adapter.post_in_case_thread(destination, root, "MB-ABC-DEF: opgepakt", "key-3")
    assert reply_id and reply_id != root
    assert "MB-ABC-DEF: opgepakt" in harness.seen()


async def test_proactive_reply_to_a_known_person(harness):
    message_id = await harness.adapter.send_replies(harness.address, [Reply("Hoe gaat het met je?")], "key-4")
    assert message_id and "Hoe gaat het met je?" in harness.seen()


async def test_proactive_reply_to_an_unknown_address_is_a_delivery_error(harness):
    with pytest.raises(DeliveryError):
        await harness.adapter.send_replies({"user": "nobody-here"}, [Reply("x")], "key-5")

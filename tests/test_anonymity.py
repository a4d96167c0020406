"""Real anonymity (canary test): an anonymous reporter's name and platform user ID appear in no case
page, case list, export, CLI output, outbox row, audit entry, thread line or log line, while the
coordinator's messages still reach them and their answers come back to the case."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from helpers import TEST_MASTER_KEY
from stack import Stack
from storage import crypto, repo
from storage.models import AuditEntry, Case, CaseEvent, OutboxMessage, Reporter

ROOT = Path(__file__).resolve().parents[1]
USER = "hendrikje.zwanenburg"
NAME = "Hendrikje Zwanenburg"
#: Everything that would identify the anonymous reporter (their chat is `dm-<user>`).
CANARIES = ("zwanenburg", "hendrikje")
ANONYMOUS = ("Een bezoeker schold me net uit aan de balie en noemde me een oplichter", "1 2 6", "verzenden")


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [c for c in CANARIES if c in lowered]


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url)
    yield stack
    await stack.close()


async def say(stack: Stack, text: str) -> str:
    return await stack.say(USER, text, name=NAME)


@pytest.mark.both_databases
async def test_an_anonymous_reporter_is_named_nowhere_yet_stays_reachable(stack, database_url, caplog):
    caplog.set_level(logging.DEBUG)
    named = await stack.report("bob", "Een klant duwde me tegen de deur bij de receptie", "1 2", "verzenden")
    for text in ANONYMOUS:
        said = await say(stack, text)
    reference = re.search(r"MB-[A-Z0-9]{3}-[A-Z0-9]{3}", said).group(0)
    await stack.deliver()

    await stack.log_in()
    control = await (await stack.client.get(f"/cases/{named}")).text()
    assert "Bob" in control  # the control: a named report shows its reporter
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "Anoniem" in page and leaks(page) == []
    listing = await (await stack.client.get("/cases")).text()
    assert reference in listing and leaks(listing) == []

    # Messages still reach the reporter, and their answer comes back to the case.
    assert (await stack.act(reference, "message", text="Wil je dat ik je bel?")).status == 303
    await stack.deliver()
    assert any("Wil je dat ik je bel?" in t for t in stack.chat.texts_to(USER))
    await say(stack, "Liever een bericht, dank je")
    await stack.deliver()
    assert any("Liever een bericht" in line for line in stack.thread_of(reference))
    page = await (await stack.client.get(f"/cases/{reference}")).text()
    assert "Liever een bericht" in page and leaks(page) == []

    # The export for a formal request is refused for an anonymous case, naming no one.
    csrf = await stack.csrf(f"/cases/{reference}")
    export = await stack.client.post(f"/cases/{reference}/export", data={"csrf": csrf}, allow_redirects=False)
    body = await export.text()
    assert export.status == 409 and leaks(body) == []
    confirm = await stack.client.post(f"/cases/{reference}/erase", data={
        "csrf": await stack.csrf(f"/cases/{reference}"), "step": "confirm", "reason_code": "request"})
    assert confirm.status == 200 and leaks(await confirm.text()) == []

    async with stack.meldbot.sessions() as session:  # the full vault: what a worker could open
        outbox = list(await session.scalars(select(OutboxMessage)))
        opened = [json.dumps(m.payload, default=str) for m in outbox if m.sealed is not None]
        audit = list(await session.scalars(select(AuditEntry)))
        reporters = int(await session.scalar(select(func.count()).select_from(Reporter)))
        case = await repo.get_case(session=session, reference=reference)
    assert outbox and all(leaks(row) == [] for row in opened), opened
    assert all(leaks(f"{m.destination} {m.result} {m.last_error}") == [] for m in outbox)
    assert audit and all(leaks(f"{a.actor} {a.case_reference} {json.dumps(a.detail)}") == [] for a in audit)
    assert reporters == 1  # bob's; the anonymous report has no reporter row
    assert case.reporter_id is None and case.conversation_id is None and case.contact is not None
    notifications = " ".join(repr(n) for _, n in stack.chat.room)
    threads = " ".join(line for lines in stack.chat.threads.values() for line in lines)
    assert leaks(notifications) == [] and leaks(threads) == []
    assert leaks(caplog.text) == []

    # The case pages' vault cannot open the link to the reporter at all.
    async with stack.meldbot.pages.sessions() as session:
        hidden = await repo.get_case(session=session, reference=reference)
        with pytest.raises(crypto.NoAccess):
            repo.reporter_conversation_id(session=session, case=hidden)

    # Nor does the CLI, which reads through the same restricted vault.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MELDBOT_")}
    environment.update(PYTHONPATH=str(ROOT), MELDBOT_DATABASE__URL=database_url,
                       MELDBOT_PRIVACY__KEY=crypto.encode_key(TEST_MASTER_KEY))
    for arguments in (["cases", "list", "--json"], ["cases", "list"], ["retention", "purge", "--dry-run"]):
        result = subprocess.run([sys.executable, "-m", "bot.cli", *arguments], capture_output=True, text=True,
                                timeout=120, env=environment, cwd=Path(make_url(database_url).database or ".").parent
                                if make_url(database_url).get_backend_name() == "sqlite" else ROOT)
        assert result.returncode == 0, result.stderr
        assert leaks(result.stdout + result.stderr) == [], arguments
        if arguments[0] == "cases":
            assert reference in result.stdout
    async with stack.meldbot.sessions() as session:
        events = list(await session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
        assert {"coordinator_message", "reporter_message"} <= {e.kind for e in events}
        assert int(await session.scalar(select(func.count()).select_from(Case))) == 2

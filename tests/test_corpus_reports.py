"""Every story of the development corpus through the console platform to a saved case (issue #12):
a story that names kind and place takes 2 messages (story, `verzenden`), any other at most 3 (the
missing kind or place, as the reporter would answer it, then `verzenden`)."""

from __future__ import annotations

import io
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.adapters.console import ConsoleAdapter
from bot.adapters.contract import InboundMessage
from bot.app import build
from bot.config import Settings
from dialogs import Translator
from dialogs.categories import KINDS, PLACES
from helpers import TEST_MASTER_KEY
from storage import repo
from storage.crypto import encode_key

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"MB-[0-9A-Z]{3}-[0-9A-Z]{3}")
_ids = itertools.count()


def corpus() -> list[dict]:
    return [json.loads(line) for path in sorted((ROOT / "tests" / "corpus").glob("stories.*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line]


def details_answer(asked: str, story: dict, language: str) -> str:
    """What a reporter types at the details question: the numbers of their kinds and/or place."""
    t = Translator(language)
    kinds = [str(KINDS.index(k) + 1) for k in story["kinds"]]
    place = story["place"] or "other"
    if f"{len(KINDS) + 1}. {t('place.counter')}" in asked:  # kinds and places in one list
        return " ".join(kinds + [str(len(KINDS) + PLACES.index(place) + 1)])
    if f"1. {t('kind.verbal')}" in asked:
        return " ".join(kinds)
    return str(PLACES.index(place) + 1)


async def test_every_corpus_story_becomes_a_case_in_at_most_three_messages(database_url, tmp_path):
    settings = Settings(organisation={"name": "Gemeente Testdam"}, database={"url": database_url},
                        web={"public_url": "http://meldbot.test"}, privacy={"key": encode_key(TEST_MASTER_KEY)})
    console = ConsoleAdapter(user="reporter", language="nl", stdin=io.StringIO(), stdout=io.StringIO())
    meldbot = await build(settings, {"console": console})
    await console.start(meldbot.engine)
    counts = {2: 0, 3: 0}
    try:
        for story in corpus():
            person = f"reporter-{story['id']}"  # one person per story: per-person limits do not apply

            async def say(text: str) -> str:
                message = InboundMessage(platform="console", conversation=person, sender=person, text=text,
                                         event_id=f"corpus-{next(_ids)}", sender_name=person, address={"user": person})
                return "\n\n".join(r.plain() for r in await meldbot.engine.handle(message))

            sent = 1
            said = await say(story["text"])
            language = story["lang"]
            summary = "verzenden" in said.lower() or "send" in said.lower()
            if not REFERENCE.search(said) and not summary and not _asks_details(said, language):
                raise AssertionError(f"{story['id']}: neither the summary nor a question: {said}")
            if _asks_details(said, language):
                said = await say(details_answer(said, story, language))
                sent += 1
            said = await say("verzenden" if language == "nl" else "send")
            sent += 1
            found = REFERENCE.search(said)
            assert found, f"{story['id']} not saved after {sent} messages: {said}"
            assert sent <= 3, story["id"]
            counts[sent] += 1
            async with meldbot.sessions() as session:
                case = await repo.get_case(session=session, reference=found.group(0))
            assert case is not None and case.kind_codes, story["id"]
    finally:
        await meldbot.db.dispose()
    # Most stories name kind and place: those take two messages.
    assert counts[2] > counts[3], counts


def _asks_details(said: str, language: str) -> bool:
    t = Translator(language)
    return f"1. {t('kind.verbal')}" in said or f"1. {t('place.counter')}" in said


def test_meldbot_chat_takes_two_messages_for_a_story_that_names_kind_and_place(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bot.cli", "chat"], cwd=tmp_path, capture_output=True, text=True,
                            input="ik werd net uitgescholden aan de balie\nverzenden\n", timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert REFERENCE.search(result.stdout), result.stdout

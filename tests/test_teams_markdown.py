"""What reporters and coordinators write (and their display names) reaches Teams as literal text: no
markdown link, image or HTML tag can make a message from the bot look like "log in again here"."""

from __future__ import annotations

import re


from bot.adapters.teams.markdown import escape, reply_markdown
from dialogs import Option, Reply
from teams_harness import world  # noqa: F401 - the `world` fixture
from teams_harness import CHANNEL, TEAM, activity, shown

LINK = "[Log opnieuw in](https://evil.example/login)"
ANCHOR = '<a href="https://evil.example">klik</a>'
IMAGE = "![logo](https://evil.example/logo.png)"
#: Markup Teams would turn into a link or an image: `[text](url)`, `![alt](src)`, `[text][ref]`, `<a`, `<img`.
MARKUP = re.compile(r"(?<!\\)\[[^\]]*(?<!\\)\]\s*[(\[]|<\s*(a|img)\b|\]\(", re.IGNORECASE)


def assert_literal(markdown: str, *texts: str) -> None:
    assert not MARKUP.search(markdown), markdown
    for text in texts:
        assert text in shown(markdown), (text, markdown)


async def test_relayed_words_and_names_arrive_literally_in_the_thread_and_the_chat(world):
    await world.start()
    await world.set_channel()
    world.connector.team_members[TEAM] = {"aad-coco"}
    reference = await world.report()
    root = world.channel_posts()[0]["conversation"]
    # A coordinator whose display name is markup claims the case and writes to the reporter.
    name = "[Servicedesk](https://evil.example/sd)"
    for text in ("oppakken", f"antwoord Zie {IMAGE}"):
        body = activity(world.connector.url, f"<at>Meldbot</at> {text}", conversation=root,
                        conversation_type="channel", channel=CHANNEL, team=TEAM, user="coco")
        body["from"]["name"] = name
        assert (await world.post(body)).status in (200, 201)
    assert await world.app.worker.drain(timeout=30)
    # The reporter answers with a disguised link and an HTML anchor; both are relayed to the thread.
    await world.say(f"Je sessie is verlopen. {LINK}")
    await world.say(f"Of hier: {ANCHOR}")
    assert await world.app.worker.drain(timeout=30)

    thread = world.connector.texts(root)
    relayed = [t for t in thread if "de melder schrijft" in t]
    assert len(relayed) == 2
    assert_literal(relayed[0], LINK)
    assert_literal(relayed[1], ANCHOR)
    assert "&lt;a href" in relayed[1]
    claimed = [t for t in thread + world.connector.texts(CHANNEL) if "opgepakt door" in t]
    assert claimed and all(assert_literal(t, name) is None for t in claimed)
    personal = world.connector.texts("a:personal-anna")
    from_coordinator = [t for t in personal if "logo" in t]
    assert from_coordinator and all(assert_literal(t, IMAGE) is None for t in from_coordinator)
    assert any(reference in t for t in personal)


def test_our_own_formatting_still_works():
    reply = Reply("Kies wat je nodig hebt [optioneel]", title="Wat heb je *nodig*?", hint="Typ de nummers_",
                  options=(Option(number=1, label="Contact <b>nu</b>", selected=True),
                           Option(number=2, label="Nazorg")))
    markdown = reply_markdown(reply)
    assert markdown.startswith("**Wat heb je \\*nodig\\*?**\n\n")
    assert "\n1. ☑ Contact &lt;b&gt;nu&lt;/b&gt;\n2. ☐ Nazorg" in markdown
    assert markdown.endswith("\n\n_Typ de nummers\\__")
    assert "Kies wat je nodig hebt \\[optioneel\\]" in markdown


def test_bare_links_stay_as_typed_and_clickable():
    login = "https://meldbot.example.nl/login/Ab_c-9xY"
    assert escape(f"Open deze link om in te loggen: {login}\nDe link werkt één keer.") == \
        f"Open deze link om in te loggen: {login}  \nDe link werkt één keer."
    # A URL ends where markup would begin; that part is escaped.
    assert escape("https://evil.example/a](https://b)") == "https://evil.example/a\\]\\(https://b\\)"
    assert escape("a &amp; b <img src=x onerror=y>") == "a &amp;amp; b &lt;img src=x onerror=y&gt;"

"""Text for Teams messages: what people wrote is shown literally, never as links, images or HTML.

Teams renders message text as markdown with some HTML. Reporters' and coordinators' words (and
display names) reach the channel and the personal chat through the bot, so a message such as
`[Log opnieuw in](https://evil.example/login)` would otherwise appear as a link from the bot.
"""

from __future__ import annotations

import re
from typing import Sequence

from dialogs import Reply

from bot.adapters.common import option_rows

#: Markdown syntax characters are shown literally with a backslash; HTML is written as entities (so
#: are entities themselves: `&amp;` shows as typed). One table: the turn path escapes every reply.
_ESCAPES = str.maketrans({**{ch: "\\" + ch for ch in "\\`*_~[]()#|"},
                          "&": "&amp;", "<": "&lt;", ">": "&gt;"})
#: A bare URL stays as typed (Teams links it, showing its real target; escaping would break it). It
#: ends at any character that could start markup, which is then escaped like other text.
_URL = re.compile(r"https?://[^\s<>\"'\\`*~\[\](){}|&]+", re.IGNORECASE)


def _escape_text(text: str) -> str:
    return text.translate(_ESCAPES)


def escape(text: str) -> str:
    """`text` as Teams markdown that shows exactly these characters (bare URLs stay clickable)."""
    parts, position = [], 0
    for match in _URL.finditer(text):
        parts.append(_escape_text(text[position:match.start()]))
        parts.append(match.group(0))
        position = match.end()
    parts.append(_escape_text(text[position:]))
    return "".join(parts).replace("\n", "  \n")


def reply_markdown(reply: Reply) -> str:
    """A neutral reply as Teams markdown: its texts escaped, our own bold title, list and hint."""
    parts = []
    if reply.title:
        parts.append(f"**{escape(reply.title)}**")
    if reply.text:
        parts.append(escape(reply.text))
    if reply.options:
        rows = option_rows(reply.options, reply.checklist)
        parts.append("\n".join(f"{number}. {mark}{escape(label)}" for number, mark, label in rows))
    if reply.hint:
        parts.append(f"_{escape(reply.hint)}_")
    return "\n\n".join(parts)


def combined_markdown(replies: Sequence[Reply]) -> str:
    """A turn's replies as one Teams message (one notification, one request to the connector)."""
    return "\n\n".join(reply_markdown(reply) for reply in replies)

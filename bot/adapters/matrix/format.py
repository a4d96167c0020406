"""Neutral replies and notifications as Matrix message content (HTML with a plain-text body)."""

from __future__ import annotations

import re
from html import escape

from dialogs import Reply

from bot.adapters.common import option_rows
from bot.adapters.contract import Notification

HTML = "org.matrix.custom.html"
#: What a client that renders the plain `body` as Markdown or HTML would turn into a link or markup.
_TAG = re.compile(r"(\\*)<(?=[A-Za-z/!?])")
_LINK = re.compile(r"(\\*)\[([^\[\]\n]*?)(\\*)\](?=\()")


def plain_body(text: str) -> str:
    """The `body` of a message that may carry others' words (relayed answers, display names).

    Everything in `formatted_body` is escaped; this neutralises tags and Markdown links in the
    plain fallback, for clients and bridges that render it, so nobody's text becomes a link that
    looks like the bot's own."""
    # A backslash already in front is doubled, so that it cannot undo the escape.
    text = _TAG.sub(lambda m: m.group(1) * 2 + "\\<", text)
    return _LINK.sub(lambda m: m.group(1) * 2 + "\\[" + m.group(2) + m.group(3) * 2 + "\\]", text)


def _paragraphs(text: str) -> str:
    blocks = [b for b in text.split("\n\n") if b.strip()]
    return "".join("<p>" + escape(b).replace("\n", "<br>") + "</p>" for b in blocks)


def reply_content(reply: Reply) -> dict:
    """An `m.text` message: numbered options as an ordered list, ticked ones marked."""
    parts = []
    if reply.title:
        parts.append(f"<p><strong>{escape(reply.title)}</strong></p>")
    parts.append(_paragraphs(reply.text))
    if reply.options:
        start = reply.options[0].number
        items = "".join(f"<li>{mark}{escape(label)}</li>" for _, mark, label in option_rows(reply.options, reply.checklist))
        parts.append(f'<ol start="{start}">{items}</ol>' if start != 1 else f"<ol>{items}</ol>")
    if reply.hint:
        parts.append(f"<p><em>{escape(reply.hint)}</em></p>")
    return {"msgtype": "m.text", "body": plain_body(reply.plain()), "format": HTML, "formatted_body": "".join(parts),
            "m.mentions": {}}


def notification_content(notification: Notification) -> dict:
    """A case notification for the coordinator room: reference, categories, flags, link; no story."""
    rows = "".join(f"<li>{escape(label)}: {escape(value)}</li>" for label, value in notification.lines)
    link = escape(notification.link, quote=True)
    html = (f"<p><strong>{escape(notification.title)}</strong></p><ul>{rows}</ul>"
            f'<p><a href="{link}">{escape(notification.link_label)}: {escape(notification.link)}</a></p>')
    return {"msgtype": "m.text", "body": plain_body(notification.plain()), "format": HTML, "formatted_body": html,
            "m.mentions": {}}


def thread_content(root_id: str, text: str) -> dict:
    """A reply in the thread of a case notification."""
    return {
        "msgtype": "m.text", "body": plain_body(text), "format": HTML,
        "formatted_body": _paragraphs(text) or escape(text),
        "m.mentions": {},
        "m.relates_to": {"rel_type": "m.thread", "event_id": root_id, "is_falling_back": True,
                         "m.in_reply_to": {"event_id": root_id}},
    }

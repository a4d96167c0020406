"""The console platform: the reporter's side of the chat in a terminal (`meldbot chat`).

It implements the same adapter contract as Matrix and Teams: lines typed become inbound
messages, and coordinator notifications are printed as the outbox delivers them.
`/bestand PATH` (or `/file PATH`) sends a file as evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import shutil
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Sequence, TextIO

from dialogs import Reply, Translator

from bot.adapters.contract import Bot, DeliveryError, InboundAttachment, InboundMessage, Notification
from bot.adapters.terminal import read_lines

FILE_COMMANDS = ("/bestand", "/file", "!bestand", "!file")


class ConsoleAdapter:
    """A chat in the terminal, for one user."""

    platform = "console"
    idempotent_sends = False

    def __init__(self, *, user: str, language: str, stdin: TextIO | None = None, stdout: TextIO | None = None):
        self.user = user
        self.language = language
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.bot: Bot | None = None
        self.interactive = self.stdin.isatty() and self.stdout.isatty()
        self._lock = asyncio.Lock()
        self._at_prompt = False

    async def start(self, bot: Bot) -> None:
        self.bot = bot

    async def stop(self) -> None:
        self.bot = None

    def coordinator_destination(self) -> str | None:
        return "coordinator"

    def use_store_key(self, key: bytes) -> None:
        pass  # the terminal keeps no state of its own

    def thread_content_allowed(self, destination: str) -> bool:
        return True  # the "room" is this terminal

    def is_room(self, target: str) -> bool:
        return target.startswith("#")

    async def is_coordinator(self, user_id: str) -> bool:
        return False  # the terminal has no coordinator room: coordinators are listed in [followup]

    async def open_direct_chat(self, address: dict[str, Any]) -> dict[str, Any]:
        raise DeliveryError("the console has only one chat", permanent=True)

    def routes(self) -> list:
        return []

    def _write(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def _wrap(self, line: str, indent: str) -> list[str]:
        if not self.interactive:
            return [line]
        width = max(40, shutil.get_terminal_size().columns - len(indent) - 1)
        return textwrap.wrap(line, width, subsequent_indent="   " if line.lstrip()[:1] in "•[0123456789" else "",
                             drop_whitespace=True) or [""]

    @property
    def prompt(self) -> str:
        return "jij> " if self.language == "nl" else "you> "

    @contextlib.contextmanager
    def _interrupting(self):
        """Output that arrives while the user is at the prompt: clear the prompt, print, prompt again."""
        if self.interactive and self._at_prompt:
            self.stdout.write("\r\x1b[K")
        yield
        if self.interactive and self._at_prompt:
            self.stdout.write(self.prompt)
            self.stdout.flush()

    def show(self, replies: Sequence[Reply]) -> None:
        """Print the bot's replies."""
        for reply in replies:
            rows = [row for line in (reply.plain().splitlines() or [""]) for row in self._wrap(line, "meldbot> ")]
            self._write("\n".join(("meldbot> " if i == 0 else "         ") + row if row else ""
                                  for i, row in enumerate(rows)))
            self._write("")

    def _message(self, line: str) -> InboundMessage | None:
        text = line.rstrip("\n")
        attachments: tuple[InboundAttachment, ...] = ()
        head, _, rest = text.strip().partition(" ")
        if head.lower() in FILE_COMMANDS:
            path = Path(rest.strip()).expanduser()
            try:
                content = path.read_bytes()
            except OSError as error:
                self._write(f"meldbot> {Translator(self.language)('console.file_unreadable', path=str(path), error=error.strerror or error)}")
                return None
            media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            attachments = (InboundAttachment(path.name, media_type, content),)
            text = ""
        return InboundMessage(
            platform=self.platform, conversation=self.user, sender=self.user, text=text,
            event_id=f"console-{uuid.uuid4().hex}", attachments=attachments, sender_name=self.user,
            address={"user": self.user},
        )

    async def run(self) -> None:
        """Read lines until end of input; each line is one message."""
        assert self.bot is not None, "start() first"
        lines = read_lines(self.stdin)
        while True:
            if self.interactive:
                self.stdout.write(self.prompt)
                self.stdout.flush()
            self._at_prompt = True
            line = await anext(lines, None)
            self._at_prompt = False
            if line is None:
                return
            message = self._message(line)
            if message is None:
                continue
            replies = await self.bot.handle(message)
            async with self._lock:
                self.show(replies)

    async def send_replies(self, address: dict[str, Any], replies: Sequence[Reply], idempotency_key: str) -> str:
        if address.get("user") != self.user:
            raise DeliveryError("that person is not in this console", permanent=True)
        async with self._lock:
            with self._interrupting():
                self.show(replies)
        return f"console-{idempotency_key}"

    async def post_case_notification(self, destination: str, notification: Notification, idempotency_key: str) -> str:
        t = Translator(self.language)
        async with self._lock:
            with self._interrupting():
                self._write(f"  ┌─ {t('console.coordinator_room')} ─")
                for line in notification.plain().splitlines():
                    self._write(f"  │ {line}")
                self._write("  └─")
                self._write("")
        return f"console-{idempotency_key}"

    async def post_in_case_thread(self, destination: str, root_id: str, text: str, idempotency_key: str) -> str:
        t = Translator(self.language)
        async with self._lock:
            with self._interrupting():
                self._write(f"  ↳ {t('console.coordinator_room')}: {text}")
        return f"console-{idempotency_key}"

    async def post_in_room(self, destination: str, reply: Reply, idempotency_key: str) -> str:
        t = Translator(self.language)
        async with self._lock:
            with self._interrupting():
                self._write(f"  ┌─ {t('console.coordinator_room')} ─")
                for line in reply.plain().splitlines():
                    self._write(f"  │ {line}")
                self._write("  └─")
        return f"console-{idempotency_key}"

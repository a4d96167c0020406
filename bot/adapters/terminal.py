"""Reading the terminal without blocking the event loop (and without a thread left hanging on exit)."""

from __future__ import annotations

import asyncio
import io
from typing import AsyncIterator, TextIO


async def read_lines(stream: TextIO) -> AsyncIterator[str]:
    """Yield lines from `stream` until end of input.

    Pipes and terminals are read through the event loop's reader, so Ctrl-C stops at once; other
    streams (files, in-memory text) are read directly.
    """
    loop = asyncio.get_running_loop()
    try:
        fd = stream.fileno()
    except (OSError, io.UnsupportedOperation, AttributeError):
        fd = None
    if fd is None:
        for line in iter(stream.readline, ""):
            yield line
        return
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    buffer = b""

    def readable() -> None:
        import os

        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        queue.put_nowait(chunk or None)

    try:
        loop.add_reader(fd, readable)
    except (PermissionError, ValueError, NotImplementedError):  # a regular file: epoll cannot watch it
        for line in iter(stream.readline, ""):
            yield line
        return
    try:
        while True:
            chunk = await queue.get()
            if chunk is None:
                if buffer:
                    yield buffer.decode("utf-8", "replace")
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode("utf-8", "replace") + "\n"
    finally:
        loop.remove_reader(fd)

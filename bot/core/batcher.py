"""A generic group-commit batcher: items that arrive while a transaction runs share the next one.

Alone, an item still runs at once in its own transaction. Nobody gets an answer before the shared
commit; if a batch fails for a reason one item can cause, its items are retried one by one, so an
item that breaks only fails itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Most items that share one transaction.
MAX_BATCH = 32


@dataclass
class Pending(Generic[T]):
    """An item waiting for (or in) a shared transaction."""

    item: T
    future: asyncio.Future
    deadline: float
    started: bool = False


class Batcher(Generic[T, R]):
    """Runs submitted items in shared transactions, one transaction at a time.

    `run` carries out a list of items in ONE transaction and returns one result per item.
    `expired` makes the error of an item that never ran (or ran out of time); `splittable` says
    whether a batch's error may be one item's fault (then each item is retried on its own);
    `order` sorts each batch, so that every process takes its locks in the same order."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R]]],
        *,
        timeout_s: float,
        expired: Callable[[], BaseException],
        splittable: Callable[[BaseException], bool],
        order: Callable[[T], Any] | None = None,
        max_batch: int = MAX_BATCH,
        name: str = "batch",
    ):
        self.run = run
        self.timeout_s = timeout_s
        self.expired = expired
        self.splittable = splittable
        self.order = order
        self.max_batch = max_batch
        self.name = name
        self.queue: list[Pending[T]] = []
        self._drainer: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        """Run `item` in the next transaction and return its result (or raise its error)."""
        loop = asyncio.get_running_loop()
        entry = Pending(item, loop.create_future(), deadline=loop.time() + self.timeout_s)
        entry.future.add_done_callback(_retrieve)
        self.queue.append(entry)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=self.name)
        try:
            # The drainer settles every entry by its deadline (dropped unstarted, or its batch timed out).
            return await asyncio.shield(entry.future)
        except asyncio.CancelledError:
            if not entry.started:
                with contextlib.suppress(ValueError):
                    self.queue.remove(entry)  # never ran: nothing of it is saved
                _settle(entry.future, error=self.expired())
            else:
                # The caller may hold a lock until this item has ended (the engine does, per
                # conversation): the next item behind that lock must not share this one's batch.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(entry.future)
            raise

    async def _drain(self) -> None:
        batch: list[Pending[T]] = []
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                batch = []
                while self.queue and len(batch) < self.max_batch:
                    entry = self.queue.pop(0)
                    if entry.deadline <= loop.time():  # waited too long: answered with an error, never run
                        _settle(entry.future, error=self.expired())
                        continue
                    entry.started = True
                    batch.append(entry)
                if batch:
                    await self._run_batch(batch)
        finally:
            # Stopped (shutdown): nobody may wait for an answer that will not come, and nothing
            # answered with an error may run later.
            pending, self.queue = batch + self.queue, []
            for entry in pending:
                _settle(entry.future, error=self.expired())

    async def _run_batch(self, batch: list[Pending[T]]) -> None:
        loop = asyncio.get_running_loop()
        if self.order is not None:
            batch.sort(key=lambda e: self.order(e.item))
        try:
            async with asyncio.timeout(max(0.1, max(e.deadline for e in batch) - loop.time())):
                results = await self.run([entry.item for entry in batch])
        except Exception as error:  # noqa: BLE001 - handed to the waiting items
            if len(batch) == 1 or not self.splittable(error):
                # The database is down, locked or too slow: retrying item by item would only make
                # everyone wait longer for the same answer.
                for entry in batch:
                    _settle(entry.future, error=error)
                return
            for entry in batch:  # find the item that broke the batch: each on its own
                remaining = entry.deadline - loop.time()
                if remaining <= 0:
                    _settle(entry.future, error=self.expired())
                    continue
                try:
                    async with asyncio.timeout(remaining):
                        (result,) = await self.run([entry.item])
                except Exception as single:  # noqa: BLE001
                    _settle(entry.future, error=single)
                else:
                    _settle(entry.future, result=result)
            return
        for entry, result in zip(batch, results):
            _settle(entry.future, result=result)


def _retrieve(future: asyncio.Future) -> None:
    # An item whose caller went away still ends; its error must not be reported as never retrieved.
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future, *, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

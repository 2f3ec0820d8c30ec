"""Group commit: writes that arrive while one is in flight go to the database together, in the next one.

A burst of downloads (a CI fleet pulling a new version at once) makes two writes per download on the same
collection. On a database that commits each write to disk before acknowledging it (the embedded SecantusDB
runs with `--sync-on-commit`; MongoDB with `j: true`), each write is one commit and one disk flush, one
after another. Here a write waits only for the flush in flight, if any, and then goes out with every write
that queued behind it: one command, one commit, for the lot. A write that comes alone goes out at once, so
nothing waits when nothing is busy. Each caller still gets its own outcome (the result, or the exception,
of its item), and only after the database has acknowledged it.

The flush runs in the context of the caller that starts it (its deadline, its log and trace context) as a
task of its own, so a leader that is cancelled while its flush is in flight (a client that went away) does
not take the other callers' writes down with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# The outcome of each item of a flush, in order: its result, or the exception that is its alone.
Flush = Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]


class GroupCommit(Generic[T, R]):
    """`submit(item)` → `flush([items...])[i]`, with at most one flush in flight and at most `most` items in
    one. Whole-flush failures (the command failed) are raised to every caller of that flush."""

    def __init__(
        self, flush: Flush[T, R], on_flush: Callable[[int], None] = lambda size: None, most: int = 500
    ) -> None:
        self._flush = flush
        self._on_flush = on_flush  # told each flush's size (a metric)
        self._most = most
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        mine: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        entry = (item, mine)
        self._queue.append(entry)
        try:
            while not mine.done():
                if self._in_flight is None:
                    # The first caller to find nothing in flight leads the next flush (its own item among
                    # the first `most` queued: the queue is served in order).
                    batch, self._queue[:] = self._queue[: self._most], self._queue[self._most :]
                    self._in_flight = asyncio.ensure_future(self._run(batch))
                waits: list[asyncio.Future[Any]] = [mine, self._in_flight]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            queued = [e for e in self._queue if e is not entry]
            if len(queued) < len(self._queue):
                self._queue[:] = queued  # not sent yet: never sent
            else:  # in a flush: it lands or fails without us; nobody reads its outcome
                mine.add_done_callback(_retrieved)
            raise
        return mine.result()

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            self._on_flush(len(batch))
            outcomes = await self._flush([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        else:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        finally:
            self._in_flight = None


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

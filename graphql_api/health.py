"""Dependency watches: a background probe per dependency (database, object store) that says, within a few
seconds, when it stopped answering, so requests fail fast with a typed outage error instead of hanging,
and recover by themselves when it answers again."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import anyio

log = logging.getLogger("modelhub.health")

Probe = Callable[[], Awaitable[object]]
T = TypeVar("T")


async def pause(stopped: asyncio.Event, seconds: float) -> None:
    """Waits `seconds`, or less if `stopped` is set meanwhile: how a background loop sleeps so that it can
    be stopped between two pieces of work rather than cancelled in the middle of one (a driver call
    cancelled mid-flight leaves its connection to the garbage collector)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopped.wait()


async def unless_stopped(step: Coroutine[Any, Any, T], stopped: asyncio.Event) -> tuple[T | None, bool]:
    """`step`'s result and False; or None and True when `stopped` is set first, `step` then cancelled: for a
    wait that is safe to abandon (a change stream's wait of up to half a second, whose reader resumes from
    its stored position), so that stopping does not wait it out. The driver closes the connection of a
    command cancelled in flight."""
    work = asyncio.ensure_future(step)
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})
    if work.cancelled():
        return None, True
    return work.result(), False


class TaskSet:
    """Background tasks nobody awaits, kept referenced until they end (the event loop holds only weak
    references to tasks) and drained at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(
        self, work: Coroutine[Any, Any, T], context: contextvars.Context | None = None
    ) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, seconds: float) -> None:
        """Waits up to `seconds` for the tasks still running, then cancels them."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)
        for task in set(self._tasks):
            task.cancel()


class Watch:
    """Probes a dependency every `interval` seconds, each probe bounded by `timeout`; `failures` failed
    probes in a row mark it down (at most `interval + failures * timeout` seconds after it stopped), and
    one good probe marks it up again. Work run under `cancelled_when_down` is cancelled the moment it goes
    down (unless released first)."""

    def __init__(
        self,
        name: str,
        probe: Probe,
        *,
        interval: float = 0.5,
        timeout: float = 1.5,
        failures: int = 2,
    ) -> None:
        self.name = name
        self.probe = probe
        self.interval = interval
        self.timeout = timeout
        self.failures = failures
        self.up = True
        self.changed_at = time.monotonic()
        self.last_error: str | None = None
        self._failed = 0
        self._guarded: set[anyio.CancelScope] = set()
        self._stopped = asyncio.Event()

    @property
    def bound_seconds(self) -> float:
        """The longest a dependency can be dead before this watch says so."""
        return self.interval + self.failures * self.timeout

    @contextlib.contextmanager
    def cancelled_when_down(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope this watch cancels if the dependency goes down while it is open and not released:
        no task per request, just a set entry."""
        scope = anyio.CancelScope()
        self._guarded.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._guarded.discard(scope)

    def release(self, scope: anyio.CancelScope) -> None:
        self._guarded.discard(scope)

    async def check(self) -> bool:
        """One probe; updates the state and returns whether the dependency answered."""
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that races the
            # probe's completion, and the task would then never stop.
            async with asyncio.timeout(self.timeout):
                await self.probe()
        except Exception as exc:  # any failure to answer counts; the reason goes to the log
            self.last_error = type(exc).__name__
            self._failed += 1
            if self.up and self._failed >= self.failures:
                self._set(False)
                log.error("%s is not answering (%s): failing its requests fast", self.name, self.last_error)
            return False
        self._failed = 0
        if not self.up:
            self._set(True)
            log.warning("%s answers again", self.name)
        return True

    def _set(self, up: bool) -> None:
        self.up = up
        self.changed_at = time.monotonic()
        if not up:
            for scope in list(self._guarded):
                scope.cancel()

    async def run(self) -> None:
        """Probes until `stop()`; a probe under way is let finish."""
        while not self._stopped.is_set():
            ok = await self.check()
            # After a failure, probe again at once: the bound is reached in `failures` timeouts.
            await pause(self._stopped, self.interval if ok or not self.up else 0)

    def stop(self) -> None:
        self._stopped.set()


class Health:
    """The app's watches: `database` and `store`."""

    def __init__(self, database: Watch, store: Watch) -> None:
        self.database = database
        self.store = store

    def all(self) -> tuple[Watch, ...]:
        return (self.database, self.store)

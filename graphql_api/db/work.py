"""Owner of a request's in-flight database work: the id its raw scans carry (`comment`) and killing them.

SecantusDB 0.7 (the test and embedded database) differs from MongoDB here, and the code stays correct on both:
- `maxTimeMS` is honoured cooperatively from when a command starts running: a scan checks it every 64
  documents, an aggregation between stages only (a `$group` over a large match is not interrupted). Many
  concurrent aggregations share one interpreter, so each crawls and may run well past its budget: fifty of
  them kept the database busy for minutes after every client had given up. Raw scans are therefore cut into
  bounded pieces (`events.stats`), the deadline is checked between pieces, and only a few run at once
  (`limits.ScanSlots`).
- `currentOp` lists one entry per connection with only its last command's name: no `comment`, so the filter
  below matches nothing there. `killOp` closes that connection and lets the command run to its end.
- A command whose client gave up (a client-side timeout closes its connection) runs on to its end all the
  same. So a piece's slot is not given back when its request stops waiting for it, only once the database
  has answered it (`piece`): the slots count the database's real work, and a flood of abandoned requests
  cannot pile work up behind the caps.
On a MongoDB replica set `currentOp` finds the request's operations by `command.comment` and `killOp` stops
them at their next interrupt point (needs the `inprog` and `killop` privileges; without them the kill is
skipped and logged, and the pieces and maxTimeMS still bound the work).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import pymongo
from pymongo.errors import ExecutionTimeout, PyMongoError

from ..documents import DownloadEvent
from ..health import TaskSet
from ..limits import take_slot

log = logging.getLogger("modelhub.db")
T = TypeVar("T")
# How long past its request's deadline a piece's database work may go on before its connection is closed
# (the database is stuck: stopped, or far slower than its pieces were sized for). Its slot is held meanwhile.
STRAGGLER_SECONDS = 30.0
_pieces = TaskSet()  # pieces of raw reads, kept referenced until the database has answered them

_request: ContextVar[tuple[str, float] | None] = ContextVar("request", default=None)  # (id, deadline)


def request_id() -> str | None:
    """The id of the request this code runs for (sent as the `comment` of its raw scans), if any."""
    current = _request.get()
    return current[0] if current is not None else None


def remaining() -> float | None:
    """Seconds left before the request's deadline (None outside a request)."""
    current = _request.get()
    return current[1] - time.monotonic() if current is not None else None


def expired() -> ExecutionTimeout:
    """The error of work refused because its request's deadline passed (DATABASE_TIMEOUT to the client)."""
    return ExecutionTimeout("the request's deadline passed", code=50)


def check_deadline() -> None:
    """Between the pieces of a long read: raises once the request's deadline has passed."""
    left = remaining()
    if left is not None and left <= 0:
        raise expired()


@contextmanager
def tagged(rid: str, seconds: float) -> Iterator[None]:
    """Runs the enclosed code for request `rid`, whose deadline is `seconds` from now."""
    token = _request.set((rid, time.monotonic() + seconds))
    try:
        yield
    finally:
        _request.reset(token)


async def kill(rid: str) -> int:
    """Kills the operations still running for request `rid`; how many were found."""
    client = DownloadEvent.get_pymongo_collection().database.client
    try:
        with pymongo.timeout(2.0):
            found = await client.admin.command({"currentOp": 1, "command.comment": rid})
            inprog = found.get("inprog", [])
            ops = [op["opid"] for op in inprog if op.get("command", {}).get("comment") == rid]
            for opid in ops:
                await client.admin.command("killOp", op=opid)
    except PyMongoError as exc:
        log.warning("could not kill the database work of an abandoned request: %s", type(exc).__name__)
        return 0
    return len(ops)


async def piece(read: Callable[[int | None], Awaitable[T]]) -> T:
    """Runs one bounded piece of a raw read, `read(max_time_ms)`, in a raw-scan slot (`limits.take_slot`),
    within the request's deadline; `max_time_ms` is the time left (None outside a request), for the
    command's `maxTimeMS`, and `read` tags its commands with `request_id()` (`comment`) so `kill` finds them.

    Waiting for a slot ends at the deadline (DATABASE_TIMEOUT, without touching the database). The read
    runs in a task of its own, outside the request's client-side timeout (`pymongo.timeout` would close
    the connection at the deadline and leave the command running): the request stops waiting at its
    deadline or when cancelled, while the task waits for the database's answer (maxTimeMS, or `kill`, ends
    it there) and only then gives the slot back, at most STRAGGLER_SECONDS past the deadline."""
    check_deadline()
    release = await take_slot(remaining())
    if release is None:
        raise expired()
    try:
        check_deadline()  # the wait for the slot may have taken the rest of the request's time
    except BaseException:
        release()
        raise
    left = remaining()
    max_time_ms = None if left is None else max(1, int(left * 1000))

    async def bounded() -> T:
        async with asyncio.timeout(None if left is None else left + STRAGGLER_SECONDS):
            return await read(max_time_ms)

    # A fresh context: no client-side deadline inherited from the request (maxTimeMS bounds the command).
    task = _pieces.spawn(bounded(), context=contextvars.Context())

    def ended(done: asyncio.Task[T]) -> None:
        release()
        if not done.cancelled():
            done.exception()  # retrieved: an abandoned piece's error is nobody's to raise

    task.add_done_callback(ended)
    await asyncio.wait({task}, timeout=left)
    if not task.done():
        raise expired()  # the task goes on until the database has answered it
    return task.result()


async def drain(seconds: float) -> None:
    """Waits up to `seconds` for the pieces still running on the database (at shutdown), then cancels
    them."""
    await _pieces.drain(seconds)

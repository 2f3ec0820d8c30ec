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
On a MongoDB replica set `currentOp` finds the request's operations by `command.comment` and `killOp` stops
them at their next interrupt point (needs the `inprog` and `killop` privileges; without them the kill is
skipped and logged, and the pieces and maxTimeMS still bound the work).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import pymongo
from pymongo.errors import ExecutionTimeout, PyMongoError

from ..documents import DownloadEvent

log = logging.getLogger("modelhub.db")

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

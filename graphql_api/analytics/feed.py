"""The live download feed: status transitions of download events as they happen, filtered, resumable,
with a bounded buffer per subscriber so that a slow one can never hold anything else up."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bson

from ..db import events as events_db
from ..documents import DownloadEvent, DownloadStatus
from ..errors import DomainError, InvalidInput
from ..queries import EventQuery

DEFAULT_BUFFER = 1000


class SubscriberTooSlow(DomainError):
    """The subscriber fell more than its buffer behind; it should reconnect with its last cursor."""

    code = "SUBSCRIBER_TOO_SLOW"


@dataclass(frozen=True)
class FeedItem:
    cursor: str
    status: DownloadStatus
    event: DownloadEvent


def _any_of(attr: str) -> Callable[[list[Any], DownloadEvent], bool]:
    return lambda values, e: getattr(e, attr) in values


# How each filter field matches one event in memory; like the collection owners' translations, a set field
# without an entry is refused, never ignored.
MATCHERS: Mapping[str, Callable[[Any, DownloadEvent], bool]] = {
    "model_names": _any_of("model_name"),
    "versions": _any_of("model_version"),
    "project_names": _any_of("project_name"),
    "engineers": _any_of("engineer"),
    "statuses": _any_of("status"),
    "modes": _any_of("mode"),
    "since": lambda v, e: e.started_at >= v,
    "until": lambda v, e: e.started_at < v,
    "min_bytes": lambda v, e: e.bytes_sent >= v,
}


def matcher(query: EventQuery) -> Callable[[DownloadEvent], bool]:
    query.validate()
    checks = []
    for f in dataclasses.fields(query):
        value = getattr(query, f.name)
        if value is None or value == []:
            continue
        if f.name not in MATCHERS:
            raise TypeError(f"filter field {f.name!r} has no matcher for the live feed")
        checks.append((MATCHERS[f.name], value))
    return lambda event: all(check(value, event) for check, value in checks)


def encode_cursor(token: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(bson.encode(token)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        return dict(bson.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))))
    except (ValueError, binascii.Error, bson.errors.BSONError) as exc:
        raise InvalidInput("after", "malformed cursor") from exc


async def follow(
    query: EventQuery, after: str | None = None, buffer: int = DEFAULT_BUFFER
) -> AsyncIterator[FeedItem]:
    """Transitions matching `query`, from now, or from just after the cursor `after` (nothing missed).

    A reader task fills a queue of at most `buffer` items; when a subscriber falls that far behind, the
    reader stops and the subscriber gets SubscriberTooSlow after the items already queued.
    """
    matches = matcher(query)
    resume = decode_cursor(after) if after else None
    queue: asyncio.Queue[FeedItem | None] = asyncio.Queue(maxsize=buffer)

    failure: list[Exception] = []

    async def read() -> None:
        try:
            async for change in events_db.watch_transitions(resume):
                if not matches(change.event):
                    continue
                if queue.full():
                    break
                queue.put_nowait(FeedItem(encode_cursor(change.token), change.status, change.event))
        except Exception as exc:  # the database went away: the subscriber gets an error, not silence
            failure.append(exc)
        await queue.put(None)  # the end marker, after everything already queued

    reader = asyncio.create_task(read())
    try:
        while (item := await queue.get()) is not None:
            yield item
        if failure:
            raise failure[0]
        raise SubscriberTooSlow(
            f"the subscriber fell more than {buffer} events behind; reconnect with `after` set to the "
            "cursor of the last event it received"
        )
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader

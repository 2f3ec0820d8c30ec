"""The live download feed: status transitions of download events as they happen, filtered, resumable,
from one change stream per instance shared by every subscriber, with a bounded buffer per subscriber so
that a slow one can never hold anything else up."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ..db import events as events_db
from ..documents import DownloadEvent
from ..errors import InvalidInput
from ..metrics import Metrics
from ..queries import EventQuery
from ..scope import Scope
from .feed_items import (
    FeedEnded,
    FeedItem,
    FeedLimits,
    SubscriberTooSlow,
    SubscriptionLimitReached,
    decode_cursor,
    item_of,
    matcher,
    refused_cursor,
)

DEFAULT_BUFFER = 1000

log = logging.getLogger("modelhub.feed")


def _nothing(event: DownloadEvent) -> bool:
    return False


@dataclass(eq=False)
class _Subscriber:
    owner: str
    matches: Callable[[DownloadEvent], bool]
    buffer: int
    queue: asyncio.Queue[FeedItem | None] = dataclasses.field(default_factory=asyncio.Queue)
    live: bool = False  # fed by the shared stream; else still catching up on a stream of its own
    last: str | None = None  # the cursor of the last item given to it while catching up
    catch_up: asyncio.Task[None] | None = None  # its own stream while catching up
    # Joined the shared stream ahead of it: it has every transition up to here already.
    skip_through: events_db.Position | None = None
    ended: Exception | None = None

    def offer(self, item: FeedItem) -> bool:
        """Queues `item` if it matches, without waiting; False when the subscriber is a buffer behind."""
        if not self.matches(item.event):
            return True
        if self.queue.qsize() >= self.buffer:
            return False
        self.queue.put_nowait(item)
        return True


class Hub:
    """The live feed of one instance: ONE change stream, shared by every subscriber, fanned out in memory
    (each subscriber's filter is applied here, to the events of the one stream), so subscribers cost memory
    and not database work. Each subscriber has a queue of at most `buffer` items; one that falls that far
    behind is ended with SUBSCRIBER_TOO_SLOW and never holds the stream or anyone else up.

    The stream opens with the first subscriber and closes with the last. A subscriber resuming after a
    cursor is served from the recent history the hub keeps when the cursor is in it; otherwise it replays
    on a change stream of its own from the cursor until it reaches what the shared stream has, then joins
    it: nothing is missed or repeated at the switch. It reaches it at the same event (same resume token:
    both streams are opened alike by `events_db.watch_transitions`, and a change's `_id` is its place in the
    oplog), or, on a quiet instance, at the head of the history (an empty batch's postBatchResumeToken, a
    `Head`): the tokens' positions (`events_db.position`) say which transitions it already has. Were tokens
    ever to have no position or to differ, it would only stay on its own stream (capped by `catching_up`
    and `catching_up_per_principal`), never miss an event. A cursor past the database's present (made up,
    not given by a stream) is refused with INVALID_INPUT before it holds anything, and so is one the
    database refuses when the replay opens.
    When the shared stream fails, every subscriber is ended with the error (FEED_ENDED for a stream that
    just ends) and can resume with the cursor of the last update it got; the next subscriber opens a new
    stream.
    """

    def __init__(
        self, buffer: int = DEFAULT_BUFFER, limits: FeedLimits | None = None, metrics: Metrics | None = None
    ) -> None:
        self.buffer = buffer
        self.limits = limits or FeedLimits()
        self.metrics = metrics
        self._subscribers: set[_Subscriber] = set()
        self._owners: collections.Counter[str] = collections.Counter()
        self._catching_up = 0
        self._catching_up_by: collections.Counter[str] = collections.Counter()
        self._reader: asyncio.Task[None] | None = None
        # The recent items of the shared stream and the sequence number of each one's cursor.
        self._history: collections.deque[FeedItem] = collections.deque(maxlen=max(buffer, 1))
        self._positions: dict[str, int] = {}
        self._next = 0
        # How far the shared stream has read (every transition up to it is published), and the position
        # after which the history holds every transition (None: not known yet).
        self._head: events_db.Position | None = None
        self._floor: events_db.Position | None = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def follow(
        self, scope: Scope, query: EventQuery, owner: str, after: str | None = None
    ) -> AsyncIterator[FeedItem]:
        """Transitions matching `query` within the projects `scope` may read (as it stands when the
        subscription starts), from now, or from just after the cursor `after` (nothing missed), for the
        principal `owner`; SubscriptionLimitReached when a cap is reached. The shared stream carries every
        project's events: each subscriber's scope is applied here, in memory, like its filter."""
        query.validate()
        narrowed = scope.events(query)
        matches = matcher(narrowed) if narrowed is not None else _nothing
        resume = decode_cursor(after) if after else None
        start = events_db.position(resume)
        if start is not None and (self._head is None or not start.at_or_before(self._head)):
            await self._check_present(start)
        # No await from here until the subscriber has joined or started its replay.
        resuming = after is not None and after not in self._positions and not self._covers(start)
        self._admit(owner, resuming)
        sub = _Subscriber(owner, matches, self.buffer)
        self._add(sub)
        try:
            if after is None:
                sub.live = True
            elif not (self._join(sub, after) or self._join_at(sub, start)):
                sub.catch_up = self._start_catch_up(sub, resume)
            while (item := await sub.queue.get()) is not None:
                yield item
            if sub.ended is not None:
                raise sub.ended
        finally:
            self._remove(sub)
            if sub.catch_up is not None:
                sub.catch_up.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sub.catch_up

    async def _check_present(self, start: events_db.Position) -> None:
        """Refuses a cursor past the database's present (asked only for one past what the shared stream has
        read): no stream gave it, and replaying from it would hold a stream and a slot for nothing."""
        now = events_db.position(await events_db.present())
        if now is not None and events_db.beyond(start, now):
            raise InvalidInput("after", "the cursor is past the present: it is not one this feed gave")

    def _admit(self, owner: str, resuming: bool) -> None:
        limits = self.limits
        if limits.per_principal is not None and self._owners[owner] >= limits.per_principal:
            self._refused("principal")
            raise SubscriptionLimitReached(
                f"{owner} holds {limits.per_principal} live subscriptions on this instance, the most a "
                "principal may (MODELHUB_FEED_MAX_SUBSCRIPTIONS_PER_PRINCIPAL): end one first"
            )
        if limits.per_instance is not None and len(self._subscribers) >= limits.per_instance:
            self._refused("instance")
            raise SubscriptionLimitReached(
                f"this instance holds its most live subscriptions ({limits.per_instance}, "
                "MODELHUB_FEED_MAX_SUBSCRIPTIONS): retry later"
            )
        per_owner = limits.catching_up_per_principal
        if resuming and per_owner is not None and self._catching_up_by[owner] >= per_owner:
            self._refused("catch_up")
            raise SubscriptionLimitReached(
                f"{owner} has {per_owner} subscriptions replaying from a cursor on this instance already, "
                "the most a principal may (MODELHUB_FEED_MAX_CATCHING_UP_PER_PRINCIPAL): retry once one "
                "has caught up"
            )
        if resuming and limits.catching_up is not None and self._catching_up >= limits.catching_up:
            self._refused("catch_up")
            raise SubscriptionLimitReached(
                f"{limits.catching_up} subscribers are replaying from a cursor on this instance already "
                "(MODELHUB_FEED_MAX_CATCHING_UP): retry shortly"
            )

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.feed_refused.labels(reason).inc()

    def _add(self, sub: _Subscriber) -> None:
        self._subscribers.add(sub)
        self._owners[sub.owner] += 1
        if self.metrics is not None:
            self.metrics.feed_subscribers.inc()
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    def _remove(self, sub: _Subscriber) -> bool:
        """Forgets a subscriber (once); the shared stream closes with the last one."""
        if sub not in self._subscribers:
            return False
        self._subscribers.discard(sub)
        self._owners[sub.owner] -= 1
        if not self._owners[sub.owner]:
            del self._owners[sub.owner]
        if self.metrics is not None:
            self.metrics.feed_subscribers.dec()
        if not self._subscribers and self._reader is not None:
            self._reader.cancel()
            self._reader = None
            self._forget_history()
        return True

    def _end(self, sub: _Subscriber, reason: Exception) -> None:
        """Ends a subscriber after the items already queued for it (there is always room for the marker:
        offer keeps at most `buffer` items)."""
        if self._remove(sub):
            sub.ended = reason
            sub.queue.put_nowait(None)

    def _too_slow(self, sub: _Subscriber) -> None:
        self._refused("slow")
        self._end(
            sub,
            SubscriberTooSlow(
                f"the subscriber fell more than {self.buffer} events behind; reconnect with `after` set to "
                "the cursor of the last event it received"
            ),
        )

    def _forget_history(self) -> None:
        self._history.clear()
        self._positions.clear()
        self._head = self._floor = None

    def _covers(self, at: events_db.Position | None) -> bool:
        """Whether the shared stream will have given a subscriber every transition after `at` once it has
        the history's: the history holds every one after `_floor`, and after its own first item."""
        if at is None:
            return False
        if self._floor is not None and self._floor.at_or_before(at):
            return True
        first = self._history[0].position if self._history else None
        return first is not None and first.at_or_before(at)

    def _join(self, sub: _Subscriber, cursor: str) -> bool:
        """If the shared stream has had the item of `cursor`, the subscriber gets the later ones from the
        history and then every new one: True. No await here, so nothing can slip in between."""
        position = self._positions.get(cursor)
        if position is None:
            return False
        first = self._next - len(self._history)
        for item in itertools.islice(self._history, position - first + 1, None):
            if not sub.offer(item):
                self._too_slow(sub)
                return True
        sub.live = True
        return True

    def _join_at(self, sub: _Subscriber, at: events_db.Position | None) -> bool:
        """If the subscriber has every transition up to `at` and the shared stream has (or will give) every
        one after it, it gets those from the history and then every new one: True. A subscriber ahead of the
        shared stream skips what it will publish up to `at`. No await here either."""
        if at is None or not self._covers(at):
            return False
        for item in self._history:
            if item.position is not None and item.position.at_or_before(at):
                continue
            if not sub.offer(item):
                self._too_slow(sub)
                return True
        if self._head is None or not at.at_or_before(self._head):
            sub.skip_through = at
        sub.live = True
        return True

    def _at_head(self, at: events_db.Position | None) -> None:
        """The shared stream has given every transition up to `at`, and will give every one after it."""
        if at is None:
            return
        if self._head is None or self._head.at_or_before(at):
            self._head = at
        if self._floor is None:
            self._floor = at

    def _publish(self, item: FeedItem) -> None:
        if len(self._history) == self._history.maxlen:
            dropped = self._history[0]
            self._positions.pop(dropped.cursor, None)
            if dropped.position is not None:
                self._floor = dropped.position
        self._history.append(item)
        self._positions[item.cursor] = self._next
        self._next += 1
        if item.position is not None:
            self._head = item.position
        for sub in list(self._subscribers):
            if sub.live:
                if sub.skip_through is not None:
                    if item.position is not None and item.position.at_or_before(sub.skip_through):
                        continue  # it has this one from its own stream already
                    sub.skip_through = None
                if not sub.offer(item):
                    self._too_slow(sub)
            elif sub.last == item.cursor:
                # It has this one from its own stream; every later one comes from here.
                sub.live = True
                if sub.catch_up is not None:
                    sub.catch_up.cancel()

    def _stream_count(self, purpose: str, delta: int) -> None:
        if self.metrics is not None:
            self.metrics.feed_streams.labels(purpose).inc(delta)

    async def _read(self) -> None:
        """The shared stream: every transition, to every live subscriber."""
        self._stream_count("live", 1)
        failure: Exception = FeedEnded("the live feed's change stream ended; reconnect with `after`")
        try:
            async for change in events_db.watch_transitions(None):
                if isinstance(change, events_db.Head):
                    self._at_head(events_db.position(change.token))
                else:
                    self._publish(item_of(change))
        except Exception as exc:  # the database went away: subscribers get an error, not silence
            failure = exc
        finally:
            self._stream_count("live", -1)
        if asyncio.current_task() is self._reader:
            self._reader = None
            self._forget_history()
            for sub in list(self._subscribers):
                self._end(sub, failure)

    def _start_catch_up(self, sub: _Subscriber, resume: dict[str, Any] | None) -> asyncio.Task[None]:
        """Counted from now until the task is done (even if it is cancelled before it starts), so a burst of
        resuming subscribers cannot all pass the cap before the first stream opens."""
        self._catching_up += 1
        self._catching_up_by[sub.owner] += 1
        self._stream_count("catch_up", 1)
        task = asyncio.create_task(self._catch_up(sub, resume))
        task.add_done_callback(functools.partial(self._caught_up, sub.owner))
        return task

    def _caught_up(self, owner: str, task: asyncio.Task[None]) -> None:
        self._catching_up -= 1
        self._catching_up_by[owner] -= 1
        if not self._catching_up_by[owner]:
            del self._catching_up_by[owner]
        self._stream_count("catch_up", -1)

    async def _catch_up(self, sub: _Subscriber, resume: dict[str, Any] | None) -> None:
        """Replays from `resume` on a stream of its own until the shared stream has what it replayed."""
        failure: Exception = FeedEnded("the live feed's change stream ended; reconnect with `after`")
        try:
            async for change in events_db.watch_transitions(resume):
                if sub.live or sub not in self._subscribers:
                    return
                if isinstance(change, events_db.Head):
                    # Caught up with the history as it stands: join without waiting for a new event.
                    if self._join_at(sub, events_db.position(change.token)):
                        return
                    continue
                item = item_of(change)
                if not sub.offer(item):
                    self._too_slow(sub)
                    return
                sub.last = item.cursor
                if self._join(sub, item.cursor) or self._join_at(sub, item.position):
                    return
        except Exception as exc:
            failure = exc if sub.last is not None else refused_cursor(exc)
        if not sub.live:
            self._end(sub, failure)

    async def close(self) -> None:
        """Ends the shared stream (at shutdown)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

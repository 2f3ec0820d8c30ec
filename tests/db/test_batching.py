"""Group commit (db/batching.py) on its own, and the download-event writes that use it (db/events/writes.py) on a
real database: what queues while a flush is in flight goes out together, and each caller gets its own
outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from beanie import PydanticObjectId

from graphql_api.config import Settings
from graphql_api.db import connect
from graphql_api.db import events as events_db
from graphql_api.db.batching import GroupCommit
from graphql_api.documents import DownloadEvent, DownloadMode, DownloadStatus, utcnow


class Recorder:
    """A flush that records its batches and waits for `release` before answering: item * 10, or the
    exception that is the item's own when the item is negative."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_next: Exception | None = None

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        return [ValueError(f"item {i}") if i < 0 else i * 10 for i in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_writes_queued_behind_a_flush_go_together_in_the_next() -> None:
    """A lone write goes out at once; the 9 that arrive while it is in flight go out as one flush of 9."""
    flush = Recorder()
    group: GroupCommit[int, int] = GroupCommit(flush)
    first = asyncio.create_task(group.submit(1))
    await settle()
    rest = [asyncio.create_task(group.submit(i)) for i in range(2, 11)]
    await settle()
    assert flush.batches == [[1]]
    flush.release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [i * 10 for i in range(2, 11)]
    assert flush.batches == [[1], list(range(2, 11))]


async def test_each_caller_gets_its_own_outcome() -> None:
    """An item that fails alone fails only its caller; the items beside it in the flush succeed."""
    flush = Recorder()
    flush.release.set()
    group: GroupCommit[int, int] = GroupCommit(flush)
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, -2, 3)), return_exceptions=True)
    assert outcomes[0] == 10 and outcomes[2] == 30
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "item -2"


async def test_a_failed_flush_fails_its_callers_only() -> None:
    """A flush whose command fails raises to each of its callers; the next flush still goes out."""
    flush = Recorder()
    group: GroupCommit[int, int] = GroupCommit(flush)
    flush.fail_next = ConnectionError("the database went away")
    first = asyncio.create_task(group.submit(1))
    await settle()
    second = asyncio.create_task(group.submit(2))
    await settle()
    flush.release.set()
    with pytest.raises(ConnectionError):
        await first
    assert await second == 20
    assert flush.batches == [[1], [2]]


async def test_a_flush_takes_at_most_its_bound() -> None:
    """`most` bounds a flush: 7 queued writes with a bound of 3 go out as 3, 3 and 1 after the first."""
    flush = Recorder()
    group: GroupCommit[int, int] = GroupCommit(flush, most=3)
    tasks = [asyncio.create_task(group.submit(i)) for i in range(8)]
    await settle()
    flush.release.set()
    assert await asyncio.gather(*tasks) == [i * 10 for i in range(8)]
    assert [len(b) for b in flush.batches] == [1, 3, 3, 1]


async def test_cancelled_callers() -> None:
    """A caller cancelled before its write is sent takes it out of the queue; a leader cancelled while its
    flush is in flight does not take the other writes of that flush down."""
    flush = Recorder()
    sizes: list[int] = []
    group: GroupCommit[int, int] = GroupCommit(flush, on_flush=sizes.append)
    leader = asyncio.create_task(group.submit(1))
    await settle()
    follower = asyncio.create_task(group.submit(2))
    queued = asyncio.create_task(group.submit(3))
    await settle()
    queued.cancel()
    await settle()
    assert flush.batches == [[1]]
    leader.cancel()
    await settle()
    flush.release.set()
    assert await follower == 20
    assert flush.batches == [[1], [2]] and sizes == [1, 1]
    assert leader.cancelled() and queued.cancelled()


def an_event(**fields: Any) -> DownloadEvent:
    return DownloadEvent(
        model_id=PydanticObjectId(), model_name="m", model_version=1, project_name="p", size_bytes=10,
        engineer="alice", mode=DownloadMode.STREAM, status=DownloadStatus.IN_PROGRESS, started_at=utcnow(),
        **fields,
    )  # fmt: skip


async def test_event_writes_in_one_burst(settings: Settings, db: Any) -> None:
    """Fifty events inserted and finished at once are each stored once and finished once (one flush for
    all but the first of each); a retried insert meets its own document; a second finish of an event is
    refused while a retry of its own finish is recognised."""
    sizes: list[tuple[str, int]] = []
    async with connect(settings.mongo_uri or "", settings.mongo_db):
        writes = events_db.EventWrites(lambda write, size: sizes.append((write, size)))
        events = [an_event() for _ in range(50)]
        await asyncio.gather(*(writes.insert(e) for e in events))
        await writes.insert(events[0])  # a retry whose first attempt was written
        now = utcnow()

        def change(event: DownloadEvent, transition: str) -> events_db.EventFinish:
            fields = {"bytes_sent": 10, "finished_at": now}
            return events_db.EventFinish(event.id, DownloadStatus.COMPLETED, fields, transition, staged=now)

        done = await asyncio.gather(*(writes.finish(change(e, f"t{i}")) for i, e in enumerate(events)))
        assert done == [True] * 50
        retried, other = await asyncio.gather(
            writes.finish(change(events[0], "t0")), writes.finish(change(events[1], "another"))
        )
        assert (retried, other) == (True, False)
    assert db.download_events.count_documents({"status": "COMPLETED", "stages.finished": now}) == 50
    assert db.download_events.count_documents({}) == 50
    assert sum(n for w, n in sizes if w == "insert") == 51 and max(n for w, n in sizes if w == "insert") > 1
    assert max(n for w, n in sizes if w == "finish") > 1

"""The audit trail's rules: what is recorded, written off the request path, and who may read which records.

Records are written by one task per app instance from a bounded queue, so a request never waits for its
audit insert; a record that cannot be queued (the queue is full: the database is slower than the records
arrive) or written is logged and counted in `modelhub_audit_records_dropped_total`, never lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from .auth import Principal
from .db import audit as audit_db
from .db import models as models_db
from .db.audit import AuditFilter
from .documents import AuditEvent, AuditKind, utcnow
from .errors import Forbidden
from .metrics import Metrics
from .pagination import Page, PageRequest
from .roles import ProjectRole, Role

log = logging.getLogger("modelhub.audit")

# Records inserted together at most (one insert_many per batch while records keep arriving).
BATCH = 200
# The principals already seen by this instance, kept so that only a first sight costs a database call.
MAX_KNOWN = 100_000
# How long shutdown waits for queued records to be written.
CLOSE_SECONDS = 5.0


@dataclass(frozen=True)
class _Pending:
    record: AuditEvent
    model_name: str | None  # the model the record is about, when its project is still to be looked up


@dataclass(frozen=True)
class _Sighting:
    principal: str
    client_address: str | None
    transport: str
    via: str
    at: datetime


class AuditLog:
    """One instance's audit writer: `record` and `first_sign_in` return at once; `run` writes."""

    def __init__(self, metrics: Metrics, queue_records: int, retention_days: int) -> None:
        self._metrics = metrics
        self._queue: asyncio.Queue[_Pending | _Sighting] = asyncio.Queue(maxsize=queue_records)
        self._retention_days = retention_days
        self._known: set[str] = set()
        self._stopping = False

    def record(self, record: AuditEvent, model_name: str | None = None) -> None:
        """Queues `record` for its insert (dropped, logged and counted when the queue is full). With
        `model_name` and no project, the writer fills in that model's project (off the request path)."""
        self._put(_Pending(record, model_name if record.project is None else None))

    def first_sign_in(
        self, principal: str, client_address: str | None, transport: str, via: str = "token"
    ) -> None:
        """Records a SIGN_IN the first time `principal` is seen (by any instance, within the trail's
        retention). Cheap on every request: an in-memory set answers for principals already seen here.
        `via` says how it signed in (token, header, oidc), kept as the record's target."""
        if principal in self._known:
            return
        if len(self._known) >= MAX_KNOWN:
            self._known.clear()
        self._known.add(principal)
        self._put(_Sighting(principal, client_address, transport, via, utcnow()))

    def _put(self, item: _Pending | _Sighting) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._metrics.audit_dropped.labels("queue_full").inc()
            log.error("audit queue full: dropped %r", item)

    async def run(self) -> None:
        """Writes queued records until cancelled (see `close`)."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            for _ in batch:
                self._queue.task_done()

    async def _write(self, batch: list[_Pending | _Sighting]) -> None:
        pending = [item for item in batch if isinstance(item, _Pending)]
        await _fill_projects(pending)
        records = [item.record for item in pending]
        for item in batch:
            if isinstance(item, _Sighting):
                try:
                    if await audit_db.first_sight(item.principal, item.at, self._retention_days):
                        records.append(_sign_in(item))
                except Exception:
                    self._metrics.audit_dropped.labels("write_failed").inc()
                    log.exception("audit: recording the first sign-in of %s failed", item.principal)
        if not records:
            return
        try:
            await audit_db.insert_many(records)
        except Exception:
            self._metrics.audit_dropped.labels("write_failed").inc(len(records))
            log.exception("audit: %d records could not be written: %r", len(records), records)
            return
        for record in records:
            self._metrics.audit_records.labels(record.kind.value).inc()

    async def flush(self) -> None:
        """Waits until every record queued so far is written (or dropped)."""
        await self._queue.join()

    async def close(self, task: asyncio.Task[None]) -> None:
        """Writes what is queued (for at most CLOSE_SECONDS), then stops the writer."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await self.flush()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        left = self._queue.qsize()
        if left:
            self._metrics.audit_dropped.labels("write_failed").inc(left)
            log.error("audit: %d records still queued at shutdown were not written", left)


async def _fill_projects(pending: list[_Pending]) -> None:
    """Sets the project of records about a model from the model itself (one read for the batch); a model
    that does not exist (a refused registration, a typo) leaves it unset."""
    names = {item.model_name for item in pending if item.model_name}
    if not names:
        return
    try:
        found = await models_db.find_models(sorted(names))
    except Exception:  # the records matter more than their project: written without it
        log.exception("audit: looking up the projects of %d models failed", len(names))
        return
    for item in pending:
        if item.model_name in found:
            item.record.project = found[item.model_name].project_name


def _sign_in(item: _Sighting) -> AuditEvent:
    return AuditEvent(
        at=item.at,
        kind=AuditKind.SIGN_IN,
        principal=item.principal,
        action="signIn",
        target=item.via,
        outcome="OK",
        client_address=item.client_address,
        transport=item.transport,
    )


async def record_now(record: AuditEvent) -> None:
    """Writes one record at once, for processes without an AuditLog (the CLI's token commands)."""
    await audit_db.insert(record)


def readable_projects(principal: Principal) -> Collection[str] | None:
    """Whose records `principal` may read: None for every record (a global ADMIN), else the projects it
    holds MAINTAINER on (records about other projects, and those about no project, such as sign-ins and
    token changes, stay hidden); FORBIDDEN when it maintains none. The one place this rule lives."""
    if principal.role is Role.ADMIN:
        return None
    maintained = sorted(p for p, role in principal.grants.items() if role is ProjectRole.MAINTAINER)
    if maintained:
        return maintained
    raise Forbidden(
        f"reading the audit trail needs the ADMIN role or MAINTAINER of a project; {principal.engineer} "
        "has neither"
    )


async def list_events(principal: Principal, flt: AuditFilter, request: PageRequest) -> Page[AuditEvent]:
    """A page of the records `principal` may read, newest first."""
    projects = readable_projects(principal)
    return await audit_db.page(flt, request, projects)

"""The audit collection owner and the audit writer on a real SecantusDB: filters, pages, scoping, sightings,
the bounded queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from graphql_api.audit import AuditLog, readable_projects
from graphql_api.auth import Principal
from graphql_api.db import audit as audit_db
from graphql_api.db import connect
from graphql_api.db.audit import AuditFilter
from graphql_api.db.common import indexes_used
from graphql_api.documents import AuditEvent, AuditKind, utcnow
from graphql_api.errors import Forbidden
from graphql_api.metrics import Metrics
from graphql_api.pagination import PageRequest
from graphql_api.roles import ProjectRole, Role


@pytest.fixture
async def database(mongo_uri: str) -> AsyncIterator[None]:
    async with connect(mongo_uri, "audit_" + uuid.uuid4().hex[:8]):
        yield


def record(i: int, **fields: Any) -> AuditEvent:
    base: dict[str, Any] = dict(
        at=utcnow() - timedelta(minutes=100 - i),
        kind=AuditKind.MUTATION,
        principal=["alice", "bob"][i % 2],
        action=["registerModel", "updateModel", "createToken"][i % 3],
        target=f"m{i}",
        project=["vision", "nlp", None][i % 3],
        outcome="OK" if i % 4 else "FORBIDDEN",
        transport="http",
    )
    return AuditEvent(**{**base, **fields})


async def everything(flt: AuditFilter, projects: list[str] | None = None, size: int = 7) -> list[AuditEvent]:
    """Every matching record, page by page."""
    out: list[AuditEvent] = []
    after = None
    while True:
        page = await audit_db.page(flt, PageRequest(first=size, after=after), projects)
        out += [doc for doc, _ in page.items]
        if not page.has_next:
            return out
        after = page.items[-1][1]


async def test_filters_and_pages_newest_first(database: None) -> None:
    """Each filter field and the time window select exactly the matching records, newest first, across
    pages of any size."""
    records = [record(i) for i in range(40)]
    await audit_db.insert_many(records)
    newest_first = sorted(records, key=lambda r: r.at, reverse=True)
    assert [r.target for r in await everything(AuditFilter())] == [r.target for r in newest_first]
    cases = [
        (AuditFilter(principal="alice"), lambda r: r.principal == "alice"),
        (AuditFilter(action="updateModel"), lambda r: r.action == "updateModel"),
        (AuditFilter(project="nlp"), lambda r: r.project == "nlp"),
        (
            AuditFilter(outcome="FORBIDDEN", principal="alice"),
            lambda r: r.outcome == "FORBIDDEN" and r.principal == "alice",
        ),
        (
            AuditFilter(since=records[10].at, until=records[20].at),
            lambda r: records[10].at <= r.at < records[20].at,
        ),
    ]
    for flt, keep in cases:
        want = [r.target for r in newest_first if keep(r)]
        assert want and [r.target for r in await everything(flt, size=3)] == want, flt


async def test_a_maintainer_reads_only_its_projects_records(database: None) -> None:
    """Restricted to projects, a page holds only their records: not other projects', not those about no
    project, even when the filter names another project."""
    await audit_db.insert_many([record(i) for i in range(30)])
    mine = await everything(AuditFilter(), ["vision"])
    assert mine and {r.project for r in mine} == {"vision"}
    assert await everything(AuditFilter(project="nlp"), ["vision"]) == []
    both = await everything(AuditFilter(project="nlp"), ["vision", "nlp"])
    assert both and {r.project for r in both} == {"nlp"}


def test_who_may_read_which_records() -> None:
    """An ADMIN reads everything, a MAINTAINER its maintained projects, anyone else is refused."""
    assert readable_projects(Principal("root", Role.ADMIN)) is None
    grants = {"vision": ProjectRole.MAINTAINER, "nlp": ProjectRole.ENGINEER, "ops": ProjectRole.MAINTAINER}
    assert readable_projects(Principal("mia", None, grants=grants)) == ["ops", "vision"]
    for principal in (
        Principal("rita", Role.READER),
        Principal("eve", Role.ENGINEER, grants={"nlp": ProjectRole.ENGINEER}),
        Principal("nobody", None),
    ):
        with pytest.raises(Forbidden):
            readable_projects(principal)


async def test_a_principal_is_first_seen_once(database: None) -> None:
    """However many writers see a principal at once, exactly one sighting is the first."""
    firsts = await asyncio.gather(*(audit_db.first_sight("alice", utcnow(), 365) for _ in range(8)))
    assert sorted(firsts) == [False] * 7 + [True]
    assert await audit_db.first_sight("bob", utcnow(), 365)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return float(found or 0)


async def test_a_full_queue_drops_records_and_counts_them(database: None) -> None:
    """Records beyond the bounded queue are dropped and counted (never lost silently); the queued ones are
    written, counted by kind, and one sign-in is recorded per new principal."""
    metrics = Metrics()
    log = AuditLog(metrics, queue_records=3, retention_days=365)
    for i in range(5):
        log.record(record(i, target=f"q{i}"))
    log.first_sign_in("carol", "10.0.0.1", "http")  # the queue is full: dropped too
    assert value(metrics, "modelhub_audit_records_dropped_total", reason="queue_full") == 3
    writer = asyncio.create_task(log.run())
    try:
        await log.flush()
        log.first_sign_in("dave", "10.0.0.2", "websocket", via="oidc")
        log.first_sign_in("dave", "10.0.0.2", "websocket", via="oidc")
        await log.flush()
    finally:
        await log.close(writer)
    written = await everything(AuditFilter())
    assert sorted(r.target or "" for r in written if r.kind is AuditKind.MUTATION) == ["q0", "q1", "q2"]
    signs = [(r.principal, r.target, r.transport) for r in written if r.kind is AuditKind.SIGN_IN]
    assert signs == [("dave", "oidc", "websocket")]
    assert value(metrics, "modelhub_audit_records_total", kind="MUTATION") == 3
    assert value(metrics, "modelhub_audit_records_total", kind="SIGN_IN") == 1


async def test_pages_use_the_time_index_not_the_ttl_one(database: None) -> None:
    """A page's time range runs on the (at, _id) index: the TTL index, partial, is never the planner's pick."""
    await audit_db.ensure_retention(365)
    collection = AuditEvent.get_pymongo_collection()
    since = utcnow() - timedelta(days=1)
    plan = await collection.find({"at": {"$gte": since}}).sort([("at", -1), ("_id", -1)]).limit(5).explain()
    assert indexes_used(plan) == {"at"}
    assert await audit_db.retention_seconds() == 365 * 86_400


async def test_a_record_no_utf8_holds_costs_its_batch_nothing(database: None) -> None:
    """A batch holding a record with a lone surrogate is written whole, that character replaced ("?"):
    the other records of the batch are kept."""
    await audit_db.insert_many(
        [record(1, target="ok-1"), record(2, target="x\udc00"), record(3, target="ok-3")]
    )
    written = sorted(r.target or "" for r in await everything(AuditFilter()))
    assert written == ["ok-1", "ok-3", "x?"]

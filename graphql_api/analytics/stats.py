"""`downloadStats`: rows from the rollups where they answer exactly (with raw events at the edges of a range
off bucket edges), else from raw events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..db import events as events_db
from ..db import rollups as rollups_db
from ..documents import DownloadMode, DownloadStatus
from ..queries import MAX_STATS_LIMIT, METRIC_FIELDS, Dimension, StatsRequest, StatsSource
from . import hybrid
from .histograms import histogram_percentile


@dataclass
class StatsRow:
    model_name: str | None = None
    model_version: int | None = None
    project_name: str | None = None
    engineer: str | None = None
    mode: DownloadMode | None = None
    status: DownloadStatus | None = None
    requested_alias: str | None = None
    period_start: datetime | None = None
    downloads: int = 0
    completed: int = 0
    aborted: int = 0
    failed: int = 0
    total_bytes: int = 0
    avg_duration: float | None = None
    p50_duration: float | None = None
    p95_duration: float | None = None
    max_duration: float | None = None
    unique_engineers: int = 0
    source: StatsSource = StatsSource.RAW


# Dimension → the StatsRow attribute holding its value.
ROW_FIELDS: dict[Dimension, str] = {
    Dimension.MODEL: "model_name",
    Dimension.VERSION: "model_version",
    Dimension.PROJECT: "project_name",
    Dimension.ENGINEER: "engineer",
    Dimension.MODE: "mode",
    Dimension.STATUS: "status",
    Dimension.ALIAS: "requested_alias",
}


def _row(doc: dict[str, Any], source: StatsSource) -> StatsRow:
    key = doc["_id"] or {}
    group: dict[str, Any] = {attr: key.get(dim.value) for dim, attr in ROW_FIELDS.items()}
    if group["mode"]:
        group["mode"] = DownloadMode(group["mode"])
    if group["status"]:
        group["status"] = DownloadStatus(group["status"])
    row = StatsRow(
        **group,
        period_start=doc.get("period_start"),
        downloads=doc["downloads"],
        completed=doc["completed"],
        aborted=doc["aborted"],
        failed=doc["failed"],
        total_bytes=doc["total_bytes"],
        avg_duration=doc.get("avg_duration"),
        max_duration=doc.get("max_duration"),
        source=source,
    )
    if source is StatsSource.RAW:
        row.unique_engineers = doc["unique_engineers"]
        row.p50_duration, row.p95_duration = doc.get("p50_duration"), doc.get("p95_duration")
    else:
        row.unique_engineers = int(doc["engineer_bits"]).bit_count()
        row.p50_duration = histogram_percentile(doc["hist"], 0.5)
        row.p95_duration = histogram_percentile(doc["hist"], 0.95)
    return row


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)


@dataclass
class StatsPage:
    """One page of stats rows, how many rows there are in all, and where they came from."""

    rows: list[StatsRow]
    total: int
    source: StatsSource
    offset: int = 0

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.rows)

    @property
    def has_more(self) -> bool:
        return self.next_offset < self.total


def order_rows(rows: list[StatsRow], req: StatsRequest) -> list[StatsRow]:
    """Mongo's order, in Python: by the metric (nulls lowest), ties by the group key ascending; one page."""
    name = METRIC_FIELDS[req.sort_metric]

    def tie_break(r: StatsRow) -> tuple[Any, ...]:
        key = tuple(_sortable(getattr(r, ROW_FIELDS[d])) for d in req.group_by)
        return (*key, _sortable(r.period_start)) if req.interval else key

    rows = sorted(rows, key=tie_break)
    rows.sort(key=lambda r: _sortable(getattr(r, name)), reverse=req.descending)
    return rows[req.offset : req.offset + req.limit]


# A ROLLUP range longer than this (or unbounded) is grouped, ordered and cut by the database when its order
# allows (rollups_db.page_in_db), so a top-N over all time ships its rows, not every bucket; shorter ranges
# (every dashboard's) are grouped in the app, which SecantusDB answers faster.
LONG_RANGE = timedelta(days=62)


def is_long(req: StatsRequest, now: datetime) -> bool:
    since, until = req.query.since, req.query.until or now
    return since is None or until - since > LONG_RANGE


def source_for(req: StatsRequest) -> StatsSource:
    """Where `download_stats` answers `req` from: the rollup translation decides, in this one place. A
    dimension or filter the rollups do not keep (ENGINEER, STATUS, ALIAS, ...) is not in their translation
    tables (rollups_db.DIMENSIONS, rollups_db.filters), so such a request is answered from raw events."""
    if rollups_db.bucket_filter(req) is not None:
        return StatsSource.ROLLUP
    return StatsSource.HYBRID if hybrid.can_answer(req) else StatsSource.RAW


async def download_stats(
    req: StatsRequest, max_hour_range_days: int = 31, max_limit: int = MAX_STATS_LIMIT
) -> StatsPage:
    """`downloadStats`: from rollups when they can answer exactly (counts, bytes), from rollups and the raw
    edges for a range off midnights, else from raw events. `max_limit` is for callers inside the server
    (`downloadSeries` reads every row of its range at once)."""
    req.validate(max_hour_range_days, max_limit)
    source = source_for(req)
    if source is StatsSource.RAW:
        docs, total = await events_db.stats(req)
        return StatsPage([_row(d, source) for d in docs], total, source, req.offset)
    if source is StatsSource.ROLLUP and is_long(req, datetime.now(UTC)):
        found = await rollups_db.page_in_db(req)
        if found is not None:
            groups, total = found
            rows = [_row(d, source) for d in await hybrid.as_docs(groups)]
            return StatsPage(rows, total, source, req.offset)
    # Rollup rows are grouped and ordered here (see rollups_db.grouped); a ROLLUP answer is a HYBRID one
    # whose range holds whole days only.
    rows = [_row(d, source) for d in await hybrid.hybrid_docs(req)]
    return StatsPage(order_rows(rows, req), len(rows), source, req.offset)

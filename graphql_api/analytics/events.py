"""Event queries: pages of raw download events, counts, and per-version download totals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..db import events as events_db
from ..db import rollups as rollups_db
from ..documents import DownloadEvent
from ..pagination import Page, PageRequest, empty_page
from ..queries import DownloadOrder, EventQuery
from ..scope import Scope
from . import rollups


@dataclass(frozen=True, slots=True)
class ModelDownloadTotals:
    completed: int
    last_downloaded_at: datetime | None


async def model_download_totals(keys: Sequence[tuple[str, int]]) -> list[ModelDownloadTotals]:
    """Completed downloads and the last one's time per (name, version), in one aggregation over the daily
    rollups (a DataLoader batch): a few hundred small documents per model, not one per download."""
    found = await rollups_db.totals_by_version(keys, await rollups.pending())
    return [ModelDownloadTotals(*found.get(key, (0, None))) for key in keys]


async def list_events(
    scope: Scope, query: EventQuery, order: DownloadOrder, request: PageRequest
) -> Page[DownloadEvent]:
    """One keyset page of raw events of the projects `scope` may read; an unfiltered count is summed from
    the rollups (a narrowed query is filtered, so it never is)."""
    narrowed = scope.events(query)
    if narrowed is None:
        return empty_page()
    return await events_db.page(narrowed, order, request, count_all=_count_downloads)


async def _count_downloads() -> int:
    """Every download event: the rollups' sum and the stages not folded yet."""
    return await rollups_db.count_downloads(await rollups.pending())


async def model_totals(names: Sequence[str]) -> list[ModelDownloadTotals]:
    """Completed downloads across all versions and the last one's time, per model name (DataLoader batch)."""
    found = await rollups_db.totals_by_model(names, await rollups.pending())
    return [ModelDownloadTotals(*found.get(name, (0, None))) for name in names]


async def completed_by_model(since: datetime | None, until: datetime | None) -> dict[str, int]:
    """Completed downloads per model name started in [since, until): rollups when they can answer."""
    found = await rollups_db.completed_by_model(EventQuery(since=since, until=until), await rollups.pending())
    if found is not None:
        return found
    return await events_db.count_by_model(EventQuery(since=since, until=until), completes_only=True)


async def event_by_id(scope: Scope, event_id: Any) -> DownloadEvent | None:
    """The event, if `scope` may read its project."""
    event = await events_db.get(event_id)
    return event if event is not None and scope.can_read(event.project_name) else None

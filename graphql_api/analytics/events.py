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
from .volume import EventVolume


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
    scope: Scope,
    query: EventQuery,
    order: DownloadOrder,
    request: PageRequest,
    volume: EventVolume | None = None,
    horizon: datetime | None = None,
) -> Page[DownloadEvent]:
    """One keyset page of raw events of the projects `scope` may read; an unfiltered count is summed from
    the rollups (a narrowed query is filtered, so it never is). A page read oldest first (ascending, or the
    `last` of newest first) starts its time windows where the events begin (see `events_start`)."""
    narrowed = scope.events(query)
    if narrowed is None:
        return empty_page()

    async def earliest() -> datetime | None:
        return await events_start(volume, horizon)

    return await events_db.page(narrowed, order, request, count_all=_count_downloads, earliest=earliest)


async def events_start(volume: EventVolume | None, horizon: datetime | None) -> datetime | None:
    """About where the stored events begin: the first day the rollups counted (from the instance's counts in
    memory, else read), or the retention `horizon` when later (older events have expired, or will within
    about a minute). Only a hint for where oldest-first windows start: pages do not depend on it."""
    first = volume.first_day() if volume is not None else None
    if first is None:
        first = await rollups_db.first_day()
    if first is None or horizon is None:
        return first if first is not None else horizon
    return max(first, horizon)


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

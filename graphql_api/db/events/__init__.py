"""Owner of `download_events`: inserts, state transitions, pages, and the raw stats scan (in pieces).

The package's names, from `filters` (queries as filters), `writes` (inserts, transitions, retention), `reads`
(pages, counts, scans, the change stream) and `raw_stats` (the raw stats scan and its one-pipeline form).
"""

from __future__ import annotations

from .filters import DIMENSIONS, FILTERS, SORT_FIELDS, event_filter, matches, sort_of
from .raw_stats import FIRST_PIECE, MIN_PIECE, stats, stats_pipeline
from .reads import (
    Transition,
    any_started,
    count_all,
    count_by_model,
    downloaded_since,
    edge_documents,
    get,
    last_download_of,
    page,
    scan,
    scan_documents,
    staged_after,
    stale,
    versions_downloaded_since,
    watch_transitions,
)
from .writes import (
    RETENTION_INDEX,
    EventFinish,
    EventWrites,
    claim,
    ensure_retention,
    insert_many,
    record_progress,
    report_verification,
    retention_seconds,
)

__all__ = [
    "DIMENSIONS",
    "FILTERS",
    "FIRST_PIECE",
    "MIN_PIECE",
    "RETENTION_INDEX",
    "SORT_FIELDS",
    "EventFinish",
    "EventWrites",
    "Transition",
    "any_started",
    "claim",
    "count_all",
    "count_by_model",
    "downloaded_since",
    "edge_documents",
    "ensure_retention",
    "event_filter",
    "get",
    "insert_many",
    "last_download_of",
    "matches",
    "page",
    "record_progress",
    "report_verification",
    "retention_seconds",
    "scan",
    "scan_documents",
    "sort_of",
    "staged_after",
    "stale",
    "stats",
    "stats_pipeline",
    "versions_downloaded_since",
    "watch_transitions",
]

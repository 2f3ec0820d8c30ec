"""The one declaration of download figures and dimensions: what derives from it and what is checked (no server)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from graphql_api import figures
from graphql_api.analytics import series as series_uc
from graphql_api.analytics import stats as stats_uc
from graphql_api.db import rollups as rollups_db
from graphql_api.db.events import raw_stats as event_stats
from graphql_api.db.rollups import RollupDelta
from graphql_api.db.rollups import answers as rollup_answers
from graphql_api.documents import ClientKind, DownloadMode
from graphql_api.figures import FigureMismatch
from graphql_api.queries import METRIC_FIELDS, Dimension, StatsMetric, StatsSource
from graphql_api.schema import stats as stats_schema

CHECKS = (stats_uc._check, rollup_answers._check, stats_schema._check, figures._check)


def test_every_module_agrees_with_the_declaration() -> None:
    """The row types, enums and rollup fields match figures.FIGURES and figures.DIMENSIONS as shipped."""
    for check in CHECKS:
        check()
    assert [f.name for f in dataclasses.fields(stats_uc.StatsRow)][-len(figures.FIGURES) - 1 : -1] == [
        f.name for f in figures.FIGURES
    ]
    assert METRIC_FIELDS[StatsMetric.TOTAL_BYTES] == "total_bytes"
    assert rollups_db.DIMENSIONS == {
        Dimension.MODEL: "model_name",
        Dimension.VERSION: "model_version",
        Dimension.PROJECT: "project_name",
        Dimension.MODE: "mode",
        Dimension.CLIENT_KIND: "client_kind",
    }
    assert Dimension.CLIENT_VERSION not in series_uc._FILTER_FIELDS
    assert set(rollups_db.MERGED_METRICS) == {
        StatsMetric.P50_DURATION,
        StatsMetric.P95_DURATION,
        StatsMetric.P99_DURATION,
        StatsMetric.UNIQUE_ENGINEERS,
        StatsMetric.DISTINCT_DOWNLOADS,
    }


def test_a_figure_declared_but_missing_elsewhere_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A figure added to the declaration alone is refused by the row, the GraphQL type and the rollups, by name."""
    extra = figures.Figure(
        "resumed",
        "resumed",
        "Downloads resumed.",
        figures.Made(figures.Finish.VALUE, ("downloads",)),
        figures.Made(figures.Finish.VALUE, ("resumed",)),
    )
    monkeypatch.setattr(figures, "FIGURES", (*figures.FIGURES, extra))
    for check in (stats_uc._check, stats_schema._check, rollup_answers._check):
        with pytest.raises(FigureMismatch, match="resumed"):
            check()


def test_a_dimension_without_a_bucket_key_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dimension declared with a rollup key the buckets do not have is refused."""
    wrong = figures.Dimension("TEAM", "team", "team", "team", "team", None)
    monkeypatch.setattr(figures, "DIMENSIONS", (*figures.DIMENSIONS, wrong))
    with pytest.raises(FigureMismatch, match="TEAM"):
        rollup_answers._check()


def _piece(engineer: str, durations: list[Any], versions: list[int], **counts: int) -> dict[str, Any]:
    """One (group, engineer) document as a piece's first grouping returns it."""
    numbers = [d for d in durations if isinstance(d, int | float)]
    doc: dict[str, Any] = {p.name: 0 for p in figures.PARTIALS}
    doc.update(
        _id={"k": {"MODEL": "m"}, "engineer": engineer},
        downloads=len(durations),
        duration_sum=sum(numbers),
        duration_count=len(numbers),
        max_duration=max(numbers, default=None),
        durations=durations,
        throughputs=[100 / d if d else None for d in durations],
        versions=[{"n": "m", "v": v} for v in versions],
        **counts,
    )
    return doc


def test_raw_pieces_merge_into_the_rows_one_scan_gives() -> None:
    """Partial figures of two pieces and two engineers finish into the row of their events as one scan."""
    partials: dict[tuple[Any, ...], dict[str, Any]] = {}
    for doc in (
        _piece("alice", [1.0, None], [1], completed=1, total_bytes=10),
        _piece("alice", [3.0], [1, 2], completed=1, total_bytes=5, verified=1),
        _piece("bob", [2.0], [1], aborted=1, mismatched=1),
    ):
        event_stats._merge_partial(partials, doc)
    (row,) = event_stats._finish(partials)
    assert row["_id"] == {"MODEL": "m"} and row["period_start"] is None
    assert (row["downloads"], row["completed"], row["aborted"], row["total_bytes"]) == (4, 2, 1, 15)
    assert (row["verified"], row["mismatched"]) == (1, 1)
    assert (row["unique_engineers"], row["distinct_downloads"]) == (2, 3)
    assert (row["avg_duration"], row["max_duration"]) == (2.0, 3.0)
    assert (row["p50_duration"], row["p95_duration"]) == (2.0, 3.0)
    assert (row["p50_throughput"], row["p95_throughput"]) == (50.0, 100.0)
    built = stats_uc._row(row)
    assert (built.model_name, built.distinct_downloads, built.source) == ("m", 3, StatsSource.RAW)


def test_a_rollup_group_finishes_into_a_row_of_the_same_shape() -> None:
    """A merged rollup group becomes a StatsRow with every figure, enums read back from stored strings."""
    total = RollupDelta(
        downloads=3,
        completed=2,
        bytes_sent=40,
        duration_count=2,
        duration_sum=5.0,
        duration_max=4.0,
        engineer_bits=0b101,
        pair_bits={("m", 1): 0b101, ("m", 2): 0b1},
    )
    key = {"MODE": "STREAM", "CLIENT_KIND": "CI", "period": datetime(2026, 3, 2, tzinfo=UTC)}
    row = stats_uc._rollup_row((key, total), StatsSource.ROLLUP)
    assert (row.mode, row.client_kind, row.period_start) == (
        DownloadMode.STREAM,
        ClientKind.CI,
        key["period"],
    )
    assert (row.downloads, row.total_bytes, row.avg_duration, row.max_duration) == (3, 40, 2.5, 4.0)
    assert (row.unique_engineers, row.distinct_downloads, row.p50_duration) == (2, 3, None)
    out = stats_schema.DownloadStatsRow.from_row(row)
    assert (out.total_bytes, out.avg_duration_seconds, out.mode) == (
        40,
        2.5,
        stats_schema.DownloadMode.STREAM,
    )

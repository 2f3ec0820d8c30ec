"""downloadSeries: zero-filled buckets, the top N groups and `other`, checked against a plain-Python reference."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from graphql_api.analytics.series import buckets
from graphql_api.config import Settings
from graphql_api.db import connect
from graphql_api.documents import DownloadStatus
from graphql_api.queries import Interval
from tests.analytics.test_stats import KEYS, T0, make_events, store
from tests.servers import GraphQLClient, SharedApps

SERIES = """query($by: DownloadDimension!, $since: DateTime!, $until: DateTime!, $i: TimeInterval!,
                 $m: SeriesMetric!, $top: Int!, $f: DownloadFilter, $tz: String) {
  downloadSeries(by: $by, since: $since, until: $until, interval: $i, metric: $m, top: $top, filter: $f,
                 timeZone: $tz) {
    buckets totals total groups source
    series { key isOther total values points { periodStart value } }
  }
}"""

SERIES_DB = "series_" + uuid.uuid4().hex[:8]
METRICS: dict[str, Callable[[dict[str, Any]], int]] = {
    "DOWNLOADS": lambda e: 1,
    "COMPLETED": lambda e: int(e["status"] is DownloadStatus.COMPLETED),
    "FAILED": lambda e: int(e["status"] is DownloadStatus.FAILED),
    "TOTAL_BYTES": lambda e: int(e["bytes_sent"]),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seeded_db(mongo_uri: str) -> AsyncIterator[str]:
    async with connect(mongo_uri, SERIES_DB):
        await store(make_events(), bulk=True)
    yield SERIES_DB


@pytest.fixture
def settings(seeded_db: str, mongo_uri: str, shared_apps: SharedApps) -> Settings:
    """The module's shared app (serving anew for each test) reads the seeded database."""
    return shared_apps.settings_for("local", mongo_uri, None, seeded_db)


def reference(
    since: datetime, until: datetime, by: str, metric: str, interval: Interval, tz: str | None = None
) -> dict[str, Any]:
    """Every group's zero-filled values, computed from the events in Python."""
    starts = buckets(since, until, interval, tz)
    zone = ZoneInfo(tz or "UTC")
    groups: dict[str, list[int]] = {}
    for e in make_events():
        if not since <= e["started_at"] < until:
            continue
        local = e["started_at"].astimezone(zone)
        if interval is Interval.HOUR:
            start = local.replace(minute=0, second=0, microsecond=0)
        else:
            start = datetime(local.year, local.month, local.day, tzinfo=zone)
        values = groups.setdefault(str(KEYS[by](e)), [0] * len(starts))
        values[starts.index(start.astimezone(UTC))] += METRICS[metric](e)
    return {"starts": starts, "groups": groups}


async def series(gql: GraphQLClient, **kw: Any) -> dict[str, Any]:
    variables = {"i": "DAY", "m": "COMPLETED", "top": 10, **kw}
    for k in ("since", "until"):
        variables[k] = variables[k].isoformat()
    result: dict[str, Any] = (await gql(SERIES, variables))["downloadSeries"]
    return result


def check(got: dict[str, Any], want: dict[str, Any], top: int) -> None:
    starts = [datetime.fromisoformat(b) for b in got["buckets"]]
    assert starts == want["starts"]
    groups = want["groups"]
    ranked = sorted(groups, key=lambda k: -sum(groups[k]))
    mine = [s for s in got["series"] if not s["isOther"]]
    assert len(mine) == min(top, len(groups)) and got["groups"] == len(groups)
    totals = [sum(col) for col in zip(*groups.values(), strict=True)] if groups else [0] * len(starts)
    assert got["totals"] == totals and got["total"] == sum(totals)
    for s in mine:
        assert s["values"] == groups[s["key"]], s["key"]
        assert s["total"] == sum(s["values"])
        assert [p["value"] for p in s["points"]] == s["values"]
        assert [p["periodStart"] for p in s["points"]] == got["buckets"]
    assert [s["total"] for s in mine] == sorted((sum(groups[k]) for k in ranked), reverse=True)[: len(mine)]
    others = [s for s in got["series"] if s["isOther"]]
    if len(groups) > top:
        (other,) = others
        assert other["key"] is None and got["series"][-1] is other
        rest = [k for k in groups if k not in {s["key"] for s in mine}]
        assert other["values"] == [sum(groups[k][i] for k in rest) for i in range(len(starts))]
    else:
        assert others == []


async def test_daily_series_per_model_equal_the_reference(gql: GraphQLClient, app: Any) -> None:
    """Midnight-aligned 20 days by model: 20 zero-filled points per series, the top 2 largest first, and an
    `other` series that is exactly the third model; totals per day over every model."""
    since, until = T0, T0 + timedelta(days=20)
    got = await series(gql, by="MODEL", since=since, until=until, top=2)
    assert len(got["buckets"]) == 20 and got["source"] == "ROLLUP"
    check(got, reference(since, until, "MODEL", "COMPLETED", Interval.DAY), top=2)


@pytest.mark.parametrize(
    ("by", "metric", "interval", "top"),
    [
        ("ENGINEER", "TOTAL_BYTES", "HOUR", 3),
        ("PROJECT", "DOWNLOADS", "DAY", 1),
        ("VERSION", "FAILED", "DAY", 5),
        ("CLIENT_KIND", "DOWNLOADS", "DAY", 2),
        ("CLIENT_KIND", "COMPLETED", "HOUR", 4),
    ],
)
async def test_ranges_off_bucket_edges_equal_the_reference(
    gql: GraphQLClient, app: Any, by: str, metric: str, interval: str, top: int
) -> None:
    """A range that starts and ends mid-bucket: partial first and last buckets count only the events inside
    it, every group and metric equals the reference, and buckets with nothing read 0."""
    since = T0 + timedelta(hours=5, minutes=17)
    until = since + timedelta(days=9, hours=3)
    got = await series(gql, by=by, since=since, until=until, i=interval, m=metric, top=top)
    check(got, reference(since, until, by, metric, Interval(interval)), top=top)
    if interval == "HOUR":  # 240 events over 20 days leave most hours empty: they are there, as 0
        assert all(0 in s["values"] for s in got["series"])


async def test_buckets_follow_the_time_zone(gql: GraphQLClient, app: Any) -> None:
    """With timeZone Europe/Paris the buckets start at Paris midnights (23:00 UTC in winter) and the values
    follow the local days."""
    since = datetime(2026, 10, 28, tzinfo=ZoneInfo("Europe/Paris"))
    until = since + timedelta(days=6)
    got = await series(gql, by="MODEL", since=since, until=until, tz="Europe/Paris")
    assert got["buckets"][0] == "2026-10-27T23:00:00+00:00"
    check(got, reference(since, until, "MODEL", "COMPLETED", Interval.DAY, "Europe/Paris"), top=10)


async def test_an_empty_range_is_all_zeros(gql: GraphQLClient, app: Any) -> None:
    """A range with no events: every bucket present with 0, no series, no `other`."""
    since = T0 - timedelta(days=30)
    got = await series(gql, by="MODEL", since=since, until=since + timedelta(days=7))
    assert got["series"] == [] and got["totals"] == [0] * 7 and got["groups"] == 0


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"f": {"since": "2026-10-26T00:00:00Z"}}, "filter.since"),
        ({"top": 0}, "top"),
        ({"top": 51}, "top"),
        ({"until": T0}, "since"),
        ({"since": T0 - timedelta(days=2000)}, "interval"),
        ({"i": "HOUR", "since": T0 - timedelta(days=40)}, "interval"),
        ({"tz": "Mars/Olympus"}, "timeZone"),
    ],
)
async def test_bad_series_arguments(gql: GraphQLClient, app: Any, extra: dict[str, Any], field: str) -> None:
    """Each bad argument is a top-level INVALID_INPUT error that names it."""
    variables = {"by": "MODEL", "since": T0, "until": T0 + timedelta(days=3), "i": "DAY", "m": "COMPLETED"}
    variables = {"top": 10, **variables, **extra}
    for k in ("since", "until"):
        variables[k] = variables[k].isoformat()
    body = await gql.raw(SERIES, variables)
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": field}, error


def test_bucket_starts_by_interval() -> None:
    """Weeks start on Monday, months on the 1st (across a year end), hours step by one; the range's own
    partial first bucket is included."""
    wed = datetime(2026, 12, 30, 15, tzinfo=UTC)
    weeks = buckets(wed, wed + timedelta(days=15), Interval.WEEK, None)
    assert [b.date().isoformat() for b in weeks] == ["2026-12-28", "2027-01-04", "2027-01-11"]
    months = buckets(wed, datetime(2027, 3, 2, tzinfo=UTC), Interval.MONTH, None)
    assert [b.date().isoformat() for b in months] == ["2026-12-01", "2027-01-01", "2027-02-01", "2027-03-01"]
    hours = buckets(wed.replace(minute=59), wed + timedelta(hours=2), Interval.HOUR, None)
    assert [b.hour for b in hours] == [15, 16]


async def test_aligned_series_by_client_kind_come_from_rollups(gql: GraphQLClient, app: Any) -> None:
    """Midnight-aligned days split by client kind are answered by the rollups and equal the reference."""
    since, until = T0, T0 + timedelta(days=20)
    got = await series(gql, by="CLIENT_KIND", since=since, until=until, top=3)
    assert got["source"] == "ROLLUP"
    check(got, reference(since, until, "CLIENT_KIND", "COMPLETED", Interval.DAY), top=3)

"""Raw download events expire (MODELHUB_EVENT_RETENTION_DAYS) while every stats range answers the same."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId

from graphql_api.analytics.roller import rebuild_rollups
from graphql_api.app import create_app
from graphql_api.db import audit as audit_db
from graphql_api.db import events as events_db
from graphql_api.documents import DownloadEvent, DownloadMode, DownloadStatus
from graphql_api.queries import day_of, hour_of
from tests.analytics.test_stats import ENGINEERS, MODELS, STATS, reference, store
from tests.servers import GraphQLClient, make_settings

RETENTION_DAYS = 90
NOW = datetime.now(UTC)
HORIZON = NOW - timedelta(days=RETENTION_DAYS)
SERIES = """query($by: DownloadDimension!, $s: DateTime!, $u: DateTime!, $i: TimeInterval!) {
  downloadSeries(by: $by, since: $s, until: $u, interval: $i, metric: DOWNLOADS, top: 3) {
    source buckets groups totals series { key isOther values }
  }
}"""


OLD_OFF_HOUR = NOW - timedelta(days=120, minutes=17)
OLD_END = NOW - timedelta(days=100, minutes=41)


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def aged_events(n: int = 200, seed: int = 5) -> list[dict[str, Any]]:
    """Half the events well past the horizon (93-130 days old), half well inside it (1-85 days old); the
    first few old ones beside the off-hour range edges below, inside the hours that hold those edges."""
    rng = random.Random(seed)
    out = []
    near_edges = [OLD_OFF_HOUR - timedelta(minutes=5), OLD_OFF_HOUR + timedelta(minutes=5)]
    near_edges += [OLD_END - timedelta(minutes=10), OLD_END + timedelta(minutes=10)]
    for i in range(n):
        name, version, project = rng.choice(MODELS)
        days = rng.uniform(93, 130) if i % 2 else rng.uniform(1, 85)
        if i % 2 and i // 2 < len(near_edges):
            days = (NOW - near_edges[i // 2]) / timedelta(days=1)
        status = rng.choice([DownloadStatus.COMPLETED] * 4 + [DownloadStatus.ABORTED, DownloadStatus.FAILED])
        size = rng.choice([1_000, 2_000_000])
        out.append(
            dict(
                model_name=name, model_version=version, project_name=project, engineer=rng.choice(ENGINEERS),
                mode=rng.choice([DownloadMode.STREAM, DownloadMode.PRESIGNED]), status=status, size_bytes=size,
                bytes_sent=size if status is DownloadStatus.COMPLETED else rng.randrange(size),
                started_at=_ms(NOW - timedelta(days=days)), duration_seconds=round(rng.uniform(0.1, 90), 3),
            )
        )  # fmt: skip
    return out


def iso(moment: datetime) -> str:
    return moment.isoformat()


RANGES: dict[str, dict[str, str]] = {
    "all time": {},
    "old start off the hour, recent end": {
        "since": iso(OLD_OFF_HOUR),
        "until": iso(NOW - timedelta(days=10)),
    },
    "whole days across the horizon": {
        "since": iso(day_of(NOW - timedelta(days=110))),
        "until": iso(day_of(NOW - timedelta(days=20))),
    },
    "entirely past the horizon, off the hour": {
        "since": iso(OLD_OFF_HOUR),
        "until": iso(OLD_END),
    },
    "recent start, open end": {"since": iso(NOW - timedelta(days=60, minutes=3))},
}
GROUPINGS = [[], ["MODEL"], ["PROJECT", "MODE"], ["ENGINEER"], ["STATUS"]]


async def answers(gql: GraphQLClient) -> dict[str, Any]:
    """Every shape's answer: rows and source, or the error's code and field (its text names the horizon,
    which moves with the clock)."""
    out: dict[str, Any] = {}

    async def ask(key: str, query: str, variables: dict[str, Any]) -> None:
        body = await gql.raw(query, variables)
        if body.get("errors"):
            out[key] = [(e["extensions"].get("code"), e["extensions"].get("field")) for e in body["errors"]]
        else:
            out[key] = body["data"]

    for name, flt in RANGES.items():
        for group_by in GROUPINGS:
            for interval in (None, "DAY", "MONTH"):
                for exact in (False, True):
                    variables = {"g": group_by, "f": flt, "i": interval, "l": 1000, "x": exact}
                    await ask(f"{name} {group_by} {interval} exact={exact}", STATS, variables)
    hours = {"since": iso(NOW - timedelta(days=100, minutes=7)), "until": iso(NOW - timedelta(days=75))}
    for group_by in (["MODEL"], ["ENGINEER"]):
        await ask(f"hours {group_by}", STATS, {"g": group_by, "f": hours, "i": "HOUR", "l": 1000, "x": False})
    for by in ("MODEL", "ENGINEER"):
        for since, until in (
            (OLD_OFF_HOUR, NOW - timedelta(days=2)),
            (day_of(NOW - timedelta(days=60)), NOW),
        ):
            variables = {"by": by, "s": iso(since), "u": iso(until), "i": "WEEK"}
            await ask(f"series {by} {since}", SERIES, variables)
    return out


@pytest.fixture
async def aged(mongo_uri: str, tmp_path: Path) -> AsyncIterator[tuple[GraphQLClient, list[dict[str, Any]]]]:
    """An app (retention 90 days) on a database seeded with events on both sides of the horizon."""
    settings = make_settings(
        "local",
        mongo_uri,
        None,
        tmp_path / "data",
        event_retention_days=RETENTION_DAYS,
        max_hour_range_days=31,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        events = aged_events()
        await store(events, bulk=True)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as http:
            yield GraphQLClient(http), events


def rounded(value: Any) -> Any:
    """`value` with every float to 9 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def rows_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = answer["downloadStats"]["rows"]
    return rows


# slow: ~7s of CPU on this 2-core machine (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_every_stats_shape_answers_the_same_after_events_expire(
    aged: tuple[GraphQLClient, list[dict[str, Any]]],
) -> None:
    """Every stats and series shape gives the same answer (or the same typed refusal) once the raw events
    past the horizon are deleted, as the TTL monitor deletes them; the rollups keep their figures."""
    gql, events = aged
    before = await answers(gql)
    # The database's own TTL monitor may have deleted some of them already (on a slow run).
    collection = DownloadEvent.get_pymongo_collection()
    await collection.delete_many({"started_at": {"$lt": HORIZON}})
    assert await collection.count_documents({}) == len([e for e in events if e["started_at"] >= HORIZON])
    assert len([e for e in events if e["started_at"] < HORIZON]) == len(events) // 2
    after = await answers(gql)
    assert after.keys() == before.keys()
    # Float figures (mean durations) to 9 significant digits: a raw scan's pieces are sized from how long
    # the last one took, so under load the same events are summed in other groups (last bits differ).
    for key in before:
        assert rounded(after[key]) == rounded(before[key]), key
    # Rebuilding the rollups from what is kept leaves the days past the horizon as they were (float sums
    # of rebuilt buckets may differ in their last bits: they are added in another order).
    await rebuild_rollups(horizon=HORIZON)
    rebuilt = await answers(gql)
    for key in before:
        assert rounded(rebuilt[key]) == rounded(before[key]), key

    kept = [e for e in events if e["started_at"] >= HORIZON]
    # The rollups keep every figure: all time, grand total, counts the expired events too.
    assert rows_of(after["all time [] None exact=False"])[0]["downloads"] == len(events)
    # Only raw events answer by engineer: an open start means the horizon, an older start is refused.
    by_engineer = rows_of(after["all time ['ENGINEER'] None exact=False"])
    want = reference(kept, ["ENGINEER"], None)
    assert {(r["engineer"],): r["downloads"] for r in by_engineer} == {
        k: v["downloads"] for k, v in want.items()
    }
    assert after["old start off the hour, recent end ['ENGINEER'] None exact=False"] == [
        ("RANGE_BEYOND_RETENTION", "filter.since")
    ]
    assert after["entirely past the horizon, off the hour [] None exact=True"] == [
        ("RANGE_BEYOND_RETENTION", "filter.since")
    ]
    # A start past the horizon off the hour is read from its whole hour's bucket onwards.
    crossing = after["old start off the hour, recent end [] None exact=False"]["downloadStats"]
    since, until = hour_of(OLD_OFF_HOUR), NOW - timedelta(days=10)
    assert crossing["source"] == "HYBRID"
    assert crossing["rows"][0]["downloads"] == len([e for e in events if since <= e["started_at"] < until])


async def test_the_ttl_index_follows_the_setting(mongo_uri: str, tmp_path: Path) -> None:
    """Starting the app makes TTL indexes on the events' and the audit records' times with the configured
    expiry, and a restart with other settings changes them in place."""
    db_name = "ttl_" + ObjectId().binary.hex()
    for events_days, audit_days in ((90, 365), (30, 400)):
        settings = make_settings(
            "local",
            mongo_uri,
            None,
            tmp_path / "data",
            mongo_db=db_name,
            event_retention_days=events_days,
            audit_retention_days=audit_days,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            assert await events_db.retention_seconds() == events_days * 86_400
            assert await audit_db.retention_seconds() == audit_days * 86_400
            indexes = await DownloadEvent.get_pymongo_collection().index_information()
            assert indexes[events_db.RETENTION_INDEX]["key"] == [("started_at", 1)]

"""Times the main `downloadStats` and `downloads` shapes over HTTP and the same pipelines straight in pymongo.

Usage: python -m bench.analytics [--events 200000] [--data-dir DIR] [--repeat 5]

It loads demo events (seed-demo's generator) into an embedded SecantusDB under --data-dir until the DB holds
--events of them (a reused dir loads nothing), serves the app in a child process on that DB, then prints, per
shape: where the answer came from (ROLLUP, HYBRID or RAW), the median end-to-end GraphQL time, the median time
of the same DB work issued with pymongo (the find of the buckets the app groups, or the raw pipeline), and
their ratio. It also prints the indexes `explain` shows for the
raw shapes. Figures are for the embedded SecantusDB, not MongoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench._common import free_port, start_app, stop
from graphql_api import demo, queries
from graphql_api.db import connect
from graphql_api.db import events as events_db
from graphql_api.db import rollups as rollups_db
from graphql_api.db.common import indexes_used
from graphql_api.db.paging import keyset_page
from graphql_api.documents import DownloadEvent, DownloadRollup
from graphql_api.pagination import PageRequest

DB = "bench_analytics"


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    await fn()  # warm caches and connections
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def stats_document(args: str, declared: str = "$s: DateTime") -> str:
    """The `downloadStats` query a dashboard panel sends, with the given arguments."""
    fields = "modelName projectName engineer periodStart downloads completed totalBytes"
    fields += " p50DurationSeconds p95DurationSeconds uniqueEngineers clientKind distinctDownloads"
    return f"query({declared}) {{ downloadStats({args}) {{ source rows {{ {fields} }} }} }}"


def declared_for(variables: dict[str, Any]) -> str:
    """The variable declarations of a shape: Grafana's panels send `now - range` .. `now` (never on
    midnights: HYBRID, rollups and raw edges), the others a `since` alone."""
    return "$s: DateTime, $u: DateTime" if "u" in variables else "$s: DateTime"


# Their raw equivalents take minutes at 1M events (122 s for 30 d): timed once, or not at all.
RAW_ONCE = {"dashboard 24 h, per hour"}
RAW_SKIPPED = {
    "dashboard 30 d, per day",
    "dashboard 30 d ending 12 h ago",
    "dashboard 30 d at 00:01",
    # One raw pipeline over 30 days: about a minute at 200,000 events (measured once, in the README).
    "by client kind, last 30 d",
    "distinct downloads by model, last 30 d",
}
MINUTE = timedelta(minutes=1)


def downloads_document(with_count: bool) -> str:
    node = "id modelName version engineer status mode bytesSent startedAt durationSeconds"
    gql = "query($f: DownloadFilter) { downloads(filter: $f, first: 100) { "
    return gql + ("totalCount " if with_count else "") + f"edges {{ cursor node {{ {node} }} }} }} }}"


def stats_shapes(now: datetime) -> list[tuple[str, str, dict[str, Any], queries.StatsRequest]]:
    today = queries.day_of(now)
    d30, d7 = (today - timedelta(days=30)), (today - timedelta(days=7))
    q = queries.EventQuery
    return [
        (
            "by model per day, 30 d",
            "groupBy: [MODEL], interval: DAY, filter: {since: $s}, limit: 1000",
            {"s": d30.isoformat()},
            queries.StatsRequest(q(since=d30), [queries.Dimension.MODEL], queries.Interval.DAY, limit=1000),
        ),
        (
            "by project per day, 30 d",
            "groupBy: [PROJECT], interval: DAY, filter: {since: $s}, limit: 1000",
            {"s": d30.isoformat()},
            queries.StatsRequest(q(since=d30), [queries.Dimension.PROJECT], queries.Interval.DAY, limit=1000),
        ),
        (
            "top 10 models, 7 d",
            "groupBy: [MODEL], filter: {since: $s}, orderBy: {field: COMPLETED}, limit: 10",
            {"s": d7.isoformat()},
            queries.StatsRequest(
                q(since=d7), [queries.Dimension.MODEL], order_by=queries.StatsMetric.COMPLETED, limit=10
            ),
        ),
        (
            "top 10 models, 7 d, exact",
            "groupBy: [MODEL], filter: {since: $s}, orderBy: {field: COMPLETED}, limit: 10, exact: true",
            {"s": d7.isoformat()},
            queries.StatsRequest(
                q(since=d7),
                [queries.Dimension.MODEL],
                order_by=queries.StatsMetric.COMPLETED,
                limit=10,
                exact=True,
            ),
        ),
        (
            "by engineer, 1 d (raw)",
            "groupBy: [ENGINEER], filter: {since: $s}, orderBy: {field: TOTAL_BYTES}, limit: 20",
            {"s": (now - timedelta(days=1)).isoformat()},
            queries.StatsRequest(
                q(since=now - timedelta(days=1)),
                [queries.Dimension.ENGINEER],
                order_by=queries.StatsMetric.TOTAL_BYTES,
                limit=20,
            ),
        ),
        (
            "dashboard 24 h, per hour",
            "groupBy: [MODEL], interval: HOUR, filter: {since: $s, until: $u}, limit: 1000",
            {"s": (now - timedelta(hours=24)).isoformat(), "u": now.isoformat()},
            queries.StatsRequest(
                q(since=now - timedelta(hours=24), until=now),
                [queries.Dimension.MODEL],
                queries.Interval.HOUR,
                limit=1000,
            ),
        ),
        (
            "dashboard 30 d, per day",
            "groupBy: [MODEL], interval: DAY, filter: {since: $s, until: $u}, limit: 1000",
            {"s": (now - timedelta(days=30)).isoformat(), "u": now.isoformat()},
            queries.StatsRequest(
                q(since=now - timedelta(days=30), until=now),
                [queries.Dimension.MODEL],
                queries.Interval.DAY,
                limit=1000,
            ),
        ),
        (
            # A range in the past: both edges are read from hourly buckets and raw minutes (a range ending
            # now reads the current day's bucket for its last day).
            "dashboard 30 d ending 12 h ago",
            "groupBy: [MODEL], interval: DAY, filter: {since: $s, until: $u}, limit: 1000",
            {
                "s": (now - timedelta(days=30, hours=12)).isoformat(),
                "u": (now - timedelta(hours=12)).isoformat(),
            },
            queries.StatsRequest(
                q(since=now - timedelta(days=30, hours=12), until=now - timedelta(hours=12)),
                [queries.Dimension.MODEL],
                queries.Interval.DAY,
                limit=1000,
            ),
        ),
        (
            "by client kind, last 30 d",
            "groupBy: [CLIENT_KIND], filter: {since: $s, until: $u}, limit: 1000",
            {"s": (now - timedelta(days=30)).isoformat(), "u": now.isoformat()},
            queries.StatsRequest(
                q(since=now - timedelta(days=30), until=now), [queries.Dimension.CLIENT_KIND], limit=1000
            ),
        ),
        (
            "distinct downloads by model, last 30 d",
            "groupBy: [MODEL], filter: {since: $s, until: $u}, orderBy: {field: DISTINCT_DOWNLOADS}, "
            "limit: 1000",
            {"s": (now - timedelta(days=30)).isoformat(), "u": now.isoformat()},
            queries.StatsRequest(
                q(since=now - timedelta(days=30), until=now),
                [queries.Dimension.MODEL],
                order_by=queries.StatsMetric.DISTINCT_DOWNLOADS,
                limit=1000,
            ),
        ),
        (
            # The worst time of day for a range ending now: at 00:01 its head is 23 hourly buckets and 59
            # raw minutes. Emulated by the 30 days that ended at today's 00:01.
            "dashboard 30 d at 00:01",
            "groupBy: [MODEL], interval: DAY, filter: {since: $s, until: $u}, limit: 1000",
            {"s": (today - timedelta(days=30) + MINUTE).isoformat(), "u": (today + MINUTE).isoformat()},
            queries.StatsRequest(
                q(since=today - timedelta(days=30) + MINUTE, until=today + MINUTE),
                [queries.Dimension.MODEL],
                queries.Interval.DAY,
                limit=1000,
            ),
        ),
    ]


async def load(uri: str, events: int, models: int) -> int:
    # Generous bounds: a busy embedded DB can leave the driver's monitor unanswered past its defaults for a
    # batch this large, and the driver then cancels the batch in flight.
    slow = {"connectTimeoutMS": 600_000, "serverSelectionTimeoutMS": 600_000}
    async with connect(uri, DB, **slow):
        return await _load(events, models)


async def _load(events: int, models: int) -> int:
    have = await DownloadEvent.get_pymongo_collection().estimated_document_count()
    if have < events:
        started = time.perf_counter()
        # 100,000 events per batch; the rollups are written once at the end.
        result = await demo.seed(models, events - have, seed_value=have + 1, force=True, batch=100_000)
        took = time.perf_counter() - started
        print(f"loaded {result.events} events in {took:.0f} s ({result.events / took:,.0f}/s)")
    total = await DownloadEvent.get_pymongo_collection().estimated_document_count()
    return int(total)


async def run(uri: str, base: str, repeat: int, only: str = "") -> None:
    async with connect(uri, DB):
        rows = await _measure(base, repeat, only)
    print("(for HYBRID shapes the pymongo column is the same range as one RAW pipeline)")
    print(f"{'shape':28}  source  GraphQL ms  pymongo ms  ratio")
    for title, source, via_http, via_driver in rows:
        print(f"{title:28}  {source:6}  {via_http:10.1f}  {via_driver:10.1f}  {via_http / via_driver:5.2f}")


async def _measure(base: str, repeat: int, only: str = "") -> list[tuple[str, str, float, float]]:
    rollups = await DownloadRollup.get_pymongo_collection().estimated_document_count()
    print(f"rollup buckets: {rollups}")
    now = datetime.now(UTC)
    rows = []
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        for title, args, variables, req in stats_shapes(now):
            if only not in title:
                continue
            query = stats_document(args, declared_for(variables))

            async def over_http(query: str = query, variables: dict[str, Any] = variables) -> dict[str, Any]:
                body = (await http.post("/graphql", json={"query": query, "variables": variables})).json()
                assert "errors" not in body, body
                return dict(body["data"]["downloadStats"])

            # The same DB work through pymongo alone (no GraphQL, no HTTP, no merging): a find of the
            # buckets the app reads (the whole-model ones when they answer), or the raw pipeline.
            found = rollups_db.narrowest(req)

            async def direct(found: Any = found, req: queries.StatsRequest = req) -> list[Any]:
                if found is not None:
                    return list(await found[0].collection.find(found[1]).to_list())
                coll = DownloadEvent.get_pymongo_collection()
                return list(await (await coll.aggregate(events_db.stats_pipeline(req))).to_list())

            source = (await over_http())["source"]
            if title in RAW_SKIPPED:
                rows.append((title, source, await timed(over_http, repeat), float("nan")))
                continue
            raw_repeat = 1 if title in RAW_ONCE else repeat
            rows.append((title, source, await timed(over_http, repeat), await timed(direct, raw_repeat)))

        # An indexed read: an unfiltered find_one is a collection scan on SecantusDB (minutes at 1,000,000).
        some = await DownloadEvent.find_one({"started_at": {"$gte": now - timedelta(days=1)}})
        assert some is not None
        for title, flt, with_count in (
            []
            if only
            else [
                ("downloads newest 100", {}, False),
                ("downloads of one engineer", {"engineers": [some.engineer]}, False),
                ("  ... with totalCount", {"engineers": [some.engineer]}, True),
            ]
        ):
            gql = downloads_document(with_count)

            async def over_http_page(gql: str = gql, flt: dict[str, Any] = flt) -> Any:
                body = (await http.post("/graphql", json={"query": gql, "variables": {"f": flt}})).json()
                assert "errors" not in body, body
                return body

            event_query = queries.EventQuery(engineers=[some.engineer] if flt else [])

            async def direct_page(
                query: queries.EventQuery = event_query, with_count: bool = with_count
            ) -> Any:
                # What the resolver asks of MongoDB (time windows included), without GraphQL or HTTP.
                order = queries.DownloadOrder()
                flt = events_db.event_filter(query)
                request = PageRequest(first=100)
                page = await keyset_page(
                    DownloadEvent, flt, events_db.sort_of(order), order.key, request, "started_at"
                )
                return await page.count() if with_count else page

            rows.append((title, "RAW", await timed(over_http_page, repeat), await timed(direct_page, repeat)))

        if not only:
            rows += await _page_shapes(http, repeat)

        coll = DownloadEvent.get_pymongo_collection()
        for title, _, _, req in stats_shapes(now):
            if rollups_db.bucket_filter(req) is not None:
                continue
            plan = await coll.database.command(
                "explain",
                {"aggregate": coll.name, "pipeline": events_db.stats_pipeline(req), "cursor": {}},
                verbosity="queryPlanner",
            )
            print(f"explain {title}: indexes {sorted(indexes_used(plan)) or 'none (collection scan)'}")
    return rows


PAGE = """query($o: DownloadOrder, $first: Int, $after: String, $last: Int, $before: String) {
  downloads(orderBy: $o, first: $first, after: $after, last: $last, before: $before) {
    pageInfo { startCursor endCursor } edges { node { id } } } }"""
ASC = {"field": "STARTED_AT", "direction": "ASC"}


async def _page_shapes(http: httpx.AsyncClient, repeat: int) -> list[tuple[str, str, float, float]]:
    """`downloads` pages away from the newest: after a cursor, the oldest (`last`, or ascending) and before a
    cursor (hostile-client finding: each once read every event). The pymongo column is `keyset_page` itself
    (its time windows, no GraphQL or HTTP)."""
    first = (await http.post("/graphql", json={"query": PAGE, "variables": {"first": 100}})).json()
    end = first["data"]["downloads"]["pageInfo"]["endCursor"]
    shapes: list[tuple[str, dict[str, Any]]] = [
        ("downloads page 2 (after)", {"first": 100, "after": end}),
        ("downloads last 100", {"last": 100}),
        ("downloads last 1", {"last": 1}),
        ("downloads last 100 before page 1", {"last": 100, "before": end}),
        ("downloads oldest 100 (ASC)", {"o": ASC, "first": 100}),
    ]
    # What the app reads from its counts in memory (analytics/volume.py), read here once.
    start = await rollups_db.first_day()

    async def earliest() -> datetime | None:
        return start

    rows = []
    for title, variables in shapes:

        async def over_http(variables: dict[str, Any] = variables) -> Any:
            body = (await http.post("/graphql", json={"query": PAGE, "variables": variables})).json()
            assert "errors" not in body, body
            return body

        def request_of(variables: dict[str, Any]) -> tuple[queries.DownloadOrder, PageRequest]:
            order = queries.DownloadOrder(descending="o" not in variables)
            fields = {k: v for k, v in variables.items() if k in ("first", "after", "last", "before")}
            return order, PageRequest(**fields)

        async def direct(variables: dict[str, Any] = variables) -> Any:
            order, request = request_of(variables)
            return await keyset_page(
                DownloadEvent, {}, events_db.sort_of(order), order.key, request, "started_at",
                earliest=earliest,
            )  # fmt: skip

        rows.append((title, "RAW", await timed(over_http, repeat), await timed(direct, repeat)))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--data-dir", type=Path, help="keep the loaded DB here and reuse it next time")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="", help="time only the stats shapes whose title holds this text")
    args = parser.parse_args()
    from graphql_api.embedded import EmbeddedMongo

    with tempfile.TemporaryDirectory(prefix="modelhub-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        with EmbeddedMongo(data_dir) as mongo:
            total = await load(mongo.uri, args.events, args.models)
            print(f"DB: embedded SecantusDB at {data_dir / 'db'}; {total} events")
            port = free_port()
            env = {
                "MODELHUB_MONGO_URI": mongo.uri,
                "MODELHUB_MONGO_DB": DB,
                "MODELHUB_AUTH": "header",
                "MODELHUB_DATA_DIR": tmp,
                "MODELHUB_REQUEST_TIMEOUT_SECONDS": "300",
                "MODELHUB_MAX_QUERY_COST": "10000000",  # a filtered totalCount is priced as a raw scan
                # raw scans are priced by their events: a million of them cost more than any budget holds
                "MODELHUB_COST_BUDGET": "1000000000",
                "MODELHUB_ANONYMOUS_COST_BUDGET": "1000000000",
            }  # fmt: skip  (timed here, not refused)
            started = time.perf_counter()
            # The first start on a freshly loaded DB builds the app's indexes over every event: minutes.
            app = start_app(env, port, timeout=1800)
            print(f"app answered /healthz after {time.perf_counter() - started:.1f} s", flush=True)
            try:
                await run(mongo.uri, f"http://127.0.0.1:{port}", args.repeat, args.only)
            finally:
                stop(app)


if __name__ == "__main__":
    asyncio.run(main())

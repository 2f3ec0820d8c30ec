"""The roller: download stages folded into the rollups off the request path, exactly once, by one holder."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from beanie import PydanticObjectId

from graphql_api.analytics import roller
from graphql_api.config import Settings
from graphql_api.db import events as events_db
from graphql_api.db import rollup_state
from graphql_api.db import rollups as rollups_db
from graphql_api.db.rollups import writes as rollup_writes
from graphql_api.documents import DownloadEvent, DownloadMode, DownloadStatus, utcnow
from tests.servers import GraphQLClient, SharedApps, Stores, eventually

# The app's own roller takes the lease at start and then sleeps: the tests fold when they say so.
CONTROLLED = {"rollup_interval_seconds": 3600.0, "rollup_lease_seconds": 0.5}
# A roller that runs as in production, only faster.
RUNNING = {"rollup_interval_seconds": 0.2, "rollup_lag_seconds": 1.0, "rollup_lease_seconds": 2.0}
HOLDER = "test-folder"
ALICE = {"X-Engineer-ID": "alice"}
REGISTER = """mutation($input: RegisterModelInput!) {
  registerModel(input: $input) { __typename ... on ModelVersion { version } ... on UserError { message } }
}"""
TICKET = """mutation($n: String!) { requestDownload(input: {name: $n, mode: PRESIGNED}) {
  __typename ... on DownloadTicket { download { id } } } }"""
VERIFY = """mutation($d: ID!, $m: Boolean!) {
  reportDownloadVerification(input: {download: $d, sha256Matches: $m}) { __typename } }"""
STATS = """query($x: Boolean!) {
  downloadStats(groupBy: [MODEL, VERSION, MODE], interval: DAY, exact: $x) { source rows {
    modelName version mode periodStart downloads completed aborted failed verified mismatched totalBytes
    maxDurationSeconds uniqueEngineers distinctDownloads } }
  models(first: 10) { nodes { name downloadCount lastDownloadedAt
    latestVersion { downloadCount lastDownloadedAt } } }
  byDownloads: models(orderBy: {field: DOWNLOADS}) { edges { windowDownloads node { name } } }
  downloads(first: 1) { totalCount }
}"""


@pytest.fixture
def store_kind() -> str:
    return "local"


@pytest.fixture
def settings(
    mongo_uri: str, clean_db: str, shared_apps: SharedApps, request: pytest.FixtureRequest
) -> Settings:
    """The module's shared app for the roller's timing (CONTROLLED unless a test names RUNNING)."""
    return shared_apps.settings_for(
        "local", mongo_uri, None, clean_db, **getattr(request, "param", CONTROLLED)
    )


async def register(gql: GraphQLClient, stores: Stores, bucket: str, name: str, data: bytes) -> None:
    stores.put(bucket, f"{name}/w.bin", data)
    variables = {"name": name, "projectName": "p", "bucket": bucket, "key": f"{name}/w.bin"}
    assert (await gql(REGISTER, {"input": variables}))["registerModel"]["__typename"] == "ModelVersion"


async def one_step(http: httpx.AsyncClient, name: str) -> None:
    resp = await http.get(f"/models/{name}/download", headers=ALICE)
    assert resp.status_code == 200


async def all_finished() -> bool:
    return not await DownloadEvent.find({"status": DownloadStatus.IN_PROGRESS.value}).count()


async def downloads(gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str) -> None:
    """Every kind of download: two one-step streamed ones of two models, a PRESIGNED ticket, a verdict."""
    await register(gql, stores, bucket, "a", b"x" * 1000)
    await register(gql, stores, bucket, "b", b"y" * 300)
    for name in ("a", "a", "b"):
        await one_step(http, name)
    issued = (await gql(TICKET, {"n": "b"}, **ALICE))["requestDownload"]["download"]["id"]
    assert (await gql(VERIFY, {"d": issued, "m": True}, **ALICE))["reportDownloadVerification"]
    assert await eventually(all_finished)


async def fold_now(lag: float = 0.0, now: datetime | None = None) -> int:
    """A fold as the lease holder (the app's roller gives its short lease up by letting it expire)."""
    assert await eventually(lambda: rollup_state.acquire(HOLDER, 30.0))
    return await roller.fold(HOLDER, lag, now=now)


async def figures(gql: GraphQLClient) -> tuple[Any, Any, Any]:
    """(rollup answer, raw answer, totals) of the same stats; the totals read from the rollups
    (downloadCount, lastDownloadedAt, orderBy DOWNLOADS, totalCount) are checked against the raw events
    unless a stage is missing from the rollups on purpose (see `raw_totals`)."""
    fast, raw = [await gql(STATS, {"x": x}) for x in (False, True)]
    assert fast["downloadStats"]["source"] == "ROLLUP" and raw["downloadStats"]["source"] == "RAW"
    counts = sorted((m["name"], m["downloadCount"]) for m in fast["models"]["nodes"])
    totals = (counts, fast["downloads"]["totalCount"])
    return fast["downloadStats"]["rows"], raw["downloadStats"]["rows"], totals


async def totals_equal_raw(gql: GraphQLClient) -> None:
    """Every total read from the rollups equals the raw events': per model and its latest version the
    completed downloads and the last one's finish, the window's order, and the number of events."""
    data = await gql(STATS, {"x": False})
    docs = [d async for d in DownloadEvent.get_pymongo_collection().find()]
    want = []
    for model in data["models"]["nodes"]:
        done = [d for d in docs if d["model_name"] == model["name"] and d.get("completes")]
        latest = [d for d in done if d["model_version"] == max(e["model_version"] for e in docs)]
        last = [max((d["finished_at"] for d in found), default=None) for found in (done, latest)]
        iso = [None if t is None else t.isoformat() for t in last]
        want.append((len(done), iso[0], len(latest), iso[1]))
    got = [
        (m["downloadCount"], m["lastDownloadedAt"], m["latestVersion"]["downloadCount"],
         m["latestVersion"]["lastDownloadedAt"])
        for m in data["models"]["nodes"]
    ]  # fmt: skip
    assert got == want
    window = {e["node"]["name"]: e["windowDownloads"] for e in data["byDownloads"]["edges"]}
    assert window == {m["name"]: n for m, (n, *_) in zip(data["models"]["nodes"], want, strict=True)}
    assert data["downloads"]["totalCount"] == len(docs)


async def stored_downloads() -> int:
    """Download events counted in the daily buckets themselves (not what a reader adds)."""
    return sum([d["downloads"] async for d in rollups_db.DAY.collection.find()])


async def test_a_download_is_in_the_rollups_after_a_fold_and_equals_raw(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """The request path writes no bucket; one fold puts every stage in the buckets of every grain, equal to
    the raw answer, and moves the watermark past them."""
    await downloads(gql, http, stores, bucket)
    for grain in rollups_db.GRAINS:
        assert await grain.collection.count_documents({}) == 0, grain.document
    assert await fold_now() == 4 + 3 + 1  # recorded, finished (the ticket is not), verified
    for grain in rollups_db.GRAINS:
        summed = sum([d["downloads"] async for d in grain.collection.find()])
        assert summed == 4, grain.document
    fast, raw, totals = await figures(gql)
    assert fast == raw and any(r["verified"] == 1 for r in raw)
    assert totals == ([("a", 2), ("b", 1)], 4)
    await totals_equal_raw(gql)
    assert (await rollup_state.read()).applying is None
    assert not [s async for s in events_db.staged_after((await rollup_state.read()).watermark)]


async def test_stats_are_exact_before_the_fold(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """Stages not folded yet are added by every reader of the rollups (stats, downloadCount, totalCount),
    and a fold of half of them (a first fold, then more downloads) leaves the answers unchanged."""
    await downloads(gql, http, stores, bucket)
    assert await stored_downloads() == 0
    fast, raw, totals = await figures(gql)
    assert fast == raw and sum(r["downloads"] for r in raw) == 4
    assert totals == ([("a", 2), ("b", 1)], 4)
    await totals_equal_raw(gql)
    await fold_now()
    await one_step(http, "a")
    assert await eventually(all_finished)
    assert await stored_downloads() == 4
    fast, raw, totals = await figures(gql)
    assert fast == raw and sum(r["downloads"] for r in raw) == 5
    assert totals == ([("a", 3), ("b", 1)], 5)
    await totals_equal_raw(gql)


async def _crash_once(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, after: int) -> None:
    """Makes `module.name` raise on its call number `after` + 1 (once), inside a fold."""
    real: Callable[..., Awaitable[Any]] = getattr(module, name)
    calls = 0

    async def crashing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == after + 1:
            raise RuntimeError("the process died here")
        return await real(*args, **kwargs)

    monkeypatch.setattr(module, name, crashing)


@pytest.mark.parametrize(
    ("module", "name", "after"),
    [(rollup_state, "advance", 0), (rollup_writes, "fold_bucket", 5)],
    ids=["before-the-watermark", "between-buckets"],
)
async def test_a_crash_inside_a_fold_neither_loses_nor_doubles(
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    stores: Stores,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    name: str,
    after: int,
) -> None:
    """A fold that dies after its buckets (or some of them) are written and before the watermark moves is
    finished to the same target by the next fold, which skips the buckets already written."""
    await downloads(gql, http, stores, bucket)
    await _crash_once(monkeypatch, module, name, after)
    with pytest.raises(RuntimeError, match="died"):
        await fold_now()
    state = await rollup_state.read()
    assert state.applying is not None and state.watermark < state.applying
    fast, raw, _ = await figures(gql)
    assert fast == raw  # a reader in the middle of the broken fold: each bucket counts its stages once
    await totals_equal_raw(gql)
    await fold_now()
    assert (await rollup_state.read()).applying is None
    assert await stored_downloads() == 4
    fast, raw, _ = await figures(gql)
    assert fast == raw
    await fold_now()  # nothing left to fold twice
    assert await stored_downloads() == 4


async def test_only_the_lease_holder_folds(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """Of two workers' rollers, the one holding the lease folds; the other folds nothing while it lives,
    and takes over once it gives the lease up."""
    await downloads(gql, http, stores, bucket)
    first = roller.Roller(None, 1.0, 0.0, 30.0, holder="worker-1")
    second = roller.Roller(None, 1.0, 0.0, 30.0, holder="worker-2")
    assert await eventually(lambda: rollup_state.acquire("worker-1", 30.0))  # the app's lease expired
    assert await second.step() == 0 and await stored_downloads() == 0
    assert await first.step() == 8 and await stored_downloads() == 4
    await one_step(http, "b")
    assert await eventually(all_finished)
    assert await second.step() == 0 and await stored_downloads() == 4
    assert (await rollup_state.read()).holder == "worker-1"
    await rollup_state.release("worker-1")
    assert await second.step() == 2 and await stored_downloads() == 5
    assert await first.step() == 0


async def test_a_stage_written_late_within_the_lag_is_folded(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """A stage whose write lands after a fold but is stamped within the lag of it is counted by readers and
    folded by the next fold; one later than the lag is missed by the rollups until rebuild-rollups."""
    await register(gql, stores, bucket, "a", b"x" * 10)
    now = utcnow()
    await fold_now(lag=10.0, now=now)
    assert (await rollup_state.read()).watermark == now - timedelta(seconds=10)

    async def late(stamped: datetime) -> None:
        event = DownloadEvent(
            model_id=PydanticObjectId(), model_name="a", model_version=1, project_name="p", size_bytes=10, engineer="alice",
            mode=DownloadMode.PRESIGNED, started_at=stamped, stages={"recorded": stamped}, staged_at=stamped,
        )  # fmt: skip
        await events_db.EventWrites().insert(event)

    await late(now - timedelta(seconds=5))  # stamped 5 s before it was written: within the lag
    fast, raw, _ = await figures(gql)
    assert fast == raw and raw[0]["downloads"] == 1
    assert await fold_now(lag=10.0, now=now + timedelta(seconds=6)) == 1
    assert await stored_downloads() == 1
    await late(now - timedelta(seconds=8))  # older than the watermark (now - 4 s): later than the lag
    fast, raw, _ = await figures(gql)
    assert raw[0]["downloads"] == 2 and fast[0]["downloads"] == 1
    await rollup_state.release(HOLDER)
    await roller.rebuild_rollups(lag_seconds=10.0, lease_seconds=1.0)
    fast, raw, _ = await figures(gql)
    assert fast == raw


@pytest.mark.parametrize("settings", [RUNNING], indirect=True)
async def test_rebuild_with_the_roller_running_equals_raw(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """rebuild-rollups takes the lease from the running roller while downloads go on; afterwards the
    buckets themselves (once the roller has folded the rest) equal the raw events, none lost or doubled."""
    await downloads(gql, http, stores, bucket)

    async def more() -> None:
        for _ in range(12):
            await one_step(http, "a")

    busy = asyncio.create_task(more())
    await asyncio.sleep(0)
    assert await roller.rebuild_rollups(lag_seconds=1.0, lease_seconds=2.0) > 0
    await busy
    assert await eventually(all_finished)
    last = max([d["staged_at"] async for d in DownloadEvent.get_pymongo_collection().find()])

    async def folded() -> bool:
        return (await rollup_state.read()).watermark >= last

    assert await eventually(folded)
    assert await stored_downloads() == await DownloadEvent.find().count() == 16
    fast, raw, totals = await figures(gql)
    assert fast == raw and totals[1] == 16
    await totals_equal_raw(gql)
    assert (await rollup_state.read()).holder not in (None, HOLDER)
    assert datetime.now(UTC) - (await rollup_state.read()).watermark < timedelta(seconds=30)


LONG = """query($x: Boolean!, $f: DownloadFilter, $o: StatsOrder, $a: String) {
  downloadStats(groupBy: [MODEL, MODE], filter: $f, orderBy: $o, limit: 2, after: $a, exact: $x) {
    source totalRows pageInfo { hasNextPage endCursor }
    rows { modelName mode downloads completed totalBytes uniqueEngineers distinctDownloads } } }"""


async def test_a_long_range_paged_by_the_database_counts_pending_stages(
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    stores: Stores,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ROLLUP range long enough to be grouped, ordered and paged by the database gives the raw answer's
    pages while stages are pending (the buckets they fall in handed to it with them added), before and
    after a fold."""
    paged: list[bool] = []
    page_in_db = rollups_db.page_in_db

    async def spy(*args: Any, **kw: Any) -> Any:
        found = await page_in_db(*args, **kw)
        paged.append(found is not None)
        return found

    monkeypatch.setattr(rollups_db, "page_in_db", spy)
    await downloads(gql, http, stores, bucket)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    window = {
        "since": (today - timedelta(days=80)).isoformat(),
        "until": (today + timedelta(days=1)).isoformat(),
    }
    for fold in (False, True):
        if fold:
            await fold_now()
            await one_step(http, "b")
            await one_step(http, "b")
            assert await eventually(all_finished)
        for order in ({"field": "DOWNLOADS"}, {"field": "TOTAL_BYTES", "direction": "ASC"}):
            after: dict[bool, str | None] = {False: None, True: None}
            for _ in range(2):
                found = {}
                for exact in (False, True):
                    variables = {"x": exact, "f": window, "o": order, "a": after[exact]}
                    found[exact] = (await gql(LONG, variables))["downloadStats"]
                    after[exact] = found[exact]["pageInfo"]["endCursor"]
                fast, raw = found[False], found[True]
                assert fast["source"] == "ROLLUP" and raw["source"] == "RAW"
                assert fast["rows"] == raw["rows"] and fast["totalRows"] == raw["totalRows"] == 3
    assert paged and all(paged)

"""Outages survived: the database and the object store, each in its own process, are stopped (SIGSTOP),
continued and killed under a `modelhub serve` process; requests get typed errors within 5 s, /readyz
follows, everything recovers by itself, and every download the clients started is recorded once. And a
hostile READER's flood of raw scans leaves the instance ready and other principals answered."""

from __future__ import annotations

import asyncio
import math
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pymongo
import pytest

from graphql_api.analytics.roller import rebuild_rollups
from graphql_api.auth import create_token
from graphql_api.db import connect
from graphql_api.documents import DownloadEvent
from graphql_api.roles import Role
from graphql_api.schema.cost import RAW_EVENTS_PER_POINT, STATS_BASE
from tests.schema.test_guards import _events as seeded
from tests.servers import ServeProcess, ServerProcess, eventually, make_settings

pytestmark = (
    pytest.mark.process
)  # the database and the store run in child processes that a test stops and kills

BOUND = 5.0  # seconds: the longest an outage may keep a request waiting
REGISTER = 'mutation($b: String!, $k: String!) { registerModel(input: {name: "m", projectName: "p", bucket: $b, key: $k}) { __typename } }'
TICKET = 'mutation { requestDownload(input: {name: "m", mode: STREAM}) { __typename ... on DownloadTicket { url } } }'
WHO = {"X-Engineer-ID": "alice"}
BIG = 48 * 1024 * 1024
# Loopback TCP buffers autotune up to net.ipv4.tcp_rmem's max (32 MiB here) plus 4 MiB of send buffer per hop,
# so S3 → server → client can hold ~72 MiB in flight: an object killed mid-read must be well beyond that.
HUGE = 160 * 1024 * 1024


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess("mongo", tmp_path / "mongo").start()
    try:
        yield server
    finally:
        server.stop()


async def gql(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    resp = await http.post("/graphql", json={"query": query, "variables": variables}, headers=WHO)
    body: dict[str, Any] = resp.json()
    return body


def code_of(body: dict[str, Any]) -> str | None:
    errors = body.get("errors") or []
    return errors[0].get("extensions", {}).get("code") if errors else None


async def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


def outcomes(mongo_url: str, db_name: str) -> dict[str, int]:
    with pymongo.MongoClient(mongo_url) as client:
        rows = client[db_name].download_events.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        return {row["_id"]: row["n"] for row in rows}


async def test_database_stall_and_kill(mongo: ServerProcess, tmp_path: Path) -> None:
    """DB stopped: typed DATABASE_UNAVAILABLE within 5 s on GraphQL and routes, /readyz 503, a download
    already streaming completes and is recorded once the DB is back; DB killed and restarted: the same,
    then recovery; COMPLETED + ABORTED + FAILED equal the downloads the clients started."""
    settings = make_settings("local", mongo.url, None, tmp_path / "data")
    artifact = settings.objects_dir / "bkt" / "m.bin"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"z" * BIG)
    started_downloads = 0
    with ServeProcess(settings) as serve:
        async with httpx.AsyncClient(base_url=serve.url, timeout=60) as http:
            assert (await gql(http, REGISTER, b="bkt", k="m.bin"))["data"]["registerModel"][
                "__typename"
            ] == "ModelVersion"
            # A download in flight when the database stops.
            async with http.stream("GET", "/models/m/download", headers=WHO) as streaming:
                assert streaming.status_code == 200
                started_downloads += 1
                chunks = streaming.aiter_bytes()
                received = len(await anext(chunks))
                mongo.signal(signal.SIGSTOP)
                try:
                    body, took = await timed(gql(http, "{ models(first: 5) { totalCount } }"))
                    assert code_of(body) == "DATABASE_UNAVAILABLE" and took < BOUND, (body, took)
                    resp, took = await timed(http.get("/models/m/download", headers=WHO))
                    assert resp.status_code == 503 and took < BOUND, (resp.text, took)
                    assert resp.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
                    resp, took = await timed(http.get("/readyz"))
                    assert resp.status_code == 503 and took < BOUND
                    assert "/" not in str(resp.json().get("mongo", ""))
                    async for chunk in chunks:  # the stream does not need the database
                        received += len(chunk)
                    assert received == BIG
                finally:
                    mongo.signal(signal.SIGCONT)
            ok = await eventually(lambda: _ready(http), 30)
            assert ok, "did not recover after SIGCONT"
            assert (await gql(http, "{ models(first: 5) { totalCount } }"))["data"]["models"][
                "totalCount"
            ] == 1

            mongo.kill()
            body, took = await timed(gql(http, TICKET))
            assert code_of(body) == "DATABASE_UNAVAILABLE" and took < BOUND, (body, took)
            resp, took = await timed(http.get("/readyz"))
            assert resp.status_code == 503 and took < BOUND
            mongo.start()
            assert await eventually(lambda: _ready(http), 30), "did not recover after a restart"
            url = (await gql(http, TICKET))["data"]["requestDownload"]["url"]
            resp = await http.get(url)
            assert resp.status_code == 200 and len(resp.content) == BIG
            started_downloads += 1

            async def recorded() -> bool:
                seen = outcomes(mongo.url, settings.mongo_db)
                return sum(seen.get(s, 0) for s in ("COMPLETED", "ABORTED", "FAILED")) == started_downloads

            assert await eventually(recorded, 30), outcomes(mongo.url, settings.mongo_db)
            assert outcomes(mongo.url, settings.mongo_db).get("COMPLETED") == started_downloads


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_store_stall_and_kill(mongo: ServerProcess, tmp_path: Path) -> None:
    """S3 stopped 3 s mid-download: the download waits and completes byte-exact; S3 killed mid-download:
    the event is FAILED with a reason and counted in downloads_failed_total; while it is down, tickets get
    STORAGE_UNAVAILABLE and the one-step route a JSON 502 within 5 s; it recovers once S3 is back."""
    import boto3

    moto = ServerProcess("s3", tmp_path / "moto").start()
    try:
        settings = make_settings("s3", mongo.url, moto.url, tmp_path / "data")
        s3 = boto3.client("s3", endpoint_url=moto.url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
        bucket = "b-" + uuid.uuid4().hex[:8]
        s3.create_bucket(Bucket=bucket)
        payload = bytes(range(256)) * (HUGE // 256)
        s3.put_object(Bucket=bucket, Key="m.bin", Body=payload)
        s3.close()
        env = {"MODELHUB_STORE_READ_TIMEOUT_SECONDS": "20"}
        with ServeProcess(settings, **env) as serve:
            async with httpx.AsyncClient(base_url=serve.url, timeout=60) as http:
                assert (await gql(http, REGISTER, b=bucket, k="m.bin"))["data"]["registerModel"][
                    "__typename"
                ] == "ModelVersion"
                got = bytearray()
                async with http.stream("GET", "/models/m/download", headers=WHO) as streaming:
                    chunks = streaming.aiter_bytes()
                    got += await anext(chunks)
                    moto.signal(signal.SIGSTOP)
                    await asyncio.sleep(3)
                    moto.signal(signal.SIGCONT)
                    async for chunk in chunks:
                        got += chunk
                assert bytes(got) == payload

                async with http.stream("GET", "/models/m/download", headers=WHO) as streaming:
                    chunks = streaming.aiter_bytes()
                    await anext(chunks)
                    moto.kill()
                    with pytest.raises(httpx.HTTPError):
                        async for _ in chunks:
                            pass

                body, took = await timed(gql(http, TICKET))
                result = body.get("data", {}) and body["data"]["requestDownload"]
                assert took < BOUND and (code_of(body) == "STORAGE_UNAVAILABLE" or result), (body, took)
                resp, took = await timed(http.get("/models/m/download", headers=WHO))
                assert resp.status_code == 502 and took < BOUND, (resp.text, took)
                assert resp.json()["error"]["code"] == "STORAGE_UNAVAILABLE" and "127.0.0.1" not in resp.text
                assert (await http.get("/readyz")).status_code == 503

                async def failed_recorded() -> bool:
                    return outcomes(mongo.url, settings.mongo_db).get("FAILED", 0) == 1

                assert await eventually(failed_recorded, 30), outcomes(mongo.url, settings.mongo_db)
                with pymongo.MongoClient(mongo.url) as client:
                    failed = client[settings.mongo_db].download_events.find_one({"status": "FAILED"})
                assert failed["error"] and 0 < failed["bytes_sent"] < HUGE
                metrics = (await http.get("/metrics")).text
                assert 'modelhub_downloads_failed_total{mode="STREAM"} 1.0' in metrics
                assert outcomes(mongo.url, settings.mongo_db).get("COMPLETED") == 1

                moto.start()
                assert await eventually(lambda: _ready(http), 30), "did not recover after S3 restarted"
    finally:
        moto.stop()


async def test_a_stalled_database_does_not_hold_up_a_request_whose_token_is_cached(
    mongo: ServerProcess, tmp_path: Path
) -> None:
    """DB stopped (SIGSTOP): a request with a cached token answers its data, not a 500 nor a wait for the
    database, though its token's lastUsedAt is due (written in the background, best-effort); once the DB
    continues, lastUsedAt is recorded."""
    settings = make_settings("local", mongo.url, None, tmp_path / "data", auth="token")
    async with connect(mongo.url, settings.mongo_db):
        token, _ = await create_token("t-rita", "rita", Role.READER, "test")
    env = {
        "MODELHUB_TOKEN_TOUCH_SECONDS": "0",  # every request's lastUsedAt is due
        "MODELHUB_TOKEN_CACHE_SECONDS": "600",
        "MODELHUB_HEALTH_FAILURES": "40",  # not marked down meanwhile: the request itself must not wait
    }
    typename = {"query": "{ __typename }"}
    headers = {"Authorization": f"Bearer {token}"}
    with ServeProcess(settings, **env) as serve:
        async with httpx.AsyncClient(base_url=serve.url, timeout=60) as http:
            assert (await http.post("/graphql", json=typename, headers=headers)).json()["data"]
            mongo.signal(signal.SIGSTOP)
            try:
                for _ in range(3):
                    resp, took = await timed(http.post("/graphql", json=typename, headers=headers))
                    assert resp.status_code == 200 and took < BOUND, (resp.text, took)
                    assert resp.json()["data"] == {"__typename": "Query"}, resp.text
            finally:
                mongo.signal(signal.SIGCONT)

            async def last_used() -> Any:
                with pymongo.MongoClient(mongo.url) as client:
                    found = client[settings.mongo_db].api_tokens.find_one({"name": "t-rita"})
                    return found and found.get("last_used_at")

            await http.post("/graphql", json=typename, headers=headers)
            assert await eventually(last_used, 30)


# --- a hostile READER (#27) ---------------------------------------------------------------------------------

EVENTS = 20_000
SCAN = "{ downloadStats(groupBy: [ENGINEER], exact: true, limit: 10) { totalRows } }"
TRIVIAL = "{ models(first: 1) { totalCount } }"


@pytest.mark.slow  # 20,000 events, then a 20 s flood
async def test_a_reader_flooding_exact_grouped_stats_leaves_the_instance_ready_and_others_answered(
    mongo: ServerProcess, tmp_path: Path
) -> None:
    """A READER firing 4 exact downloadStats by ENGINEER at once, in a loop, over 20,000 events: each is
    priced by the events it reads, /readyz never says the database is down, and another principal's trivial
    queries are all answered (none DATABASE_UNAVAILABLE); the flood's own requests end with rows or a typed
    timeout, never a 500."""
    settings = make_settings("local", mongo.url, None, tmp_path / "data", auth="token")
    async with connect(mongo.url, settings.mongo_db):
        batch = seeded(EVENTS)  # within the event retention
        for i in range(0, EVENTS, 5_000):
            await DownloadEvent.get_pymongo_collection().insert_many(batch[i : i + 5_000], ordered=False)
        await rebuild_rollups()
        rita, _ = await create_token("t-rita", "rita", Role.READER, "test")
        bob, _ = await create_token("t-bob", "bob", Role.ENGINEER, "test")
    env = {
        "MODELHUB_REQUEST_TIMEOUT_SECONDS": "15",
        "MODELHUB_COST_BUDGET": "1000000000",  # the flood is not cut short by the budget: the caps must hold
    }
    with ServeProcess(settings, **env) as serve:
        async with httpx.AsyncClient(base_url=serve.url, timeout=60) as http:

            async def ask(token: str, query: str) -> tuple[int, dict[str, Any]]:
                resp = await http.post(
                    "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
                )
                return resp.status_code, resp.json()

            status, first = await ask(rita, SCAN)
            assert status == 200 and first["data"]["downloadStats"]["totalRows"] == 300, first
            rows = 10 // 10  # limit 10 x one field, ten rows a point
            assert first["extensions"]["cost"]["requested"] == (
                STATS_BASE + math.ceil(EVENTS / RAW_EVENTS_PER_POINT) + rows
            )
            stop = time.monotonic() + 20
            flood: list[tuple[int, str | None]] = []
            bystander: list[str | None] = []
            ready: list[int] = []

            async def attacker() -> None:
                while time.monotonic() < stop:
                    status, body = await ask(rita, SCAN)
                    flood.append((status, code_of(body)))

            async def other() -> None:
                while time.monotonic() < stop:
                    status, body = await ask(bob, TRIVIAL)
                    assert status == 200, body
                    bystander.append(code_of(body))
                    await asyncio.sleep(0.2)

            async def probe() -> None:
                while time.monotonic() < stop:
                    ready.append((await http.get("/readyz")).status_code)
                    await asyncio.sleep(0.2)

            await asyncio.gather(*[attacker() for _ in range(4)], other(), probe())
    print(
        f"flood: {len(flood)} requests {sorted(set(flood), key=str)}; bystander: {len(bystander)}; readyz: {len(ready)}"
    )
    assert flood and all(status == 200 for status, _ in flood), flood
    assert {code for _, code in flood} <= {None, "DATABASE_TIMEOUT"}, flood
    assert bystander and all(code is None for code in bystander), bystander
    assert ready and all(status == 200 for status in ready), ready

"""Downloads end to end over real sockets: tickets, streaming, ranges, aborts, failures and counts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from typing import Any

import httpx
import pytest
from bson import ObjectId

from graphql_api.config import Settings
from graphql_api.signing import Signer
from tests.servers import GraphQLClient, LiveServer, Stores, abandon, db_id, eventually

REGISTER = """mutation($input: RegisterModelInput!) {
  registerModel(input: $input) { __typename ... on ModelVersion { id version } ... on UserError { code message } }
}"""
REQUEST = """mutation($input: RequestDownloadInput!) {
  requestDownload(input: $input) {
    __typename
    ... on DownloadTicket { url mode expiresAt download { id status mode engineer version sizeBytes } }
    ... on UserError { code message }
    ... on InvalidInput { field }
  }
}"""


async def register(
    gql: GraphQLClient, stores: Stores, bucket: str, data: bytes, name: str = "m", key: str = "weights.bin"
) -> dict[str, Any]:
    stores.put(bucket, f"{name}/{key}", data)
    variables = {"name": name, "projectName": "p", "bucket": bucket, "key": f"{name}/{key}"}
    r = await gql(REGISTER, {"input": variables})
    result: dict[str, Any] = r["registerModel"]
    assert result["__typename"] == "ModelVersion", result
    return result


async def ticket(gql: GraphQLClient, name: str = "m", mode: str = "STREAM", **kw: Any) -> dict[str, Any]:
    data = await gql(REQUEST, {"input": {"name": name, "mode": mode, **kw}}, **{"X-Engineer-ID": "alice"})
    result: dict[str, Any] = data["requestDownload"]
    return result


def event(db: Any, event_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = db.download_events.find_one({"_id": db_id(event_id)})
    return doc


async def wait_for_status(db: Any, event_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        doc = event(db, event_id)
        if doc["status"] in statuses or time.monotonic() > deadline:
            return doc
        await asyncio.sleep(0.05)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("mode", ["STREAM", "PRESIGNED"])
async def test_round_trip_is_byte_exact(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str, db: Any, mode: str
) -> None:
    """Both modes on both stores deliver the registered bytes; STREAM ends COMPLETED, PRESIGNED ISSUED."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    await register(live_gql, stores, bucket, data)
    t = await ticket(live_gql, mode=mode)
    assert t["__typename"] == "DownloadTicket" and t["download"]["status"] == "ISSUED"
    assert t["download"]["engineer"] == "alice" and t["download"]["sizeBytes"] == len(data)
    resp = await live_http.get(t["url"])
    assert resp.status_code == 200, resp.text
    assert sha(resp.content) == sha(data)
    assert (
        "attachment" in resp.headers["content-disposition"]
        and "weights.bin" in resp.headers["content-disposition"]
    )
    if mode == "STREAM":
        assert resp.headers["content-length"] == str(len(data))
        assert resp.headers["accept-ranges"] == "bytes" and resp.headers["etag"]
        doc = await wait_for_status(db, t["download"]["id"], "COMPLETED")
        assert doc["status"] == "COMPLETED" and doc["bytes_sent"] == len(data)
        assert doc["duration_seconds"] is not None and doc["finished_at"] is not None
    else:
        assert event(db, t["download"]["id"])["status"] == "ISSUED"
        if stores.kind == "s3":
            assert "X-Amz-Signature=" in t["url"] and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in t["url"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=1000-1999", (1000, 1999)),
        ("bytes=-100", (-100, None)),
        ("bytes=5000-", (5000, None)),
    ],
)
async def test_ranges(
    live_gql: GraphQLClient,
    live_http: httpx.AsyncClient,
    stores: Stores,
    bucket: str,
    db: Any,
    header: str,
    expected: tuple[int, int | None],
) -> None:
    """First byte, middle slice, suffix and open-ended ranges give 206 with the right bytes and headers."""
    data = os.urandom(10_000)
    await register(live_gql, stores, bucket, data)
    t = await ticket(live_gql)
    resp = await live_http.get(t["url"], headers={"Range": header})
    assert resp.status_code == 206, resp.text
    start, end = expected
    want = data[start:] if end is None else data[start : end + 1]
    assert resp.content == want
    first = start if start >= 0 else len(data) + start
    assert resp.headers["content-range"] == f"bytes {first}-{first + len(want) - 1}/{len(data)}"
    assert resp.headers["content-length"] == str(len(want))
    doc = await wait_for_status(db, t["download"]["id"], "COMPLETED")
    assert doc["bytes_sent"] == len(want) and doc["range_start"] == first


@pytest.mark.parametrize("header", ["bytes=20000-", "bytes=-0", "bytes=" + "9" * 5000 + "-"])
async def test_unsatisfiable_ranges_get_416_and_keep_the_ticket(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str, header: str
) -> None:
    """An unsatisfiable Range is 416 with `Content-Range: bytes */size`; the ticket survives."""
    await register(live_gql, stores, bucket, b"x" * 10_000)
    t = await ticket(live_gql)
    resp = await live_http.get(t["url"], headers={"Range": header})
    assert resp.status_code == 416 and resp.headers["content-range"] == "bytes */10000"
    assert resp.json()["error"]["code"] == "RANGE_NOT_SATISFIABLE"
    assert (await live_http.get(t["url"])).status_code == 200


async def test_client_abort_is_recorded_with_bytes_sent(
    live_gql: GraphQLClient, live: LiveServer, stores: Stores, bucket: str, db: Any
) -> None:
    """A client that hangs up after about 1 MB leaves ABORTED with bytesSent between 1 MB and the size."""
    size = 24 * 1024 * 1024
    await register(live_gql, stores, bucket, os.urandom(size))
    t = await ticket(live_gql)
    await abandon(t["url"], 1024 * 1024)
    doc = await wait_for_status(db, t["download"]["id"], "ABORTED", "COMPLETED")
    assert doc["status"] == "ABORTED", doc
    assert 1024 * 1024 <= doc["bytes_sent"] < size
    assert doc["finished_at"] is not None


async def test_tickets_are_single_use_signed_and_expiring(
    live_gql: GraphQLClient,
    live_http: httpx.AsyncClient,
    stores: Stores,
    bucket: str,
    db: Any,
    settings: Settings,
) -> None:
    """A used ticket is 410, tampered 403, unknown 404, expired 403, and one re-bound to another model 403."""
    await register(live_gql, stores, bucket, b"a" * 100)
    await register(live_gql, stores, bucket, b"b" * 100, name="other")
    t = await ticket(live_gql)
    assert (await live_http.get(t["url"])).status_code == 200
    replay = await live_http.get(t["url"])
    assert replay.status_code == 410 and replay.json()["error"]["code"] == "TICKET_INVALID"

    t2 = await ticket(live_gql)
    token = t2["url"].rsplit("/", 1)[1]
    body, mac = token.split(".")
    tampered = await live_http.get(f"/downloads/{body[:-2]}xx.{mac}")
    assert tampered.status_code == 403
    assert (await live_http.get("/downloads/garbage")).status_code == 404

    signer = Signer(settings.resolved_signing_secret())
    other = db.model_versions.find_one({"name": "other"})
    forged = signer.sign(
        "download", {"e": str(db_id(t2["download"]["id"])), "m": str(other["_id"]), "v": 1}, time.time() + 60
    )
    assert (await live_http.get(f"/downloads/{forged}")).status_code == 403

    t3 = await ticket(live_gql, expiresIn=60)
    payload = json.loads(base64.urlsafe_b64decode(t3["url"].rsplit("/", 1)[1].split(".")[0] + "=="))
    payload.pop("exp")
    expired_token = signer.sign("download", payload, time.time() - 1)  # its own ticket, a second too old
    expired = await live_http.get(f"/downloads/{expired_token}")
    assert expired.status_code == 403 and "expired" in expired.json()["error"]["message"]
    for tid in (t2["download"]["id"], t3["download"]["id"]):
        assert event(db, tid)["status"] == "ISSUED"  # refused tickets record nothing as completed


async def test_request_errors_are_typed(live_gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """Unknown model, archived version, bad expiresIn and a deleted object each get their typed error."""
    assert (await ticket(live_gql, name="nope"))["__typename"] == "ModelNotFound"
    await register(live_gql, stores, bucket, b"abc")
    for bad in (0, 86401, -5):
        r = await ticket(live_gql, expiresIn=bad)
        assert r["__typename"] == "InvalidInput" and r["field"] == "expiresIn", r
    await live_gql('mutation { archiveModelVersion(input: {name: "m", version: 1}) { __typename } }')
    assert (await ticket(live_gql, version=1))["__typename"] == "ModelVersionArchived"
    await live_gql('mutation { unarchiveModelVersion(input: {name: "m", version: 1}) { __typename } }')
    stores.delete(bucket, "m/weights.bin")
    r = await ticket(live_gql)
    assert r["__typename"] == "StorageObjectNotFound" and r["code"] == "STORAGE_OBJECT_NOT_FOUND"


async def test_object_deleted_after_ticket_fails_cleanly(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str, db: Any
) -> None:
    """An object deleted between ticket and fetch gives a JSON 404 and a FAILED event."""
    await register(live_gql, stores, bucket, b"abc" * 100)
    t = await ticket(live_gql)
    stores.delete(bucket, "m/weights.bin")
    resp = await live_http.get(t["url"])
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "STORAGE_OBJECT_NOT_FOUND"
    assert event(db, t["download"]["id"])["status"] == "FAILED"


async def test_concurrent_downloads_all_complete(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str, db: Any
) -> None:
    """20 concurrent streamed downloads all end COMPLETED with every byte, and downloadCount says 20."""
    data = os.urandom(512 * 1024)
    await register(live_gql, stores, bucket, data)
    tickets = [await ticket(live_gql) for _ in range(20)]
    responses = await asyncio.gather(*(live_http.get(t["url"]) for t in tickets))
    assert all(r.status_code == 200 and sha(r.content) == sha(data) for r in responses)
    for t in tickets:
        doc = await wait_for_status(db, t["download"]["id"], "COMPLETED")
        assert doc["status"] == "COMPLETED" and doc["bytes_sent"] == len(data)

    async def counted() -> Any:
        counts = await live_gql('{ model(name: "m") { downloadCount lastDownloadedAt } }')
        return counts if counts["model"]["downloadCount"] == 20 else None

    counts = await eventually(counted)
    assert counts and counts["model"]["lastDownloadedAt"]
    listed = await live_gql("{ downloads(first: 5) { totalCount nodes { status } } }")  # unfiltered: no scan
    assert listed["downloads"]["totalCount"] == 20 and len(listed["downloads"]["nodes"]) == 5


async def test_download_count_ignores_aborted(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str, db: Any
) -> None:
    """downloadCount counts completed downloads only, per version, batched across a `models` page."""
    await register(live_gql, stores, bucket, os.urandom(16 * 1024 * 1024))
    await register(live_gql, stores, bucket, b"small", name="n")
    for _ in range(3):
        t = await ticket(live_gql, name="n")
        assert (await live_http.get(t["url"])).status_code == 200
    t = await ticket(live_gql)
    await abandon(t["url"])
    await wait_for_status(db, t["download"]["id"], "ABORTED")
    t = await ticket(live_gql)
    assert (await live_http.get(t["url"])).status_code == 200
    await wait_for_status(db, t["download"]["id"], "COMPLETED")
    want = [{"name": "m", "downloadCount": 1}, {"name": "n", "downloadCount": 3}]

    async def listed() -> bool:
        data = await live_gql(
            "{ models(orderBy: {field: NAME, direction: ASC}) { nodes { name downloadCount } } }"
        )
        return bool(data["models"]["nodes"] == want)

    assert await eventually(listed)


async def test_resumed_download_counts_once(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str, db: Any
) -> None:
    """A peek and the first leg of a resumed download count nothing; the leg that delivers the last byte
    of a gapless chain from byte 0 counts one download, in raw stats, rollups and downloadCount alike."""
    data = os.urandom(100_000)
    await register(live_gql, stores, bucket, data)
    first = await ticket(live_gql)
    resp = await live_http.get(first["url"], headers={"Range": "bytes=0-9999"})
    assert resp.status_code == 206 and resp.content == data[:10_000]
    await wait_for_status(db, first["download"]["id"], "COMPLETED")
    rest = await ticket(live_gql, resumes=first["download"]["id"])
    resp = await live_http.get(rest["url"], headers={"Range": "bytes=10000-"})
    assert resp.status_code == 206 and resp.content == data[10_000:]
    gap = await ticket(live_gql, resumes=first["download"]["id"])
    assert (await live_http.get(gap["url"], headers={"Range": "bytes=20000-"})).status_code == 206
    tail = await ticket(live_gql)
    assert (await live_http.get(tail["url"], headers={"Range": "bytes=-10"})).status_code == 206
    for t in (rest, gap, tail):
        await wait_for_status(db, t["download"]["id"], "COMPLETED")
    listed = await live_gql(
        "{ downloads(orderBy: {field: STARTED_AT, direction: ASC}) { nodes { completesDownload resumes "
        "rangeStart } } }"
    )
    assert listed["downloads"]["nodes"] == [
        {"completesDownload": False, "resumes": None, "rangeStart": 0},
        {"completesDownload": True, "resumes": first["download"]["id"], "rangeStart": 10_000},
        {"completesDownload": False, "resumes": first["download"]["id"], "rangeStart": 20_000},
        {"completesDownload": False, "resumes": None, "rangeStart": 99_990},
    ]
    assert await eventually(lambda: _rollups_caught_up(db))
    q = """query($x: Boolean!) { downloadStats(groupBy: [], exact: $x) { source rows { downloads completed } }
      model(name: "m") { downloadCount latestVersion { downloadCount } } }"""
    for exact in (False, True):
        result = await live_gql(q, {"x": exact})
        assert result["downloadStats"]["rows"] == [{"downloads": 4, "completed": 1}], exact
        assert result["model"] == {"downloadCount": 1, "latestVersion": {"downloadCount": 1}}
    other = await live_gql(
        REQUEST, {"input": {"name": "m", "resumes": first["download"]["id"]}}, **{"X-Engineer-ID": "bob"}
    )
    assert other["requestDownload"]["__typename"] == "InvalidInput"
    assert other["requestDownload"]["field"] == "resumes"


async def test_one_step_download(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str, db: Any
) -> None:
    """GET /models/{name}/download streams the latest (or given) version and records who asked."""
    await register(live_gql, stores, bucket, b"one", name="team/model")
    await register(live_gql, stores, bucket, b"two", name="team/model", key="v2.bin")
    resp = await live_http.get("/models/team/model/download", headers={"X-Engineer-ID": "carol"})
    assert resp.status_code == 200 and resp.content == b"two"
    resp = await live_http.get("/models/team/model/download?version=1", headers={"Range": "bytes=1-"})
    assert resp.status_code == 206 and resp.content == b"ne"
    assert (await live_http.get("/models/team/model/download?version=x")).status_code == 400
    await live_gql(
        'mutation { setAlias(input: {name: "team/model", alias: "prod", version: 1}) { __typename } }'
    )
    assert (await live_http.get("/models/team/model/download?alias=prod")).content == b"one"
    assert (await live_http.get("/models/team/model/download?alias=dev")).status_code == 404
    assert (await live_http.get("/models/nope/download")).status_code == 404
    bad_id = await live_http.get("/models/team/model/download", headers={"X-Engineer-ID": "bad id!"})
    assert bad_id.status_code == 401
    await eventually(lambda: _all_finished(db))
    events = await live_gql(
        '{ downloads(filter: {modelNames: ["team/model"]}) { nodes { engineer status version } } }'
    )
    assert events["downloads"]["nodes"] == [
        {"engineer": "anonymous", "status": "COMPLETED", "version": 1},
        {"engineer": "anonymous", "status": "COMPLETED", "version": 1},
        {"engineer": "carol", "status": "COMPLETED", "version": 2},
    ]


@pytest.mark.parametrize("store_kind", ["local"])  # only a local file can be cut short under a reader
async def test_store_failure_mid_stream_is_failed(
    live_gql: GraphQLClient, stores: Stores, bucket: str, db: Any, settings: Settings
) -> None:
    """An artifact that is cut short while it streams leaves FAILED with the bytes sent, and a short body."""
    size = 32 * 1024 * 1024
    await register(live_gql, stores, bucket, os.urandom(size))
    t = await ticket(live_gql)
    path = settings.objects_dir / bucket / "m/weights.bin"
    received = 0
    with pytest.raises(httpx.HTTPError):
        async with httpx.AsyncClient() as client, client.stream("GET", t["url"]) as resp:
            async for chunk in resp.aiter_raw(256 * 1024):
                if received == 0:
                    os.truncate(path, 2 * 1024 * 1024)
                received += len(chunk)
    doc = await wait_for_status(db, t["download"]["id"], "FAILED", "COMPLETED", "ABORTED")
    assert doc["status"] == "FAILED" and doc["bytes_sent"] < size and doc["error"]


async def test_stale_in_progress_events_are_swept_at_start(
    settings: Settings, stores: Stores, bucket: str, db: Any
) -> None:
    """An IN_PROGRESS event left by a killed process (stale heartbeat) is ABORTED when the app starts."""
    from datetime import UTC, datetime, timedelta

    old = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fields = {"model_name": "m", "model_version": 1, "project_name": "p", "size_bytes": 10, "engineer": "e"}
    stale_id = db.download_events.insert_one(
        {**fields, "model_id": ObjectId(), "mode": "STREAM", "status": "IN_PROGRESS", "bytes_sent": 4,
         "started_at": old, "transfer_started_at": old, "heartbeat_at": old + timedelta(seconds=10)}
    ).inserted_id  # fmt: skip
    with LiveServer(settings):
        doc = await wait_for_status(db, str(stale_id), "ABORTED")
    assert doc["status"] == "ABORTED" and doc["bytes_sent"] == 4
    assert doc["finished_at"] == old + timedelta(seconds=10) and doc["duration_seconds"] == 10


@pytest.mark.parametrize(
    "store_kind", ["local"]
)  # the FAILED download needs a file cut short under its reader
async def test_rollups_agree_with_raw_after_real_downloads(
    live_gql: GraphQLClient,
    live_http: httpx.AsyncClient,
    stores: Stores,
    bucket: str,
    db: Any,
    settings: Settings,
) -> None:
    """After completed, aborted, failed, presigned and refused downloads, rollup counts and bytes equal raw."""
    await register(live_gql, stores, bucket, os.urandom(200_000), name="small")
    await register(live_gql, stores, bucket, os.urandom(24 * 1024 * 1024), name="big")
    ids = []
    for _ in range(3):
        t = await ticket(live_gql, name="small")
        assert (await live_http.get(t["url"], headers={"Range": "bytes=100-"})).status_code == 206
        ids.append(t["download"]["id"])
    t = await ticket(live_gql, name="small", mode="PRESIGNED")
    ids.append(t["download"]["id"])
    t = await ticket(live_gql, name="big")
    await abandon(t["url"])
    ids.append(t["download"]["id"])
    t = await ticket(live_gql, name="big")
    path = settings.objects_dir / bucket / "big/weights.bin"
    with pytest.raises(httpx.HTTPError):
        async with httpx.AsyncClient() as client, client.stream("GET", t["url"]) as resp:
            async for _ in resp.aiter_raw(256 * 1024):
                os.truncate(path, 1024 * 1024)
    ids.append(t["download"]["id"])
    statuses = [
        (await wait_for_status(db, i, "COMPLETED", "ABORTED", "FAILED", "ISSUED"))["status"] for i in ids
    ]
    assert sorted(statuses) == ["ABORTED", "COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "ISSUED"]
    q = """query($x: Boolean!) { downloadStats(groupBy: [MODEL, MODE], interval: DAY, exact: $x) { source rows {
      modelName mode periodStart downloads completed aborted failed totalBytes maxDurationSeconds uniqueEngineers } } }"""
    assert await eventually(lambda: _rollups_caught_up(db))
    fast_result = (await live_gql(q, {"x": False}))["downloadStats"]
    raw_result = (await live_gql(q, {"x": True}))["downloadStats"]
    assert fast_result["source"] == "ROLLUP" and raw_result["source"] == "RAW"
    fast, raw = fast_result["rows"], raw_result["rows"]
    assert fast == raw
    small = next(r for r in raw if r["modelName"] == "small" and r["mode"] == "STREAM")
    # Three `Range: bytes=100-` fetches: three requests, no completed download (none began at byte 0).
    assert small["downloads"] == 3 and small["completed"] == 0
    assert small["totalBytes"] == 3 * (200_000 - 100)


async def _all_finished(db: Any) -> bool:
    return db.download_events.count_documents({"status": "IN_PROGRESS"}) == 0


async def _rollups_caught_up(db: Any) -> bool:
    """Every download's bookkeeping is written: no event is still streaming, and every finished one carries
    its `finished` rollup stage (which readers of the rollups add until the roller has folded it)."""
    terminal = {"status": {"$in": ["COMPLETED", "ABORTED", "FAILED"]}}
    unstaged = {**terminal, "stages.finished": {"$exists": False}}
    open_ = db.download_events.count_documents({"status": "IN_PROGRESS"})
    return bool(open_ == 0 and db.download_events.count_documents(unstaged) == 0)

"""Uploads on both stores: requestUpload → PUT (one URL, or parts on S3) → completeUpload registers a
version whose bytes download exactly; wrong bytes, missing bytes, someone else's upload and abandoned
uploads are handled."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import httpx
import pytest

from graphql_api.config import Settings
from tests.servers import GraphQLClient, LiveServer, Stores, eventually

REQUEST = """mutation($input: RequestUploadInput!) { requestUpload(input: $input) {
  __typename ... on UploadTicket { uploadId url headers { name value } parts { partNumber url sizeBytes }
    partSizeBytes bucket key expiresAt }
  ... on UserError { code message } } }"""
COMPLETE = """mutation($input: CompleteUploadInput!) { completeUpload(input: $input) {
  __typename ... on ModelVersion { name version sizeBytes sha256 checksumStatus bucket key }
  ... on UserError { code message } } }"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def request(gql: GraphQLClient, data: bytes, name: str = "up", **kw: Any) -> dict[str, Any]:
    variables = {"name": name, "projectName": "p", "sizeBytes": len(data), "sha256": sha(data), **kw}
    result: dict[str, Any] = (await gql(REQUEST, {"input": variables}))["requestUpload"]
    return result


async def put_all(ticket: dict[str, Any], data: bytes) -> list[str]:
    """PUTs the file the way the ticket says; returns the parts' ETags (multipart)."""
    async with httpx.AsyncClient(timeout=60) as client:
        if ticket["url"]:
            headers = {h["name"]: h["value"] for h in ticket["headers"]}
            resp = await client.put(ticket["url"], content=data, headers=headers)
            assert resp.status_code == 200, resp.text
            return []
        etags = []
        size = ticket["partSizeBytes"]
        for part in ticket["parts"]:
            start = (part["partNumber"] - 1) * size
            resp = await client.put(part["url"], content=data[start : start + part["sizeBytes"]])
            assert resp.status_code == 200, resp.text
            etags.append(resp.headers["etag"])
        return etags


async def download(http: httpx.AsyncClient, name: str) -> bytes:
    resp = await http.get(f"/models/{name}/download")
    assert resp.status_code == 200, resp.text
    return resp.content


async def test_push_then_download_is_byte_exact(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, settings: Settings
) -> None:
    """One PUT to the ticket's URL, then completeUpload: the version's bytes are the file's, its checksum
    VERIFIED (at once on the local store, after hashing on S3 without full-object checksums)."""
    data = os.urandom(2 * 1024 * 1024 + 3)
    ticket = await request(live_gql, data, filename="weights.safetensors", tags=["fresh"])
    assert ticket["__typename"] == "UploadTicket" and ticket["url"] and not ticket["parts"]
    assert ticket["bucket"] == settings.upload_bucket and ticket["key"].endswith("/weights.safetensors")
    await put_all(ticket, data)
    done = (await live_gql(COMPLETE, {"input": {"uploadId": ticket["uploadId"]}}))["completeUpload"]
    assert done["__typename"] == "ModelVersion" and done["version"] == 1 and done["sizeBytes"] == len(data)
    if settings.storage_backend == "local":
        assert done["checksumStatus"] == "VERIFIED" and done["sha256"] == sha(data)
    again = (await live_gql(COMPLETE, {"input": {"uploadId": ticket["uploadId"]}}))["completeUpload"]
    assert again["version"] == 1  # completing twice is the same version, not a second one
    assert await download(live_http, "up") == data

    async def verified() -> bool:
        q = '{ modelVersion(name: "up") { sha256 checksumStatus } }'
        return bool(
            (await live_gql(q))["modelVersion"] == {"sha256": sha(data), "checksumStatus": "VERIFIED"}
        )

    assert await eventually(verified, 20)


@pytest.mark.parametrize("store_kind", ["s3"])
async def test_multipart_upload_to_s3(settings: Settings) -> None:
    """Above the threshold S3 uploads are multipart with presigned part URLs; the assembled object is the
    file, and its SHA-256 is verified by hashing (a multipart checksum is not the file's)."""
    mib = 1024 * 1024
    tuned = settings.model_copy(update={"multipart_threshold_bytes": 6 * mib, "upload_part_bytes": 5 * mib})
    data = os.urandom(11 * mib + 100)
    with LiveServer(tuned) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            gql = GraphQLClient(http)
            ticket = await request(gql, data)
            assert ticket["url"] is None and [p["sizeBytes"] for p in ticket["parts"]] == [
                5 * mib,
                5 * mib,
                mib + 100,
            ]
            etags = await put_all(ticket, data)
            short = await gql(COMPLETE, {"input": {"uploadId": ticket["uploadId"], "partEtags": etags[:2]}})
            assert short["completeUpload"]["__typename"] == "InvalidInput"
            done = await gql(COMPLETE, {"input": {"uploadId": ticket["uploadId"], "partEtags": etags}})
            assert done["completeUpload"]["checksumStatus"] == "PENDING"
            assert await download(http, "up") == data

            async def verified() -> bool:
                q = '{ modelVersion(name: "up") { sha256 checksumStatus } }'
                return bool((await gql(q))["modelVersion"]["sha256"] == sha(data))

            assert await eventually(verified, 20)


@pytest.mark.parametrize("store_kind", ["local"])
async def test_local_upload_checks_size_and_checksum(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, settings: Settings
) -> None:
    """The app's PUT refuses bytes with another SHA-256 (409) or size (400), keeping nothing; the right
    bytes are then accepted on the same ticket, once."""
    data = os.urandom(300_000)
    ticket = await request(live_gql, data)
    bad = await live_http.put(ticket["url"], content=os.urandom(len(data)))
    assert bad.status_code == 409 and bad.json()["error"]["code"] == "CHECKSUM_MISMATCH"
    short = await live_http.put(ticket["url"], content=data[:-1])
    assert short.status_code == 400 and short.json()["error"]["code"] == "INVALID_INPUT"
    long = await live_http.put(ticket["url"], content=data + b"x")
    assert long.status_code == 400
    staged = settings.objects_dir / ".modelhub" / "uploads"
    assert not any(staged.iterdir()) and not (settings.objects_dir / ticket["bucket"]).exists()
    good = await live_http.put(ticket["url"], content=data)
    assert good.status_code == 200 and good.json()["sha256"] == sha(data)
    again = await live_http.put(ticket["url"], content=data)
    assert again.status_code == 409 and again.json()["error"]["code"] == "UPLOAD_ALREADY_RECEIVED"
    assert (await live_http.put("/uploads/forged", content=data)).status_code == 404


async def test_completing_without_bytes_or_as_someone_else(live_gql: GraphQLClient) -> None:
    """No bytes PUT: StorageObjectNotFound; another engineer's upload id, or a made-up one: UploadNotFound."""
    ticket = await request(live_gql, b"abc")
    nothing = (await live_gql(COMPLETE, {"input": {"uploadId": ticket["uploadId"]}}))["completeUpload"]
    assert nothing["__typename"] == "StorageObjectNotFound"
    other = await live_gql(COMPLETE, {"input": {"uploadId": ticket["uploadId"]}}, **{"X-Engineer-ID": "bob"})
    assert other["completeUpload"]["__typename"] == "UploadNotFound"
    made_up = (await live_gql(COMPLETE, {"input": {"uploadId": "nope"}}))["completeUpload"]
    assert made_up["code"] == "UPLOAD_NOT_FOUND"
    bad = await request(live_gql, b"abc", sha256="xyz")
    assert bad["__typename"] == "InvalidInput" and "sha256" in bad["message"]
    negative = await request(live_gql, b"abc", sizeBytes=-1)
    assert negative["__typename"] == "InvalidInput"


# slow: waits out ~5s of real timeouts (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_abandoned_uploads_are_cleaned_up(settings: Settings, stores: Stores) -> None:
    """An upload left open past its expiry loses its bytes and can no longer be completed."""
    # 3 s: the PUT must land before expiry even on a loaded machine (1 s expired first once on CI).
    quick = settings.model_copy(update={"upload_expires_seconds": 3, "stale_download_seconds": 2.0})
    data = b"left behind" * 100
    with LiveServer(quick) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            gql = GraphQLClient(http)
            ticket = await request(gql, data)
            await put_all(ticket, data)

            async def gone() -> bool:
                return not stores.exists(ticket["bucket"], ticket["key"])

            assert await eventually(gone, 15)
            late = (await gql(COMPLETE, {"input": {"uploadId": ticket["uploadId"]}}))["completeUpload"]
            assert late["__typename"] == "UploadNotFound"


@pytest.mark.parametrize("store_kind", ["local"])
async def test_concurrent_puts_cannot_race_the_declared_bytes(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, settings: Settings
) -> None:
    """Two PUTs of different bytes to one upload URL at once, over many rounds: the wrong one is 409
    (CHECKSUM_MISMATCH, or UPLOAD_IN_PROGRESS while the other is received), the right one 200 (or, refused
    while the wrong one was received, 200 when sent again), the stored object is always the declared bytes
    and completeUpload registers only them; a later PUT of any bytes cannot replace them (409
    UPLOAD_ALREADY_RECEIVED), before or after complete."""
    size = 256 * 1024
    for round_ in range(12):
        data, wrong = os.urandom(size), os.urandom(size)
        ticket = await request(live_gql, data, name=f"race{round_}")

        async def chunks(body: bytes) -> Any:
            for start in range(0, len(body), 16 * 1024):
                yield body[start : start + 16 * 1024]

        async with httpx.AsyncClient(timeout=60) as a, httpx.AsyncClient(timeout=60) as b:
            puts = [a.put(ticket["url"], content=chunks(data)), b.put(ticket["url"], content=chunks(wrong))]
            if round_ % 2:
                puts.reverse()
            right, bad = [
                (r.status_code, r.json().get("error", {}).get("code")) for r in await asyncio.gather(*puts)
            ][:: -1 if round_ % 2 else 1]
        assert bad in {(409, "CHECKSUM_MISMATCH"), (409, "UPLOAD_IN_PROGRESS")}, bad
        if right != (200, None):
            assert right == (409, "UPLOAD_IN_PROGRESS") and bad == (409, "CHECKSUM_MISMATCH")
            assert (await live_http.put(ticket["url"], content=data)).status_code == 200
        stored = settings.objects_dir / ticket["bucket"] / ticket["key"]
        assert stored.read_bytes() == data
        late = await live_http.put(ticket["url"], content=wrong)
        assert late.status_code == 409 and late.json()["error"]["code"] == "UPLOAD_ALREADY_RECEIVED"
        done = (await live_gql(COMPLETE, {"input": {"uploadId": ticket["uploadId"]}}))["completeUpload"]
        assert done["sha256"] == sha(data) and done["checksumStatus"] == "VERIFIED"
        after = await live_http.put(ticket["url"], content=data)
        assert after.status_code == 409 and after.json()["error"]["code"] == "UPLOAD_ALREADY_RECEIVED"
        assert await download(live_http, f"race{round_}") == data
    assert not any((settings.objects_dir / ".modelhub" / "uploads").iterdir())


@pytest.mark.parametrize("store_kind", ["local"])
async def test_one_put_at_a_time_per_upload(live_gql: GraphQLClient, settings: Settings) -> None:
    """While one PUT is receiving an upload's bytes, another PUT to the same URL is 409 UPLOAD_IN_PROGRESS
    before it stages anything (one copy on disk per declaration); the first then completes (200)."""
    data = os.urandom(64 * 1024)
    ticket = await request(live_gql, data, name="one-at-a-time")
    release = asyncio.Event()
    staging = settings.objects_dir / ".modelhub" / "uploads"

    async def slow() -> Any:
        yield data[:1024]
        await release.wait()
        yield data[1024:]

    async with httpx.AsyncClient(timeout=60) as a, httpx.AsyncClient(timeout=60) as b:
        first = asyncio.create_task(a.put(ticket["url"], content=slow()))

        async def staged() -> bool:
            return staging.exists() and any(staging.iterdir())

        assert await eventually(staged, 10)
        second = await b.put(ticket["url"], content=data)
        assert second.status_code == 409 and second.json()["error"]["code"] == "UPLOAD_IN_PROGRESS"
        assert len(list(staging.iterdir())) == 1
        release.set()
        assert (await first).status_code == 200


async def test_a_declaration_over_the_cap_is_refused(live_gql: GraphQLClient) -> None:
    """A declared size above MODELHUB_MAX_UPLOAD_BYTES (default 1 TiB), such as 10^15 bytes, is
    InvalidInput on sizeBytes, and nothing is prepared."""
    variables = {"name": "huge", "projectName": "p", "sizeBytes": 10**15, "sha256": sha(b"")}
    refused = (await live_gql(REQUEST, {"input": variables}))["requestUpload"]
    assert refused["__typename"] == "InvalidInput" and "MODELHUB_MAX_UPLOAD_BYTES" in refused["message"]
    assert "sizeBytes" in refused["message"]

"""Artifact checksums end to end on both stores: declared, verified in the background, mismatches and
changed objects refused with typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from typing import Any

import httpx
import pytest

from tests.servers import GraphQLClient, Stores, eventually

REGISTER = """mutation($input: RegisterModelInput!) { registerModel(input: $input) {
  __typename ... on ModelVersion { version sha256 checksumStatus }
  ... on ChecksumMismatch { code expected actual } ... on UserError { code message } } }"""
VERSION = """query($n: String!) { modelVersion(name: $n) { sha256 checksumStatus checksumError } }"""
DOWNLOAD = """mutation($n: String!) { requestDownload(input: {name: $n}) {
  __typename ... on DownloadTicket { url } ... on UserError { code message }
  ... on ArtifactChanged { registeredEtag currentEtag } ... on ChecksumMismatch { expected actual } } }"""


async def register(gql: GraphQLClient, stores: Stores, bucket: str, name: str, data: bytes, **kw: Any) -> Any:
    stores.put(bucket, f"{name}/model.bin", data)
    variables = {"name": name, "projectName": "p", "bucket": bucket, "key": f"{name}/model.bin", **kw}
    return (await gql(REGISTER, {"input": variables}))["registerModel"]


async def settled(gql: GraphQLClient, name: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def done() -> bool:
        found.update((await gql(VERSION, {"n": name}))["modelVersion"])
        return found["checksumStatus"] != "PENDING"

    assert await eventually(done, 20)
    return found


# slow: waits out ~4s of real timeouts (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_declared_checksum_is_verified_in_the_background(
    live_gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """An object the store holds no SHA-256 for is PENDING with sha256 null, then VERIFIED with its hash."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    digest = hashlib.sha256(data).hexdigest()
    result = await register(live_gql, stores, bucket, "good", data, sha256=digest.upper())
    assert result == {"__typename": "ModelVersion", "version": 1, "sha256": None, "checksumStatus": "PENDING"}
    assert await settled(live_gql, "good") == {
        "sha256": digest,
        "checksumStatus": "VERIFIED",
        "checksumError": None,
    }
    undeclared = await register(live_gql, stores, bucket, "plain", b"")
    assert undeclared["checksumStatus"] == "PENDING"
    assert (await settled(live_gql, "plain"))["sha256"] == hashlib.sha256(b"").hexdigest()


async def test_a_mismatch_found_later_refuses_downloads(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """A declared SHA-256 the bytes do not have ends MISMATCH, and downloads get CHECKSUM_MISMATCH."""
    wrong = "0" * 64
    await register(live_gql, stores, bucket, "bad", b"not what was declared", sha256=wrong)
    state = await settled(live_gql, "bad")
    assert state["checksumStatus"] == "MISMATCH" and wrong in state["checksumError"]
    refused = (await live_gql(DOWNLOAD, {"n": "bad"}))["requestDownload"]
    assert refused["__typename"] == "ChecksumMismatch" and refused["expected"] == wrong
    assert refused["actual"] == hashlib.sha256(b"not what was declared").hexdigest()
    direct = await live_http.get("/models/bad/download")
    assert direct.status_code == 409 and direct.json()["error"]["code"] == "CHECKSUM_MISMATCH"


async def test_bad_checksums_are_invalid_input(live_gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """A sha256 that is not 64 hex digits is INVALID_INPUT on field sha256, and nothing is registered."""
    result = await register(live_gql, stores, bucket, "odd", b"x", sha256="abc")
    assert result["__typename"] == "InvalidInput" and "sha256" in result["message"]
    assert (await live_gql('{ model(name: "odd") { name } }'))["model"] is None


async def test_a_changed_object_is_refused(
    live_gql: GraphQLClient, live_http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """An object replaced after registration (new ETag) is ARTIFACT_CHANGED for tickets, tickets issued
    before the change, and the one-step route; the version's checksum becomes UNAVAILABLE or stays right."""
    await register(live_gql, stores, bucket, "moved", b"first bytes")
    ticket = (await live_gql(DOWNLOAD, {"n": "moved"}))["requestDownload"]
    assert ticket["__typename"] == "DownloadTicket"
    stores.put(bucket, "moved/model.bin", b"other bytes, longer")
    refused = (await live_gql(DOWNLOAD, {"n": "moved"}))["requestDownload"]
    assert refused["__typename"] == "ArtifactChanged" and refused["code"] == "ARTIFACT_CHANGED"
    assert refused["registeredEtag"] != refused["currentEtag"]
    late = await live_http.get(ticket["url"])
    assert late.status_code == 409 and late.json()["error"]["code"] == "ARTIFACT_CHANGED"
    direct = await live_http.get("/models/moved/download")
    assert direct.status_code == 409 and "register the new object" in direct.json()["error"]["message"]


async def test_one_pass_verifies_a_backlog_concurrently_once_each(
    settings: Any, stores: Stores, bucket: str
) -> None:
    """A verifier pass hashes a backlog several at a time, each version once, even beside a second worker's
    pass; the hashes are right and a further pass finds nothing left."""
    from contextlib import AsyncExitStack

    from graphql_api import checksums
    from graphql_api.db import connect
    from graphql_api.db import models as models_db
    from graphql_api.documents import ChecksumStatus, ModelVersion
    from tests.storage.test_stores import open_store

    blobs = {f"m{i}": os.urandom(1000 + i) for i in range(12)}
    for name, data in blobs.items():
        stores.put(bucket, f"{name}.bin", data)
    async with connect(settings.mongo_uri or "", settings.mongo_db), AsyncExitStack() as stack:
        store = await open_store(settings, stack)
        versions = []
        for name in blobs:
            info = await store.head(bucket, f"{name}.bin")
            versions.append(ModelVersion(
                name=name, version=1, bucket=bucket, key=f"{name}.bin", size_bytes=info.size, etag=info.etag,
                content_type="x", project_name="p", owner="o", checksum_status=ChecksumStatus.PENDING,
            ))  # fmt: skip
        await models_db.insert_many_versions(versions)
        watched = InFlight(store)
        passes = await asyncio.gather(*(checksums.verify_pending(watched, concurrency=4) for _ in range(2)))  # type: ignore[arg-type]
        assert sum(passes) == len(blobs) and watched.most >= 3  # two passes of 4: more than one each at once
        for version in await ModelVersion.find_all().to_list():
            assert version.checksum_status is ChecksumStatus.VERIFIED
            assert version.sha256 == hashlib.sha256(blobs[version.name]).hexdigest()
        assert await checksums.verify_pending(store) == 0


class InFlight:
    """A store that counts how many heads are in flight at once. Each head waits (up to 1 s) until a third is
    in flight, so the count does not depend on how fast the database answers the leases."""

    def __init__(self, store: Any) -> None:
        self.store, self.now, self.most = store, 0, 0
        self.three = asyncio.Event()

    async def head(self, bucket: str, key: str) -> Any:
        self.now += 1
        self.most = max(self.most, self.now)
        if self.now >= 3:
            self.three.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.three.wait(), 1.0)
            return await self.store.head(bucket, key)
        finally:
            self.now -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_an_unverified_version_is_not_served_where_the_store_cannot_vouch(
    settings: Any, stores: Stores, bucket: str
) -> None:
    """A version registered on an object its store holds no SHA-256 for (put there by hand) stays PENDING
    and is never served on trust: up to MODELHUB_VERIFY_ON_DOWNLOAD_MAX_BYTES the download hashes it first
    (wrong bytes: CHECKSUM_MISMATCH before any byte; right bytes: served and VERIFIED), a larger one is
    CHECKSUM_PENDING (GraphQL member; 503 with Retry-After on the routes) while the verifier has not run."""
    from tests.servers import LiveServer

    quiet = settings.model_copy(
        update={"checksum_interval_seconds": 3600.0, "verify_on_download_max_bytes": 1000}
    )
    pending_query = DOWNLOAD.replace(
        "... on UserError", "... on ChecksumPending { retryAfterSeconds version } ... on UserError"
    )
    small, large = os.urandom(600), os.urandom(5000)
    with LiveServer(quiet) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            gql = GraphQLClient(http)
            wrong = await register(
                gql, stores, bucket, "wrong", small, sha256=hashlib.sha256(large).hexdigest()
            )
            assert wrong["checksumStatus"] == "PENDING"
            refused = (await gql(pending_query, {"n": "wrong"}))["requestDownload"]
            assert refused["__typename"] == "ChecksumMismatch"
            assert refused["actual"] == hashlib.sha256(small).hexdigest()
            direct = await http.get("/models/wrong/download")
            assert direct.status_code == 409 and direct.json()["error"]["code"] == "CHECKSUM_MISMATCH"

            await register(gql, stores, bucket, "right", small, sha256=hashlib.sha256(small).hexdigest())
            ok = await http.get("/models/right/download")
            assert ok.status_code == 200 and ok.content == small
            assert (await gql(VERSION, {"n": "right"}))["modelVersion"]["checksumStatus"] == "VERIFIED"

            await register(gql, stores, bucket, "big", large, sha256=hashlib.sha256(large).hexdigest())
            for mode in ("STREAM", "PRESIGNED"):
                query = pending_query.replace("{name: $n}", f"{{name: $n, mode: {mode}}}")
                pending = (await gql(query, {"n": "big"}))["requestDownload"]
                assert pending["__typename"] == "ChecksumPending" and pending["code"] == "CHECKSUM_PENDING"
                assert pending["retryAfterSeconds"] > 0 and pending["version"] == 1
            held = await http.get("/models/big/download")
            assert held.status_code == 503 and held.json()["error"]["code"] == "CHECKSUM_PENDING"
            assert int(held.headers["retry-after"]) > 0
            assert (await gql(VERSION, {"n": "big"}))["modelVersion"]["checksumStatus"] == "PENDING"

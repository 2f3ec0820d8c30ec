"""The object stores directly: names, heads, ranged reads and presigned URLs, on both implementations."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphql_api.config import Settings
from graphql_api.errors import (
    ChecksumMismatch,
    InvalidInput,
    StorageObjectNotFound,
    StorageUnavailable,
    UploadAlreadyReceived,
)
from graphql_api.signing import Signer
from graphql_api.storage import ObjectStore, content_disposition, validate_bucket, validate_key
from graphql_api.storage.local import LocalObjectStore
from graphql_api.storage.s3 import S3ObjectStore
from tests.servers import Stores


async def open_store(settings: Settings, stack: AsyncExitStack) -> ObjectStore:
    if settings.storage_backend == "s3":
        return await S3ObjectStore.open(settings, stack)
    return LocalObjectStore(settings.objects_dir, Signer(b"k"), 4096)


async def test_head_and_ranges(settings: Settings, stores: Stores, bucket: str) -> None:
    """head reports size, ETag and type; open_range yields exactly the asked bytes, whole or in part."""
    data = os.urandom(10_000)
    stores.put(bucket, "dir/w.json", data, content_type="application/json")
    async with AsyncExitStack() as stack:
        store = await open_store(settings, stack)
        info = await store.head(bucket, "dir/w.json")
        assert info.size == 10_000 and info.etag and info.content_type == "application/json"
        whole = b"".join([c async for c in store.open_range(bucket, "dir/w.json", 0, 9_999, whole=True)])
        part = b"".join([c async for c in store.open_range(bucket, "dir/w.json", 123, 4_567)])
        assert whole == data and part == data[123:4_568]
        with pytest.raises(StorageObjectNotFound):
            await store.head(bucket, "nope")
        with pytest.raises(StorageObjectNotFound):
            await store.head("no-such-bucket-here", "x")
        await store.ping()


@pytest.mark.parametrize("store_kind", ["s3"])
async def test_presigned_urls_use_the_public_endpoint(
    settings: Settings, stores: Stores, bucket: str
) -> None:
    """With a public endpoint set, presigned URLs name it (SigV4) and fetch the object from there."""
    stores.put(bucket, "w.bin", b"payload")
    assert settings.s3_endpoint_url is not None
    public = settings.s3_endpoint_url.replace("127.0.0.1", "localhost")
    async with AsyncExitStack() as stack:
        store = await S3ObjectStore.open(
            settings.model_copy(update={"s3_public_endpoint_url": public}), stack
        )
        url = await store.presign_get(bucket, "w.bin", 60, "w.bin")
    assert url.startswith(public) and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    async with httpx.AsyncClient() as client:
        resp = await client.get(url)
    assert resp.status_code == 200 and resp.content == b"payload"
    assert "attachment" in resp.headers["content-disposition"]


def test_names_and_headers() -> None:
    """S3 naming rules are enforced alike for both stores; Content-Disposition survives any file name."""
    for good in ("abc", "my.bucket-1", "a" * 63):
        validate_bucket(good)
    for bad in ("ab", "A-B", "a" * 64, "a..b", "192.168.1.1", "-ab", "ab-", "a.-b"):
        with pytest.raises(InvalidInput):
            validate_bucket(bad)
    for bad in ("", "/abs", "a/../b", "a/./b", "x\x00y", "é" * 600):
        with pytest.raises(InvalidInput):
            validate_key(bad)
    validate_key("models/v1/weights.safetensors")
    header = content_disposition('we"ird näme.bin')
    assert (
        header.startswith('attachment; filename="we_ird n?me.bin"')
        and "filename*=UTF-8''we%22ird%20n%C3%A4me.bin" in header
    )


def test_local_store_stays_inside_its_root(tmp_path: Path) -> None:
    """No key can name a file outside <root>/<bucket>."""
    store = LocalObjectStore(tmp_path, Signer(b"k"))
    assert store.path_of("bkt", "a/b.bin") == tmp_path / "bkt" / "a" / "b.bin"
    with pytest.raises(InvalidInput):
        store.path_of("bkt", "../../etc/passwd")


async def test_local_store_refuses_every_symlink_under_its_root(tmp_path: Path) -> None:
    """A symlink anywhere under the root (the file, or a directory on the way; leading out of the store or
    to another object in it) reads as a missing object for head, reads and presigning, and removing an
    upload never deletes through one."""
    root = tmp_path / "objects"
    (root / "bkt" / "real").mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("payroll")
    (root / "bkt" / "real" / "w.bin").write_bytes(b"ok")
    (root / "bkt" / "leak.bin").symlink_to(secret)
    (root / "bkt" / "alias.bin").symlink_to(root / "bkt" / "real" / "w.bin")  # inside the store
    (root / "bkt" / "linked").symlink_to(root / "bkt" / "real")  # a directory on the way
    (root / "other").symlink_to(root / "bkt")  # a whole bucket
    os.mkfifo(root / "bkt" / "pipe.bin")
    store = LocalObjectStore(root, Signer(b"k" * 32))
    assert (await store.head("bkt", "real/w.bin")).size == 2
    for bucket, key in [
        ("bkt", "leak.bin"),
        ("bkt", "alias.bin"),
        ("bkt", "linked/w.bin"),
        ("other", "real/w.bin"),
        ("bkt", "pipe.bin"),
        ("bkt", "real"),
    ]:
        with pytest.raises(StorageObjectNotFound):
            await store.head(bucket, key)
        with pytest.raises(StorageObjectNotFound):
            await anext(store.open_range(bucket, key, 0, 1))
        with pytest.raises(StorageObjectNotFound):
            await store.presign_get(bucket, key, 60, "w.bin")
    await store.abort_upload("bkt", "linked/w.bin", None)
    await store.abort_upload("other", "real/w.bin", None)
    assert (root / "bkt" / "real" / "w.bin").read_bytes() == b"ok"  # not deleted through the links


async def test_local_receive_never_writes_through_a_symlink(tmp_path: Path) -> None:
    """An upload whose key's directory is a symlink (planted in the store) is refused, and nothing is
    written where the link points."""
    root = tmp_path / "objects"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "bkt").mkdir(parents=True)
    (root / "bkt" / "up").symlink_to(elsewhere)
    store = LocalObjectStore(root, Signer(b"k" * 32))
    data = b"payload"

    async def body() -> AsyncIterator[bytes]:
        yield data

    with pytest.raises(StorageUnavailable):
        await store.receive("u1", "bkt", "up/w.bin", body(), len(data), hashlib.sha256(data).hexdigest())
    assert not any(elsewhere.iterdir()) and not any((root / ".modelhub" / "uploads").iterdir())


async def test_local_receive_places_verified_bytes_once(tmp_path: Path) -> None:
    """Concurrent receives of one upload, right and wrong bytes interleaved, over many rounds: only the
    declared bytes are ever in place, the first verified one wins and every other is refused, and no
    staging file is left behind."""
    store = LocalObjectStore(tmp_path / "objects", Signer(b"k" * 32), chunk_bytes=4096)
    good = os.urandom(64 * 1024)
    digest = hashlib.sha256(good).hexdigest()

    async def slow(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 8192):
            yield data[start : start + 8192]
            await asyncio.sleep(0)

    for round_ in range(20):
        key = f"up/{round_}/w.bin"
        bodies = [good, os.urandom(len(good)), good, os.urandom(len(good))]
        results = await asyncio.gather(
            *(store.receive(f"u{round_}", "bkt", key, slow(b), len(good), digest) for b in bodies),
            return_exceptions=True,
        )
        placed = [r for r in results if not isinstance(r, BaseException)]
        assert len(placed) == 1, results
        assert isinstance(results[1], ChecksumMismatch) and isinstance(results[3], ChecksumMismatch)
        assert any(isinstance(r, UploadAlreadyReceived) for r in results)
        assert (tmp_path / "objects" / "bkt" / key).read_bytes() == good
        assert (await store.head("bkt", key)).sha256 == digest  # the store vouches for what it verified
    assert not any((tmp_path / "objects" / ".modelhub" / "uploads").iterdir())


@pytest.mark.parametrize("key", ["a//b", "a/b/", "/a", "a/./b", "a/../b", ""])
def test_keys_the_stores_would_read_differently_are_refused(key: str) -> None:
    """Keys S3 treats as distinct objects but a filesystem would merge (a//b, a/b/) are refused everywhere."""
    with pytest.raises(InvalidInput):
        validate_key(key)


@pytest.mark.parametrize("store_kind", ["local"])
async def test_symlinks_in_the_local_store_are_neither_registered_nor_served(
    live_http: httpx.AsyncClient, settings: Settings
) -> None:
    """Through the API: a key that is a symlink (to another object of the store) or passes through a
    symlinked directory is StorageObjectNotFound at registration, and an object replaced by a symlink after
    registration is refused (404) by tickets, presigned links and the one-step route."""
    from tests.servers import GraphQLClient

    gql = GraphQLClient(live_http)
    register = """mutation($input: RegisterModelInput!) { registerModel(input: $input) {
      __typename ... on UserError { code } } }"""
    ticket = """mutation($n: String!, $m: DownloadMode!) { requestDownload(input: {name: $n, mode: $m}) {
      __typename ... on DownloadTicket { url } ... on UserError { code } } }"""
    root = settings.objects_dir / "bkt"
    (root / "real").mkdir(parents=True)
    (root / "real" / "w.bin").write_bytes(b"the registered bytes")
    (root / "real" / "other.bin").write_bytes(b"another object")
    (root / "alias.bin").symlink_to(root / "real" / "w.bin")
    (root / "linked").symlink_to(root / "real")

    async def registered(name: str, key: str) -> Any:
        variables = {"name": name, "projectName": "p", "bucket": "bkt", "key": key}
        return (await gql(register, {"input": variables}))["registerModel"]

    for key in ("alias.bin", "linked/w.bin"):
        refused = await registered("linked", key)
        assert refused == {"__typename": "StorageObjectNotFound", "code": "STORAGE_OBJECT_NOT_FOUND"}
    assert (await registered("real", "real/w.bin"))["__typename"] == "ModelVersion"
    urls = [
        (await gql(ticket, {"n": "real", "m": m}))["requestDownload"]["url"] for m in ("STREAM", "PRESIGNED")
    ]
    (root / "real" / "w.bin").unlink()
    (root / "real" / "w.bin").symlink_to(root / "real" / "other.bin")
    for url in urls:
        resp = await live_http.get(url)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "STORAGE_OBJECT_NOT_FOUND"
    direct = await live_http.get("/models/real/download")
    assert direct.status_code == 404 and direct.json()["error"]["code"] == "STORAGE_OBJECT_NOT_FOUND"
    again = (await gql(ticket, {"n": "real", "m": "PRESIGNED"}))["requestDownload"]
    assert again["__typename"] == "StorageObjectNotFound"

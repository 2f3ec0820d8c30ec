"""Shared fixtures: a real SecantusDB server, a real moto S3 server, and the app over both stores."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import uvicorn
from moto.server import ThreadedMotoServer
from secantus import SecantusDBServer
from starlette.applications import Starlette

from graphql_api.app import create_app
from graphql_api.config import Settings

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = SecantusDBServer(storage_path=str(tmp_path_factory.mktemp("secantus")), port=0)
    server.start()
    try:
        yield str(server.uri)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


S3_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


@dataclass
class Stores:
    """Puts and deletes artifacts in whichever store the app under test uses."""

    kind: str
    settings: Settings

    def _s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.settings.s3_endpoint_url, **S3_CREDENTIALS)

    def put(self, bucket: str, key: str, data: bytes, content_type: str | None = None) -> None:
        if self.kind == "local":
            path = self.settings.objects_dir / bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        s3 = self._s3()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        extra = {"ContentType": content_type} if content_type else {}
        s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def delete(self, bucket: str, key: str) -> None:
        if self.kind == "local":
            (self.settings.objects_dir / bucket / key).unlink()
        else:
            self._s3().delete_object(Bucket=bucket, Key=key)


def make_settings(
    kind: str, mongo_uri: str, s3_endpoint: str | None, data_dir: Path, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "mongo_uri": mongo_uri,
        "mongo_db": "t_" + uuid.uuid4().hex[:12],
        "data_dir": data_dir,
        "signing_secret": "test-secret",
        "storage": kind,
    }
    if kind == "s3":
        values.update(
            s3_endpoint_url=s3_endpoint,
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
            s3_region="us-east-1",
        )
    values.update(extra)
    return Settings(**values)


@pytest.fixture(params=["local", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(store_kind: str, mongo_uri: str, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    s3 = request.getfixturevalue("s3_endpoint") if store_kind == "s3" else None
    return make_settings(store_kind, mongo_uri, s3, tmp_path / "data")


@pytest.fixture
def stores(settings: Settings) -> Stores:
    return Stores(settings.storage_backend, settings)


@pytest.fixture
def bucket() -> str:
    return "b-" + uuid.uuid4().hex[:10]


class GraphQLClient:
    """Posts GraphQL to the app and returns `data`, failing the test on unexpected top-level errors."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def raw(
        self, query: str, variables: dict[str, Any] | None = None, **headers: str
    ) -> dict[str, Any]:
        resp = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers or None
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def __call__(self, query: str, variables: dict[str, Any] | None = None, **headers: str) -> Any:
        body = await self.raw(query, variables, **headers)
        assert not body.get("errors"), body["errors"]
        return body["data"]


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
        yield client


@pytest.fixture
def gql(http: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(http)


class LiveServer:
    """The app under uvicorn on a loopback port, in a thread: real sockets, for streaming and disconnects."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


@pytest.fixture
async def live_http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
        yield client


@pytest.fixture
def live_gql(live_http: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(live_http)


@pytest.fixture
def db(settings: Settings, mongo_uri: str) -> Iterator[Any]:
    """A synchronous handle on the test's database, for checking what the app wrote."""
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri, tz_aware=True)
    try:
        yield client[settings.mongo_db]
    finally:
        client.close()


async def eventually(probe: Any, seconds: float = 15.0) -> Any:
    """Polls `probe()` (async) until it returns something truthy; a download's bookkeeping (event, then
    rollup, then metrics) completes a moment after the client has its last byte."""
    import asyncio

    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def wait_ready(url: str, proc: Any, seconds: float = 60.0) -> None:
    """Waits until `url` answers 200, failing early (with its stderr) if the child process `proc` dies."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"{url} did not become ready: {err[-2000:]}")
        time.sleep(0.2)


async def abandon(url: str, after_bytes: int = 1) -> int:
    """GETs `url` and hangs up once at least `after_bytes` have arrived; returns how many did."""
    received = 0
    async with httpx.AsyncClient() as client, client.stream("GET", url) as resp:
        async for chunk in resp.aiter_raw(64 * 1024):
            received += len(chunk)
            if received >= after_bytes:
                break
    return received

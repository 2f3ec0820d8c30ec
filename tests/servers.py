"""Test helpers in one place: settings, stores, a GraphQL client, a live uvicorn server, and waiting."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import uvicorn
from beanie import init_beanie
from starlette.applications import Starlette

from graphql_api.app import create_app
from graphql_api.config import Settings
from graphql_api.documents import ALL_DOCUMENTS
from graphql_api.embedded import terminate
from graphql_api.lifespan import Connection
from graphql_api.net import free_port

__all__ = ["free_port"]

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

    @contextlib.contextmanager
    def _s3(self) -> Iterator[Any]:
        client = boto3.client("s3", endpoint_url=self.settings.s3_endpoint_url, **S3_CREDENTIALS)
        try:
            yield client
        finally:
            client.close()  # its connection pool would otherwise leak a socket per call

    def put(self, bucket: str, key: str, data: bytes, content_type: str | None = None) -> None:
        if self.kind == "local":
            path = self.settings.objects_dir / bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        with self._s3() as s3:
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
            extra = {"ContentType": content_type} if content_type else {}
            s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def exists(self, bucket: str, key: str) -> bool:
        if self.kind == "local":
            return (self.settings.objects_dir / bucket / key).exists()
        with self._s3() as s3:
            try:
                s3.head_object(Bucket=bucket, Key=key)
            except s3.exceptions.ClientError:
                return False
            return True

    def delete(self, bucket: str, key: str) -> None:
        if self.kind == "local":
            (self.settings.objects_dir / bucket / key).unlink()
        else:
            with self._s3() as s3:
                s3.delete_object(Bucket=bucket, Key=key)


def make_settings(
    kind: str, mongo_uri: str, s3_endpoint: str | None, data_dir: Path, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "mongo_uri": mongo_uri,
        "mongo_db": "t_" + uuid.uuid4().hex[:12],
        "data_dir": data_dir,
        "signing_secret": "test-secret-of-at-least-32-characters",
        "auth": "header",
        "storage": kind,
        # Tests drive hundreds of requests a second from one principal; the limiter has its own tests
        # (tests/test_security.py), which set small limits explicitly.
        "rate_limit_per_minute": 1_000_000,
        "rate_limit_burst": 100_000,
        # Likewise the cost budget (tests/schema/test_guards.py sets small ones).
        "cost_budget": 1_000_000_000,
        "anonymous_cost_budget": 1_000_000_000,
    }
    if kind == "s3":
        values.update(
            s3_endpoint_url=s3_endpoint,
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
            s3_region="us-east-1",
            allowed_storage=["*"],  # tests use a fresh bucket each; scoping has its own tests
        )
    values.update(extra)
    return Settings(**values)


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


async def eventually(probe: Any, seconds: float = 15.0) -> Any:
    """Polls `probe()` (async) until it returns something truthy; a download's bookkeeping (event, then
    rollup, then metrics) completes a moment after the client has its last byte."""
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


def db_id(global_id: str) -> Any:
    """The database ObjectId inside a GraphQL global id (or a plain ObjectId string), for checking what the
    app wrote."""
    import base64

    from bson import ObjectId

    if ObjectId.is_valid(global_id):
        return ObjectId(global_id)
    raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    return ObjectId(raw.partition(":")[2])


class Subscriber:
    """A graphql-transport-ws client for one subscription on a live server."""

    def __init__(
        self,
        url: str,
        query: str,
        variables: dict[str, Any] | None = None,
        connection_params: dict[str, Any] | None = None,
    ) -> None:
        self.url = url.replace("http://", "ws://") + "/graphql"
        self.query = query
        self.variables = variables or {}
        self.connection_params = connection_params or {}
        self.ws: Any = None

    async def __aenter__(self) -> Subscriber:
        import json

        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        await self.ws.send(json.dumps({"type": "connection_init", "payload": self.connection_params}))
        ack = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        payload = {"query": self.query, "variables": self.variables}
        await self.ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        return self

    async def next(self, seconds: float = 10) -> dict[str, Any]:
        """The next message for the subscription (`next`, `error` or `complete`), skipping pings."""
        import json

        while True:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), seconds))
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
                continue
            return message

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()


class ServeProcess:
    """`modelhub serve` in its own process on the same database and store as `settings` (a second instance,
    as another replica would be: Beanie binds its documents to one client per process)."""

    def __init__(self, settings: Settings, **env: str) -> None:
        import os

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}
        self.env.update(
            {
                "MODELHUB_MONGO_URI": str(settings.mongo_uri),
                "MODELHUB_MONGO_DB": settings.mongo_db,
                "MODELHUB_STORAGE": settings.storage_backend,
                "MODELHUB_AUTH": settings.auth or "token",
                "MODELHUB_SIGNING_SECRET": settings.resolved_signing_secret().decode(),
            }
        )
        if settings.storage_backend == "s3":
            self.env.update(
                {
                    "MODELHUB_S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "MODELHUB_ALLOWED_STORAGE": '["*"]',
                }
            )
        self.env.update(env)
        self.data_dir = settings.data_dir
        self.proc: Any = None

    def __enter__(self) -> ServeProcess:
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "graphql_api.cli", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--data-dir", str(self.data_dir)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_ready(f"{self.url}/readyz", self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


class ServerProcess:
    """A dependency in its own process on a fixed loopback port, so a test can stop (SIGSTOP), continue,
    kill (SIGKILL) and restart it as an outage would: `python -m secantus` or `moto_server`."""

    def __init__(self, kind: str, data_dir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.data_dir = data_dir
        self.proc: Any = None

    @property
    def url(self) -> str:
        if self.kind == "mongo":
            return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        import subprocess
        import sys

        if self.kind == "mongo":
            cmd = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port)]
            cmd += ["--storage-path", str(self.data_dir), "--log-level", "WARNING", "--sync-on-commit"]
        else:
            cmd = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} did not start")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        if self.kind == "mongo":
            import pymongo
            from pymongo.errors import PyMongoError

            try:
                with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=300) as client:
                    client.admin.command("ping")
            except PyMongoError:
                return False
            return True
        try:
            return httpx.get(self.url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            if self.kind == "mongo":
                terminate(self.proc, self.port, timeout=20)
                return
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except Exception:
                self.proc.kill()
                self.proc.wait()


class SharedApps:
    """The apps a test module shares, one per set of settings (store kind and what the module sets): each
    connected (database, Beanie, object store, health watches) at its first test and closed after the
    module's last, serving anew for each test (`app.state.serving`: new services, caches, limits, metrics
    and background tasks) on the shared database emptied before each test and a data directory emptied
    likewise. Starting an app (migrations, Beanie's indexes, the services and their first reads) for each
    test cost more than most tests."""

    def __init__(self, stack: AsyncExitStack, data_root: Path) -> None:
        self.stack = stack
        self.data_root = data_root
        self.settings: dict[tuple[str, str, str], Settings] = {}
        self.original: dict[tuple[str, str, str], Settings] = {}
        self.connected: dict[int, tuple[Starlette, Connection]] = {}

    def settings_for(
        self, kind: str, mongo_uri: str, s3: str | None, mongo_db: str, **extra: Any
    ) -> Settings:
        """The module's settings for `kind` and `extra` (as `make_settings`) on the database `mongo_db` (the
        shared one, emptied by `clean_db`, or one the module seeded for reading), with their data directory
        emptied."""
        key = (kind, mongo_db, repr(sorted(extra.items())))
        if key not in self.settings:
            data_dir = self.data_root / f"{kind}-{len(self.settings)}"
            self.settings[key] = make_settings(kind, mongo_uri, s3, data_dir, mongo_db=mongo_db, **extra)
            self.original[key] = self.settings[key].model_copy(deep=True)
        settings, original = self.settings[key], self.original[key]
        # A test that changed its settings in place (one clears the webhook hosts it allows) changed them
        # for itself: the next test gets them as they were made.
        for name in type(settings).model_fields:
            if getattr(settings, name) != getattr(original, name):
                setattr(settings, name, copy.deepcopy(getattr(original, name)))
        if settings.data_dir.exists():
            for child in settings.data_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return settings

    def shares(self, settings: Settings) -> bool:
        return any(settings is shared for shared in self.settings.values())

    @contextlib.asynccontextmanager
    async def serving(self, settings: Settings) -> AsyncIterator[Starlette]:
        """The module's app for `settings` (from `settings_for`; connected on first use), serving until the
        context ends."""
        assert self.shares(settings), "settings_for made these settings"
        if id(settings) not in self.connected:
            application = create_app(settings)
            connected = await self.stack.enter_async_context(application.state.connection(application))
            self.connected[id(settings)] = (application, connected)
        application, connected = self.connected[id(settings)]
        bound = ALL_DOCUMENTS[0].get_pymongo_collection().database
        if bound.client is not connected.client or bound.name != settings.mongo_db:
            # Another app initialised Beanie on its client (a test's own, or the module's other shared
            # app): back to this one.
            await init_beanie(database=connected.client[settings.mongo_db], document_models=ALL_DOCUMENTS)
        async with application.state.serving(application, connected):
            yield application

    @contextlib.asynccontextmanager
    async def running(self, settings: Settings) -> AsyncIterator[Starlette]:
        """The app on `settings` until the context ends: the module's shared app, serving anew, when they
        are the module's (`settings_for`), else an app of its own with its whole lifespan."""
        if self.shares(settings):
            async with self.serving(settings) as application:
                yield application
            return
        application = create_app(settings)
        async with application.router.lifespan_context(application):
            yield application

"""Shared fixtures: a real SecantusDB server, a real moto S3 server, and the app over both stores."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from moto.server import ThreadedMotoServer
from secantus import SecantusDBServer
from starlette.applications import Starlette

from graphql_api.config import Settings
from tests.servers import GraphQLClient, LiveServer, SharedApps, Stores, free_port

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--forbid-child-processes",
        action="store_true",
        help="fail any test not marked `process` that starts a child process (`make check` keeps its tier honest)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks what a test uses, for `make check` to leave out: `s3` on the S3 twin of a test that also runs
    on the local store, `external` on a test of the real OpenID provider (node)."""

    def twin(item: pytest.Item) -> tuple[str, str, str]:
        params = item.callspec.params if isinstance(item, pytest.Function) else {}
        others = sorted((name, repr(value)) for name, value in params.items() if name != "store_kind")
        return (str(item.path), getattr(item, "originalname", item.name), repr(others))

    def store(item: pytest.Item) -> str | None:
        callspec = getattr(item, "callspec", None)
        return None if callspec is None else callspec.params.get("store_kind")

    on_local = {twin(item) for item in items if store(item) == "local"}
    for item in items:
        if store(item) == "s3" and twin(item) in on_local:
            item.add_marker(pytest.mark.s3)
        if "oidc_installed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.external)


@pytest.fixture(autouse=True)
def forbid_child_processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --forbid-child-processes, a test not marked `process` fails when it starts a child process."""
    if not request.config.getoption("--forbid-child-processes") or request.node.get_closest_marker("process"):
        return

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a child process ({args!r}): mark it `process`")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = SecantusDBServer(storage_path=str(tmp_path_factory.mktemp("secantus")), port=0)
    server.start()
    uri = str(server.uri)
    # Without retryable writes, as the embedded default (see embedded.py): past 10,000 of them SecantusDB
    # sorts its retryable-write records on every write, and late tests in the suite crawled to their deadlines.
    uri += ("&" if "?" in uri else ("?" if uri.endswith("/") else "/?")) + "retryWrites=false"
    try:
        yield uri
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_admin(mongo_uri: str) -> Iterator[Any]:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def drop_test_databases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Drops the databases a test created once it is done: the in-process SecantusDB slows down as
    hundreds of test databases (a dozen collections and their indexes each) pile up, until late tests
    time out. Databases of wider-scoped fixtures exist before this snapshot and are kept."""
    if "mongo_uri" not in request.fixturenames:
        yield
        return
    client = request.getfixturevalue("mongo_admin")
    before = set(client.list_database_names())
    yield
    for name in set(client.list_database_names()) - before:
        client.drop_database(name)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def shared_db(mongo_admin: Any) -> str:
    """The database the `settings` of most tests name, made once per session (per xdist worker): a new
    database per test cost its creation, a dozen collections' index builds at the app's start and its drop
    afterwards. It exists before any test starts, so `drop_test_databases` keeps it."""
    name = "t_shared_" + uuid.uuid4().hex[:8]
    mongo_admin[name].create_collection("models")
    return name


@pytest.fixture
def clean_db(shared_db: str, mongo_admin: Any) -> str:
    """The shared database with every collection emptied (documents only: the indexes stay, and each app
    start makes the ones its settings change), so a test starts on a clean database. A test that needs one
    no app has ever started on (data of an earlier layout, migrated on the first start) names its own
    (`make_settings(..., mongo_db=...)`), as the migration tests do."""
    database = mongo_admin[shared_db]
    for collection in database.list_collection_names():
        if not collection.startswith("system."):
            database[collection].delete_many({})
    return shared_db


@pytest.fixture(scope="module")
async def shared_apps(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedApps]:
    async with AsyncExitStack() as stack:
        yield SharedApps(stack, tmp_path_factory.mktemp("shared-data"))


@pytest.fixture
def settings(
    store_kind: str,
    mongo_uri: str,
    clean_db: str,
    request: pytest.FixtureRequest,
    shared_apps: SharedApps,
) -> Settings:
    """The module's shared settings for the store kind (`app` then serves the module's shared app)."""
    s3 = request.getfixturevalue("s3_endpoint") if store_kind == "s3" else None
    return shared_apps.settings_for(store_kind, mongo_uri, s3, clean_db)


@pytest.fixture
def stores(settings: Settings) -> Stores:
    return Stores(settings.storage_backend, settings)


@pytest.fixture
def bucket() -> str:
    return "b-" + uuid.uuid4().hex[:10]


@pytest.fixture
async def app(settings: Settings, shared_apps: SharedApps) -> AsyncIterator[Starlette]:
    """The app on `settings`, with its lifespan: the module's shared app (serving anew for this test) when
    they are the module's shared settings, else an app of its own (a module that overrides `settings`)."""
    async with shared_apps.running(settings) as application:
        yield application


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
        yield client


@pytest.fixture
def gql(http: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(http)


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

"""Token mode: who may do what (a role matrix), spoofing attempts, storage scoping and abuse limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphql_api.app import create_app
from graphql_api.auth import create_token
from graphql_api.config import Settings
from graphql_api.roles import Role
from tests.servers import GraphQLClient, SharedApps, Stores, make_settings


@dataclass
class World:
    """A token-mode app with a model `m` owned by alice, and a token per kind of caller."""

    http: httpx.AsyncClient
    tokens: dict[str, str]
    stores: Stores
    bucket: str

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        token = self.tokens.get(who)
        return {**({"Authorization": f"Bearer {token}"} if token else {}), **extra}

    async def gql(self, who: str, query: str, variables: dict[str, Any] | None = None, **extra: str) -> Any:
        resp = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=self.headers(who, **extra),
        )
        assert resp.status_code == 200, resp.text
        return resp.json()


async def token_app(
    settings: Settings, stores: Stores, bucket: str, shared_apps: SharedApps
) -> AsyncIterator[World]:
    async with shared_apps.running(settings) as app:
        tokens = {}
        for who, principal, role in [
            ("reader", "rita", Role.READER),
            ("owner", "alice", Role.ENGINEER),
            ("engineer", "bob", Role.ENGINEER),
            ("admin", "root", Role.ADMIN),
        ]:
            tokens[who], _ = await create_token(f"t-{who}", principal, role, "test")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http:
            world = World(http, tokens, stores, bucket)
            stores.put(bucket, "m.bin", b"weights")
            made = await world.gql("owner", REGISTER, {"n": "m", "b": bucket, "k": "m.bin"})
            assert made["data"]["registerModel"]["__typename"] == "ModelVersion", made
            yield world


@pytest.fixture
def token_settings(mongo_uri: str, clean_db: str, shared_apps: SharedApps) -> Settings:
    return shared_apps.settings_for("local", mongo_uri, None, clean_db, auth="token")


@pytest.fixture
async def world(token_settings: Settings, bucket: str, shared_apps: SharedApps) -> AsyncIterator[World]:
    async for w in token_app(token_settings, Stores("local", token_settings), bucket, shared_apps):
        yield w


REGISTER = """mutation($n: String!, $b: String!, $k: String!) {
  registerModel(input: {name: $n, projectName: "p", bucket: $b, key: $k}) { __typename ... on UserError { code } } }"""

# (operation, document, variables): every root field, as each kind of caller would send it.
OPERATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("models", "{ models { totalCount } }", {}),
    ("model", '{ model(name: "m") { name } }', {}),
    ("modelVersion", '{ modelVersion(name: "m") { version } }', {}),
    ("downloads", "{ downloads { totalCount } }", {}),
    ("downloadStats", "{ downloadStats(groupBy: []) { totalRows } }", {}),
    ("node", '{ node(id: "TW9kZWw6NjU0MzIxMDk4NzY1NDMyMTA5ODc2NTQz") { id } }', {}),
    ("registerModel (new)", REGISTER, {"k": "m.bin"}),
    ("registerModel (alice's)", REGISTER, {"n": "m", "k": "m.bin"}),
    ("updateModel", 'mutation { updateModel(input: {name: "m", tags: ["x"]}) { __typename } }', {}),
    (
        "updateModelVersion",
        'mutation { updateModelVersion(input: {name: "m", version: 1, tags: ["x"]}) { __typename } }',
        {},
    ),
    ("setAlias", 'mutation { setAlias(input: {name: "m", alias: "prod", version: 1}) { __typename } }', {}),
    (
        "archiveModelVersion",
        'mutation { archiveModelVersion(input: {name: "m", version: 1}) { __typename } }',
        {},
    ),
    (
        "unarchiveModelVersion",
        'mutation { unarchiveModelVersion(input: {name: "m", version: 1}) { __typename } }',
        {},
    ),
    ("requestDownload", 'mutation { requestDownload(input: {name: "m"}) { __typename } }', {}),
    ("tokens", "{ tokens { name } }", {}),
    (
        "createToken",
        'mutation($n: String!) { createToken(input: {name: $n, principal: "x"}) { __typename } }',
        {},
    ),
]
# Who may do each: everyone else gets FORBIDDEN (or UNAUTHENTICATED when anonymous).
ALLOWED = {
    "models": {"reader", "owner", "engineer", "admin"},
    "model": {"reader", "owner", "engineer", "admin"},
    "modelVersion": {"reader", "owner", "engineer", "admin"},
    "downloads": {"reader", "owner", "engineer", "admin"},
    "downloadStats": {"reader", "owner", "engineer", "admin"},
    "node": {"reader", "owner", "engineer", "admin"},
    "registerModel (new)": {"owner", "engineer", "admin"},
    "registerModel (alice's)": {"owner", "admin"},
    "updateModel": {"owner", "admin"},
    "updateModelVersion": {"owner", "admin"},
    "setAlias": {"owner", "admin"},
    "archiveModelVersion": {"owner", "admin"},
    "unarchiveModelVersion": {"owner", "admin"},
    "requestDownload": {"reader", "owner", "engineer", "admin"},
    "tokens": {"admin"},
    "createToken": {"admin"},
}


async def test_role_matrix(world: World) -> None:
    """Every operation by anonymous, READER, ENGINEER (owner or not) and ADMIN: allowed, FORBIDDEN or
    UNAUTHENTICATED exactly as documented, and a refused mutation changes nothing."""
    for i, (operation, document, variables) in enumerate(OPERATIONS):
        for who in ("anonymous", "reader", "engineer", "owner", "admin"):
            extra = {"b": world.bucket, "n": f"t{i}-{who}"}  # a fresh name per caller where one is needed
            body = await world.gql(who, document, {**extra, **variables})
            errors = body.get("errors") or []
            codes = [e["extensions"]["code"] for e in errors]
            if who in ALLOWED[operation]:
                assert not errors, (operation, who, body)
            else:
                want = "UNAUTHENTICATED" if who == "anonymous" else "FORBIDDEN"
                assert codes == [want], (operation, who, body)
        # archive is undone by the next row; a fresh name per registration keeps rows independent
        if operation == "registerModel (new)":
            await world.gql(
                "admin", 'mutation { updateModel(input: {name: "fresh", tags: []}) { __typename } }'
            )
    listed = await world.gql("reader", '{ model(name: "m") { versions { totalCount } aliases { alias } } }')
    assert listed["data"]["model"]["versions"]["totalCount"] == 3  # alice's and admin's registrations only


async def test_download_routes_need_a_token(world: World) -> None:
    """The one-step route refuses anonymous callers (401 JSON) and serves a READER; tickets carry the
    principal; a ticket issued before its version was archived no longer downloads."""
    anon = await world.http.get("/models/m/download")
    assert anon.status_code == 401 and anon.json()["error"]["code"] == "UNAUTHENTICATED"
    ok = await world.http.get("/models/m/download", headers=world.headers("reader"))
    assert ok.status_code == 200 and ok.content == b"weights"
    q = 'mutation { requestDownload(input: {name: "m"}) { ... on DownloadTicket { url download { engineer } } } }'
    ticket = (await world.gql("reader", q, **{"X-Engineer-ID": "alice"}))["data"]["requestDownload"]
    assert ticket["download"]["engineer"] == "rita"  # the token's principal; the header is ignored
    await world.gql(
        "owner", 'mutation { archiveModelVersion(input: {name: "m", version: 1}) { __typename } }'
    )
    late = await world.http.get(ticket["url"])
    assert late.status_code == 410 and late.json()["error"]["code"] == "MODEL_VERSION_ARCHIVED"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await world.http.get(path)).status_code == 200, path


async def test_spoofed_and_dead_credentials_are_refused(world: World) -> None:
    """X-Engineer-ID alone, a made-up or malformed bearer, a revoked and an expired token: UNAUTHENTICATED."""
    q = "{ models { totalCount } }"
    for headers in (
        {"X-Engineer-ID": "root"},
        {"Authorization": "Bearer mh_" + "x" * 43},
        {"Authorization": "Basic cm9vdDpyb290"},
        {"Authorization": "Bearer"},
    ):
        resp = await world.http.post("/graphql", json={"query": q}, headers=headers)
        assert resp.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", headers
    assert not (await world.gql("engineer", q)).get("errors")
    revoked = await world.gql("admin", 'mutation { revokeToken(input: {name: "t-engineer"}) { __typename } }')
    assert revoked["data"]["revokeToken"]["__typename"] == "ApiToken"
    assert (await world.gql("engineer", q))["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    expired, _ = await create_token("t-expired", "eve", Role.ADMIN, "test", expires_in_days=1)
    from graphql_api.documents import ApiToken

    record = await ApiToken.find_one(ApiToken.name == "t-expired")
    assert record is not None
    await record.set({ApiToken.expires_at: record.created_at})
    resp = await world.http.post(
        "/graphql", json={"query": q}, headers={"Authorization": f"Bearer {expired}"}
    )
    assert resp.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    created = await world.gql(
        "admin",
        'mutation { createToken(input: {name: "ci", principal: "ci", role: ENGINEER}) { ... on CreatedToken { token apiToken { role } } } }',
    )
    token = created["data"]["createToken"]["token"]
    assert token.startswith("mh_") and len(token) >= 43
    listed = await world.gql("admin", "{ tokens { name lastUsedAt } }")
    assert token not in str(listed) and {t["name"] for t in listed["data"]["tokens"]} >= {"ci", "t-admin"}


async def test_storage_scoping(mongo_uri: str, tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    """Only configured buckets/prefixes can be registered, on S3 and locally; outside them the answer is the
    same InvalidInput whether or not the object exists."""
    for kind in ("local", "s3"):
        settings = make_settings(
            kind,
            mongo_uri,
            s3_endpoint,
            tmp_path / f"{kind}2",
            auth="token",
            allowed_storage=[f"{bucket}/team"],
        )
        stores = Stores(kind, settings)
        for key, data in (("team/a.bin", b"a"), ("secret/payroll.csv", b"x"), ("teamwork/b.bin", b"b")):
            stores.put(bucket, key, data)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            token, _ = await create_token("eng", "alice", Role.ENGINEER, "test")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                gql = GraphQLClient(http)
                auth = {"Authorization": f"Bearer {token}"}
                results = {}
                for name, key in (("ok", "team/a.bin"), ("secret", "secret/payroll.csv"),
                                  ("sibling", "teamwork/b.bin"), ("missing", "secret/nothing.bin")):  # fmt: skip
                    data = await gql(REGISTER, {"n": name, "b": bucket, "k": key}, **auth)
                    results[name] = data["registerModel"]
                other = await gql(REGISTER, {"n": "other", "b": "another-bucket", "k": "team/a.bin"}, **auth)
        assert results["ok"]["__typename"] == "ModelVersion", kind
        for name in ("secret", "sibling", "missing"):
            assert results[name] == {"__typename": "InvalidInput", "code": "INVALID_INPUT"}, (kind, name)
        assert other["registerModel"]["__typename"] == "InvalidInput"


def test_s3_without_configured_storage_allows_nothing(mongo_uri: str, tmp_path: Path) -> None:
    """With S3 and no MODELHUB_ALLOWED_STORAGE, no location is allowed; the local store allows its own root."""
    s3 = Settings(mongo_uri=mongo_uri, storage="s3", data_dir=tmp_path)
    assert not s3.storage_scope.permits("any-bucket", "k")
    local = Settings(mongo_uri=mongo_uri, storage="local", data_dir=tmp_path)
    assert local.storage_scope.permits("any-bucket", "k")


@pytest.fixture
async def limited(
    mongo_uri: str, tmp_path: Path, bucket: str, shared_apps: SharedApps
) -> AsyncIterator[World]:
    settings = make_settings(
        "local", mongo_uri, None, tmp_path / "data", auth="token", max_body_bytes=20_000, max_query_tokens=2_000,
        max_query_cost=5_000, rate_limit_per_minute=60, rate_limit_burst=5,
    )  # fmt: skip
    async for w in token_app(settings, Stores("local", settings), bucket, shared_apps):
        yield w


async def test_body_and_document_size_limits(limited: World) -> None:
    """A body over the cap is refused with 413 before parsing; a document of too many tokens is refused
    while parsing, fast."""
    big = {"query": "{ models { totalCount } }", "variables": {"pad": "x" * 30_000}}
    resp = await limited.http.post("/graphql", json=big, headers=limited.headers("reader"))
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    spreads = "query { ...F " + "...F " * 3000 + "} fragment F on Query { __typename }"
    started = time.monotonic()
    body = await limited.gql("reader", spreads)
    assert time.monotonic() - started < 2
    assert "token" in body["errors"][0]["message"].lower()


async def test_cost_budget_refuses_before_running_and_others_stay_fast(limited: World) -> None:
    """50 aliases of exact downloadStats are refused before execution with COST_LIMIT_EXCEEDED, while a
    concurrent trivial query answers at once; one exact downloadStats is within budget."""
    heavy = (
        "{ "
        + " ".join(
            f"a{i}: downloadStats(groupBy: [ENGINEER, MODEL], exact: true, limit: 1000) {{ totalRows }}"
            for i in range(50)
        )
        + " }"
    )

    async def trivial() -> float:
        started = time.monotonic()
        body = await limited.gql("reader", '{ model(name: "m") { name } }')
        assert body["data"]["model"]["name"] == "m"
        return time.monotonic() - started

    refused, took = await asyncio.gather(limited.gql("reader", heavy), trivial())
    (error,) = refused["errors"]
    assert error["extensions"]["code"] == "COST_LIMIT_EXCEEDED" and refused.get("data") is None
    assert took < 2
    one = await limited.gql(
        "reader", "{ downloadStats(groupBy: [ENGINEER], exact: true, limit: 100) { totalRows } }"
    )
    assert "errors" not in one
    pages = "{ models(first: 100) { nodes { versions(first: 100) { nodes { name tags key } } } } }"
    assert (await limited.gql("reader", pages))["errors"][0]["extensions"]["code"] == "COST_LIMIT_EXCEEDED"


async def test_mutations_and_downloads_are_rate_limited_per_principal(limited: World) -> None:
    """Past the burst a principal's mutations get RATE_LIMITED (and downloads 429 with Retry-After); another
    principal is unaffected."""
    q = 'mutation { updateModel(input: {name: "m", tags: ["t"]}) { __typename } }'
    codes = []
    for _ in range(8):
        body = await limited.gql("owner", q)
        codes.append(body["errors"][0]["extensions"]["code"] if body.get("errors") else "ok")
    assert codes[:4] == ["ok"] * 4 and "RATE_LIMITED" in codes  # the registration took one of the five
    assert not (await limited.gql("admin", q)).get("errors")
    statuses = [
        (await limited.http.get("/models/m/download", headers=limited.headers("reader"))) for _ in range(7)
    ]
    limited_resp = [r for r in statuses if r.status_code == 429]
    assert limited_resp and int(limited_resp[0].headers["retry-after"]) >= 1


async def test_database_deadline_gives_a_typed_error(mongo_uri: str, tmp_path: Path, bucket: str) -> None:
    """Every DB call of a request runs under one deadline (PyMongo timeoutMS): past it, DATABASE_TIMEOUT
    with a message that names no host."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "d", request_timeout_seconds=0.000_001)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            body = (await http.post("/graphql", json={"query": "{ downloads { totalCount } }"})).json()
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "DATABASE_TIMEOUT", error
    assert "127.0.0.1" not in str(body) and "mongodb" not in str(body).lower()


def test_short_signing_secrets_are_refused(tmp_path: Path) -> None:
    """An empty or short signing secret is a configuration error; a generated key file is private (0600)."""
    for secret in ("", "short"):
        with pytest.raises(ValueError, match="at least 32"):
            Settings(signing_secret=secret, data_dir=tmp_path)
    settings = Settings(data_dir=tmp_path / "d")
    key = settings.resolved_signing_secret()
    assert len(key) >= 32 and key == settings.resolved_signing_secret()
    assert (tmp_path / "d" / "signing.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700


def test_access_log_redacts_tickets() -> None:
    """Ticket and presigned-object tokens never reach the access log."""
    import logging

    from graphql_api.http.middleware import RedactTokens

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/downloads/eyJlIjoi.abcDEF", "1.1", 200), None,
    )  # fmt: skip
    RedactTokens().filter(record)
    assert "eyJlIjoi" not in record.getMessage() and "/downloads/<redacted>" in record.getMessage()


async def test_unknown_hosts_are_refused_when_configured(mongo_uri: str, tmp_path: Path) -> None:
    """With MODELHUB_ALLOWED_HOSTS set, a request for another Host is refused before any route runs."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "h", allowed_hosts=["models.example.com"])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as http:
            assert (await http.get("/healthz")).status_code == 400
        async with httpx.AsyncClient(transport=transport, base_url="http://models.example.com") as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_websocket_clients_authenticate_in_connection_init(
    mongo_uri: str, tmp_path: Path, bucket: str
) -> None:
    """In token mode a WebSocket without a token is refused at connection_init; with one it subscribes."""
    import websockets

    from tests.servers import LiveServer, Subscriber

    settings = make_settings("local", mongo_uri, None, tmp_path / "ws", auth="token")
    reader = await _token_for(settings, "ws-reader")  # before the server: Beanie binds one client per process
    with LiveServer(settings) as server:
        feed = "subscription { downloadEvents { status } }"
        with pytest.raises((AssertionError, websockets.exceptions.ConnectionClosed)):
            async with Subscriber(server.url, feed):
                pass
        async with Subscriber(
            server.url, feed, connection_params={"Authorization": f"Bearer {reader}"}
        ) as sub:
            async with httpx.AsyncClient(base_url=server.url) as http:
                q = '{ model(name: "nope") { name } }'
                ok = await http.post(
                    "/graphql", json={"query": q}, headers={"Authorization": f"Bearer {reader}"}
                )
                assert ok.json()["data"] == {"model": None}
            with pytest.raises(asyncio.TimeoutError):
                await sub.next(seconds=0.5)  # subscribed and waiting: no error, nothing to see yet


async def _token_for(settings: Settings, name: str) -> str:
    from graphql_api.db import connect

    async with connect(str(settings.mongo_uri), settings.mongo_db):
        token, _ = await create_token(name, name, Role.READER, "test")
    return token


@pytest.mark.process
async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    mongo_uri: str, tmp_path: Path, bucket: str
) -> None:
    """`modelhub serve` records the peer address, not X-Forwarded-For, unless the peer is a trusted proxy."""
    from tests.servers import ServeProcess

    for trusted, want in ((None, "127.0.0.1"), ('["127.0.0.1"]', "203.0.113.9")):
        settings = make_settings("local", mongo_uri, None, tmp_path / f"p{want}")
        Stores("local", settings).put(bucket, "m.bin", b"w")
        server = ServeProcess(settings)
        server.env["MODELHUB_AUTH"] = "header"
        if trusted:
            server.env["MODELHUB_TRUSTED_PROXIES"] = trusted
        with server:
            async with httpx.AsyncClient(base_url=server.url) as http:
                gql = GraphQLClient(http)
                await gql(REGISTER, {"n": "m", "b": bucket, "k": "m.bin"})
                q = 'mutation { requestDownload(input: {name: "m"}) { ... on DownloadTicket { download { clientAddress } } } }'
                data = await gql(q, **{"X-Forwarded-For": "203.0.113.9"})
        assert data["requestDownload"]["download"]["clientAddress"] == want, trusted


TICKET = """mutation($m: DownloadMode!) {
  requestDownload(input: {name: "m", mode: $m}) { ... on DownloadTicket { url } ... on UserError { code } } }"""


async def _ticket(world: World, who: str, mode: str) -> str:
    url: str = (await world.gql(who, TICKET, {"m": mode}))["data"]["requestDownload"]["url"]
    return url.removeprefix("http://testserver")


async def test_tickets_and_links_die_with_their_token(world: World) -> None:
    """A STREAM ticket and a local presigned link issued to a token are refused at claim once that token is
    revoked (403 TICKET_INVALID); those issued to a live token still download."""
    dead = [await _ticket(world, "engineer", mode) for mode in ("STREAM", "PRESIGNED")]
    alive = [await _ticket(world, "reader", mode) for mode in ("STREAM", "PRESIGNED")]
    revoked = await world.gql("admin", 'mutation { revokeToken(input: {name: "t-engineer"}) { __typename } }')
    assert revoked["data"]["revokeToken"]["__typename"] == "ApiToken"
    for url in dead:
        resp = await world.http.get(url)
        assert resp.status_code == 403, (url, resp.text)
        assert (
            resp.json()["error"]["code"] == "TICKET_INVALID" and "revoked" in resp.json()["error"]["message"]
        )
    for url in alive:
        resp = await world.http.get(url)
        assert resp.status_code == 200 and resp.content == b"weights", url


async def test_presigned_local_links_refuse_archived_versions(world: World) -> None:
    """A local presigned link to a version archived since it was issued is refused, like a stream ticket,
    and serves again once the version is unarchived."""
    link = await _ticket(world, "reader", "PRESIGNED")
    assert link.startswith("/objects/")
    archive = 'mutation { archiveModelVersion(input: {name: "m", version: 1}) { __typename } }'
    assert (await world.gql("owner", archive))["data"]["archiveModelVersion"]["__typename"] == "ModelVersion"
    late = await world.http.get(link)
    assert late.status_code == 410 and late.json()["error"]["code"] == "MODEL_VERSION_ARCHIVED"
    unarchive = 'mutation { unarchiveModelVersion(input: {name: "m", version: 1}) { __typename } }'
    await world.gql("owner", unarchive)
    assert (await world.http.get(link)).content == b"weights"

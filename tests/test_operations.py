"""Persisted operations: Apollo's request shape (extensions.persistedQuery.sha256Hash), the off / audit /
enforce modes, registerOperations (ADMIN, schema-checked, nothing stored on error), the /ui operations
registered at start-up, and `modelhub operations push` with .graphql files and JSON manifests."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from graphql_api import client
from graphql_api.auth import create_token, hash_token
from graphql_api.cli import app as cli_app
from graphql_api.config import Settings
from graphql_api.http import ui
from graphql_api.operations import sha256_of
from graphql_api.roles import Role
from graphql_api.schema.operations import split
from tests.servers import GraphQLClient, LiveServer, SharedApps

WHO = {"X-Engineer-ID": "alice"}
COUNT = "query Count { models(first: 1) { totalCount } }"
REGISTER_OPS = client.REGISTER_OPERATIONS  # the SDK's own documents are registered at start-up
DOC = """
query A($n: String!) { model(name: $n) { ...M } }
fragment M on Model { name projectName ...N }
query B { models(first: 2) { nodes { name } } }
fragment N on Model { owner }
"""


def hashes(text: str) -> dict[str, str]:
    """Each named operation of a document with the hash a client sends for it."""
    return {name: sha256_of(body) for name, body in split(text) if name}


async def post(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    resp = await http.post("/graphql", json=body, headers={**WHO, **headers})
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def by_hash(sha256: str, **extra: Any) -> dict[str, Any]:
    return {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256}}, **extra}


def code(answer: dict[str, Any]) -> str:
    return str(answer["errors"][0]["extensions"]["code"])


def test_split_keeps_each_operation_with_the_fragments_it_uses() -> None:
    """Each operation's text as written plus the fragments it spreads (transitively), none it does not."""
    (a_name, a), (b_name, b) = split(DOC)
    assert (a_name, b_name) == ("A", "B")
    assert a.startswith("query A(") and "fragment M on Model" in a and "fragment N on Model" in a
    assert b == "query B { models(first: 2) { nodes { name } } }"
    assert hashes(DOC) == {"A": sha256_of(a), "B": sha256_of(b)}


async def test_off_mode_resolves_hashes_and_runs_any_text(http: httpx.AsyncClient) -> None:
    """Off (the default): /ui's operations run by hash alone; an unknown hash is Apollo's
    PersistedQueryNotFound; a hash that does not match its text is refused; plain text runs."""
    ui_hashes = hashes(ui.operations_text())
    answer = await post(http, by_hash(ui_hashes["UiModels"], variables={}, operationName="UiModels"))
    assert answer["data"]["models"]["totalCount"] == 0
    unknown = await post(http, by_hash("0" * 64))
    assert (
        code(unknown) == "PERSISTED_QUERY_NOT_FOUND"
        and unknown["errors"][0]["message"] == "PersistedQueryNotFound"
    )
    assert code(await post(http, by_hash("1" * 64, query=COUNT))) == "PERSISTED_QUERY_HASH_MISMATCH"
    assert (await post(http, by_hash(sha256_of(COUNT), query=COUNT)))["data"]["models"]["totalCount"] == 0
    assert (await post(http, {"query": COUNT}))["data"]["models"]["totalCount"] == 0
    bad = await http.post(
        "/graphql", json={"extensions": {"persistedQuery": {"sha256Hash": "xyz"}}}, headers=WHO
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.fixture
def settings(
    mongo_uri: str, clean_db: str, shared_apps: SharedApps, request: pytest.FixtureRequest
) -> Settings:
    mode = getattr(request, "param", "off")
    return shared_apps.settings_for("local", mongo_uri, None, clean_db, persisted_operations=mode)


@pytest.mark.parametrize("settings", ["enforce"], indirect=True)
async def test_enforce_runs_registered_operations_only(http: httpx.AsyncClient, gql: GraphQLClient) -> None:
    """Enforce: unregistered text gets OPERATION_NOT_PERSISTED (nothing runs); an ADMIN registers it (not an
    ENGINEER: FORBIDDEN); then it runs by hash alone and as text; the metric counts each outcome."""
    refused = await post(http, {"query": COUNT})
    assert code(refused) == "OPERATION_NOT_PERSISTED" and refused["data"] is None
    admin, _ = await create_token("ops-admin", "root", Role.ADMIN, "test")
    engineer, _ = await create_token("ops-eng", "bob", Role.ENGINEER, "test")
    registering = {"query": REGISTER_OPS, "variables": {"input": {"operations": [COUNT]}}}
    forbidden = await post(http, registering, Authorization=f"Bearer {engineer}")
    assert code(forbidden) == "FORBIDDEN"
    done = await post(http, registering, Authorization=f"Bearer {admin}")
    (op,) = done["data"]["registerOperations"]["operations"]
    assert op == {"sha256Hash": sha256_of(COUNT), "name": "Count", "created": True}
    again = await post(http, registering, Authorization=f"Bearer {admin}")
    assert again["data"]["registerOperations"]["operations"][0]["created"] is False
    assert (await post(http, by_hash(op["sha256Hash"])))["data"]["models"]["totalCount"] == 0
    assert (await post(http, {"query": COUNT}))["data"]["models"]["totalCount"] == 0
    metrics = (await http.get("/metrics")).text
    assert 'modelhub_graphql_persisted_checks_total{result="refused"} 1.0' in metrics
    assert 'modelhub_graphql_persisted_checks_total{result="registered"}' in metrics


@pytest.mark.parametrize("settings", ["enforce"], indirect=True)
async def test_registering_checks_every_operation_against_the_schema(http: httpx.AsyncClient) -> None:
    """One invalid operation (unknown field, two operations in one text, a syntax error) → InvalidInput
    naming it, and none of the batch is stored."""
    admin, _ = await create_token("ops-admin2", "root", Role.ADMIN, "test")
    for bad, why in [("{ nope }", "nope"), ("query X { __typename } query Y { __typename }", "2 operations"),
                     ("query {", "Syntax")]:  # fmt: skip
        answer = await post(http, {"query": REGISTER_OPS, "variables": {"input": {"operations": [COUNT, bad]}}},
                            Authorization=f"Bearer {admin}")  # fmt: skip
        result = answer["data"]["registerOperations"]
        assert result["__typename"] == "InvalidInput" and result["field"] == "operations[1]", result
        assert why in result["message"]
    assert code(await post(http, {"query": COUNT})) == "OPERATION_NOT_PERSISTED"


@pytest.mark.parametrize("settings", ["audit"], indirect=True)
async def test_audit_runs_and_logs_unregistered_operations(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Audit: an unregistered operation runs, and the log names its hash (not its text)."""
    with caplog.at_level(logging.WARNING, logger="modelhub"):
        assert (await post(http, {"query": COUNT}))["data"]["models"]["totalCount"] == 0
    assert sha256_of(COUNT) in caplog.text and "totalCount" not in caplog.text


@pytest.mark.parametrize("settings", ["enforce"], indirect=True)
async def test_cli_pushes_graphql_files_and_manifests(live: LiveServer, tmp_path: Path) -> None:
    """Under enforce, `modelhub operations push` (the SDK's own document, registered at start-up) registers
    a .graphql file's operations and an Apollo manifest's, which then run by hash; a manifest whose id is
    not its body's hash is refused with one line and exit 1."""
    import asyncio

    async with httpx.AsyncClient(base_url=live.url) as http:
        assert code(await post(http, {"query": COUNT})) == "OPERATION_NOT_PERSISTED"
    settings: Settings = live.server.config.app.state.settings
    token = await asyncio.to_thread(_admin_token, settings)
    env = {"MODELHUB_URL": live.url, "MODELHUB_TOKEN": token, "COLUMNS": "200"}
    (tmp_path / "ops.graphql").write_text(DOC)
    manifest: dict[str, Any] = {"format": "apollo-persisted-query-manifest", "version": 1,
                "operations": [{"id": sha256_of(COUNT), "name": "Count", "type": "query", "body": COUNT}]}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    runner = CliRunner()

    async def push(name: str) -> Any:
        args = ["operations", "push", str(tmp_path / name)]
        return await asyncio.to_thread(runner.invoke, cli_app, args, env=env)

    out = await push("ops.graphql")
    assert out.exit_code == 0, out.output
    assert all(h in out.output for h in hashes(DOC).values())
    out = await push("manifest.json")
    assert out.exit_code == 0 and sha256_of(COUNT) in out.output, out.output
    async with httpx.AsyncClient(base_url=live.url) as http:
        for sha256 in [*hashes(DOC).values(), sha256_of(COUNT)]:
            answer = await post(http, by_hash(sha256, variables={"n": "x"}))
            assert "errors" not in answer, answer
    manifest["operations"][0]["id"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    out = await push("manifest.json")
    assert out.exit_code == 1 and "not the SHA-256" in out.output and "Traceback" not in out.output


def _admin_token(settings: Settings) -> str:
    """An ADMIN token written straight to the database (a second Beanie client in this process would take
    over the live server's document binding)."""
    import secrets
    from datetime import UTC, datetime

    import pymongo

    token = secrets.token_urlsafe(32)
    with pymongo.MongoClient(settings.mongo_uri) as mongo:
        mongo[settings.mongo_db].api_tokens.insert_one(
            {
                "name": "cli-admin",
                "principal": "root",
                "role": "ADMIN",
                "token_hash": hash_token(token),
                "created_by": "test",
                "created_at": datetime.now(UTC),
            }
        )
    return token


async def test_a_flood_of_unknown_texts_costs_bounded_database_reads(app: Any) -> None:
    """Misses are looked up in the database at most `misses_per_second` a second: past that budget an
    operation another worker registered is not found until the budget refills, then it is (so a flood of
    unknown texts, which needs no token, cannot turn into one database read each)."""
    import asyncio

    from graphql_api.db import operations as operations_db
    from graphql_api.documents import PersistedOperation
    from graphql_api.metrics import Metrics
    from graphql_api.operations import PersistedMode, Registry

    registry = Registry(Metrics(), PersistedMode.ENFORCE, misses_per_second=4)
    for i in range(10):  # the flood spends the budget
        assert await registry.lookup(sha256_of(f"{{ flood{i} }}")) is None
    body = "query Elsewhere { __typename }"
    await operations_db.insert(
        PersistedOperation(id=sha256_of(body), body=body, name="Elsewhere", source="t")
    )
    assert await registry.lookup(sha256_of(body)) is None  # no database read left this instant
    await asyncio.sleep(0.4)
    assert await registry.lookup(sha256_of(body)) == body  # the budget refilled: found in the database

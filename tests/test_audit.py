"""The audit trail end to end: what each kind of action records, the auditEvents query, `modelhub audit`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from graphql_api.app import create_app
from graphql_api.auth import Principal, create_token
from graphql_api.config import Settings
from graphql_api.db import audit as audit_db
from graphql_api.documents import utcnow
from graphql_api.downloads import TICKET_PURPOSE
from graphql_api.roles import ProjectRole, Role
from graphql_api.schema import build_schema
from graphql_api.schema.audit import target_of
from tests.servers import LiveServer, SharedApps, Stores, Subscriber, eventually, make_settings

MODELHUB = [sys.executable, "-m", "graphql_api.cli"]
REGISTER = """mutation($n: String!, $k: String!, $b: String!) {
  registerModel(input: {name: $n, projectName: "vision", bucket: $b, key: $k}) { __typename } }"""
AUDIT = """query($f: AuditFilterInput, $first: Int, $after: String) {
  auditEvents(filter: $f, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { at kind principal action target project outcome clientAddress transport }
  }
}"""


class World:
    def __init__(self, app: Starlette, http: httpx.AsyncClient, tokens: dict[str, str]) -> None:
        self.app, self.http, self.tokens = app, http, tokens

    async def gql(self, who: str | None, query: str, variables: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens.get(who, who)}"} if who else {}
        resp = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def records(self, **flt: Any) -> list[dict[str, Any]]:
        """Every record matching `flt` (after the writer has caught up), oldest first."""
        await self.app.state.services.audit.flush()
        page = await self.gql("admin", AUDIT, {"f": flt, "first": 100})
        assert not page.get("errors"), page
        return list(reversed(page["data"]["auditEvents"]["nodes"]))


@pytest.fixture
def audit_settings(mongo_uri: str, clean_db: str, shared_apps: SharedApps) -> Settings:
    return shared_apps.settings_for("local", mongo_uri, None, clean_db, auth="token")


@pytest.fixture
async def world(audit_settings: Settings, shared_apps: SharedApps) -> AsyncIterator[World]:
    async with shared_apps.running(audit_settings) as app:
        tokens = {}
        for who, role in [("reader", Role.READER), ("alice", Role.ENGINEER), ("admin", Role.ADMIN)]:
            tokens[who], _ = await create_token(f"t-{who}", who, role, "test")
        Stores("local", audit_settings).put("bucket-a", "m.bin", b"weights")
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http:
            yield World(app, http, tokens)


async def test_every_mutation_is_recorded_with_who_what_target_outcome_when_and_where(world: World) -> None:
    """Each root mutation field gives one record: principal, field, the input's target and project, the
    union's type on success or the error code otherwise (union member or top-level), client and transport."""
    before = utcnow()
    made = await world.gql("alice", REGISTER, {"n": "m", "k": "m.bin", "b": "bucket-a"})
    assert made["data"]["registerModel"]["__typename"] == "ModelVersion"
    both = """mutation {
      a: updateModel(input: {name: "nope", tags: ["x"]}) { __typename }
      b: updateModel(input: {name: "m", tags: ["y"]}) { __typename }
    }"""
    await world.gql("alice", both)
    forbidden = await world.gql(
        "reader", 'mutation { updateModel(input: {name: "m", tags: ["z"]}) { __typename } }'
    )
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    await world.gql("admin", 'mutation { createToken(input: {name: "ci", principal: "bot"}) { __typename } }')
    await world.gql("admin", 'mutation { revokeToken(input: {name: "ci"}) { __typename } }')

    rows = [r for r in await world.records() if r["kind"] in ("MUTATION", "REFUSED")]
    got = [(r["principal"], r["action"], r["target"], r["project"], r["outcome"], r["kind"]) for r in rows]
    assert got == [
        ("alice", "registerModel", "m", "vision", "ModelVersion", "MUTATION"),
        ("alice", "updateModel", "nope", None, "MODEL_NOT_FOUND", "MUTATION"),
        ("alice", "updateModel", "m", "vision", "Model", "MUTATION"),  # project looked up from the model
        ("reader", "updateModel", "m", "vision", "FORBIDDEN", "REFUSED"),
        ("admin", "createToken", "ci", None, "CreatedToken", "MUTATION"),
        ("admin", "revokeToken", "ci", None, "ApiToken", "MUTATION"),
    ]
    assert all(r["clientAddress"] == "10.1.2.3" and r["transport"] == "http" for r in rows)
    assert all(before <= _at(r) <= utcnow() for r in rows)


def _at(row: dict[str, Any]) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(row["at"])


async def test_refused_attempts_on_queries_and_routes_are_recorded(world: World) -> None:
    """UNAUTHENTICATED and FORBIDDEN queries, and the routes' 401/403 answers, are recorded as REFUSED
    (a route's model with its project; never the ticket or signed token of the path)."""
    await world.gql("alice", REGISTER, {"n": "m", "k": "m.bin", "b": "bucket-a"})
    assert (await world.gql(None, "{ models { totalCount } }"))["errors"][0]["extensions"]["code"] == (
        "UNAUTHENTICATED"
    )
    bad = await world.gql("mh_not-a-token-at-all-but-long-enough", "{ models { totalCount } }")
    assert bad["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await world.gql("reader", "{ tokens { name } }"))["errors"][0]["extensions"][
        "code"
    ] == "FORBIDDEN"
    assert (await world.http.get("/models/m/download")).status_code == 401
    expired = world.app.state.services.signer.sign(TICKET_PURPOSE, {"e": "x"}, time.time() - 60)
    assert (await world.http.get(f"/downloads/{expired}")).status_code == 403
    ok = await world.gql("reader", "{ models { totalCount } }")  # an allowed query is not recorded
    assert not ok.get("errors")

    refused = await world.records()
    rows = [
        (r["principal"], r["action"], r["target"], r["project"], r["outcome"])
        for r in refused
        if r["kind"] == "REFUSED"
    ]
    assert rows[:4] == [
        (None, "models", None, None, "UNAUTHENTICATED"),
        (None, "models", None, None, "UNAUTHENTICATED"),
        ("reader", "tokens", None, None, "FORBIDDEN"),
        (None, "GET /models/{name}/download", "m", "vision", "UNAUTHENTICATED"),
    ]
    assert rows[4] == (None, "GET /downloads", None, None, "TICKET_INVALID")
    assert len(rows) == 5
    assert expired not in json.dumps(refused)


async def test_rate_limited_mutations_are_recorded(mongo_uri: str, tmp_path: Path) -> None:
    """A mutation refused RATE_LIMITED is recorded as REFUSED with that code."""
    settings = make_settings(
        "local", mongo_uri, None, tmp_path / "d", rate_limit_per_minute=1, rate_limit_burst=1
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            codes = []
            for _ in range(3):
                body = (
                    await http.post(
                        "/graphql",
                        json={"query": 'mutation { updateModel(input: {name: "x"}) { __typename } }'},
                        headers={"x-engineer-id": "eve"},
                    )
                ).json()
                codes.append(
                    (body.get("errors") or [{"extensions": {"code": "OK"}}])[0]["extensions"]["code"]
                )
        await app.state.services.audit.flush()
        page = await audit_db.page(audit_db.AuditFilter(outcome="RATE_LIMITED"), _first(10), None)
    assert "RATE_LIMITED" in codes
    assert [(d.principal, d.action, d.kind.value) for d, _ in page.items] == [
        ("eve", "updateModel", "REFUSED")
    ] * codes.count("RATE_LIMITED")


def test_targets_are_read_from_the_input_or_the_arguments() -> None:
    """A model, token or upload named by the input is the target; a grant's principal is, with its project."""
    grant = {"input": {"projectName": "vision", "principal": "bob", "role": "ENGINEER"}}
    assert target_of(grant) == ("bob", "vision")
    assert target_of({"input": {"projectName": "vision", "visibility": "PRIVATE"}}) == ("vision", "vision")
    assert target_of({"input": {"name": "ci", "principal": "bot"}}) == ("ci", None)
    assert target_of({"input": {"uploadId": "u1", "partEtags": []}}) == ("u1", None)
    assert target_of({"name": "m", "version": 3}) == ("m", None)
    assert target_of({}) == (None, None)


def _first(n: int) -> Any:
    from graphql_api.pagination import PageRequest

    return PageRequest(first=n)


async def test_a_new_principal_signing_in_is_recorded_once(world: World) -> None:
    """The first request of a principal records one SIGN_IN (how, and from where); later ones do not."""
    for _ in range(3):
        await world.gql("reader", "{ models { totalCount } }")
    # Another instance's first sight of the same principal is not a new sign-in either.
    world.app.state.services.audit._known.clear()
    await world.gql("reader", "{ models { totalCount } }")
    rows = await world.records(principal="reader", action="signIn")
    assert [(r["kind"], r["target"], r["clientAddress"]) for r in rows] == [("SIGN_IN", "token", "10.1.2.3")]


async def test_audit_events_filters_pages_and_is_for_admins_only(world: World) -> None:
    """auditEvents filters by principal, action, project, outcome and time, pages newest first with
    cursors, and refuses a non-ADMIN with FORBIDDEN (a refusal it records)."""
    start = utcnow()
    await world.gql("alice", REGISTER, {"n": "m", "k": "m.bin", "b": "bucket-a"})
    for i in range(5):
        await world.gql(
            "alice", f'mutation {{ updateModel(input: {{name: "m", tags: ["t{i}"]}}) {{ __typename }} }}'
        )
    end = utcnow() + timedelta(milliseconds=1)
    await world.gql("alice", 'mutation { updateModel(input: {name: "gone"}) { __typename } }')

    assert len(await world.records(action="updateModel")) == 6
    assert len(await world.records(principal="alice", outcome="Model")) == 5
    assert len(await world.records(project="vision")) == 6
    assert len(await world.records(outcome="MODEL_NOT_FOUND")) == 1
    within = await world.records(since=start.isoformat(), until=end.isoformat(), principal="alice")
    assert [r["action"] for r in within if r["kind"] == "MUTATION"] == ["registerModel"] + ["updateModel"] * 5

    seen: list[dict[str, Any]] = []
    after = None
    while True:
        page = await world.gql("admin", AUDIT, {"f": {"action": "updateModel"}, "first": 2, "after": after})
        conn = page["data"]["auditEvents"]
        seen += conn["nodes"]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert len(seen) == 6 and [r["at"] for r in seen] == sorted((r["at"] for r in seen), reverse=True)

    for who in ("reader", "alice"):
        refused = await world.gql(who, AUDIT, {})
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN" and refused["data"] is None
    assert [r["principal"] for r in await world.records(action="auditEvents")] == ["reader", "alice"]


async def test_no_api_path_changes_or_deletes_audit_records(world: World, audit_settings: Settings) -> None:
    """The trail is append-only: no mutation names it, its owner offers no update or delete, and its only
    deletion is a TTL index with the configured retention."""
    schema = build_schema()
    mutation = schema.get_type_by_name("Mutation")
    assert mutation is not None
    assert not [f.name for f in mutation.fields if "audit" in f.name.lower()]  # type: ignore[attr-defined]
    public = [n for n in dir(audit_db) if not n.startswith("_")]
    assert not [n for n in public if any(w in n.lower() for w in ("update", "delete", "replace", "remove"))]
    assert await audit_db.retention_seconds() == audit_settings.audit_retention_days * 86_400 == 365 * 86_400


async def test_websocket_operations_are_recorded(mongo_uri: str, tmp_path: Path) -> None:
    """A mutation sent over the WebSocket is recorded like one over HTTP, with transport `websocket`."""
    settings = make_settings("local", mongo_uri, None, tmp_path / "ws")
    with LiveServer(settings) as server:
        mutation = 'mutation { updateModel(input: {name: "ws-model"}) { __typename } }'
        async with Subscriber(server.url, mutation, connection_params={"X-Engineer-ID": "wendy"}) as sub:
            message = await sub.next()
            assert message["payload"]["data"]["updateModel"]["__typename"] == "ModelNotFound", message

        async def recorded() -> Any:
            async with httpx.AsyncClient(base_url=server.url) as http:
                resp = await http.post(
                    "/graphql", json={"query": AUDIT, "variables": {"f": {"principal": "wendy"}}}
                )
            # header mode: every caller is an ENGINEER, so the trail is refused to it, and that is recorded too
            return resp.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN" or None

        await eventually(recorded)
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        rows = list(client[settings.mongo_db]["audit_events"].find({"action": "updateModel"}))
    finally:
        client.close()
    assert [(r["principal"], r["transport"], r["target"], r["outcome"]) for r in rows] == [
        ("wendy", "websocket", "ws-model", "MODEL_NOT_FOUND")
    ]


@pytest.mark.process
def test_cli_token_changes_are_recorded_and_listed(tmp_path: Path, mongo_uri: str) -> None:
    """`modelhub token create|revoke` (straight on the database) record TOKEN records, failures with their
    code, and `modelhub audit --json` lists them filtered by action."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}
    env.update(MODELHUB_MONGO_URI=mongo_uri, MODELHUB_MONGO_DB=f"audit_{uuid.uuid4().hex[:8]}", COLUMNS="250")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*MODELHUB, *args], cwd=tmp_path, env=env, capture_output=True, text=True)

    assert run("token", "create", "--name", "ci", "--principal", "bot").returncode == 0
    assert run("token", "revoke", "ci").returncode == 0
    assert run("token", "revoke", "ci").returncode == 1
    listed = run("audit", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["kind"], r["action"], r["target"], r["outcome"], r["transport"]) for r in rows] == [
        ("TOKEN", "token revoke", "ci", "INVALID_INPUT", "cli"),
        ("TOKEN", "token revoke", "ci", "OK", "cli"),
        ("TOKEN", "token create", "ci", "OK", "cli"),
    ]
    assert all(r["principal"].startswith("cli:") for r in rows)
    only = run("audit", "--json", "--action", "token create")
    assert [json.loads(line)["action"] for line in only.stdout.splitlines()] == ["token create"]
    table = run("audit")
    assert table.returncode == 0 and "token revoke" in table.stdout


async def test_a_refused_websocket_connection_is_recorded(mongo_uri: str, tmp_path: Path) -> None:
    """A WebSocket whose connection_init carries no valid token is refused, and the refusal recorded."""
    from pymongo import MongoClient
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    settings = make_settings("local", mongo_uri, None, tmp_path / "ws", auth="token")
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        with LiveServer(settings) as server:
            url = server.url.replace("http://", "ws://") + "/graphql"
            ws = await connect(url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": "Bearer mh_nope"}})
            )
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)

            async def recorded() -> Any:
                found = client[settings.mongo_db]["audit_events"].find_one({"action": "connection_init"})
                return found

            row = await eventually(recorded)
        assert (row["kind"], row["outcome"], row["transport"], row["principal"]) == (
            "REFUSED",
            "UNAUTHENTICATED",
            "websocket",
            None,
        )
    finally:
        client.close()


async def test_a_project_maintainer_reads_its_projects_records(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A principal holding MAINTAINER on a project (and no global role) reads that project's records only:
    not other projects', not sign-ins or token changes."""
    await world.gql("alice", REGISTER, {"n": "m", "k": "m.bin", "b": "bucket-a"})
    await world.gql("alice", 'mutation { updateModel(input: {name: "m", tags: ["a"]}) { __typename } }')
    other = 'mutation { registerModel(input: {name: "n", projectName: "nlp", bucket: "bucket-a", key: "m.bin"}) { __typename } }'
    await world.gql("alice", other)
    await world.gql("admin", 'mutation { createToken(input: {name: "ci", principal: "bot"}) { __typename } }')
    auth = world.app.state.services.auth
    real = auth.authenticate
    mia = Principal("mia", None, grants={"vision": ProjectRole.MAINTAINER, "nlp": ProjectRole.READER})

    async def authenticate(headers: Any) -> Any:
        return mia if headers.get("authorization") == "Bearer mia" else await real(headers)

    monkeypatch.setattr(auth, "authenticate", authenticate)
    await world.app.state.services.audit.flush()
    page = await world.gql("mia", AUDIT, {"first": 100})
    rows = page["data"]["auditEvents"]["nodes"]
    assert sorted((r["action"], r["project"]) for r in rows) == [
        ("registerModel", "vision"),
        ("updateModel", "vision"),
    ]
    assert (await world.gql("mia", AUDIT, {"f": {"project": "nlp"}}))["data"]["auditEvents"]["nodes"] == []


async def test_documents_refused_before_execution_are_not_recorded(world: World) -> None:
    """A mutation document that fails validation ran nothing and names nobody: it leaves no record."""
    body = await world.gql(None, 'mutation { updateModel(input: {name: "m", nope: 1}) { __typename } }')
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert [r for r in await world.records() if r["kind"] != "SIGN_IN"] == []

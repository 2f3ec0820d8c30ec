"""Schemathesis fuzzes every root field over HTTP with an ADMIN token (about 1,000 cases): no input may
cause an unexpected (masked) error or a 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.graphql
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from graphql_api.schema import build_schema
from tests.servers import LiveServer

nodes = schemathesis.graphql.nodes
schemathesis.graphql.scalar("Long", st.integers(-(2**63), 2**63 - 1).map(nodes.Int))
schemathesis.graphql.scalar("DateTime", st.datetimes().map(lambda d: nodes.String(d.isoformat() + "Z")))
schemathesis.graphql.scalar(
    "JSON", (st.text(max_size=8).map(nodes.String)) | st.integers(-1000, 1000).map(nodes.Int)
)

SCHEMA = schemathesis.graphql.from_dict({"data": build_schema().introspect()})


@pytest.fixture(scope="module")
def fuzz_server(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.servers import make_settings

    with (
        LiveServer(make_settings("local", mongo_uri, None, tmp_path_factory.mktemp("fuzz"))) as server,
        httpx.Client(
            base_url=server.url, timeout=30
        ) as client,  # one client: a new one per case costs ~10 ms
    ):
        yield client


@SCHEMA.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_server(case: Any, fuzz_server: httpx.Client) -> None:
    """Whatever the arguments, the answer is data or a typed error: never a 5xx, a masked bug or a traceback."""
    body = {"query": case.body} if isinstance(case.body, str) else case.body
    resp = fuzz_server.post("/graphql", json=body)
    assert resp.status_code in (200, 400), resp.text
    assert "Traceback" not in resp.text
    for error in resp.json().get("errors") or []:
        assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", (case.body, error)

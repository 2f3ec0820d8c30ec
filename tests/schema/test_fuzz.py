"""Schemathesis fuzzes every root field over HTTP with an ADMIN token (about 1,000 cases): no input may
cause an unexpected (masked) error or a 5xx; nested fragment spreads of every shape are answered or refused
at once."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.graphql
from hypothesis import HealthCheck, given, settings
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


LEAVES = [
    "__typename",
    "a: __typename b: __typename",
    "models { totalCount }",
    "models(first: 100) { edges { node { name versions { nodes { version } } } } }",
    "downloadStats(groupBy: [ENGINEER], limit: 1000) { totalRows }",
]


@st.composite
def nested_spreads(draw: Any) -> str:
    """A document of nested fragment spreads: each level spreads the next `fanout` times, named or inside
    inline fragments, over a leaf selection; up to 12 levels."""
    levels = draw(st.integers(1, 12))
    fanout = draw(st.integers(1, 12))
    inline = draw(st.booleans())
    leaf = draw(st.sampled_from(LEAVES))
    spread = (lambda i: f"... on Query {{ ...F{i} }}") if inline else (lambda i: f"...F{i}")
    parts = ["{ ...F1 }"]
    for i in range(1, levels):
        parts.append(f"fragment F{i} on Query {{ " + " ".join([spread(i + 1)] * fanout) + " }")
    parts.append(f"fragment F{levels} on Query {{ {leaf} }}")
    return "\n".join(parts)


@given(document=nested_spreads())
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_nested_spreads_are_answered_or_refused_at_once(document: str, fuzz_server: httpx.Client) -> None:
    """Nested fragment spreads of any width and depth are answered or refused with a typed code, never a
    masked error, and within a second (a fragment is measured and priced once, not per spread)."""
    started = time.monotonic()
    resp = fuzz_server.post("/graphql", json={"query": document})
    assert time.monotonic() - started < 1, document
    assert resp.status_code == 200, resp.text
    for error in resp.json().get("errors") or []:
        assert error.get("extensions", {}).get("code") not in (None, "INTERNAL_SERVER_ERROR"), (
            document,
            error,
        )

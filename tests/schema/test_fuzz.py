"""Schemathesis fuzzes every root field over HTTP with an ADMIN token (about 1,000 cases): no input may
cause an unexpected (masked) error or a 5xx; nested fragment spreads of every shape are answered or refused
at once. hypothesis-graphql writes every argument inline (literals), so each case is also sent with its
arguments lifted into variables: both forms a client can send."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.graphql
from graphql import (
    ArgumentNode,
    NameNode,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    parse,
    parse_type,
    print_ast,
    value_from_ast_untyped,
    visit,
)
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

GRAPHQL_SCHEMA = build_schema()
SCHEMA = schemathesis.graphql.from_dict({"data": GRAPHQL_SCHEMA.introspect()})


def lifted(query: str) -> tuple[str, dict[str, Any]]:
    """`query` with every argument's literal value passed as a variable of the argument's type instead."""
    document = parse(query)
    type_info = TypeInfo(GRAPHQL_SCHEMA._schema)
    variables: dict[str, Any] = {}
    definitions: list[VariableDefinitionNode] = []

    class Lift(Visitor):
        def enter_argument(self, node: ArgumentNode, *_args: Any) -> ArgumentNode | None:
            argument = type_info.get_argument()
            if argument is None or isinstance(node.value, VariableNode):
                return None
            name = NameNode(value=f"v{len(variables)}")
            variables[name.value] = value_from_ast_untyped(node.value)
            definitions.append(
                VariableDefinitionNode(variable=VariableNode(name=name), type=parse_type(str(argument.type)))
            )
            return ArgumentNode(name=node.name, value=VariableNode(name=name))

        def leave_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> Any:
            declared = (*(node.variable_definitions or ()), *definitions)
            return dataclasses.replace(node, variable_definitions=declared)

    return print_ast(visit(document, TypeInfoVisitor(type_info, Lift()))), variables


def test_lifting_keeps_the_values() -> None:
    """A lifted query passes the same values as variables of the arguments' types."""
    query, variables = lifted('{ downloads(filter: {since: "2026-01-01T00:00:00Z", statuses: [COMPLETED]}, first: 3) '
                              "{ totalCount } }")  # fmt: skip
    assert variables == {"v0": {"since": "2026-01-01T00:00:00Z", "statuses": ["COMPLETED"]}, "v1": 3}
    assert "($v0: DownloadFilter, $v1: Int)" in query and "downloads(filter: $v0, first: $v1)" in query


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


# 30-50 s: fifty cases per root field over a live server (`make test` runs it; `make check` does not)
@pytest.mark.slow
@SCHEMA.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_server(case: Any, fuzz_server: httpx.Client) -> None:
    """Whatever the arguments, the answer is data or a typed error: never a 5xx, a masked bug or a traceback."""
    body = {"query": case.body} if isinstance(case.body, str) else case.body
    query, variables = lifted(body["query"])
    for sent in (body, {"query": query, "variables": variables}):
        resp = fuzz_server.post("/graphql", json=sent)
        assert resp.status_code in (200, 400), resp.text
        assert "Traceback" not in resp.text
        for error in resp.json().get("errors") or []:
            assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", (sent, error)


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
    masked error, and within seconds (a fragment is measured and priced once, not per spread)."""
    started = time.monotonic()
    resp = fuzz_server.post("/graphql", json={"query": document})
    # Spread per spread, the widest of these documents selects 12^11 fields (hours); once per fragment it is
    # tens of milliseconds, and 1.4 s on a machine busy with other work (a 1 s bound failed there once).
    assert time.monotonic() - started < 5, document
    assert resp.status_code == 200, resp.text
    for error in resp.json().get("errors") or []:
        assert error.get("extensions", {}).get("code") not in (None, "INTERNAL_SERVER_ERROR"), (
            document,
            error,
        )

"""Every list the schema takes, in every argument and input-field position, is bounded: 10,001 values are
refused with a typed error naming the field before any work, whatever the caller may do (an ADMIN asks)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from graphql import GraphQLInputObjectType, GraphQLInputType, GraphQLList, GraphQLNonNull, GraphQLObjectType

from graphql_api.auth import create_token
from graphql_api.queries import MAX_FILTER_VALUES
from graphql_api.roles import Role
from tests.schema.test_input_forms import SCHEMA, Position, document, filler, typed_error_names
from tests.servers import GraphQLClient

MANY = 10_001


def list_positions() -> list[Position]:
    """Every argument or input field whose type is a list, found by walking the schema."""
    found: list[Position] = []

    def walk(
        op: str, field: str, path: tuple[str, ...], type_: GraphQLInputType, seen: frozenset[str]
    ) -> None:
        inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if isinstance(inner, GraphQLList):
            found.append(Position(op, field, path, type_))
        elif isinstance(inner, GraphQLInputObjectType) and inner.name not in seen:
            for name, sub in inner.fields.items():
                walk(op, field, (*path, name), sub.type, seen | {inner.name})

    for op, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type)):
        assert isinstance(root, GraphQLObjectType)
        for field_name, field in root.fields.items():
            for arg_name, arg in field.args.items():
                walk(op, field_name, (arg_name,), arg.type, frozenset())
    return found


def many(pos: Position, count: int) -> list[Any]:
    inner = pos.type.of_type if isinstance(pos.type, GraphQLNonNull) else pos.type
    assert isinstance(inner, GraphQLList)
    return [filler(inner.of_type)] * count


def test_list_positions_include_the_filters() -> None:
    """The walk finds the filters' lists and the mutations' lists."""
    found = {(p.field, p.dotted) for p in list_positions()}
    for known in [("downloads", "filter.modelNames"), ("downloadStats", "filter.engineers"),
                  ("models", "filter.owners"), ("retentionCandidates", "projectNames"), ("nodes", "ids"),
                  ("registerModel", "input.tags")]:  # fmt: skip
        assert known in found, known


@pytest.mark.parametrize("store_kind", ["local"])
async def test_every_list_position_is_bounded(gql: GraphQLClient) -> None:
    """10,001 values at any list position are refused with a typed error naming the field (INVALID_INPUT,
    a result union's InvalidInput, or the price over MAX_QUERY_COST), never run or failed inside."""
    admin, _ = await create_token("t-lists", "root", Role.ADMIN, "test")
    failures: list[str] = []
    for pos in list_positions():
        text, variables = document(pos, many(pos, MANY), as_variable=True)
        body = await gql.raw(text, variables, Authorization=f"Bearer {admin}")
        codes = {(e.get("extensions") or {}).get("code") for e in body.get("errors") or []}
        if "COST_LIMIT_EXCEEDED" in codes:
            continue  # priced by its length: refused before anything runs
        problem = typed_error_names(body, pos)
        if problem or "INTERNAL_SERVER_ERROR" in codes:
            failures.append(f"{pos}: {problem or json.dumps(body)[:300]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("store_kind", ["local"])
async def test_filter_lists_take_up_to_their_bound(gql: GraphQLClient) -> None:
    """A filter list of MAX_FILTER_VALUES values is answered; one more is INVALID_INPUT naming it."""
    query = "query($n: [String!]) { downloads(filter: {modelNames: $n}, first: 1) { totalCount } }"
    names = [f"m{i}" for i in range(MAX_FILTER_VALUES + 1)]
    ok = await gql.raw(query, {"n": names[:-1]}, **{"X-Engineer-ID": "alice"})
    assert ok.get("data") == {"downloads": {"totalCount": 0}}, ok
    refused = await gql.raw(query, {"n": names}, **{"X-Engineer-ID": "alice"})
    (error,) = refused["errors"]
    assert (
        error["extensions"]["code"] == "INVALID_INPUT" and error["extensions"]["field"] == "filter.modelNames"
    )
    assert f"at most {MAX_FILTER_VALUES} values" in error["message"]


@pytest.mark.parametrize("store_kind", ["local"])
async def test_token_grants_name_each_project_once(gql: GraphQLClient) -> None:
    """A new token's grants naming one project twice are InvalidInput on `grants`; nothing is created."""
    admin, _ = await create_token("t-grants", "root", Role.ADMIN, "test")
    query = """mutation($g: [TokenGrantInput!]) {
      createToken(input: {name: "twice", principal: "p", grants: $g}) { __typename ... on InvalidInput { field } }
    }"""
    twice = [{"project": "vision", "role": "READER"}, {"project": "vision", "role": "MAINTAINER"}]
    body = await gql.raw(query, {"g": twice}, Authorization=f"Bearer {admin}")
    assert body["data"]["createToken"] == {"__typename": "InvalidInput", "field": "grants"}, body
    listed = await gql.raw("{ tokens { name } }", Authorization=f"Bearer {admin}")
    assert "twice" not in {t["name"] for t in listed["data"]["tokens"]}

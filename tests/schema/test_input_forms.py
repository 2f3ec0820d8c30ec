"""Every custom scalar and enum, in every argument and input-field position the schema has for it, sent
both ways a client can (written in the document, and as a variable), valid and invalid: a valid value is
accepted and an invalid one is a BAD_USER_INPUT error naming the field, never an internal error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    get_named_type,
    is_leaf_type,
)
from graphql.pyutils import Undefined

from graphql_api.schema import build_schema
from tests.servers import GraphQLClient

SCHEMA = build_schema()._schema
BUILT_IN = {"String", "Int", "Float", "Boolean", "ID"}
# A value for every required position a test does not look at (its own checks may still refuse it).
FILLERS: dict[str, Any] = {"String": "x", "Int": 1, "Float": 1.0, "Boolean": False, "ID": "x", "Long": 1,
                           "DateTime": "2026-01-01T00:00:00Z", "JSON": {}}  # fmt: skip
VALID: dict[str, list[Any]] = {
    "Long": [5, 2**40],
    "DateTime": ["2026-01-31T12:00:00Z", "2026-01-31T13:00:00+01:00"],
    "JSON": [{"k": [1, "two", None]}],
}
INVALID: dict[str, list[Any]] = {
    "Long": ["x", 2**70, 1.5, True],
    # The calendar's ends (out of range: every range is stepped by days, weeks and months).
    "DateTime": ["yesterday", "2026-01-31T12:00:00", 5, "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00"],
    # Any JSON value is a JSON; where the schema takes one, only an object is allowed (the field is named
    # by the mutation's InvalidInput, or the top-level error).
    "JSON": ["text", [1, 2]],
}


@dataclass(frozen=True)
class Position:
    """Where a custom scalar or enum is taken: a root field's argument, and input fields below it."""

    operation: str  # query | mutation | subscription
    field: str
    path: tuple[str, ...]  # argument name, then input field names
    type: GraphQLInputType  # the type at the position, with its wrappers

    @property
    def leaf(self) -> GraphQLScalarType | GraphQLEnumType:
        leaf = get_named_type(self.type)
        assert isinstance(leaf, GraphQLScalarType | GraphQLEnumType)
        return leaf

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def __str__(self) -> str:
        return f"{self.operation} {self.field}({self.dotted}: {self.type})"


def positions() -> list[Position]:
    """Every position of a custom scalar or an enum, found by walking the schema: new ones are covered."""
    found: list[Position] = []

    def walk(
        op: str, field: str, path: tuple[str, ...], type_: GraphQLInputType, seen: frozenset[str]
    ) -> None:
        named = get_named_type(type_)
        if isinstance(named, GraphQLInputObjectType):
            if named.name in seen:
                return
            for name, sub in named.fields.items():
                walk(op, field, (*path, name), sub.type, seen | {named.name})
        elif is_leaf_type(named) and named.name not in BUILT_IN:
            found.append(Position(op, field, path, type_))

    roots = (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type))
    for op, root in (*roots, ("subscription", SCHEMA.subscription_type)):
        assert isinstance(root, GraphQLObjectType)
        for field_name, field in root.fields.items():
            for arg_name, arg in field.args.items():
                walk(op, field_name, (arg_name,), arg.type, frozenset())
    return found


def literal(value: Any, type_: GraphQLInputType | None = None) -> str:
    """`value` written in GraphQL syntax (enum values bare when `type_` says the position is an enum)."""
    named = get_named_type(type_) if type_ is not None else None
    if isinstance(named, GraphQLEnumType) and isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v, type_) for v in value) + "]"
    if value is None:
        return "null"
    return json.dumps(value)


class Slot:
    """Marks the position under test inside the arguments being built."""


SLOT = Slot()


def filled(type_: GraphQLInputType, path: tuple[str, ...], value: Any) -> Any:
    """A value of `type_` with `value` at `path` (SLOT for the variable) and fillers where required."""
    if isinstance(type_, GraphQLNonNull):
        return filled(type_.of_type, path, value)
    if not path:
        return value
    if isinstance(type_, GraphQLList):
        return [filled(type_.of_type, path, value)]
    assert isinstance(type_, GraphQLInputObjectType)
    out: dict[str, Any] = {}
    for name, field in type_.fields.items():
        if name == path[0]:
            out[name] = filled(field.type, path[1:], value)
        elif isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined:
            out[name] = filler(field.type)
    return out


def filler(type_: GraphQLInputType) -> Any:
    if isinstance(type_, GraphQLNonNull):
        return filler(type_.of_type)
    if isinstance(type_, GraphQLList):
        return [filler(type_.of_type)]
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        return filled(type_, (), {}) or {
            n: filler(f.type) for n, f in type_.fields.items() if isinstance(f.type, GraphQLNonNull)
        }
    assert isinstance(type_, GraphQLScalarType)
    return FILLERS[type_.name]


def written(value: Any, type_: GraphQLInputType) -> str:
    """A built argument value in GraphQL syntax: SLOT as `$v`, enum fillers bare."""
    if value is SLOT:
        return "$v"
    if isinstance(value, Written):
        return value.text
    named = get_named_type(type_)
    if isinstance(named, GraphQLInputObjectType) and isinstance(value, dict):
        parts = [f"{k}: {written(v, named.fields[k].type)}" for k, v in value.items()]
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list):
        inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        item = inner.of_type if isinstance(inner, GraphQLList) else inner
        return "[" + ", ".join(written(v, item) for v in value) + "]"
    return literal(value, type_)


@dataclass(frozen=True)
class Written:
    """A value already in GraphQL syntax (the literal under test)."""

    text: str


def document(pos: Position, value: Any, as_variable: bool) -> tuple[str, dict[str, Any]]:
    """The operation setting `value` at `pos` (inline, or as `$v`) with every other required argument
    filled, selecting only `__typename` (or nothing, for a leaf result)."""
    root = {"query": SCHEMA.query_type, "mutation": SCHEMA.mutation_type}.get(pos.operation)
    root = root or SCHEMA.subscription_type
    assert root is not None
    field = root.fields[pos.field]
    at = SLOT if as_variable else Written(literal(value, pos.type))
    args = []
    for name, arg in field.args.items():
        if name == pos.path[0]:
            args.append(f"{name}: {written(filled(arg.type, pos.path[1:], at), arg.type)}")
        elif isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined:
            args.append(f"{name}: {written(filler(arg.type), arg.type)}")
    selection = "" if is_leaf_type(get_named_type(field.type)) else " { __typename }"
    header = f"($v: {pos.type})" if as_variable else ""
    text = f"{pos.operation} Probe{header} {{ {pos.field}({', '.join(args)}){selection} }}"
    return text, ({"v": value} if as_variable else {})


def values(pos: Position) -> tuple[list[Any], list[Any]]:
    """Valid and invalid values for the leaf at `pos`, wrapped in a list where the position is one."""
    leaf = pos.leaf
    if isinstance(leaf, GraphQLEnumType):
        good, bad = [next(iter(leaf.values))], ["NOT_A_VALUE", 1]
    else:
        good, bad = VALID[leaf.name], INVALID[leaf.name]
    inner = pos.type.of_type if isinstance(pos.type, GraphQLNonNull) else pos.type
    if isinstance(inner, GraphQLList):
        return [[v] for v in good], [[v] for v in bad]
    return good, bad


def test_positions_are_found_by_walking_the_schema() -> None:
    """The walk finds the positions known today, in arguments and nested input fields, and every custom
    scalar and enum the schema takes as input."""
    found = {(p.field, p.dotted) for p in positions()}
    for known in [("downloads", "filter.since"), ("downloads", "filter.minBytes"), ("downloads", "filter.statuses"),
                  ("requestDownload", "input.mode"), ("registerModel", "input.metadata"),
                  ("downloadSeries", "since"), ("downloadStats", "groupBy"), ("models", "orderBy.direction")]:  # fmt: skip
        assert known in found, known
    taken = {p.leaf.name for p in positions()}
    assert {"Long", "DateTime", "JSON"} <= taken


def typed_error_names(body: dict[str, Any], pos: Position) -> str | None:
    """None when the answer refuses the value with a typed error naming the position's field, else what
    is wrong with the answer."""
    leaf_name = pos.path[-1]
    for error in body.get("errors") or []:
        ext = error.get("extensions") or {}
        if ext.get("code") == "BAD_USER_INPUT" and leaf_name in str(ext.get("field", "")).split("."):
            return None
        if ext.get("code") == "INVALID_INPUT" and leaf_name in str(ext.get("field", "")):
            return None
    for result in (body.get("data") or {}).values():  # a mutation's InvalidInput member
        if isinstance(result, dict) and result.get("__typename") == "InvalidInput":
            return None
    return f"not refused with a typed error naming {leaf_name!r}: {json.dumps(body)[:300]}"


BROKEN = {"INTERNAL_SERVER_ERROR", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"}


@pytest.mark.parametrize("store_kind", ["local"])
async def test_every_scalar_and_enum_position_in_both_forms(gql: GraphQLClient) -> None:
    """Inline and as a variable, a valid value is taken (no validation, input or internal error) and an
    invalid one is refused with BAD_USER_INPUT naming the field (or, for a JSON that is not an object, the
    domain's InvalidInput), never an internal error."""
    failures: list[str] = []
    checked = 0
    for pos in positions():
        if pos.operation == "subscription":
            continue  # the next test
        good, bad = values(pos)
        for as_variable in (False, True):
            form = "variable" if as_variable else "literal"
            for value in good:
                text, variables = document(pos, value, as_variable)
                body = await gql.raw(text, variables, **{"X-Engineer-ID": "alice"})
                codes = {(e.get("extensions") or {}).get("code") for e in body.get("errors") or []}
                if codes & BROKEN:
                    failures.append(f"{pos} {form} {value!r} valid but: {json.dumps(body)[:300]}")
                checked += 1
            for value in bad:
                text, variables = document(pos, value, as_variable)
                body = await gql.raw(text, variables, **{"X-Engineer-ID": "alice"})
                codes = {(e.get("extensions") or {}).get("code") for e in body.get("errors") or []}
                problem = typed_error_names(body, pos)
                if "INTERNAL_SERVER_ERROR" in codes or problem:
                    failures.append(f"{pos} {form} {value!r}: {problem or json.dumps(body)[:300]}")
                checked += 1
    assert not failures, "\n".join(failures)
    assert checked > 100


async def test_subscription_positions_refuse_bad_values_in_both_forms() -> None:
    """A subscription's arguments are checked the same way before it starts (what the WebSocket transport
    runs): an invalid value, inline or as a variable, is BAD_USER_INPUT naming the field."""
    schema = build_schema()
    found = [p for p in positions() if p.operation == "subscription"]
    assert found
    failures: list[str] = []
    for pos in found:
        for as_variable in (False, True):
            for value in values(pos)[1]:
                text, variables = document(pos, value, as_variable)
                stream = await schema.subscribe(text, variable_values=variables)
                first = await anext(aiter(stream))
                errors = [e.formatted for e in getattr(first, "errors", None) or []]
                problem = typed_error_names({"errors": errors}, pos)
                if problem or any(
                    e.get("extensions", {}).get("code") == "INTERNAL_SERVER_ERROR" for e in errors
                ):
                    failures.append(f"{pos} {'variable' if as_variable else 'literal'} {value!r}: {problem}")
    assert not failures, "\n".join(failures)

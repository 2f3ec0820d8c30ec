"""Every part of the public schema is documented for explorers, and every object with an id is a Node."""

from __future__ import annotations

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLUnionType,
)

from graphql_api.schema import build_schema

BUILT_IN = {"String", "Int", "Float", "Boolean", "ID"}


def missing_descriptions() -> list[str]:
    schema = build_schema()._schema
    missing: list[str] = []
    for name, kind in schema.type_map.items():
        if name.startswith("__") or name in BUILT_IN:
            continue
        if not kind.description:
            missing.append(name)
        if isinstance(kind, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in kind.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                missing += [
                    f"{name}.{field_name}({a})" for a, arg in field.args.items() if not arg.description
                ]
        elif isinstance(kind, GraphQLInputObjectType):
            missing += [f"{name}.{f}" for f, field in kind.fields.items() if not field.description]
        elif isinstance(kind, GraphQLEnumType):
            missing += [f"{name}.{v}" for v, value in kind.values.items() if not value.description]
        else:
            assert isinstance(kind, GraphQLScalarType | GraphQLUnionType), name
    return missing


def test_every_type_field_argument_and_value_is_described() -> None:
    """GraphiQL's docs pane has a description for every type, field, argument, input field and enum value."""
    assert missing_descriptions() == []


def test_every_object_with_an_id_is_a_node() -> None:
    """Every object type with an `id` implements Node, so Relay and Apollo caches can normalise it."""
    schema = build_schema()._schema
    node = schema.type_map["Node"]
    for name, kind in schema.type_map.items():
        if isinstance(kind, GraphQLObjectType) and "id" in kind.fields and not name.startswith("__"):
            assert node in kind.interfaces, name

"""GraphQL enums over the domain's own Python enums: one enum per concept, given its GraphQL name and its
descriptions here (the schema modules describe theirs) instead of a second, Strawberry-only copy."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

import strawberry
from strawberry.types.enum import has_enum_definition

E = TypeVar("E", bound=Enum)


def graphql_enum(enum: type[E], description: str, *, name: str | None = None, **values: str) -> None:
    """Makes the Python enum `enum` a GraphQL enum named `name` (else as the class), every value described
    by the keyword argument of its name (a value left undescribed, or a description of none, is a bug)."""
    described = strawberry.enum(enum, name=name, description=description)
    assert has_enum_definition(described)
    definition = described.__strawberry_definition__
    names = [value.name for value in definition.values]
    if sorted(names) != sorted(values):
        raise ValueError(f"{enum.__name__}: describe exactly {names}, not {list(values)}")
    for value in definition.values:
        value.description = values[value.name]

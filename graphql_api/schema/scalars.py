"""Custom scalars: `Long` for byte counts (GraphQL `Int` is 32-bit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NewType

import strawberry

MAX_LONG = 2**63 - 1


def _parse_long(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("Long must be an integer")
    number = int(value)
    if not -MAX_LONG - 1 <= number <= MAX_LONG:
        raise ValueError("Long must fit in 64 bits")
    return number


# The Python type used in annotations; `LONG_SCALAR` tells the schema how to serialise it (scalar_map).
if TYPE_CHECKING:
    Long = int  # any int is a Long to the type checker; the schema checks the 64-bit range
else:
    Long = NewType("Long", int)
LONG_SCALAR = strawberry.scalar(
    name="Long",
    description="A 64-bit signed integer, serialised as a JSON number (exact up to 2^53).",
    serialize=int,
    parse_value=_parse_long,
)

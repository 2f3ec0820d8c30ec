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


if TYPE_CHECKING:
    Long = int
else:
    Long = strawberry.scalar(
        NewType("Long", int),
        name="Long",
        description="A 64-bit signed integer, serialised as a JSON number (exact up to 2^53).",
        serialize=int,
        parse_value=_parse_long,
    )

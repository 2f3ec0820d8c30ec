"""Custom scalars: `Long` for byte counts (GraphQL `Int` is 32-bit), and a `DateTime` that insists on a
UTC offset (a naive time is ambiguous, and comparing it with stored times would fail)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NewType

import strawberry

MAX_LONG = 2**63 - 1


def _parse_long(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("Long must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"Long must be an integer; got {str(value)[:40]!r}") from None
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


FIRST_YEAR, LAST_YEAR = 1900, 2999


def _parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("DateTime must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"DateTime must be ISO-8601, e.g. 2026-01-31T12:00:00Z; got {value[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError("DateTime must include a UTC offset, e.g. 2026-01-31T12:00:00Z")
    try:
        moment = parsed.astimezone(UTC)
    except OverflowError:
        moment = None
    if moment is None or not FIRST_YEAR <= moment.year <= LAST_YEAR:
        # Ranges are stepped by days, weeks and months: a moment at the ends of Python's calendar overflows.
        raise ValueError(f"DateTime must be within the years {FIRST_YEAR} to {LAST_YEAR}")
    return moment


def _serialize_datetime(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


DATETIME_SCALAR = strawberry.scalar(
    name="DateTime",
    description=f"An ISO-8601 date and time with a UTC offset, in the years {FIRST_YEAR} to {LAST_YEAR} "
    "(answers are always in UTC, `+00:00`).",
    serialize=_serialize_datetime,
    parse_value=_parse_datetime,
)

"""Range header parsing (no server)."""

from __future__ import annotations

import pytest

from graphql_api.errors import RangeNotSatisfiable
from graphql_api.http.ranges import parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=2-", 10, (2, 9)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        (" bytes=1-2 ", 10, (1, 2)),
    ],
)
def test_satisfiable_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    """Whole, open-ended, suffix and over-long ranges give the inclusive bytes RFC 9110 says they ask for."""
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=5-2", "bytes=-0", "bytes=-", "items=0-1", "garbage"])
def test_unsatisfiable_ranges_say_the_size(header: str) -> None:
    """Ranges past the end, reversed, empty or in another unit are refused with the object's size."""
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, 10)
    assert info.value.size == 10


def test_empty_object_has_no_suffix_range() -> None:
    """A suffix range of an empty object cannot be satisfied."""
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-5", 0)

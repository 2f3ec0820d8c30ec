"""Range and conditional header parsing per RFC 9110 (no server)."""

from __future__ import annotations

import pytest

from graphql_api.errors import RangeNotSatisfiable
from graphql_api.http.ranges import not_modified, parse_range


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
        ("bytes=2-" + "9" * 5000, 10, (2, 9)),
        ("bytes=-" + "9" * 5000, 10, (0, 9)),
    ],
)
def test_satisfiable_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    """Whole, open-ended, suffix and over-long ranges give the inclusive bytes RFC 9110 says they ask for."""
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=-0", "bytes=" + "9" * 5000 + "-"])
def test_unsatisfiable_ranges_say_the_size(header: str) -> None:
    """Valid ranges no byte satisfies (past the end, a zero-length suffix) are refused with the size."""
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, 10)
    assert info.value.size == 10


@pytest.mark.parametrize(
    "header",
    ["bytes=5-2", "bytes=-", "items=0-1", "garbage", "bytes=0-1,5-6", "bytes=\u00b2-", "bytes=\u0661-"],
)
def test_unusable_ranges_are_ignored(header: str) -> None:
    """Other units, several ranges, reversed or non-ASCII numbers: the Range is ignored (whole object)."""
    assert parse_range(header.encode().decode("unicode_escape"), 10) is None


def test_if_range_sends_the_whole_object_unless_the_etag_matches() -> None:
    """If-Range with the current strong ETag keeps the range; another ETag, a weak one or a date do not."""
    assert parse_range("bytes=2-3", 10, '"a"', '"a"') == (2, 3)
    assert parse_range("bytes=2-3", 10, '"a"', '"b"') is None
    assert parse_range("bytes=2-3", 10, '"a"', 'W/"a"') is None
    assert parse_range("bytes=2-3", 10, '"a"', "Fri, 27 Nov 2026 10:00:00 GMT") is None


def test_if_none_match() -> None:
    """If-None-Match matches the ETag weakly, in a list, or with *; otherwise the object is sent."""
    assert not_modified('"a"', '"a"') and not_modified('W/"a"', '"a"') and not_modified('"x", "a"', '"a"')
    assert not_modified("*", '"a"')
    assert not not_modified('"b"', '"a"') and not not_modified(None, '"a"')


def test_empty_object_has_no_suffix_range() -> None:
    """A suffix range of an empty object cannot be satisfied."""
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-5", 0)

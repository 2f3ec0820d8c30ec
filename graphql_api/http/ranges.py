"""HTTP Range and conditional requests (RFC 9110 §13-14): the byte range a request asks of an object."""

from __future__ import annotations

import re

from ..errors import RangeNotSatisfiable

# One range only, ASCII digits only (`\d` would take other scripts' digits). Anything else is a Range this
# server cannot use, which RFC 9110 §14.2 says to ignore: the whole object is sent.
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
_HUGE = 10**18  # past any object; compared without converting thousands of digits


def _number(digits: str) -> int:
    return _HUGE if len(digits) > 18 else int(digits)


def parse_range(
    header: str | None, size: int, etag: str | None = None, if_range: str | None = None
) -> tuple[int, int] | None:
    """The inclusive byte range to send, or None for the whole object. A Range that cannot be used
    (other units, several ranges, garbage, last < first) or whose `If-Range` does not name the current
    ETag is ignored; a valid one that no byte satisfies raises RangeNotSatisfiable (416)."""
    if header is None:
        return None
    if if_range is not None and not _strong_match(if_range, etag):
        return None  # the client's copy is outdated (or named by date): it needs the whole object
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        n = _number(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - n), size - 1
    start = _number(first)
    if last and _number(last) < start:
        return None  # invalid range-spec: ignored
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = size - 1 if not last else min(_number(last), size - 1)
    return start, end


def _strong_match(if_range: str, etag: str | None) -> bool:
    """If-Range matches only a strong, identical ETag (a date never matches: no Last-Modified is sent)."""
    value = if_range.strip()
    return etag is not None and not value.startswith("W/") and not etag.startswith("W/") and value == etag


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names the current ETag (weak comparison) or is `*`: answer 304."""
    if if_none_match is None:
        return False
    candidates = [c.strip() for c in if_none_match.split(",")]
    if "*" in candidates:
        return True
    bare = etag.removeprefix("W/")
    return any(c.removeprefix("W/") == bare for c in candidates)

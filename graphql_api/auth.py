"""Who is calling: the one framework-free place that turns request headers into a `Principal`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import Unauthenticated

ENGINEER_HEADER = "x-engineer-id"
ANONYMOUS = "anonymous"
_ENGINEER_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller as recorded on registrations and download events."""

    engineer: str


def principal_from_headers(headers: Mapping[str, str]) -> Principal:
    """The caller named by `X-Engineer-ID` (until tokens arrive); anonymous when the header is absent."""
    raw = headers.get(ENGINEER_HEADER)
    if raw is None or raw == "":
        return Principal(ANONYMOUS)
    if not _ENGINEER_RE.match(raw):
        raise Unauthenticated("X-Engineer-ID must be 1-128 letters, digits or . _ @ + -")
    return Principal(raw)

"""The `ObjectStore` interface shared by the S3 and local implementations, and S3 name rules."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..errors import InvalidInput


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    etag: str
    content_type: str


class ObjectStore(Protocol):
    """Where artifacts live. `end` in `open_range` is inclusive, as in an HTTP Range header."""

    kind: str

    async def head(self, bucket: str, key: str) -> ObjectInfo: ...

    def open_range(
        self, bucket: str, key: str, start: int, end: int, *, whole: bool = False
    ) -> AsyncIterator[bytes]:
        """Bytes start..end; `whole` says that is the entire object (so no Range needs sending)."""
        ...

    async def presign_get(self, bucket: str, key: str, expires_in: int, filename: str) -> str:
        """A URL that fetches the object without the app, or a path under the app when it starts with /."""
        ...

    async def ping(self) -> None: ...


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def validate_bucket(bucket: str, field: str = "bucket") -> None:
    if not _BUCKET.match(bucket) or ".." in bucket or _IP.match(bucket) or ".-" in bucket or "-." in bucket:
        raise InvalidInput(
            field, "must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens"
        )


def validate_key(key: str, field: str = "key") -> None:
    if not key or len(key.encode()) > 1024:
        raise InvalidInput(field, "must be 1 to 1024 bytes of UTF-8")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise InvalidInput(field, "must not contain control characters")
    if key.startswith("/") or any(part in (".", "..") for part in key.split("/")):
        # Legal in S3 but ambiguous as a path; refused so that both stores accept exactly the same keys.
        raise InvalidInput(field, "must not start with / or contain . or .. path segments")


def content_disposition(filename: str) -> str:
    """An RFC 6266 attachment header that survives any file name."""
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"

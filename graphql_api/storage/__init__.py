"""The `ObjectStore` interface shared by the S3 and local implementations, and S3 name rules."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..errors import InvalidInput

# What a link served through the app is bound to (checked when it is used): see presign_get.
Claims = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    etag: str
    content_type: str
    # The whole object's SHA-256 (hex) when the store holds one (not S3's composite multipart checksums).
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class UploadPart:
    number: int
    url: str
    size: int


@dataclass(frozen=True)
class UploadTarget:
    """Where an upload's bytes go: one URL (PUT the whole file with `headers`), or numbered part URLs."""

    url: str | None
    parts: tuple[UploadPart, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    multipart_id: str | None = None


@dataclass(frozen=True)
class UploadSpec:
    upload_id: str
    bucket: str
    key: str
    size: int
    sha256: str
    content_type: str
    expires_in: int
    part_bytes: int | None  # None: one part


class ObjectStore(Protocol):
    """Where artifacts live. `end` in `open_range` is inclusive, as in an HTTP Range header."""

    kind: str

    async def head(self, bucket: str, key: str) -> ObjectInfo: ...

    def open_range(
        self, bucket: str, key: str, start: int, end: int, *, whole: bool = False
    ) -> AsyncIterator[bytes]:
        """Bytes start..end; `whole` says that is the entire object (so no Range needs sending)."""
        ...

    async def presign_get(
        self, bucket: str, key: str, expires_in: int, filename: str, *, claims: Claims | None = None
    ) -> str:
        """A URL that fetches the object without the app, or a path under the app when it starts with /.
        `claims` (string values) are signed into a path under the app, which checks them when the link is
        used; a store whose links the app never sees (S3) cannot carry them."""
        ...

    async def ping(self) -> None: ...

    async def begin_upload(self, spec: UploadSpec) -> UploadTarget:
        """Prepares an upload: presigned PUT (or part) URLs, or a path under the app starting with /."""
        ...

    async def complete_upload(
        self, bucket: str, key: str, multipart_id: str | None, etags: list[str]
    ) -> None:
        """Assembles a multipart upload from its parts' ETags (in part order); nothing for one part."""
        ...

    async def abort_upload(self, bucket: str, key: str, multipart_id: str | None) -> None:
        """Drops whatever an unfinished upload left behind (parts, or the object)."""
        ...

    async def delete_object(self, bucket: str, key: str) -> None:
        """Deletes the object (`modelhub prune`); deleting one that is already gone is not an error."""
        ...

    async def receive(
        self, upload_id: str, bucket: str, key: str, body: AsyncIterator[bytes], size: int, sha256: str
    ) -> ObjectInfo:
        """Takes an upload's bytes through the app (the local store); verified before they are kept."""
        ...


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
    if any(part in ("", ".", "..") for part in key.split("/")):
        # Legal in S3 but ambiguous as a path (`a//b` and `a/b/` would be one file where S3 sees two objects);
        # refused so that both stores accept exactly the same keys and mean the same objects by them.
        raise InvalidInput(field, "must not start or end with /, nor contain empty, . or .. path segments")


@dataclass(frozen=True)
class StorageScope:
    """Where artifacts may be registered or uploaded: anywhere (`allowed` None), or only in the listed
    buckets and bucket/prefix pairs (a prefix matches whole path segments: `models/a` allows `a/x`, not
    `ab/x`)."""

    allowed: tuple[tuple[str, str], ...] | None

    @classmethod
    def parse(cls, entries: list[str] | None) -> StorageScope:
        if entries is None or "*" in entries:
            return cls(None)
        pairs = []
        for entry in entries:
            bucket, _, prefix = entry.strip().partition("/")
            validate_bucket(bucket, "allowed_storage")
            pairs.append((bucket, prefix.strip("/")))
        return cls(tuple(pairs))

    def permits(self, bucket: str, key: str) -> bool:
        if self.allowed is None:
            return True
        return any(b == bucket and (not p or key.startswith(p + "/")) for b, p in self.allowed)

    def check(self, bucket: str, key: str) -> None:
        if not self.permits(bucket, key):
            raise InvalidInput(
                "bucket", "is not an allowed storage location for models (MODELHUB_ALLOWED_STORAGE)"
            )


def content_disposition(filename: str) -> str:
    """An RFC 6266 attachment header that survives any file name."""
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"

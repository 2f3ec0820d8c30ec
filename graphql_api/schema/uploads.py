"""Strawberry types of uploads: the ticket saying where to PUT the bytes."""

from __future__ import annotations

from datetime import datetime

import strawberry

from .. import uploads
from .scalars import Long


@strawberry.type(description="An HTTP header the PUT must send exactly as given.")
class HttpHeader:
    name: str = strawberry.field(description="The header name.")
    value: str = strawberry.field(description="The header value.")


@strawberry.type(
    description="One part of a multipart upload: PUT exactly `sizeBytes` bytes of the file here."
)
class UploadPartTarget:
    part_number: int = strawberry.field(description="1, 2, ...: the part's place in the file.")
    url: str = strawberry.field(description="The presigned URL to PUT this part to.")
    size_bytes: Long = strawberry.field(description="How many bytes this part holds.")


@strawberry.type(
    description="Where to PUT an artifact's bytes until `expiresAt`: one URL (`url`, sending `headers`), or "
    "one URL per part (`parts`, bytes `(partNumber - 1) * partSizeBytes` onwards); then `completeUpload`. "
    "Uploads left open past `expiresAt` are cleaned up."
)
class UploadTicket:
    upload_id: strawberry.ID = strawberry.field(description="Pass to `completeUpload`.")
    url: str | None = strawberry.field(description="PUT the whole file here (null for multipart).")
    headers: list[HttpHeader] = strawberry.field(description="Headers the single PUT must send.")
    parts: list[UploadPartTarget] = strawberry.field(description="Multipart: the part URLs, in order.")
    part_size_bytes: Long | None = strawberry.field(
        description="Multipart: the size of every part but the last."
    )
    bucket: str = strawberry.field(description="Where the artifact will live.")
    key: str = strawberry.field(description="Its key.")
    expires_at: datetime = strawberry.field(
        description="When the URLs stop working and the upload is dropped."
    )

    @classmethod
    def of(cls, opened: uploads.OpenUpload) -> UploadTicket:
        upload, target = opened.upload, opened.target
        return cls(
            upload_id=strawberry.ID(str(upload.id)),
            url=target.url,
            headers=[HttpHeader(name=n, value=v) for n, v in target.headers],
            parts=[
                UploadPartTarget(part_number=p.number, url=p.url, size_bytes=p.size) for p in target.parts
            ],
            part_size_bytes=upload.part_bytes,
            bucket=upload.bucket,
            key=upload.key,
            expires_at=upload.expires_at,
        )

"""Uploads at the edge: the ticket saying where to PUT the bytes, and `requestUpload`/`completeUpload`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from .. import uploads
from .context import Info
from .errors import (
    ChecksumMismatch,
    InvalidInput,
    ModelNotFound,
    ModelVersionAlreadyExists,
    StorageObjectNotFound,
    UploadNotFound,
    mutation,
)
from .inputs import INPUT, CompleteUploadInput, RequestUploadInput
from .registry import new_version
from .scalars import Long
from .types import ModelVersion


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


RequestUploadResult = Annotated[
    UploadTicket | ModelVersionAlreadyExists | ModelNotFound | InvalidInput,
    strawberry.union("RequestUploadResult", description="Where to PUT the bytes, or why not."),
]
CompleteUploadResult = Annotated[
    ModelVersion
    | UploadNotFound
    | ChecksumMismatch
    | ModelVersionAlreadyExists
    | StorageObjectNotFound
    | InvalidInput,
    strawberry.union(
        "CompleteUploadResult",
        description="The registered version, or why not (`StorageObjectNotFound`: the bytes never arrived).",
    ),
]


@strawberry.type
class UploadMutations:
    @mutation(
        description="Starts an upload of a new version's artifact into the server's own bucket: presigned "
        "PUT URLs (one, or one per part above the multipart threshold) on S3, or an app URL on the local "
        "store. The bytes are checked against `sizeBytes` and `sha256`; `completeUpload` then registers "
        "the version."
    )
    async def request_upload(
        self, info: Info, input: Annotated[RequestUploadInput, INPUT]
    ) -> RequestUploadResult:
        request = uploads.UploadRequest(
            **new_version(input, info),
            size_bytes=input.size_bytes,
            filename=input.filename,
            content_type=input.content_type,
        )
        ctx = info.context
        return UploadTicket.of(
            await uploads.request_upload(ctx.services, request, ctx.principal, ctx.scope, ctx.base_url)
        )

    @mutation(
        description="Finishes an upload: assembles multipart parts, checks size and checksum, and registers "
        "the version (`checksumStatus` VERIFIED at once where the store vouches for the SHA-256, else "
        "PENDING until the server has hashed it). Completing the same upload again returns the same version."
    )
    async def complete_upload(
        self, info: Info, input: Annotated[CompleteUploadInput, INPUT]
    ) -> CompleteUploadResult:
        ctx = info.context
        version = await uploads.complete_upload(
            ctx.services, input.upload_id, input.part_etags, ctx.principal, ctx.scope
        )
        return ModelVersion.from_doc(version)

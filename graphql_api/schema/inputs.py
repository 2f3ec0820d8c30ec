"""The `input` of every mutation."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from .downloads import DownloadMode
from .scalars import Long

INPUT = strawberry.argument(description="What to do; see the input type.")


@strawberry.input(description="About one model.")
class OfModel:
    """The `name` the inputs about one model start with (not in the schema itself)."""

    name: str = strawberry.field(description="The model.")


@strawberry.input(description="A new version of a model whose artifact already sits in the object store.")
class RegisterModelInput:
    name: str = strawberry.field(description="Letters, digits and . _ - /; at most 128 characters.")
    project_name: str = strawberry.field(description="The model's project; a model keeps its first project.")
    bucket: str = strawberry.field(description="The artifact's bucket.")
    key: str = strawberry.field(description="The artifact's key.")
    version: int | None = strawberry.field(default=None, description="Omit to take the next free version.")
    description: str | None = strawberry.field(default=None, description="Free text (10,000 characters).")
    tags: list[str] | None = strawberry.field(default=None, description="Up to 64 labels.")
    metadata: JSON | None = strawberry.field(default=None, description="A JSON object of at most 64 KB.")
    sha256: str | None = strawberry.field(
        default=None,
        description="The artifact's SHA-256 (64 hex digits). Checked at once where the store holds the "
        "object's full SHA-256 (a mismatch is `ChecksumMismatch`), else by hashing the object in the "
        "background (`checksumStatus` PENDING until then; a mismatch found later refuses downloads).",
    )


@strawberry.input(description="New notes for a model; omitted fields stay as they are.")
class UpdateModelInput:
    name: str = strawberry.field(description="The model to change.")
    description: str | None = strawberry.field(default=None, description="The new description.")
    tags: list[str] | None = strawberry.field(default=None, description="The new tags (replacing the old).")


@strawberry.input(
    description="New notes for a version; omitted fields stay as they are. The artifact, its checksum and "
    "the version number cannot change."
)
class UpdateModelVersionInput(OfModel):
    version: int = strawberry.field(description="The version to change.")
    description: str | None = strawberry.field(default=None, description="The new description.")
    tags: list[str] | None = strawberry.field(default=None, description="The new tags (replacing the old).")
    metadata: JSON | None = strawberry.field(
        default=None, description="The new metadata (replacing the old)."
    )


@strawberry.input(description="One version of one model.")
class ModelVersionInput(OfModel):
    version: int = strawberry.field(description="The version number.")


@strawberry.input(description="Point an alias at a version (creating or moving it).")
class SetAliasInput(OfModel):
    alias: str = strawberry.field(description="1 to 64 letters, digits or . _ -, never all digits.")
    version: int = strawberry.field(description="The unarchived version it should point at.")


@strawberry.input(description="Remove an alias.")
class RemoveAliasInput(OfModel):
    alias: str = strawberry.field(description="The alias to remove.")


@strawberry.input(
    description="What to download and how; give `version` or `alias` (or neither for the latest)."
)
class RequestDownloadInput(OfModel):
    version: int | None = strawberry.field(default=None, description="A version number.")
    alias: str | None = strawberry.field(
        default=None, description="An alias, resolved to its version when the ticket is issued."
    )
    mode: DownloadMode = strawberry.field(default=DownloadMode.STREAM, description="STREAM or PRESIGNED.")
    expires_in: int | None = strawberry.field(
        default=None, description="Seconds the URL stays valid: 1..86400, default 900."
    )
    resumes: strawberry.ID | None = strawberry.field(
        default=None,
        description="The id of an earlier, unfinished download of this version by the same requester that "
        "this one continues (send `Range: bytes=<bytes you have>-`): the download that delivers the last "
        "byte of the chain is counted once, as one completed download.",
    )


@strawberry.input(
    description="An artifact to upload: its size and SHA-256 (the bytes are checked against both), and the "
    "version it will register."
)
class RequestUploadInput:
    name: str = strawberry.field(description="The model; its first version creates it.")
    project_name: str = strawberry.field(description="The model's project.")
    size_bytes: Long = strawberry.field(description="The file's exact size in bytes.")
    sha256: str = strawberry.field(description="The file's SHA-256 (64 hex digits).")
    filename: str = strawberry.field(default="model.bin", description="The artifact's file name.")
    content_type: str = strawberry.field(
        default="application/octet-stream", description="The artifact's media type."
    )
    version: int | None = strawberry.field(default=None, description="Omit to take the next free version.")
    description: str | None = strawberry.field(default=None, description="Free text about the version.")
    tags: list[str] | None = strawberry.field(default=None, description="Up to 64 labels.")
    metadata: JSON | None = strawberry.field(default=None, description="A JSON object of at most 64 KB.")


@strawberry.input(description="Finishes an upload whose bytes have all been PUT.")
class CompleteUploadInput:
    upload_id: strawberry.ID = strawberry.field(description="`UploadTicket.uploadId`.")
    part_etags: list[str] | None = strawberry.field(
        default=None,
        description="Multipart uploads only: the `ETag` response header of each part's PUT, in part order.",
    )


@strawberry.input(description="A client's verdict on the SHA-256 of a download it received.")
class ReportDownloadVerificationInput:
    download: strawberry.ID = strawberry.field(description="The download (its DownloadEvent id).")
    sha256_matches: bool = strawberry.field(description="Whether the bytes' SHA-256 equals the version's.")

"""Uploading artifacts: `requestUpload` (where to PUT the bytes), the local store's PUT through the app,
`completeUpload` (verify and register the version), and the cleanup of abandoned uploads."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from bson import ObjectId
from bson.errors import InvalidId

from . import registry
from .auth import Principal
from .db import models as models_db
from .db import uploads as uploads_db
from .documents import ModelVersion, Upload, UploadStatus, utcnow
from .errors import (
    InvalidInput,
    ModelVersionAlreadyExists,
    StorageObjectNotFound,
    TicketInvalid,
    TicketProblem,
    UploadAlreadyReceived,
    UploadInProgress,
    UploadNotFound,
)
from .roles import ProjectRole
from .scope import Scope
from .services import Services
from .storage import StorageScope, UploadSpec, UploadTarget, validate_key
from .storage.local import UPLOAD_TOKEN_PURPOSE

log = logging.getLogger("modelhub.uploads")
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000
_FILENAME_FORBIDDEN = set("/\\\x00")


@dataclass(kw_only=True)
class UploadRequest(registry.VersionRequest):
    """A new version whose artifact the caller uploads: its size and SHA-256 are required."""

    size_bytes: int
    filename: str = "model.bin"
    content_type: str = "application/octet-stream"

    def validate(self) -> None:
        super().validate()
        if self.sha256 is None:
            raise InvalidInput("sha256", "is required for an upload")
        if self.size_bytes < 0:
            raise InvalidInput("sizeBytes", "must not be negative")
        if not self.filename or len(self.filename) > 255 or set(self.filename) & _FILENAME_FORBIDDEN:
            raise InvalidInput("filename", "must be 1 to 255 characters without / or \\")
        if self.filename in (".", ".."):
            raise InvalidInput("filename", "must be a file name")
        if not self.content_type or len(self.content_type) > 255 or not self.content_type.isascii():
            raise InvalidInput("contentType", "must be a media type such as application/octet-stream")


@dataclass(frozen=True)
class OpenUpload:
    upload: Upload
    target: UploadTarget


def _part_bytes(services: Services, size: int) -> int | None:
    settings = services.settings
    if services.store.kind != "s3" or size <= settings.multipart_threshold_bytes:
        return None
    part = max(settings.upload_part_bytes, MIN_PART_BYTES, -(-size // MAX_PARTS))
    return part


async def _check_may_add(req: UploadRequest, who: Principal, scope: Scope) -> None:
    """What registration will check, checked before any byte moves: the project, the owner, the number."""
    registry.require_project_role(req.project_name, who, ProjectRole.ENGINEER, "uploading a model")
    model = await models_db.find_model(req.name)
    if model is not None and not scope.can_read(model.project_name):
        raise InvalidInput("name", f"the model name {req.name!r} is taken")
    if model is not None:
        registry.check_joins(model, req, who)
    if req.version is not None and await models_db.find_version(req.name, req.version) is not None:
        raise ModelVersionAlreadyExists(req.name, req.version)


async def request_upload(
    services: Services, req: UploadRequest, who: Principal, scope: Scope, base_url: str
) -> OpenUpload:
    """Records an open upload and prepares where its bytes go (the server's own bucket and prefix): for an
    ENGINEER of the project only, so no upload target is issued for a project the caller cannot write."""
    req.validate()
    settings = services.settings
    if req.size_bytes > settings.max_upload_bytes:
        raise InvalidInput(
            "sizeBytes", f"must be at most {settings.max_upload_bytes} bytes (MODELHUB_MAX_UPLOAD_BYTES)"
        )
    await _check_may_add(req, who, scope)
    upload_id = ObjectId()
    key = f"{settings.upload_prefix.strip('/')}/{req.name}/{upload_id}/{req.filename}"
    validate_key(key, "filename")
    seconds = settings.upload_expires_seconds
    part_bytes = _part_bytes(services, req.size_bytes)
    assert req.sha256 is not None  # validated
    spec = UploadSpec(
        str(upload_id), settings.upload_bucket, key, req.size_bytes, req.sha256, req.content_type, seconds,
        part_bytes,
    )  # fmt: skip
    target = await services.store.begin_upload(spec)
    if target.url is not None and target.url.startswith("/"):
        target = UploadTarget(base_url + target.url, target.parts, target.headers, target.multipart_id)
    upload = Upload(
        id=upload_id,
        **req.notes(),
        version=req.version,
        bucket=settings.upload_bucket,
        key=key,
        size_bytes=req.size_bytes,
        sha256=req.sha256,
        content_type=req.content_type,
        multipart_id=target.multipart_id,
        part_bytes=part_bytes,
        expires_at=utcnow() + timedelta(seconds=seconds),
    )
    await uploads_db.insert(upload)
    return OpenUpload(upload, target)


def _upload_id(value: str) -> ObjectId:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise UploadNotFound(str(value)[:40], "is not an upload id") from None


async def _open(upload_id: ObjectId, who: Principal | None = None) -> Upload:
    upload = await uploads_db.get(upload_id)
    if upload is None or upload.status is UploadStatus.EXPIRED or upload.expires_at <= utcnow():
        raise UploadNotFound(str(upload_id))
    if who is not None and who.engineer != upload.owner and not who.is_admin:
        raise UploadNotFound(str(upload_id))  # someone else's upload: not disclosed
    return upload


async def receive(services: Services, token: str, body: AsyncIterator[bytes]) -> Upload:
    """`PUT /uploads/<token>` on the local store: the body is verified (size, SHA-256) and put in place.
    Each PUT stages its own file and the store links the first verified one into place, once; any other
    PUT, later, is UploadAlreadyReceived and changes nothing; one while another is being received here is
    UploadInProgress (409)."""
    payload = services.signer.verify(UPLOAD_TOKEN_PURPOSE, token)
    upload = await _open(_upload_id(str(payload.get("u"))))
    if upload.received:
        raise UploadAlreadyReceived(str(upload.id))
    if upload.status is not UploadStatus.PENDING:
        raise TicketInvalid("this upload is closed", TicketProblem.USED)
    upload_id = str(upload.id)
    if upload_id in services.receiving:  # no await since the check: one PUT per upload at a time here
        raise UploadInProgress(upload_id)
    services.receiving.add(upload_id)
    try:
        await services.store.receive(
            upload_id, upload.bucket, upload.key, body, upload.size_bytes, upload.sha256
        )
    finally:
        services.receiving.discard(upload_id)
    await uploads_db.update(
        upload.id, {"status": UploadStatus.PENDING.value, "received": False}, {"received": True}
    )
    return upload


async def complete_upload(
    services: Services, upload_id: str, part_etags: list[str] | None, who: Principal, scope: Scope
) -> ModelVersion:
    """Assembles (multipart), checks the object's size and SHA-256 where the store holds it, and registers
    the version (its checksum verified now, or hashed in the background). Completing twice returns the
    same version."""
    if part_etags is not None and len(part_etags) > MAX_PARTS:
        raise InvalidInput("partEtags", f"at most {MAX_PARTS} parts")
    upload = await _open(_upload_id(upload_id), who)
    registry.require_project_role(upload.project_name, who, ProjectRole.ENGINEER, "uploading a model")
    if upload.status is UploadStatus.COMPLETED and upload.registered_version is not None:
        found = await models_db.find_version(upload.name, upload.registered_version)
        if found is not None:
            return found
    if await registry.used_elsewhere(scope, upload.bucket, upload.key):
        # Never the case for a location the server chose, but were it another project's object, it is
        # neither assembled, nor aborted (deleted) on a size mismatch, nor registered: refused as missing.
        raise StorageObjectNotFound(upload.bucket, upload.key)
    if upload.multipart_id is not None:
        expected_parts = -(-upload.size_bytes // (upload.part_bytes or 1))
        if not part_etags or len(part_etags) != expected_parts:
            raise InvalidInput("partEtags", f"give the ETags of all {expected_parts} parts, in part order")
        await services.store.complete_upload(upload.bucket, upload.key, upload.multipart_id, part_etags)
    if services.store.kind == "local" and not upload.received:
        # Only bytes our PUT verified and put in place (and recorded their SHA-256 for) are registered; a
        # file that appeared at the upload's key some other way is not.
        raise StorageObjectNotFound(upload.bucket, upload.key)
    info = await services.store.head(upload.bucket, upload.key)  # StorageObjectNotFound: nothing was PUT
    if info.size != upload.size_bytes:
        await services.store.abort_upload(upload.bucket, upload.key, upload.multipart_id)
        await uploads_db.update(upload.id, {}, {"status": UploadStatus.EXPIRED.value})
        raise InvalidInput(
            "sizeBytes", f"the uploaded object has {info.size} bytes, not the declared {upload.size_bytes}"
        )
    request = registry.RegisterRequest(
        **upload.notes(), version=upload.version, sha256=upload.sha256, bucket=upload.bucket, key=upload.key
    )
    # The server chose this location itself: MODELHUB_ALLOWED_STORAGE governs what users point at.
    version = await registry.register(services, request, who, scope, StorageScope(None))
    await uploads_db.update(
        upload.id, {}, {"status": UploadStatus.COMPLETED.value, "registered_version": version.version}
    )
    return version


async def expire_abandoned(services: Services) -> int:
    """Cleans up uploads left open past their expiry: parts aborted, objects deleted, marked EXPIRED."""
    count = 0
    async for upload in uploads_db.expired(utcnow()):
        with contextlib.suppress(StorageObjectNotFound):
            await services.store.abort_upload(upload.bucket, upload.key, upload.multipart_id)
        if await uploads_db.update(upload.id, {"status": UploadStatus.PENDING.value}, {"status": "EXPIRED"}):
            count += 1
    if count:
        log.info("cleaned up %d abandoned uploads", count)
    return count

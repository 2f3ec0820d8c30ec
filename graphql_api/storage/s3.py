"""The S3 object store (AWS, MinIO, moto) over one long-lived aioboto3 client."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..config import Settings
from ..errors import InvalidInput, StorageObjectNotFound, StorageUnavailable
from . import (
    Claims,
    ObjectInfo,
    UploadPart,
    UploadSpec,
    UploadTarget,
    content_disposition,
    validate_bucket,
    validate_key,
)

log = logging.getLogger("modelhub.storage")
_MISSING = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}


def _store_error(exc: ClientError | BotoCoreError, bucket: str, key: str) -> Exception:
    """The domain error for a failed S3 call: a missing object or bucket, or the store being unavailable."""
    if isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in _MISSING:
        return StorageObjectNotFound(bucket, key)
    log.warning("S3 call for s3://%s/%s failed: %s", bucket, key, exc)
    # The driver's text names the endpoint: it stays in the server log, not in what clients see.
    return StorageUnavailable(f"the object store failed ({type(exc).__name__})")


def full_object_sha256(head: dict[str, Any], etag: str) -> str | None:
    """The object's SHA-256 from a HEAD with checksum mode, only when it is the whole object's: a
    single-part upload (no `-N` in the ETag) whose checksum is not COMPOSITE. A multipart object's
    checksum is a hash of its parts' hashes, not the file's; such objects are hashed by the app."""
    value = head.get("ChecksumSHA256")
    if not value or head.get("ChecksumType") == "COMPOSITE" or "-" in etag or "-" in str(value):
        return None
    try:
        raw = base64.b64decode(str(value), validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


class S3ObjectStore:
    kind = "s3"

    def __init__(self, client: Any, chunk_bytes: int = 1024 * 1024, presign_client: Any = None) -> None:
        self._client = client
        self._chunk = chunk_bytes
        self._presign = presign_client or client

    @classmethod
    async def open(cls, settings: Settings, stack: AsyncExitStack) -> S3ObjectStore:
        """Opens the client for the app's lifetime; `stack` closes it on shutdown."""
        session = aioboto3.Session()
        # Calls that answer at once (HEAD, the start of a GET) are bounded by the store guard's timeout; the
        # read timeout bounds a stall in the middle of a body: a download waits it out, then fails.
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,
            connect_timeout=settings.store_timeout_seconds / 2,
            read_timeout=settings.store_read_timeout_seconds,
        )
        kwargs: dict[str, Any] = {
            "endpoint_url": settings.s3_endpoint_url,
            "region_name": settings.s3_region,
            "config": config,
        }
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            kwargs["aws_access_key_id"] = settings.s3_access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
        client = await stack.enter_async_context(session.client("s3", **kwargs))
        presign = None
        if settings.s3_public_endpoint_url:  # signing needs no connection: this client never opens one
            public = {**kwargs, "endpoint_url": settings.s3_public_endpoint_url}
            presign = await stack.enter_async_context(session.client("s3", **public))
        return cls(client, settings.stream_chunk_bytes, presign)

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        try:
            resp = await self._client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc, bucket, key) from exc
        etag = str(resp.get("ETag", ""))
        return ObjectInfo(
            size=int(resp["ContentLength"]),
            etag=etag,
            content_type=str(resp.get("ContentType") or "application/octet-stream"),
            sha256=full_object_sha256(resp, etag),
        )

    async def open_range(
        self, bucket: str, key: str, start: int, end: int, *, whole: bool = False
    ) -> AsyncIterator[bytes]:
        # One GET for the whole range: S3 streams it, and ranged sub-requests would cost a round trip each.
        # A whole-object read sends no Range (some servers, moto among them, copy the object for a Range).
        extra = {} if whole else {"Range": f"bytes={start}-{end}"}
        try:
            resp = await self._client.get_object(Bucket=bucket, Key=key, **extra)
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc, bucket, key) from exc
        body = resp["Body"]
        remaining = end - start + 1
        try:
            async with body:
                while remaining > 0:
                    chunk = await body.read(min(self._chunk, remaining))
                    if not chunk:
                        raise StorageUnavailable(f"the object ended {remaining} bytes early")
                    remaining -= len(chunk)
                    yield chunk
        except (TimeoutError, BotoCoreError, OSError, ClientError, aiohttp.ClientError) as exc:
            # aiohttp raises ClientPayloadError (store gone mid-body) and read timeouts, not botocore.
            log.warning("reading s3://%s/%s failed: %s", bucket, key, exc)
            raise StorageUnavailable(f"reading the object failed ({type(exc).__name__})") from exc

    async def presign_get(
        self, bucket: str, key: str, expires_in: int, filename: str, *, claims: Claims | None = None
    ) -> str:
        validate_bucket(bucket)
        validate_key(key)
        url = await self._presign.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": bucket,
                "Key": key,
                "ResponseContentDisposition": content_disposition(filename),
            },
            ExpiresIn=expires_in,
        )
        return str(url)

    async def _ensure_bucket(self, bucket: str) -> None:
        try:
            await self._client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in _MISSING:
                raise
            with contextlib.suppress(ClientError):  # created meanwhile, or not ours to create: PUTs will say
                await self._client.create_bucket(Bucket=bucket)

    async def begin_upload(self, spec: UploadSpec) -> UploadTarget:
        """A presigned PUT signed with the file's `x-amz-checksum-sha256` (S3 rejects other bytes), or a
        multipart upload with one presigned URL per part (its full SHA-256 is verified after completion)."""
        try:
            await self._ensure_bucket(spec.bucket)
            if spec.part_bytes is None:
                checksum = base64.b64encode(bytes.fromhex(spec.sha256)).decode()
                params = {
                    "Bucket": spec.bucket,
                    "Key": spec.key,
                    "ContentType": spec.content_type,
                    "ChecksumSHA256": checksum,
                }
                url = await self._presign.generate_presigned_url(
                    "put_object", Params=params, ExpiresIn=spec.expires_in
                )
                headers = (("content-type", spec.content_type), ("x-amz-checksum-sha256", checksum))
                return UploadTarget(url=str(url), headers=headers)
            created = await self._client.create_multipart_upload(
                Bucket=spec.bucket, Key=spec.key, ContentType=spec.content_type
            )
            upload_id = str(created["UploadId"])
            parts = []
            for number, offset in enumerate(range(0, spec.size, spec.part_bytes), start=1):
                part = {"Bucket": spec.bucket, "Key": spec.key, "UploadId": upload_id, "PartNumber": number}
                url = await self._presign.generate_presigned_url(
                    "upload_part", Params=part, ExpiresIn=spec.expires_in
                )
                parts.append(UploadPart(number, str(url), min(spec.part_bytes, spec.size - offset)))
            return UploadTarget(url=None, parts=tuple(parts), multipart_id=upload_id)
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc, spec.bucket, spec.key) from exc

    async def complete_upload(
        self, bucket: str, key: str, multipart_id: str | None, etags: list[str]
    ) -> None:
        if multipart_id is None:
            return
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
        try:
            await self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=multipart_id, MultipartUpload={"Parts": parts}
            )
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {
                "InvalidPart",
                "InvalidPartOrder",
                "NoSuchUpload",
            }:
                raise StorageObjectNotFound(bucket, key) from exc
            raise _store_error(exc, bucket, key) from exc
        except BotoCoreError as exc:
            raise _store_error(exc, bucket, key) from exc

    async def abort_upload(self, bucket: str, key: str, multipart_id: str | None) -> None:
        try:
            if multipart_id is not None:
                with contextlib.suppress(ClientError):  # already completed or aborted
                    await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=multipart_id)
            await self._client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc, bucket, key) from exc

    async def delete_object(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        try:  # S3 answers a delete of a missing key with success: idempotent as it is
            await self._client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc, bucket, key) from exc

    async def receive(
        self, upload_id: str, bucket: str, key: str, body: AsyncIterator[bytes], size: int, sha256: str
    ) -> ObjectInfo:
        raise InvalidInput("upload", "this object store takes uploads on the presigned URLs of requestUpload")

    async def ping(self) -> None:
        """Whether the store answers at all: an error response (say, credentials that may not list buckets)
        is still an answer; a connection failure or a timeout is not."""
        try:
            await self._client.list_buckets()
        except ClientError:
            return
        except BotoCoreError as exc:
            raise StorageUnavailable(f"the object store failed ({type(exc).__name__})") from exc

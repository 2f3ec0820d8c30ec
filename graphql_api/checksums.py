"""Artifact checksums: what registration verifies at once, the background verifier that hashes the rest in
constant memory, and the checks that refuse a download of an artifact that is not what was registered."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from datetime import timedelta
from typing import Any

import anyio.to_thread
from pymongo.errors import PyMongoError

from .db import models as models_db
from .documents import ChecksumStatus, ModelVersion, utcnow
from .errors import (
    ArtifactChanged,
    ChecksumMismatch,
    ChecksumPending,
    InvalidInput,
    StorageObjectNotFound,
    StorageUnavailable,
)
from .storage import ObjectInfo, ObjectStore

log = logging.getLogger("modelhub.checksums")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# How long one worker may hold a version it is hashing before another may take it over.
LEASE_SECONDS = 600.0
# Versions hashed at once by one verifier pass (settings.checksum_concurrency): each mostly waits on the
# store and the database, and hashing runs in threads, so large objects are verified side by side.
VERIFY_CONCURRENCY = 2


def validate_sha256(value: str | None, field: str = "sha256") -> str | None:
    if value is None:
        return None
    digest = value.strip().lower()
    if not _SHA256.match(digest):
        raise InvalidInput(field, "must be a SHA-256: 64 hexadecimal digits")
    return digest


def initial_fields(expected: str | None, info: ObjectInfo) -> dict[str, Any]:
    """A new version's checksum fields: verified now when the store holds the object's full SHA-256
    (a mismatch refuses the registration), else PENDING for the verifier."""
    if info.sha256 is not None:
        if expected is not None and expected != info.sha256:
            raise ChecksumMismatch(expected, info.sha256)
        return {"sha256": info.sha256, "checksum_status": ChecksumStatus.VERIFIED}
    return {"expected_sha256": expected, "checksum_status": ChecksumStatus.PENDING}


def check_servable(version: ModelVersion, info: ObjectInfo) -> None:
    """Refuses a download whose bytes are known to be wrong, or whose object changed since registration."""
    if version.checksum_status is ChecksumStatus.MISMATCH:
        raise ChecksumMismatch(version.expected_sha256 or "?", version.sha256 or "?")
    if info.etag != version.etag:
        raise ArtifactChanged(version.name, version.version, version.etag, info.etag)


# How long a download that hashes a PENDING version holds its lease (short: a client that leaves mid-hash
# must not keep the version unservable for long), how long others wait for that verdict, and how often
# they look.
ON_DEMAND_LEASE_SECONDS = 60.0
WAIT_FOR_VERDICT_SECONDS = 10.0
POLL_SECONDS = 0.25


def vouched(version: ModelVersion, info: ObjectInfo) -> bool:
    """Whether the bytes may be served without hashing them: verified, or nothing declared to check them
    against (the verifier would find them VERIFIED whatever they are: the ETag check is what holds), or
    the store now holds a full-object SHA-256 for this very object (the same ETag) equal to the declared
    one (S3 with a full-object checksum; the local store for bytes its own upload verified)."""
    if version.checksum_status is not ChecksumStatus.PENDING or version.expected_sha256 is None:
        return True
    return info.etag == version.etag and info.sha256 == version.expected_sha256


async def ensure_servable(
    store: ObjectStore, version: ModelVersion, info: ObjectInfo, verify_max_bytes: int
) -> None:
    """`check_servable`, and a PENDING version's declared SHA-256 checked before a byte is served: the
    download hashes the object itself (one at a time per version, under the verifier's lease) up to
    `verify_max_bytes`, or waits a moment for whoever holds the lease; otherwise ChecksumPending."""
    check_servable(version, info)
    if vouched(version, info):
        return
    if info.sha256 is not None and info.etag == version.etag:
        raise ChecksumMismatch(version.expected_sha256 or "?", info.sha256)
    if info.size <= verify_max_bytes:
        until = utcnow() + timedelta(seconds=ON_DEMAND_LEASE_SECONDS)
        leased = await models_db.lease_checksum(version.id, None, until)
        if leased is not None:
            await verify(store, leased)
        deadline = asyncio.get_running_loop().time() + WAIT_FOR_VERDICT_SECONDS
        while True:
            now = await models_db.get_version(version.id)
            if now is None or now.checksum_status is not ChecksumStatus.PENDING:
                break
            if leased is not None or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
        if now is not None and now.checksum_status is ChecksumStatus.VERIFIED:
            check_servable(now, info)
            return
        if now is not None and now.checksum_status is ChecksumStatus.MISMATCH:
            raise ChecksumMismatch(now.expected_sha256 or "?", now.sha256 or "?")
        if now is not None and now.checksum_status is ChecksumStatus.UNAVAILABLE:
            raise StorageObjectNotFound(version.bucket, version.key)  # could not be read to be hashed
    raise ChecksumPending(version.name, version.version, 5.0 if info.size <= verify_max_bytes else 60.0)


async def hash_object(store: ObjectStore, bucket: str, key: str, size: int) -> str:
    """The object's SHA-256, read as a stream (one chunk in memory at a time, hashed off the event loop)."""
    digest = hashlib.sha256()
    if size > 0:
        async for chunk in store.open_range(bucket, key, 0, size - 1, whole=True):
            await anyio.to_thread.run_sync(digest.update, chunk)
    return digest.hexdigest()


async def verify(store: ObjectStore, version: ModelVersion) -> ChecksumStatus:
    """Hashes one PENDING version's object and records the verdict; StorageUnavailable leaves it PENDING."""
    fields: dict[str, Any]
    try:
        info = await store.head(version.bucket, version.key)
        if info.etag != version.etag:
            raise ArtifactChanged(version.name, version.version, version.etag, info.etag)
        actual = info.sha256 or await hash_object(store, version.bucket, version.key, info.size)
    except (StorageObjectNotFound, ArtifactChanged) as exc:
        fields = {"checksum_status": ChecksumStatus.UNAVAILABLE, "checksum_error": exc.message}
    else:
        expected = version.expected_sha256
        status = ChecksumStatus.VERIFIED if expected in (None, actual) else ChecksumStatus.MISMATCH
        fields = {"sha256": actual, "checksum_status": status}
        if status is ChecksumStatus.MISMATCH:
            fields["checksum_error"] = f"the object's SHA-256 is {actual}, not the declared {expected}"
            log.warning("model %s version %d: %s", version.name, version.version, fields["checksum_error"])
    await models_db.finish_checksum(version.id, fields)
    return ChecksumStatus(fields["checksum_status"])


async def verify_pending(store: ObjectStore, limit: int = 200, concurrency: int = VERIFY_CONCURRENCY) -> int:
    """Verifies up to `limit` PENDING versions, `concurrency` at a time, each leased so that workers do not
    hash the same one; the pending list is read once for them all. An outage (storage or database) stops
    the pass: what is left stays PENDING for the next one."""
    queue = iter((await models_db.pending_checksums(utcnow()))[:limit])
    done = 0
    stopped = False

    async def worker() -> None:
        nonlocal done, stopped
        for version_id, seen in queue:  # one iterator shared by the workers: each version taken once
            if stopped:
                return
            now = utcnow()
            version = await models_db.lease_checksum(version_id, seen, now + timedelta(seconds=LEASE_SECONDS))
            if version is None:
                continue  # another worker has it
            try:
                await verify(store, version)
            except (StorageUnavailable, PyMongoError) as exc:
                log.warning(
                    "verifying %s v%d postponed: %s", version.name, version.version, type(exc).__name__
                )
                stopped = True
                return
            done += 1

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return done

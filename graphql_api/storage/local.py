"""The local object store: `s3://bucket/key` kept at `<root>/<bucket>/<key>`, presigned by the app.

Files it writes itself (uploads) get a SHA-256 record at `<root>/.modelhub/sha256/<bucket>/<key>` with
the ETag it was computed for, so it holds a full-object checksum the way S3 does for a single-part PUT
with `x-amz-checksum-sha256`; a file copied in by hand has none until it is hashed. (`.modelhub` cannot
be a bucket: bucket names start with a letter or digit.)"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread

from ..errors import (
    ChecksumMismatch,
    InvalidInput,
    StorageObjectNotFound,
    StorageUnavailable,
    UploadAlreadyReceived,
)
from ..signing import Signer
from . import Claims, ObjectInfo, UploadSpec, UploadTarget, validate_bucket, validate_key

OBJECT_TOKEN_PURPOSE = "object"
UPLOAD_TOKEN_PURPOSE = "upload"


def file_etag(st: os.stat_result) -> str:
    """A local object's ETag: size and mtime change whenever the bytes do, without hashing the file."""
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under the root must not hang a worker thread.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_STAGING = (".modelhub", "uploads")
_CHECKSUMS = (".modelhub", "sha256")


class LocalObjectStore:
    """Every path under the root is walked one component at a time, each opened relative to its parent with
    O_NOFOLLOW: a symbolic link anywhere below the root (the file, or any directory on the way) reads as a
    missing object, whether it leads out of the store or to another object in it, and no check-then-open
    race can swap one in (the root itself is the operator's choice and may be a link)."""

    kind = "local"

    def __init__(self, root: Path, signer: Signer, chunk_bytes: int = 1024 * 1024) -> None:
        self.root = root
        self._signer = signer
        self._chunk = chunk_bytes

    def path_of(self, bucket: str, key: str) -> Path:
        validate_bucket(bucket)
        validate_key(key)
        return self.root / bucket / key

    def _dir_fd(self, parts: tuple[str, ...] | list[str], *, create: bool = False) -> int:
        """An open descriptor of `<root>/<parts...>`, refusing a symlink at every step (ELOOP/ENOTDIR:
        an OSError, like a missing directory); `create` makes the missing ones."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_file(self, parts: list[str]) -> int:
        """An open descriptor of the regular file `<root>/<parts...>`, no symlink on the way (OSError)."""
        parent = self._dir_fd(parts[:-1])
        try:
            fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IsADirectoryError(parts[-1])
        return fd

    def _object_parts(self, bucket: str, key: str) -> list[str]:
        self.path_of(bucket, key)  # validates both names
        return [bucket, *key.split("/")]

    def _open_object(self, bucket: str, key: str) -> int:
        try:
            return self._open_file(self._object_parts(bucket, key))
        except OSError as exc:  # missing, a symlink (ELOOP), a file where a directory should be, a FIFO...
            raise StorageObjectNotFound(bucket, key) from exc

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        def look() -> tuple[os.stat_result, str | None]:
            # One thread hop for the stat and the checksum record: HEAD is on every download's path.
            fd = self._open_object(bucket, key)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            return st, self._recorded_sha256(bucket, key, file_etag(st))

        st, sha256 = await anyio.to_thread.run_sync(look)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return ObjectInfo(st.st_size, file_etag(st), content_type, sha256)

    def _recorded_sha256(self, bucket: str, key: str, etag: str) -> str | None:
        try:
            fd = self._open_file([*_CHECKSUMS, bucket, *key.split("/")])
            with os.fdopen(fd, "r") as fh:
                recorded_etag, sha256 = fh.read(200).split()
        except (OSError, ValueError):
            return None
        return sha256 if recorded_etag == etag else None

    async def begin_upload(self, spec: UploadSpec) -> UploadTarget:
        """An app URL (`PUT /uploads/<token>`) standing in for S3's presigned PUT; the app streams the body
        to a staging file, checks size and SHA-256, and moves it into place."""
        self.path_of(spec.bucket, spec.key)
        token = self._signer.sign(UPLOAD_TOKEN_PURPOSE, {"u": spec.upload_id}, time.time() + spec.expires_in)
        return UploadTarget(url=f"/uploads/{token}")

    async def complete_upload(
        self, bucket: str, key: str, multipart_id: str | None, etags: list[str]
    ) -> None:
        return None  # the app's PUT already put the verified file in place

    async def abort_upload(self, bucket: str, key: str, multipart_id: str | None) -> None:
        await self.delete_object(bucket, key)

    async def delete_object(self, bucket: str, key: str) -> None:
        """Removes the file and its recorded SHA-256; a missing one (or a link) is left as it is."""
        parts = self._object_parts(bucket, key)

        def remove() -> None:
            for path in (parts, [*_CHECKSUMS, *parts]):
                try:
                    parent = self._dir_fd(path[:-1])
                except OSError:
                    continue  # missing, or through a symlink: nothing of ours to remove
                try:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path[-1], dir_fd=parent)  # removes a link itself, never its target
                finally:
                    os.close(parent)

        await anyio.to_thread.run_sync(remove)

    async def receive(
        self, upload_id: str, bucket: str, key: str, body: AsyncIterator[bytes], size: int, sha256: str
    ) -> ObjectInfo:
        """Streams an upload's body to a staging file of its own (constant memory; a unique name, so that
        concurrent PUTs never share one), then checks its size and SHA-256, and only then links it into
        place, once: a link fails when the object exists, so a concurrent or later PUT cannot replace bytes
        already verified (UploadAlreadyReceived). Anything wrong leaves nothing behind."""
        parts = self._object_parts(bucket, key)
        name = f"{upload_id}.{secrets.token_hex(8)}.part"
        staging = await anyio.to_thread.run_sync(lambda: self._dir_fd(_STAGING, create=True))
        digest = hashlib.sha256()
        received = 0
        pending = bytearray()

        def write(fh: BinaryIO, block: bytes) -> None:  # off the event loop: hashing and disk together
            digest.update(block)
            fh.write(block)

        try:
            fd = await anyio.to_thread.run_sync(lambda: os.open(name, _NEW_FILE_FLAGS, 0o644, dir_fd=staging))
            with os.fdopen(fd, "wb") as fh:
                async for chunk in body:
                    received += len(chunk)
                    if received > size:
                        raise InvalidInput("body", f"the upload is longer than the declared {size} bytes")
                    pending += chunk
                    if len(pending) >= self._chunk:  # the server hands over ~64 KB at a time: batched
                        await anyio.to_thread.run_sync(write, fh, bytes(pending))
                        pending.clear()
                await anyio.to_thread.run_sync(write, fh, bytes(pending))
            if received != size:
                raise InvalidInput("body", f"the upload has {received} bytes, not the declared {size}")
            if digest.hexdigest() != sha256:
                raise ChecksumMismatch(sha256, digest.hexdigest(), "the uploaded file")
            await anyio.to_thread.run_sync(self._place, staging, name, parts, sha256, upload_id)
            return await self.head(bucket, key)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=staging)
            os.close(staging)

    def _place(self, staging: int, name: str, parts: list[str], sha256: str, upload_id: str) -> None:
        """Links a verified staged file into place (failing if the object exists: the first verified PUT
        wins, atomically) and records its SHA-256 for the ETag it has."""
        try:
            parent = self._dir_fd(parts[:-1], create=True)
        except OSError as exc:  # a symlink or a file on the way: never written through
            raise StorageUnavailable("the local store cannot put the upload in place") from exc
        try:
            os.link(name, parts[-1], src_dir_fd=staging, dst_dir_fd=parent, follow_symlinks=False)
        except FileExistsError:
            raise UploadAlreadyReceived(upload_id) from None
        finally:
            os.close(parent)
        self._record(parts, file_etag(os.stat(name, dir_fd=staging, follow_symlinks=False)), sha256)

    def _record(self, parts: list[str], etag: str, sha256: str) -> None:
        directory = self._dir_fd([*_CHECKSUMS, *parts[:-1]], create=True)
        try:
            tmp = f".{parts[-1]}.{secrets.token_hex(8)}.tmp"
            with os.fdopen(os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=directory), "w") as fh:
                fh.write(f"{etag} {sha256}\n")
            os.replace(tmp, parts[-1], src_dir_fd=directory, dst_dir_fd=directory)
        finally:
            os.close(directory)

    async def open_range(
        self, bucket: str, key: str, start: int, end: int, *, whole: bool = False
    ) -> AsyncIterator[bytes]:
        remaining = end - start + 1

        def first_read() -> tuple[BinaryIO, bytes]:
            # One thread hop for the open, the seek and the first chunk (all of a small object).
            fh = os.fdopen(self._open_object(bucket, key), "rb")
            try:
                fh.seek(start)
                return fh, fh.read(min(self._chunk, remaining))
            except BaseException:
                fh.close()
                raise

        chunk: bytes | None
        try:
            fh, chunk = await anyio.to_thread.run_sync(first_read)
        except OSError as exc:
            raise StorageUnavailable("reading the object from the local store failed") from exc
        try:
            while remaining > 0:
                if chunk is None:
                    try:
                        chunk = await anyio.to_thread.run_sync(fh.read, min(self._chunk, remaining))
                    except OSError as exc:
                        raise StorageUnavailable("reading the object from the local store failed") from exc
                if not chunk:  # it shrank while being read
                    raise StorageUnavailable(f"the object ended {remaining} bytes early")
                remaining -= len(chunk)
                yield chunk
                chunk = None
        finally:
            fh.close()

    async def presign_get(
        self, bucket: str, key: str, expires_in: int, filename: str, *, claims: Claims | None = None
    ) -> str:
        await self.head(bucket, key)  # a link is signed only for an object the store would serve
        token = self._signer.sign(
            OBJECT_TOKEN_PURPOSE,
            {**(claims or {}), "b": bucket, "k": key, "fn": filename},
            time.time() + expires_in,
        )
        return f"/objects/{token}"

    async def ping(self) -> None:
        await anyio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))
        if not os.access(self.root, os.R_OK):
            raise StorageUnavailable("the local object store is not readable")

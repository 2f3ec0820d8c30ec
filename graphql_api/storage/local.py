"""The local object store: `s3://bucket/key` kept at `<root>/<bucket>/<key>`, presigned by the app.

Files it writes itself (uploads) get a SHA-256 record at `<root>/.modelhub/sha256/<bucket>/<key>` with
the ETag it was computed for, so it holds a full-object checksum the way S3 does for a single-part PUT
with `x-amz-checksum-sha256`; a file copied in by hand has none until it is hashed. (`.modelhub` cannot
be a bucket: bucket names start with a letter or digit.)"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread

from ..errors import ChecksumMismatch, InvalidInput, StorageObjectNotFound, StorageUnavailable
from ..signing import Signer
from . import Claims, ObjectInfo, UploadSpec, UploadTarget, validate_bucket, validate_key

OBJECT_TOKEN_PURPOSE = "object"
UPLOAD_TOKEN_PURPOSE = "upload"


def file_etag(st: os.stat_result) -> str:
    """A local object's ETag: size and mtime change whenever the bytes do, without hashing the file."""
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


class LocalObjectStore:
    kind = "local"

    def __init__(self, root: Path, signer: Signer, chunk_bytes: int = 1024 * 1024) -> None:
        self.root = root
        self._signer = signer
        self._chunk = chunk_bytes

    def path_of(self, bucket: str, key: str) -> Path:
        validate_bucket(bucket)
        validate_key(key)
        return self.root / bucket / key

    def _inside(self, bucket: str, key: str) -> Path:
        """The object's file, refusing (as not found) a path that symlinks lead out of the store's root."""
        path = self.path_of(bucket, key)
        real = path.resolve()
        if not real.is_relative_to(self.root.resolve()):
            raise StorageObjectNotFound(bucket, key)
        return real

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        path = self._inside(bucket, key)

        def look() -> tuple[os.stat_result, str | None]:
            # One thread hop for the stat and the checksum record: HEAD is on every download's path.
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                raise FileNotFoundError(path)
            return st, self._recorded_sha256(bucket, key, file_etag(st))

        try:
            st, sha256 = await anyio.to_thread.run_sync(look)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise StorageObjectNotFound(bucket, key) from exc
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return ObjectInfo(st.st_size, file_etag(st), content_type, sha256)

    def _checksum_path(self, bucket: str, key: str) -> Path:
        return self.root / ".modelhub" / "sha256" / bucket / key

    def _recorded_sha256(self, bucket: str, key: str, etag: str) -> str | None:
        try:
            recorded_etag, sha256 = self._checksum_path(bucket, key).read_text().split()
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
        def remove() -> None:
            for path in (self.path_of(bucket, key), self._checksum_path(bucket, key)):
                path.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(remove)

    async def receive(
        self, upload_id: str, bucket: str, key: str, body: AsyncIterator[bytes], size: int, sha256: str
    ) -> ObjectInfo:
        """Streams an upload's body to a staging file (constant memory), then checks its size and SHA-256
        and moves it into place atomically; anything wrong leaves nothing behind."""
        staged = self.staging_dir() / f"{upload_id}.part"
        digest = hashlib.sha256()
        received = 0
        pending = bytearray()

        def write(fh: BinaryIO, block: bytes) -> None:  # off the event loop: hashing and disk together
            digest.update(block)
            fh.write(block)

        try:
            with await anyio.to_thread.run_sync(open, staged, "wb") as fh:
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
            return await self.put_file(bucket, key, staged, sha256)
        finally:
            staged.unlink(missing_ok=True)

    def staging_dir(self) -> Path:
        """Where uploads are written before they are moved into place (same filesystem: atomic rename)."""
        path = self.root / ".modelhub" / "uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def put_file(self, bucket: str, key: str, source: Path, sha256: str) -> ObjectInfo:
        """Moves a verified staged file into place atomically and records its SHA-256."""
        dest = self.path_of(bucket, key)

        def move() -> None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)

        await anyio.to_thread.run_sync(move)
        info = await self.head(bucket, key)

        def record() -> None:
            path = self._checksum_path(bucket, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(f"{info.etag} {sha256}\n")
            os.replace(tmp, path)

        await anyio.to_thread.run_sync(record)
        return await self.head(bucket, key)

    async def open_range(
        self, bucket: str, key: str, start: int, end: int, *, whole: bool = False
    ) -> AsyncIterator[bytes]:
        path = self._inside(bucket, key)
        try:
            fh = await anyio.to_thread.run_sync(open, path, "rb")
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise StorageObjectNotFound(bucket, key) from exc
        try:
            await anyio.to_thread.run_sync(fh.seek, start)
            remaining = end - start + 1
            while remaining > 0:
                try:
                    chunk = await anyio.to_thread.run_sync(fh.read, min(self._chunk, remaining))
                except OSError as exc:
                    raise StorageUnavailable("reading the object from the local store failed") from exc
                if not chunk:  # it shrank while being read
                    raise StorageUnavailable(f"the object ended {remaining} bytes early")
                remaining -= len(chunk)
                yield chunk
        finally:
            fh.close()

    async def presign_get(
        self, bucket: str, key: str, expires_in: int, filename: str, *, claims: Claims | None = None
    ) -> str:
        self.path_of(bucket, key)
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

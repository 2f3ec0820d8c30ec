"""The local object store: `s3://bucket/key` kept at `<root>/<bucket>/<key>`, presigned by the app."""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread

from ..errors import StorageObjectNotFound, StorageUnavailable
from ..signing import Signer
from . import ObjectInfo, validate_bucket, validate_key

OBJECT_TOKEN_PURPOSE = "object"


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
        try:
            st = await anyio.to_thread.run_sync(os.stat, path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise StorageObjectNotFound(bucket, key) from exc
        if not path.is_file():
            raise StorageObjectNotFound(bucket, key)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        # Size and mtime change whenever the bytes do, without hashing a multi-GB file.
        return ObjectInfo(st.st_size, f'"{st.st_size:x}-{st.st_mtime_ns:x}"', content_type)

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

    async def presign_get(self, bucket: str, key: str, expires_in: int, filename: str) -> str:
        self.path_of(bucket, key)
        token = self._signer.sign(
            OBJECT_TOKEN_PURPOSE, {"b": bucket, "k": key, "fn": filename}, time.time() + expires_in
        )
        return f"/objects/{token}"

    async def ping(self) -> None:
        await anyio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))
        if not os.access(self.root, os.R_OK):
            raise StorageUnavailable("the local object store is not readable")

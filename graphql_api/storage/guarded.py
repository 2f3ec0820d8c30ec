"""An `ObjectStore` wrapper that bounds the calls which should answer at once and fails fast while the
store's watch says it is down: an outage is a typed `StorageUnavailable` within seconds, never a hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from ..errors import OUTAGE_MESSAGES, StorageUnavailable
from ..health import Watch
from . import Claims, ObjectInfo, ObjectStore, UploadSpec, UploadTarget

T = TypeVar("T")


class GuardedStore:
    def __init__(self, inner: ObjectStore, watch: Watch, timeout: float) -> None:
        self.inner = inner
        self.watch = watch
        self.timeout = timeout
        self.kind = inner.kind

    def _require_up(self) -> None:
        if not self.watch.up:
            raise StorageUnavailable(OUTAGE_MESSAGES["STORAGE_UNAVAILABLE"])

    async def _bounded(self, call: Awaitable[T]) -> T:
        if not self.watch.up:
            close = getattr(call, "close", None)
            if close is not None:
                close()  # never awaited: closed so that it does not warn
            self._require_up()
        try:
            async with asyncio.timeout(self.timeout):  # not wait_for: see health.Watch.check
                return await call
        except TimeoutError:
            raise StorageUnavailable(f"the object store did not answer within {self.timeout:g} s") from None

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        return await self._bounded(self.inner.head(bucket, key))

    async def open_range(
        self, bucket: str, key: str, start: int, end: int, *, whole: bool = False
    ) -> AsyncIterator[bytes]:
        chunks = self.inner.open_range(bucket, key, start, end, whole=whole)
        try:
            # The first chunk comes with the store's answer, so it is bounded like any call; later ones may
            # wait out a stall up to the store's read timeout.
            yield await self._bounded(anext(chunks))
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def presign_get(
        self, bucket: str, key: str, expires_in: int, filename: str, *, claims: Claims | None = None
    ) -> str:
        return await self.inner.presign_get(bucket, key, expires_in, filename, claims=claims)

    async def ping(self) -> None:
        await self.inner.ping()

    async def begin_upload(self, spec: UploadSpec) -> UploadTarget:
        return await self._bounded(self.inner.begin_upload(spec))

    async def complete_upload(
        self, bucket: str, key: str, multipart_id: str | None, etags: list[str]
    ) -> None:
        # Assembling many parts can take S3 a while: bounded only by the store's own read timeout.
        self._require_up()
        await self.inner.complete_upload(bucket, key, multipart_id, etags)

    async def receive(
        self, upload_id: str, bucket: str, key: str, body: AsyncIterator[bytes], size: int, sha256: str
    ) -> ObjectInfo:
        self._require_up()  # the body's pace is the client's: no bound here
        return await self.inner.receive(upload_id, bucket, key, body, size, sha256)

    async def abort_upload(self, bucket: str, key: str, multipart_id: str | None) -> None:
        await self._bounded(self.inner.abort_upload(bucket, key, multipart_id))

    async def delete_object(self, bucket: str, key: str) -> None:
        await self._bounded(self.inner.delete_object(bucket, key))

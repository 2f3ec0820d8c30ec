"""An `ObjectStore` wrapper that makes a client span of every call the app makes to the store (with
tracing on): which operation, which store and bucket, how long, and whether it failed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..tracing import Tracing
from . import Claims, ObjectInfo, ObjectStore, UploadSpec, UploadTarget


class TracedStore:
    def __init__(self, inner: ObjectStore, tracing: Tracing) -> None:
        self.inner = inner
        self.tracing = tracing
        self.kind = inner.kind

    @contextlib.contextmanager
    def _span(self, operation: str, bucket: str) -> Iterator[Any]:
        from opentelemetry.trace import SpanKind

        attributes = {"modelhub.store.kind": self.kind, "modelhub.store.bucket": bucket}
        with self.tracing.tracer.start_as_current_span(
            f"store {operation}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            yield span

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        with self._span("head", bucket):
            return await self.inner.head(bucket, key)

    async def open_range(
        self, bucket: str, key: str, start: int, end: int, *, whole: bool = False
    ) -> AsyncIterator[bytes]:
        from opentelemetry.trace import SpanKind, StatusCode

        # Not made current: a generator's steps run in its consumer's context, which it must not change.
        attributes = {"modelhub.store.kind": self.kind, "modelhub.store.bucket": bucket}
        span = self.tracing.tracer.start_span("store read", kind=SpanKind.CLIENT, attributes=attributes)
        chunks = self.inner.open_range(bucket, key, start, end, whole=whole)
        read = 0
        try:
            async for chunk in chunks:
                read += len(chunk)
                yield chunk
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR)
            raise
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            span.set_attribute("modelhub.store.bytes_read", read)
            span.end()

    async def presign_get(
        self, bucket: str, key: str, expires_in: int, filename: str, *, claims: Claims | None = None
    ) -> str:
        with self._span("presign", bucket):
            return await self.inner.presign_get(bucket, key, expires_in, filename, claims=claims)

    async def ping(self) -> None:
        await self.inner.ping()  # the health watch's, every half second: not traced

    async def begin_upload(self, spec: UploadSpec) -> UploadTarget:
        with self._span("begin upload", spec.bucket):
            return await self.inner.begin_upload(spec)

    async def complete_upload(
        self, bucket: str, key: str, multipart_id: str | None, etags: list[str]
    ) -> None:
        with self._span("complete upload", bucket):
            await self.inner.complete_upload(bucket, key, multipart_id, etags)

    async def receive(
        self, upload_id: str, bucket: str, key: str, body: AsyncIterator[bytes], size: int, sha256: str
    ) -> ObjectInfo:
        with self._span("receive upload", bucket):
            return await self.inner.receive(upload_id, bucket, key, body, size, sha256)

    async def abort_upload(self, bucket: str, key: str, multipart_id: str | None) -> None:
        with self._span("abort upload", bucket):
            await self.inner.abort_upload(bucket, key, multipart_id)

    async def delete_object(self, bucket: str, key: str) -> None:
        with self._span("delete", bucket):
            await self.inner.delete_object(bucket, key)

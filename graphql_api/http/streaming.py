"""The streaming ASGI response: one byte range from the object store, chunk by chunk, in constant memory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import KW_ONLY, dataclass
from typing import Any

import anyio
import anyio.lowlevel

from ..documents import DownloadStatus
from ..errors import StorageObjectNotFound, StorageUnavailable
from ..storage import ObjectInfo, ObjectStore, content_disposition
from .errors import domain_error_response, outage_response

log = logging.getLogger("modelhub.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
OnProgress = Callable[[int], Awaitable[None]]
OnFinish = Callable[[DownloadStatus, int, str | None], Awaitable[None]]


@dataclass
class Transfer:
    """One response's worth of bytes: which object, which range, and the headers that describe it."""

    bucket: str
    key: str
    info: ObjectInfo
    byte_range: tuple[int, int] | None
    filename: str

    @property
    def start(self) -> int:
        return self.byte_range[0] if self.byte_range else 0

    @property
    def end(self) -> int:
        return self.byte_range[1] if self.byte_range else self.info.size - 1

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def status_code(self) -> int:
        return 206 if self.byte_range else 200

    def headers(self, extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
        h = {
            "content-type": self.info.content_type,
            "content-length": str(self.length),
            "accept-ranges": "bytes",
            "etag": self.info.etag,
            "content-disposition": content_disposition(self.filename),
            "cache-control": "private, no-store",
        }
        if self.byte_range:
            h["content-range"] = f"bytes {self.start}-{self.end}/{self.info.size}"
        h.update(extra or {})
        return [(k.encode(), v.encode("latin-1", "replace")) for k, v in h.items()]


@dataclass
class Outcome:
    status: DownloadStatus = DownloadStatus.ABORTED
    sent: int = 0
    error: str | None = None


@dataclass(eq=False)
class StreamObject:
    """Streams `transfer` from `store`. It counts bytes only after `send` returns, watches for the client
    going away, and reports the outcome (COMPLETED, ABORTED with the bytes really sent, or FAILED) to
    `on_finish` even when cancelled; `on_progress` hears the bytes sent every `heartbeat_seconds`."""

    store: ObjectStore
    transfer: Transfer
    _: KW_ONLY
    extra_headers: dict[str, str] | None = None
    heartbeat_seconds: float = 5.0
    on_progress: OnProgress | None = None
    on_finish: OnFinish | None = None
    in_flight: Any = None

    def _open(self) -> AsyncIterator[bytes] | None:
        t = self.transfer
        if t.length <= 0:
            return None
        return self.store.open_range(t.bucket, t.key, t.start, t.end, whole=t.byte_range is None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = Outcome()
        tracing = getattr(getattr(scope.get("app"), "state", None), "tracing", None)
        if tracing is None:
            await self._serve(scope, receive, send, outcome)
            return
        requested = {"modelhub.download.bytes_requested": self.transfer.length}
        with tracing.tracer.start_as_current_span("download stream", attributes=requested) as span:
            try:
                await self._serve(scope, receive, send, outcome)
            finally:
                sent = {"modelhub.download.bytes_sent": outcome.sent}
                span.set_attributes({**sent, "modelhub.download.outcome": outcome.status.value})

    async def _serve(self, scope: Scope, receive: Receive, send: Send, outcome: Outcome) -> None:
        chunks = self._open()
        if self.in_flight is not None:
            self.in_flight.inc()
        try:
            try:
                # The first chunk is read before the status line, so a vanished object is still a clean 404.
                first = await anext(chunks) if chunks is not None else b""
            except (StorageObjectNotFound, StorageUnavailable) as exc:
                outcome.status, outcome.error = DownloadStatus.FAILED, str(exc)
                # The status line is not out yet: a clean JSON error (the store's own text stays in the log).
                failed = (
                    domain_error_response(exc)
                    if isinstance(exc, StorageObjectNotFound)
                    else outage_response("STORAGE_UNAVAILABLE")
                )
                await failed(scope, receive, send)
                return
            await self._stream(receive, send, chunks, first, outcome)
        finally:
            with anyio.CancelScope(shield=True):
                if chunks is not None:
                    await chunks.aclose()  # type: ignore[attr-defined]
                if self.in_flight is not None:
                    self.in_flight.dec()
                if self.on_finish is not None:
                    await self.on_finish(outcome.status, outcome.sent, outcome.error)

    async def _stream(
        self, receive: Receive, send: Send, chunks: Any, first: bytes, outcome: Outcome
    ) -> None:
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            async def heartbeat(on_progress: OnProgress) -> None:
                # Its own task, so progress is recorded even while a send waits on a slow client.
                while True:
                    await anyio.sleep(self.heartbeat_seconds)
                    await on_progress(outcome.sent)

            tg.start_soon(watch_disconnect)
            if self.on_progress is not None:
                tg.start_soon(heartbeat, self.on_progress)
            await self._send_all(send, chunks, first, outcome)
            tg.cancel_scope.cancel()

    async def _send_all(self, send: Send, chunks: Any, first: bytes, outcome: Outcome) -> None:
        t = self.transfer
        try:
            start = {"type": "http.response.start", "status": t.status_code}
            await send({**start, "headers": t.headers(self.extra_headers)})
            chunk: bytes | None = first
            while chunk is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # uvicorn's send returns silently once the client is gone; yielding here lets the disconnect
                # watcher run and cancel us, so an abandoned download stops instead of reading to the end.
                await anyio.lowlevel.checkpoint()
                outcome.sent += len(chunk)
                chunk = await anext(chunks, None) if chunks is not None else None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            outcome.status = DownloadStatus.COMPLETED
        except (StorageObjectNotFound, StorageUnavailable) as exc:
            # The status line is out: returning without finishing makes the server drop the connection,
            # which the client sees as a short body; the event says FAILED with what was sent.
            outcome.status, outcome.error = DownloadStatus.FAILED, str(exc)
            log.error("store failed after %d bytes of %s/%s: %s", outcome.sent, t.bucket, t.key, exc)
        except OSError:  # the client went away mid-send (uvicorn's ClientDisconnected)
            outcome.status = DownloadStatus.ABORTED

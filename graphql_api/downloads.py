"""Download use cases: issuing tickets, verifying them, streaming bytes and recording every outcome."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import anyio
import anyio.lowlevel
from beanie import PydanticObjectId
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument

from . import analytics, registry
from .documents import DownloadEvent, DownloadMode, DownloadStatus, Model, utcnow
from .errors import (
    InvalidInput,
    ModelArchived,
    RangeNotSatisfiable,
    StorageObjectNotFound,
    StorageUnavailable,
    TicketInvalid,
)
from .metrics import Metrics
from .services import Services
from .storage import ObjectInfo, content_disposition

log = logging.getLogger("modelhub.downloads")

TICKET_PURPOSE = "download"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class Requester:
    engineer: str
    user_agent: str | None
    client_address: str | None


@dataclass(frozen=True)
class Ticket:
    url: str
    mode: DownloadMode
    expires_at: datetime
    event: DownloadEvent


def artifact_filename(model: Model) -> str:
    return PurePosixPath(model.key).name or f"{model.name.replace('/', '_')}-v{model.version}"


def check_expires_in(services: Services, expires_in: int | None) -> int:
    settings = services.settings
    if expires_in is None:
        return settings.ticket_default_seconds
    if not 1 <= expires_in <= settings.ticket_max_seconds:
        raise InvalidInput("expiresIn", f"must be between 1 and {settings.ticket_max_seconds} seconds")
    return expires_in


async def downloadable(services: Services, name: str, version: int | None) -> tuple[Model, ObjectInfo]:
    """The model version and its object, or the reason it cannot be downloaded now."""
    model = await registry.require_model(name, version)
    if model.archived:
        raise ModelArchived(model.name, model.version)
    info = await services.store.head(model.bucket, model.key)
    return model, info


def _new_event(model: Model, who: Requester, mode: DownloadMode, **fields: Any) -> DownloadEvent:
    return DownloadEvent(
        model_id=model.id,
        model_name=model.name,
        model_version=model.version,
        project_name=model.project_name,
        size_bytes=model.size_bytes,
        engineer=who.engineer,
        user_agent=(who.user_agent or "")[:512] or None,
        client_address=who.client_address,
        mode=mode,
        **fields,
    )


async def issue_ticket(
    services: Services,
    metrics: Metrics,
    *,
    name: str,
    version: int | None,
    mode: DownloadMode,
    expires_in: int | None,
    who: Requester,
    base_url: str,
) -> Ticket:
    """Checks the model and its object, records an ISSUED event, and signs a URL for it."""
    try:
        seconds = check_expires_in(services, expires_in)
        model, _ = await downloadable(services, name, version)
    except Exception as exc:
        metrics.download_requests.labels(mode.value, getattr(exc, "code", "error").lower()).inc()
        raise
    expires_at = utcnow() + timedelta(seconds=seconds)
    event = _new_event(model, who, mode, expires_at=expires_at)
    await event.insert()
    await analytics.record_started(event)
    if mode is DownloadMode.STREAM:
        token = services.signer.sign(
            TICKET_PURPOSE,
            {"e": str(event.id), "m": str(model.id), "v": model.version},
            expires_at.timestamp(),
        )
        url = f"{base_url}/downloads/{token}"
    else:
        url = await services.store.presign_get(model.bucket, model.key, seconds, artifact_filename(model))
        if url.startswith("/"):
            url = base_url + url
    metrics.download_requests.labels(mode.value, "issued").inc()
    metrics.download_size.labels(mode.value).observe(model.size_bytes)
    return Ticket(url=url, mode=mode, expires_at=expires_at, event=event)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a `Range` header asks for, None for the whole object; 416 when unusable."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        raise RangeNotSatisfiable(size)
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(size)
    return start, end


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


def _object_id(value: Any) -> ObjectId:
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError) as exc:
        raise TicketInvalid("malformed ticket", status=404) from exc


async def open_ticket(services: Services, token: str) -> tuple[DownloadEvent, Model]:
    """Verifies a STREAM ticket and finds its event and model; nothing is changed yet."""
    payload = services.signer.verify(TICKET_PURPOSE, token)
    event = await DownloadEvent.get(_object_id(payload.get("e")))
    if event is None:
        raise TicketInvalid("unknown ticket", status=404)
    if str(event.model_id) != payload.get("m") or event.model_version != payload.get("v"):
        raise TicketInvalid("ticket does not belong to this download", status=403)
    if event.mode is not DownloadMode.STREAM:
        raise TicketInvalid("not a streaming ticket", status=403)
    model = await Model.get(event.model_id)
    if model is None:
        raise TicketInvalid("the model of this ticket no longer exists", status=404)
    return event, model


async def claim(event: DownloadEvent, byte_range: tuple[int, int] | None) -> DownloadEvent:
    """ISSUED → IN_PROGRESS, atomically: a ticket is good for one download, however many race for it."""
    now = utcnow()
    update: dict[str, Any] = {
        "status": DownloadStatus.IN_PROGRESS.value,
        "transfer_started_at": now,
        "heartbeat_at": now,
        "range_start": byte_range[0] if byte_range else None,
        "range_end": byte_range[1] if byte_range else None,
    }
    doc = await DownloadEvent.get_pymongo_collection().find_one_and_update(
        {"_id": event.id, "status": DownloadStatus.ISSUED.value},
        {"$set": update},
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise TicketInvalid("ticket has already been used", status=410)
    claimed: DownloadEvent = DownloadEvent.model_validate(doc)
    return claimed


async def start_direct(model: Model, who: Requester, byte_range: tuple[int, int] | None) -> DownloadEvent:
    """The one-step download: an event created already IN_PROGRESS (the caller streams it at once)."""
    now = utcnow()
    event = _new_event(
        model,
        who,
        DownloadMode.STREAM,
        status=DownloadStatus.IN_PROGRESS,
        transfer_started_at=now,
        heartbeat_at=now,
        range_start=byte_range[0] if byte_range else None,
        range_end=byte_range[1] if byte_range else None,
    )
    await event.insert()
    await analytics.record_started(event)
    return event


async def finish(
    metrics: Metrics,
    event_id: PydanticObjectId | None,
    status: DownloadStatus,
    bytes_sent: int,
    started: datetime | None,
    error: str | None = None,
    *,
    mode: DownloadMode = DownloadMode.STREAM,
    model_name: str = "",
    finished_at: datetime | None = None,
) -> None:
    """The one place a download reaches a terminal state: the event, its rollups and the metrics."""
    finished = finished_at or utcnow()
    duration = (finished - started).total_seconds() if started else None
    update = {
        "status": status.value,
        "bytes_sent": bytes_sent,
        "finished_at": finished,
        "duration_seconds": duration,
        "error": error,
    }
    doc = await DownloadEvent.get_pymongo_collection().find_one_and_update(
        {"_id": event_id, "status": {"$in": [DownloadStatus.IN_PROGRESS.value, DownloadStatus.ISSUED.value]}},
        {"$set": update},
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        return  # already finished (e.g. swept): never count it twice
    await analytics.record_finished(DownloadEvent.model_validate(doc))
    counter = {
        DownloadStatus.COMPLETED: metrics.downloads_completed,
        DownloadStatus.ABORTED: metrics.downloads_aborted,
        DownloadStatus.FAILED: metrics.downloads_failed,
    }[status]
    counter.labels(mode.value).inc()
    metrics.download_bytes.labels(mode.value).inc(bytes_sent)
    if duration is not None:
        metrics.download_duration.labels(mode.value, status.value).observe(duration)
    if status is DownloadStatus.COMPLETED and model_name:
        metrics.model_downloads.labels(metrics.model_label(model_name)).inc()


async def sweep_stale(metrics: Metrics, older_than_seconds: float) -> int:
    """Marks IN_PROGRESS events whose heartbeat stopped (their process died) as ABORTED."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    stale = DownloadEvent.find({"status": DownloadStatus.IN_PROGRESS.value, "heartbeat_at": {"$lt": cutoff}})
    count = 0
    async for event in stale:
        await finish(
            metrics,
            event.id,
            DownloadStatus.ABORTED,
            event.bytes_sent,
            event.transfer_started_at,
            "the serving process stopped",
            mode=event.mode,
            model_name=event.model_name,
            finished_at=event.heartbeat_at,  # the last moment it was known to be alive
        )
        count += 1
    if count:
        log.warning("swept %d stale in-progress downloads to ABORTED", count)
    return count


class StreamObject:
    """An ASGI response that streams one byte range from the store, chunk by chunk, in constant memory.

    It counts bytes only after `send` returns, watches for the client going away, and reports the outcome
    (COMPLETED, ABORTED with the bytes really sent, or FAILED) to `on_finish` even when cancelled.
    """

    def __init__(
        self,
        services: Services,
        transfer: Transfer,
        extra_headers: dict[str, str] | None = None,
        on_progress: Callable[[int], Awaitable[None]] | None = None,
        on_finish: Callable[[DownloadStatus, int, str | None], Awaitable[None]] | None = None,
        in_flight: Any = None,
    ) -> None:
        self.services = services
        self.transfer = transfer
        self.extra_headers = extra_headers
        self.on_progress = on_progress
        self.on_finish = on_finish
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t = self.transfer
        result: list[Any] = [DownloadStatus.ABORTED, 0, None]  # status, bytes sent, error
        chunks = None
        if t.length > 0:
            whole = t.byte_range is None
            chunks = self.services.store.open_range(t.bucket, t.key, t.start, t.end, whole=whole)
        if self.in_flight is not None:
            self.in_flight.inc()
        try:
            try:
                # The first chunk is read before the status line, so a vanished object is still a clean 404.
                first = await anext(chunks) if chunks is not None else b""
            except (StorageObjectNotFound, StorageUnavailable) as exc:
                result[0], result[2] = DownloadStatus.FAILED, str(exc)
                missing = isinstance(exc, StorageObjectNotFound)
                code = "STORAGE_OBJECT_NOT_FOUND" if missing else "STORAGE_UNAVAILABLE"
                await _json_error(send, 404 if missing else 502, code, str(exc))
                return
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                async def heartbeat(on_progress: Callable[[int], Awaitable[None]]) -> None:
                    # Its own task, so progress is recorded even while a send waits on a slow client.
                    while True:
                        await anyio.sleep(self.services.settings.heartbeat_seconds)
                        await on_progress(result[1])

                tg.start_soon(watch_disconnect)
                if self.on_progress is not None:
                    tg.start_soon(heartbeat, self.on_progress)
                await self._send_all(send, chunks, first, result)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if chunks is not None:
                    await chunks.aclose()  # type: ignore[attr-defined]
                if self.in_flight is not None:
                    self.in_flight.dec()
                if self.on_finish is not None:
                    await self.on_finish(result[0], result[1], result[2])

    async def _send_all(self, send: Send, chunks: Any, first: bytes, result: list[Any]) -> None:
        t = self.transfer
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": t.status_code,
                    "headers": t.headers(self.extra_headers),
                }
            )
            chunk: bytes | None = first
            while chunk is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # uvicorn's send returns silently once the client is gone; yielding here lets the disconnect
                # watcher run and cancel us, so an abandoned download stops instead of reading to the end.
                await anyio.lowlevel.checkpoint()
                result[1] += len(chunk)
                chunk = await anext(chunks, None) if chunks is not None else None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            result[0] = DownloadStatus.COMPLETED
        except (StorageObjectNotFound, StorageUnavailable) as exc:
            # The status line is out: returning without finishing makes the server drop the connection,
            # which the client sees as a short body; the event says FAILED with what was sent.
            result[0], result[2] = DownloadStatus.FAILED, str(exc)
            log.error("store failed after %d bytes of %s/%s: %s", result[1], t.bucket, t.key, exc)
        except OSError:  # the client went away mid-send (uvicorn's ClientDisconnected)
            result[0] = DownloadStatus.ABORTED


async def _json_error(send: Send, status: int, code: str, message: str) -> None:
    import json

    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def record_progress(event_id: PydanticObjectId | None, sent: int) -> None:
    await DownloadEvent.get_pymongo_collection().update_one(
        {"_id": event_id, "status": DownloadStatus.IN_PROGRESS.value},
        {"$set": {"bytes_sent": sent, "heartbeat_at": utcnow()}},
    )


async def fail_unstarted(metrics: Metrics, event: DownloadEvent, error: str) -> None:
    """Records a download that failed before its first byte (e.g. the object vanished after registration)."""
    await finish(
        metrics, event.id, DownloadStatus.FAILED, 0, event.transfer_started_at, error, mode=event.mode
    )

"""Plain HTTP routes beside GraphQL: ticket downloads, one-step downloads, local presigned objects, health."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import downloads
from ..documents import DownloadEvent, DownloadMode, DownloadStatus
from ..embedded import state_failed
from ..errors import DomainError, InvalidInput, StorageObjectNotFound
from ..services import Services
from .caller import principal_of, requester, services_of
from .errors import domain_error_response
from .ranges import parse_range
from .streaming import StreamObject, Transfer


def _stream(services: Services, transfer: Transfer, event: DownloadEvent) -> StreamObject:
    async def on_finish(status: DownloadStatus, sent: int, error: str | None) -> None:
        await downloads.finish(services.metrics, event, status, sent, error)

    return StreamObject(
        services.store,
        transfer,
        extra_headers={"x-download-id": str(event.id)},
        heartbeat_seconds=services.settings.heartbeat_seconds,
        on_progress=functools.partial(downloads.record_progress, event),
        on_finish=on_finish,
        in_flight=services.metrics.in_flight.labels(DownloadMode.STREAM.value),
    )


async def download_by_ticket(request: Request) -> Any:
    """GET /downloads/{ticket}: streams the ticket's model version once; honours Range."""
    services = services_of(request)
    try:
        event, model = await downloads.open_ticket(services, request.path_params["ticket"])
    except DomainError as exc:
        return domain_error_response(exc)
    try:
        info = await services.store.head(model.bucket, model.key)
        byte_range = parse_range(request.headers.get("range"), info.size)
        event = await downloads.claim(event, byte_range)
    except StorageObjectNotFound as exc:
        await downloads.finish(services.metrics, event, DownloadStatus.FAILED, 0, exc.message)
        return domain_error_response(exc)
    except DomainError as exc:
        return domain_error_response(exc)
    transfer = Transfer(model.bucket, model.key, info, byte_range, downloads.artifact_filename(model))
    return _stream(services, transfer, event)


async def download_model(request: Request) -> Any:
    """GET /models/{name}/download[?version=N | ?alias=A]: the one-step download for curl and scripts."""
    services = services_of(request)
    raw_version = request.query_params.get("version")
    alias = request.query_params.get("alias")
    try:
        who = requester(request, await principal_of(request))
        services.limiter.take(who.engineer)
        if raw_version is not None and not raw_version.isdigit():
            raise InvalidInput("version", "must be a positive integer")
        version = int(raw_version) if raw_version is not None else None
        model, info = await downloads.downloadable(services, request.path_params["name"], version, alias)
        byte_range = parse_range(request.headers.get("range"), info.size)
    except DomainError as exc:
        services.metrics.download_requests.labels(DownloadMode.STREAM.value, exc.code.lower()).inc()
        return domain_error_response(exc)
    event = await downloads.start_direct(services, model, who, byte_range)
    transfer = Transfer(model.bucket, model.key, info, byte_range, downloads.artifact_filename(model))
    return _stream(services, transfer, event)


async def local_presigned_object(request: Request) -> Any:
    """GET /objects/{token}: the local store's stand-in for an S3 presigned URL (no event is updated)."""
    services = services_of(request)
    try:
        bucket, key, filename = downloads.open_presigned(services, request.path_params["token"])
        info = await services.store.head(bucket, key)
        byte_range = parse_range(request.headers.get("range"), info.size)
    except DomainError as exc:
        return domain_error_response(exc)
    transfer = Transfer(bucket, key, info, byte_range, filename)
    return StreamObject(services.store, transfer, heartbeat_seconds=services.settings.heartbeat_seconds)


async def healthz(request: Request) -> Response:
    """Liveness: fails only when restarting this process is the cure (the embedded database it
    supervises could not be brought back); a dependency that is merely down is `/readyz`'s business."""
    if state_failed(services_of(request).settings.embedded_state_file):
        message = "the embedded database could not be restarted"
        return JSONResponse({"status": "failed", "database": message}, 503)
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    health = getattr(request.app.state, "health", None)
    if health is not None and not all(w.up for w in health.all()):  # a watch already knows: answer at once
        known = {
            "mongo": "ok" if health.database.up else f"unavailable: {health.database.last_error}",
            "store": "ok" if health.store.up else f"unavailable: {health.store.last_error}",
        }
        return JSONResponse({"status": "unavailable", **known}, 503)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app.state.mongo.admin.command("ping"), 3)
        checks["mongo"] = "ok"
    except Exception as exc:  # readiness reports any failure; it never raises
        checks["mongo"] = f"unavailable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(services_of(request).store.ping(), 3)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", **checks}, 200 if ready else 503)

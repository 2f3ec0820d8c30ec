"""Plain HTTP routes beside GraphQL: ticket downloads, one-step downloads, local presigned objects, health."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import downloads
from .documents import DownloadMode, DownloadStatus
from .errors import (
    DomainError,
    InvalidInput,
    ModelArchived,
    ModelNotFound,
    RangeNotSatisfiable,
    StorageObjectNotFound,
    TicketInvalid,
)
from .schema.context import client_address, request_identity
from .services import Services
from .storage.local import OBJECT_TOKEN_PURPOSE

_STATUS = {
    InvalidInput: 400,
    ModelNotFound: 404,
    StorageObjectNotFound: 404,
    ModelArchived: 410,
    RangeNotSatisfiable: 416,
}


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"cache-control": "no-store"}
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status, headers=headers)


def domain_error_response(exc: DomainError) -> JSONResponse:
    if isinstance(exc, TicketInvalid):
        return error_response(exc.status, exc.code, exc.message)
    response = error_response(_STATUS.get(type(exc), 400), exc.code, exc.message)
    if isinstance(exc, InvalidInput):
        response = error_response(400, exc.code, exc.message, field=exc.field)
    if isinstance(exc, RangeNotSatisfiable):
        response.headers["content-range"] = f"bytes */{exc.size}"
    return response


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _stream(services: Services, transfer: downloads.Transfer, event: Any) -> downloads.StreamObject:
    metrics = services.metrics

    async def on_finish(status: DownloadStatus, sent: int, error: str | None) -> None:
        await downloads.finish(
            metrics,
            event.id,
            status,
            sent,
            event.transfer_started_at,
            error,
            mode=event.mode,
            model_name=event.model_name,
        )

    return downloads.StreamObject(
        services,
        transfer,
        extra_headers={"x-download-id": str(event.id)},
        on_progress=functools.partial(downloads.record_progress, event.id),
        on_finish=on_finish,
        in_flight=metrics.in_flight.labels(DownloadMode.STREAM.value),
    )


async def download_by_ticket(request: Request) -> Any:
    """GET /downloads/{ticket}: streams the ticket's model version once; honours Range."""
    services = _services(request)
    try:
        event, model = await downloads.open_ticket(services, request.path_params["ticket"])
    except TicketInvalid as exc:
        return domain_error_response(exc)
    try:
        info = await services.store.head(model.bucket, model.key)
        byte_range = downloads.parse_range(request.headers.get("range"), info.size)
        event = await downloads.claim(event, byte_range)
    except StorageObjectNotFound as exc:
        await downloads.fail_unstarted(services.metrics, event, exc.message)
        return domain_error_response(exc)
    except DomainError as exc:
        return domain_error_response(exc)
    transfer = downloads.Transfer(
        model.bucket, model.key, info, byte_range, downloads.artifact_filename(model)
    )
    return _stream(services, transfer, event)


async def download_model(request: Request) -> Any:
    """GET /models/{name}/download?version=N: the one-step download for curl and scripts."""
    services = _services(request)
    metrics = services.metrics
    try:
        who = downloads.Requester(
            request_identity(request), request.headers.get("user-agent"), client_address(request)
        )
    except ValueError as exc:
        return error_response(401, "UNAUTHENTICATED", str(exc))
    raw_version = request.query_params.get("version")
    try:
        if raw_version is not None and not raw_version.isdigit():
            raise InvalidInput("version", "must be a positive integer")
        version = int(raw_version) if raw_version is not None else None
        model, info = await downloads.downloadable(services, request.path_params["name"], version)
        byte_range = downloads.parse_range(request.headers.get("range"), info.size)
    except DomainError as exc:
        metrics.download_requests.labels(DownloadMode.STREAM.value, exc.code.lower()).inc()
        return domain_error_response(exc)
    event = await downloads.start_direct(model, who, byte_range)
    metrics.download_requests.labels(DownloadMode.STREAM.value, "issued").inc()
    metrics.download_size.labels(DownloadMode.STREAM.value).observe(model.size_bytes)
    transfer = downloads.Transfer(
        model.bucket, model.key, info, byte_range, downloads.artifact_filename(model)
    )
    return _stream(services, transfer, event)


async def local_presigned_object(request: Request) -> Any:
    """GET /objects/{token}: the local store's stand-in for an S3 presigned URL (no event is updated)."""
    services = _services(request)
    try:
        payload = services.signer.verify(OBJECT_TOKEN_PURPOSE, request.path_params["token"])
        bucket, key, filename = str(payload["b"]), str(payload["k"]), str(payload["fn"])
        info = await services.store.head(bucket, key)
        byte_range = downloads.parse_range(request.headers.get("range"), info.size)
    except KeyError:
        return error_response(404, "TICKET_INVALID", "malformed ticket")
    except DomainError as exc:
        return domain_error_response(exc)
    return downloads.StreamObject(services, downloads.Transfer(bucket, key, info, byte_range, filename))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app.state.mongo.admin.command("ping"), 3)
        checks["mongo"] = "ok"
    except Exception as exc:  # readiness reports any failure; it never raises
        checks["mongo"] = f"unavailable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(_services(request).store.ping(), 3)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", **checks}, 200 if ready else 503)

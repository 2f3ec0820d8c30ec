"""Plain HTTP routes beside GraphQL: ticket downloads, one-step downloads, local presigned objects, health."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pymongo
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import download_outcomes, downloads, uploads
from ..documents import AuditEvent, AuditKind, DownloadEvent, DownloadMode, DownloadStatus
from ..embedded import state_failed
from ..errors import DomainError, InvalidInput, StorageObjectNotFound, StorageUnavailable
from ..health import Health, Watch
from ..services import Services
from ..storage import ObjectInfo
from .caller import caller_of, client_address, requester, services_of
from .errors import domain_error_response, outage_response
from .ranges import not_modified, parse_range
from .streaming import StreamObject, Transfer

# Route answers that are refusals, recorded in the audit trail with their error code.
REFUSED_STATUSES = frozenset({401, 403, 429})
Handler = Callable[[Request], Awaitable[Any]]


def audited(action: str, target_param: str | None = None) -> Callable[[Handler], Handler]:
    """Records a route's refusals (401, 403, 429) in the audit trail: who (when the request named a valid
    principal), the route, the model it names (never a ticket or signed token: those are credentials),
    the error code, when and from where."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: Request) -> Any:
            response = await handler(request)
            if getattr(response, "status_code", 200) in REFUSED_STATUSES:
                await _record_refusal(request, action, target_param, response)
            return response

        return run

    return wrap


async def _record_refusal(
    request: Request, action: str, target_param: str | None, response: Response
) -> None:
    services = services_of(request)
    try:
        code = str(json.loads(bytes(response.body))["error"]["code"])
    except (ValueError, KeyError, TypeError):
        code = {401: "UNAUTHENTICATED", 403: "FORBIDDEN"}.get(response.status_code, "RATE_LIMITED")
    try:
        who, _ = await caller_of(request)
    except DomainError:  # the credentials were refused: nobody is named
        who = None
    services.audit.record(
        AuditEvent(
            kind=AuditKind.REFUSED,
            principal=who.engineer if who is not None else None,
            action=f"{request.method} {action}",
            target=request.path_params.get(target_param) if target_param else None,
            outcome=code,
            client_address=client_address(request),
            transport="http",
        ),
        model_name=request.path_params.get(target_param) if target_param else None,
    )


def _stream(services: Services, transfer: Transfer, event: DownloadEvent) -> StreamObject:
    async def on_finish(status: DownloadStatus, sent: int, error: str | None) -> None:
        await download_outcomes.finish(services, event, status, sent, error)

    return StreamObject(
        services.store,
        transfer,
        extra_headers={"x-download-id": str(event.id)},
        heartbeat_seconds=services.settings.heartbeat_seconds,
        on_progress=functools.partial(download_outcomes.record_progress, event),
        on_finish=on_finish,
        in_flight=services.metrics.in_flight.labels(DownloadMode.STREAM.value),
    )


def _plan(request: Request, info: ObjectInfo, bucket: str, key: str, filename: str) -> Transfer | Response:
    """The transfer a GET of this object streams (RFC 9110: an unusable Range or a stale If-Range means
    the whole object), or the answer that needs no body and records nothing: 304 when `If-None-Match`
    names the object, and for HEAD the headers the GET would send."""
    if not_modified(request.headers.get("if-none-match"), info.etag):
        return Response(status_code=304, headers={"etag": info.etag, "cache-control": "private, no-store"})
    headers = request.headers
    byte_range = parse_range(headers.get("range"), info.size, info.etag, headers.get("if-range"))
    transfer = Transfer(bucket, key, info, byte_range, filename)
    if request.method == "HEAD":
        head = {k.decode(): v.decode("latin-1") for k, v in transfer.headers()}
        return Response(status_code=transfer.status_code, headers=head)
    return transfer


@audited("/downloads")
async def download_by_ticket(request: Request) -> Any:
    """GET /downloads/{ticket}: streams the ticket's model version once; honours Range, If-Range and
    If-None-Match. HEAD answers the same headers without using the ticket."""
    services = services_of(request)
    try:
        with pymongo.timeout(services.settings.request_timeout_seconds):
            event, model = await downloads.open_ticket(services, request.path_params["ticket"])
            info = await downloads.current_object(services, model)
            plan = _plan(request, info, model.bucket, model.key, downloads.artifact_filename(model))
            if isinstance(plan, Response):
                return plan
            event = await downloads.claim(event, plan.byte_range)
    except StorageObjectNotFound as exc:
        if request.method != "HEAD":
            await download_outcomes.finish(services, event, DownloadStatus.FAILED, 0, exc.message)
        return domain_error_response(exc)
    except DomainError as exc:
        return domain_error_response(exc)
    except StorageUnavailable:
        return outage_response("STORAGE_UNAVAILABLE")
    return _stream(services, plan, event)


READY_PROBE_SECONDS = 3.0
_VERSION = re.compile(r"^[0-9]{1,9}$")


@audited("/models/{name}/download", "name")
async def download_model(request: Request) -> Any:
    """GET /models/{name}/download[?version=N | ?alias=A][&resumes=<x-download-id of an earlier try>]:
    the one-step download for curl and scripts. HEAD and a 304 record no download."""
    services = services_of(request)
    raw_version = request.query_params.get("version")
    alias = request.query_params.get("alias")
    try:
        with pymongo.timeout(services.settings.request_timeout_seconds):
            principal, scope = await caller_of(request)
            who = requester(request, principal)
            services.limiter.take(who.engineer)
            if raw_version is not None and not _VERSION.match(raw_version):
                raise InvalidInput("version", "must be a positive integer (ASCII digits)")
            version = int(raw_version) if raw_version is not None else None
            name = request.path_params["name"]
            model, info = await downloads.downloadable(services, scope, name, version, alias)
            plan = _plan(request, info, model.bucket, model.key, downloads.artifact_filename(model))
            if isinstance(plan, Response):
                return plan
            resumes = await downloads.resumed_event(request.query_params.get("resumes"), model, who)
            event = await downloads.start_direct(services, model, who, plan.byte_range, resumes, alias)
    except DomainError as exc:
        services.metrics.count_download_request(DownloadMode.STREAM.value, exc.code)
        return domain_error_response(exc)
    except StorageUnavailable:
        services.metrics.count_download_request(DownloadMode.STREAM.value, "storage_unavailable")
        return outage_response("STORAGE_UNAVAILABLE")
    return _stream(services, plan, event)


@audited("/objects")
async def local_presigned_object(request: Request) -> Any:
    """GET /objects/{token}: the local store's stand-in for an S3 presigned URL (no event is updated)."""
    services = services_of(request)
    try:
        with pymongo.timeout(services.settings.request_timeout_seconds):
            bucket, key, filename = await downloads.open_presigned(services, request.path_params["token"])
        info = await services.store.head(bucket, key)
        plan = _plan(request, info, bucket, key, filename)
    except DomainError as exc:
        return domain_error_response(exc)
    except StorageUnavailable:
        return outage_response("STORAGE_UNAVAILABLE")
    if isinstance(plan, Response):
        return plan
    return StreamObject(services.store, plan, heartbeat_seconds=services.settings.heartbeat_seconds)


@audited("/uploads")
async def upload_object(request: Request) -> Response:
    """PUT /uploads/{token}: the local store's stand-in for a presigned S3 PUT. The body streams to disk
    (constant memory), must have the declared size and SHA-256, and is moved into place atomically; then
    `completeUpload` registers it."""
    services = services_of(request)
    try:
        upload = await uploads.receive(services, request.path_params["token"], request.stream())
    except DomainError as exc:
        return domain_error_response(exc)
    except StorageUnavailable:
        return outage_response("STORAGE_UNAVAILABLE")
    body = {"uploadId": str(upload.id), "sizeBytes": upload.size_bytes, "sha256": upload.sha256}
    return JSONResponse(body, headers={"cache-control": "no-store"})


async def healthz(request: Request) -> Response:
    """Liveness: fails only when restarting this process is the cure (the embedded database it
    supervises could not be brought back); a dependency that is merely down is `/readyz`'s business."""
    if state_failed(services_of(request).settings.embedded_state_file):
        message = "the embedded database could not be restarted"
        return JSONResponse({"status": "failed", "database": message}, 503)
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: 503 unless both dependencies answer. A watch that already knows one is down answers at
    once; otherwise both are probed now, together (the watches' own probes), each within 3 s."""
    health: Health = request.app.state.health

    async def state(watch: Watch) -> str:
        if not watch.up:
            return f"unavailable: {watch.last_error}"
        try:
            async with asyncio.timeout(READY_PROBE_SECONDS):
                await watch.probe()
        except Exception as exc:  # readiness reports any failure; it never raises
            return f"unavailable: {type(exc).__name__}"
        return "ok"

    mongo, store = await asyncio.gather(state(health.database), state(health.store))
    ready = mongo == store == "ok"
    body = {"status": "ready" if ready else "unavailable", "mongo": mongo, "store": store}
    return JSONResponse(body, 200 if ready else 503)

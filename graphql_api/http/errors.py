"""The one mapping from domain exceptions to HTTP JSON errors."""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse

from ..errors import (
    OUTAGE_MESSAGES,
    AliasNotFound,
    ArtifactChanged,
    ChecksumMismatch,
    ChecksumPending,
    DomainError,
    Forbidden,
    InvalidInput,
    ModelNotFound,
    ModelVersionArchived,
    ModelVersionNotFound,
    ObjectDeleted,
    RangeNotSatisfiable,
    StorageObjectNotFound,
    TicketInvalid,
    TicketProblem,
    Unauthenticated,
    UploadAlreadyReceived,
    UploadInProgress,
    UploadNotFound,
)
from ..limits import RateLimited

STATUS: dict[type[DomainError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    ModelNotFound: 404,
    UploadNotFound: 404,
    ModelVersionNotFound: 404,
    AliasNotFound: 404,
    StorageObjectNotFound: 404,
    ModelVersionArchived: 410,
    ObjectDeleted: 410,
    ArtifactChanged: 409,
    ChecksumMismatch: 409,
    UploadAlreadyReceived: 409,
    UploadInProgress: 409,
    ChecksumPending: 503,
    RangeNotSatisfiable: 416,
    RateLimited: 429,
}
TICKET_STATUS: dict[TicketProblem, int] = {
    TicketProblem.MALFORMED: 404,
    TicketProblem.UNKNOWN: 404,
    TicketProblem.FORBIDDEN: 403,
    TicketProblem.EXPIRED: 403,
    TicketProblem.USED: 410,
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status, headers={"cache-control": "no-store"})


def graphql_error_response(status: int, code: str, message: str) -> JSONResponse:
    """A GraphQL answer with one top-level error, for requests refused before GraphQL runs."""
    body = {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status, headers={"cache-control": "no-store"})


def outage_response(code: str, graphql: bool = False) -> JSONResponse:
    """A dependency outage: a GraphQL error (HTTP 200, like every GraphQL error) or, on the routes, a JSON
    503 (database) or 502 (object store); with `Retry-After`. The message is a fixed text."""
    message = OUTAGE_MESSAGES[code]
    if graphql:
        response = graphql_error_response(200, code, message)
    else:
        response = error_response(502 if code == "STORAGE_UNAVAILABLE" else 503, code, message)
    response.headers["retry-after"] = "2"
    return response


def status_of(exc: DomainError) -> int:
    if isinstance(exc, TicketInvalid):
        return TICKET_STATUS[exc.problem]
    return next((status for cls, status in STATUS.items() if isinstance(exc, cls)), 400)


def domain_error_response(exc: DomainError) -> JSONResponse:
    """The JSON error for an expected failure: its status, code, message and typed extras."""
    extra: dict[str, Any] = {"field": exc.field} if isinstance(exc, InvalidInput) else {}
    response = error_response(status_of(exc), exc.code, exc.message, **extra)
    if isinstance(exc, RangeNotSatisfiable):
        response.headers["content-range"] = f"bytes */{exc.size}"
    if isinstance(exc, RateLimited | ChecksumPending):
        response.headers["retry-after"] = str(math.ceil(exc.retry_after))
    return response

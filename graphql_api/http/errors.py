"""The one mapping from domain exceptions to HTTP JSON errors."""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse

from ..errors import (
    AliasNotFound,
    DomainError,
    Forbidden,
    InvalidInput,
    ModelNotFound,
    ModelVersionArchived,
    ModelVersionNotFound,
    RangeNotSatisfiable,
    StorageObjectNotFound,
    TicketInvalid,
    TicketProblem,
    Unauthenticated,
)
from ..limits import RateLimited

STATUS: dict[type[DomainError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    ModelNotFound: 404,
    ModelVersionNotFound: 404,
    AliasNotFound: 404,
    StorageObjectNotFound: 404,
    ModelVersionArchived: 410,
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
    if isinstance(exc, RateLimited):
        response.headers["retry-after"] = str(math.ceil(exc.retry_after))
    return response


def storage_unavailable_response(exc: Exception) -> JSONResponse:
    """502 while the object store is out (the message names no host, path or endpoint)."""
    response = error_response(
        502, "STORAGE_UNAVAILABLE", "the object store is unavailable; try again shortly"
    )
    response.headers["retry-after"] = "2"
    return response

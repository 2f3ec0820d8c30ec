"""The per-request context: services, the caller's identity and per-request DataLoaders."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError
from starlette.requests import HTTPConnection
from starlette.responses import Response
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from .. import analytics
from ..services import Services

ENGINEER_HEADER = "x-engineer-id"
ANONYMOUS = "anonymous"
_ENGINEER_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")


class Unauthenticated(GraphQLError):
    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "UNAUTHENTICATED"})


def request_identity(conn: HTTPConnection) -> str:
    """The caller's engineer id: the one place that reads `X-Engineer-ID` (until tokens arrive)."""
    raw = conn.headers.get(ENGINEER_HEADER)
    if raw is None or raw == "":
        return ANONYMOUS
    if not _ENGINEER_RE.match(raw):
        raise ValueError("X-Engineer-ID must be 1-128 letters, digits or . _ @ + -")
    return raw


def base_url(conn: HTTPConnection, services: Services) -> str:
    if services.settings.public_url:
        return services.settings.public_url.rstrip("/")
    return str(conn.base_url).rstrip("/")


def client_address(conn: HTTPConnection) -> str | None:
    return conn.client.host if conn.client else None


@dataclass
class Context:
    request: HTTPConnection
    response: Response | None
    services: Services
    download_totals: DataLoader[Any, analytics.ModelDownloadTotals] = field(init=False)

    def __post_init__(self) -> None:
        self.download_totals = DataLoader(load_fn=analytics.model_download_totals)

    @property
    def engineer(self) -> str:
        try:
            return request_identity(self.request)
        except ValueError as exc:
            raise Unauthenticated(str(exc)) from None

    @property
    def base_url(self) -> str:
        return base_url(self.request, self.services)


Info = StrawberryInfo[Context, None]

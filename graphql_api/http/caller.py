"""Who is calling and where links point, read once from a Starlette connection for GraphQL and the routes."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from ..auth import principal_from_headers
from ..downloads import Requester
from ..services import Services


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


def requester(conn: HTTPConnection) -> Requester:
    """The caller as recorded on a download event; raises Unauthenticated for a bad identity."""
    principal = principal_from_headers(conn.headers)
    address = conn.client.host if conn.client else None
    return Requester(principal.engineer, conn.headers.get("user-agent"), address)


def base_url(conn: HTTPConnection) -> str:
    """Where links to this server point: the configured public URL, else the request's own base."""
    public = services_of(conn).settings.public_url
    return public.rstrip("/") if public else str(conn.base_url).rstrip("/")
